//! Power loss on the simulated disk: crash at every sync point of a
//! randomized workload (appends, batches, rotation, truncation), in every
//! sync mode, with and without compression, dropping or tearing or
//! reordering the unsynced bytes, or (LazyFS's model) keeping any subset
//! of the writes since the last sync, each torn at any byte. After recovery
//! the log must be a prefix of what was appended, with dense ids, hold every
//! acknowledged entry, start where truncation allowed, and show no damage:
//! a crash is never reported as corruption (the Error policy opens it, and
//! `verify` run before the open says only "torn tail", where the open cuts),
//! and no frame that was never synced survives behind a hole.

mod common;

use common::Rng;
use std::path::Path;
use std::sync::Arc;
use walfs::{
    CompressionType, CorruptionPolicy, CrashMode, FaultKind, SimDisk, SyncMode, Wal, WalOptions,
};

const ROOT: &str = "/sim/data";

fn options(mode: SyncMode, lz4: bool) -> WalOptions {
    let mut o = WalOptions::new(ROOT);
    o.sync_mode = mode;
    o.max_segment_size = 1500;
    o.max_entries_per_segment = 12;
    if lz4 {
        o.compression = CompressionType::Lz4;
        o.min_compression_size = 64;
    }
    o
}

/// What a workload did before the machine died.
#[derive(Default)]
struct Outcome {
    /// Every entry whose append was attempted, by id order of attempts.
    attempted: Vec<Vec<u8>>,
    /// How many of `attempted` (a prefix) are acknowledged as durable.
    durable: usize,
    /// The highest id any truncate was asked to free below (completed or
    /// not): recovery may start there, never later.
    may_free_below: u64,
}

/// Runs the seeded workload until it ends or the disk dies.
fn run(disk: &SimDisk, mode: SyncMode, lz4: bool, seed: u64, ops: usize) -> Outcome {
    let mut rng = Rng(seed);
    let mut out = Outcome::default();
    let wal = match Wal::with_storage(options(mode, lz4), Arc::new(disk.clone())) {
        Ok(w) => w,
        Err(_) => return out,
    };
    for _ in 0..ops {
        let r = match rng.below(10) {
            0..=4 => {
                let e = rng.bytes(200);
                out.attempted.push(e.clone());
                wal.append("s", &e).map(|_| mode == SyncMode::Strict)
            }
            5..=7 => {
                let batch: Vec<Vec<u8>> = (0..1 + rng.below(5)).map(|_| rng.bytes(150)).collect();
                out.attempted.extend(batch.iter().cloned());
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                wal.append_batch("s", &refs)
                    .map(|_| mode != SyncMode::Async)
            }
            8 => wal.sync("s").map(|_| true),
            _ => {
                let upto = rng.below(out.attempted.len() as u64 + 1);
                out.may_free_below = out.may_free_below.max(upto);
                wal.truncate("s", upto).map(|_| false)
            }
        };
        match r {
            Ok(true) => out.durable = out.attempted.len(),
            Ok(false) => {}
            Err(_) => break,
        }
    }
    out
}

/// What recovery must show on a crashed disk: no damage (verify before
/// the open agrees with the open, the Error policy opens), and the stream's
/// entries from its first id on, dense. Returns them.
fn recover_clean(disk: &SimDisk, o: WalOptions, what: &str) -> (Wal, Vec<(u64, Vec<u8>)>) {
    use walfs::Storage;
    let root = o.root_path.clone();
    // (A crash before the data directory's name was synced loses it all;
    // nothing was acknowledged then.)
    let before = if disk.exists(&root) {
        walfs::verify(disk, &root, &mut |_, _| {}).unwrap()
    } else {
        walfs::VerifyReport::default()
    };
    assert!(
        before.faults.iter().all(|f| f.kind == FaultKind::TornTail),
        "{what}: a crash reported as corruption by verify: {:?}",
        before.faults
    );
    let mut strict = o.clone();
    strict.on_corruption = CorruptionPolicy::Error;
    let wal = Wal::with_storage(strict, Arc::new(disk.clone()))
        .unwrap_or_else(|e| panic!("{what}: a crash reported as corruption at open: {e}"));
    for f in &before.faults {
        let active = wal.segments(&f.location.stream).pop().unwrap();
        assert_eq!(
            (
                active.path.file_name().unwrap().to_str().unwrap(),
                active.len
            ),
            (f.location.segment.as_str(), f.location.offset),
            "{what}: verify's torn tail is where the open cut"
        );
    }
    let got: Vec<(u64, Vec<u8>)> = wal
        .iter_with_ids("s", 0)
        .unwrap()
        .map(|r| r.unwrap_or_else(|e| panic!("{what}: read failed: {e}")))
        .collect();
    let next = wal.next_id("s");
    let first = got.first().map_or(next, |g| g.0);
    for (k, (id, _)) in got.iter().enumerate() {
        assert_eq!(*id, first + k as u64, "{what}: ids dense");
    }
    assert_eq!(next, first + got.len() as u64, "{what}");
    let after = walfs::verify(disk, &root, &mut |_, _| {}).unwrap();
    assert!(
        after.faults.is_empty(),
        "{what}: after the open: {:?}",
        after.faults
    );
    (wal, got)
}

