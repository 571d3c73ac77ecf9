//! Who may read and who may append: real mounts by an unprivileged user,
//! checked as that user and as another one; the modes of a new data
//! directory; symlinks in the data directory refused.
//!
//! The test creates two users and a group, opens /dev/fuse to users and
//! allows `user_allow_other` in /etc/fuse.conf, as a machine where
//! ordinary users mount has them, and puts everything back when it ends,
//! on success or panic. It needs root, and installs fusermount3 (the fuse3
//! package) when it is missing; without root it fails, never skips.

mod common;

use common::mount::is_mounted;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OWNER: &str = "walfs-t-owner";
const OTHER: &str = "walfs-t-other";
const GROUP: &str = "walfs-t-group";
const FUSE_CONF: &str = "/etc/fuse.conf";

/// The tests here run one at a time: they change machine settings, and a
/// child forked by one (for `setpriv`, `id`, ...) briefly holds copies of
/// the other's descriptors, a data directory's lock among them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn id(flag: &str, user: &str) -> u32 {
    let o = run("id", &[flag, user]);
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// Users, a group, and the machine settings an ordinary user's mount
/// needs; all undone on drop.
struct Machine {
    fuse_mode: u32,
    fuse_conf: Option<Vec<u8>>,
}

impl Machine {
    fn set_up() -> Machine {
        assert_eq!(euid(), 0, "the access tests create users and need root");
        for (tool, package) in [
            ("fusermount3", "fuse3"),
            ("useradd", "passwd"),
            ("setpriv", "util-linux"),
        ] {
            common::provision::tool(tool, package);
        }
        Machine::remove_accounts();
        for (cmd, args) in [
            ("groupadd", vec![GROUP]),
            ("useradd", vec!["-M", "-N", "-s", "/bin/sh", OWNER]),
            ("useradd", vec!["-M", "-N", "-s", "/bin/sh", OTHER]),
        ] {
            let o = run(cmd, &args);
            assert!(o.status.success(), "{cmd} {args:?}: {o:?}");
        }
        let fuse_mode = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        let fuse_conf = std::fs::read(FUSE_CONF).ok();
        let m = Machine {
            fuse_mode,
            fuse_conf,
        };
        m.user_allow_other(true);
        m
    }

    /// Writes /etc/fuse.conf as it was, plus `user_allow_other` if asked.
    fn user_allow_other(&self, on: bool) {
        let mut conf = self.fuse_conf.clone().unwrap_or_default();
        if on {
            conf.extend_from_slice(b"\nuser_allow_other\n");
        }
        std::fs::write(FUSE_CONF, conf).unwrap();
    }

    fn remove_accounts() {
        run("userdel", &[OWNER]);
        run("userdel", &[OTHER]);
        run("groupdel", &[GROUP]);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ =
            std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.fuse_mode));
        match &self.fuse_conf {
            Some(c) => {
                let _ = std::fs::write(FUSE_CONF, c);
            }
            None => {
                let _ = std::fs::remove_file(FUSE_CONF);
            }
        }
        Machine::remove_accounts();
    }
}

/// This process's effective uid.
fn euid() -> u32 {
    String::from_utf8_lossy(&run("id", &["-u"]).stdout)
        .trim()
        .parse()
        .unwrap()
}

/// Runs a shell command line as `user` (with their groups); true if it
/// succeeded.
fn as_user(user: &str, cmd: &str) -> bool {
    as_user_out(user, cmd).0
}

fn as_user_out(user: &str, cmd: &str) -> (bool, String) {
    let o = Command::new("setpriv")
        .args([
            &format!("--reuid={}", id("-u", user)),
            &format!("--regid={}", id("-g", user)),
            "--init-groups",
            "--",
            "sh",
            "-c",
            cmd,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A `walfs mount` run by OWNER; stopped (SIGTERM) and reaped on drop.
struct UserMount {
    child: Option<Child>,
    mnt: PathBuf,
}

impl UserMount {
    fn start(data: &Path, mnt: &Path, args: &[&str]) -> UserMount {
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={}", id("-u", OWNER)),
                &format!("--regid={}", id("-g", OWNER)),
                "--init-groups",
                "--",
                env!("CARGO_BIN_EXE_walfs"),
                "mount",
            ])
            .arg(data)
            .arg(mnt)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut m = UserMount {
            child: Some(child),
            mnt: mnt.to_path_buf(),
        };
        common::mount::wait_ready(&mut m.child, || {
            is_mounted(mnt) && as_user(OWNER, &format!("test -e {}/stat", mnt.display()))
        });
        m
    }

    fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill on our own child's pid (setpriv execs walfs in place).
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                assert!(s.success(), "daemon exit status {s}");
                break;
            }
            assert!(Instant::now() < deadline, "daemon did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_mounted(&self.mnt), "still mounted after a clean stop");
    }
}

