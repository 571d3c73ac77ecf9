//! Retention by policy (`retain_bytes`, `retain_age`; the mount's
//! `--retain-bytes`, `--retain-age`): the oldest sealed segments go while
//! the stream is over either limit, never the active segment, never ids at
//! or past a floor (a sharded log's checkpoints); through the mount `log`
//! keeps its offsets and its readers their place.

mod common;

use common::mount::Mounted;
use common::{done_soon, eventually};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use walfs::sharded::ShardedWal;
use walfs::{SimDisk, Wal, WalOptions};

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i:06} {}\n", "r".repeat(1000)).into_bytes()
}

/// A stream `s` of `n` entries of about 1 KiB in segments of 16 KiB.
fn filled(dir: &Path, n: u64, policy: impl FnOnce(&mut WalOptions)) -> Wal {
    let mut o = WalOptions::new(dir);
    o.max_segment_size = 16 << 10;
    policy(&mut o);
    let wal = Wal::new(o).unwrap();
    for i in 0..n {
        wal.append("s", &entry(i)).unwrap();
    }
    wal
}

fn bytes(wal: &Wal) -> u64 {
    wal.segments("s").iter().map(|s| s.len).sum()
}

/// Every id from the first retained on reads back; the ones before are gone.
fn check_kept(wal: &Wal, n: u64) {
    let first = wal.first_id("s");
    for i in first..n {
        assert_eq!(wal.get("s", i).unwrap(), Some(entry(i)), "id {i}");
    }
    if first > 0 {
        assert_eq!(wal.get("s", first - 1).unwrap(), None);
    }
}

#[test]
fn retain_bytes_frees_the_oldest_sealed_segments_down_to_the_limit() {
    let t = tempfile::tempdir().unwrap();
    let wal = filled(t.path(), 400, |o| o.retain_bytes = Some(100 << 10));
    let (before, segs) = (bytes(&wal), wal.segments("s").len());
    assert!(
        before > 300 << 10 && segs > 20,
        "{before} bytes, {segs} segments"
    );
    let plan = wal.retention_plan("s", u64::MAX).unwrap();
    let done = wal.apply_retention("s", u64::MAX).unwrap().unwrap();
    assert_eq!(plan, done);
    assert_eq!(done.reason, "over retain_bytes");
    assert!(done.held.is_none());
    let after = bytes(&wal);
    assert_eq!(before - after, done.bytes);
    assert_eq!(wal.segments("s").len(), segs - done.segments);
    // Down to the limit, and not a segment further.
    assert!(after <= 100 << 10, "{after} bytes kept");
    assert!(
        after + (16 << 10) > 100 << 10,
        "{after} bytes kept: too many freed"
    );
    assert_eq!(wal.first_id("s"), done.first_kept);
    check_kept(&wal, 400);
    // Nothing more to do; appends go on from where they were.
    assert_eq!(wal.apply_retention("s", u64::MAX).unwrap(), None);
    assert_eq!(wal.append("s", &entry(400)).unwrap(), 400);
    let info = wal.stream_info("s").unwrap();
    assert!(info.to_text(None).contains("retention: bytes <= 102400\n"));
}

