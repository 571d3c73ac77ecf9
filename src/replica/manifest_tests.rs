//! Unit tests of `manifest.rs`.
use super::*;

#[test]
fn a_manifest_round_trips_and_bad_ones_are_refused() {
    let mut m = Manifest::empty(3);
    m.streams.insert(
        "default".into(),
        StreamManifest {
            next_id: 10,
            floor: 0,
            segments: vec![SegmentManifest {
                start_id: 0,
                end_id: 10,
                len: 100,
                sealed: true,
                payload: 90,
                objects: vec![ObjectRef {
                    key: sealed_key("default", 0, 3),
                    offset: 0,
                    len: 100,
                    crc32: 7,
                    level: 0,
                }],
                times: Vec::new(),
                times_object: None,
            }],
        },
    );
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["default/00000000000000000000.e3.wal"]
    );
    let mut gap = m.clone();
    gap.streams.get_mut("default").unwrap().segments[0].objects[0].offset = 1;
    assert!(Manifest::decode(&gap.encode()).unwrap_err().contains("gap"));
    let mut escape = m.clone();
    escape.streams.get_mut("default").unwrap().segments[0].objects[0].key = "../x".into();
    assert!(Manifest::decode(&escape.encode()).is_err());
    assert!(Manifest::decode(b"{}").is_err());
}

/// What the mutation run of this file found unchecked by the suites it
/// ran: an object's own check, the root files' and retired objects'
/// rules, key names, retirement's grace, the lease fields' encoding.
#[test]
fn objects_files_retirement_and_lease_fields() {
    let o = ObjectRef {
        key: "s/a".into(),
        offset: 0,
        len: 3,
        crc32: crc32fast::hash(b"abc"),
        level: 0,
    };
    assert!(o.check(b"abc").is_ok());
    assert!(o.check(b"abd").unwrap_err().contains("does not match"));
    assert!(o.check(b"abcd").is_err());
    let seg = SegmentManifest {
        start_id: 0,
        end_id: 1,
        len: 3,
        sealed: false,
        payload: 0,
        objects: vec![
            o.clone(),
            ObjectRef {
                key: "s/b".into(),
                offset: 3,
                ..o.clone()
            },
        ],
        times: Vec::new(),
        times_object: None,
    };
    assert_eq!(seg.keys(), ["s/a", "s/b"]);
    assert_eq!(file_key("HEAD", 7, 0xab), "files/HEAD.e7.000000ab.file");

    let mut m = Manifest::empty(1);
    let file = ObjectRef {
        key: file_key("HEAD", 1, 5),
        ..o.clone()
    };
    m.files.insert("HEAD".into(), file.clone());
    assert!(Manifest::decode(&m.encode()).is_ok());
    for bad in [
        ("NOT_A_ROOT_FILE", file.clone()),
        (
            "HEAD",
            ObjectRef {
                key: "../x".into(),
                ..file.clone()
            },
        ),
        (
            "HEAD",
            ObjectRef {
                offset: 1,
                ..file.clone()
            },
        ),
    ] {
        let mut b = m.clone();
        b.files.clear();
        b.files.insert(bad.0.into(), bad.1);
        assert!(Manifest::decode(&b.encode())
            .unwrap_err()
            .contains("root file"));
    }
    let mut b = m.clone();
    b.retired.push(Retired {
        key: file.key.clone(),
        since_ms: 0,
    });
    assert!(Manifest::decode(&b.encode()).is_err());
    let mut b = m.clone();
    b.retired.push(Retired {
        key: "s/old".into(),
        since_ms: 0,
    });
    assert!(Manifest::decode(&b.encode()).is_ok());
    let mut b = m.clone();
    b.retired.push(Retired {
        key: "../outside".into(),
        since_ms: 0,
    });
    assert!(Manifest::decode(&b.encode()).is_err());

    // Retired now, deleted once the grace is over, not before.
    let grace = RETIRED_GRACE.as_millis() as u64;
    let mut r = Manifest::empty(1);
    assert!(r.retire(vec!["s/x".into()], 1000).is_empty());
    assert!(r.retire(vec![], 1000 + grace - 1).is_empty());
    assert_eq!(r.retire(vec!["s/y".into()], 1000 + grace), ["s/x"]);
    assert_eq!(r.retired.len(), 1);

    // A held lease and a released prefix are written and read back; a
    // manifest without them (an older walfs) reads as no lease.
    let mut l = Manifest::empty(2);
    l.lease_ms = 10_000;
    let text = String::from_utf8(l.encode()).unwrap();
    assert!(!text.contains("released"), "{text}");
    assert_eq!(Manifest::decode(&l.encode()).unwrap(), l);
    l.released = true;
    assert!(String::from_utf8(l.encode())
        .unwrap()
        .contains("\"released\": true"));
    assert!(Manifest::decode(&l.encode()).unwrap().released);
    let old = text.replace("\"lease_ms\": 10000,", "");
    let d = Manifest::decode(old.as_bytes()).unwrap();
    assert_eq!((d.lease_ms, d.released), (0, false));
}

