//! The engine's API against the real filesystem.

use std::sync::Arc;
use std::time::{Duration, Instant};
use walfs::{CompressionType, Error, ReadStrategy, SyncMode, Wal, WalOptions};

fn opts(dir: &std::path::Path) -> WalOptions {
    WalOptions::new(dir.join("data"))
}

#[test]
fn append_get_iter_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let wal = Wal::new(opts(t.path())).unwrap();
    assert_eq!(wal.append("s", b"zero").unwrap(), 0);
    assert_eq!(wal.append_batch("s", &[b"one", b"two", b""]).unwrap(), 1..4);
    let mut tx = wal.writer("s");
    tx.add(b"four".to_vec());
    tx.add(b"five".to_vec());
    assert_eq!(tx.commit().unwrap(), 4..6);
    assert_eq!(wal.get("s", 2).unwrap().unwrap(), b"two");
    assert_eq!(wal.get("s", 3).unwrap().unwrap(), b"");
    assert_eq!(wal.get("s", 6).unwrap(), None);
    assert_eq!(wal.get("nope", 0).unwrap(), None);
    let all: Vec<Vec<u8>> = wal.iter("s", 0).unwrap().map(Result::unwrap).collect();
    assert_eq!(
        all,
        vec![&b"zero"[..], b"one", b"two", b"", b"four", b"five"]
    );
    let tail: Vec<(u64, Vec<u8>)> = wal
        .iter_with_ids("s", 4)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tail, vec![(4, b"four".to_vec()), (5, b"five".to_vec())]);
    assert_eq!(
        wal.get_batch("s", &[5, 0, 9, 1]).unwrap(),
        vec![
            Some(b"five".to_vec()),
            Some(b"zero".to_vec()),
            None,
            Some(b"one".to_vec())
        ]
    );
    let info = wal.stream_info("s").unwrap();
    assert_eq!(
        (info.first_id, info.next_id, info.durable_id, info.segments),
        (0, 6, 6, 1)
    );
}

#[test]
fn invalid_stream_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let wal = Wal::new(opts(t.path())).unwrap();
    for bad in ["", "..", "a/b", "x y"] {
        assert!(
            matches!(wal.append(bad, b"x"), Err(Error::InvalidStreamName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn rotation_by_size_and_count_and_reopen() {
    let t = tempfile::tempdir().unwrap();
    for (size, count) in [(200u64, u64::MAX), (1 << 20, 3)] {
        let dir = t.path().join(format!("{size}-{count}"));
        let mut o = opts(&dir);
        o.max_segment_size = size;
        o.max_entries_per_segment = count;
        let expected: Vec<Vec<u8>> = (0..50).map(|i| format!("entry {i}").into_bytes()).collect();
        {
            let wal = Wal::new(o.clone()).unwrap();
            for e in &expected {
                wal.append("s", e).unwrap();
            }
            assert!(wal.segments("s").len() > 5);
            for seg in wal.segments("s") {
                if count != u64::MAX {
                    assert!(seg.end_id - seg.start_id <= count);
                }
            }
        }
        for strategy in [ReadStrategy::StandardIo, ReadStrategy::Mmap] {
            let mut o = o.clone();
            o.read_strategy = strategy;
            let wal = Wal::new(o).unwrap();
            assert_eq!(wal.next_id("s"), 50);
            for (i, e) in expected.iter().enumerate() {
                assert_eq!(&wal.get("s", i as u64).unwrap().unwrap(), e);
            }
            let all: Vec<Vec<u8>> = wal.iter("s", 7).unwrap().map(Result::unwrap).collect();
            assert_eq!(all, expected[7..]);
        }
        let wal = Wal::new(o).unwrap();
        assert_eq!(wal.append("s", b"more").unwrap(), 50);
        assert_eq!(wal.get("s", 50).unwrap().unwrap(), b"more");
    }
}

#[test]
fn a_frame_that_fills_a_segment_exactly_stays_in_it() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    // Two frames of one 100-byte entry: 32 + 4 + 100 bytes each.
    o.max_segment_size = 2 * (32 + 4 + 100);
    let wal = Wal::new(o).unwrap();
    wal.append("s", &[1u8; 100]).unwrap();
    wal.append("s", &[2u8; 100]).unwrap();
    let segs = wal.segments("s");
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].len, 2 * 136);
    // The next one does not fit: a new segment.
    wal.append("s", &[3u8; 100]).unwrap();
    assert_eq!(wal.segments("s").len(), 2);
}

#[test]
fn an_entry_larger_than_a_segment_gets_one_of_its_own() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_segment_size = 1000;
    let wal = Wal::new(o).unwrap();
    for i in 0..3u8 {
        assert_eq!(wal.append("s", &[i; 5000]).unwrap(), i as u64);
    }
    let segs = wal.segments("s");
    let starts: Vec<u64> = segs.iter().map(|s| s.start_id).collect();
    assert_eq!(starts, [0, 1, 2], "{segs:?}");
    assert!(segs.iter().all(|s| s.len == 32 + 4 + 5000), "{segs:?}");
    drop(wal);
    // segments.idx (ironwal's list of segment start ids, 8 bytes each)
    // names each once: no empty segment was sealed before the first.
    let idx = std::fs::read(t.path().join("data/s/segments.idx")).unwrap();
    let ids: Vec<u64> = idx
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(ids, [0, 1, 2]);
    let wal = Wal::new(opts(t.path())).unwrap();
    for i in 0..3u8 {
        assert_eq!(wal.get("s", i as u64).unwrap(), Some(vec![i; 5000]));
    }
}

