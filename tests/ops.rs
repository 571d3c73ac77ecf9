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
    common::provision::tool("python3", "python3");
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

/// An ironwal directory whose streams have their own names mounts as it
/// is, read-only and read-write: nothing is created, the root holds
/// `streams/` alone (or the only stream there is), and asking for a
/// missing stream names the ones that exist.
#[test]
fn any_ironwal_directory_mounts() {
    let t = tempfile::tempdir().unwrap();
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ironwal-0.6.9");
    let data = t.path().join("data");
    common::copy_dir(&golden, &data);
    let names = |p: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let before = names(&data);
    for args in [&["--read-only"][..], &[][..]] {
        let mut m = Mounted::start_on(&data, args);
        assert_eq!(names(&m.mnt), ["streams"], "{args:?}");
        assert_eq!(names(&m.path("streams")), ["alpha", "beta", "gamma.v2"]);
        let log = std::fs::read(m.path("streams/alpha/log")).unwrap();
        assert!(!log.is_empty());
        assert!(std::fs::metadata(m.path("append")).is_err());
        let said = m.stop_capturing();
        assert!(
            said.contains("no stream at the root: 3 under streams/"),
            "{said}"
        );
        let mut now = names(&data);
        now.retain(|n| n != "walfs.lock");
        assert_eq!(now, before, "{args:?}: a stream nobody asked for");
    }
    // With exactly one stream, that stream is the root.
    let one = t.path().join("one");
    std::fs::create_dir(&one).unwrap();
    common::copy_dir(&golden.join("beta"), &one.join("beta"));
    let mut m = Mounted::start_on(&one, &["--read-only"]);
    assert_eq!(
        std::fs::read(m.path("log")).unwrap(),
        std::fs::read(m.path("streams/beta/log")).unwrap()
    );
    m.stop();
    // A missing stream, read-only: the error lists what exists.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["mount", data.to_str().unwrap(), m.mnt.to_str().unwrap()])
        .args(["--read-only", "--stream", "nope"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("no stream nope") && err.contains("alpha, beta, gamma.v2"),
        "{err}"
    );
}

fn walfs(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Messages name the flag or the fix, ids follow the mount's rule, and
/// stream names starting with '-' are reachable.
#[test]
fn messages_name_the_flag_or_the_fix() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    let ds = d.to_str().unwrap();
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // A mistyped command is a usage error, never a mount.
    let o = walfs(&["stats", ds]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(!d.exists());

    let o = walfs(&["append", ds, "--segment-size", "0", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("--segment-size"), "{}", err(&o));
    assert!(!d.exists(), "a refused command made the directory");

    let file = t.path().join("a-file");
    std::fs::write(&file, b"not a log").unwrap();
    let o = walfs(&["append", file.to_str().unwrap(), "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("exists and is not a directory"),
        "{}",
        err(&o)
    );

    assert!(walfs(&["append", ds, "first"]).status.success());
    for bad in ["0560", "+1", "-1", "1e3"] {
        let o = walfs(&["get", ds, bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", err(&o));
        if !bad.starts_with('-') {
            assert!(err(&o).contains("not an entry id"), "{bad}: {}", err(&o));
        }
    }
    assert_eq!(walfs(&["get", ds, "0"]).stdout, b"first\n");
    let o = walfs(&["cat", ds, "--from", "00"]);
    assert_eq!(o.status.code(), Some(2));

    assert!(walfs(&["append", ds, "-s", "-dash", "dashed"])
        .status
        .success());
    assert_eq!(walfs(&["cat", ds, "-s", "-dash"]).stdout, b"dashed\n");
    assert_eq!(
        walfs(&["get", ds, "--stream", "-dash", "0"]).stdout,
        b"dashed\n"
    );
}

/// A writable mount of a log on a read-only filesystem says to use
/// --read-only, which then works.
#[test]
fn a_read_only_filesystem_suggests_read_only() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    assert!(walfs(&["append", src.to_str().unwrap(), "kept"])
        .status
        .success());
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let (code, _, e) = sh(&format!(
        "mount --bind {0} {1} && mount -o remount,ro,bind {1}",
        src.display(),
        ro.display()
    ));
    assert_eq!(code, 0, "{e}");
    let _guard = common::mount::DetachOnDrop(ro.clone());
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let o = walfs(&["mount", ro.to_str().unwrap(), mnt.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("read-only filesystem") && e.contains("--read-only"),
        "{e}"
    );
    let mut m = Mounted::start_on(&ro, &["--read-only"]);
    assert_eq!(std::fs::read(m.path("entries/0")).unwrap(), b"kept\n");
    m.stop();
}

/// The README's backup: copy `segments/` while mounted, verify the copy,
/// mount it as a data directory; every entry is there.
#[test]
fn a_copy_of_segments_is_a_backup() {
    let mut m = Mounted::start(&["--segment-size", "200"]);
    for i in 0..20 {
        sh(&format!("echo entry-{i} >> {}", m.path("append").display()));
    }
    let backup = m.dir.path().join("backup");
    let (code, _, e) = sh(&format!(
        "mkdir -p {b}/default && cp {s}/*.wal {b}/default/",
        b = backup.display(),
        s = m.path("segments").display()
    ));
    assert_eq!(code, 0, "{e}");
    let log = std::fs::read(m.path("log")).unwrap();
    m.stop();
    let v = walfs(&["verify", backup.to_str().unwrap()]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let mut r = Mounted::start_on(&backup, &[]);
    assert_eq!(std::fs::read(r.path("log")).unwrap(), log);
    sh(&format!("echo after >> {}", r.path("append").display()));
    assert_eq!(std::fs::read(r.path("entries/20")).unwrap(), b"after\n");
    r.stop();
}

/// systemd's Type=notify: READY=1 once the mount serves, STOPPING=1 when
/// it is told to stop.
#[test]
fn tells_systemd_when_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let t = tempfile::tempdir().unwrap();
    let sock_path = t.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    struct Reap(std::process::Child, std::path::PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            if common::mount::is_mounted(&self.1) {
                common::mount::detach(&self.1);
            }
        }
    }
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args([
            "mount",
            t.path().join("data").to_str().unwrap(),
            mnt.to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut d = Reap(child, mnt.clone());
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means serving: no waiting needed.
    assert!(mnt.join("stat").exists());
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(d.0.wait().unwrap().success());
}

/// The README's systemd units: `systemd-analyze verify` finds nothing to
/// say of either, and the first one's commands, run as systemd runs them
/// (ExecStartPre, then ExecStart with NOTIFY_SOCKET), make the mountpoint,
/// mount, say READY=1, and stop on SIGTERM.
#[test]
fn the_readmes_systemd_units_verify_and_run() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let units: Vec<&str> = readme
        .split("```ini\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .filter(|b| b.contains("[Service]"))
        .collect();
    assert_eq!(units.len(), 2, "the README shows two units");
    common::provision::tool("systemd-analyze", "systemd");
    let t = tempfile::tempdir().unwrap();
    let (data, mnt) = (t.path().join("lib/ledger"), t.path().join("srv/ledger"));
    let here = |u: &str| {
        u.replace("/usr/local/bin/walfs", env!("CARGO_BIN_EXE_walfs"))
            .replace("/var/lib/ledger", data.to_str().unwrap())
            .replace("/srv/ledger", mnt.to_str().unwrap())
            .replace(
                "/etc/walfs/ledger.env",
                t.path().join("ledger.env").to_str().unwrap(),
            )
    };
    std::fs::write(t.path().join("ledger.env"), "AWS_REGION=us-east-1\n").unwrap();
    for (i, u) in units.iter().enumerate() {
        let path = t.path().join(format!("ledger-log-{i}.service"));
        std::fs::write(&path, here(u)).unwrap();
        let o = std::process::Command::new("systemd-analyze")
            .args(["verify", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "unit {i}: {err}"
        );
    }
    let unit = here(units[0]);
    let line = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .to_string()
    };
    let (code, _, err) = sh(&line("ExecStartPre="));
    assert_eq!(code, 0, "{err}");
    assert!(mnt.is_dir(), "ExecStartPre made the mountpoint");
    let _guard = common::mount::DetachOnDrop(mnt.clone());
    let sock_path = t.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let argv: Vec<String> = line("ExecStart=").split(' ').map(str::to_owned).collect();
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1\n");
    assert!(common::mount::is_mounted(&mnt));
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(!common::mount::is_mounted(&mnt));
}

/// `verify` shows a progress bar on a terminal and stays quiet elsewhere.
#[test]
fn progress_on_a_terminal_only() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    let (code, _, e) = sh(&format!(
        "head -c 20000000 /dev/urandom | base64 | {} append {} --segment-size 1000000",
        env!("CARGO_BIN_EXE_walfs"),
        d.display()
    ));
    assert_eq!(code, 0, "{e}");
    // Not a terminal: the summary line only.
    let o = walfs(&["verify", d.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("sound") && !err.contains("verifying"), "{err}");
    // A terminal (script(1) gives the command a pseudo-terminal).
    common::provision::tool("script", "bsdutils");
    let (code, out, e) = sh(&format!(
        "script -qec '{} verify {}' /dev/null",
        env!("CARGO_BIN_EXE_walfs"),
        d.display()
    ));
    assert_eq!(code, 0, "{e}");
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("verifying") && out.contains("sound"), "{out}");
}

/// `mount -t fuse` and `/etc/fstab` go through mount.fuse3, which runs
/// `walfs DATA MNT -o OPTIONS` and waits for it: walfs returns once the
/// mount serves, and the daemon stays until `umount`.
#[test]
fn mounts_through_mount_fuse3_and_fstab() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = common::mount::DetachOnDrop(mnt.clone());
    let exe = env!("CARGO_BIN_EXE_walfs");
    let daemon_gone = |mnt: &std::path::Path| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mnt_arg = mnt.as_os_str().as_encoded_bytes().to_vec();
        loop {
            let running = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                    return false;
                };
                let argv: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
                argv.len() > 3
                    && argv[0].ends_with(b"walfs")
                    && argv[1] == b"mount"
                    && argv[3] == mnt_arg.as_slice()
            });
            if !running {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // mount -t fuse PROGRAM#SOURCE, as mount.fuse3 documents it.
    let (code, out, err) = sh(&format!(
        "mount -t fuse '{exe}#{}' {} -o sync=async,stream=ledger,nofail",
        data.display(),
        mnt.display()
    ));
    assert_eq!(code, 0, "{err} {}", String::from_utf8_lossy(&out));
    assert!(
        common::mount::is_mounted(&mnt),
        "returned before the mount served"
    );
    sh(&format!("echo via-mount >> {}/append", mnt.display()));
    let stat = std::fs::read_to_string(mnt.join("stat")).unwrap();
    assert!(
        stat.contains("stream: ledger\n") && stat.contains("sync_mode: async\n"),
        "{stat}"
    );
    let (code, _, err) = sh(&format!("umount {}", mnt.display()));
    assert_eq!(code, 0, "{err}");
    daemon_gone(&mnt);

    // An fstab line (a file of our own, through mount -T), read-only.
    let fstab = t.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{exe}#{} {} fuse ro,stream=ledger,noauto,_netdev 0 0\n",
            data.display(),
            mnt.display()
        ),
    )
    .unwrap();
    let (code, _, err) = sh(&format!("mount -T {} {}", fstab.display(), mnt.display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(mnt.join("entries/0")).unwrap(),
        b"via-mount\n"
    );
    assert!(std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("append"))
        .is_err());
    let (code, _, err) = sh(&format!("umount {}", mnt.display()));
    assert_eq!(code, 0, "{err}");
    daemon_gone(&mnt);

    // A bad option fails the mount with a message that names it.
    let (code, _, err) = sh(&format!(
        "mount -t fuse '{exe}#{}' {} -o stream=ledger,colour=blue",
        data.display(),
        mnt.display()
    ));
    assert_ne!(code, 0);
    assert!(err.contains("colour=blue"), "{err}");
    // So does a daemon that cannot start (a read-only mount of nothing).
    let (code, _, err) = sh(&format!(
        "mount -t fuse '{exe}#{}' {} -o ro",
        t.path().join("missing").display(),
        mnt.display()
    ));
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!common::mount::is_mounted(&mnt));
}

/// The detached daemon of `mount -t fuse` logs where a person finds it:
/// into the file `log_file=` names, else to syslog (here a socket the test
/// binds at /dev/log when the machine has none, as journald or rsyslog
/// would): its ready and stopped lines and a warning arrive.
#[test]
fn a_detached_daemon_logs_to_syslog_or_its_log_file() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = common::mount::DetachOnDrop(mnt.clone());
    let exe = env!("CARGO_BIN_EXE_walfs");
    let mount = |opts: &str| {
        let (code, out, err) = sh(&format!(
            "mount -t fuse '{exe}#{}' {} -o {opts}",
            data.display(),
            mnt.display()
        ));
        assert_eq!(code, 0, "{err} {}", String::from_utf8_lossy(&out));
    };
    let umount_and_wait = || {
        let (code, _, err) = sh(&format!("umount {}", mnt.display()));
        assert_eq!(code, 0, "{err}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while common::mount::is_mounted(&mnt) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // log_file=
    let log = t.path().join("walfs.log");
    mount(&format!("log_file={}", log.display()));
    umount_and_wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("stopped:") {
            assert!(text.contains("ready:"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A file the daemon cannot open fails the mount, saying why.
    let (code, _, err) = sh(&format!(
        "mount -t fuse '{exe}#{}' {} -o log_file={}/no/such/dir/log",
        data.display(),
        mnt.display(),
        t.path().display()
    ));
    assert_ne!(code, 0);
    assert!(err.contains("cannot open the log file"), "{err}");

    // syslog
    let dev_log = std::path::Path::new("/dev/log");
    assert!(
        !dev_log.exists(),
        "this machine has a syslog socket: read the lines with journalctl -t walfs"
    );
    struct Unbind;
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = std::fs::remove_file("/dev/log");
        }
    }
    let sock = std::os::unix::net::UnixDatagram::bind(dev_log).unwrap();
    let _unbind = Unbind;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    // World-writable data: a warning too.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    mount("sync=async");
    umount_and_wait();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.iter().any(|l: &String| l.contains("stopped:")) {
        let n = sock.recv(&mut buf).expect("a syslog line");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let all = got.join("\n");
    // <priority>: daemon facility (3 << 3) plus the level.
    assert!(
        all.contains("<30>") && all.contains("walfs[") && all.contains("ready:"),
        "{all}"
    );
    assert!(
        all.contains("<28>") && all.contains("open to other users"),
        "{all}"
    );
}

/// `--metrics` serves Prometheus text: appends, fdatasyncs with latency and
/// group-commit sizes, FUSE requests by kind, errors by errno, open handles.
#[test]
fn metrics_are_scraped() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut m = Mounted::start(&["--metrics", &port.to_string()]);
    let (code, _, e) = sh(&format!(
        "for i in 1 2 3 4; do (for j in $(seq 25); do echo w$i-$j >> {0}; done) & done; wait",
        m.path("append").display()
    ));
    assert_eq!(code, 0, "{e}");
    assert!(std::fs::read(m.path("entries/999")).is_err());
    let get = |path: &str| common::http_get(port, path);
    let text = get("/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert!(value("walfs_appended_entries_total") >= 100.0);
    assert!(value("walfs_appended_frames_total") >= 100.0);
    let syncs = value("walfs_fdatasyncs_total");
    assert!(syncs >= 1.0);
    assert_eq!(value("walfs_group_commit_entries_count"), syncs);
    assert!(value("walfs_group_commit_entries_sum") >= 100.0);
    assert!(value("walfs_fdatasync_seconds_count") >= 1.0);
    println!(
        "4 shells x 25 appends: {} fdatasyncs for {} entries",
        syncs,
        value("walfs_group_commit_entries_sum")
    );
    assert!(value("walfs_fuse_requests_total{op=\"write\"}") >= 100.0);
    assert!(value("walfs_fuse_request_seconds_count{op=\"write\"}") >= 100.0);
    assert!(value("walfs_fuse_errors_total{errno=\"2\"}") >= 1.0);
    assert!(text.contains("walfs_open_handles "), "{text}");
    assert!(get("/elsewhere").starts_with("HTTP/1.1 404"));
    m.stop();
    // An address it cannot serve refuses the mount, before mounting.
    let o = walfs(&[
        "mount",
        m.data.to_str().unwrap(),
        m.mnt.to_str().unwrap(),
        "--metrics",
        "256.0.0.1:1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot serve metrics"));
    assert!(!common::mount::is_mounted(&m.mnt));
}
