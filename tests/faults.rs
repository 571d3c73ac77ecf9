//! I/O faults through the storage seam: failed writes and syncs, ENOSPC and
//! EIO. A failed append is reported, never persisted later, does not burn
//! its id; after a failed sync the stream refuses writes until reopened.

mod common;
use common::{done_soon, eventually};
use std::path::Path;
use std::sync::Arc;
use walfs::{CrashMode, Error, SimDisk, SyncMode, Wal, WalOptions};

const ROOT: &str = "/sim/data";

fn disk() -> SimDisk {
    SimDisk::with_root(Path::new("/sim"))
}

fn open(d: &SimDisk, mode: SyncMode) -> Wal {
    let mut o = WalOptions::new(ROOT);
    o.sync_mode = mode;
    Wal::with_storage(o, Arc::new(d.clone())).unwrap()
}

fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::Io(io) => io.raw_os_error(),
        _ => None,
    }
}

fn entries(w: &Wal) -> Vec<Vec<u8>> {
    w.iter("s", 0).unwrap().map(Result::unwrap).collect()
}

#[test]
fn failed_write_is_reported_undone_and_refuses_writes_until_reopen() {
    for (mode, code) in [
        (SyncMode::Strict, libc::ENOSPC),
        (SyncMode::BatchOnly, libc::EIO),
    ] {
        let d = disk();
        let wal = open(&d, mode);
        wal.append("s", b"one").unwrap();
        wal.sync("s").unwrap();
        let seg_len = || {
            d.files()
                .into_iter()
                .find(|(p, _)| p.extension().is_some_and(|e| e == "wal"))
                .unwrap()
                .1
        };
        let before = seg_len();
        d.fail_write(1, code);
        let e = wal.append("s", b"two-that-fails").unwrap_err();
        assert_eq!(errno(&e), Some(code), "{e}");
        // The half that landed was taken back at once (not left for
        // recovery to find).
        assert_eq!(seg_len(), before, "the failed write is undone");
        // Nothing after a failed write is acknowledged until reopened.
        assert!(matches!(
            wal.append("s", b"three"),
            Err(Error::Poisoned { .. })
        ));
        assert_eq!(entries(&wal), vec![b"one".to_vec()]);
        drop(wal);
        // The half-written frame was cut: it never reappears, and its id
        // is given to the next entry.
        for after in [d.clone(), d.crash(CrashMode::TornPrefix(5))] {
            let wal = open(&after, mode);
            assert_eq!(entries(&wal), vec![b"one".to_vec()]);
            assert_eq!(wal.append("s", b"three").unwrap(), 1);
        }
    }
}

#[test]
fn failed_async_flush_is_reported_and_poisons() {
    let d = disk();
    let wal = open(&d, SyncMode::Async);
    wal.append("s", b"one").unwrap();
    wal.sync("s").unwrap();
    d.fail_write(1, libc::ENOSPC);
    // Buffered: acknowledged without I/O; its id is given out.
    assert_eq!(wal.append("s", b"two").unwrap(), 1);
    let e = wal.sync("s").unwrap_err();
    assert_eq!(errno(&e), Some(libc::ENOSPC), "{e}");
    // Ids already given out are never reused for other entries.
    assert!(matches!(
        wal.append("s", b"three"),
        Err(Error::Poisoned { .. })
    ));
    drop(wal);
    let wal = open(&d, SyncMode::Async);
    assert_eq!(entries(&wal), vec![b"one".to_vec()]);
}

