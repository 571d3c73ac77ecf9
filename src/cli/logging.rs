//! Where the daemon's log goes: standard error (a terminal, systemd's
//! journal for a unit), a file (`--log-file`, `log_file=`), or syslog
//! (`--syslog`: what the fstab form uses when no file is named, since
//! mount(8) detaches the daemon from every terminal).

use std::io::{self, Write};

/// The logger for `args` (the whole command line, program name first).
pub fn init(args: &[String]) -> Result<(), String> {
    // The daemon says when it is ready and when it stops (INFO); commands
    // speak only when something is wrong. RUST_LOG overrides both.
    let daemon = args.get(1).map(String::as_str) == Some("mount");
    // fuser reports, as an error, a reply the kernel no longer wanted: the
    // request was interrupted (its reader killed or signalled). Nothing is
    // wrong then; RUST_LOG=fuser=debug shows them.
    let default = if daemon {
        "warn,walfs=info,fuser::reply=off"
    } else {
        "warn"
    };
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    let file = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--log-file") {
            Some("") => args.get(i + 1).cloned(),
            Some(v) => v.strip_prefix('=').map(str::to_owned),
            None => None,
        });
    if daemon {
        if let Some(path) = file {
            let f = open_log_file(&path)?;
            b.target(env_logger::Target::Pipe(Box::new(f)));
        } else if args.iter().any(|a| a == "--syslog") {
            b.format(|buf, r| writeln!(buf, "{} {}", r.level(), r.args()));
            b.target(env_logger::Target::Pipe(Box::new(Syslog::open())));
        }
    }
    b.init();
    Ok(())
}

/// Opens (creating, 0640) the file the daemon appends its log to.
pub fn open_log_file(path: &str) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot open the log file {path}: {e}"))
}

/// Lines to syslog(3) (the daemon facility, as `walfs`), each at the
/// priority its level word gives.
struct Syslog {
    line: Vec<u8>,
}

impl Syslog {
    fn open() -> Syslog {
        // LOG_PID: each line says which daemon; the ident must outlive
        // every later syslog call, hence static.
        static IDENT: &std::ffi::CStr = c"walfs";
        // SAFETY: IDENT is a static NUL-terminated string, valid for the
        // life of the process as openlog requires.
        unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        Syslog { line: Vec::new() }
    }

    fn send(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        let (prio, msg) = match text.split_once(' ') {
            Some(("ERROR", m)) => (libc::LOG_ERR, m),
            Some(("WARN", m)) => (libc::LOG_WARNING, m),
            Some(("INFO", m)) => (libc::LOG_INFO, m),
            Some(("DEBUG" | "TRACE", m)) => (libc::LOG_DEBUG, m),
            _ => (libc::LOG_INFO, text.as_str()),
        };
        let Ok(c) = std::ffi::CString::new(msg.replace('\0', " ")) else {
            return;
        };
        // SAFETY: a constant "%s" format with one NUL-terminated string.
        unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.send();
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.send();
        }
        Ok(())
    }
}
