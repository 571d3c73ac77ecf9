//! Running the daemon day to day: what it says, and nothing else.

mod common;

use common::mount::{sh, Mounted};

fn lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// A normal session (shell appends, Python's open(), xattr and poll
/// calls, listing, reading, a clean stop) logs exactly one line when ready
/// and one when stopped, and no warning.
#[test]
fn a_normal_session_logs_ready_and_stopped_and_nothing_else() {
    let mut m = Mounted::start(&[]);
    let mnt = m.mnt.display().to_string();
    let script = format!(
        r#"
set -e
echo first >> {mnt}/append
printf 'a\nb\n' >> {mnt}/append
ls -l {mnt} {mnt}/entries {mnt}/segments >/dev/null
cat {mnt}/log {mnt}/stat {mnt}/entries/0 >/dev/null
stat {mnt}/log >/dev/null
cp {mnt}/log {mnt}/../copy
python3 - <<'PY'
import os, select
with open("{mnt}/append", "a") as f:      # isatty() asks TCGETS
    f.write("from python\n")
print(os.listxattr("{mnt}/log"))
try:
    os.getxattr("{mnt}/log", "user.x")
except OSError:
    pass
fd = os.open("{mnt}/log", os.O_RDONLY)
p = select.poll(); p.register(fd, select.POLLIN); p.poll(100)
os.close(fd)
PY
"#
    );
    let (code, out, err) = sh(&script);
    assert_eq!(code, 0, "{err} {}", String::from_utf8_lossy(&out));
    let log = m.stop_capturing();
    let l = lines(&log);
    assert_eq!(l.len(), 2, "{log}");
    assert!(
        l[0].contains(" INFO ") && l[0].contains("ready:") && l[0].contains("sync strict"),
        "{log}"
    );
    assert!(
        l[1].contains(" INFO ") && l[1].contains("stopped:"),
        "{log}"
    );

    // Ended by `umount` from outside: the same, no warning.
    m.spawn();
    let (code, _, err) = sh(&format!("echo more >> {mnt}/append && umount {mnt}"));
    assert_eq!(code, 0, "{err}");
    let log = m.exit_capturing();
    let l = lines(&log);
    assert_eq!(l.len(), 2, "{log}");
    assert!(l[1].contains("stopped:"), "{log}");
}

/// Read-only: every line true (no sync mode, nothing cut).
#[test]
fn a_read_only_session_says_so() {
    let mut m = Mounted::start(&[]);
    sh(&format!("echo kept >> {}", m.path("append").display()));
    m.stop();
    // A torn tail for the read-only mount to leave alone.
    let seg = m.data.join("default/00000000000000000000.wal");
    let mut b = std::fs::read(&seg).unwrap();
    b.extend_from_slice(&0x4C57_414Cu32.to_le_bytes());
    std::fs::write(&seg, &b).unwrap();
    let mut ro = Mounted::start_on(&m.data, &["--read-only"]);
    assert_eq!(std::fs::read(ro.path("entries/0")).unwrap(), b"kept\n");
    let log = ro.stop_capturing();
    assert!(
        log.contains("read-only") && !log.contains("strict"),
        "{log}"
    );
    assert!(!log.contains("cutting") && !log.contains(" WARN "), "{log}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        b,
        "a read-only mount changed a byte"
    );
}
