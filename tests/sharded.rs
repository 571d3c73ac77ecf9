//! The sharded log (`walfs::sharded`): what ironwal 0.6.9's `ShardedWal`
//! promises, checked here on walfs (routing, batches, checkpoints, pruning,
//! compaction, restarts, errors), byte compatibility with ironwal both
//! ways and with a golden directory ironwal wrote, and what walfs adds:
//! torn tails cut, damage skipped, HEAD repaired, the shard count checked at
//! open, pruning held back by listed checkpoints.

mod common;

use common::copy_dir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use walfs::sharded::{self, ShardedWal};
use walfs::{CorruptionPolicy, Error, SyncMode, WalOptions};

fn opts(root: &Path) -> WalOptions {
    let mut o = WalOptions::new(root);
    o.sync_mode = SyncMode::Strict;
    o
}

fn small(root: &Path) -> WalOptions {
    let mut o = opts(root);
    o.max_segment_size = 2048;
    o
}

fn iron(root: &Path) -> ironwal::WalOptions {
    let mut o = ironwal::WalOptions::new(root);
    o.sync_mode = ironwal::SyncMode::Strict;
    o
}

fn read_shard(w: &ShardedWal, shard: u16, from: u64) -> Vec<(u64, Vec<u8>)> {
    w.iter_shard_with_ids(shard, from)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn appends_route_by_key_and_read_back_in_order() {
    let t = tempfile::tempdir().unwrap();
    let w = ShardedWal::new(opts(t.path()), 4).unwrap();
    let mut model: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("user_{}", i % 37);
        let v = format!("value {i}").into_bytes();
        let (s, id) = w.append(key.as_bytes(), &v).unwrap();
        assert_eq!(
            s,
            w.route(key.as_bytes()),
            "a key always routes to its shard"
        );
        assert_eq!(
            id,
            model.entry(s).or_default().len() as u64,
            "ids dense per shard"
        );
        model.entry(s).or_default().push(v);
    }
    // A mixed batch: results in input order, each shard's part contiguous.
    let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..30)
        .map(|i| (format!("k{i}").into_bytes(), format!("b{i}").into_bytes()))
        .collect();
    let res = w.append_batch(&batch).unwrap();
    assert_eq!(res.len(), batch.len());
    for ((k, v), (s, id)) in batch.iter().zip(&res) {
        assert_eq!(*s, w.route(k));
        let m = model.entry(*s).or_default();
        assert_eq!(*id, m.len() as u64);
        m.push(v.clone());
    }
    // One key's batch lands on one shard.
    let vals: Vec<&[u8]> = vec![b"x1", b"x2", b"x3"];
    let r = w.append_batch_for_key(b"hot", &vals).unwrap();
    let s = w.route(b"hot");
    assert!(r.iter().all(|(sh, _)| *sh == s));
    assert_eq!(r[1].1, r[0].1 + 1);
    model
        .entry(s)
        .or_default()
        .extend(vals.iter().map(|v| v.to_vec()));
    assert!(w.append_batch(&[]).unwrap().is_empty());
    assert!(w.append_batch_for_key(b"k", &[]).unwrap().is_empty());
    // A 1 MiB value.
    let big = vec![7u8; 1 << 20];
    let (s, _) = w.append(b"big", &big).unwrap();
    model.entry(s).or_default().push(big);

    let check = |w: &ShardedWal| {
        for shard in 0..4 {
            let got: Vec<Vec<u8>> = read_shard(w, shard, 0).into_iter().map(|e| e.1).collect();
            assert_eq!(
                &got,
                model.get(&shard).unwrap_or(&Vec::new()),
                "shard {shard}"
            );
            // From an offset, with ids.
            let from = read_shard(w, shard, 3);
            assert!(from
                .iter()
                .enumerate()
                .all(|(k, (id, _))| *id == 3 + k as u64));
        }
    };
    check(&w);
    assert!(matches!(w.iter_shard(4, 0), Err(Error::Config(_))));
    assert!(matches!(
        w.iter_shard_with_ids(99, 0),
        Err(Error::Config(_))
    ));
    drop(w);
    let w = ShardedWal::new(opts(t.path()), 4).unwrap();
    check(&w);
    // A shard never written reads as empty.
    let t2 = tempfile::tempdir().unwrap();
    let w2 = ShardedWal::new(opts(t2.path()), 8).unwrap();
    assert_eq!(w2.iter_shard(7, 0).unwrap().count(), 0);
}

#[test]
fn routing_is_ironwals_for_every_shard_count() {
    for n in [1u16, 3, 4, 16, 100] {
        let t = tempfile::tempdir().unwrap();
        let mut o = iron(t.path());
        o.sync_mode = ironwal::SyncMode::Async;
        let iw = ironwal::sharded::ShardedWal::new(o, n).unwrap();
        for i in 0..300 {
            let key = format!("key-{i}-{}", "z".repeat(i % 11)).into_bytes();
            let (s, _) = iw.append(&key, b"v").unwrap();
            assert_eq!(sharded::route(&key, n), s, "key {i}, {n} shards");
        }
        assert_eq!(sharded::route(b"", n), iw.append(b"", b"v").unwrap().0);
    }
}

