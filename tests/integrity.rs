//! Integrity at the edges, driven as a user would: reads change nothing,
//! refused commands leave no trace, failed writes commit nothing, a damaged
//! stream does not take the others down, and stopping the daemon under load
//! never lets a write land anywhere but in the log.

mod common;

use common::mount::{is_mounted, sh, Mounted};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn walfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `root`: its bytes, mode and modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if m.is_dir() {
                todo.push(e.path());
                out.insert(rel, (Vec::new(), m.mode(), m.mtime(), m.mtime_nsec()));
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                out.insert(rel, (bytes, m.mode(), m.mtime(), m.mtime_nsec()));
            }
        }
    }
    out
}

/// A log whose `default` stream has a damaged frame in the middle of its
/// active segment and a torn tail after its last frame.
fn damaged_log(data: &Path) -> PathBuf {
    assert!(walfs(&["append", s(data), "zero", "one"]).status.success());
    assert!(walfs(&["append", s(data), "two"]).status.success());
    assert!(walfs(&["append", s(data), "three"]).status.success());
    assert!(walfs(&["append", s(data), "-s", "other", "x"])
        .status
        .success());
    let seg = data.join("default/00000000000000000000.wal");
    let mut b = std::fs::read(&seg).unwrap();
    // Frame 2 (id 2) starts after frame 1 (two entries: 32 + 2*4 + 9 bytes).
    let f2 = 32 + 4 + 5 + 4 + 4;
    b[f2 + 34] ^= 0x10;
    // A torn tail: a header's first bytes.
    b.extend_from_slice(&0x4C57_414Cu32.to_le_bytes());
    b.extend_from_slice(&[7, 0, 0]);
    std::fs::write(&seg, &b).unwrap();
    seg
}

