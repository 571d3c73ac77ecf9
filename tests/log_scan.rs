//! A `log` scan keeps only the frame each read stopped in (the stream's
//! cursor keeps it for the next read), not every frame it passes: the
//! block cache keeps what readers of single entries put there, and the
//! scan's read buffers go back to the pool instead of each read taking
//! fresh memory (page faults were a quarter of the daemon's CPU on a first
//! `cat log`). Counted in bytes read (`rchar`) and page faults of this
//! process, through the mount's view (no FUSE), so this file holds one
//! test.

mod common;

use common::rchar;
use walfs::mount::tree::Node;
use walfs::mount::View;
use walfs::{Wal, WalOptions};

/// Minor page faults of this process so far.
fn minflt() -> i64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_minflt
}

/// Reads the whole of `log` into `got` (cleared first) in 1 MiB requests.
fn read_log(v: &View, got: &mut Vec<u8>) {
    got.clear();
    let log = Node::from_ino(v.lookup(Node::Root, b"log").unwrap().ino).unwrap();
    let h = v.open(log, true, false).unwrap();
    loop {
        let piece = v.read(log, h.fh, got.len() as u64, 1 << 20).unwrap();
        if piece.is_empty() {
            break;
        }
        got.extend_from_slice(&piece);
    }
    v.release(h.fh);
}

#[test]
fn a_log_scan_neither_evicts_the_block_cache_nor_takes_fresh_memory() {
    let dir = tempfile::tempdir().unwrap();
    // `cat big >> append`'s shape: 128 KiB frames of 100-byte lines, 32 MiB
    // over several segments: eight times the block cache below.
    let want = common::write_cat_shaped_log(dir.path());
    let line = format!("{}\n", "x".repeat(99));
    let open = |cache: u64| {
        let mut o = WalOptions::new(dir.path());
        o.read_only = true;
        o.block_cache_size = Some(cache);
        let wal = Wal::new(o).unwrap();
        let v = View::new(wal.clone(), "s", true).unwrap();
        (wal, v)
    };
    let mut got = Vec::with_capacity(want.len());

    // A block cache of 4 MiB and a reader of one entry: its frame is
    // cached, a second read reads nothing of the frame's 128 KiB (reading
    // /proc/self/io itself counts some 120 bytes).
    let (wal, v) = open(4 << 20);
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), line.as_bytes());
    let before = rchar();
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), line.as_bytes());
    assert!(rchar() - before < 4096, "entry 0 was not cached");
    // Two whole scans evict nothing: entry 0 is still served from the
    // cache.
    for _ in 0..2 {
        read_log(&v, &mut got);
        assert!(got == want, "a scan differs from what was written");
    }
    let before = rchar();
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), line.as_bytes());
    let read = rchar() - before;
    assert!(
        read < 4096,
        "a log scan evicted the block cache (entry 0's frame was read again: {read} bytes)"
    );
    drop((wal, v));

    // The mount's 64 MiB block cache, larger than the log, on its first
    // scan: frames put in the cache would hold 32 MiB of read buffers, all
    // fresh memory (8,192 pages); kept by the cursor, the few buffers the
    // pool holds serve the whole scan.
    let (_wal, v) = open(64 << 20);
    let faults = minflt();
    read_log(&v, &mut got);
    let faults = minflt() - faults;
    assert!(got == want, "the scan differs from what was written");
    println!("page faults during a first 32 MiB scan: {faults}");
    assert!(
        faults < 1024,
        "a 32 MiB scan took {faults} fresh pages: its read buffers are not reused"
    );
}
