//! Concurrent appends across shards group-commit per shard: counted with
//! the engine's fdatasync counter (process-wide, so this test has its
//! binary to itself).

use std::sync::Arc;
use walfs::sharded::ShardedWal;
use walfs::{SyncMode, WalOptions};

#[test]
fn writers_on_one_shard_share_its_fdatasyncs() {
    let t = tempfile::tempdir().unwrap();
    let mut o = WalOptions::new(t.path());
    o.sync_mode = SyncMode::Strict;
    let w = Arc::new(ShardedWal::new(o, 4).unwrap());
    let m = walfs::metrics::global();
    let (e0, s0) = (m.entries.get(), m.fdatasyncs.get());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    let (_, id) = w
                        .append(format!("w{t}-{}", i % 8).as_bytes(), b"durable")
                        .unwrap();
                    std::hint::black_box(id);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (entries, syncs) = (m.entries.get() - e0, m.fdatasyncs.get() - s0);
    assert_eq!(entries, 16 * 150);
    // One fdatasync per entry without group commit; 16 writers over 4
    // shards carry about 3.5 entries per fdatasync on this machine.
    println!("{entries} entries, {syncs} fdatasyncs");
    assert!(
        syncs * 5 < entries * 4,
        "{entries} entries took {syncs} fdatasyncs: no group commit"
    );
    // Every shard was written, and every entry is there.
    let total: usize = (0..4).map(|s| w.iter_shard(s, 0).unwrap().count()).sum();
    assert_eq!(total, 16 * 150);
}
