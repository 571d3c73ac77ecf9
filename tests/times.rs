//! When ids were acknowledged (walfs.times): a time names an id to within
//! a second, also long after the last append, across a reopen and a
//! truncation; `walfs cat --since/--until TIME` reads it.

mod common;

use std::thread::sleep;
use std::time::{Duration, SystemTime};
use walfs::{Wal, WalOptions};

fn entry(i: u64) -> Vec<u8> {
    format!("event {i:03}\n").into_bytes()
}

/// Three bursts of five appends, 1.2 s apart; returns a time between the
/// first and the second, and the time of the second.
fn three_bursts(wal: &Wal) -> (SystemTime, SystemTime) {
    for i in 0..5 {
        wal.append("s", &entry(i)).unwrap();
    }
    sleep(Duration::from_millis(1200));
    let between = SystemTime::now();
    sleep(Duration::from_millis(100));
    let second = SystemTime::now();
    for i in 5..10 {
        wal.append("s", &entry(i)).unwrap();
    }
    sleep(Duration::from_millis(1200));
    for i in 10..15 {
        wal.append("s", &entry(i)).unwrap();
    }
    (between, second)
}

#[test]
fn a_time_names_the_first_id_acknowledged_at_or_after_it() {
    let t = tempfile::tempdir().unwrap();
    let start = SystemTime::now() - Duration::from_secs(1);
    let (between, second) = {
        let mut o = WalOptions::new(t.path());
        o.max_segment_size = 64;
        let wal = Wal::new(o).unwrap();
        let r = three_bursts(&wal);
        let hour = Duration::from_secs(3600);
        assert_eq!(wal.id_at_time("s", start), 0);
        assert_eq!(wal.id_at_time("s", r.0), 5);
        // Within the second burst's second: its first id.
        assert_eq!(wal.id_at_time("s", r.1 + Duration::from_millis(500)), 5);
        // An hour after the last append (no record since): all of it.
        assert_eq!(wal.id_at_time("s", SystemTime::now() + hour), 15);
        assert_eq!(wal.id_at_time("s", start - hour), 0);
        assert_eq!(wal.id_at_time("nothing", start), 0);
        r
    };
    // Recorded: the same after a reopen.
    let mut o = WalOptions::new(t.path());
    o.max_segment_size = 64;
    let wal = Wal::new(o).unwrap();
    assert_eq!(wal.id_at_time("s", between), 5);
    assert_eq!(wal.id_at_time("s", second + Duration::from_secs(5)), 15);
    // After a truncation below id 7 the records it needs are kept, and the
    // file holds no more than them.
    let before = std::fs::metadata(t.path().join("s/walfs.times"))
        .unwrap()
        .len();
    assert_eq!(before, 3 * 24);
    wal.truncate("s", 7).unwrap();
    let first = wal.first_id("s");
    assert!(first > 5 && first <= 7, "{first}");
    assert_eq!(
        std::fs::metadata(t.path().join("s/walfs.times"))
            .unwrap()
            .len(),
        2 * 24
    );
    assert_eq!(wal.id_at_time("s", between), first);
    assert_eq!(wal.id_at_time("s", second + Duration::from_secs(5)), 15);
    // stat: when the first retained id was acknowledged (the second burst).
    let text = wal.stream_info("s").unwrap().to_text(None);
    let shown = text
        .lines()
        .find_map(|l| l.strip_prefix("first_time: "))
        .unwrap_or_else(|| panic!("{text}"));
    let shown = humantime::parse_rfc3339(shown).unwrap();
    assert!(
        shown <= second + Duration::from_secs(1) && shown + Duration::from_secs(1) > second,
        "{text}"
    );
}

#[test]
fn cat_since_and_until_a_time() {
    let t = tempfile::tempdir().unwrap();
    let (between, _) = {
        let wal = Wal::new(WalOptions::new(t.path())).unwrap();
        three_bursts(&wal)
    };
    let d = t.path().to_str().unwrap();
    let at = humantime::format_rfc3339_millis(between).to_string();
    let cat = |args: &[&str]| {
        let mut all = vec!["cat", d, "-s", "s"];
        all.extend_from_slice(args);
        common::walfs_cli(&all, &[])
    };
    let text =
        |ids: std::ops::Range<u64>| -> String { ids.flat_map(entry).map(char::from).collect() };
    let (code, out, err) = cat(&["--since", &at]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, text(5..15));
    let (code, out, _) = cat(&["--until", &at]);
    assert_eq!(code, 0);
    assert_eq!(out, text(0..5));
    let (code, out, _) = cat(&["--since", &at, "--until", "12"]);
    assert_eq!(code, 0);
    assert_eq!(out, text(5..12));
    let (code, _, err) = cat(&["--since", "yesterday"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not a time") && err.contains("RFC 3339"),
        "{err}"
    );
}

#[test]
fn cat_follow_until_a_time_to_come_ends_then() {
    let t = tempfile::tempdir().unwrap();
    let wal = Wal::new(WalOptions::new(t.path())).unwrap();
    three_bursts(&wal);
    sleep(Duration::from_millis(1100));
    let end = SystemTime::now() + Duration::from_millis(2500);
    let at = humantime::format_rfc3339_millis(end).to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["cat", t.path().to_str().unwrap(), "-s", "s", "--from", "15"])
        .args(["--follow", "--until", &at])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wal.append("s", &entry(15)).unwrap();
    while SystemTime::now() < end + Duration::from_millis(300) {
        sleep(Duration::from_millis(50));
    }
    wal.append("s", &entry(16)).unwrap();
    let mut child = child;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("cat --follow --until TIME did not end after TIME");
        }
        sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout,
        entry(15),
        "what came before the time, and no more"
    );
}
