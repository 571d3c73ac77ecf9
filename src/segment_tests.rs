//! Unit tests of segment.rs: what a decoded frame shares with its window.
use super::*;
use crate::format::encode_frame;
use crate::storage::{RealStorage, Storage};

/// A frame that keeps the window's buffer (instead of a copy) keeps
/// its bytes when the window reads on into a new buffer, and frames
/// small beside the buffer are copied.
#[test]
fn a_shared_frame_keeps_its_bytes_when_the_window_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg");
    let big: Vec<Vec<u8>> = (0..200u32).map(|i| vec![(i % 251) as u8; 5000]).collect();
    let small: Vec<&[u8]> = vec![b"tiny"];
    let mut f1 = encode_frame(&big.iter().map(Vec::as_slice).collect::<Vec<_>>(), None).unwrap();
    f1.seal(0);
    let mut f2 = encode_frame(&small, None).unwrap();
    f2.seal(200);
    let mut f3 = encode_frame(&big.iter().map(Vec::as_slice).collect::<Vec<_>>(), None).unwrap();
    f3.seal(201);
    let file = [f1.bytes.clone(), f2.bytes.clone(), f3.bytes.clone()].concat();
    std::fs::write(&path, &file).unwrap();
    let h = Arc::new(ReadHandle::File(RealStorage.open(&path, false).unwrap()));
    let mut win = Window::new(h, file.len() as u64, 4096).exact();
    let h1 = win.header(0).unwrap();
    let d1 = win.frame(0, &h1).unwrap();
    assert!(
        Arc::ptr_eq(d1.held_buffer(), &win.buf),
        "the big frame shares the buffer"
    );
    let off2 = h1.frame_len();
    let h2 = win.header(off2).unwrap();
    let d2 = win.frame(off2, &h2).unwrap();
    let off3 = off2 + h2.frame_len();
    let h3 = win.header(off3).unwrap();
    let d3 = win.frame(off3, &h3).unwrap();
    assert!(
        !Arc::ptr_eq(d3.held_buffer(), d1.held_buffer()),
        "read on into a new buffer"
    );
    let want: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    assert_eq!(d1.entries().collect::<Vec<_>>(), want);
    assert_eq!(d2.entries().collect::<Vec<_>>(), small);
    assert_eq!(d3.entries().collect::<Vec<_>>(), want);
    // The payload (a length prefix and 4 bytes), a span, and 64.
    assert_eq!(d2.weight(), 8 + 8 + 64, "a small frame is a copy of itself");
}