#[test]
fn checkpoints_name_durable_offsets_and_survive_restarts() {
    let t = tempfile::tempdir().unwrap();
    let w = ShardedWal::new(opts(t.path()), 4).unwrap();
    assert!(matches!(
        w.load_latest_checkpoint(),
        Err(Error::NoCheckpoints)
    ));
    // Before any write: all offsets 0.
    w.create_checkpoint(b"empty").unwrap();
    assert_eq!(w.load_checkpoint(b"empty").unwrap().offsets, vec![0; 4]);
    for i in 0..50 {
        w.append(format!("k{i}").as_bytes(), b"one").unwrap();
    }
    w.create_checkpoint(b"cp1").unwrap();
    let cp1 = w.load_checkpoint(b"cp1").unwrap();
    assert_eq!(cp1.shard_count, 4);
    assert_eq!(cp1.offsets.iter().sum::<u64>(), 50);
    for (s, &o) in cp1.offsets.iter().enumerate() {
        assert_eq!(o, w.inner().next_id(&sharded::shard_name(s as u16)));
    }
    let mut after: Vec<(u16, Vec<u8>)> = Vec::new();
    for i in 50..90 {
        let v = format!("two {i}").into_bytes();
        let (s, _) = w.append(format!("k{i}").as_bytes(), &v).unwrap();
        after.push((s, v));
    }
    w.create_checkpoint(b"cp2").unwrap();
    // Reading each shard from cp1's offsets gives exactly what came after.
    for s in 0..4u16 {
        let got: Vec<Vec<u8>> = read_shard(&w, s, cp1.offsets[s as usize])
            .into_iter()
            .map(|e| e.1)
            .collect();
        let want: Vec<Vec<u8>> = after
            .iter()
            .filter(|(sh, _)| *sh == s)
            .map(|e| e.1.clone())
            .collect();
        assert_eq!(got, want, "shard {s} after cp1");
    }
    let (latest, cp2) = w.load_latest_checkpoint().unwrap();
    assert_eq!(latest, b"cp2");
    assert_eq!(cp2.offsets.iter().sum::<u64>(), 90);
    assert!(cp2.timestamp > cp1.timestamp);
    assert!(matches!(w.load_checkpoint(b"nope"), Err(Error::CheckpointNotFound(n)) if n == "nope"));
    assert!(matches!(
        w.create_checkpoint(b""),
        Err(Error::InvalidCheckpointId(_))
    ));
    assert!(matches!(
        w.create_checkpoint(&vec![b'x'; 70_000]),
        Err(Error::InvalidCheckpointId(_))
    ));
    // The same id again replaces the earlier one, and becomes the latest.
    w.append(b"more", b"m").unwrap();
    w.create_checkpoint(b"cp1").unwrap();
    let ids: Vec<Vec<u8>> = w.list_checkpoints().into_iter().map(|c| c.0).collect();
    assert_eq!(
        ids,
        vec![b"empty".to_vec(), b"cp2".to_vec(), b"cp1".to_vec()]
    );
    assert_eq!(w.load_latest_checkpoint().unwrap().0, b"cp1");
    assert_eq!(
        w.load_checkpoint(b"cp1")
            .unwrap()
            .offsets
            .iter()
            .sum::<u64>(),
        91
    );
    assert_eq!(w.checkpoint_count(), 3);
    let listed = w.list_checkpoints();
    drop(w);
    let w = ShardedWal::new(opts(t.path()), 4).unwrap();
    assert_eq!(w.list_checkpoints(), listed);
    assert_eq!(w.load_latest_checkpoint().unwrap().0, b"cp1");
    assert_eq!(w.load_checkpoint(b"cp2").unwrap(), cp2);
    // After a restart, a checkpoint names everything already on disk.
    w.create_checkpoint(b"after-restart").unwrap();
    assert_eq!(
        w.load_checkpoint(b"after-restart")
            .unwrap()
            .offsets
            .iter()
            .sum::<u64>(),
        91
    );
}

#[test]
fn checkpoints_follow_the_sync_mode() {
    // Async: a checkpoint names only what is durable; a flush makes it all so.
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.sync_mode = SyncMode::Async;
    let w = ShardedWal::new(o, 2).unwrap();
    let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
        .map(|i| (format!("k{i}").into_bytes(), b"v".to_vec()))
        .collect();
    w.append_batch(&batch).unwrap();
    w.create_checkpoint(b"before-flush").unwrap();
    let before = w.load_checkpoint(b"before-flush").unwrap();
    assert!(before.offsets.iter().sum::<u64>() <= 20);
    // ironwal names 0 for every shard until a flush, whatever is durable.
    {
        let t = tempfile::tempdir().unwrap();
        let mut o = iron(t.path());
        o.sync_mode = ironwal::SyncMode::Async;
        let iw = ironwal::sharded::ShardedWal::new(o, 2).unwrap();
        iw.append_batch(&batch).unwrap();
        iw.create_checkpoint(b"before-flush").unwrap();
        let c = iw.load_checkpoint(b"before-flush").unwrap();
        assert_eq!(c.offsets, vec![0, 0]);
    }
    w.flush_all().unwrap();
    w.create_checkpoint(b"after-flush").unwrap();
    assert_eq!(
        w.load_checkpoint(b"after-flush")
            .unwrap()
            .offsets
            .iter()
            .sum::<u64>(),
        20
    );
    assert!(matches!(w.flush_shard(2), Err(Error::Config(_))));
    // BatchOnly: batches are durable on return, and so in the checkpoint.
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.sync_mode = SyncMode::BatchOnly;
    let w = ShardedWal::new(o, 2).unwrap();
    let r = w.append_batch(&batch).unwrap();
    w.create_checkpoint(b"c").unwrap();
    let c = w.load_checkpoint(b"c").unwrap();
    for (s, id) in r {
        assert!(c.offsets[s as usize] > id);
    }
}

