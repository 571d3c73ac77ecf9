//! The `walfs` command driven as a process.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn walfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn walfs_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    c.wait_with_output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn append_cat_get_stat_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    let o = walfs(&["append", s(&d), "--ids", "first", "second"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, b"0-1\n");
    let o = walfs_stdin(&["append", s(&d), "--ids"], b"three\nfour\nfive-no-newline");
    assert!(o.status.success());
    assert_eq!(o.stdout, b"2-4\n");
    let o = walfs(&["cat", s(&d)]);
    assert_eq!(o.stdout, b"first\nsecond\nthree\nfour\nfive-no-newline");
    assert_eq!(
        walfs(&["cat", s(&d), "--from", "3"]).stdout,
        b"four\nfive-no-newline"
    );
    assert_eq!(walfs(&["get", s(&d), "1"]).stdout, b"second\n");
    let o = walfs(&["stat", s(&d)]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("next_id: 5\n")
            && text.contains("first_id: 0\n")
            && text.contains("segments: 1\n"),
        "{text}"
    );
    assert_eq!(
        walfs(&["cat", s(&d), "--from", "1", "--until", "3"]).stdout,
        b"second\nthree\n"
    );
    assert_eq!(walfs(&["cat", s(&d), "--until", "0"]).stdout, b"");
    assert_eq!(
        walfs(&["cat", s(&d), "--until", "99"]).stdout,
        walfs(&["cat", s(&d)]).stdout
    );
    // Following up to an id ends once it is written.
    let mut f = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["cat", s(&d), "--from", "4", "--until", "6", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        f.try_wait().unwrap().is_none(),
        "ended before id 5 was written"
    );
    assert!(walfs(&["append", s(&d), "six", "seven"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "--follow --until did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Vec::new();
    f.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, b"five-no-newlinesix\n");
    // Another stream, raw arguments.
    assert!(walfs(&["append", s(&d), "-s", "other", "-n", "raw"])
        .status
        .success());
    assert_eq!(walfs(&["get", s(&d), "-s", "other", "0"]).stdout, b"raw");
}

#[test]
fn errors_are_one_line_with_coreutils_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    let o = walfs(&["get", s(&d), "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().count(),
        1,
        "{o:?}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("walfs: get: "));
    walfs(&["append", s(&d), "x"]);
    let o = walfs(&["get", s(&d), "7"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "walfs: get: no entry 7 in stream 'default'\n"
    );
    let o = walfs(&["get", s(&d), "-1"]);
    assert_eq!(o.status.code(), Some(2), "bad usage");
    let o = walfs(&["append", s(&d), "-s", "../escape", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid stream name"));
    // A writer while another process holds the log.
    let _held = walfs::Wal::new(walfs::WalOptions::new(&d)).unwrap();
    let o = walfs(&["append", s(&d), "y"]);
    assert_eq!(o.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(
        msg.contains("in use by another walfs process")
            && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    // Readers still work beside it.
    assert_eq!(walfs(&["cat", s(&d)]).stdout, b"x\n");
}

#[test]
fn verify_and_repair_report_exact_places() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    for i in 0..5 {
        walfs(&["append", s(&d), &format!("entry {i}")]);
    }
    let o = walfs(&["verify", s(&d)]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("5 entries"));
    // Damage the third frame (each frame: 32-byte header + 4 + 8 bytes).
    let seg = d.join("default/00000000000000000000.wal");
    let mut b = std::fs::read(&seg).unwrap();
    b[2 * 44 + 40] ^= 1;
    std::fs::write(&seg, &b).unwrap();
    let o = walfs(&["verify", s(&d)]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("default/00000000000000000000.wal at byte 88: corruption: crc mismatch"),
        "{out}"
    );
    // Repair never drops the intact entries after the damage on its own.
    let o = walfs(&["repair", s(&d)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--discard-damaged"));
    assert_eq!(std::fs::read(&seg).unwrap(), b, "nothing changed");
    assert_eq!(walfs(&["get", s(&d), "3"]).stdout, b"entry 3\n");
    assert_eq!(walfs(&["get", s(&d), "2"]).status.code(), Some(1));
    // Asked explicitly, it cuts at the damage and keeps the segment aside.
    let o = walfs(&["repair", s(&d), "--discard-damaged"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        std::fs::read(d.join("default/00000000000000000000.wal.damaged")).unwrap(),
        b
    );
    assert_eq!(walfs(&["verify", s(&d)]).status.code(), Some(0));
    assert_eq!(walfs(&["cat", s(&d)]).stdout, b"entry 0\nentry 1\n");
}

#[test]
fn truncate_frees_segments() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    for i in 0..40 {
        walfs(&[
            "append",
            s(&d),
            "--segment-size",
            "200",
            &format!("entry number {i}"),
        ]);
    }
    let before = std::fs::read_dir(d.join("default")).unwrap().count();
    let o = walfs(&["truncate", s(&d), "--before", "30"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("freed "));
    assert!(std::fs::read_dir(d.join("default")).unwrap().count() < before);
    let o = walfs(&["cat", s(&d)]);
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("entry number 39\n"));
}

#[test]
fn cat_follow_shows_appends_from_another_process() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    walfs(&["append", s(&d), "before"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["cat", "--follow", s(&d)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !seen.ends_with(b"after\n") {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(walfs(&["append", s(&d), "after"]).status.success());
    // Wait for the reader with a bound, then always stop the follower.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(reader.join().unwrap(), b"before\nafter\n");
}

#[test]
fn help_is_helpful() {
    let o = walfs(&["--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for cmd in [
        "append", "cat", "get", "stat", "verify", "repair", "truncate",
    ] {
        assert!(text.contains(cmd), "{cmd}");
    }
    let o = walfs(&["append", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--sync"));
}

/// Sizes take the usual suffixes; a file given as DATA is named as not a
/// directory; a stream name `ls` would hide is refused before anything is
/// made; counts say "1 stream", not "1 streams".
#[test]
fn sizes_names_and_counts_read_as_a_person_expects() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    let o = walfs(&["append", s(&d), "--segment-size", "1K", "x"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for bad in ["1Q", "M", "0"] {
        let o = walfs(&["append", s(&d), "--segment-size", bad, "x"]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("size"), "{bad}: {err}");
    }
    // 1K: the 40-byte frames of 30 entries make more than one segment.
    for i in 0..30 {
        walfs(&["append", s(&d), &format!("entry {i}")]);
    }
    assert!(std::fs::read_dir(d.join("default")).unwrap().count() > 3);
    let o = walfs(&["verify", s(&d)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("1 stream, "), "{err}");
    assert!(err.contains(" entries, ") && err.contains("sound"), "{err}");

    let file = t.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    for cmd in ["stat", "verify", "cat"] {
        let o = walfs(&[cmd, s(&file)]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("not a directory"), "{cmd}: {err}");
    }

    let fresh = t.path().join("fresh");
    let o = walfs(&["append", s(&fresh), "-s", ".hidden", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("hidden from `ls`"));
    assert!(!fresh.exists(), "a refused append leaves no trace");
}
