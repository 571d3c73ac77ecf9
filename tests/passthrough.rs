//! Sealed segments through FUSE passthrough: the kernel reads
//! `segments/<sealed>.wal` from the segment file itself, so no READ reaches
//! the daemon, while the active segment (whose bytes may not be durable
//! yet) is always served by the daemon. Handles of one segment share one
//! backing file, which goes with the last of them. These tests run as root
//! (CI does), where the daemon may register backing files.

mod common;

use common::mount::Mounted;
use common::{eventually, metric, metrics_port};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn reads(port: u16) -> u64 {
    metric(port, "walfs_fuse_requests_total{op=\"read\"}")
}
fn releases(port: u16) -> u64 {
    metric(port, "walfs_fuse_requests_total{op=\"release\"}")
}
fn passthrough_opens(port: u16) -> u64 {
    metric(port, "walfs_passthrough_opens_total")
}
fn backing_files(port: u16) -> u64 {
    metric(port, "walfs_passthrough_backing_files")
}

/// Appends 24 lines of 16 KiB (one write each), so that 64 KiB segments
/// rotate: several sealed segments and an active one.
fn fill(m: &Mounted) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("append"))
        .unwrap();
    for i in 0..24u8 {
        let mut line = vec![b'a' + i % 26; 16 << 10];
        line.push(b'\n');
        f.write_all(&line).unwrap();
    }
}

/// `segments/`'s names, oldest first (the last is the active one).
fn segment_names(m: &Mounted) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(m.path("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 4, "too few segments: {names:?}");
    names
}

/// The segment file named `name` in the data directory (the root stream
/// of a new log is `default`).
fn on_disk(data: &Path, name: &str) -> PathBuf {
    data.join("default").join(name)
}

fn read_all(mut f: &std::fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    f.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn the_kernel_reads_sealed_segments_itself_and_the_daemon_serves_the_active_one() {
    let port = metrics_port();
    let m = Mounted::start(&["--segment-size", "65536", "--metrics", &port.to_string()]);
    fill(&m);
    let names = segment_names(&m);
    let (sealed, active) = names.split_at(names.len() - 1);

    // Every sealed segment: the bytes on disk, and not one READ.
    let (r0, p0) = (reads(port), passthrough_opens(port));
    for name in sealed {
        let path = m.path(&format!("segments/{name}"));
        let got = std::fs::read(&path).unwrap();
        assert_eq!(
            got,
            std::fs::read(on_disk(&m.data, name)).unwrap(),
            "{name}"
        );
        assert!(got.len() > 16 << 10, "{name}: {} bytes", got.len());
    }
    assert_eq!(reads(port) - r0, 0, "READs reached the daemon");
    assert_eq!(passthrough_opens(port) - p0, sealed.len() as u64);

    // The active segment: through the daemon, never passed through.
    let (r0, p0) = (reads(port), passthrough_opens(port));
    let got = std::fs::read(m.path(&format!("segments/{}", active[0]))).unwrap();
    assert_eq!(
        got,
        std::fs::read(on_disk(&m.data, &active[0])).unwrap(),
        "the active segment"
    );
    assert!(
        reads(port) > r0,
        "the active segment was not read by the daemon"
    );
    assert_eq!(
        passthrough_opens(port),
        p0,
        "the active segment passed through"
    );

    // Two handles of one segment share its backing file; the first one's
    // release leaves it for the second, and a third open while the second
    // is held gets the same (a new one would be refused: EBUSY).
    let path = m.path(&format!("segments/{}", sealed[1]));
    let want = std::fs::read(on_disk(&m.data, &sealed[1])).unwrap();
    let before = backing_files(port);
    let (a, b) = (
        std::fs::File::open(&path).unwrap(),
        std::fs::File::open(&path).unwrap(),
    );
    assert_eq!(
        backing_files(port),
        before + 1,
        "two handles of one segment share one backing file"
    );
    let released = releases(port);
    drop(a);
    eventually("the first handle's release", 10, || {
        releases(port) > released
    });
    let c = std::fs::File::open(&path).unwrap();
    assert_eq!(read_all(&c), want);
    assert_eq!(read_all(&b), want);
    assert_eq!(backing_files(port), before + 1);
    drop((b, c));
    eventually("every backing file closed", 10, || backing_files(port) == 0);

    // A held sealed segment stays readable when truncation frees it.
    let oldest = m.path(&format!("segments/{}", sealed[0]));
    let want = std::fs::read(on_disk(&m.data, &sealed[0])).unwrap();
    let held = std::fs::File::open(&oldest).unwrap();
    std::fs::remove_file(&oldest).unwrap();
    assert!(!oldest.exists());
    assert_eq!(read_all(&held), want);
    drop(held);
    eventually("every backing file closed", 10, || backing_files(port) == 0);
}

#[test]
fn without_passthrough_the_daemon_serves_sealed_segments() {
    let port = metrics_port();
    let m = Mounted::start(&[
        "--segment-size",
        "65536",
        "--no-passthrough",
        "--metrics",
        &port.to_string(),
    ]);
    fill(&m);
    let names = segment_names(&m);
    let r0 = reads(port);
    for name in &names[..names.len() - 1] {
        let got = std::fs::read(m.path(&format!("segments/{name}"))).unwrap();
        assert_eq!(
            got,
            std::fs::read(on_disk(&m.data, name)).unwrap(),
            "{name}"
        );
    }
    assert!(reads(port) > r0, "the daemon read nothing");
    assert_eq!(passthrough_opens(port), 0);
}