#[test]
fn another_shard_count_is_refused_at_open() {
    let t = tempfile::tempdir().unwrap();
    {
        let w = ShardedWal::new(opts(t.path()), 4).unwrap();
        w.append(b"key", b"data").unwrap();
    }
    for n in [2u16, 8] {
        match ShardedWal::new(opts(t.path()), n) {
            Err(Error::ShardCountMismatch { expected, found: 4 }) => assert_eq!(expected, n),
            other => panic!("{n} shards: {:?}", other.err()),
        }
    }
    assert!(matches!(
        ShardedWal::new(opts(t.path()), 0),
        Err(Error::Config(_))
    ));
    let e = ShardedWal::new(opts(t.path()), 8)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("open it with 4"), "{e}");
    assert_eq!(ShardedWal::open(opts(t.path())).unwrap().shard_count(), 4);

    // A directory ironwal made (no SHARDS file): its checkpoints tell.
    let t = tempfile::tempdir().unwrap();
    {
        let iw = ironwal::sharded::ShardedWal::new(iron(t.path()), 4).unwrap();
        iw.append(b"key", b"data").unwrap();
        iw.create_checkpoint(b"ckpt").unwrap();
    }
    assert!(matches!(
        ShardedWal::new(opts(t.path()), 8),
        Err(Error::ShardCountMismatch {
            expected: 8,
            found: 4
        })
    ));
    assert!(
        !t.path().join(sharded::SHARDS_FILE).exists(),
        "a refused open writes nothing"
    );
    // ironwal itself opens it with 8 and notices only at a load.
    {
        let iw = ironwal::sharded::ShardedWal::new(iron(t.path()), 8).unwrap();
        assert!(iw.load_checkpoint(b"ckpt").is_err());
    }
    // ... or, without checkpoints, a shard directory beyond the count.
    let t = tempfile::tempdir().unwrap();
    {
        let iw = ironwal::sharded::ShardedWal::new(iron(t.path()), 16).unwrap();
        for i in 0..200 {
            iw.append(format!("k{i}").as_bytes(), b"d").unwrap();
        }
    }
    assert!(matches!(
        ShardedWal::new(opts(t.path()), 4),
        Err(Error::ShardCountMismatch {
            expected: 4,
            found: 16
        })
    ));
    assert!(
        ShardedWal::open(opts(t.path())).is_err(),
        "the count is only known to be >= 16"
    );
    assert_eq!(
        ShardedWal::new(opts(t.path()), 16).unwrap().shard_count(),
        16
    );
    assert_eq!(ShardedWal::open(opts(t.path())).unwrap().shard_count(), 16);
}

/// An engine's append: (key, value) to (shard, id).
type Append<'a> = dyn FnMut(&[u8], &[u8]) -> (u16, u64) + 'a;

/// The workload both engines run for the compatibility tests.
fn sharded_workload(append: &mut Append, checkpoint: &mut dyn FnMut(&[u8]), round: u32) {
    for i in 0..120 {
        let key = format!("acct-{}", (i * 7 + round) % 41);
        let v = format!("round {round} txn {i} {}", "p".repeat(i as usize % 50));
        append(key.as_bytes(), v.as_bytes());
        if i % 40 == 39 {
            checkpoint(format!("r{round}-{i}").as_bytes());
        }
    }
}

/// What a sharded directory holds, as either engine reads it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    checkpoints: Vec<(Vec<u8>, Vec<u64>)>,
    latest: Vec<u8>,
    shards: Vec<Vec<(u64, Vec<u8>)>>,
}

fn snapshot_walfs(root: &Path, n: u16) -> Snapshot {
    let w = ShardedWal::new(opts(root), n).unwrap();
    Snapshot {
        checkpoints: w
            .list_checkpoints()
            .into_iter()
            .map(|(id, _)| {
                let o = w.load_checkpoint(&id).unwrap().offsets;
                (id, o)
            })
            .collect(),
        latest: w.load_latest_checkpoint().unwrap().0,
        shards: (0..n).map(|s| read_shard(&w, s, 0)).collect(),
    }
}

