//! Torn tails, corruption in the middle, damaged sealed segments, and a
//! matrix of every byte flipped and every truncation point.

mod common;

use common::copy_dir;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use walfs::{CompressionType, CorruptionPolicy, Error, FaultKind, RealStorage, Wal, WalOptions};

fn opts(root: &Path, policy: CorruptionPolicy) -> WalOptions {
    let mut o = WalOptions::new(root);
    o.on_corruption = policy;
    o
}

/// Writes `n` single-entry frames and returns the active segment's path
/// and the offsets of its frames.
fn build(root: &Path, n: u64) -> (PathBuf, Vec<u64>) {
    let wal = Wal::new(WalOptions::new(root)).unwrap();
    for i in 0..n {
        wal.append("s", format!("entry-{i}").as_bytes()).unwrap();
    }
    let seg = wal.segments("s").pop().unwrap().path;
    drop(wal);
    (seg.clone(), frame_offsets(&std::fs::read(&seg).unwrap()))
}

fn frame_offsets(b: &[u8]) -> Vec<u64> {
    let mut v = Vec::new();
    let mut at = 0usize;
    while at + 32 <= b.len() {
        v.push(at as u64);
        at += 32 + u32::from_le_bytes(b[at + 21..at + 25].try_into().unwrap()) as usize;
    }
    v
}

fn ids(w: &Wal) -> Vec<Vec<u8>> {
    w.iter("s", 0).unwrap().map(Result::unwrap).collect()
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Makes walfs.synced say what a crash during the last frame's sync leaves:
/// the segment synced up to the last frame (ids below `end_id`) and no
/// further. Written as the engine writes it (both slots, the second newer).
fn synced_up_to(seg: &Path, len: u64, end_id: u64) {
    let m = walfs::format::SyncedMark {
        segment: 0,
        len,
        end_id,
    };
    let mut b = walfs::format::synced_encode(1, m).to_vec();
    b.resize(walfs::format::SYNCED_SLOT as usize, 0);
    b.extend_from_slice(&walfs::format::synced_encode(2, m));
    std::fs::write(seg.parent().unwrap().join(walfs::format::SYNCED), b).unwrap();
}

#[test]
fn torn_tails_are_cut_under_both_policies() {
    // What a crash leaves in bytes written after the last sync: each case
    // damages the last frame, which the crash kept from being synced.
    type Damage = fn(&Path, &[u64]);
    let cases: [(&str, Damage); 6] = [
        ("partial header", |p, _| {
            OpenOptions::new()
                .append(true)
                .open(p)
                .unwrap()
                .write_all(&0x4C57_414Cu32.to_le_bytes())
                .unwrap();
        }),
        ("partial payload", |p, offs| {
            let len = std::fs::metadata(p).unwrap().len();
            let last = *offs.last().unwrap();
            // Keep the header and half the payload of the last frame.
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(last + 32 + (len - last - 32) / 2)
                .unwrap();
        }),
        ("a lost byte in the last frame", |p, offs| {
            let mut b = std::fs::read(p).unwrap();
            b[*offs.last().unwrap() as usize + 38] = 0;
            std::fs::write(p, b).unwrap();
        }),
        (
            "a lost sector write in the last frame's header",
            |p, offs| {
                let mut b = std::fs::read(p).unwrap();
                let at = *offs.last().unwrap() as usize;
                b[at..at + 12].fill(0);
                std::fs::write(p, b).unwrap();
            },
        ),
        ("zeros past the end", |p, _| {
            OpenOptions::new()
                .append(true)
                .open(p)
                .unwrap()
                .write_all(&[0u8; 4096])
                .unwrap();
        }),
        ("header only", |p, offs| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(offs.last().unwrap() + 32)
                .unwrap();
        }),
    ];
    for (name, damage) in cases {
        for policy in [CorruptionPolicy::Truncate, CorruptionPolicy::Error] {
            let t = tempfile::tempdir().unwrap();
            let (seg, offs) = build(t.path(), 5);
            synced_up_to(&seg, *offs.last().unwrap(), 4);
            damage(&seg, &offs);
            let before = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
            let wal = Wal::new(opts(t.path(), policy))
                .unwrap_or_else(|e| panic!("{name} {policy:?}: {e}"));
            let got = ids(&wal);
            let survivors = if name == "partial header" || name == "zeros past the end" {
                5
            } else {
                4
            };
            assert_eq!(got.len(), survivors, "{name} {policy:?}");
            // verify, run before the open, said the same: a torn tail where
            // the open cut, and a sound log.
            assert!(before.is_sound(), "{name}: {:?}", before.faults);
            assert_eq!(before.faults.len(), 1, "{name}: {:?}", before.faults);
            assert_eq!(before.faults[0].kind, FaultKind::TornTail, "{name}");
            assert_eq!(
                before.faults[0].location.offset,
                std::fs::metadata(&seg).unwrap().len(),
                "{name}: verify names the byte the open cut at"
            );
            assert_eq!(
                wal.append("s", b"next").unwrap(),
                survivors as u64,
                "{name}: ids dense after the cut"
            );
            drop(wal);
            let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
            assert!(
                report.faults.is_empty(),
                "{name}: after the cut the log verifies: {:?}",
                report.faults
            );
        }
    }
}

