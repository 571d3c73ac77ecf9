//! A real filesystem that fills up: the log's data on a 1 MiB tmpfs. The
//! write(2) that cannot be stored fails with ENOSPC, nothing after it is
//! acknowledged until the mount is restarted, and nothing unacknowledged
//! appears afterwards.

mod common;

use common::mount::{detach, Mounted};
use std::fs::OpenOptions;
use std::io::Write;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (src, target, fstype, opts) = (
            c("tmpfs"),
            c(at.to_str().unwrap()),
            c("tmpfs"),
            c(&format!("size={size}")),
        );
        // SAFETY: valid C strings; mount(2) copies them.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        detach(&self.0);
    }
}

#[test]
fn enospc_is_reported_and_nothing_unacknowledged_appears() {
    let base = tempfile::tempdir().unwrap();
    let small = Tmpfs::new(&base.path().join("small"), "1m");
    let mut m = Mounted::start_on(&small.0.join("data"), &[]);
    let mut acked = Vec::new();
    let mut first_error = None;
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("append"))
        .unwrap();
    for i in 0..100_000 {
        let line = format!("entry {i} {}\n", "z".repeat(200));
        match f.write(line.as_bytes()) {
            Ok(n) => {
                assert_eq!(n, line.len());
                acked.push(line);
            }
            Err(e) => {
                first_error = e.raw_os_error();
                break;
            }
        }
    }
    assert_eq!(
        first_error,
        Some(libc::ENOSPC),
        "the write that cannot be stored fails with ENOSPC"
    );
    assert!(acked.len() > 100);
    // Nothing more is acknowledged until the daemon reopens the log.
    for _ in 0..3 {
        assert!(f.write(b"later\n").is_err());
    }
    drop(f);
    let log = std::fs::read_to_string(m.path("log")).unwrap();
    assert_eq!(
        log,
        acked.concat(),
        "readers see exactly what was acknowledged"
    );
    m.stop();
    m.spawn();
    assert_eq!(
        std::fs::read_to_string(m.path("log")).unwrap(),
        acked.concat(),
        "after a restart too"
    );
    drop(m);
}

/// Writes 4 MiB through `append` at about 512 KiB/s; returns the first
/// write error, if any, and how many lines were acknowledged.
fn write_slowly(m: &Mounted) -> (Option<i32>, usize) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("append"))
        .unwrap();
    let line = format!("{}\n", "r".repeat(1023));
    for i in 0..4096 {
        if let Err(e) = f.write_all(line.as_bytes()) {
            return (e.raw_os_error(), i);
        }
        if i % 64 == 63 {
            std::thread::sleep(std::time::Duration::from_millis(125));
        }
    }
    (None, 4096)
}

/// The same 4 MiB of appends on a 2 MiB disk: without retention the disk
/// fills (ENOSPC); with `--retain-bytes 256K` it never does.
#[test]
fn retention_keeps_a_small_disk_from_filling() {
    let base = tempfile::tempdir().unwrap();
    {
        let small = Tmpfs::new(&base.path().join("without"), "2m");
        let mut m = Mounted::start_on(&small.0.join("data"), &["--segment-size", "64K"]);
        let (err, acked) = write_slowly(&m);
        assert_eq!(err, Some(libc::ENOSPC), "{acked} lines acknowledged");
        m.stop();
    }
    let small = Tmpfs::new(&base.path().join("with"), "2m");
    let mut m = Mounted::start_on(
        &small.0.join("data"),
        &["--segment-size", "64K", "--retain-bytes", "256K"],
    );
    let (err, acked) = write_slowly(&m);
    assert_eq!((err, acked), (None, 4096));
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    let field = |k: &str| -> u64 {
        stat.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("next_id"), 4096);
    assert!(field("first_id") > 0, "{stat}");
    m.stop();
}