#[test]
fn a_batch_never_spans_segments() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_segment_size = 100;
    let wal = Wal::new(o).unwrap();
    let big = vec![7u8; 300];
    wal.append("s", b"a").unwrap();
    let r = wal.append_batch("s", &[&big, &big, &big]).unwrap();
    assert_eq!(r, 1..4);
    let segs = wal.segments("s");
    assert!(segs.iter().any(|s| s.start_id == 1 && s.end_id >= 4));
}

#[test]
fn truncate_frees_whole_sealed_segments_only() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_entries_per_segment = 10;
    let wal = Wal::new(o.clone()).unwrap();
    for i in 0..35u64 {
        wal.append("s", &i.to_le_bytes()).unwrap();
    }
    // 0..10, 10..20, 20..30, 30..35 (active)
    assert_eq!(wal.truncate("s", 25).unwrap(), 2);
    assert_eq!(wal.get("s", 19).unwrap(), None);
    assert_eq!(wal.get("s", 20).unwrap().unwrap(), 20u64.to_le_bytes());
    let first: Vec<(u64, Vec<u8>)> = wal
        .iter_with_ids("s", 0)
        .unwrap()
        .take(1)
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        first[0].0, 20,
        "iterating from a freed id starts at the first retained one"
    );
    // Never the active segment.
    assert_eq!(wal.truncate("s", 1000).unwrap(), 1);
    assert_eq!(wal.stream_info("s").unwrap().first_id, 30);
    assert_eq!(wal.truncate("s", 1000).unwrap(), 0);
    drop(wal);
    let wal = Wal::new(o).unwrap();
    assert_eq!(wal.stream_info("s").unwrap().first_id, 30);
    assert_eq!(wal.get("s", 34).unwrap().unwrap(), 34u64.to_le_bytes());
}

#[test]
fn archive_and_restore() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_entries_per_segment = 4;
    o.archive_path = Some(t.path().join("archive"));
    let wal = Wal::new(o.clone()).unwrap();
    for i in 0..20u64 {
        wal.append("s", &i.to_le_bytes()).unwrap();
    }
    assert_eq!(wal.truncate("s", 12).unwrap(), 3);
    assert!(t.path().join("archive/s/00000000000000000000.wal").exists());
    assert_eq!(wal.get("s", 0).unwrap(), None);
    assert_eq!(wal.restore_archived("s").unwrap(), 3);
    let all: Vec<Vec<u8>> = wal.iter("s", 0).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len(), 20);
    drop(wal);
    let wal = Wal::new(o).unwrap();
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), 0u64.to_le_bytes());
}

