//! Byte compatibility with ironwal 0.6.9, both ways, and a golden data
//! directory written by ironwal that must read forever.

mod common;

use common::copy_dir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Expected = BTreeMap<String, Vec<(u64, Vec<u8>)>>;

fn entry(stream: &str, i: u64) -> Vec<u8> {
    // Varied sizes; every fifth is long and repetitive (LZ4 shrinks it).
    if i % 5 == 0 {
        format!("{stream}:{i}:")
            .repeat(1 + (i as usize % 97))
            .into_bytes()
    } else {
        format!("{stream} entry {i} {}", "x".repeat(i as usize % 13)).into_bytes()
    }
}

/// Writes the same workload through either engine: three streams, small
/// segments (rotation), single appends and batches, LZ4 with raw fallback,
/// and a truncation of one stream. Returns what should be readable.
fn workload(
    mut append: impl FnMut(&str, &[Vec<u8>]) -> u64,
    mut truncate: impl FnMut(&str, u64),
) -> Expected {
    let mut exp = Expected::new();
    for s in ["alpha", "beta", "gamma.v2"] {
        let mut i = 0u64;
        while i < 300 {
            let n = if i % 7 == 0 { 4 } else { 1 };
            let batch: Vec<Vec<u8>> = (i..i + n).map(|k| entry(s, k)).collect();
            let start = append(s, &batch);
            assert_eq!(start, i);
            for (k, e) in batch.into_iter().enumerate() {
                exp.entry(s.to_string())
                    .or_default()
                    .push((i + k as u64, e));
            }
            i += n;
        }
    }
    truncate("beta", 150);
    exp
}

fn ironwal_opts(root: &Path) -> ironwal::WalOptions {
    let mut o = ironwal::WalOptions::new(root);
    o.max_segment_size = 4096;
    o.compression = ironwal::CompressionType::Lz4;
    o.min_compression_size = 200;
    o
}

fn walfs_opts(root: &Path) -> walfs::WalOptions {
    let mut o = walfs::WalOptions::new(root);
    o.max_segment_size = 4096;
    o.compression = walfs::CompressionType::Lz4;
    o.min_compression_size = 200;
    o
}

fn write_with_ironwal(root: &Path) -> Expected {
    let wal = ironwal::Wal::new(ironwal_opts(root)).unwrap();
    let w2 = wal.clone();
    workload(
        |s, batch| {
            if batch.len() == 1 {
                wal.append(s, &batch[0]).unwrap()
            } else {
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                wal.append_batch(s, &refs).unwrap().start
            }
        },
        |s, id| {
            w2.truncate(s, id).unwrap();
        },
    )
}

/// Every retained entry of `exp` reads back through walfs, by get and by
/// iteration, and ids continue densely.
fn check_with_walfs(root: &Path, exp: &Expected) {
    for strategy in [walfs::ReadStrategy::StandardIo, walfs::ReadStrategy::Mmap] {
        let mut o = walfs_opts(root);
        o.read_strategy = strategy;
        let wal = walfs::Wal::new(o).unwrap();
        for (s, entries) in exp {
            let first = wal.stream_info(s).unwrap().first_id;
            let retained: Vec<&(u64, Vec<u8>)> =
                entries.iter().filter(|(id, _)| *id >= first).collect();
            if s == "beta" {
                assert!(
                    first > 0 && first <= 150,
                    "beta was truncated (first id {first})"
                );
            }
            for (id, e) in &retained {
                assert_eq!(wal.get(s, *id).unwrap().as_ref(), Some(e), "{s} {id}");
            }
            let got: Vec<(u64, Vec<u8>)> = wal
                .iter_with_ids(s, 0)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let want: Vec<(u64, Vec<u8>)> = retained.into_iter().cloned().collect();
            assert_eq!(got, want, "{s}");
        }
        let report = walfs::verify(&walfs::RealStorage, root, &mut |_, _| {}).unwrap();
        assert!(report.is_sound(), "{:?}", report.faults);
    }
}

fn frame_types(root: &Path) -> (usize, usize) {
    let (mut raw, mut lz4) = (0, 0);
    for s in std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        for f in std::fs::read_dir(s.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "wal") {
                let b = std::fs::read(f.path()).unwrap();
                let mut at = 0;
                while at + 32 <= b.len() {
                    match b[at + 20] {
                        0 => raw += 1,
                        _ => lz4 += 1,
                    }
                    at += 32 + u32::from_le_bytes(b[at + 21..at + 25].try_into().unwrap()) as usize;
                }
            }
        }
    }
    (raw, lz4)
}

#[test]
fn walfs_reads_what_ironwal_wrote() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    let exp = write_with_ironwal(&root);
    let (raw, lz4) = frame_types(&root);
    assert!(
        raw > 10 && lz4 > 10,
        "workload has both frame types ({raw} raw, {lz4} lz4)"
    );
    check_with_walfs(&root, &exp);
    // And walfs appends after ironwal's tail, densely.
    let wal = walfs::Wal::new(walfs_opts(&root)).unwrap();
    assert_eq!(wal.append("alpha", b"from walfs").unwrap(), 300);
}

#[test]
fn ironwal_reads_what_walfs_wrote() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    let exp = {
        let wal = walfs::Wal::new(walfs_opts(&root)).unwrap();
        let w2 = wal.clone();
        workload(
            |s, batch| {
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                wal.append_batch(s, &refs).unwrap().start
            },
            |s, id| {
                w2.truncate(s, id).unwrap();
            },
        )
    };
    let (raw, lz4) = frame_types(&root);
    assert!(
        raw > 10 && lz4 > 10,
        "workload has both frame types ({raw} raw, {lz4} lz4)"
    );
    let wal = ironwal::Wal::new(ironwal_opts(&root)).unwrap();
    for (s, entries) in &exp {
        let walfs_first = entries
            .iter()
            .map(|e| e.0)
            .find(|&id| wal.get(s, id).unwrap().is_some())
            .unwrap();
        for (id, e) in entries.iter().filter(|(id, _)| *id >= walfs_first) {
            assert_eq!(wal.get(s, *id).unwrap().as_ref(), Some(e), "{s} {id}");
        }
        let got: Vec<Vec<u8>> = wal
            .iter(s, walfs_first)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want: Vec<Vec<u8>> = entries
            .iter()
            .filter(|(id, _)| *id >= walfs_first)
            .map(|e| e.1.clone())
            .collect();
        assert_eq!(got, want, "{s}");
    }
    // ironwal continues the ids walfs left.
    assert_eq!(wal.append("gamma.v2", b"from ironwal").unwrap(), 300);
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ironwal-0.6.9")
}

/// The golden directory was written by ironwal 0.6.9 (set
/// WALFS_REGEN_GOLDEN=1 to write it again); it must read forever.
#[test]
fn golden_ironwal_directory_reads_forever() {
    let golden = golden_dir();
    if std::env::var_os("WALFS_REGEN_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&golden);
        write_with_ironwal(&golden);
    }
    // Work on a copy: opening may rewrite head.state or take the lock file.
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("data");
    copy_dir(&golden, &copy);
    let exp = expected_workload();
    check_with_walfs(&copy, &exp);
}

/// What `workload` appends, without an engine.
fn expected_workload() -> Expected {
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    workload(
        |s, b| {
            let n = next.entry(s.to_string()).or_default();
            let start = *n;
            *n += b.len() as u64;
            start
        },
        |_, _| {},
    )
}
