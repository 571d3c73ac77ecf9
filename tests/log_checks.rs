//! `log` read again does not compute a sealed segment's crcs again: each
//! of its frames is checked once while open (one checked-prefix offset
//! per segment), and a damaged frame is never counted as checked, so
//! every read that reaches it fails. Counted with the process-wide
//! `frames_checked` metric, through the mount's view (no FUSE), so this
//! file holds one test.

use walfs::mount::tree::Node;
use walfs::mount::View;
use walfs::{Wal, WalOptions};

/// A read-only view of the log in `dir`, as the mount has.
fn view(dir: &std::path::Path) -> View {
    let mut o = WalOptions::new(dir);
    o.read_only = true;
    View::new(Wal::new(o).unwrap(), "s", true).unwrap()
}

/// Reads the whole of `log` in 1 MiB requests: the bytes served, and the
/// errno of the read that failed, if one did.
fn read_log(v: &View) -> (Vec<u8>, Option<i32>) {
    let log = Node::from_ino(v.lookup(Node::Root, b"log").unwrap().ino).unwrap();
    let h = v.open(log, true, false).unwrap();
    let mut got = Vec::new();
    let failed = loop {
        match v.read(log, h.fh, got.len() as u64, 1 << 20) {
            Ok(piece) if piece.is_empty() => break None,
            Ok(piece) => got.extend_from_slice(&piece),
            Err(e) => break Some(e),
        }
    };
    v.release(h.fh);
    (got, failed)
}

fn checked() -> u64 {
    walfs::metrics::global().frames_checked.get()
}

#[test]
fn log_read_again_checks_only_what_it_has_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    // 64 frames of 64 KiB (656 lines of 100 bytes) over 1 MiB segments.
    let line = format!("{}\n", "x".repeat(99));
    let batch: Vec<&[u8]> = (0..656).map(|_| line.as_bytes()).collect();
    let frames = 64u64;
    let mut want = Vec::new();
    {
        let mut o = WalOptions::new(&clean);
        o.max_segment_size = 1 << 20;
        o.sync_mode = walfs::SyncMode::Async;
        let wal = Wal::new(o).unwrap();
        for _ in 0..frames {
            wal.append_batch("s", &batch).unwrap();
            want.extend_from_slice(&batch.concat());
        }
    }
    let mut segs: Vec<_> = std::fs::read_dir(clean.join("s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{segs:?}");
    let sizes: Vec<u64> = segs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    let frame_bytes = sizes.iter().sum::<u64>() / frames;
    let active = *sizes.last().unwrap();
    assert_eq!(active % frame_bytes, 0, "frames of one size: {sizes:?}");
    let active_frames = active / frame_bytes;
    assert!(active_frames >= 1);

    let v = view(&clean);
    let c0 = checked();
    let (got, failed) = read_log(&v);
    assert!(failed.is_none() && got == want, "the first read");
    let first = checked() - c0;
    let c0 = checked();
    let (got, failed) = read_log(&v);
    assert!(failed.is_none() && got == want, "the second read");
    let again = checked() - c0;
    println!("{frames} frames: {first} crcs computed by the first read, {again} by the second");
    assert!(first >= frames, "{first} frames checked of {frames}");
    // Only the active segment's frames are checked again, all of them.
    assert_eq!(
        again, active_frames,
        "read again: frames checked, against the active segment's"
    );

    // A damaged frame in a sealed segment: both reads fail where it is,
    // and it is checked again each time.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir_all(damaged.join("s")).unwrap();
    for e in std::fs::read_dir(clean.join("s")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, damaged.join("s").join(p.file_name().unwrap())).unwrap();
    }
    let victim = damaged.join("s").join(segs[1].file_name().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let v = view(&damaged);
    let (got1, failed1) = read_log(&v);
    let c0 = checked();
    let (got2, failed2) = read_log(&v);
    assert_eq!(failed1, Some(libc::EIO), "the first read past the damage");
    assert_eq!(failed2, Some(libc::EIO), "the second read past the damage");
    assert!(got1 == got2, "the two reads served different bytes");
    assert!(got1.len() < want.len() && want.starts_with(&got1));
    assert!(checked() > c0, "the damaged frame was not checked again");
}