fn snapshot_ironwal(root: &Path, n: u16) -> Snapshot {
    let w = ironwal::sharded::ShardedWal::new(iron(root), n).unwrap();
    Snapshot {
        checkpoints: w
            .list_checkpoints()
            .into_iter()
            .map(|(id, _)| {
                let o = w.load_checkpoint(&id).unwrap().offsets;
                (id, o)
            })
            .collect(),
        latest: w.load_latest_checkpoint().unwrap().0,
        shards: (0..n)
            .map(|s| {
                w.iter_shard_with_ids(s, 0)
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            })
            .collect(),
    }
}

#[test]
fn a_directory_written_by_either_engine_reads_the_same_in_the_other() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    // walfs writes, compacts, writes again.
    {
        let w = ShardedWal::new(small(&root), 4).unwrap();
        sharded_workload(
            &mut |k, v| w.append(k, v).unwrap(),
            &mut |id| w.create_checkpoint(id).unwrap(),
            0,
        );
        sharded_workload(
            &mut |k, v| w.append(k, v).unwrap(),
            &mut |id| w.create_checkpoint(id).unwrap(),
            1,
        );
        let c = w.compact_checkpoints(4).unwrap();
        assert_eq!((c.checkpoints_before, c.checkpoints_after), (6, 4));
        assert!(c.bytes_reclaimed > 0);
    }
    let by_walfs = snapshot_walfs(&root, 4);
    assert_eq!(by_walfs.checkpoints.len(), 4);
    assert_eq!(
        snapshot_ironwal(&root, 4),
        by_walfs,
        "ironwal reads what walfs wrote"
    );
    // ironwal continues the same directory; walfs reads it all.
    {
        let iw = ironwal::sharded::ShardedWal::new(iron(&root), 4).unwrap();
        sharded_workload(
            &mut |k, v| iw.append(k, v).unwrap(),
            &mut |id| iw.create_checkpoint(id).unwrap(),
            2,
        );
    }
    let by_ironwal = snapshot_ironwal(&root, 4);
    assert_eq!(by_ironwal.checkpoints.len(), 7);
    assert_eq!(by_ironwal.latest, b"r2-119");
    assert_eq!(
        snapshot_walfs(&root, 4),
        by_ironwal,
        "walfs reads what ironwal wrote"
    );
    // And back: walfs adds a checkpoint, ironwal sees it as the latest.
    {
        let w = ShardedWal::new(opts(&root), 4).unwrap();
        w.append(b"last", b"word").unwrap();
        w.create_checkpoint(b"from-walfs").unwrap();
    }
    let iw = ironwal::sharded::ShardedWal::new(iron(&root), 4).unwrap();
    assert_eq!(iw.load_latest_checkpoint().unwrap().0, b"from-walfs");
    assert_eq!(iw.checkpoint_count(), 8);
}

/// A checkpoint file's bytes are exactly ironwal's for the same record.
#[test]
fn checkpoint_records_are_ironwals_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("walfs"), t.path().join("ironwal"));
    let w = ShardedWal::new(opts(&a), 3).unwrap();
    let iw = ironwal::sharded::ShardedWal::new(iron(&b), 3).unwrap();
    w.create_checkpoint(b"same-id").unwrap();
    iw.create_checkpoint(b"same-id").unwrap();
    let (x, y) = (
        std::fs::read(a.join("checkpoints.log")).unwrap(),
        std::fs::read(b.join("checkpoints.log")).unwrap(),
    );
    assert_eq!(x.len(), y.len());
    // Equal but for the timestamp (payload bytes 3+7 .. +8) and the crc.
    let ts = 12 + 1 + 2 + 7;
    assert_eq!(x[..4], y[..4]);
    assert_eq!(x[8..ts], y[8..ts]);
    assert_eq!(x[ts + 8..], y[ts + 8..]);
    assert_eq!(
        std::fs::read(a.join("HEAD")).unwrap(),
        std::fs::read(b.join("HEAD")).unwrap()
    );
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ironwal-0.6.9-sharded")
}

/// A sharded directory written by ironwal 0.6.9 (WALFS_REGEN_GOLDEN=1
/// writes it again) reads the same forever.
#[test]
fn golden_sharded_directory_reads_forever() {
    let golden = golden_dir();
    if std::env::var_os("WALFS_REGEN_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&golden);
        let mut o = iron(&golden);
        o.max_segment_size = 2048;
        let iw = ironwal::sharded::ShardedWal::new(o, 4).unwrap();
        for round in 0..3 {
            sharded_workload(
                &mut |k, v| iw.append(k, v).unwrap(),
                &mut |id| iw.create_checkpoint(id).unwrap(),
                round,
            );
        }
        iw.compact_checkpoints(7).unwrap();
        iw.prune_before_checkpoint(b"r1-39").unwrap();
    }
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("data");
    copy_dir(&golden, &copy);
    // What the workload appended, per shard, without an engine.
    let mut shards: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    for round in 0..3 {
        sharded_workload(
            &mut |k, v| {
                let s = sharded::route(k, 4);
                shards[s as usize].push(v.to_vec());
                (s, 0)
            },
            &mut |_| {},
            round,
        );
    }
    let snap = snapshot_walfs(&copy, 4);
    let ids: Vec<&[u8]> = snap.checkpoints.iter().map(|c| c.0.as_slice()).collect();
    assert_eq!(
        ids,
        vec![
            &b"r0-79"[..],
            b"r0-119",
            b"r1-39",
            b"r1-79",
            b"r1-119",
            b"r2-39",
            b"r2-79",
            b"r2-119"
        ][1..]
    );
    assert_eq!(snap.latest, b"r2-119");
    for (s, entries) in snap.shards.iter().enumerate() {
        let first = entries.first().map_or(0, |e| e.0);
        assert!(first > 0, "the prune freed segments of shard {s}");
        let want: Vec<Vec<u8>> = shards[s][first as usize..].to_vec();
        let got: Vec<Vec<u8>> = entries.iter().map(|e| e.1.clone()).collect();
        assert_eq!(got, want, "shard {s}");
    }
    // The latest checkpoint's offsets are each shard's end.
    let last = &snap.checkpoints.last().unwrap().1;
    for (s, &o) in last.iter().enumerate() {
        assert_eq!(o, shards[s].len() as u64);
    }
}

