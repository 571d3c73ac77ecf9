//! Hostile input: arbitrary and mutated segment files, crafted lengths,
//! broken metadata, foreign files and symlinks. Nothing panics, open either
//! refuses with an error or serves what it can, and reads fail cleanly.
//! (cargo-fuzz targets in fuzz/ run the same code without bounds.)

use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;
use walfs::{CorruptionPolicy, SimDisk, Storage, Wal, WalOptions};

const ROOT: &str = "/h/data";

/// A valid segment of a few raw and LZ4 frames, as a starting point.
fn valid_segment() -> Vec<u8> {
    let disk = SimDisk::with_root(Path::new("/h"));
    let mut o = WalOptions::new(ROOT);
    o.compression = walfs::CompressionType::Lz4;
    o.min_compression_size = 32;
    let wal = Wal::with_storage(o, Arc::new(disk.clone())).unwrap();
    wal.append("s", b"first").unwrap();
    wal.append_batch(
        "s",
        &[&b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[..], b"b", b""],
    )
    .unwrap();
    wal.append("s", &[0u8; 100]).unwrap();
    drop(wal);
    disk.read_file(Path::new("/h/data/s/00000000000000000000.wal"))
        .unwrap()
}

/// Puts `files` into stream `s` of a fresh disk and exercises everything.
fn exercise(files: &[(&str, &[u8])]) {
    let disk = SimDisk::with_root(Path::new("/h"));
    disk.create_dir(Path::new("/h/data/s")).unwrap();
    for (name, bytes) in files {
        let f = disk.open(&Path::new("/h/data/s").join(name), true).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        f.sync_data().unwrap();
    }
    disk.sync_dir(Path::new("/h/data/s")).unwrap();
    disk.sync_dir(Path::new("/h/data")).unwrap();
    let mut opened = 0;
    let report = walfs::verify(&disk, Path::new(ROOT), &mut |_, _| {});
    assert!(report.is_ok());
    for policy in [CorruptionPolicy::Truncate, CorruptionPolicy::Error] {
        for read_only in [true, false] {
            let mut o = WalOptions::new(ROOT);
            o.on_corruption = policy;
            o.read_only = read_only;
            o.block_cache_size = Some(1 << 16);
            // Each open works on its own copy (a read-write open repairs).
            let copy = disk.crash(walfs::CrashMode::DropUnsynced);
            let Ok(wal) = Wal::with_storage(o, Arc::new(copy)) else {
                continue;
            };
            opened += 1;
            let next = wal.next_id("s");
            let first = wal.stream_info("s").map_or(0, |i| i.first_id);
            for id in first..next.min(first + 64) {
                let _ = wal.get("s", id);
            }
            for r in wal.iter("s", 0).unwrap().take(64) {
                if r.is_err() {
                    break;
                }
            }
            let _ = wal.segment_payloads("s");
            if !read_only {
                let _ = wal.append("s", b"after");
            }
        }
    }
    // Truncate policy, read-only: opening never refuses a segment's bytes.
    assert!(opened > 0, "nothing opened");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_segment_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise(&[("00000000000000000000.wal", &bytes)]);
    }

    #[test]
    fn mutated_valid_segments(edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8), cut in any::<u16>()) {
        let mut seg = valid_segment();
        for (at, b) in edits {
            let i = at as usize % seg.len();
            seg[i] = b;
        }
        seg.truncate(cut as usize % (seg.len() + 1) + seg.len() / 2);
        exercise(&[("00000000000000000000.wal", &seg)]);
    }

    #[test]
    fn arbitrary_metadata(idx in proptest::collection::vec(any::<u8>(), 0..40), head in proptest::collection::vec(any::<u8>(), 0..40)) {
        let seg = valid_segment();
        exercise(&[("00000000000000000000.wal", &seg), ("00000000000000000006.wal", &seg), ("segments.idx", &idx), ("head.state", &head)]);
    }
}

fn frame(start: u64, count: u32, disk_size: u32, raw_size: u32, ft: u8, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&start.to_le_bytes());
    crc.update(&count.to_le_bytes());
    crc.update(&[ft]);
    crc.update(&disk_size.to_le_bytes());
    crc.update(payload);
    let mut b = Vec::new();
    b.extend_from_slice(&0x4C57_414Cu32.to_le_bytes());
    b.extend_from_slice(&crc.finalize().to_le_bytes());
    b.extend_from_slice(&start.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.push(ft);
    b.extend_from_slice(&disk_size.to_le_bytes());
    b.extend_from_slice(&raw_size.to_le_bytes());
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(payload);
    b
}

