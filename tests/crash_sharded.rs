//! Power loss on the simulated disk under a sharded workload: appends,
//! batches, checkpoints (some ids made again), compactions and prunes,
//! crashing at every sync point and dropping, tearing or reordering what
//! was not synced. After recovery:
//!
//! * every checkpoint acknowledged (and not compacted away by an
//!   acknowledged compaction) is listed, in order, with its offsets;
//! * the latest is the last listed, and HEAD agrees;
//! * every listed checkpoint's offsets are readable in every shard: no
//!   prune went below one, and none names an entry the crash took;
//! * every acknowledged entry is intact, and `checkpoints.log` holds no
//!   damage (a torn record is cut).

mod common;

use common::Rng;
use std::path::Path;
use std::sync::Arc;
use walfs::sharded::{self, ShardedWal};
use walfs::{CrashMode, SimDisk, SyncMode, WalOptions};

const ROOT: &str = "/sim/data";
const SHARDS: u16 = 3;

fn options() -> WalOptions {
    let mut o = WalOptions::new(ROOT);
    o.sync_mode = SyncMode::Strict;
    o.max_segment_size = 1200;
    o.max_entries_per_segment = 10;
    o
}

#[derive(Default, Clone)]
struct Outcome {
    /// Checkpoints acknowledged and listed, in order: (id, offsets).
    listed: Vec<(Vec<u8>, Vec<u64>)>,
    /// The operation the crash interrupted, if it touched checkpoints.
    in_flight: Option<InFlight>,
    /// Acknowledged entries: (shard, id, value).
    acked: Vec<(u16, u64, Vec<u8>)>,
    /// Completed operations.
    ops: usize,
    /// Per shard, the highest offset a prune was asked to keep from
    /// (completed or not): a shard may start there after recovery, never
    /// later.
    may_free_below: Vec<u64>,
}

#[derive(Clone, Debug)]
enum InFlight {
    Create(Vec<u8>),
    Compact(usize),
}

