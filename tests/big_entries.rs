//! Reading one large entry costs in proportion to its size, whatever the
//! block cache's size: the mount reads an entry request by request, and a
//! frame too large for the cache used to be read and decoded again for
//! every request (a 64 MiB entry took 13 s through a mount with a 1 MiB
//! cache). Now it is read twice: once, through a bounded buffer, to check
//! its crc, and once where each request asks; it is never held whole. Counted in bytes this process read (`rchar` in /proc/self/io),
//! so this file holds one test: nothing else reads meanwhile.

mod common;

use common::rchar;
use walfs::mount::source::LogSource;
use walfs::{Wal, WalOptions};

#[test]
fn a_large_entry_costs_twice_its_size_in_reads_whatever_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let entry: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    {
        let wal = Wal::new(WalOptions::new(dir.path())).unwrap();
        wal.append("s", &entry).unwrap();
    }
    for cache in [Some(1 << 20), None, Some(64 << 20)] {
        let mut o = WalOptions::new(dir.path());
        o.block_cache_size = cache;
        o.read_only = true;
        let wal = Wal::new(o).unwrap();
        let before = rchar();
        let mut got = Vec::with_capacity(entry.len());
        let chunk = 128 << 10;
        while got.len() < entry.len() {
            let piece = LogSource::read_entry(&wal, "s", 0, got.len() as u64, chunk)
                .unwrap()
                .unwrap();
            got.extend_from_slice(&piece);
        }
        let read = rchar() - before;
        assert!(got == entry, "cache {cache:?}: the entry read back differs");
        // 128 requests; re-reading the frame for each would be 128x, and
        // each request reads a header's worth (8 KiB) to find the frame.
        assert!(
            read < 2 * entry.len() as u64 + 128 * 9 * 1024,
            "cache {cache:?}: read {read} bytes of segment for a {} byte entry",
            entry.len()
        );
    }
}