#[test]
fn crafted_lengths_cost_no_memory() {
    // A header claiming 4 GiB of payload, one claiming 4 billion entries
    // with a valid crc, an entry length of 4 GiB, and a good frame after.
    let mut seg = frame(0, 1, u32::MAX, u32::MAX, 0, b"xxxx");
    seg.extend(frame(
        0,
        u32::MAX,
        8,
        8,
        0,
        &[4, 0, 0, 0, b'a', b'b', b'c', b'd'],
    ));
    seg.extend(frame(
        0,
        1,
        8,
        u32::MAX,
        0,
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4],
    ));
    seg.extend(frame(0, 1, 5, 5, 0, &[1, 0, 0, 0, b'z']));
    let before = peak_rss_kib();
    exercise(&[("00000000000000000000.wal", &seg)]);
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 64 << 10, "peak memory grew by {grown} KiB");
}

fn peak_rss_kib() -> u64 {
    // SAFETY: rusage is plain data; all-zero bytes are a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the live struct we pass, nothing else.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as u64
}

#[test]
fn foreign_files_and_symlinks_in_the_data_directory() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    {
        let wal = Wal::new(WalOptions::new(&root)).unwrap();
        wal.append("s", b"kept").unwrap();
    }
    let elsewhere = t.path().join("elsewhere");
    {
        let wal = Wal::new(WalOptions::new(&elsewhere)).unwrap();
        wal.append("other", b"not ours").unwrap();
    }
    std::fs::write(root.join("notes.txt"), b"hello").unwrap();
    std::fs::create_dir(root.join("bad name")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("other"), root.join("linked")).unwrap();
    std::fs::write(root.join("s/README"), b"x").unwrap();
    std::fs::write(root.join("s/5.wal"), b"not a segment name").unwrap();
    std::fs::create_dir(root.join("s/00000000000000000009.wal")).unwrap();
    let wal = Wal::new(WalOptions::new(&root)).unwrap();
    assert_eq!(
        wal.streams(),
        vec!["s".to_string()],
        "symlinks and odd names are not streams"
    );
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), b"kept");
    assert_eq!(wal.append("s", b"more").unwrap(), 1);
    let report = walfs::verify(&walfs::RealStorage, &root, &mut |_, _| {}).unwrap();
    assert!(report.is_sound(), "{:?}", report.faults);
}

/// The walfs binary, run with a bound: (exit status, stderr). A run that
/// does not end within 20 s is a hang, killed and reported.
fn walfs_bounded(args: &[&str]) -> (i32, String) {
    use std::io::Read;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            let mut err = String::new();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (s.code().unwrap_or(-1), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("walfs {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A FIFO named like a segment (or like the active one) blocks nothing:
/// every command ends at once with an error that names the path; the mount
/// refuses, naming it.
#[test]
fn a_fifo_named_like_a_segment_blocks_nothing() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let mut o = WalOptions::new(&data);
    o.max_entries_per_segment = 2;
    let wal = Wal::new(o).unwrap();
    for i in 0..5 {
        wal.append("s", format!("e{i}").as_bytes()).unwrap();
    }
    drop(wal);
    for victim in ["00000000000000000002.wal", "00000000000000000004.wal"] {
        let work = t.path().join(format!("w-{victim}"));
        std::process::Command::new("cp")
            .args(["-a", data.to_str().unwrap(), work.to_str().unwrap()])
            .status()
            .unwrap();
        let p = work.join("s").join(victim);
        std::fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let w = work.to_str().unwrap();
        // (stat of a stream reads no sealed segment: it may answer.)
        for (args, reads) in [
            (vec!["verify", w], true),
            (vec!["stat", w, "-s", "s"], victim.ends_with("4.wal")),
            (vec!["cat", w, "-s", "s"], true),
            (vec!["get", w, "3", "-s", "s"], true),
        ] {
            let (code, err) = walfs_bounded(&args);
            if reads || code != 0 {
                assert_ne!(code, 0, "{args:?}: {err}");
                assert!(
                    err.contains(victim) && err.contains("not a regular file"),
                    "{args:?}: {err}"
                );
            }
        }
        // The active segment is opened at mount: refused, named. (A sealed
        // one is opened when read: that read fails, the mount serves on.)
        if victim.ends_with("4.wal") {
            let mnt = t.path().join(format!("m-{victim}"));
            std::fs::create_dir(&mnt).unwrap();
            let (code, err) = walfs_bounded(&["mount", w, mnt.to_str().unwrap()]);
            assert_eq!(code, 1, "{err}");
            assert!(
                err.contains(victim) && err.contains("not a regular file"),
                "{err}"
            );
        }
    }
}

/// `verify`, `repair` and `truncate` on a directory that holds no walfs
/// log say so (never "sound"), and leave nothing in it.
#[test]
fn commands_on_a_directory_that_is_not_a_log_say_so_and_leave_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("photos");
    std::fs::create_dir_all(d.join("2024")).unwrap();
    std::fs::write(d.join("2024/beach.jpg"), b"jpeg").unwrap();
    let ds = d.to_str().unwrap();
    for args in [
        vec!["verify", ds],
        vec!["repair", ds],
        vec!["truncate", ds, "-s", "2024", "--before", "1"],
    ] {
        let (code, err) = walfs_bounded(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("not a walfs data directory"),
            "{args:?}: {err}"
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["2024"], "nothing left behind (no walfs.lock)");
}