#[test]
fn retain_age_frees_the_segments_last_written_before_it() {
    let t = tempfile::tempdir().unwrap();
    let wal = filled(t.path(), 200, |o| {
        o.retain_age = Some(Duration::from_secs(3600))
    });
    assert_eq!(wal.apply_retention("s", u64::MAX).unwrap(), None, "all new");
    // The three oldest segments were last written two hours ago.
    let segs = wal.segments("s");
    let old = SystemTime::now() - Duration::from_secs(7200);
    for s in &segs[..3] {
        std::fs::File::options()
            .write(true)
            .open(&s.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let done = wal.apply_retention("s", u64::MAX).unwrap().unwrap();
    assert_eq!(done.reason, "older than retain_age");
    assert_eq!(done.segments, 3);
    assert_eq!(done.first_kept, segs[3].start_id);
    assert_eq!(wal.first_id("s"), segs[3].start_id);
    check_kept(&wal, 200);
    let text = wal.stream_info("s").unwrap().to_text(None);
    assert!(text.contains("retention: age <= 1h\n"), "{text}");
}

#[test]
fn retention_never_frees_the_active_segment() {
    let t = tempfile::tempdir().unwrap();
    let wal = filled(t.path(), 10, |o| o.retain_bytes = Some(1));
    assert_eq!(wal.segments("s").len(), 1);
    assert_eq!(wal.apply_retention("s", u64::MAX).unwrap(), None);
    assert_eq!(wal.first_id("s"), 0);
    // Past a rotation, everything but the active segment goes.
    for i in 10..40 {
        wal.append("s", &entry(i)).unwrap();
    }
    let done = wal.apply_retention("s", u64::MAX).unwrap().unwrap();
    let segs = wal.segments("s");
    assert_eq!(segs.len(), 1);
    assert!(!segs[0].sealed);
    assert_eq!(done.first_kept, segs[0].start_id);
    check_kept(&wal, 40);
}

#[test]
fn retention_keeps_every_id_from_the_floor_on() {
    let t = tempfile::tempdir().unwrap();
    let wal = filled(t.path(), 400, |o| o.retain_bytes = Some(1));
    let segs = wal.segments("s");
    // A floor inside the fifth segment: the four before it may go, no more.
    let floor = segs[4].start_id + 1;
    let done = wal.apply_retention("s", floor).unwrap().unwrap();
    assert_eq!(done.segments, 4);
    assert_eq!(wal.first_id("s"), segs[4].start_id);
    let (at, why) = done.held.unwrap();
    assert_eq!(at, segs[4].start_id);
    assert!(why.contains("checkpoint"), "{why}");
    check_kept(&wal, 400);
    // Held again: nothing freed, the same hold.
    let again = wal.apply_retention("s", floor).unwrap().unwrap();
    assert_eq!((again.segments, again.held.map(|h| h.0)), (0, Some(at)));
}

/// A truncation of a stream `s` of 200 strict entries in 16 KiB segments
/// on a simulated disk (archiving what it frees when `archive` is set) to
/// its sixth segment, stopped at its first removal, which the disk holds.
struct HeldTruncation {
    disk: SimDisk,
    wal: Wal,
    /// The first id kept.
    keep: u64,
    hold: walfs::storage::sim::Hold,
    truncating: std::thread::JoinHandle<walfs::Result<usize>>,
}

fn held_truncation(archive: bool) -> HeldTruncation {
    let disk = SimDisk::with_root(Path::new("/sim"));
    let mut o = WalOptions::new("/sim/data");
    o.max_segment_size = 16 << 10;
    if archive {
        o.archive_path = Some("/sim/archive".into());
    }
    let wal = Wal::with_storage(o, Arc::new(disk.clone())).unwrap();
    for i in 0..200 {
        wal.append("s", &entry(i)).unwrap();
    }
    let keep = wal.segments("s")[5].start_id;
    let hold = disk.hold_removals();
    let truncating = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.truncate("s", keep))
    };
    eventually("a removal at the disk", 10, || disk.removals_waiting() > 0);
    HeldTruncation {
        disk,
        wal,
        keep,
        hold,
        truncating,
    }
}

/// A truncation holds the writer's lock only while it moves the index:
/// strict appends, reads and rotations go on while it removes the freed
/// files and syncs the directory. Each removal is held at the disk.
#[test]
fn appends_go_on_while_a_truncation_removes_the_freed_files() {
    let HeldTruncation {
        disk: d,
        wal,
        keep,
        hold,
        truncating,
    } = held_truncation(false);
    assert_eq!(wal.first_id("s"), keep, "the index moved before any file");
    // Enough to rotate twice while the files wait at the disk.
    let appended = done_soon({
        let wal = wal.clone();
        move || {
            let segments = wal.segments("s").len();
            let mut last = 0;
            for i in 200..240 {
                last = wal.append("s", &entry(i)).unwrap();
            }
            (last, wal.segments("s").len() - segments)
        }
    });
    drop(hold);
    assert_eq!(appended, Some((239, 2)), "appends waited for the removals");
    assert_eq!(truncating.join().unwrap().unwrap(), 5);
    check_kept(&wal, 240);
    let left: Vec<_> = d
        .files()
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    assert_eq!(left.len(), wal.segments("s").len(), "{left:?}");
    // Nothing lost across a crash right after.
    drop(wal);
    let wal = Wal::with_storage(
        WalOptions::new("/sim/data"),
        Arc::new(d.crash(walfs::CrashMode::DropUnsynced)),
    )
    .unwrap();
    assert_eq!(wal.first_id("s"), keep);
    check_kept(&wal, 240);
}