#[test]
fn a_failed_write_behind_is_reported_and_poisons() {
    // A frame as large as the write buffer is written by the flusher
    // thread after its append returned (write-behind): its failure reaches
    // the next sync and append, and nothing of it survives.
    let d = disk();
    let wal = open(&d, SyncMode::Async);
    wal.append("s", b"one").unwrap();
    wal.sync("s").unwrap();
    d.fail_write(1, libc::ENOSPC);
    let big = vec![b'x'; WalOptions::default().write_buffer_size];
    assert_eq!(wal.append_batch("s", &[&big[..]]).unwrap(), 1..2);
    let e = wal.sync("s").unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    assert!(matches!(
        wal.append("s", b"three"),
        Err(Error::Poisoned { .. })
    ));
    drop(wal);
    let wal = open(&d, SyncMode::Async);
    assert_eq!(entries(&wal), vec![b"one".to_vec()]);
    // Written behind and read at once, in order with what was buffered
    // before it.
    wal.append("s", b"two").unwrap();
    let id = wal.append_batch("s", &[&big[..]]).unwrap().start;
    assert_eq!(wal.get("s", id).unwrap().unwrap(), big);
    wal.append("s", b"four").unwrap();
    drop(wal);
    let wal = open(&d, SyncMode::Async);
    assert_eq!(
        entries(&wal),
        vec![b"one".to_vec(), b"two".to_vec(), big, b"four".to_vec()]
    );
}

/// An async stream `s` holding "one" (synced: its files made and its first
/// time mark written before the disk holds writes), then a frame of
/// `fill` bytes appended while the disk holds every write. Returned once
/// the flush thread's write of that frame waits at the disk, with the
/// frame's entry and id.
fn held_write_behind(fill: u8) -> (SimDisk, Wal, walfs::storage::sim::Hold, Vec<u8>, u64) {
    let d = disk();
    let wal = open(&d, SyncMode::Async);
    wal.append("s", b"one").unwrap();
    wal.sync("s").unwrap();
    let big = vec![fill; WalOptions::default().write_buffer_size];
    let hold = d.hold_writes();
    let id = {
        let (wal, big) = (wal.clone(), big.clone());
        done_soon(move || wal.append_batch("s", &[&big[..]]).unwrap().start)
    }
    .expect("an append waited for a write");
    eventually("the flush thread's write", 10, || d.writes_waiting() > 0);
    (d, wal, hold, big, id)
}

#[test]
fn a_sync_after_the_flush_thread_failed_a_write_behind_reports_it() {
    // The flush thread, not the sync, meets the failure: the disk holds its
    // write (with the writer's lock) until the sync is asked. The frame is
    // lost, so the sync fails; it returned Ok when nothing was left to
    // write.
    let (d, wal, hold, _, id) = held_write_behind(b'x');
    assert_eq!(id, 1);
    d.fail_write(1, libc::ENOSPC);
    drop(hold);
    let e = wal.sync("s").unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    assert!(e.to_string().contains("No space left"), "{e}");
    drop(wal);
    let wal = open(&d, SyncMode::Async);
    assert_eq!(entries(&wal), vec![b"one".to_vec()]);
}

#[test]
fn a_read_of_an_entry_the_flush_thread_is_writing_waits_for_it() {
    // Acknowledged async entries are readable at once: one whose frame
    // the flush thread is writing (the disk holds the write) is served
    // once that write ends, never reported missing.
    let (_d, wal, hold, big, id) = held_write_behind(b'r');
    let read = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.get("s", id).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !read.is_finished(),
        "a read did not wait for the write in flight"
    );
    drop(hold);
    assert_eq!(read.join().unwrap(), Some(big));
}

#[test]
fn small_async_appends_are_gathered_into_few_writes() {
    // 1,000 appends of 46 bytes each fit in the 64 KiB buffer: what writes
    // them is the flusher's 10 ms tick and the final sync, a handful of
    // writes, never one per append (nor one per append written behind).
    let d = disk();
    let wal = open(&d, SyncMode::Async);
    let before = d.write_count();
    for i in 0..1000u32 {
        wal.append("s", format!("entry {i:04}").as_bytes()).unwrap();
    }
    wal.sync("s").unwrap();
    let writes = d.write_count() - before;
    assert!(
        writes < 100,
        "{writes} writes for 1,000 small async appends"
    );
    assert_eq!(entries(&wal).len(), 1000);
}

