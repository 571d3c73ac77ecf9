//! A large entry through the mount: `stat` answers from the frame's header
//! and the daemon never holds the entry (it used to read all 64 MiB at
//! LOOKUP and keep a copy: 65 MB more resident), while no byte of it
//! reaches a reader before its whole frame's crc has been checked.

mod common;

use common::mount::Mounted;
use std::os::unix::fs::FileExt;
use std::path::Path;
use walfs::{Error, Wal, WalOptions};

const MIB: u64 = 1 << 20;

fn entry(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect()
}

/// Stream `default` of `data` holding a small entry (id 0) and then one of
/// `len` bytes (id 1), cleanly closed.
fn big_log(data: &Path, len: u64) -> Vec<u8> {
    let wal = Wal::new(WalOptions::new(data)).unwrap();
    wal.append("default", b"small\n").unwrap();
    let big = entry(len);
    wal.append("default", &big).unwrap();
    big
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn rchar_of(pid: u32) -> u64 {
    common::rchar_of(&pid.to_string())
}

#[test]
fn a_stat_of_a_large_entry_reads_none_of_it_and_the_daemon_never_holds_it() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let big = big_log(&data, 64 * MIB);
    let m = Mounted::start_on(&data, &[]);
    let pid = m.pid();
    // The active segment was checked at open; the daemon has settled.
    assert_eq!(std::fs::read(m.path("entries/0")).unwrap(), b"small\n");
    let (anon0, read0) = (status_kib(pid, "RssAnon:"), rchar_of(pid));

    let len = std::fs::metadata(m.path("entries/1")).unwrap().len();
    assert_eq!(len, big.len() as u64);
    let (anon1, read1) = (status_kib(pid, "RssAnon:"), rchar_of(pid));
    assert!(
        read1 - read0 < MIB,
        "a stat of a 64 MiB entry read {} bytes",
        read1 - read0
    );
    assert!(
        anon1.saturating_sub(anon0) < 2 * 1024,
        "a stat of a 64 MiB entry grew the daemon by {} KiB",
        anon1.saturating_sub(anon0)
    );

    // Read whole, and in pieces at odd places: the right bytes, and the
    // daemon still does not hold the entry.
    assert!(std::fs::read(m.path("entries/1")).unwrap() == big);
    let f = std::fs::File::open(m.path("entries/1")).unwrap();
    for (at, n) in [
        (0, 1),
        (MIB - 3, 7),
        (40 * MIB + 5, 300_000),
        (64 * MIB - 2, 10),
    ] {
        let mut buf = vec![0u8; n];
        let got = f.read_at(&mut buf, at).unwrap();
        let want = &big[at as usize..(at as usize + n).min(big.len())];
        assert_eq!(&buf[..got], want, "{n} bytes at {at}");
    }
    // What stays is the daemon's reusable buffers (a request's worth per
    // FUSE thread, the read pool), not the entry: a second whole read,
    // of an entry of 64 MiB, adds nothing.
    let anon2 = status_kib(pid, "RssAnon:");
    assert!(std::fs::read(m.path("entries/1")).unwrap() == big);
    let anon3 = status_kib(pid, "RssAnon:");
    eprintln!("RssAnon KiB: settled {anon0}, after stat {anon1}, after reads {anon2}, after another {anon3}");
    assert!(
        anon2.saturating_sub(anon0) < 16 * 1024,
        "reading a 64 MiB entry grew the daemon by {} KiB",
        anon2.saturating_sub(anon0)
    );
    assert!(
        anon3.saturating_sub(anon2) < 1024,
        "a second read of a 64 MiB entry grew the daemon by {} KiB",
        anon3.saturating_sub(anon2)
    );
}

#[test]
fn a_large_entry_damaged_after_its_stat_gives_no_byte() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let big = big_log(&data, 8 * MIB);
    let seg = std::fs::read_dir(data.join("default"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    let m = Mounted::start_on(&data, &[]);
    // Indexed and sized while sound.
    assert_eq!(
        std::fs::metadata(m.path("entries/1")).unwrap().len(),
        big.len() as u64
    );
    // One bit near the end of the entry rots under the mounted daemon.
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    let at = std::fs::metadata(&seg).unwrap().len() - 100;
    let mut b = [0u8; 1];
    std::fs::File::open(&seg)
        .unwrap()
        .read_at(&mut b, at)
        .unwrap();
    file.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    // Its first byte is far from the damage, and still never served.
    let mut buf = [0u8; 4096];
    let e = std::fs::File::open(m.path("entries/1"))
        .unwrap()
        .read_at(&mut buf, 0)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    drop(m);

    // The library: sized while sound, damaged under it, then no part of
    // it is served, and the error says where.
    file.write_all_at(&b, at).unwrap();
    let wal = Wal::new(WalOptions::new(&data)).unwrap();
    assert_eq!(wal.entry_len("default", 1).unwrap(), Some(big.len() as u64));
    file.write_all_at(&[b[0] ^ 0x30], at).unwrap();
    for (from, n) in [(0, 10), (4 * MIB, 1 << 16)] {
        match wal.read_entry_range("default", 1, from, n) {
            Err(Error::Corruption { location, .. }) => {
                assert_eq!(location.offset, 32 + 4 + 6, "{location:?}")
            }
            other => panic!("{n} bytes at {from}: {other:?}"),
        }
    }
}

#[test]
fn a_large_entry_reads_back_in_ranges_through_the_library() {
    let t = tempfile::tempdir().unwrap();
    let big = big_log(t.path(), 3 * MIB + 17);
    let wal = Wal::new(WalOptions::new(t.path())).unwrap();
    assert_eq!(wal.entry_len("default", 1).unwrap(), Some(big.len() as u64));
    assert_eq!(wal.entry_len("default", 0).unwrap(), Some(6));
    assert_eq!(wal.entry_len("default", 2).unwrap(), None);
    let mut got = Vec::new();
    while got.len() < big.len() {
        let piece = wal
            .read_entry_range("default", 1, got.len() as u64, 100_000)
            .unwrap()
            .unwrap();
        assert!(!piece.is_empty());
        got.extend_from_slice(&piece);
    }
    assert!(got == big);
    let end = wal
        .read_entry_range("default", 1, big.len() as u64 + 5, 10)
        .unwrap();
    assert_eq!(end, Some(Vec::new()));
    assert_eq!(
        wal.read_entry_range("default", 0, 2, 100).unwrap(),
        Some(b"all\n".to_vec())
    );
    assert_eq!(wal.read_entry_range("default", 2, 0, 10).unwrap(), None);
}
