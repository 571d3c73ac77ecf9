//! The bucket is less trusted than the disk. A real manifest, shipped by a
//! real writer, is mutated (every field of every kind: lengths, crcs, ids,
//! order, names, sizes, duplicates, retired objects, the bytes themselves),
//! put under a prefix of its own beside the real objects, and everything
//! that reads a bucket runs on it: `restore`, `verify`, a follower reading
//! every entry and segment, and the CLI's `cat` and `stat`. Each, within a
//! time bound: no panic or abort, no hang, no write outside DATA or the
//! cache, memory bounded; either a right result or a one-line error.

mod common;

use common::s3::{aws_env, S3Server};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use walfs::mount::source::LogSource;
use walfs::replica::follow::{BucketLog, FollowOptions};
use walfs::{Wal, WalOptions};

/// The server, and a log shipped to `orig`: its manifest and objects.
struct World {
    s3: S3Server,
    manifest: Value,
    objects: Vec<(String, Vec<u8>)>,
    entries: Vec<Vec<u8>>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        // The server dies with the thread that started it (PDEATHSIG): a
        // thread of its own that lives as long as the tests.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(S3Server::start()).unwrap();
            loop {
                std::thread::park();
            }
        });
        let s3 = rx.recv().unwrap();
        s3.create_bucket("hostile");
        let dir = tempfile::tempdir().unwrap();
        let mut r = common::replica_options("s3://hostile/orig", &s3.endpoint());
        r.interval = Duration::from_millis(20);
        let mut o = WalOptions::new(dir.path().join("data"));
        o.max_segment_size = 400;
        o.replicate = Some(r);
        let wal = Wal::new(o).unwrap();
        let mut entries = Vec::new();
        for i in 0..30u64 {
            let e = format!("entry {i:02} {}", "x".repeat(i as usize % 7)).into_bytes();
            wal.append("s", &e).unwrap();
            entries.push(e);
            if i % 3 == 0 {
                // Rounds of a few entries: parts, and merges of parts.
                common::eventually("a round", 20, || {
                    wal.stream_info("s")
                        .unwrap()
                        .replication
                        .unwrap()
                        .replicated_id
                        == i + 1
                });
            }
        }
        wal.append("t", b"other stream").unwrap();
        drop(wal);
        let manifest: Value =
            serde_json::from_slice(&s3.get("hostile", "orig/manifest.json")).unwrap();
        let objects = s3
            .keys("hostile")
            .into_iter()
            .filter_map(|k| k.strip_prefix("orig/").map(str::to_owned))
            .filter(|k| k != "manifest.json")
            .map(|k| {
                let b = s3.get("hostile", &format!("orig/{k}"));
                (k, b)
            })
            .collect();
        World {
            s3,
            manifest,
            objects,
            entries,
        }
    })
}