#[test]
fn head_is_repaired_from_the_log() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    {
        let w = ShardedWal::new(opts(root), 4).unwrap();
        for i in 0..3 {
            w.create_checkpoint(format!("ckpt_{i}").as_bytes()).unwrap();
        }
    }
    for bad in [&b"garbage"[..], &[0, 0][..], &[9, 0, b'c', b'k'][..]] {
        std::fs::write(root.join("HEAD"), bad).unwrap();
        let w = ShardedWal::new(opts(root), 4).unwrap();
        assert_eq!(w.load_latest_checkpoint().unwrap().0, b"ckpt_2");
        drop(w);
        assert_eq!(std::fs::read(root.join("HEAD")).unwrap(), b"\x06\x00ckpt_2");
    }
    // HEAD lagging the log (a crash between the record and HEAD).
    std::fs::write(root.join("HEAD"), b"\x06\x00ckpt_1").unwrap();
    drop(ShardedWal::new(opts(root), 4).unwrap());
    let iw = ironwal::sharded::ShardedWal::new(iron(root), 4).unwrap();
    assert_eq!(
        iw.load_latest_checkpoint().unwrap().0,
        b"ckpt_2",
        "ironwal trusts HEAD"
    );
    drop(iw);
    std::fs::remove_file(root.join("HEAD")).unwrap();
    let w = ShardedWal::new(opts(root), 4).unwrap();
    assert_eq!(w.load_latest_checkpoint().unwrap().0, b"ckpt_2");
    assert!(root.join("HEAD").exists());
}

fn log_bytes(root: &Path) -> Vec<u8> {
    std::fs::read(root.join("checkpoints.log")).unwrap()
}

#[test]
fn a_torn_record_is_cut_so_later_checkpoints_are_never_lost() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    {
        let w = ShardedWal::new(opts(root), 2).unwrap();
        w.create_checkpoint(b"a").unwrap();
        w.create_checkpoint(b"b").unwrap();
    }
    let whole = log_bytes(root);
    let rec = whole.len() / 2;
    // A create that never returned: its record half written.
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[rec..rec + rec / 2]);
    std::fs::write(root.join("checkpoints.log"), &torn).unwrap();
    {
        let w = ShardedWal::new(opts(root), 2).unwrap();
        assert_eq!(log_bytes(root), whole, "the torn record is cut at open");
        w.create_checkpoint(b"c").unwrap();
    }
    let ids = |w: Vec<(Vec<u8>, u64)>| w.into_iter().map(|c| c.0).collect::<Vec<_>>();
    let w = ShardedWal::new(opts(root), 2).unwrap();
    assert_eq!(
        ids(w.list_checkpoints()),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    drop(w);
    // ironwal, which stops at the first bad record, sees them all too.
    let iw = ironwal::sharded::ShardedWal::new(iron(root), 2).unwrap();
    assert_eq!(iw.checkpoint_count(), 3);
    assert_eq!(iw.load_latest_checkpoint().unwrap().0, b"c");
    drop(iw);
    // Only a magic's first bytes: cut as well.
    let mut torn = log_bytes(root);
    let len = torn.len();
    torn.extend_from_slice(b"CK");
    std::fs::write(root.join("checkpoints.log"), &torn).unwrap();
    drop(ShardedWal::new(opts(root), 2).unwrap());
    assert_eq!(log_bytes(root).len(), len);
}

/// What the README says ironwal does with a torn last record, shown: it
/// appends the next checkpoint behind the torn bytes, and its next open
/// stops at them, so that checkpoint is lost (walfs cuts the torn record
/// first; the test above).
#[test]
fn ironwal_loses_a_checkpoint_made_behind_a_torn_record() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    {
        let iw = ironwal::sharded::ShardedWal::new(iron(root), 2).unwrap();
        iw.create_checkpoint(b"a").unwrap();
        iw.create_checkpoint(b"b").unwrap();
    }
    let whole = log_bytes(root);
    let rec = whole.len() / 2;
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[rec..rec + rec / 2]);
    std::fs::write(root.join("checkpoints.log"), &torn).unwrap();
    {
        let iw = ironwal::sharded::ShardedWal::new(iron(root), 2).unwrap();
        iw.create_checkpoint(b"c").unwrap();
        assert_eq!(iw.load_latest_checkpoint().unwrap().0, b"c");
    }
    let iw = ironwal::sharded::ShardedWal::new(iron(root), 2).unwrap();
    assert_eq!(iw.checkpoint_count(), 2, "c was acknowledged, and is gone");
    assert!(iw.load_checkpoint(b"c").is_err());
}

