//! What the suite needs beyond the Rust toolchain, installed by the tests
//! themselves on a fresh machine, so that `cargo test --release` is the
//! whole test command: moto's S3 server (pinned, into `.ci/venv`) and
//! system tools (Debian packages, as root). Once, under a lock: test
//! binaries and threads run at the same time.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Held while provisioning: an exclusive flock on a file of the build's.
struct Lock(#[allow(dead_code)] std::fs::File);

fn lock() -> Lock {
    use std::os::fd::AsRawFd;
    // (The benchmark, an example, has no CARGO_TARGET_TMPDIR.)
    let dir = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let path = dir.join("walfs-provision.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock {}", path.display());
    Lock(f)
}

fn ok(cmd: &mut Command) -> bool {
    cmd.status().is_ok_and(|s| s.success())
}

fn has(tool: &str) -> bool {
    ok(Command::new("sh").args(["-c", &format!("command -v {tool} >/dev/null")]))
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs a Debian package (as root; otherwise the message says what to
/// do).
fn apt_install(package: &str, why: &str) {
    assert!(
        root(),
        "{why}: install the {package} package (`sudo apt-get install {package}`), or run the tests as root, which installs it"
    );
    let quiet = |args: &[&str]| {
        ok(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null()))
    };
    assert!(quiet(&["update", "-qq"]), "apt-get update failed ({why})");
    // A package with a service (nginx) must not start it: the tests start
    // what they need themselves, and leave nothing running.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists()
        && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok()
        && ok(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]));
    let installed = quiet(&["install", "-y", "-qq", package]);
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    assert!(installed, "apt-get install {package} failed ({why})");
}

/// Makes sure `tool` is on PATH, installing `package` if it is missing.
pub fn tool(tool: &str, package: &str) {
    if has(tool) {
        return;
    }
    let _l = lock();
    if !has(tool) {
        apt_install(package, &format!("{tool} is missing"));
    }
}

/// moto_server: `$WALFS_MOTO_SERVER` if set, else the one in `.ci/venv`,
/// made (or remade) there from `.ci/moto-requirements.txt` when it is
/// missing or was made from other requirements. Never one found on PATH:
/// its version is whatever the machine has.
pub fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("WALFS_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci");
    let venv = ci.join("venv");
    let server = venv.join("bin/moto_server");
    let wanted = std::fs::read(ci.join("moto-requirements.txt")).unwrap();
    let stamp = venv.join("walfs-requirements.txt");
    let current = || server.exists() && std::fs::read(&stamp).ok().as_ref() == Some(&wanted);
    if current() {
        return server;
    }
    let _l = lock();
    if current() {
        return server;
    }
    eprintln!("installing moto's S3 server into {} (once)", venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    tool("python3", "python3");
    if !ok(Command::new("python3").args(["-m", "venv"]).arg(&venv)) {
        let _ = std::fs::remove_dir_all(&venv);
        apt_install("python3-venv", "python3 -m venv failed");
        assert!(
            ok(Command::new("python3").args(["-m", "venv"]).arg(&venv)),
            "python3 -m venv {} failed",
            venv.display()
        );
    }
    assert!(
        ok(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(ci.join("moto-requirements.txt"))),
        "pip install -r .ci/moto-requirements.txt failed (PyPI unreachable?)"
    );
    std::fs::write(&stamp, &wanted).unwrap();
    assert!(server.exists(), "{} was not installed", server.display());
    server
}
