//! Any bytes as the active segment of a stream: open (both policies), read
//! every entry, iterate, verify. Nothing may panic or allocate past the
//! file's size and the fixed bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;
use walfs::{CorruptionPolicy, SimDisk, Storage, Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::with_root(Path::new("/f"));
    disk.create_dir(Path::new("/f/data/s")).unwrap();
    let f = disk.open(Path::new("/f/data/s/00000000000000000000.wal"), true).unwrap();
    f.write_all_at(data, 0).unwrap();
    let _ = walfs::verify(&disk, Path::new("/f/data"), &mut |_, _| {});
    for policy in [CorruptionPolicy::Truncate, CorruptionPolicy::Error] {
        let mut o = WalOptions::new("/f/data");
        o.on_corruption = policy;
        o.read_only = true;
        let Ok(wal) = Wal::with_storage(o, Arc::new(disk.clone())) else { continue };
        let next = wal.next_id("s");
        for id in 0..next.min(256) {
            let _ = wal.get("s", id);
        }
        for r in wal.iter("s", 0).unwrap().take(256) {
            if r.is_err() {
                break;
            }
        }
        let _ = wal.segment_payloads("s");
    }
});
