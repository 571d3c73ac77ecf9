//! A mounted walfs daemon for tests: started as a child process on a temp
//! directory, and always unmounted and reaped, on drop and on panic.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub mnt: PathBuf,
    child: Option<Child>,
    /// Reads the daemon's standard error as it comes (a full pipe would
    /// block the daemon), and gives it all back when the daemon exits.
    stderr: Option<std::thread::JoinHandle<String>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

pub fn is_mounted(mnt: &Path) -> bool {
    let target = mnt.to_str().unwrap();
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target))
}

pub fn detach(mnt: &Path) {
    let c = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; no memory of ours is touched.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Waits (bounded) until `ready`, with the daemon in `child` running; if it
/// exits first, panics with what it wrote on standard error (piped).
pub fn wait_ready(child: &mut Option<Child>, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        if let Some(status) = child.as_mut().unwrap().try_wait().unwrap() {
            let mut err = String::new();
            let mut c = child.take().unwrap();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            let _ = c.wait();
            panic!("walfs mount exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "mount did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches a mount on drop (and on panic) if it is still there.
pub struct DetachOnDrop(pub PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            detach(&self.0);
        }
    }
}

impl Mounted {
    /// Mounts a fresh data directory with extra `walfs mount` arguments.
    pub fn start(args: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Mounted::with(dir, data, args)
    }

    /// Mounts with the data directory at `data`.
    pub fn start_on(data: &Path, args: &[&str]) -> Mounted {
        Mounted::with(tempfile::tempdir().unwrap(), data.to_path_buf(), args)
    }

    /// Mounts `data` (a fresh one if None) with extra environment.
    pub fn start_env(data: Option<&Path>, args: &[&str], env: &[(String, String)]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let mut m = Mounted::prepare(dir, data, args);
        m.env = env.to_vec();
        m.spawn();
        m
    }

    fn with(dir: tempfile::TempDir, data: PathBuf, args: &[&str]) -> Mounted {
        let mut m = Mounted::prepare(dir, data, args);
        m.spawn();
        m
    }

    fn prepare(dir: tempfile::TempDir, data: PathBuf, args: &[&str]) -> Mounted {
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Mounted {
            data,
            mnt: mnt.canonicalize().unwrap(),
            dir,
            child: None,
            stderr: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        }
    }

    /// Starts the daemon again on the same data and mountpoint.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(env!("CARGO_BIN_EXE_walfs"))
            .arg("mount")
            .arg(&self.data)
            .arg(&self.mnt)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mnt = self.mnt.clone();
        wait_ready(&mut self.child, || {
            is_mounted(&mnt) && mnt.join("streams").exists()
        });
        let mut err = self.child.as_mut().unwrap().stderr.take().unwrap();
        self.stderr = Some(std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = err.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        }));
    }

    /// Everything the daemon wrote on standard error (once it exited).
    fn captured(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Kills the daemon with SIGKILL (a crash) and clears its mount.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        let _ = c.kill();
        let _ = c.wait();
        if is_mounted(&self.mnt) {
            detach(&self.mnt);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `sig` and waits (bounded) for the daemon to exit.
    pub fn signal(&mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit after signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) for the daemon to exit on its own (after umount).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the daemon cleanly (SIGTERM), checks it exited well, and
    /// returns everything it wrote on standard error.
    pub fn stop_capturing(&mut self) -> String {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        // Bounded: a daemon that cannot unmount (a file still open here)
        // fails the test instead of hanging it.
        let pid = child.id() as i32;
        let watchdog = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                // SAFETY: signal 0 only checks that the process exists.
                if unsafe { libc::kill(pid, 0) } != 0 {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        });
        let s = child.wait().unwrap();
        let out = self.captured();
        assert!(
            !watchdog.join().unwrap(),
            "the daemon did not stop within 30 s of SIGTERM (a file still open?): {out}"
        );
        assert!(s.success(), "daemon exit status {s}: {out}");
        assert!(!is_mounted(&self.mnt));
        out
    }

    /// Waits for the daemon to exit after an outside `umount`, and returns
    /// its standard error.
    pub fn exit_capturing(&mut self) -> String {
        let mut child = self.child.take().expect("running");
        let s = child.wait().unwrap();
        let out = self.captured();
        assert!(s.success(), "daemon exit status {s}: {out}");
        out
    }

    /// Stops the daemon cleanly (SIGTERM) and checks it exited well.
    pub fn stop(&mut self) {
        let s = self.signal(libc::SIGTERM);
        assert!(s.success(), "daemon exit status {s}");
        assert!(!is_mounted(&self.mnt));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mnt) {
            detach(&self.mnt);
        }
    }
}

/// Runs a shell command line, returning (status code, stdout, stderr).
pub fn sh(cmd: &str) -> (i32, Vec<u8>, String) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