/// A restore asked while a truncation archives waits for it, and brings
/// back every segment it archived: the stream is whole again.
#[test]
fn a_restore_during_a_truncation_waits_and_brings_everything_back() {
    let HeldTruncation {
        wal,
        hold,
        truncating,
        ..
    } = held_truncation(true);
    let restoring = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.restore_archived("s"))
    };
    std::thread::sleep(Duration::from_millis(50));
    drop(hold);
    assert_eq!(truncating.join().unwrap().unwrap(), 5);
    assert_eq!(
        restoring.join().unwrap().unwrap(),
        5,
        "restored what was archived"
    );
    assert_eq!(wal.first_id("s"), 0);
    check_kept(&wal, 200);
}

/// A stream deleted while a truncation archives its segments waits for
/// the truncation: every segment it freed reaches the archive, though the
/// stream is then gone (the archive outlives it, for a restore by hand).
#[test]
fn a_delete_during_a_truncation_waits_and_the_archive_keeps_every_segment() {
    let HeldTruncation {
        disk,
        wal,
        hold,
        truncating,
        ..
    } = held_truncation(true);
    let deleting = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.delete_stream("s"))
    };
    // Time for the delete to overtake the held truncation, if it can.
    std::thread::sleep(Duration::from_millis(300));
    let overtook = deleting.is_finished();
    drop(hold);
    let truncated = truncating.join().unwrap();
    deleting.join().unwrap().unwrap();
    let archived: Vec<_> = disk
        .files()
        .into_iter()
        .filter(|(p, _)| {
            p.starts_with("/sim/archive/s") && p.extension().is_some_and(|e| e == "wal")
        })
        .collect();
    assert!(
        !overtook,
        "the delete finished while the truncation's moves waited (archived: {archived:?}, truncation: {truncated:?})"
    );
    assert_eq!(truncated.unwrap(), 5);
    assert_eq!(archived.len(), 5, "{archived:?}");
    assert!(archived.iter().all(|(_, len)| *len > 0), "{archived:?}");
    assert!(wal.segments("s").is_empty(), "the stream is gone");
}

fn stat(m: &Mounted) -> String {
    std::fs::read_to_string(m.path("stat")).unwrap()
}

fn field(stat: &str, key: &str) -> u64 {
    stat.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {stat}"))
        .parse()
        .unwrap()
}