/// The bounds of a segment's claims, at exactly the bound and one past
/// it; keys that would leave the prefix; the entry bytes of frames.
#[test]
fn bounds_keys_and_payloads() {
    let one = |start: u64, end: u64, len: u64, payload: u64| {
        let mut m = Manifest::empty(1);
        m.streams.insert(
            "s".into(),
            StreamManifest {
                next_id: end,
                floor: 0,
                segments: vec![SegmentManifest {
                    start_id: start,
                    end_id: end,
                    len,
                    sealed: true,
                    payload,
                    objects: vec![ObjectRef {
                        key: "s/a".into(),
                        offset: 0,
                        len,
                        crc32: 0,
                        level: 0,
                    }],
                    times: Vec::new(),
                    times_object: None,
                }],
            },
        );
        Manifest::decode(&m.encode())
    };
    // An entry takes 4 bytes at least: 10 ids in 40 bytes, not 39.
    assert!(one(5, 15, 40, 0).is_ok());
    assert!(one(5, 15, 39, 0).unwrap_err().contains("claims ids"));
    assert!(one(5, 4, 40, 0).is_err());
    assert!(one(5, 5, 0, 0).is_ok());
    // Entry bytes within the segment's bytes.
    assert!(one(0, 1, 40, 40).is_ok());
    assert!(one(0, 1, 40, 41).unwrap_err().contains("entry bytes"));

    for k in ["s/a", "s/b/c.part", "s/.hidden"] {
        assert!(valid_key(k), "{k}");
    }
    for k in ["", "/s/a", "s//a", "s/./a", "s/../a", "s/a/..", ".."] {
        assert!(!valid_key(k), "{k}");
    }

    let mut f = crate::format::encode_frame(&[b"abc", b"de"], None).unwrap();
    f.seal(0);
    let mut g = crate::format::encode_frame(&[b"fgh"], None).unwrap();
    g.seal(2);
    let both = [f.bytes.clone(), g.bytes.clone()].concat();
    assert_eq!(payload_of(&both), 8);
    assert_eq!(payload_of(&f.bytes), 5);
    assert_eq!(payload_of(&both[..f.bytes.len() + 3]), 5);
    assert_eq!(payload_of(&[]), 0);
    assert!(now_ms() > 1_700_000_000_000);
}

/// A manifest whose numbers disagree with its segments is refused,
/// with the reason: each lie a bucket was seen telling.
#[test]
fn lies_are_refused_with_their_reason() {
    let seg = |start: u64, end: u64, key: &str| SegmentManifest {
        start_id: start,
        end_id: end,
        len: 100 * (end - start),
        sealed: true,
        payload: 50 * (end - start),
        objects: vec![ObjectRef {
            key: key.into(),
            offset: 0,
            len: 100 * (end - start),
            crc32: 7,
            level: 0,
        }],
        times: Vec::new(),
        times_object: None,
    };
    let mut m = Manifest::empty(1);
    m.streams.insert(
        "s".into(),
        StreamManifest {
            next_id: 20,
            floor: 0,
            segments: vec![seg(0, 10, "s/a"), seg(10, 20, "s/b")],
        },
    );
    assert!(Manifest::decode(&m.encode()).is_ok());
    type Lie = fn(&mut Manifest);
    let lies: [(&str, Lie, &str); 9] = [
        (
            "next id far past",
            |m| m.streams.get_mut("s").unwrap().next_id = 1 << 63,
            "next id",
        ),
        (
            "out of order",
            |m| m.streams.get_mut("s").unwrap().segments.swap(0, 1),
            "listed after",
        ),
        (
            "a gap in ids",
            |m| m.streams.get_mut("s").unwrap().segments[1].start_id = 11,
            "ends at id",
        ),
        (
            "more ids than bytes",
            |m| {
                let s = m.streams.get_mut("s").unwrap();
                s.segments[1].end_id = 10_000;
                s.next_id = 10_000;
            },
            "claims ids",
        ),
        (
            "a longer segment than its object",
            |m| m.streams.get_mut("s").unwrap().segments[0].len += 5000,
            "objects hold",
        ),
        (
            "an object named twice",
            |m| m.streams.get_mut("s").unwrap().segments[1].objects[0].key = "s/a".into(),
            "named twice",
        ),
        (
            "another stream's object",
            |m| {
                let s = m.streams["s"].clone();
                let mut t = s.clone();
                for g in &mut t.segments {
                    g.objects[0].key = g.objects[0].key.replacen("s/", "t/", 1);
                }
                m.streams.insert("t".into(), t);
                m.streams.get_mut("t").unwrap().segments[0].objects[0].key = "s/a".into();
            },
            "outside the stream",
        ),
        (
            "a floor past the first segment",
            |m| m.streams.get_mut("s").unwrap().floor = 5,
            "floor",
        ),
        (
            "more entry bytes than bytes",
            |m| m.streams.get_mut("s").unwrap().segments[0].payload = 1 << 40,
            "entry bytes",
        ),
    ];
    for (what, lie, says) in lies {
        let mut bad = m.clone();
        lie(&mut bad);
        let e = Manifest::decode(&bad.encode()).unwrap_err();
        assert!(e.contains(says) && e.contains("stream"), "{what}: {e}");
    }
}