/// One way to lie.
#[derive(Debug, Clone)]
enum Lie {
    /// A number of a segment (`field`) set to `value`.
    Segment(usize, &'static str, u64),
    /// A number of an object of a segment.
    Object(usize, usize, &'static str, u64),
    /// The stream's next_id or floor.
    Stream(&'static str, u64),
    /// A segment and its last object both longer than the object is.
    Longer(usize, u64),
    /// Two segments swapped.
    Swap(usize, usize),
    /// A segment listed twice.
    Duplicate(usize),
    /// A segment left out.
    Drop(usize),
    /// An object's key: another's, outside the prefix, or missing.
    Key(usize, usize, u8),
    /// The stream copied under `n` more names, objects and all.
    Copies(usize),
    /// A live object listed as retired.
    RetireLive(usize),
    /// The sealed flag flipped.
    Sealed(usize),
    /// The manifest's bytes cut at a point, or padded past the bound.
    Bytes(u8, usize),
}

fn segs(m: &mut Value) -> &mut Vec<Value> {
    m["streams"]["s"]["segments"].as_array_mut().unwrap()
}

fn apply(m: &mut Value, lie: &Lie) -> Option<Vec<u8>> {
    let n = segs(m).len();
    match *lie {
        Lie::Segment(i, f, v) => segs(m)[i % n][f] = v.into(),
        Lie::Object(i, j, f, v) => {
            let o = segs(m)[i % n]["objects"].as_array_mut().unwrap();
            let k = o.len();
            o[j % k][f] = v.into();
        }
        Lie::Stream(f, v) => m["streams"]["s"][f] = v.into(),
        Lie::Longer(i, extra) => {
            let g = &mut segs(m)[i % n];
            let len = g["len"].as_u64().unwrap();
            g["len"] = len.saturating_add(extra).into();
            let o = g["objects"].as_array_mut().unwrap().last_mut().unwrap();
            let olen = o["len"].as_u64().unwrap();
            o["len"] = olen.saturating_add(extra).into();
        }
        Lie::Swap(a, b) => segs(m).swap(a % n, b % n),
        Lie::Duplicate(i) => {
            let g = segs(m)[i % n].clone();
            segs(m).insert(i % n, g);
        }
        Lie::Drop(i) => {
            segs(m).remove(i % n);
        }
        Lie::Key(i, j, how) => {
            let other = segs(m)[(i + 1) % n]["objects"][0]["key"].clone();
            let o = segs(m)[i % n]["objects"].as_array_mut().unwrap();
            let k = o.len();
            o[j % k]["key"] = match how % 4 {
                0 => other,
                1 => "../../etc/passwd".into(),
                2 => "s/no-such-object.part".into(),
                _ => "t/00000000000000000000.e1.wal".into(),
            };
        }
        Lie::Copies(c) => {
            let s = m["streams"]["s"].clone();
            for i in 0..c {
                m["streams"][format!("copy{i}")] = s.clone();
            }
        }
        Lie::RetireLive(i) => {
            let key = segs(m)[i % n]["objects"][0]["key"].clone();
            m["retired"] = serde_json::json!([{"key": key, "since_ms": 0}]);
        }
        Lie::Sealed(i) => {
            let g = &mut segs(m)[i % n];
            let s = g["sealed"].as_bool().unwrap();
            g["sealed"] = (!s).into();
        }
        Lie::Bytes(how, at) => {
            let b = serde_json::to_vec_pretty(m).unwrap();
            return Some(match how % 3 {
                0 => b[..at % b.len()].to_vec(),
                1 => {
                    let mut b = b;
                    b.resize(17 << 20, b' ');
                    b
                }
                _ => b"\x00\xff garbage".to_vec(),
            });
        }
    }
    None
}

fn lies() -> impl Strategy<Value = Lie> {
    let num = prop_oneof![
        Just(0u64),
        Just(1),
        Just(5000),
        Just(1 << 40),
        Just(1 << 63),
        Just(u64::MAX),
        0u64..200,
    ];
    let seg_field = prop_oneof![
        Just("start_id"),
        Just("end_id"),
        Just("len"),
        Just("payload")
    ];
    let obj_field = prop_oneof![Just("offset"), Just("len"), Just("crc32"), Just("level")];
    let i = 0usize..16;
    prop_oneof![
        (i.clone(), seg_field, num.clone()).prop_map(|(i, f, v)| Lie::Segment(i, f, v)),
        (i.clone(), 0usize..4, obj_field, num.clone())
            .prop_map(|(i, j, f, v)| Lie::Object(i, j, f, v)),
        (prop_oneof![Just("next_id"), Just("floor")], num.clone())
            .prop_map(|(f, v)| Lie::Stream(f, v)),
        (i.clone(), num).prop_map(|(i, v)| Lie::Longer(i, v)),
        (i.clone(), i.clone()).prop_map(|(a, b)| Lie::Swap(a, b)),
        i.clone().prop_map(Lie::Duplicate),
        i.clone().prop_map(Lie::Drop),
        (i.clone(), 0usize..4, any::<u8>()).prop_map(|(i, j, h)| Lie::Key(i, j, h)),
        (1usize..40).prop_map(Lie::Copies),
        i.clone().prop_map(Lie::RetireLive),
        i.clone().prop_map(Lie::Sealed),
        (any::<u8>(), any::<usize>()).prop_map(|(h, a)| Lie::Bytes(h, a)),
    ]
}

/// Runs `f` on a thread of its own; a run past `secs` is a hang.
fn bounded<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} hung (over {secs} s)"))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out
}

/// Everything that reads a bucket, on the lie.
fn check(lie: &Lie, case: usize) {
    let w = world();
    let prefix = format!("case{case}");
    let mut m = w.manifest.clone();
    let bytes = apply(&mut m, lie).unwrap_or_else(|| serde_json::to_vec_pretty(&m).unwrap());
    for (k, b) in &w.objects {
        w.s3.put("hostile", &format!("{prefix}/{k}"), b);
    }
    w.s3.put("hostile", &format!("{prefix}/manifest.json"), &bytes);
    let url = format!("s3://hostile/{prefix}");
    let what = format!("{lie:?}");
    let t = tempfile::tempdir().unwrap();
    let opts = common::replica_options(&url, &w.s3.endpoint());

    // restore: a sound copy, or an error; nothing beside DATA.
    let data = t.path().join("restored");
    let (o2, d2) = (opts.clone(), data.clone());
    let r = bounded(&format!("restore {what}"), 30, move || {
        walfs::replica::restore(&o2, &d2, &mut |_, _| {})
    });
    match r {
        Ok(_) => {
            let v = walfs::verify(&walfs::RealStorage, &data, &mut |_, _| {}).unwrap();
            assert!(v.is_sound(), "{what}: restored, but {:?}", v.faults);
        }
        Err(e) => {
            let e = e.to_string();
            assert_eq!(e.lines().count(), 1, "{what}: {e}");
            assert!(!data.exists(), "{what}: a failed restore left DATA");
        }
    }
    let beside: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "restored")
        .collect();
    assert!(beside.is_empty(), "{what}: restore left {beside:?}");

