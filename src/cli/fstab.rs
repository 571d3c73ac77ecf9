//! `mount -t fuse.walfs DATA MOUNTPOINT -o OPTIONS` and `/etc/fstab`:
//! mount.fuse3 runs `walfs DATA MOUNTPOINT -o OPTIONS` and waits for it to
//! exit, so this form starts the daemon in the background and returns once
//! the mount serves (or with the daemon's error).

use super::{fail, Failure};
use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether `args` (without the program name) are the mount.fuse3 form:
/// `SOURCE MOUNTPOINT -o OPTIONS` (mount.fuse3 always passes options), with
/// SOURCE not a subcommand. Anything else, a mistyped subcommand among
/// them, goes to the ordinary parser and its usage message.
pub fn is_fstab_form(args: &[OsString]) -> bool {
    const COMMANDS: [&str; 8] = [
        "mount", "append", "cat", "get", "stat", "verify", "repair", "truncate",
    ];
    match args {
        [source, _mnt, o, _options] if o == "-o" => {
            let s = source.to_string_lossy();
            !s.starts_with('-') && !COMMANDS.contains(&s.as_ref())
        }
        _ => false,
    }
}

/// The `walfs mount` flags for mount options. Generic options that
/// mount(8) or the kernel handle are ignored; anything else unknown is an
/// error that names it.
pub fn flags(options: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let flag = match (key, value) {
            ("ro", None) => Some("--read-only"),
            ("allow_other", None) => Some("--allow-other"),
            ("standby", None) => Some("--standby"),
            ("takeover", None) => Some("--takeover"),
            ("sync" | "stream" | "compression" | "segment_size" | "threads" | "block_cache"
            | "uid" | "gid" | "file_mode" | "dir_mode" | "metrics" | "replicate"
            | "replicate_sync" | "replicate_interval" | "replicate_timeout" | "log_file"
            | "retain_bytes" | "retain_age" | "sse" | "bucket_retain_bytes"
            | "bucket_retain_age" | "lease", Some(_)) => None,
            (
                "rw" | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime"
                | "noatime" | "relatime" | "strictatime" | "auto" | "noauto" | "user" | "users"
                | "nouser" | "defaults" | "_netdev" | "nofail" | "sync" | "async",
                None,
            ) => continue,
            (k, _) if k.starts_with("x-") => continue,
            _ => return Err(format!("unknown mount option {opt:?}: walfs takes ro, allow_other, sync=strict|batch|async, stream=NAME, compression=none|lz4, segment_size=SIZE, threads=N, block_cache=SIZE, uid=, gid=, file_mode=, dir_mode=, metrics=ADDR, replicate=s3://BUCKET/PREFIX, replicate_sync=async|strict, replicate_interval=SECONDS, replicate_timeout=SECONDS, sse=KIND, retain_bytes=SIZE, retain_age=DURATION, bucket_retain_bytes=SIZE, bucket_retain_age=DURATION, lease=DURATION|off, standby, takeover, log_file=PATH")),
        };
        match (flag, value) {
            (Some(f), _) => out.push(f.to_string()),
            (None, Some(v)) => {
                out.push(format!("--{}", key.replace('_', "-")));
                out.push(v.to_string());
            }
            (None, None) => unreachable!("options without a value have a flag"),
        }
    }
    // Detached, the daemon has no terminal: its log goes to the file named,
    // else to syslog.
    if !out.iter().any(|f| f == "--log-file") {
        out.push("--syslog".into());
    }
    Ok(out)
}

/// Starts `walfs mount` in the background and waits for it to serve.
pub fn run(args: &[OsString]) -> Result<i32, Failure> {
    let options = match args.get(3) {
        Some(o) => o.to_string_lossy().into_owned(),
        None => String::new(),
    };
    let flags = flags(&options).map_err(fail)?;
    // A log file the daemon could not open would fail it silently: say so
    // here, where someone reads it.
    if let Some(i) = flags.iter().position(|f| f == "--log-file") {
        super::logging::open_log_file(&flags[i + 1]).map_err(fail)?;
    }
    let dir = tempfile_dir().map_err(|e| fail(format!("cannot wait for the mount: {e}")))?;
    let sock_path = dir.join("ready");
    let sock = UnixDatagram::bind(&sock_path)
        .map_err(|e| fail(format!("cannot wait for the mount: {e}")))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| fail(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| fail(e.to_string()))?;
    let mut child = Command::new(exe)
        .arg("mount")
        .arg(&args[0])
        .arg(&args[1])
        .args(&flags)
        .env("NOTIFY_SOCKET", &sock_path)
        // Detached like any FUSE daemon (libfuse's fuse_daemonize): a start
        // failure comes back as STATUS= on the socket, not on stderr.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own session: the daemon outlives the mount(8) that started it.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start the daemon: {e}")))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    let mut said = String::new();
    let result = loop {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            if msg.starts_with("READY=1") {
                break Ok(0);
            }
            if let Some(s) = msg.strip_prefix("STATUS=") {
                said = s.trim_end().to_string();
            }
        }
        if let Some(status) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if let Some(s) = msg.strip_prefix("STATUS=") {
                    said = s.trim_end().to_string();
                }
            }
            break Err(Failure {
                message: if said.is_empty() {
                    format!("the daemon exited ({status})")
                } else {
                    said
                },
                code: 1,
            });
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break Err(fail("the mount was not ready within 60 s"));
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh private directory for the readiness socket.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    walfs::storage::make_private_dir(&std::env::temp_dir(), "walfs-mount-")
}

#[cfg(test)]
mod tests {
    use super::flags;

    #[test]
    fn standby_options_become_flags() {
        let f = flags("replicate=s3://b/p,standby,lease=2s,rw").unwrap();
        assert_eq!(
            f,
            [
                "--replicate",
                "s3://b/p",
                "--standby",
                "--lease",
                "2s",
                "--syslog"
            ]
        );
        assert_eq!(flags("takeover").unwrap(), ["--takeover", "--syslog"]);
        assert!(flags("standby=yes").unwrap_err().contains("standby"));
    }
}
