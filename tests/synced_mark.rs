//! walfs.synced, the record of how far the active segment is on disk: it
//! is written after each sync (in two slots, turn by turn), synced at a
//! clean close (and at most once a second otherwise), its descriptor goes
//! with the stream's, and the stream's modification time starts from the
//! segment's.

use std::path::Path;
use std::sync::Arc;
use walfs::format::{synced_decode, SYNCED, SYNCED_SLOT};
use walfs::{CrashMode, SimDisk, Storage, SyncMode, Wal, WalOptions};

const ROOT: &str = "/sim/data";

fn sim() -> (SimDisk, Wal) {
    let d = SimDisk::with_root(Path::new("/sim"));
    let mut o = WalOptions::new(ROOT);
    o.sync_mode = SyncMode::Strict;
    let w = Wal::with_storage(o, Arc::new(d.clone())).unwrap();
    (d, w)
}

fn mark_of(d: &SimDisk) -> Vec<u8> {
    d.read_file(&Path::new(ROOT).join("s").join(SYNCED))
        .unwrap()
}

/// After a clean close, walfs.synced survives a power loss exactly: it
/// names the whole active segment.
#[test]
fn a_clean_close_leaves_the_mark_exact_on_disk() {
    let (d, w) = sim();
    for i in 0..5 {
        w.append("s", format!("entry {i}").as_bytes()).unwrap();
    }
    let seg = w.segments("s").pop().unwrap();
    drop(w);
    let after = d.crash(CrashMode::DropUnsynced);
    let (_, m) = synced_decode(&mark_of(&after)).expect("the mark survived");
    assert_eq!((m.segment, m.len, m.end_id), (seg.start_id, seg.len, 5));
}

/// Each sync writes the other slot: both hold a record, the newer wins,
/// and a torn newer one leaves the older.
#[test]
fn the_two_slots_are_written_in_turn() {
    let (d, w) = sim();
    w.append("s", b"one").unwrap();
    w.append("s", b"two").unwrap();
    let b = mark_of(&d);
    let slot = SYNCED_SLOT as usize;
    let first = synced_decode(&b[..slot]).expect("slot 0 written");
    let second = synced_decode(&b[slot..]).expect("slot 1 written");
    assert_ne!(first.0, second.0, "different sequence numbers");
    let newest = synced_decode(&b).unwrap();
    assert_eq!(newest.1.end_id, 2);
    let mut torn = b.clone();
    let newer_at = if first.0 > second.0 { 0 } else { slot };
    torn[newer_at + 20] ^= 0xff;
    assert_eq!(synced_decode(&torn).unwrap().1.end_id, 1, "the older slot");
    drop(w);
}

/// walfs.synced is not synced with every append: within a second, the
/// syncs are the segment's alone.
#[test]
fn the_mark_costs_no_sync_per_append() {
    let (d, w) = sim();
    w.append("s", b"warm").unwrap();
    let before = d.sync_count();
    let t = std::time::Instant::now();
    for i in 0..50 {
        w.append("s", format!("{i}").as_bytes()).unwrap();
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "too slow to tell"
    );
    assert!(
        d.sync_count() - before <= 51,
        "{} syncs for 50 appends",
        d.sync_count() - before
    );
}

/// The descriptor of walfs.synced is given up with the stream's write
/// descriptor: 40 streams under a bound of 2 open ones keep a few open.
#[test]
fn mark_descriptors_are_bounded_with_the_streams() {
    let t = tempfile::tempdir().unwrap();
    let mut o = WalOptions::new(t.path());
    o.max_open_segments = 2;
    let w = Wal::new(o).unwrap();
    for i in 0..40 {
        w.append(&format!("s{i}"), b"x").unwrap();
    }
    let open_marks = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|p| p.starts_with(t.path()) && p.ends_with(SYNCED))
        })
        .count();
    assert!(
        open_marks <= 4,
        "{open_marks} walfs.synced descriptors open"
    );
}

/// Before any append, a stream's modification time is its active
/// segment's.
#[test]
fn a_streams_time_starts_from_its_segment() {
    let t = tempfile::tempdir().unwrap();
    let w = Wal::new(WalOptions::new(t.path())).unwrap();
    w.append("s", b"x").unwrap();
    let seg = w.segments("s").pop().unwrap().path;
    drop(w);
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let mut o = WalOptions::new(t.path());
    o.read_only = true;
    let w = Wal::new(o).unwrap();
    assert_eq!(w.modified("s"), Some(past));
}