/// Marks: one at the first id shipped, then a second apart at least,
/// never more than ACTIVE_MARKS (every other one goes, the first stays).
#[test]
fn time_marks_are_a_second_apart_and_bounded() {
    let mut g = SegmentManifest::empty(10);
    g.mark_shipped(10, 5_000);
    assert!(g.times.is_empty(), "nothing new shipped");
    g.end_id = 12;
    g.mark_shipped(10, 5_000);
    assert_eq!(g.times, [(5_000, 10)]);
    g.end_id = 14;
    g.mark_shipped(12, 5_999);
    assert_eq!(g.times.len(), 1, "under a second after the last");
    g.end_id = 16;
    g.mark_shipped(14, 6_000);
    assert_eq!(g.times, [(5_000, 10), (6_000, 14)]);
    for k in 0..2 * ACTIVE_MARKS as u64 {
        g.end_id += 1;
        g.mark_shipped(g.end_id - 1, 7_000 + 1_000 * k);
        assert!(g.times.len() <= ACTIVE_MARKS);
    }
    assert!(g.times.len() > ACTIVE_MARKS / 2);
    assert_eq!(g.times[0], (5_000, 10));
    assert!(g
        .times
        .windows(2)
        .all(|w| w[0].1 < w[1].1 && w[0].0 < w[1].0));
    assert_eq!(g.times.last().unwrap().1, g.end_id - 1);
}

/// Marks outside their segment's ids or out of order, and a times object
/// that is not a sealed segment's own whole records, are refused; a good
/// one is among the keys the manifest references.
#[test]
fn time_marks_and_times_objects_are_checked() {
    let times = ObjectRef {
        key: times_key("s", 0, 1),
        offset: 0,
        len: 2 * crate::format::TIME_RECORD as u64,
        crc32: 1,
        level: 0,
    };
    let mut m = Manifest::empty(1);
    m.streams.insert(
        "s".into(),
        StreamManifest {
            next_id: 10,
            floor: 0,
            segments: vec![SegmentManifest {
                start_id: 0,
                end_id: 10,
                len: 100,
                sealed: true,
                payload: 50,
                objects: vec![ObjectRef {
                    key: sealed_key("s", 0, 1),
                    offset: 0,
                    len: 100,
                    crc32: 7,
                    level: 0,
                }],
                times: vec![(1, 0), (2, 5), (3, 10)],
                times_object: Some(times.clone()),
            }],
        },
    );
    assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(text.contains("\"times\": \"1:0 2:5 3:10\""), "{text}");
    let garbled = text.replace("1:0 2:5 3:10", "1:0 2-5");
    let e = Manifest::decode(garbled.as_bytes()).unwrap_err();
    assert!(e.contains("MS:ID"), "{e}");
    assert!(m.keys().any(|k| k == times.key));
    assert_eq!(m.streams["s"].segments[0].keys()[1], times.key);
    type Lie = fn(&mut SegmentManifest);
    let lies: [(Lie, &str); 8] = [
        (|g| g.times[1].1 = 11, "outside its ids"),
        (|g| g.times = vec![(1, 5), (2, 4)], "out of order"),
        (
            |g| g.times = vec![(1, 0); ACTIVE_MARKS + 1],
            "time marks (at most",
        ),
        (|g| g.sealed = false, "invalid times object"),
        (
            |g| g.times_object.as_mut().unwrap().len += 1,
            "invalid times object",
        ),
        (
            |g| g.times_object.as_mut().unwrap().offset = 1,
            "invalid times object",
        ),
        (
            |g| g.times_object.as_mut().unwrap().key = "t/x.times".into(),
            "invalid times object",
        ),
        (
            |g| g.times_object.as_mut().unwrap().key = g.objects[0].key.clone(),
            "named twice",
        ),
    ];
    for (i, (lie, why)) in lies.into_iter().enumerate() {
        let mut bad = m.clone();
        lie(&mut bad.streams.get_mut("s").unwrap().segments[0]);
        let e = Manifest::decode(&bad.encode()).unwrap_err();
        assert!(e.contains(why), "lie {i}: {e}");
    }
    let mut big = m.clone();
    big.streams.get_mut("s").unwrap().segments[0]
        .times_object
        .as_mut()
        .unwrap()
        .len = (MAX_TIMES_OBJECT / 24 + 1) * 24;
    let e = Manifest::decode(&big.encode()).unwrap_err();
    assert!(e.contains("invalid times object"), "{e}");
}
