//! The standby's apply, against a bucket in memory (`Bucket::in_memory`).

use super::*;
use crate::replica::manifest::{ObjectRef, SegmentManifest, StreamManifest, FORMAT, VERSION};

/// A primary's log of 30 entries over several small segments.
fn primary(dir: &std::path::Path) -> Vec<crate::SegmentInfo> {
    let mut o = crate::WalOptions::new(dir);
    o.max_segment_size = 200;
    let wal = Wal::new(o).unwrap();
    for i in 0..30u64 {
        wal.append("s", format!("entry {i:02}").as_bytes()).unwrap();
    }
    wal.segments("s")
}

/// One frame of the primary: one "entry NN" each.
const FRAME: u64 = crate::format::HEADER_SIZE as u64 + 4 + 8;

/// The bucket's record of `segs`, each segment in objects of `per`
/// frames, the last one cut to `last_len` bytes (what was shipped of
/// the active segment); the objects, by key.
fn shipped(
    segs: &[crate::SegmentInfo],
    per: u64,
    last_len: u64,
) -> (Manifest, Vec<(String, Vec<u8>)>) {
    let mut objects = Vec::new();
    let mut segments = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let bytes = std::fs::read(&s.path).unwrap();
        let len = if i + 1 == segs.len() { last_len } else { s.len };
        let mut refs = Vec::new();
        let mut at = 0;
        while at < len {
            let n = (per * FRAME).min(len - at);
            let body = bytes[at as usize..(at + n) as usize].to_vec();
            let key = format!("s/{}.{at}.{n}.part", s.start_id);
            refs.push(ObjectRef {
                key: key.clone(),
                offset: at,
                len: n,
                crc32: crc32fast::hash(&body),
                level: 0,
            });
            objects.push((key, body));
            at += n;
        }
        segments.push(SegmentManifest {
            start_id: s.start_id,
            end_id: s.start_id + len / FRAME,
            len,
            sealed: i + 1 < segs.len(),
            payload: 0,
            objects: refs,
            times: Vec::new(),
            times_object: None,
        });
    }
    let m = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        epoch: 1,
        writer: "test".into(),
        updated_ms: 0,
        lease_ms: 0,
        released: false,
        streams: [(
            "s".to_string(),
            StreamManifest {
                next_id: segments.last().map_or(0, |g| g.end_id),
                floor: 0,
                segments,
            },
        )]
        .into(),
        files: Default::default(),
        retired: Vec::new(),
    };
    (m, objects)
}

fn applier(dir: &std::path::Path, objects: &[(String, Vec<u8>)]) -> Applier {
    let mut o = crate::WalOptions::new(dir);
    o.standby = true;
    let objects: Vec<(&str, Vec<u8>)> = objects
        .iter()
        .map(|(k, b)| (k.as_str(), b.clone()))
        .collect();
    Applier {
        wal: Wal::new(o).unwrap(),
        bucket: Bucket::in_memory(&objects),
        opts: ReplicaOptions::new("s3://memory/p"),
        shared: Arc::new(Shared::new()),
    }
}

fn entries(wal: &Wal) -> Vec<String> {
    let next = wal.stream_info("s").map_or(0, |i| i.next_id);
    (0..next)
        .map(|id| String::from_utf8(wal.get("s", id).unwrap().unwrap()).unwrap())
        .collect()
}

fn want(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("entry {i:02}")).collect()
}

#[test]
fn a_standby_applies_what_the_bucket_adds_once_and_in_order() {
    let p = tempfile::tempdir().unwrap();
    let segs = primary(p.path());
    assert!(segs.len() >= 4, "{segs:?}");
    let n = segs.len();
    let last = &segs[n - 1];
    // First the sealed segments but the last two, and the first frame of
    // the one after (shipped while it was active), in objects of two
    // frames.
    let (m1, mut objects) = shipped(&segs[..n - 2], 2, FRAME);
    // Then everything: the rest of that segment and the ones after.
    let (m2, more) = shipped(&segs, 2, last.len);
    objects.extend(more);
    let s = tempfile::tempdir().unwrap();
    let a = applier(s.path(), &objects);
    a.apply(&m1).unwrap();
    let first = segs[n - 3].start_id + 1;
    assert_eq!(entries(&a.wal), want(first));
    a.apply(&m2).unwrap();
    assert_eq!(entries(&a.wal), want(30), "applied twice or out of order");
    // The same manifest again adds nothing.
    a.apply(&m2).unwrap();
    assert_eq!(entries(&a.wal), want(30));
    // Local bytes are the primary's, byte for byte.
    for (g, l) in segs.iter().zip(a.wal.segments("s")) {
        assert_eq!(
            std::fs::read(&g.path).unwrap(),
            std::fs::read(&l.path).unwrap()
        );
    }
}