impl Drop for UserMount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mnt) {
            common::mount::detach(&self.mnt);
        }
    }
}

/// A directory both users can reach, with `owner/` belonging to OWNER.
fn playground() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = t.path().join("owner");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(home.join("mnt")).unwrap();
    let (uid, gid) = (id("-u", OWNER), id("-g", OWNER));
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(home.join("mnt"), Some(uid), Some(gid)).unwrap();
    (t, home)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// What `user` can do through the mount, as (what, allowed) pairs.
fn abilities(user: &str, mnt: &Path, tag: &str) -> Vec<(&'static str, bool)> {
    let m = mnt.display();
    let oldest = format!("{m}/segments/$(ls {m}/segments | head -n 1)");
    vec![
        ("list", as_user(user, &format!("ls {m} >/dev/null"))),
        (
            "read log",
            as_user(user, &format!("cat {m}/log >/dev/null")),
        ),
        (
            "read entry",
            as_user(
                user,
                &format!("e=$(ls {m}/entries | tail -n 1) && cat {m}/entries/$e >/dev/null"),
            ),
        ),
        (
            "append",
            as_user(user, &format!("echo {tag} >> {m}/append")),
        ),
        (
            "write record",
            as_user(
                user,
                &format!("printf {tag} | dd of={m}/record status=none"),
            ),
        ),
        (
            "mkdir stream",
            as_user(user, &format!("mkdir {m}/streams/{tag}")),
        ),
        ("rmdir stream", {
            // A stream the owner made, so that only the right to remove it
            // is in question.
            assert!(as_user(OWNER, &format!("mkdir {m}/streams/victim-{tag}")));
            as_user(user, &format!("rmdir {m}/streams/victim-{tag}"))
        }),
        ("rm oldest segment", as_user(user, &format!("rm {oldest}"))),
    ]
}

/// Every ability `abilities` checks, in its order.
const EVERYTHING: [&str; 8] = [
    "list",
    "read log",
    "read entry",
    "append",
    "write record",
    "mkdir stream",
    "rmdir stream",
    "rm oldest segment",
];

