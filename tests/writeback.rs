//! The writeback of a growing segment is started every MiB handed to
//! the kernel (sync_file_range), so the fdatasync that seals a full segment
//! waits for little. A hint only: every byte is still made durable by the
//! syncs the contract names, and a crash ignores hints. A start is made
//! after the stream's writer lock is let go: appends never wait for one.

mod common;
use common::{done_soon, eventually};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use walfs::{CrashMode, SimDisk, SyncMode, Wal, WalOptions};

const ROOT: &str = "/sim/data";
const MIB: u64 = 1 << 20;
const STEP: u64 = MIB;

fn open(d: &SimDisk, mode: SyncMode) -> Wal {
    let mut o = WalOptions::new(ROOT);
    o.sync_mode = mode;
    o.max_segment_size = 24 * MIB;
    Wal::with_storage(o, Arc::new(d.clone())).unwrap()
}

/// Appends about `mib` MiB: 1 MiB batches (written at once) alternating
/// with runs of 100-byte entries (gathered in the async buffer).
fn fill(wal: &Wal, mib: u64) -> u64 {
    let big = vec![b'b'; MIB as usize - 64];
    let small = vec![b's'; 100];
    let mut n = 0;
    for i in 0..mib {
        if i % 2 == 0 {
            wal.append_batch("s", &[&big[..]]).unwrap();
            n += 1;
        } else {
            for _ in 0..(MIB / 104) {
                wal.append("s", &small).unwrap();
                n += 1;
            }
        }
    }
    n
}

/// Each file's writeback ranges, in order.
fn ranges_by_file(d: &SimDisk) -> BTreeMap<u64, Vec<(u64, u64)>> {
    let mut by: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (file, off, len) in d.writebacks() {
        by.entry(file).or_default().push((off, len));
    }
    by
}

#[test]
fn writeback_of_a_growing_segment_starts_every_mib_from_its_first_byte() {
    for mode in [SyncMode::Async, SyncMode::BatchOnly] {
        let d = SimDisk::with_root(Path::new("/sim"));
        let wal = open(&d, mode);
        let n = fill(&wal, 60);
        wal.sync("s").unwrap();
        let segs = wal.segments("s");
        assert!(segs.len() >= 3, "{mode:?}: {} segments", segs.len());

        let by = ranges_by_file(&d);
        // Every full segment (each sealed one) was handed to its device in
        // steps as it grew: from byte 0, contiguous, each step at least a
        // MiB, up to within a step (and one batch) of its end.
        let sealed: Vec<_> = segs.iter().filter(|s| s.sealed).collect();
        let covering: Vec<&Vec<(u64, u64)>> = by.values().filter(|r| r.len() >= 2).collect();
        assert!(
            covering.len() >= sealed.len(),
            "{mode:?}: writeback started in {} files for {} sealed segments: {by:?}",
            covering.len(),
            sealed.len()
        );
        for ranges in by.values() {
            let mut at = 0;
            for &(off, len) in ranges {
                assert_eq!(off, at, "{mode:?}: a gap or overlap in {ranges:?}");
                assert!(len >= STEP, "{mode:?}: a step of {len} bytes in {ranges:?}");
                at = off + len;
            }
        }
        for s in &sealed {
            let covered = by
                .values()
                .map(|r| r.last().map_or(0, |&(o, l)| o + l))
                .filter(|&end| end <= s.len && end + STEP + MIB >= s.len)
                .count();
            assert!(
                covered >= 1,
                "{mode:?}: no file's writeback reaches near the end of a {} byte segment: {by:?}",
                s.len
            );
        }

        // Hints make nothing durable: what a power loss keeps is what the
        // syncs made durable, all of it.
        drop(wal);
        let after = d.crash(CrashMode::DropUnsynced);
        let wal = open(&after, mode);
        assert_eq!(wal.stream_info("s").unwrap().next_id, n, "{mode:?}");
    }
}

#[test]
fn a_real_file_starts_its_writeback_and_counts_it() {
    use walfs::{RealStorage, Storage};
    let dir = tempfile::tempdir().unwrap();
    let f = RealStorage.open(&dir.path().join("f"), true).unwrap();
    f.write_all_at(&vec![1u8; MIB as usize], 0).unwrap();
    let started = || walfs::metrics::global().writebacks_started.get();
    let before = started();
    f.start_writeback(0, MIB);
    assert_eq!(started(), before + 1, "sync_file_range did not succeed");
    f.sync_data().unwrap();
}

#[test]
fn appends_go_on_while_a_writeback_start_waits() {
    // Starting a writeback submits pages to the device; here the disk holds
    // every start, and appends must not wait for one: in async mode the
    // flush thread starts it after writing the frame behind, in batch mode
    // the append that wrote it, both after letting the writer's lock go.
    for mode in [SyncMode::Async, SyncMode::BatchOnly] {
        let d = SimDisk::with_root(Path::new("/sim"));
        let wal = open(&d, mode);
        let hold = d.hold_writebacks();
        let bulk = {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let big = vec![b'b'; 2 * MIB as usize];
                wal.append_batch("s", &[&big[..]]).unwrap();
            })
        };
        eventually("a writeback start at the disk", 10, || {
            d.writebacks_waiting() > 0
        });
        let small = {
            let wal = wal.clone();
            done_soon(move || {
                for i in 0..200u32 {
                    wal.append("s", &i.to_le_bytes()).unwrap();
                }
                wal.next_id("s")
            })
        };
        assert_eq!(
            small,
            Some(201),
            "{mode:?}: appends waited for a held writeback start"
        );
        drop(hold);
        bulk.join().unwrap();
        wal.sync("s").unwrap();
        drop(wal);
        let after = d.crash(CrashMode::DropUnsynced);
        let wal = open(&after, mode);
        assert_eq!(wal.stream_info("s").unwrap().next_id, 201, "{mode:?}");
    }
}