#[test]
fn a_standby_refuses_a_bucket_with_a_gap_or_that_does_not_continue_it() {
    let p = tempfile::tempdir().unwrap();
    let segs = primary(p.path());
    let n = segs.len();
    let (m, objects) = shipped(&segs, 1, segs[n - 1].len);
    // An object missing inside a segment: a gap, nothing applied past it.
    let mut gap = m.clone();
    let g = &mut gap.streams.get_mut("s").unwrap().segments[1];
    g.objects.remove(1);
    let s = tempfile::tempdir().unwrap();
    let a = applier(s.path(), &objects);
    let e = a.apply(&gap).unwrap_err().to_string();
    assert!(e.contains("has a gap at byte"), "{e}");
    assert_eq!(entries(&a.wal), want(segs[1].start_id + 1));
    // A segment missing between two: the next does not continue the copy.
    let mut skip = m.clone();
    skip.streams.get_mut("s").unwrap().segments.remove(1);
    let s = tempfile::tempdir().unwrap();
    let a = applier(s.path(), &objects);
    let e = a.apply(&skip).unwrap_err().to_string();
    assert!(e.contains("does not continue this copy"), "{e}");
    assert_eq!(entries(&a.wal), want(segs[1].start_id));
    // An empty segment (an active one with nothing shipped yet) is
    // skipped, not an error.
    let mut empty = m.clone();
    let segments = &mut empty.streams.get_mut("s").unwrap().segments;
    let next = segments.last().unwrap().end_id;
    segments.push(SegmentManifest::empty(next));
    let s = tempfile::tempdir().unwrap();
    let a = applier(s.path(), &objects);
    a.apply(&empty).unwrap();
    assert_eq!(entries(&a.wal), want(30));
}

#[test]
fn a_standby_takes_root_files_that_differ_and_the_marks_of_what_it_applied() {
    let p = tempfile::tempdir().unwrap();
    let segs = primary(p.path());
    let (mut m, mut objects) = shipped(&segs, 3, segs[segs.len() - 1].len);
    // When ids were shipped: marks in the first two segments.
    let s1 = segs[1].start_id;
    let marks = [(1_000, 0), (2_000, 3), (3_000, s1), (4_000, s1 + 2)];
    let stream = m.streams.get_mut("s").unwrap();
    stream.segments[0].times = marks[..2].to_vec();
    stream.segments[1].times = marks[2..].to_vec();
    // A sharded log's root file, twice: the second version differs.
    let file = |body: &[u8]| ObjectRef {
        key: format!("files/shards.{:08x}", crc32fast::hash(body)),
        offset: 0,
        len: body.len() as u64,
        crc32: crc32fast::hash(body),
        level: 0,
    };
    let (v1, v2) = (b"4\n".to_vec(), b"8\n".to_vec());
    objects.push((file(&v1).key, v1.clone()));
    objects.push((file(&v2).key, v2.clone()));
    let name = crate::sharded::SHARDS_FILE;
    m.files.insert(name.into(), file(&v1));
    let s = tempfile::tempdir().unwrap();
    let a = applier(s.path(), &objects);
    a.apply(&m).unwrap();
    let root = a.wal.root().to_path_buf();
    assert_eq!(std::fs::read(root.join(name)).unwrap(), v1);
    let recorded = crate::format::time_records_decode(
        &std::fs::read(root.join("s").join(crate::format::TIMES)).unwrap(),
    );
    assert_eq!(
        recorded,
        marks.to_vec(),
        "the applied ids' marks, all of them"
    );
    // The bucket's file changed: the copy's is replaced.
    m.files.insert(name.into(), file(&v2));
    a.apply(&m).unwrap();
    assert_eq!(std::fs::read(root.join(name)).unwrap(), v2);
}