fn allowed(list: &[(&'static str, bool)]) -> Vec<&'static str> {
    list.iter().filter(|(_, ok)| *ok).map(|(w, _)| *w).collect()
}

#[test]
fn who_may_read_append_and_remove() {
    let _serial = serial();
    let machine = Machine::set_up();
    let (_t, home) = playground();
    let data = home.join("data");
    let mnt = home.join("mnt");
    let seg = ["--segment-size", "120"];

    // 0. --allow-other for an ordinary user needs user_allow_other: refused
    //    with the fix named, and nothing left behind.
    machine.user_allow_other(false);
    let (ok, said) = as_user_out(
        OWNER,
        &format!(
            "{} mount {} {} --allow-other",
            env!("CARGO_BIN_EXE_walfs"),
            data.display(),
            mnt.display()
        ),
    );
    assert!(
        !ok && said.contains("user_allow_other") && said.contains("fuse.conf"),
        "{said}"
    );
    assert!(!data.exists() && !is_mounted(&mnt));
    machine.user_allow_other(true);

    // 1. The owner's own mount: nobody else gets in, the owner does all.
    let mut m = UserMount::start(&data, &mnt, &seg);
    for i in 0..6 {
        assert!(as_user(
            OWNER,
            &format!("echo entry-{i} >> {}/append", mnt.display())
        ));
    }
    let shown: Vec<(String, String)> = [
        "append",
        "record",
        "log",
        "stat",
        "entries",
        "segments",
        "streams",
        "entries/0",
    ]
    .iter()
    .map(|f| {
        let (_, out) = as_user_out(OWNER, &format!("stat -c %a:%U {}/{f}", mnt.display()));
        (f.to_string(), out.trim().to_string())
    })
    .collect();
    let want = [
        ("append", "644"),
        ("record", "200"),
        ("log", "444"),
        ("stat", "444"),
        ("entries", "555"),
        ("segments", "755"),
        ("streams", "755"),
        ("entries/0", "444"),
    ];
    for ((f, got), (wf, wm)) in shown.iter().zip(want) {
        assert_eq!(
            (f.as_str(), got.as_str()),
            (wf, format!("{wm}:{OWNER}").as_str())
        );
    }
    assert_eq!(
        allowed(&abilities(OTHER, &mnt, "o1")),
        Vec::<&str>::new(),
        "another user without --allow-other"
    );
    assert_eq!(allowed(&abilities(OWNER, &mnt, "w1")), EVERYTHING);
    m.stop();

    // 2. A private data directory: 0700, files 0600, owned by the user.
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("default")), 0o700);
    let mut files = 0;
    for dir in [data.clone(), data.join("default")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
                assert_eq!(e.metadata().unwrap().uid(), id("-u", OWNER));
                files += 1;
            }
        }
    }
    assert!(
        files >= 5,
        "segments, head.state, segments.idx and the lock"
    );
    assert!(
        !as_user(OTHER, &format!("cat {}/default/*.wal", data.display())),
        "another user read the raw segments"
    );

    // 3. --allow-other with the default modes: others read, only the owner
    //    changes anything.
    let mut m = UserMount::start(&data, &mnt, &[&seg[..], &["--allow-other"]].concat());
    assert_eq!(
        allowed(&abilities(OTHER, &mnt, "o2")),
        ["list", "read log", "read entry"]
    );
    let (ok, err) = as_user_out(OTHER, &format!("echo forged >> {}/append", mnt.display()));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    assert_eq!(allowed(&abilities(OWNER, &mnt, "w2")), EVERYTHING);
    m.stop();

    // 4. The recipe for a group of appenders: --gid and group-writable modes.
    let o = run("usermod", &["-aG", GROUP, OTHER]);
    assert!(o.status.success(), "{o:?}");
    let gid = id("-g", OWNER).to_string();
    let group_gid = String::from_utf8_lossy(&run("getent", &["group", GROUP]).stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .to_string();
    assert_ne!(gid, group_gid);
    let mut m = UserMount::start(
        &data,
        &mnt,
        &[
            &seg[..],
            &[
                "--allow-other",
                "--gid",
                &group_gid,
                "--file-mode",
                "0664",
                "--dir-mode",
                "0775",
            ],
        ]
        .concat(),
    );
    assert_eq!(
        allowed(&abilities(OTHER, &mnt, "o3")),
        EVERYTHING,
        "a member of the group"
    );
    m.stop();
    // What the group member appended is in the log, as theirs.
    let o = run(
        env!("CARGO_BIN_EXE_walfs"),
        &["cat", data.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("o3\n") && !text.contains("o1") && !text.contains("o2"),
        "{text}"
    );
}

#[test]
fn symlinks_in_the_data_directory_are_never_followed() {
    let _serial = serial();
    use walfs::{Wal, WalOptions};
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let elsewhere = t.path().join("elsewhere");
    {
        let wal = Wal::new(WalOptions::new(&data)).unwrap();
        wal.append("s", b"kept").unwrap();
        let wal2 = Wal::new(WalOptions::new(&elsewhere)).unwrap();
        wal2.append("target", b"not ours").unwrap();
    }
    let outside = snapshot(&elsewhere);

    // A stream directory that is a link: not a stream, and appending to
    // that name is refused with the path named.
    std::os::unix::fs::symlink(elsewhere.join("target"), data.join("linked")).unwrap();
    let wal = Wal::new(WalOptions::new(&data)).unwrap();
    assert_eq!(wal.streams(), ["s"]);
    let e = wal
        .append("linked", b"through the link")
        .unwrap_err()
        .to_string();
    assert!(e.contains("linked") && e.contains("symbolic link"), "{e}");
    drop(wal);
    std::fs::remove_file(data.join("linked")).unwrap();

    // Each file walfs owns, replaced by a link to a copy elsewhere.
    for name in ["00000000000000000000.wal", "segments.idx"] {
        let path = data.join("s").join(name);
        let saved = std::fs::read(&path).unwrap();
        let decoy = elsewhere.join(format!("decoy-{name}"));
        std::fs::write(&decoy, &saved).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&decoy, &path).unwrap();
        let e = Wal::new(WalOptions::new(&data))
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_else(|| panic!("{name}: opened through a symlink"));
        assert!(
            e.contains(name) && e.contains("symbolic link"),
            "{name}: {e}"
        );
        assert_eq!(
            std::fs::read(&decoy).unwrap(),
            saved,
            "{name}: written through"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &saved).unwrap();
    }
    // The lock file.
    let lock = data.join("walfs.lock");
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("decoy-lock"), &lock).unwrap();
    let e = Wal::new(WalOptions::new(&data)).err().unwrap().to_string();
    assert!(
        e.contains("walfs.lock") && e.contains("symbolic link"),
        "{e}"
    );
    assert!(
        !elsewhere.join("decoy-lock").exists(),
        "created through the link"
    );
    std::fs::remove_file(&lock).unwrap();

    // Everything is readable again once the links are gone, and nothing
    // outside the data directory changed.
    let wal = Wal::new(WalOptions::new(&data)).unwrap();
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), b"kept");
    // Deleting a stream whose directory holds a link to elsewhere removes
    // the link, never what it points to.
    wal.append("doomed", b"x").unwrap();
    std::os::unix::fs::symlink(elsewhere.join("target"), data.join("doomed/escape")).unwrap();
    wal.delete_stream("doomed").unwrap();
    assert!(!data.join("doomed").exists());
    drop(wal);
    let mut now = snapshot(&elsewhere);
    now.retain(|p, _| !p.to_string_lossy().starts_with("decoy-"));
    assert_eq!(now, outside);
}

fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else if rel.file_name().and_then(|n| n.to_str()) != Some("walfs.lock") {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn credentials_never_reach_output() {
    let _serial = serial();
    // Nothing reads these today; the test keeps it that way once the
    // object-storage code does.
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let key_id = "AKIAIOSFODNN7EXAMPLE";
    let walfs = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_walfs"))
            .args(args)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_ACCESS_KEY_ID", key_id)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let d = data.to_str().unwrap();
    let mut all = String::new();
    for args in [
        vec!["append", d, "x"],
        vec!["stat", d],
        vec!["cat", d],
        vec!["verify", d],
        vec!["get", d, "99"],
        vec!["append", d, "-s", "../bad", "x"],
    ] {
        all.push_str(&walfs(&args));
    }
    assert!(!all.is_empty());
    assert!(!all.contains(secret) && !all.contains(key_id), "{all}");
}

#[test]
fn new_files_follow_their_directory_and_siblings() {
    let _serial = serial();
    // An existing data directory shared with a group (as ironwal or an
    // administrator left it): group-readable files, the directory's group
    // not the writer's.
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args([
            "append",
            data.to_str().unwrap(),
            "--segment-size",
            "100",
            "a",
            "b",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let group = 4242u32;
    let stream = data.join("default");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(&stream, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&stream, None, Some(group)).unwrap();
    let mut before = std::collections::HashSet::new();
    for e in std::fs::read_dir(&stream).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        before.insert(std::fs::metadata(&p).unwrap().ino());
    }
    // Rotations create segments and rewrite metadata.
    let o = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["append", data.to_str().unwrap(), "--segment-size", "100"])
        .args((0..6).map(|i| format!("entry {i}")))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.matches("open to other users").count(),
        1,
        "one warning for a group-readable data directory: {err}"
    );
    assert!(err.contains("chmod 700"), "{err}");
    let (mut new, mut new_segments) = (0, 0);
    for e in std::fs::read_dir(&stream).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        assert_eq!(m.mode() & 0o777, 0o640, "{}", e.path().display());
        if !before.contains(&m.ino()) {
            // Made by walfs just now: the directory's group.
            assert_eq!(m.gid(), group, "{}", e.path().display());
            new += 1;
            new_segments += e.path().extension().is_some_and(|x| x == "wal") as usize;
        }
    }
    assert!(
        new >= 2 && new_segments >= 1,
        "a rotation made a segment and rewrote head.state ({new} new files)"
    );
    // A private directory draws no warning.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["append", data.to_str().unwrap(), "x"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
