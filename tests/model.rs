//! A model test: random operations against the log and against a
//! `Vec<Vec<u8>>`, which must agree after every step, across reopens.

use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;
use walfs::{CompressionType, ReadStrategy, SimDisk, SyncMode, Wal, WalOptions};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Batch(Vec<Vec<u8>>),
    Get(u16),
    Iter(u16),
    Truncate(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        4 => bytes.clone().prop_map(Op::Append),
        2 => proptest::collection::vec(bytes, 1..6).prop_map(Op::Batch),
        3 => any::<u16>().prop_map(Op::Get),
        1 => any::<u16>().prop_map(Op::Iter),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
    ]
}

fn options(lz4: bool, mmap: bool) -> WalOptions {
    let mut o = WalOptions::new("/m/data");
    o.sync_mode = SyncMode::Async;
    o.max_segment_size = 700;
    o.max_entries_per_segment = 9;
    o.block_cache_size = Some(4096);
    if lz4 {
        o.compression = CompressionType::Lz4;
        o.min_compression_size = 32;
    }
    if mmap {
        o.read_strategy = ReadStrategy::Mmap;
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vec(ops in proptest::collection::vec(op(), 1..60), lz4 in any::<bool>(), mmap in any::<bool>()) {
        let disk = SimDisk::with_root(Path::new("/m"));
        let open = || Wal::with_storage(options(lz4, mmap), Arc::new(disk.clone())).unwrap();
        let mut wal = open();
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut first = 0u64;
        for op in ops {
            match op {
                Op::Append(e) => {
                    prop_assert_eq!(wal.append("s", &e).unwrap(), model.len() as u64);
                    model.push(e);
                }
                Op::Batch(b) => {
                    let refs: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
                    let r = wal.append_batch("s", &refs).unwrap();
                    prop_assert_eq!(r, model.len() as u64..(model.len() + b.len()) as u64);
                    model.extend(b);
                }
                Op::Get(i) => {
                    let id = i as u64 % (model.len() as u64 + 2);
                    let want = (id >= first).then(|| model.get(id as usize).cloned()).flatten();
                    prop_assert_eq!(wal.get("s", id).unwrap(), want);
                }
                Op::Iter(i) => {
                    let start = i as u64 % (model.len() as u64 + 1);
                    let got: Vec<Vec<u8>> = wal.iter("s", start).unwrap().map(Result::unwrap).collect();
                    let from = start.max(first) as usize;
                    prop_assert_eq!(&got[..], &model[from.min(model.len())..]);
                }
                Op::Truncate(i) => {
                    let safe = i as u64 % (model.len() as u64 + 1);
                    wal.truncate("s", safe).unwrap();
                    let now = wal.stream_info("s").map_or(0, |s| s.first_id);
                    prop_assert!(now >= first);
                    prop_assert!(now <= safe.max(first), "freed past the safe id: {} > {}", now, safe);
                    first = now;
                }
                Op::Reopen => {
                    drop(wal);
                    wal = open();
                    prop_assert_eq!(wal.next_id("s"), model.len() as u64);
                }
            }
        }
        let got: Vec<(u64, Vec<u8>)> = wal.iter_with_ids("s", 0).unwrap().map(Result::unwrap).collect();
        let want: Vec<(u64, Vec<u8>)> = model.into_iter().enumerate().skip(first as usize).map(|(i, e)| (i as u64, e)).collect();
        prop_assert_eq!(got, want);
    }
}