#[test]
fn damage_inside_the_log_loses_only_the_damaged_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    {
        let w = ShardedWal::new(opts(root), 2).unwrap();
        for id in ["a", "b", "c", "d"] {
            w.create_checkpoint(id.as_bytes()).unwrap();
        }
    }
    let mut bytes = log_bytes(root);
    let rec = bytes.len() / 4;
    bytes[rec + 20] ^= 0x40; // inside b's payload
    std::fs::write(root.join("checkpoints.log"), &bytes).unwrap();
    // The Error policy refuses, naming the byte.
    let mut strict = opts(root);
    strict.on_corruption = CorruptionPolicy::Error;
    match ShardedWal::new(strict, 2) {
        Err(Error::CheckpointCorrupted { offset, reason }) => {
            assert_eq!(offset, rec as u64);
            assert!(reason.contains("crc"), "{reason}");
        }
        other => panic!("{:?}", other.err()),
    }
    // The default keeps every intact checkpoint, before and after.
    let w = ShardedWal::new(opts(root), 2).unwrap();
    let ids: Vec<Vec<u8>> = w.list_checkpoints().into_iter().map(|c| c.0).collect();
    assert_eq!(ids, vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    assert_eq!(w.load_latest_checkpoint().unwrap().0, b"d");
    assert_eq!(w.checkpoint_damage().len(), 1);
    assert!(matches!(
        w.load_checkpoint(b"b"),
        Err(Error::CheckpointNotFound(_))
    ));
    // New checkpoints go on after it and are found again.
    w.create_checkpoint(b"e").unwrap();
    drop(w);
    let w = ShardedWal::new(opts(root), 2).unwrap();
    assert_eq!(w.load_latest_checkpoint().unwrap().0, b"e");
    assert_eq!(w.checkpoint_count(), 4);
    // Compaction rewrites a clean log.
    w.compact_checkpoints(10).unwrap();
    assert!(w.checkpoint_damage().is_empty());
    drop(w);
    let iw = ironwal::sharded::ShardedWal::new(iron(root), 2).unwrap();
    assert_eq!(iw.checkpoint_count(), 4);
}

#[test]
fn the_latest_checkpoints_damage_is_an_error_not_an_older_answer() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    {
        let w = ShardedWal::new(opts(root), 2).unwrap();
        w.create_checkpoint(b"a").unwrap();
        w.create_checkpoint(b"b").unwrap();
    }
    let mut bytes = log_bytes(root);
    let n = bytes.len();
    bytes[n - 3] ^= 1; // b's last offset byte: HEAD names b
    std::fs::write(root.join("checkpoints.log"), &bytes).unwrap();
    let w = ShardedWal::new(opts(root), 2).unwrap();
    match w.load_latest_checkpoint() {
        Err(Error::CheckpointCorrupted { offset, .. }) => assert_eq!(offset, n as u64 / 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        log_bytes(root),
        bytes,
        "the damaged record is kept, not cut"
    );
    assert!(w.load_checkpoint(b"a").is_ok());
    // Reading a record checks it again: damage after open is seen.
    w.create_checkpoint(b"c").unwrap();
    let mut bytes = log_bytes(root);
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(root.join("checkpoints.log"), &bytes).unwrap();
    assert!(matches!(
        w.load_checkpoint(b"c"),
        Err(Error::CheckpointCorrupted { .. })
    ));
}