#[test]
fn delete_stream_then_recreate() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.block_cache_size = Some(1 << 20);
    let wal = Wal::new(o.clone()).unwrap();
    wal.append("s", b"old").unwrap();
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), b"old");
    wal.delete_stream("s").unwrap();
    assert!(!t.path().join("data/s").exists());
    assert_eq!(wal.get("s", 0).unwrap(), None);
    assert_eq!(wal.append("s", b"new").unwrap(), 0);
    assert_eq!(
        wal.get("s", 0).unwrap().unwrap(),
        b"new",
        "no stale cached frame"
    );
    // An interrupted delete is finished at the next open.
    drop(wal);
    std::fs::create_dir_all(t.path().join("data/gone#deleted")).unwrap();
    let wal = Wal::new(o).unwrap();
    assert!(!t.path().join("data/gone#deleted").exists());
    assert_eq!(wal.streams(), vec!["s".to_string()]);
}

#[test]
fn second_writer_is_locked_out() {
    let t = tempfile::tempdir().unwrap();
    let wal = Wal::new(opts(t.path())).unwrap();
    match Wal::new(opts(t.path())) {
        Err(Error::Locked { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    let mut ro = opts(t.path());
    ro.read_only = true;
    let reader = Wal::new(ro).unwrap();
    assert!(matches!(reader.append("s", b"x"), Err(Error::ReadOnly)));
    drop(wal);
    Wal::new(opts(t.path())).unwrap();
}

#[test]
fn follow_wakes_on_append_without_polling() {
    let t = tempfile::tempdir().unwrap();
    let wal = Wal::new(opts(t.path())).unwrap();
    wal.append("s", b"first").unwrap();
    assert_eq!(
        wal.wait_for("s", 1, Duration::from_millis(20)).unwrap(),
        1,
        "times out"
    );
    // 20 waits, each woken by an append made 20 ms into it: a waiter woken
    // by the append returns within milliseconds of it; one that polled
    // every P would return P/2 late on average. The median lateness is
    // held to 50 ms, which a poll of 100 ms or more cannot meet.
    let mut late = Vec::new();
    for k in 1..=20u64 {
        let w2 = wal.clone();
        let h = std::thread::spawn(move || {
            let next = w2.wait_for("s", k, Duration::from_secs(30)).unwrap();
            (next, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(20));
        let appended = Instant::now();
        wal.append("s", b"more").unwrap();
        let (next, woke) = h.join().unwrap();
        assert_eq!(next, k + 1);
        late.push(woke.saturating_duration_since(appended));
    }
    late.sort();
    assert!(late[10] < Duration::from_millis(50), "woken late: {late:?}");
}

#[test]
fn concurrent_strict_writers_get_dense_ids() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_segment_size = 4096;
    let wal = Wal::new(o.clone()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        (
                            wal.append("s", format!("{w}:{i}").as_bytes()).unwrap(),
                            format!("{w}:{i}"),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut got: Vec<(u64, String)> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (0..800).collect::<Vec<_>>()
    );
    drop(wal);
    let wal = Wal::new(o).unwrap();
    for (id, v) in got {
        assert_eq!(wal.get("s", id).unwrap().unwrap(), v.as_bytes());
    }
}

#[test]
fn compression_modes_and_block_cache() {
    let t = tempfile::tempdir().unwrap();
    for mode in [SyncMode::Strict, SyncMode::BatchOnly, SyncMode::Async] {
        let mut o = opts(&t.path().join(format!("{mode:?}")));
        o.sync_mode = mode;
        o.compression = CompressionType::Lz4;
        o.min_compression_size = 64;
        o.block_cache_size = Some(1 << 20);
        let wal = Wal::new(o.clone()).unwrap();
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(10);
        let r = wal.append_batch("s", &[&text, &text, b"tiny"]).unwrap();
        wal.append("s", b"small").unwrap();
        wal.sync("s").unwrap();
        assert_eq!(wal.get("s", r.start + 1).unwrap().unwrap(), text);
        let seg = std::fs::read(&wal.segments("s")[0].path).unwrap();
        assert_eq!(seg[20], 1, "first frame is LZ4");
        drop(wal);
        let wal = Wal::new(o).unwrap();
        assert_eq!(wal.get("s", 2).unwrap().unwrap(), b"tiny");
        assert_eq!(wal.get("s", 3).unwrap().unwrap(), b"small");
    }
}

#[test]
fn bounded_descriptor_caches_still_serve_everything() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_open_segments = 2;
    o.max_open_read_segments = 2;
    o.max_entries_per_segment = 5;
    let wal = Arc::new(Wal::new(o).unwrap());
    for round in 0..20u64 {
        for s in 0..6 {
            wal.append(&format!("s{s}"), &round.to_le_bytes()).unwrap();
        }
    }
    for s in 0..6 {
        for round in 0..20u64 {
            assert_eq!(
                wal.get(&format!("s{s}"), round).unwrap().unwrap(),
                round.to_le_bytes()
            );
        }
    }
}

#[test]
fn sealed_segment_sizes_are_known_without_a_scan() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_entries_per_segment = 10;
    let wal = Wal::new(o.clone()).unwrap();
    for i in 0..35u64 {
        wal.append("s", format!("entry {i:03}").as_bytes()).unwrap();
    }
    let truth = wal.segment_payloads("s").unwrap();
    assert_eq!(truth.iter().map(|p| p.1).sum::<u64>(), 35 * 9);
    let first = wal.segments("s")[0].path.clone();
    drop(wal);
    // Damage a payload byte of the first sealed segment, keeping its length:
    // a scan would skip the damaged frame; the recorded size does not.
    let mut b = std::fs::read(&first).unwrap();
    b[40] ^= 1;
    std::fs::write(&first, &b).unwrap();
    let wal = Wal::new(o.clone()).unwrap();
    assert_eq!(
        wal.segment_payloads("s").unwrap(),
        truth,
        "sizes come from walfs.payloads"
    );
    drop(wal);
    // Without the sidecar (segments ironwal sealed) they are counted by scan.
    b[40] ^= 1;
    std::fs::write(&first, &b).unwrap();
    std::fs::remove_file(t.path().join("data/s/walfs.payloads")).unwrap();
    let wal = Wal::new(o).unwrap();
    assert_eq!(wal.segment_payloads("s").unwrap(), truth);
}

/// `log`'s reads (entry bytes of a segment from an offset) give the
/// concatenated entries whatever the request sizes and order: sequential
/// requests resume where the last stopped, and a jump elsewhere, back or
/// forward, starts afresh.
#[test]
fn entry_bytes_read_in_any_order_and_size_match_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = WalOptions::new(dir.path());
    o.block_cache_size = Some(1 << 20);
    let wal = Wal::new(o).unwrap();
    let mut want = Vec::new();
    let mut seed = 7u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for b in 0..300 {
        let n = 1 + (next() % 40) as usize;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|i| vec![b'a' + ((b + i) % 26) as u8; (next() % 3000) as usize])
            .collect();
        for e in &batch {
            want.extend_from_slice(e);
        }
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        wal.append_batch("s", &refs).unwrap();
    }
    let read = |from: u64, max: usize| {
        let mut out = Vec::new();
        wal.read_payload("s", 0, from, max, &mut out).unwrap();
        out
    };
    // Sequential, in sizes that change every request.
    let mut at = 0usize;
    while at < want.len() {
        let max = 1 + (next() % 200_000) as usize;
        let got = read(at as u64, max);
        assert!(!got.is_empty());
        assert_eq!(got, want[at..(at + max).min(want.len())], "at {at}");
        at += got.len();
    }
    // Jumps, and sequential runs broken by them.
    for _ in 0..300 {
        let from = (next() % want.len() as u64) as usize;
        let max = 1 + (next() % 50_000) as usize;
        assert_eq!(
            read(from as u64, max),
            want[from..(from + max).min(want.len())]
        );
        let again = from + max.min(want.len() - from);
        if again < want.len() {
            assert_eq!(
                read(again as u64, 777),
                want[again..(again + 777).min(want.len())]
            );
        }
    }
}

/// A follower waiting on a stream is let go when the stream is deleted,
/// not left waiting for its timeout.
#[test]
fn a_deleted_stream_lets_its_followers_go() {
    let t = tempfile::tempdir().unwrap();
    let wal = Wal::new(opts(t.path())).unwrap();
    wal.append("s", b"x").unwrap();
    let w2 = wal.clone();
    let h = std::thread::spawn(move || {
        let start = Instant::now();
        let _ = w2.wait_for("s", 1, Duration::from_secs(60));
        start.elapsed()
    });
    std::thread::sleep(Duration::from_millis(100));
    wal.delete_stream("s").unwrap();
    let waited = h.join().unwrap();
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
}

/// The layout after an interrupted truncation or rotation, as ironwal
/// leaves it: segments.idx is rewritten before files are deleted, so a
/// segment file below its first entry is a stray (not served); and it is
/// appended to before the next segment's file is created, so a last entry
/// without a file is the active segment still to create.
#[test]
fn strays_below_the_index_and_an_uncreated_last_segment() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path());
    o.max_entries_per_segment = 10;
    let dir = t.path().join("data/s");
    let wal = Wal::new(o.clone()).unwrap();
    for i in 0..30u64 {
        wal.append("s", format!("e{i}").as_bytes()).unwrap();
    }
    let first = std::fs::read(dir.join("00000000000000000000.wal")).unwrap();
    assert_eq!(wal.truncate("s", 10).unwrap(), 1);
    drop(wal);
    // The truncation was cut short: its first file is still there.
    std::fs::write(dir.join("00000000000000000000.wal"), &first).unwrap();
    let wal = Wal::new(o.clone()).unwrap();
    assert_eq!(wal.first_id("s"), 10);
    assert_eq!(wal.get("s", 5).unwrap(), None);
    assert_eq!(wal.get("s", 15).unwrap().unwrap(), b"e15");
    let starts: Vec<u64> = wal.segments("s").iter().map(|g| g.start_id).collect();
    assert_eq!(starts[0], 10, "{starts:?}");
    drop(wal);
    // A rotation cut short: the index names the next segment, its file is
    // not there yet.
    let f30 = dir.join(format!("{:020}.wal", 30));
    if f30.exists() {
        assert_eq!(std::fs::metadata(&f30).unwrap().len(), 0);
        std::fs::remove_file(&f30).unwrap();
    }
    let mut ids: Vec<u64> = starts.iter().copied().filter(|&s| s < 30).collect();
    assert_eq!(ids, [10, 20]);
    ids.push(30);
    std::fs::write(
        dir.join("segments.idx"),
        walfs::format::segments_idx_encode(&ids),
    )
    .unwrap();
    let wal = Wal::new(o).unwrap();
    // The open finishes the rotation: the segment is made, the index kept.
    assert!(f30.exists());
    assert_eq!(wal.segments("s").last().unwrap().start_id, 30);
    assert_eq!(wal.append("s", b"e30").unwrap(), 30);
    assert_eq!(wal.segments("s").last().unwrap().start_id, 30);
    assert!(dir.join(format!("{:020}.wal", 30)).exists());
    assert_eq!(wal.get("s", 29).unwrap().unwrap(), b"e29");
}