#[test]
fn async_appends_are_readable_at_once_and_flushed_in_the_background() {
    let d = disk();
    let wal = open(&d, SyncMode::Async);
    let id = wal.append("s", b"buffered").unwrap();
    assert_eq!(
        wal.get("s", id).unwrap().unwrap(),
        b"buffered",
        "read your writes"
    );
    wal.append("s", b"second").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let seg = Path::new(ROOT).join("s/00000000000000000000.wal");
    // Nobody reads or syncs: the background flush alone must write it.
    while d.files().iter().find(|(p, _)| *p == seg).map_or(0, |f| f.1) < 2 * (32 + 4) + 14 {
        assert!(std::time::Instant::now() < deadline, "not flushed in time");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn failed_sync_poisons_until_reopen_and_never_acknowledges() {
    for code in [libc::EIO, libc::ENOSPC] {
        let d = disk();
        let wal = open(&d, SyncMode::Strict);
        wal.append("s", b"durable").unwrap();
        d.fail_sync(1, code);
        let e = wal.append("s", b"lost").unwrap_err();
        assert_eq!(
            errno(&e),
            Some(code),
            "the writer sees the sync's errno: {e}"
        );
        // Refused, not retried: the kernel may have dropped the pages.
        assert!(matches!(
            wal.append("s", b"later"),
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(
            wal.append_batch("s", &[b"x"]),
            Err(Error::Poisoned { .. })
        ));
        // Readers never saw the unacknowledged entry.
        assert_eq!(wal.get("s", 1).unwrap(), None);
        drop(wal);
        // Reopened without a crash (process restart): the failed entry is
        // gone, the stream takes writes again at the same id.
        let wal = open(&d, SyncMode::Strict);
        assert_eq!(entries(&wal), vec![b"durable".to_vec()]);
        assert_eq!(wal.append("s", b"again").unwrap(), 1);
    }
}

/// Eight writers' frames are all written and waiting behind one sync (held
/// at the disk until they are), which fails: every one of them gets the
/// error, none is acknowledged, and none of their entries survives a crash.
#[test]
fn group_commit_failure_fails_every_waiter() {
    let d = disk();
    let wal = open(&d, SyncMode::Strict);
    wal.append("s", b"base").unwrap();
    let hold = d.hold_syncs();
    let writes = d.write_count();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let wal = wal.clone();
            std::thread::spawn(move || wal.append("s", format!("w{i}").as_bytes()))
        })
        .collect();
    // Every frame written, one sync (the leader's) waiting at the disk.
    while d.write_count() < writes + 8 || d.syncs_waiting() < 1 {
        std::thread::yield_now();
    }
    assert_eq!(d.syncs_waiting(), 1, "one sync for all of them");
    d.fail_sync(1, libc::EIO);
    drop(hold);
    let results: Vec<_> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results {
        match r {
            Err(e) => assert_eq!(errno(e), Some(libc::EIO), "{e}"),
            Ok(id) => panic!("id {id} acknowledged after the failed sync"),
        }
    }
    drop(wal);
    let wal = open(&d.crash(CrashMode::DropUnsynced), SyncMode::Strict);
    assert_eq!(entries(&wal), vec![b"base".to_vec()]);
}

#[test]
fn failed_rotation_poisons_and_recovers() {
    let d = disk();
    let mut o = WalOptions::new(ROOT);
    o.max_entries_per_segment = 2;
    let wal = Wal::with_storage(o.clone(), Arc::new(d.clone())).unwrap();
    wal.append("s", b"a").unwrap();
    wal.append("s", b"b").unwrap();
    // The next append rotates: its first sync (sealing the old segment) fails.
    d.fail_sync(1, libc::EIO);
    assert!(wal.append("s", b"c").is_err());
    assert!(matches!(wal.append("s", b"d"), Err(Error::Poisoned { .. })));
    drop(wal);
    let wal = Wal::with_storage(o, Arc::new(d.crash(CrashMode::DropUnsynced))).unwrap();
    assert_eq!(entries(&wal), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(wal.append("s", b"c").unwrap(), 2);
}

#[test]
fn too_large_batches_are_refused() {
    let d = disk();
    let wal = open(&d, SyncMode::Async);
    let big = vec![0u8; walfs::format::MAX_BATCH_BYTES];
    assert!(matches!(wal.append("s", &big), Err(Error::TooLarge { .. })));
    assert_eq!(wal.append("s", b"fine").unwrap(), 0);
}