#[test]
fn pruning_keeps_what_every_listed_checkpoint_needs() {
    let t = tempfile::tempdir().unwrap();
    let w = ShardedWal::new(small(t.path()), 4).unwrap();
    let mut model: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    let mut write = |w: &ShardedWal, from: usize, to: usize| {
        for i in from..to {
            let v = vec![(i % 251) as u8; 200];
            let (s, _) = w.append(format!("key_{i}").as_bytes(), &v).unwrap();
            model[s as usize].push(v);
        }
    };
    write(&w, 0, 100);
    w.create_checkpoint(b"old").unwrap();
    write(&w, 100, 300);
    w.create_checkpoint(b"mid").unwrap();
    write(&w, 300, 400);
    assert!(matches!(
        w.prune_before_checkpoint(b"nope"),
        Err(Error::CheckpointNotFound(_))
    ));
    // "old" is still listed: nothing it needs may go.
    let old = w.load_checkpoint(b"old").unwrap();
    let mid = w.load_checkpoint(b"mid").unwrap();
    let st = w.prune_before_checkpoint(b"mid").unwrap();
    assert_eq!(st.held_back_by.as_deref(), Some(&b"old"[..]));
    for s in 0..4u16 {
        let name = sharded::shard_name(s);
        assert!(
            w.inner().first_id(&name) <= old.offsets[s as usize],
            "shard {s}"
        );
        let from = read_shard(&w, s, old.offsets[s as usize]);
        assert_eq!(
            from.len() as u64,
            model[s as usize].len() as u64 - old.offsets[s as usize]
        );
    }
    // Compacting releases "old"; the prune then frees segments.
    w.compact_checkpoints(1).unwrap();
    let st = w.prune_before_checkpoint(b"mid").unwrap();
    assert!(st.segments_deleted > 0, "{st:?}");
    assert!(st.shards_pruned > 0);
    assert_eq!(st.held_back_by, None);
    let check = |w: &ShardedWal, model: &Vec<Vec<Vec<u8>>>| {
        for s in 0..4u16 {
            let name = sharded::shard_name(s);
            let first = w.inner().first_id(&name);
            assert!(first <= mid.offsets[s as usize], "shard {s}");
            assert!(first > 0, "shard {s} freed nothing");
            let got: Vec<Vec<u8>> = read_shard(w, s, first).into_iter().map(|e| e.1).collect();
            assert_eq!(got, model[s as usize][first as usize..].to_vec());
        }
    };
    check(&w, &model);
    // Appends continue; a prune again after a restart frees nothing more.
    w.append(b"after", b"prune").unwrap();
    model[w.route(b"after") as usize].push(b"prune".to_vec());
    drop(w);
    let w = ShardedWal::new(small(t.path()), 4).unwrap();
    check(&w, &model);
    assert_eq!(
        w.prune_before_checkpoint(b"mid").unwrap().segments_deleted,
        0
    );
    // A checkpoint of empty shards prunes nothing.
    let t2 = tempfile::tempdir().unwrap();
    let w2 = ShardedWal::new(small(t2.path()), 4).unwrap();
    w2.create_checkpoint(b"e").unwrap();
    assert_eq!(
        w2.prune_before_checkpoint(b"e").unwrap().segments_deleted,
        0
    );
}

#[test]
fn compaction_keeps_the_newest_and_never_loses_a_concurrent_create() {
    let t = tempfile::tempdir().unwrap();
    let w = Arc::new(ShardedWal::new(opts(t.path()), 2).unwrap());
    for i in 0..50 {
        w.create_checkpoint(format!("seed_{i:03}").as_bytes())
            .unwrap();
    }
    let c = w.compact_checkpoints(100).unwrap();
    assert_eq!(
        (c.checkpoints_before, c.checkpoints_after, c.bytes_reclaimed),
        (50, 50, 0)
    );
    let c = w.compact_checkpoints(10).unwrap();
    assert_eq!((c.checkpoints_before, c.checkpoints_after), (50, 10));
    assert!(c.bytes_reclaimed > 0);
    assert_eq!(w.list_checkpoints()[0].0, b"seed_040");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (w, stop) = (w.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                w.create_checkpoint(format!("live_{i:06}").as_bytes())
                    .unwrap();
                i += 1;
            }
            format!("live_{:06}", i - 1).into_bytes()
        })
    };
    for _ in 0..20 {
        w.compact_checkpoints(10).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().unwrap();
    assert_eq!(w.load_latest_checkpoint().unwrap().0, last);
    for (id, _) in w.list_checkpoints() {
        w.load_checkpoint(&id).unwrap();
    }
    drop(w);
    let w = ShardedWal::new(opts(t.path()), 2).unwrap();
    assert_eq!(w.load_latest_checkpoint().unwrap().0, last);
    // Keeping none: no checkpoints, no HEAD.
    w.compact_checkpoints(0).unwrap();
    assert!(matches!(
        w.load_latest_checkpoint(),
        Err(Error::NoCheckpoints)
    ));
    assert!(!t.path().join("HEAD").exists());
    drop(w);
    let w = ShardedWal::new(opts(t.path()), 2).unwrap();
    assert_eq!(w.checkpoint_count(), 0);
}

#[test]
fn concurrent_writers_checkpoints_loads_and_prunes() {
    let t = tempfile::tempdir().unwrap();
    let w = Arc::new(ShardedWal::new(small(t.path()), 8).unwrap());
    let mut hs = Vec::new();
    for th in 0..6 {
        let w = w.clone();
        hs.push(std::thread::spawn(move || {
            let mut mine = Vec::new();
            for i in 0..150 {
                let key = format!("t{th}-k{}", i % 9);
                let v = format!("t{th} v{i} {}", "f".repeat(150)).into_bytes();
                if i % 10 == 0 {
                    let batch = vec![(key.clone().into_bytes(), v.clone()); 3];
                    for (r, (_, v)) in w.append_batch(&batch).unwrap().into_iter().zip(batch) {
                        mine.push((r, v));
                    }
                } else {
                    mine.push((w.append(key.as_bytes(), &v).unwrap(), v));
                }
            }
            mine
        }));
    }
    let cps = {
        let w = w.clone();
        std::thread::spawn(move || {
            for i in 0..30 {
                w.create_checkpoint(format!("c{i}").as_bytes()).unwrap();
                if i % 10 == 9 {
                    w.compact_checkpoints(2).unwrap();
                    let (latest, _) = w.load_latest_checkpoint().unwrap();
                    w.prune_before_checkpoint(&latest).unwrap();
                }
            }
        })
    };
    let mut all = Vec::new();
    for h in hs {
        all.extend(h.join().unwrap());
    }
    cps.join().unwrap();
    // Every entry at or after the oldest listed checkpoint is there, once.
    let listed = w.list_checkpoints();
    let oldest = w.load_checkpoint(&listed[0].0).unwrap();
    let mut by_shard: BTreeMap<u16, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
    for ((s, id), v) in all {
        assert!(
            by_shard.entry(s).or_default().insert(id, v).is_none(),
            "id given twice"
        );
    }
    for (s, ids) in by_shard {
        let from = oldest.offsets[s as usize];
        let got: BTreeMap<u64, Vec<u8>> = read_shard(&w, s, from).into_iter().collect();
        let want: BTreeMap<u64, Vec<u8>> = ids.into_iter().filter(|(id, _)| *id >= from).collect();
        assert_eq!(got, want, "shard {s}");
    }
}