fn check_recovery(disk: &SimDisk, mode: SyncMode, lz4: bool, out: &Outcome, what: &str) {
    let (wal, got) = recover_clean(disk, options(mode, lz4), what);
    let next = wal.next_id("s");
    let first = got.first().map_or(next, |g| g.0);
    assert!(
        first <= out.may_free_below,
        "{what}: recovery lost the head of the log: it starts at {first}, truncation freed below {} at most",
        out.may_free_below
    );
    for (id, e) in &got {
        let want = out
            .attempted
            .get(*id as usize)
            .unwrap_or_else(|| panic!("{what}: id {id} was never appended"));
        assert_eq!(e, want, "{what}: entry {id} intact");
    }
    assert!(
        next as usize >= out.durable,
        "{what}: lost acknowledged entries: recovered up to {next}, acknowledged {}",
        out.durable
    );
    // The log takes appends again, continuing the ids.
    assert_eq!(wal.append("s", b"after").unwrap(), next, "{what}");
}

/// Returns (crash cases, entries acknowledged as durable across them).
fn crash_everywhere(mode: SyncMode, lz4: bool, seed: u64, ops: usize) -> (usize, usize) {
    let root = Path::new(ROOT);
    let total = {
        let d = SimDisk::with_root(root.parent().unwrap());
        run(&d, mode, lz4, seed, ops);
        d.sync_count()
    };
    let mut cases = 0;
    let mut acked = 0;
    for k in 1..=total {
        for (i, crash) in [
            CrashMode::DropUnsynced,
            CrashMode::TornPrefix(k * 31 + seed),
            CrashMode::Reordered(k * 17 + seed),
            CrashMode::Lazy(k * 13 + seed),
            CrashMode::Lazy(k * 7 + seed + 1000),
        ]
        .into_iter()
        .enumerate()
        {
            let d = SimDisk::with_root(root.parent().unwrap());
            d.crash_at_sync(k);
            let out = run(&d, mode, lz4, seed, ops);
            let after = d.crash(crash);
            let what = format!("mode {mode:?} lz4 {lz4} seed {seed} crash at sync {k}/{total} ({crash:?}, variant {i})");
            check_recovery(&after, mode, lz4, &out, &what);
            cases += 1;
            acked += out.durable;
        }
    }
    (cases, acked)
}

#[test]
fn strict_loses_nothing_acknowledged_at_any_sync_point() {
    let (mut cases, mut acked) = (0, 0);
    for seed in [1, 2] {
        for lz4 in [false, true] {
            let (c, a) = crash_everywhere(SyncMode::Strict, lz4, seed, 80);
            cases += c;
            acked += a;
        }
    }
    println!("strict: {cases} crash cases, {acked} durable-acknowledged entries checked, 0 lost");
}

#[test]
fn batch_only_and_async_recover_a_clean_prefix() {
    let (mut cases, mut acked) = (0, 0);
    for mode in [SyncMode::BatchOnly, SyncMode::Async] {
        for lz4 in [false, true] {
            let (c, a) = crash_everywhere(mode, lz4, 7, 80);
            cases += c;
            acked += a;
        }
    }
    println!(
        "batch/async: {cases} crash cases, {acked} durable-acknowledged entries checked, 0 lost"
    );
}

#[test]
fn long_soak_when_asked() {
    // WALFS_SOAK=N runs N more seeds with longer workloads.
    let n: u64 = std::env::var("WALFS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in 100..100 + n {
        for mode in [SyncMode::Strict, SyncMode::BatchOnly, SyncMode::Async] {
            let (c, _) = crash_everywhere(mode, seed % 2 == 0, seed, if n > 1 { 300 } else { 40 });
            println!("soak seed {seed} {mode:?}: {c} crash cases");
        }
    }
}

#[test]
fn strict_appends_stay_durable_when_write_descriptors_are_evicted() {
    // One write descriptor for two streams: every append evicts the other
    // stream's, so group-commit leaders reopen segments to sync them.
    for crash in [
        CrashMode::DropUnsynced,
        CrashMode::TornPrefix(9),
        CrashMode::Reordered(4),
    ] {
        let disk = SimDisk::with_root(Path::new("/sim"));
        let mut o = options(SyncMode::Strict, false);
        o.max_open_segments = 1;
        let wal = Wal::with_storage(o.clone(), Arc::new(disk.clone())).unwrap();
        let threads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|s| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    (0..150u32)
                        .map(|i| wal.append(s, &i.to_le_bytes()).unwrap())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let ids: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        disk.crash_at_sync(1);
        drop(wal);
        let after = Wal::with_storage(o, Arc::new(disk.crash(crash))).unwrap();
        for (s, ids) in ["a", "b"].into_iter().zip(ids) {
            for (i, id) in ids.into_iter().enumerate() {
                assert_eq!(
                    after.get(s, id).unwrap(),
                    Some((i as u32).to_le_bytes().to_vec()),
                    "{crash:?} {s} {id}"
                );
            }
        }
    }
}