#[test]
fn reads_change_nothing_and_never_say_they_cut() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    damaged_log(&data);
    let before = snapshot(&data);
    for args in [
        vec!["cat", s(&data)],
        vec!["cat", s(&data), "--from", "3"],
        vec!["get", s(&data), "0"],
        vec!["get", s(&data), "2"],
        vec!["stat", s(&data)],
        vec!["verify", s(&data)],
        vec!["cat", s(&data), "-s", "other"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_walfs"))
            .args(&args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("cutting") && !err.contains("dropped") && !err.contains("drops"),
            "{args:?} says it cuts: {err}"
        );
        assert_eq!(
            snapshot(&data),
            before,
            "{args:?} changed the data directory"
        );
    }
    // What they report: the damaged id fails, the others read, verify names
    // both faults.
    assert_eq!(walfs(&["get", s(&data), "3"]).stdout, b"three\n");
    assert_eq!(walfs(&["get", s(&data), "2"]).status.code(), Some(1));
    let v = walfs(&["verify", s(&data)]);
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(
        out.contains("corruption") && out.contains("torn tail"),
        "{out}"
    );

    let mut ro = Mounted::start_on(&data, &["--read-only"]);
    assert_eq!(std::fs::read(ro.path("entries/3")).unwrap(), b"three\n");
    assert_eq!(
        std::fs::read(ro.path("entries/2"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    let stat = std::fs::read_to_string(ro.path("stat")).unwrap();
    assert!(stat.contains("next_id: 4\n"), "{stat}");
    // log: every byte but the damaged entry's ("two\n", which keeps its
    // place), and nothing of the torn tail.
    {
        use std::os::unix::fs::FileExt;
        let log = std::fs::File::open(ro.path("log")).unwrap();
        assert_eq!(log.metadata().unwrap().len(), 19);
        let mut head = [0u8; 9];
        log.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"zero\none\n");
        let mut bad = [0u8; 4];
        assert_eq!(
            log.read_at(&mut bad, 9).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        let mut tail = [0u8; 6];
        log.read_exact_at(&mut tail, 13).unwrap();
        assert_eq!(&tail, b"three\n");
    }
    ro.stop();
    assert_eq!(
        snapshot(&data),
        before,
        "a read-only mount changed the data"
    );
}

#[test]
fn refused_commands_leave_no_trace() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // The data directory inside the mountpoint.
    let inside = mnt.join("data");
    let o = walfs(&["mount", s(&inside), s(&mnt)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside the mountpoint"));
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "mountpoint touched"
    );
    // A bad stream name, a read-only mount of nothing.
    let data = t.path().join("a/b/data");
    let o = walfs(&["mount", s(&data), s(&mnt), "--stream", "../x"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = walfs(&["mount", s(&data), s(&mnt), "--read-only"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        !t.path().join("a").exists(),
        "a refused mount made directories"
    );
    assert!(!is_mounted(&mnt));
    // CLI writers refused before they start.
    let o = walfs(&["append", s(&data), "-s", "../escape", "x"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = walfs(&["truncate", s(&data), "--before", "3"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        !t.path().join("a").exists(),
        "a refused command made directories"
    );
    // And the correct mount works on the untouched mountpoint.
    let mut m = Mounted::start_on(&t.path().join("good"), &[]);
    sh(&format!("echo ok >> {}", m.path("append").display()));
    m.stop();
}

#[test]
fn a_failed_write_through_the_mount_commits_nothing() {
    let mut m = Mounted::start(&[]);
    let big = m.dir.path().join("big");
    // 70 MiB without a newline: past the 64 MiB bound.
    let (code, _, err) = sh(&format!(
        "head -c 73400320 /dev/zero | tr '\\0' a > {}",
        big.display()
    ));
    assert_eq!(code, 0, "{err}");
    for cmd in [
        format!("cat {} >> {}", big.display(), m.path("append").display()),
        format!("cp {} {}", big.display(), m.path("record").display()),
        format!(
            "dd if={} of={} bs=1M status=none",
            big.display(),
            m.path("record").display()
        ),
        // A held partial line, then more on the same descriptor after the
        // failure: nothing of either may be committed.
        format!(
            "{{ cat {big}; echo joined; }} >> {app}",
            big = big.display(),
            app = m.path("append").display()
        ),
    ] {
        let (code, _, err) = sh(&cmd);
        assert_ne!(code, 0, "{cmd} succeeded");
        assert!(
            err.contains("too large") || err.contains("File too large"),
            "{cmd}: {err}"
        );
        let stat = std::fs::read_to_string(m.path("stat")).unwrap();
        assert!(
            stat.contains("next_id: 0\n"),
            "{cmd} committed something: {stat}"
        );
    }
    sh(&format!("echo ok >> {}", m.path("append").display()));
    assert_eq!(std::fs::read(m.path("entries/0")).unwrap(), b"ok\n");
    assert!(std::fs::read_to_string(m.path("stat"))
        .unwrap()
        .contains("next_id: 1\n"));
    m.stop();
}

#[test]
fn a_missing_segment_damages_only_its_stream() {
    use walfs::{Error, Wal, WalOptions};
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let mut o = WalOptions::new(&data);
    o.max_entries_per_segment = 10;
    let wal = Wal::new(o.clone()).unwrap();
    for i in 0..35u64 {
        wal.append("hurt", format!("h{i}").as_bytes()).unwrap();
        wal.append("fine", format!("f{i}").as_bytes()).unwrap();
    }
    let segs = wal.segments("hurt");
    assert!(segs.len() >= 4);
    drop(wal);
    std::fs::remove_file(&segs[1].path).unwrap();
    let hurt_before = snapshot(&data.join("hurt"));

    let wal = Wal::new(o.clone()).expect("one damaged stream must not stop the others");
    // The other stream works fully.
    assert_eq!(wal.get("fine", 34).unwrap().unwrap(), b"f34");
    assert_eq!(wal.append("fine", b"more").unwrap(), 35);
    // The damaged one serves what it has and names what it lost.
    assert_eq!(wal.get("hurt", 3).unwrap().unwrap(), b"h3");
    assert_eq!(wal.get("hurt", 25).unwrap().unwrap(), b"h25");
    for id in 10..20 {
        match wal.get("hurt", id) {
            Err(Error::Damaged { stream, reason }) => {
                assert_eq!(stream, "hurt");
                assert!(reason.contains("00000000000000000010.wal"), "{reason}");
            }
            other => panic!("id {id}: {other:?}"),
        }
    }
    assert!(matches!(
        wal.append("hurt", b"x"),
        Err(Error::Damaged { .. })
    ));
    let info = wal.stream_info("hurt").unwrap();
    assert!(info.damaged.as_deref().unwrap().contains("missing"));
    assert_eq!(info.next_id, 35);
    drop(wal);
    assert_eq!(
        snapshot(&data.join("hurt")),
        hurt_before,
        "the damaged stream was rewritten"
    );

    let v = walfs(&["verify", s(&data)]);
    assert_eq!(v.status.code(), Some(1));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(
        out.contains(
            "hurt/00000000000000000010.wal at byte 0: layout: named by segments.idx but missing"
        ),
        "{out}"
    );

    // Through the mount: EIO for the lost ids, the rest readable.
    let mut m = Mounted::start_on(&data, &["--stream", "fine"]);
    assert_eq!(std::fs::read(m.path("entries/35")).unwrap(), b"more");
    assert_eq!(
        std::fs::read(m.path("streams/hurt/entries/5")).unwrap(),
        b"h5"
    );
    assert_eq!(
        std::fs::read(m.path("streams/hurt/entries/12"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    let stat = std::fs::read_to_string(m.path("streams/hurt/stat")).unwrap();
    assert!(
        stat.contains("damaged: segment 00000000000000000010.wal"),
        "{stat}"
    );
    let (code, _, _) = sh(&format!(
        "echo x >> {}",
        m.path("streams/hurt/append").display()
    ));
    assert_ne!(code, 0, "an append to a damaged stream succeeded");
    m.stop();
}

/// Shell loops append through the mount and record each success outside
/// it; the daemon is stopped by `sig` while they run and they keep trying
/// for a while. No write may succeed anywhere but in the log, everything
/// acknowledged must be there, and the next mount must work.
fn stop_under_load(sig: i32) {
    let mut m = Mounted::start(&[]);
    let dir = m.dir.path().to_path_buf();
    let mut loops: Vec<std::process::Child> = (0..3)
        .map(|k| {
            let script = format!(
                r#"i=0; while [ $i -lt 1000000 ]; do if {{ echo "w{k}-$i" >> {app}; }} 2>/dev/null; then echo "w{k}-$i" >> {ok}; fi; i=$((i+1)); done"#,
                app = m.path("append").display(),
                ok = dir.join(format!("ok{k}")).display()
            );
            Command::new("sh").arg("-c").arg(script).spawn().unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let status = m.signal(sig);
    assert!(status.success(), "daemon exit status {status}");
    // The writers go on for a while after the daemon is gone.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for l in &mut loops {
        let _ = l.kill();
        let _ = l.wait();
    }
    let disconnected = is_mounted(&m.mnt);
    if disconnected {
        // Left disconnected because writers were at work: every access
        // fails, nothing can be created underneath.
        let e = std::fs::metadata(m.path("append")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    } else {
        let left: Vec<_> = std::fs::read_dir(&m.mnt).unwrap().collect();
        assert!(left.is_empty(), "writes landed beside the log: {left:?}");
    }
    // The next mount on the same mountpoint works and holds every
    // acknowledged line, once, with dense ids.
    m.spawn();
    let log = std::fs::read_to_string(m.path("log")).unwrap();
    let stored: std::collections::HashMap<&str, usize> =
        log.lines().fold(Default::default(), |mut acc, l| {
            *acc.entry(l).or_default() += 1;
            acc
        });
    let mut acked = 0;
    for k in 0..3 {
        let ok = std::fs::read_to_string(dir.join(format!("ok{k}"))).unwrap_or_default();
        for line in ok.lines() {
            assert_eq!(
                stored.get(line),
                Some(&1),
                "acknowledged {line:?} is not in the log once"
            );
            acked += 1;
        }
    }
    assert!(acked > 0, "the writers never got through");
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert!(
        stat.contains(&format!("next_id: {}\n", log.lines().count())),
        "{stat}"
    );
    m.stop();
    println!(
        "signal {sig}: {acked} acknowledged appends, all in the log; mount {}",
        if disconnected {
            "left disconnected"
        } else {
            "unmounted"
        }
    );
}

#[test]
fn stopping_under_load_with_sigterm_loses_nothing_and_leaks_nothing() {
    stop_under_load(libc::SIGTERM);
}

#[test]
fn stopping_under_load_with_sigint_loses_nothing_and_leaks_nothing() {
    stop_under_load(libc::SIGINT);
}

/// A segments.idx that cannot be read (here: a directory in its place) is
/// an error naming it, never taken for an absent one (which would rebuild
/// the stream's start from whatever segment files are there).
#[test]
fn an_unreadable_segments_idx_is_an_error_not_an_absent_one() {
    use walfs::{Wal, WalOptions};
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let wal = Wal::new(WalOptions::new(&data)).unwrap();
    wal.append("s", b"one").unwrap();
    drop(wal);
    let idx = data.join("s/segments.idx");
    std::fs::remove_file(&idx).unwrap();
    std::fs::create_dir(&idx).unwrap();
    let e = Wal::new(WalOptions::new(&data)).err().expect("opened");
    assert!(
        e.to_string().contains("segments.idx") && e.to_string().contains("directory"),
        "{e}"
    );
    // Absent, it is rebuilt from the segment files, and so is head.state.
    std::fs::remove_dir(&idx).unwrap();
    let head = data.join("s/head.state");
    std::fs::remove_file(&head).unwrap();
    let wal = Wal::new(WalOptions::new(&data)).unwrap();
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), b"one");
    assert_eq!(
        std::fs::read(&idx).unwrap(),
        walfs::format::segments_idx_encode(&[0])
    );
    assert_eq!(
        std::fs::read(&head).unwrap(),
        walfs::format::head_state_encode(0)
    );
}
