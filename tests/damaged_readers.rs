//! Readers get past real damage: with a damaged frame in the middle of a
//! sealed segment and another in the middle of the active one, library
//! iteration reports each damaged stretch once and goes on, `walfs cat`
//! prints every readable entry and names the damaged ids (exit 1), the
//! mount's `log` serves every byte but the damaged entries' (EIO for a read
//! that starts in them), and `tail -f` on it follows new entries.

mod common;

use common::mount::Mounted;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use walfs::{Error, Wal, WalOptions};

const N: u64 = 1000;
/// Damaged ids: one in a sealed segment, one in the active one (more than
/// the 8 KiB `tail -n` reads from the end before the end).
const BAD: [u64; 2] = [4, 810];

fn line(i: u64) -> Vec<u8> {
    format!("entry {i:04} of the ledger: {}\n", "x".repeat(40)).into_bytes()
}

/// A log of `N` entries in stream `default` (two segments), cleanly
/// closed, then one bit flipped in each of the frames holding `BAD`.
fn damaged_log(data: &Path) {
    let mut o = WalOptions::new(data);
    o.max_entries_per_segment = 400;
    let wal = Wal::new(o).unwrap();
    for i in 0..N {
        wal.append("default", &line(i)).unwrap();
    }
    let segs = wal.segments("default");
    assert_eq!(segs.len(), 3);
    drop(wal);
    for (seg, id) in [&segs[0], &segs[2]].into_iter().zip(BAD) {
        let mut b = std::fs::read(&seg.path).unwrap();
        // Walk the frames (one entry each) to the one holding `id`.
        let mut at = 0usize;
        for _ in seg.start_id..id {
            at += 32 + u32::from_le_bytes(b[at + 21..at + 25].try_into().unwrap()) as usize;
        }
        b[at + 40] ^= 0x02;
        std::fs::write(&seg.path, b).unwrap();
    }
}

fn readable() -> Vec<u8> {
    (0..N).filter(|i| !BAD.contains(i)).flat_map(line).collect()
}