fn run(disk: &SimDisk, seed: u64, ops: usize) -> Outcome {
    let mut rng = Rng(seed);
    let mut out = Outcome::default();
    let Ok(w) = ShardedWal::with_storage(options(), Arc::new(disk.clone()), SHARDS) else {
        return out;
    };
    for n in 0..ops {
        let ok = match rng.below(20) {
            0..=8 => {
                let key = format!("k{}", rng.below(50)).into_bytes();
                let v = rng.bytes(120);
                match w.append(&key, &v) {
                    Ok((s, id)) => {
                        out.acked.push((s, id, v));
                        true
                    }
                    Err(_) => false,
                }
            }
            9..=11 => {
                let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..1 + rng.below(4))
                    .map(|_| (format!("k{}", rng.below(50)).into_bytes(), rng.bytes(80)))
                    .collect();
                match w.append_batch(&batch) {
                    Ok(r) => {
                        for ((s, id), (_, v)) in r.into_iter().zip(batch) {
                            out.acked.push((s, id, v));
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            12..=15 => {
                // Now and then an id made again.
                // Long ids, so that records straddle the disk's 512-byte
                // sectors and a crash can tear one in the middle.
                let k = if rng.below(5) == 0 {
                    rng.below(n as u64 + 1)
                } else {
                    n as u64
                };
                let id = format!("cp{k}-{}", "i".repeat(40 + (k as usize * 37) % 160)).into_bytes();
                out.in_flight = Some(InFlight::Create(id.clone()));
                match w.create_checkpoint(&id) {
                    Ok(()) => {
                        let offsets = w.load_checkpoint(&id).unwrap().offsets;
                        out.listed.retain(|(i, _)| *i != id);
                        out.listed.push((id, offsets));
                        out.in_flight = None;
                        true
                    }
                    Err(_) => false,
                }
            }
            16 => {
                let keep = 2 + rng.below(4) as usize;
                out.in_flight = Some(InFlight::Compact(keep));
                match w.compact_checkpoints(keep) {
                    Ok(_) => {
                        let cut = out.listed.len().saturating_sub(keep);
                        out.listed.drain(..cut);
                        out.in_flight = None;
                        true
                    }
                    Err(_) => false,
                }
            }
            _ => match out.listed.last() {
                Some((id, offsets)) => {
                    out.may_free_below.resize(offsets.len(), 0);
                    for (m, &o) in out.may_free_below.iter_mut().zip(offsets) {
                        *m = (*m).max(o);
                    }
                    w.prune_before_checkpoint(id).is_ok()
                }
                None => true,
            },
        };
        if !ok {
            break;
        }
        out.ops += 1;
    }
    out
}

fn check(disk: &SimDisk, out: &Outcome, what: &str) {
    let w = ShardedWal::with_storage(options(), Arc::new(disk.clone()), SHARDS)
        .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert!(
        w.checkpoint_damage().is_empty(),
        "{what}: damage kept in checkpoints.log"
    );
    let got: Vec<(Vec<u8>, Vec<u64>)> = w
        .list_checkpoints()
        .into_iter()
        .map(|(id, _)| {
            let o = w
                .load_checkpoint(&id)
                .unwrap_or_else(|e| panic!("{what}: listed but unloadable: {e}"))
                .offsets;
            (id, o)
        })
        .collect();
    let ids = |v: &[(Vec<u8>, Vec<u64>)]| -> Vec<String> {
        v.iter()
            .map(|c| String::from_utf8_lossy(&c.0).into_owned())
            .collect()
    };
    // What may be listed: the acknowledged list, with the interrupted
    // operation either undone or done.
    let mut allowed = vec![out.listed.clone()];
    match &out.in_flight {
        Some(InFlight::Create(id)) => {
            let mut with: Vec<_> = out.listed.iter().filter(|c| &c.0 != id).cloned().collect();
            if let Some(c) = got.last().filter(|c| &c.0 == id) {
                with.push(c.clone());
                allowed.push(with);
            }
        }
        Some(InFlight::Compact(keep)) => {
            let cut = out.listed.len().saturating_sub(*keep);
            allowed.push(out.listed[cut..].to_vec());
        }
        None => {}
    }
    assert!(
        allowed.contains(&got),
        "{what}: listed {:?}, acknowledged {:?} (in flight {:?})",
        ids(&got),
        ids(&out.listed),
        out.in_flight
    );
    if let Some(last) = got.last() {
        assert_eq!(
            w.load_latest_checkpoint().unwrap().0,
            last.0,
            "{what}: latest"
        );
    }
    // Every listed checkpoint is readable from its offsets in every shard.
    for (id, offsets) in &got {
        for (s, &o) in offsets.iter().enumerate() {
            let name = sharded::shard_name(s as u16);
            let (first, next) = (w.inner().first_id(&name), w.inner().next_id(&name));
            assert!(
                first <= o && o <= next,
                "{what}: checkpoint {} needs {name} from {o}, which holds {first}..{next}",
                String::from_utf8_lossy(id)
            );
        }
    }
    // No shard lost its head: each starts no later than a prune allowed.
    for s in 0..SHARDS {
        let name = sharded::shard_name(s);
        let first = w.inner().first_id(&name);
        let allowed = out.may_free_below.get(s as usize).copied().unwrap_or(0);
        assert!(
            first <= allowed,
            "{what}: {name} starts at {first}, but no prune freed below {allowed}"
        );
    }
    // Acknowledged entries at or past each shard's first id are intact
    // (those below it were pruned, as asked).
    for (s, id, v) in &out.acked {
        let name = sharded::shard_name(*s);
        if *id >= w.inner().first_id(&name) {
            let e = w.inner().get(&name, *id).unwrap();
            assert_eq!(e.as_ref(), Some(v), "{what}: {name} entry {id}");
        }
    }
    // It takes checkpoints again.
    w.append(b"after", b"crash").unwrap();
    w.create_checkpoint(b"after-crash").unwrap();
    assert_eq!(
        w.load_latest_checkpoint().unwrap().0,
        b"after-crash",
        "{what}"
    );
    // And the next open finds exactly that: nothing behind garbage.
    let listed = w.list_checkpoints();
    drop(w);
    let w = ShardedWal::with_storage(options(), Arc::new(disk.clone()), SHARDS).unwrap();
    assert_eq!(w.list_checkpoints(), listed, "{what}: after reopening");
    assert!(
        w.checkpoint_damage().is_empty(),
        "{what}: damage after reopening"
    );
}

fn crash_everywhere(seed: u64, ops: usize) -> (u64, usize) {
    let parent = Path::new(ROOT).parent().unwrap();
    let total = {
        let d = SimDisk::with_root(parent);
        let out = run(&d, seed, ops);
        assert_eq!(out.ops, ops, "the workload runs whole without a crash");
        assert!(!out.listed.is_empty());
        d.sync_count()
    };
    let mut cases = 0;
    for k in 1..=total {
        for crash in [
            CrashMode::DropUnsynced,
            CrashMode::TornPrefix(k * 31 + seed),
            CrashMode::Reordered(k * 17 + seed),
        ] {
            let d = SimDisk::with_root(parent);
            d.crash_at_sync(k);
            let out = run(&d, seed, ops);
            let after = d.crash(crash);
            check(
                &after,
                &out,
                &format!("seed {seed}, crash at sync {k}/{total} ({crash:?})"),
            );
            cases += 1;
        }
    }
    (total, cases)
}

#[test]
fn a_crash_at_any_sync_point_keeps_every_acknowledged_checkpoint() {
    let mut cases = 0;
    for seed in [3, 11] {
        let (syncs, c) = crash_everywhere(seed, 70);
        println!("seed {seed}: {syncs} sync points, {c} crash cases");
        cases += c;
    }
    assert!(cases > 300, "{cases} cases");
}

#[test]
fn a_failed_checkpoint_write_is_reported_and_loses_nothing() {
    // The checkpoint record's write or sync fails: create returns the
    // error, nothing acknowledged is lost, and after a reopen all is well.
    for (fail_write, errno) in [(true, libc::ENOSPC), (false, libc::EIO)] {
        let disk = SimDisk::with_root(Path::new("/sim"));
        let w = ShardedWal::with_storage(options(), Arc::new(disk.clone()), SHARDS).unwrap();
        w.append(b"k", b"v").unwrap();
        w.create_checkpoint(b"good").unwrap();
        if fail_write {
            disk.fail_write(1, errno);
        } else {
            disk.fail_sync(1, errno);
        }
        let e = w.create_checkpoint(b"bad").unwrap_err();
        assert!(e.errno_is(errno), "{e}");
        // A failed sync poisons the log until reopened.
        let again = w.create_checkpoint(b"again");
        assert!(
            again.is_err(),
            "a create after a failed write must not be trusted"
        );
        assert_eq!(w.load_latest_checkpoint().unwrap().0, b"good");
        drop(w);
        let w = ShardedWal::with_storage(options(), Arc::new(disk.clone()), SHARDS).unwrap();
        let ids: Vec<Vec<u8>> = w.list_checkpoints().into_iter().map(|c| c.0).collect();
        assert_eq!(ids[0], b"good");
        assert!(ids.len() <= 2, "{ids:?}");
        assert!(w.checkpoint_damage().is_empty());
        w.create_checkpoint(b"later").unwrap();
        assert_eq!(w.load_latest_checkpoint().unwrap().0, b"later");
    }
}
