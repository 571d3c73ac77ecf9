//! Reading `log` touches each segment byte about once: a request resumes
//! where the last one stopped, a frame longer than the first read is not
//! read twice, and nothing is read ahead that the next request would read
//! again. Counted in bytes this process read (`rchar` in /proc/self/io),
//! through the mount's view (no FUSE), so this file holds one test.

mod common;

use common::rchar;
use walfs::mount::tree::Node;
use walfs::mount::View;
use walfs::{Wal, WalOptions};

#[test]
fn log_reads_touch_each_segment_byte_about_once() {
    let dir = tempfile::tempdir().unwrap();
    // `cat big >> append`'s shape: 128 KiB writes of 100-byte lines, one
    // frame each, over several segments.
    let want = common::write_cat_shaped_log(dir.path());
    let segment_bytes: u64 = std::fs::read_dir(dir.path().join("s"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    for size in [4096u32, 7 << 10, 128 << 10, 1 << 20, 3 << 20] {
        let mut o = WalOptions::new(dir.path());
        o.read_only = true;
        let v = View::new(Wal::new(o).unwrap(), "s", true).unwrap();
        let log = Node::from_ino(v.lookup(Node::Root, b"log").unwrap().ino).unwrap();
        let h = v.open(log, true, false).unwrap();
        let before = rchar();
        let mut got = Vec::with_capacity(want.len());
        loop {
            let piece = v.read(log, h.fh, got.len() as u64, size).unwrap();
            if piece.is_empty() {
                break;
            }
            got.extend_from_slice(&piece);
        }
        let read = rchar() - before;
        assert!(got == want, "{size}-byte requests: log differs");
        let per = read as f64 / want.len() as f64;
        println!(
            "{size}-byte requests: {per:.3} bytes read per byte served (segments hold {:.3})",
            segment_bytes as f64 / want.len() as f64
        );
        // The target is 1.1; the entries' length prefixes alone are 1.04.
        assert!(
            per <= 1.1,
            "{size}-byte requests: {per:.3} bytes read per byte"
        );
    }
}