    // verify on the bucket.
    let o2 = opts.clone();
    let _ = bounded(&format!("verify {what}"), 30, move || {
        walfs::replica::check::verify_bucket(&o2, &mut |_, _| {}).map(|r| r.faults.len())
    });

    // A follower: every entry, every segment's bytes.
    let cache = t.path().join("cache");
    let (o2, c2, what2) = (opts.clone(), cache.clone(), what.clone());
    bounded(&format!("follower {what}"), 60, move || {
        let mut fo = FollowOptions::new(o2);
        fo.poll = Duration::from_secs(3600);
        fo.cache_dir = Some(c2);
        let Ok(f) = BucketLog::open(fo) else {
            return;
        };
        for s in f.streams() {
            let (first, next) = (f.first_id(&s), f.next_id(&s));
            assert!(
                next - first <= 100_000,
                "{what2}: {s} claims {first}..{next}"
            );
            for id in first..next {
                let _ = f.read_entry(&s, id, 0, 1 << 20);
            }
            let _ = f.stream_info(&s);
            for g in f.segments(&s) {
                if let Ok(b) = f.open_segment(&s, &g) {
                    let mut buf = vec![0u8; 4096];
                    let mut off = 0;
                    while let Ok(n @ 1..) = b.read_at(&mut buf, off) {
                        off += n as u64;
                        assert!(off <= 1 << 20, "{what2}: a segment read past 1 MiB");
                    }
                }
            }
            let mut out = Vec::new();
            let _ = f.read_payload(&s, 0, 0, 1 << 20, &mut out);
        }
    });
    let in_cache = files(&cache);
    assert!(
        in_cache.is_empty(),
        "{what}: the cache kept {in_cache:?} after the follower closed"
    );

    // The CLI, as a process: it ends, by itself, with 0 or 1.
    let env = aws_env(&w.s3.endpoint());
    for args in [
        vec!["cat", url.as_str(), "-s", "s"],
        vec!["stat", url.as_str(), "-s", "s"],
    ] {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{what}: walfs {args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "{what}: walfs {args:?} ended with {status}"
        );
    }
}

/// The lies the issue reports, each as it was seen.
#[test]
fn the_lies_seen_are_refused_or_survived() {
    let before = {
        world();
        peak_rss_kib()
    };
    let seen = [
        // An object shorter than the manifest says (a follower spun forever).
        Lie::Longer(0, 5000),
        Lie::Longer(usize::MAX, 5000),
        // A segment length of 2^40 (verify aborted allocating it).
        Lie::Longer(0, 1 << 40),
        // next_id far past the last segment (cat never ended).
        Lie::Stream("next_id", 1 << 63),
        // Segments out of order (restore wrote a malformed log).
        Lie::Swap(0, 2),
        // A manifest of 17 MiB, and the same objects under many streams.
        Lie::Bytes(1, 0),
        Lie::Copies(39),
        // A live object listed for deletion.
        Lie::RetireLive(1),
    ];
    for (i, lie) in seen.iter().enumerate() {
        check(lie, i);
    }
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 256 << 10, "peak memory grew by {grown} KiB");
}

/// Correct where it is right: the unmutated manifest restores the log.
#[test]
fn the_true_manifest_restores_the_log() {
    let w = world();
    check(&Lie::Stream("floor", 0), 1000);
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    walfs::replica::restore(
        &common::replica_options("s3://hostile/case1000", &w.s3.endpoint()),
        &data,
        &mut |_, _| {},
    )
    .unwrap();
    let wal = Wal::new(WalOptions::new(&data)).unwrap();
    let got: Vec<Vec<u8>> = wal.iter("s", 0).unwrap().map(Result::unwrap).collect();
    assert_eq!(got, w.entries);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_lie_is_refused_or_survived(lie in lies()) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(100);
        check(&lie, N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    }
}