/// ironwal 0.6.9's own `test_bit_rot_detection`, against walfs: one entry,
/// a clean close, a byte of its payload overwritten. The read is an error,
/// never a missing entry, and id 0 is never given to another entry.
#[test]
fn bit_rot_in_the_last_frame_of_a_cleanly_closed_stream_is_corruption() {
    for policy in [CorruptionPolicy::Truncate, CorruptionPolicy::Error] {
        let t = tempfile::tempdir().unwrap();
        let mut o = WalOptions::new(t.path());
        o.block_cache_size = None;
        let wal = Wal::new(o).unwrap();
        wal.append("bit_rot", b"clean_data").unwrap();
        drop(wal);
        let seg = t.path().join("bit_rot/00000000000000000000.wal");
        let mut b = std::fs::read(&seg).unwrap();
        b[35] = 0xFF;
        std::fs::write(&seg, &b).unwrap();
        let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
        assert!(!report.is_sound());
        assert_eq!(report.faults[0].kind, FaultKind::Corruption);
        assert_eq!(report.faults[0].location.offset, 0);
        match Wal::new(opts(t.path(), policy)) {
            Err(Error::Corruption { location, .. }) => {
                assert_eq!(policy, CorruptionPolicy::Error);
                assert_eq!(location.offset, 0);
            }
            Ok(wal) => {
                assert_eq!(policy, CorruptionPolicy::Truncate);
                match wal.get("bit_rot", 0) {
                    Err(Error::Corruption { location, .. }) => assert_eq!(location.offset, 0),
                    other => panic!("read succeeded despite bit rot: {other:?}"),
                }
                assert_eq!(wal.next_id("bit_rot"), 1);
                assert_eq!(wal.append("bit_rot", b"after").unwrap(), 1, "id 0 reused");
                assert_eq!(
                    std::fs::read(&seg).unwrap()[..b.len()],
                    b[..],
                    "nothing cut"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Bit rot past the synced mark (a power loss kept walfs.synced from
/// recording the last frames' sync): a flipped bit that leaves a byte no
/// crash leaves (a crash's lost bytes read as zeros) is corruption, kept,
/// with the frames after it; a lost byte is a torn tail.
#[test]
fn bit_rot_past_the_synced_mark_is_told_from_a_lost_write() {
    for (frame, bit_rot) in [(2usize, true), (4, true), (2, false), (4, false)] {
        let t = tempfile::tempdir().unwrap();
        let (seg, offs) = build(t.path(), 5);
        // Nothing known synced: as after a power loss right after the
        // appends, before walfs.synced reached the disk.
        synced_up_to(&seg, 0, 0);
        let mut b = std::fs::read(&seg).unwrap();
        let at = offs[frame] as usize + 37; // 'n' of "entry-N"
        if bit_rot {
            b[at] ^= 0x04;
        } else {
            b[at] = 0;
        }
        std::fs::write(&seg, &b).unwrap();
        let what = format!("frame {frame}, bit rot {bit_rot}");
        let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
        assert_eq!(report.faults.len(), 1, "{what}: {:?}", report.faults);
        let f = &report.faults[0];
        assert_eq!(f.location.offset, offs[frame], "{what}");
        let wal = Wal::new(opts(t.path(), CorruptionPolicy::Truncate)).unwrap();
        if bit_rot {
            assert_eq!(f.kind, FaultKind::Corruption, "{what}: {f}");
            assert!(f.reason.contains("bit rot"), "{what}: {f}");
            assert_eq!(wal.next_id("s"), 5, "{what}: nothing cut");
            assert!(wal.get("s", frame as u64).is_err());
            for id in (0..5).filter(|&i| i != frame as u64) {
                assert_eq!(
                    wal.get("s", id).unwrap().unwrap(),
                    format!("entry-{id}").as_bytes()
                );
            }
        } else {
            assert_eq!(f.kind, FaultKind::TornTail, "{what}: {f}");
            assert_eq!(
                wal.next_id("s"),
                frame as u64,
                "{what}: cut at the lost write"
            );
        }
    }
}

#[test]
fn corruption_followed_by_valid_frames_is_not_silently_dropped() {
    let t = tempfile::tempdir().unwrap();
    let (seg, offs) = build(t.path(), 5);
    flip(&seg, offs[2] + 35);
    match Wal::new(opts(t.path(), CorruptionPolicy::Error)) {
        Err(Error::Corruption { location, reason }) => {
            assert_eq!(location.stream, "s");
            assert_eq!(location.segment, "00000000000000000000.wal");
            assert_eq!(location.offset, offs[2]);
            assert!(
                reason.contains("crc")
                    && reason.contains("id 2 is unreadable;")
                    && reason.contains("valid frames follow"),
                "{reason}"
            );
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("Error policy opened a corrupt log"),
    }
    let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
    assert_eq!(report.faults.len(), 1);
    assert_eq!(report.faults[0].kind, FaultKind::Corruption);
    assert_eq!(report.faults[0].location.offset, offs[2]);
    // Truncate keeps the damaged bytes and every intact entry after them;
    // the damaged id answers with an error naming where it is, and new
    // entries get new ids after the real end.
    let len = std::fs::metadata(&seg).unwrap().len();
    let wal = Wal::new(opts(t.path(), CorruptionPolicy::Truncate)).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "nothing cut");
    assert_eq!(wal.next_id("s"), 5);
    for id in [0u64, 1, 3, 4] {
        assert_eq!(
            wal.get("s", id).unwrap().unwrap(),
            format!("entry-{id}").as_bytes()
        );
    }
    match wal.get("s", 2) {
        Err(Error::Corruption { location, .. }) => assert_eq!(location.offset, offs[2]),
        other => panic!("damaged id 2: {other:?}"),
    }
    assert_eq!(wal.append("s", b"after").unwrap(), 5);
    drop(wal);
    let wal = Wal::new(opts(t.path(), CorruptionPolicy::Truncate)).unwrap();
    assert_eq!(wal.get("s", 4).unwrap().unwrap(), b"entry-4");
    assert_eq!(wal.get("s", 5).unwrap().unwrap(), b"after");
    assert_eq!(wal.next_id("s"), 6);
    let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
    assert_eq!(report.faults.len(), 1, "{:?}", report.faults);
    assert_eq!(report.faults[0].location.offset, offs[2]);
}

#[test]
fn damaged_sealed_frame_fails_alone() {
    let t = tempfile::tempdir().unwrap();
    let mut o = WalOptions::new(t.path());
    o.max_entries_per_segment = 10;
    let wal = Wal::new(o.clone()).unwrap();
    for i in 0..25u64 {
        wal.append("s", format!("entry-{i}").as_bytes()).unwrap();
    }
    let sealed = wal.segments("s")[0].path.clone();
    drop(wal);
    let offs = frame_offsets(&std::fs::read(&sealed).unwrap());
    // Damage frame 3's payload and frame 6's magic.
    flip(&sealed, offs[3] + 36);
    flip(&sealed, offs[6]);
    let wal = Wal::new(o).unwrap();
    for id in 0..25u64 {
        let r = wal.get("s", id);
        match id {
            3 | 6 => match r {
                Err(Error::Corruption { location, .. }) => {
                    assert_eq!(location.segment, "00000000000000000000.wal");
                    assert_eq!(location.offset, offs[id as usize], "id {id}");
                }
                other => panic!("id {id}: {other:?}"),
            },
            _ => assert_eq!(
                r.unwrap().unwrap(),
                format!("entry-{id}").as_bytes(),
                "id {id}"
            ),
        }
    }
    let mut it = wal.iter("s", 0).unwrap();
    for _ in 0..3 {
        it.next().unwrap().unwrap();
    }
    assert!(
        it.next().unwrap().is_err(),
        "iteration stops with an error at the damage"
    );
    let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
    let at: Vec<u64> = report.faults.iter().map(|f| f.location.offset).collect();
    assert_eq!(at, vec![offs[3], offs[6]], "{:?}", report.faults);
}

/// A small log with two sealed segments, raw and LZ4 frames.
fn matrix_log(root: &Path) -> Vec<(PathBuf, Vec<u64>)> {
    let mut o = WalOptions::new(root);
    o.max_segment_size = 300;
    o.compression = CompressionType::Lz4;
    o.min_compression_size = 64;
    let wal = Wal::new(o).unwrap();
    for i in 0..24u64 {
        if i % 3 == 0 {
            let long = format!("repetitive {i} ").repeat(12);
            wal.append_batch("s", &[long.as_bytes(), b"x"]).unwrap();
        } else {
            wal.append("s", format!("e{i}").as_bytes()).unwrap();
        }
    }
    let segs: Vec<PathBuf> = wal.segments("s").into_iter().map(|s| s.path).collect();
    assert!(segs.len() >= 3);
    segs.into_iter()
        .map(|p| {
            let offs = frame_offsets(&std::fs::read(&p).unwrap());
            (p, offs)
        })
        .collect()
}

#[test]
fn every_byte_flipped_is_found_where_it_is() {
    let t = tempfile::tempdir().unwrap();
    let pristine = t.path().join("pristine");
    let segs = matrix_log(&pristine);
    let expected: Vec<Vec<u8>> = {
        let mut o = WalOptions::new(&pristine);
        o.read_only = true;
        let wal = Wal::new(o).unwrap();
        wal.iter("s", 0).unwrap().map(Result::unwrap).collect()
    };
    {
        // The active segment holds both raw and LZ4 frames.
        let (seg, offs) = segs.last().unwrap();
        let b = std::fs::read(seg).unwrap();
        let types: Vec<u8> = offs.iter().map(|&o| b[o as usize + 20]).collect();
        assert!(types.contains(&0) && types.contains(&1), "{types:?}");
    }
    let (mut cases, mut active) = (0, 0);
    for (si, (seg, offs)) in segs.iter().enumerate() {
        let sealed = si + 1 < segs.len();
        let seg_bytes = std::fs::read(seg).unwrap();
        // (start id, count) of each frame of this segment.
        let ids: Vec<(u64, u64)> = offs
            .iter()
            .map(|&o| {
                let o = o as usize;
                (
                    u64::from_le_bytes(seg_bytes[o + 8..o + 16].try_into().unwrap()),
                    u32::from_le_bytes(seg_bytes[o + 16..o + 20].try_into().unwrap()) as u64,
                )
            })
            .collect();
        let bytes = std::fs::read(seg).unwrap();
        let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
        for at in 0..bytes.len() as u64 {
            let frame = *offs.iter().rev().find(|&&o| o <= at).unwrap();
            let in_header = at - frame;
            // uncompressed_size and padding are outside the crc and unused.
            let covered = !(25..32).contains(&in_header);
            let work = t.path().join(format!("case-{si}-{at}"));
            copy_dir(&pristine, &work);
            flip(&work.join("s").join(&name), at);
            let report = walfs::verify(&RealStorage, &work, &mut |_, _| {}).unwrap();
            if covered {
                let f = report
                    .faults
                    .first()
                    .unwrap_or_else(|| panic!("{name} byte {at}: flip not found"));
                assert_eq!(
                    (f.location.segment.as_str(), f.location.offset),
                    (name.as_str(), frame),
                    "{name} byte {at}: {f}"
                );
            } else {
                assert!(report.is_sound(), "{name} byte {at}");
            }
            if covered && sealed {
                // Through the mount's view: EIO for the entries of the
                // damaged frame, every other entry intact.
                let fi = offs.iter().position(|&o| o == frame).unwrap();
                let (dstart, dcount) = ids[fi];
                let mut o = WalOptions::new(&work);
                o.read_only = true;
                let view = walfs::mount::View::new(Wal::new(o).unwrap(), "s", true).unwrap();
                let root = walfs::mount::view::Node::Root;
                let entries =
                    walfs::mount::view::Node::from_ino(view.lookup(root, b"entries").unwrap().ino)
                        .unwrap();
                for (id, want) in expected.iter().enumerate() {
                    let id = id as u64;
                    let got = view
                        .lookup(entries, id.to_string().as_bytes())
                        .and_then(|a| {
                            view.read(
                                walfs::mount::view::Node::from_ino(a.ino).unwrap(),
                                0,
                                0,
                                1 << 20,
                            )
                        });
                    if id >= dstart && id < dstart + dcount {
                        assert_eq!(got, Err(libc::EIO), "{name} byte {at}: damaged entry {id}");
                    } else {
                        assert_eq!(got.as_ref(), Ok(want), "{name} byte {at}: entry {id}");
                    }
                }
            }
            if covered && !sealed {
                active += 1;
                check_active_flip(&work, &expected, offs, &ids, frame, &name, at);
            }
            for policy in [CorruptionPolicy::Truncate, CorruptionPolicy::Error] {
                // Opening never panics; it either refuses with a location
                // or serves every undamaged entry.
                let mut o = opts(&work, policy);
                o.read_only = true;
                if let Ok(wal) = Wal::new(o) {
                    let next = wal.next_id("s");
                    for id in 0..next {
                        let _ = wal.get("s", id);
                    }
                }
            }
            std::fs::remove_dir_all(&work).unwrap();
            cases += 1;
        }
    }
    println!(
        "{cases} flips, {active} in the active segment opened for writing under both policies"
    );
}

/// A flip in the active segment of a cleanly closed log, opened for
/// writing: every byte was synced, so it is corruption wherever it is, the
/// last frame too (never a torn tail): the Error policy refuses with its
/// location, the Truncate policy keeps every intact entry on both sides,
/// answers the damaged ids with an error, and appends after the real end.
fn check_active_flip(
    work: &Path,
    expected: &[Vec<u8>],
    offs: &[u64],
    ids: &[(u64, u64)],
    frame: u64,
    name: &str,
    at: u64,
) {
    let fi = offs.iter().position(|&o| o == frame).unwrap();
    let (dstart, dcount) = ids[fi];
    let seg = work.join("s").join(name);
    let len = std::fs::metadata(&seg).unwrap().len();
    let ctx = format!(
        "{name} byte {at} (frame {fi}, ids {dstart}..{})",
        dstart + dcount
    );
    match Wal::new(opts(work, CorruptionPolicy::Error)) {
        Err(Error::Corruption { location, .. }) => {
            assert_eq!(
                (location.segment.as_str(), location.offset),
                (name, frame),
                "{ctx}"
            );
        }
        Err(e) => panic!("{ctx}: Error policy: {e}"),
        Ok(_) => panic!("{ctx}: Error policy opened a log with corruption"),
    }
    let wal = Wal::new(opts(work, CorruptionPolicy::Truncate)).unwrap();
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "{ctx}: nothing cut"
    );
    assert_eq!(wal.next_id("s"), expected.len() as u64, "{ctx}");
    for (id, want) in expected.iter().enumerate() {
        let id = id as u64;
        let got = wal.get("s", id);
        if id >= dstart && id < dstart + dcount {
            match got {
                Err(Error::Corruption { location, .. }) => {
                    assert_eq!(location.offset, frame, "{ctx}: damaged id {id}")
                }
                other => panic!("{ctx}: damaged id {id}: {other:?}"),
            }
        } else {
            assert_eq!(got.unwrap().as_ref(), Some(want), "{ctx}: id {id}");
        }
    }
    let next = wal.append("s", b"new").unwrap();
    assert_eq!(
        next,
        expected.len() as u64,
        "{ctx}: appends after the real end"
    );
    drop(wal);
    let wal = Wal::new(opts(work, CorruptionPolicy::Truncate)).unwrap();
    assert_eq!(wal.get("s", next).unwrap().unwrap(), b"new", "{ctx}");
    let last_old = expected.len() as u64 - 1;
    if !(dstart..dstart + dcount).contains(&last_old) {
        assert_eq!(
            wal.get("s", last_old).unwrap().as_ref(),
            Some(&expected[last_old as usize]),
            "{ctx}"
        );
    }
}

#[test]
fn every_truncation_point_of_the_active_segment_recovers() {
    let t = tempfile::tempdir().unwrap();
    let pristine = t.path().join("pristine");
    let segs = matrix_log(&pristine);
    let (seg, offs) = segs.last().unwrap();
    let len = std::fs::metadata(seg).unwrap().len();
    let name = seg.file_name().unwrap().to_owned();
    let first_id = Wal::new(WalOptions::new(&pristine))
        .unwrap()
        .segments("s")
        .last()
        .unwrap()
        .start_id;
    for cut in 0..len {
        for policy in [CorruptionPolicy::Truncate, CorruptionPolicy::Error] {
            let work = t.path().join("work");
            copy_dir(&pristine, &work);
            OpenOptions::new()
                .write(true)
                .open(work.join("s").join(&name))
                .unwrap()
                .set_len(cut)
                .unwrap();
            let wal = Wal::new(opts(&work, policy)).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let next = wal.next_id("s");
            assert!(next >= first_id, "cut at {cut}");
            let segs_now = wal.segments("s");
            let active = segs_now.last().unwrap();
            assert!(
                offs.contains(&active.len) || active.len == 0,
                "cut at {cut}: cut on a frame boundary"
            );
            assert!(active.len <= cut);
            // The cut lands at the last frame boundary at or before it:
            // every whole frame survives.
            let boundary = offs
                .iter()
                .copied()
                .chain([len])
                .filter(|&o| o <= cut)
                .max()
                .unwrap();
            assert_eq!(active.len, boundary, "cut at {cut}");
            drop(wal);
            std::fs::remove_dir_all(&work).unwrap();
        }
    }
}

/// verify counts what it checked exactly: frames and entries of batches
/// across segments, and around a damaged frame in a synced segment (the
/// scan resumes after it and goes on counting; the damaged frame's entries
/// are not counted as checked).
#[test]
fn verify_counts_every_frame_and_entry_it_checked() {
    let t = tempfile::tempdir().unwrap();
    let mut o = WalOptions::new(t.path());
    o.max_segment_size = 150;
    let wal = Wal::new(o).unwrap();
    let (mut frames, mut entries) = (0u64, 0u64);
    for i in 0..12u64 {
        let batch: Vec<Vec<u8>> = (0..1 + i % 3)
            .map(|j| format!("b{i}-{j}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        wal.append_batch("s", &refs).unwrap();
        frames += 1;
        entries += batch.len() as u64;
    }
    let segs = wal.segments("s");
    assert!(segs.len() >= 3, "{}", segs.len());
    drop(wal);
    let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    assert_eq!((report.frames, report.entries), (frames, entries));
    assert_eq!(report.segments, segs.len());
    // One frame of the first (sealed, synced) segment damaged: its entries
    // are not checked; every frame after it is.
    let first = &segs[0].path;
    let offs = frame_offsets(&std::fs::read(first).unwrap());
    assert!(offs.len() >= 3);
    let b = std::fs::read(first).unwrap();
    let at = offs[1] as usize;
    let damaged_entries = walfs::format::FrameHeader::decode(&b[at..at + 32])
        .unwrap()
        .entry_count;
    flip(first, offs[1] + 40);
    let report = walfs::verify(&RealStorage, t.path(), &mut |_, _| {}).unwrap();
    assert_eq!(report.faults.len(), 1, "{:?}", report.faults);
    assert_eq!(
        (report.frames, report.entries),
        (frames - 1, entries - damaged_entries as u64)
    );
}
