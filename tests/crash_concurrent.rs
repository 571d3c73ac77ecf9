//! Power loss under concurrent appenders, on the simulated disk: group
//! commit writes the frames of several appenders one write each, then one
//! fdatasync, so a crash can keep a later frame and lose an earlier one
//! (LazyFS's torn-seq). At every sync point, under every crash model,
//! through the library and through the mount's own write path (the view
//! that `append` serves, on the same engine), recovery must:
//! - keep every acknowledged entry, with its bytes, under its id;
//! - report no crash as corruption (verify before the open says only
//!   "torn tail", where the open then cuts; the Error policy opens);
//! - keep no frame that was never synced behind a hole (no damage at all
//!   after the open), with ids dense.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use walfs::mount::view::Node;
use walfs::mount::View;
use walfs::{CorruptionPolicy, CrashMode, FaultKind, SimDisk, Storage, SyncMode, Wal, WalOptions};

const ROOT: &str = "/sim/data";

fn options() -> WalOptions {
    let mut o = WalOptions::new(ROOT);
    o.sync_mode = SyncMode::Strict;
    o.max_segment_size = 4000;
    o
}

/// What the writers were told: id -> entry, for every acknowledged entry;
/// and every entry any writer tried to append.
#[derive(Default)]
struct Acks {
    acked: HashMap<u64, Vec<u8>>,
    attempted: Vec<Vec<u8>>,
}

/// One writer's entries: unique, of varied length.
fn entry(w: usize, i: usize) -> Vec<u8> {
    let mut e = format!("w{w}-{i}-").into_bytes();
    e.extend(std::iter::repeat_n(
        b'a' + (i % 26) as u8,
        (w * 37 + i * 11) % 150,
    ));
    e
}

/// `writers` threads appending through the library, alone and in batches,
/// until the disk dies (or `ops` each).
fn run_library(disk: &SimDisk, writers: usize, ops: usize) -> Acks {
    let Ok(wal) = Wal::with_storage(options(), Arc::new(disk.clone())) else {
        return Acks::default();
    };
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut acks = Acks::default();
                let mut i = 0;
                while i < ops {
                    let n = 1 + (w + i) % 3;
                    let batch: Vec<Vec<u8>> = (i..i + n).map(|k| entry(w, k)).collect();
                    i += n;
                    acks.attempted.extend(batch.iter().cloned());
                    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    let r = if n == 1 {
                        wal.append("s", refs[0]).map(|id| id..id + 1)
                    } else {
                        wal.append_batch("s", &refs)
                    };
                    match r {
                        Ok(ids) => acks.acked.extend(ids.zip(batch)),
                        Err(_) => break,
                    }
                }
                acks
            })
        })
        .collect();
    merge(threads)
}

/// The same through the mount's `append`: each writer opens it read-write,
/// writes lines (one or several per write), and learns the ids of each
/// committed write by reading the handle, as a shell would.
fn run_mount(disk: &SimDisk, writers: usize, ops: usize) -> Acks {
    let Ok(wal) = Wal::with_storage(options(), Arc::new(disk.clone())) else {
        return Acks::default();
    };
    let Ok(view) = View::new(wal, "s", false) else {
        return Acks::default();
    };
    let view = Arc::new(view);
    let append = Node::from_ino(view.lookup(Node::Root, b"append").unwrap().ino).unwrap();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let view = view.clone();
            std::thread::spawn(move || {
                let mut acks = Acks::default();
                let Ok(fh) = view.open(append, true, true).map(|o| o.fh) else {
                    return acks;
                };
                let mut i = 0;
                while i < ops {
                    let n = 1 + (w + i) % 3;
                    let lines: Vec<Vec<u8>> = (i..i + n)
                        .map(|k| {
                            let mut e = entry(w, k);
                            e.push(b'\n');
                            e
                        })
                        .collect();
                    i += n;
                    acks.attempted.extend(lines.iter().cloned());
                    if view.write(fh, 0, &lines.concat()).is_err() {
                        break;
                    }
                    let ids = String::from_utf8(view.read(append, fh, 0, 4096).unwrap()).unwrap();
                    let (a, b) = ids.trim().split_once('-').unwrap();
                    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                    assert_eq!(b + 1 - a, n as u64, "{ids}");
                    acks.acked.extend((a..=b).zip(lines));
                }
                view.release(fh);
                acks
            })
        })
        .collect();
    merge(threads)
}