mod model {
    //! A model of the sharded log under random appends, batches,
    //! checkpoints (ids made again), compactions, prunes and restarts.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>, Vec<u8>),
        Batch(Vec<(Vec<u8>, Vec<u8>)>),
        Checkpoint(u8),
        Compact(usize),
        Prune,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = prop::collection::vec(any::<u8>(), 0..24);
        let val = prop::collection::vec(any::<u8>(), 0..150);
        prop_oneof![
            6 => (key.clone(), val.clone()).prop_map(|(k, v)| Op::Append(k, v)),
            3 => prop::collection::vec((key, val), 1..8).prop_map(Op::Batch),
            2 => (0u8..6).prop_map(Op::Checkpoint),
            1 => (0usize..4).prop_map(Op::Compact),
            1 => Just(Op::Prune),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn the_sharded_log_matches_its_model(ops in prop::collection::vec(op(), 1..80)) {
            let t = tempfile::tempdir().unwrap();
            let mut o = small(t.path());
            o.max_segment_size = 600;
            let mut w = ShardedWal::new(o.clone(), 4).unwrap();
            let mut shards: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
            // Listed checkpoints in order: (id, offsets).
            let mut listed: Vec<(Vec<u8>, Vec<u64>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Append(k, v) => {
                        let (s, id) = w.append(&k, &v).unwrap();
                        prop_assert_eq!(s, sharded::route(&k, 4));
                        prop_assert_eq!(id, shards[s as usize].len() as u64);
                        shards[s as usize].push(v);
                    }
                    Op::Batch(b) => {
                        let r = w.append_batch(&b).unwrap();
                        for ((s, id), (_, v)) in r.into_iter().zip(b) {
                            prop_assert_eq!(id, shards[s as usize].len() as u64);
                            shards[s as usize].push(v);
                        }
                    }
                    Op::Checkpoint(n) => {
                        let id = format!("cp{n}").into_bytes();
                        w.create_checkpoint(&id).unwrap();
                        let offsets: Vec<u64> = shards.iter().map(|s| s.len() as u64).collect();
                        prop_assert_eq!(&w.load_checkpoint(&id).unwrap().offsets, &offsets);
                        listed.retain(|c| c.0 != id);
                        listed.push((id, offsets));
                    }
                    Op::Compact(keep) => {
                        w.compact_checkpoints(keep).unwrap();
                        let cut = listed.len().saturating_sub(keep);
                        listed.drain(..cut);
                    }
                    Op::Prune => {
                        if let Some((id, _)) = listed.last() {
                            w.prune_before_checkpoint(id).unwrap();
                        }
                    }
                    Op::Restart => {
                        drop(w);
                        w = ShardedWal::new(o.clone(), 4).unwrap();
                    }
                }
                let got: Vec<(Vec<u8>, Vec<u64>)> = w
                    .list_checkpoints()
                    .into_iter()
                    .map(|(id, _)| {
                        let off = w.load_checkpoint(&id).unwrap().offsets;
                        (id, off)
                    })
                    .collect();
                prop_assert_eq!(&got, &listed);
                match listed.last() {
                    Some(l) => prop_assert_eq!(&w.load_latest_checkpoint().unwrap().0, &l.0),
                    None => prop_assert!(w.load_latest_checkpoint().is_err()),
                }
            }
            // Every shard holds its entries from its first retained id, and
            // every listed checkpoint can be read from.
            for s in 0..4u16 {
                let first = w.inner().first_id(&sharded::shard_name(s));
                for (_, off) in &listed {
                    prop_assert!(first <= off[s as usize]);
                }
                let got: Vec<Vec<u8>> = read_shard(&w, s, first).into_iter().map(|e| e.1).collect();
                prop_assert_eq!(&got[..], &shards[s as usize][first as usize..]);
            }
        }
    }
}

#[test]
fn a_stream_named_head_is_not_a_sharded_log() {
    let t = tempfile::tempdir().unwrap();
    let w = walfs::Wal::new(opts(t.path())).unwrap();
    w.append("HEAD", b"an ordinary stream").unwrap();
    w.append("checkpoints.log", b"another").unwrap();
    drop(w);
    assert_eq!(sharded::detect(t.path()).unwrap(), None);
    assert!(ShardedWal::open(opts(t.path())).is_err());
}