#[test]
fn iteration_reports_each_damaged_entry_and_goes_on() {
    let t = tempfile::tempdir().unwrap();
    damaged_log(t.path());
    let wal = Wal::new(WalOptions::new(t.path())).unwrap();
    let mut it = wal.iter_with_ids("default", 0).unwrap();
    let (mut got, mut errors) = (Vec::new(), Vec::new());
    loop {
        let want = it.next_id();
        match it.next() {
            None => break,
            Some(Ok((id, e))) => got.push((id, e)),
            Some(Err(Error::Corruption { location, .. })) => {
                errors.push((want, it.next_id(), location.segment))
            }
            Some(Err(e)) => panic!("{e}"),
        }
    }
    assert_eq!(
        got,
        (0..N)
            .filter(|i| !BAD.contains(i))
            .map(|i| (i, line(i)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        errors,
        vec![
            (4, 5, "00000000000000000000.wal".to_string()),
            (810, 811, "00000000000000000800.wal".to_string())
        ],
        "one error per damaged stretch, then the next readable id"
    );
    // Starting inside the damage: the error, then on.
    let mut it = wal.iter("default", 810).unwrap();
    assert!(it.next().unwrap().is_err());
    assert_eq!(it.next().unwrap().unwrap(), line(811));
}

#[test]
fn walfs_cat_prints_every_readable_entry_and_names_the_damaged() {
    let t = tempfile::tempdir().unwrap();
    damaged_log(t.path());
    let o = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["cat", t.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(o.stdout, readable());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("id 4 unreadable") && err.contains("id 810 unreadable"),
        "{err}"
    );
    assert!(err.contains("2 damaged entries"), "{err}");
}

#[test]
fn log_serves_every_byte_but_the_damaged_entries() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    damaged_log(&data);
    let m = Mounted::start_on(&data, &[]);
    let log = std::fs::File::open(m.path("log")).unwrap();
    let all: Vec<u8> = (0..N).flat_map(line).collect();
    assert_eq!(
        log.metadata().unwrap().len(),
        all.len() as u64,
        "damaged entries keep their place"
    );
    // Where each entry starts in `log`.
    let at = |id: u64| (0..id).map(|i| line(i).len() as u64).sum::<u64>();
    // cat: everything before the first damaged entry, then EIO.
    let (code, out, err) = common::mount::sh(&format!("cat {}", m.path("log").display()));
    assert_ne!(code, 0);
    assert!(err.contains("Input/output error"), "{err}");
    assert_eq!(out, all[..at(4) as usize]);
    // A read that starts in a damaged entry fails; every other byte reads.
    for (from, to) in [(0, 4), (5, 810), (811, N)] {
        let mut buf = vec![0u8; (at(to) - at(from)) as usize];
        log.read_exact_at(&mut buf, at(from)).unwrap();
        assert_eq!(buf, all[at(from) as usize..at(to) as usize], "{from}..{to}");
    }
    for bad in BAD {
        let mut buf = [0u8; 4];
        let e = log.read_at(&mut buf, at(bad) + 2).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "entry {bad}");
    }
    // entries/: EIO for the damaged, the rest intact.
    assert_eq!(std::fs::read(m.path("entries/811")).unwrap(), line(811));
    assert_eq!(
        std::fs::read(m.path("entries/810"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );

    // tail -f follows: the last lines, then a new entry.
    let mut tail = Command::new("tail")
        .args([
            "-n",
            "2",
            "-f",
            "-s",
            "0.1",
            m.path("log").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(tail.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first.as_bytes(), line(N - 2));
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("append"))
        .unwrap()
        .write_all_at(b"after the damage\n", 0)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next = String::new();
    while !next.contains("after the damage") {
        next.clear();
        out.read_line(&mut next).unwrap();
        assert!(Instant::now() < deadline);
    }
    let _ = tail.kill();
    let _ = tail.wait();
}

/// What a damaged stretch of the active segment counts for in `log`'s
/// size: one frame whose header agrees with its place counts its entries'
/// bytes; a stretch of two frames, or one frame whose header names other
/// ids (a damaged entry count), counts its bytes on disk.
#[test]
fn a_damaged_stretch_counts_its_entries_only_when_its_header_agrees() {
    let t = tempfile::tempdir().unwrap();
    let mut o = WalOptions::new(t.path());
    o.max_entries_per_segment = 400;
    let wal = Wal::new(o).unwrap();
    for i in 0..N {
        wal.append("default", &line(i)).unwrap();
    }
    let active = wal.segments("default").pop().unwrap();
    assert_eq!(active.start_id, 800);
    drop(wal);
    let mut b = std::fs::read(&active.path).unwrap();
    let mut offs = vec![0usize];
    while *offs.last().unwrap() < b.len() {
        let at = *offs.last().unwrap();
        offs.push(at + 32 + u32::from_le_bytes(b[at + 21..at + 25].try_into().unwrap()) as usize);
    }
    let off = |id: u64| offs[(id - 800) as usize];
    // 810 and 811: one stretch of two frames (a payload byte of each).
    b[off(810) + 40] ^= 0x02;
    b[off(811) + 40] ^= 0x02;
    // 850: its entry count says 3 (its length on disk is intact).
    b[off(850) + 16] = 3;
    std::fs::write(&active.path, &b).unwrap();
    let entries: u64 = (800..N).map(|i| line(i).len() as u64).sum();
    let lost: u64 = [810, 811, 850].iter().map(|&i| line(i).len() as u64).sum();
    let on_disk = (off(812) - off(810) + off(851) - off(850)) as u64;
    let wal = Wal::new(WalOptions::new(t.path())).unwrap();
    let payloads = wal.segment_payloads("default").unwrap();
    assert_eq!(payloads[2], (800, entries - lost + on_disk));
    // The one-frame case: as `log_serves_every_byte_but_the_damaged_entries`
    // (its damaged entry keeps exactly its own size).
}