fn merge(threads: Vec<std::thread::JoinHandle<Acks>>) -> Acks {
    let mut all = Acks::default();
    for t in threads {
        let a = t.join().unwrap();
        all.acked.extend(a.acked);
        all.attempted.extend(a.attempted);
    }
    all
}

/// Recovery of a crashed disk, checked against what the writers were told.
/// Returns the number of acknowledged entries checked.
fn check(disk: &SimDisk, acks: &Acks, what: &str) -> usize {
    let root = Path::new(ROOT);
    let before = if disk.exists(root) {
        walfs::verify(disk, root, &mut |_, _| {}).unwrap()
    } else {
        walfs::VerifyReport::default()
    };
    assert!(
        before.faults.iter().all(|f| f.kind == FaultKind::TornTail),
        "{what}: a crash reported as corruption by verify: {:?}",
        before.faults
    );
    let mut o = options();
    o.on_corruption = CorruptionPolicy::Error;
    let wal = Wal::with_storage(o, Arc::new(disk.clone()))
        .unwrap_or_else(|e| panic!("{what}: a crash reported as corruption at open: {e}"));
    for f in &before.faults {
        let active = wal.segments("s").pop().unwrap();
        assert_eq!(
            (
                active.path.file_name().unwrap().to_str().unwrap(),
                active.len
            ),
            (f.location.segment.as_str(), f.location.offset),
            "{what}: verify's torn tail is where the open cut"
        );
    }
    let known: std::collections::HashSet<&[u8]> =
        acks.attempted.iter().map(Vec::as_slice).collect();
    let mut seen = HashMap::new();
    let mut expect = wal.first_id("s");
    for r in wal.iter_with_ids("s", 0).unwrap() {
        let (id, e) = r.unwrap_or_else(|err| panic!("{what}: a hole after recovery: {err}"));
        assert_eq!(id, expect, "{what}: ids dense");
        expect += 1;
        assert!(
            known.contains(&e[..]),
            "{what}: id {id} holds bytes nobody wrote"
        );
        seen.insert(id, e);
    }
    assert_eq!(expect, wal.next_id("s"), "{what}");
    for (id, e) in &acks.acked {
        assert_eq!(
            seen.get(id),
            Some(e),
            "{what}: acknowledged id {id} lost or changed"
        );
    }
    let after = walfs::verify(disk, root, &mut |_, _| {}).unwrap();
    assert!(after.faults.is_empty(), "{what}: {:?}", after.faults);
    acks.acked.len()
}

/// Crashes at every sync point of the workload, under every crash model.
fn crash_everywhere(
    name: &str,
    run: fn(&SimDisk, usize, usize) -> Acks,
    writers: usize,
    ops: usize,
) {
    let parent = Path::new(ROOT).parent().unwrap();
    let total = {
        let d = SimDisk::with_root(parent);
        run(&d, writers, ops);
        d.sync_count()
    };
    let (mut cases, mut acked) = (0, 0);
    for k in 1..=total {
        for crash in [
            CrashMode::DropUnsynced,
            CrashMode::TornPrefix(k * 31),
            CrashMode::Reordered(k * 17),
            CrashMode::Lazy(k * 13),
            CrashMode::Lazy(k * 7 + 1000),
            CrashMode::Lazy(k * 3 + 2000),
        ] {
            let d = SimDisk::with_root(parent);
            d.crash_at_sync(k);
            let acks = run(&d, writers, ops);
            let what = format!("{name}: crash at sync {k}/{total} ({crash:?})");
            acked += check(&d.crash(crash), &acks, &what);
            cases += 1;
        }
    }
    println!("{name}: {writers} writers, {cases} crash cases, {acked} acknowledged entries checked, 0 lost, 0 reported as corruption");
}

#[test]
fn concurrent_appenders_lose_nothing_and_leave_no_hole() {
    let rounds: u64 = std::env::var("WALFS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for r in 0..rounds {
        crash_everywhere("library", run_library, 4 + r as usize % 5, 24);
    }
}

#[test]
fn concurrent_writers_through_the_mount_lose_nothing_and_leave_no_hole() {
    crash_everywhere("mount", run_mount, 4, 18);
}