#[test]
fn the_mount_applies_retention_and_log_keeps_its_offsets_and_readers() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let mut m = Mounted::start_on(
        &data,
        &[
            "--segment-size",
            "16K",
            "--retain-bytes",
            "64K",
            "--sync",
            "async",
        ],
    );
    let written = |from: u64, to: u64| -> Vec<u8> { (from..to).flat_map(entry).collect() };
    {
        let mut a = std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("append"))
            .unwrap();
        // One write(2) per line: the lines of one write are one frame.
        for i in 0..50 {
            a.write_all(&entry(i)).unwrap();
        }
    }
    // A reader of `log` holds it open at its end.
    let mut log = std::fs::File::open(m.path("log")).unwrap();
    let mut head = Vec::new();
    log.read_to_end(&mut head).unwrap();
    assert!(head == written(0, 50));
    {
        let mut a = std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("append"))
            .unwrap();
        for i in 50..300 {
            a.write_all(&entry(i)).unwrap();
        }
    }
    // Within a few seconds the policy has freed the oldest segments.
    let deadline = Instant::now() + Duration::from_secs(20);
    while field(&stat(&m), "first_id") == 0 {
        assert!(Instant::now() < deadline, "nothing freed: {}", stat(&m));
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = stat(&m);
    assert!(s.contains("retention: bytes <= 65536\n"), "{s}");
    assert!(field(&s, "bytes") <= 64 << 10, "{s}");
    let first = field(&s, "first_id");
    // The reader goes on exactly where it was: what retention freed before
    // it got there reads as zeros (as after any truncation while mounted),
    // every retained byte is at its place, nothing is read twice.
    let mut rest = Vec::new();
    log.read_to_end(&mut rest).unwrap();
    let want = written(50, 300);
    let gone = written(50, first.max(50)).len();
    assert_eq!(rest.len(), want.len(), "the reader lost its place");
    assert!(rest[..gone].iter().all(|&b| b == 0));
    assert!(rest[gone..] == want[gone..], "the reader lost its place");
    let all = written(0, 300);
    assert_eq!(
        std::fs::metadata(m.path("log")).unwrap().len(),
        all.len() as u64
    );
    let from = written(0, first).len() as u64;
    let mut kept = Vec::new();
    let mut again = std::fs::File::open(m.path("log")).unwrap();
    again.seek(SeekFrom::Start(from)).unwrap();
    again.read_to_end(&mut kept).unwrap();
    assert!(kept == all[from as usize..], "retained bytes moved");
    assert!(!m.path(&format!("entries/{}", first - 1)).exists());
    assert_eq!(
        std::fs::read(m.path(&format!("entries/{first}"))).unwrap(),
        entry(first)
    );
    // A stream whose `log` nobody opened before retention freed its oldest
    // segments: its offsets still count from its first entry ever.
    std::fs::create_dir(m.path("streams/other")).unwrap();
    {
        let mut a = std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("streams/other/append"))
            .unwrap();
        for i in 0..300 {
            a.write_all(&entry(i)).unwrap();
        }
    }
    let other = |k| {
        field(
            &std::fs::read_to_string(m.path("streams/other/stat")).unwrap(),
            k,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while other("first_id") == 0 {
        assert!(Instant::now() < deadline, "nothing freed in other");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = other("first_id");
    let whole = std::fs::read(m.path("streams/other/log")).unwrap();
    assert_eq!(whole.len(), all.len(), "the offsets of `log` moved");
    let from = written(0, first).len();
    assert!(whole[..from].iter().all(|&b| b == 0));
    assert!(whole[from..] == all[from..], "the offsets of `log` moved");
    drop((log, again));
    let err = m.stop_capturing();
    assert!(
        err.contains("retention: bytes <= 65536 (the disk checked every second")
            && err.contains("retention freed")
            && err.contains("(over retain_bytes)"),
        "{err}"
    );
}

#[test]
fn the_mount_keeps_what_a_checkpoint_names() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    {
        let mut o = WalOptions::new(&data);
        o.max_segment_size = 1024;
        let w = ShardedWal::new(o, 2).unwrap();
        w.inner().append("shard_00", b"early\n").unwrap();
        w.create_checkpoint(b"early").unwrap();
        for _ in 0..60 {
            for s in ["shard_00", "shard_01"] {
                w.inner().append(s, &[b'x'; 100]).unwrap();
            }
        }
    }
    let first = |m: &Mounted, s: &str| {
        field(
            &std::fs::read_to_string(m.path(&format!("streams/{s}/stat"))).unwrap(),
            "first_id",
        )
    };
    // "early" names offset 1 of shard_00 and 0 of shard_01: nothing goes.
    let mut m = Mounted::start_on(&data, &["--segment-size", "1024", "--retain-bytes", "1"]);
    let err = {
        std::thread::sleep(Duration::from_millis(2500));
        for s in ["shard_00", "shard_01"] {
            assert_eq!(first(&m, s), 0, "{s}");
        }
        m.stop_capturing()
    };
    assert!(
        err.contains("stream shard_01: retention keeps the segment starting at id 0")
            && err.contains("named by a checkpoint"),
        "{err}"
    );
    // Without the checkpoint, everything but the active segments goes.
    let (code, _, e) = common::mount::sh(&format!(
        "{} checkpoint compact {} --keep 0",
        env!("CARGO_BIN_EXE_walfs"),
        data.display()
    ));
    assert_eq!(code, 0, "{e}");
    let m = Mounted::start_on(&data, &["--segment-size", "1024", "--retain-bytes", "1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in ["shard_00", "shard_01"] {
        while first(&m, s) == 0 {
            assert!(Instant::now() < deadline, "{s}: nothing freed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn retention_options_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
            .arg("mount")
            .arg(t.path().join("data"))
            .arg(t.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} accepted");
        String::from_utf8(o.stderr).unwrap()
    };
    let e = run(&["--retain-age", "soon"]);
    assert!(e.contains("is not a duration") && e.contains("30d"), "{e}");
    let e = run(&["--retain-age", "0s"]);
    assert!(e.contains("more than 0"), "{e}");
    let e = run(&["--retain-bytes", "1X"]);
    assert!(e.contains("unknown size suffix"), "{e}");
    let e = run(&["--read-only", "--retain-bytes", "1G"]);
    assert!(e.contains("writable local log"), "{e}");
    assert!(
        !t.path().join("data").exists(),
        "a refusal made the data directory"
    );
}
