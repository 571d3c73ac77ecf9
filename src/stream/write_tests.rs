use crate::{SyncMode, Wal, WalOptions};

#[test]
fn an_async_bulk_append_encodes_into_the_buffers_it_wrote_before() {
    // A fresh MiB buffer per frame costs 256 page faults, about as much
    // CPU as encoding the frame: each one written goes back for the next.
    let dir = tempfile::tempdir().unwrap();
    let mut o = WalOptions::new(dir.path());
    o.sync_mode = SyncMode::Async;
    let wal = Wal::new(o).unwrap();
    let big = vec![b'b'; 1 << 20];
    let before = crate::bufpool::empty_reuses();
    for i in 0..20 {
        wal.append_batch("s", &[&big[..]]).unwrap();
        // Written (by the flush thread, or here) before the next is made.
        assert_eq!(wal.next_id("s"), i + 1);
    }
    let reused = crate::bufpool::empty_reuses() - before;
    assert!(
        reused >= 15,
        "{reused} of 20 frames encoded into a kept buffer"
    );
    wal.sync("s").unwrap();
    assert_eq!(wal.next_id("s"), 20);
}
