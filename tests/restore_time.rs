//! A bucket read by time: the manifest's marks (and, for a sealed segment
//! with many, an object of its own) name the first id shipped at or after a
//! time, to within a second; `walfs restore --to-time` gives the log as it
//! stood then, byte for byte the original cut at that id, and `walfs cat
//! s3://... --since/--until TIME` reads the same span. Also the error of
//! `--to-time`, in ids and seconds, measured against when each append was
//! acknowledged.

mod common;

use common::s3::{aws_env, S3Server};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, SystemTime};
use walfs::replica::manifest::Manifest;
use walfs::{ReplicaMode, Wal, WalOptions};

const BURSTS: usize = 10;
const PER_BURST: u64 = 5;

fn line(i: u64) -> Vec<u8> {
    format!("ledger {i:04}\n").into_bytes()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Every file of the restored `stream` is the original's prefix (the last
/// one cut where `to` starts), and the log reads ids `0..to`.
fn assert_cut_copy(restored: &Path, original: &Path, to: u64) {
    let mut n = 0;
    for f in std::fs::read_dir(restored.join("default")).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().into_string().unwrap();
        if !name.ends_with(".wal") {
            continue;
        }
        let mine = std::fs::read(f.path()).unwrap();
        let theirs = std::fs::read(original.join("default").join(&name)).unwrap();
        assert!(
            theirs.starts_with(&mine),
            "{name} is not the original's prefix"
        );
        n += 1;
    }
    assert!(n >= 1, "{n} segments");
    let w = Wal::new(WalOptions::new(restored)).unwrap();
    assert_eq!(w.next_id("default"), to);
    let got: Vec<Vec<u8>> = w.iter("default", 0).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(got, (0..to).map(line).collect::<Vec<_>>());
}

#[test]
fn restore_to_a_time_gives_the_log_as_it_stood_then() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/t";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Bursts of five strict appends, 2 s apart; when each burst began and
    // when each append was acknowledged.
    let mut began = Vec::new();
    let mut acked = Vec::new();
    {
        let mut r = common::replica_options(url, &s3.endpoint());
        r.mode = ReplicaMode::Strict;
        let mut o = WalOptions::new(&data);
        o.max_segment_size = 2300;
        o.replicate = Some(r);
        let wal = Wal::new(o).unwrap();
        for k in 0..BURSTS as u64 {
            if k > 0 {
                sleep(Duration::from_secs(2));
            }
            began.push(SystemTime::now());
            for i in k * PER_BURST..(k + 1) * PER_BURST {
                assert_eq!(wal.append("default", &line(i)).unwrap(), i);
                acked.push(SystemTime::now());
            }
        }
    }
    let n = BURSTS as u64 * PER_BURST;
    // What a writer killed mid-round leaves (objects no manifest names,
    // a times object among them) goes when the next writer takes the
    // prefix; what is named stays.
    let orphans = [
        "t/default/00000000000000000000.e9.times",
        "t/default/00000000000000000047.e9.00000000000000000000-00000000000000000048.part",
    ];
    for k in orphans {
        s3.put("walfs-test", k, b"left by a writer killed mid-round");
    }
    let named_before = Manifest::decode(&s3.get("walfs-test", "t/manifest.json")).unwrap();
    {
        let mut o = WalOptions::new(&data);
        o.max_segment_size = 2300;
        o.replicate = Some(common::replica_options(url, &s3.endpoint()));
        drop(Wal::new(o).unwrap());
    }
    let keys = s3.keys("walfs-test");
    for k in orphans {
        assert!(!keys.iter().any(|x| x == k), "{k} left: {keys:?}");
    }
    for k in named_before.keys() {
        assert!(keys.iter().any(|x| *x == format!("t/{k}")), "{k} removed");
    }
    let m = Manifest::decode(&s3.get("walfs-test", "t/manifest.json")).unwrap();
    let sm = &m.streams["default"];
    // A sealed segment shipped over more rounds than the manifest keeps
    // marks of: its marks are in an object of its own.
    let with_object = sm
        .segments
        .iter()
        .find(|g| g.times_object.is_some())
        .unwrap_or_else(|| panic!("no times object: {sm:?}"));
    assert!(with_object.sealed && with_object.times.len() == 1);
    let marks: usize = sm.segments.iter().map(|g| g.times.len()).sum();
    assert!(marks >= 2, "{sm:?}");
    // The bucket verifies, its times object included.
    let (code, _, err) = common::walfs_cli(&["verify", url], &env);
    assert_eq!(code, 0, "{err}");

    // stat on the bucket: when its first retained id was shipped.
    let (code, o, err) = common::walfs_cli(&["stat", url], &env);
    assert_eq!(code, 0, "{err}");
    let shown = o
        .lines()
        .find_map(|l| l.strip_prefix("first_time: "))
        .unwrap_or_else(|| panic!("{o}"));
    let shown = humantime::parse_rfc3339_weak(shown.trim()).unwrap();
    let off = shown
        .duration_since(began[0])
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(1), "{shown:?} vs {:?}", began[0]);

    let out = |name: &str| dir.path().join(name);
    // `walfs restore URL TO --to-time T [more]`: (exit code, stdout, stderr).
    let restore_at = |to: &Path, t: SystemTime, more: &[&str]| {
        let t = rfc3339(t);
        let mut args = vec!["restore", url, to.to_str().unwrap(), "--to-time", &t];
        args.extend_from_slice(more);
        common::walfs_cli(&args, &env)
    };
    // At the start of each burst: the ids of the bursts before it, exactly
    // (bursts are 2 s apart, the marks to within a second).
    for k in [1usize, 4, 8, 9] {
        let to = k as u64 * PER_BURST;
        let r = out(&format!("at{k}"));
        let (code, _, err) = restore_at(&r, began[k], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(&format!("up to id {to}, the first shipped at or after")),
            "{k}: {err}"
        );
        assert_cut_copy(&r, &data, to);
        // The restored log keeps the times of its ids: a local cat by time
        // reads the burst before the cut.
        let (code, o, err) = common::walfs_cli(
            &[
                "cat",
                r.to_str().unwrap(),
                "--since",
                &rfc3339(began[k - 1]),
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        let want: Vec<u8> = (to - PER_BURST..to).flat_map(line).collect();
        assert_eq!(o.as_bytes(), &want[..], "{k}");
    }
    // The restored log is a new history: the prefix it came from refuses
    // it (its next id is behind the bucket's), a new prefix takes it.
    for (prefix, ok) in [("t", false), ("t-restored", true)] {
        let mut o = WalOptions::new(out("at4"));
        o.replicate = Some(common::replica_options(
            &format!("s3://walfs-test/{prefix}"),
            &s3.endpoint(),
        ));
        match Wal::new(o) {
            Ok(w) => {
                assert!(ok, "the old prefix took a restored log");
                assert_eq!(w.append("default", b"next\n").unwrap(), 4 * PER_BURST);
            }
            Err(e) => {
                assert!(!ok, "{e}");
                assert!(e.to_string().contains("another prefix"), "{e}");
            }
        }
    }
    // The bucket read by time: bursts 3 to 5.
    let (code, o, err) = common::walfs_cli(
        &[
            "cat",
            url,
            "--since",
            &rfc3339(began[3]),
            "--until",
            &rfc3339(began[6]),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let want: Vec<u8> = (3 * PER_BURST..6 * PER_BURST).flat_map(line).collect();
    assert_eq!(o.as_bytes(), &want[..]);
    // Before anything was shipped: refused, naming why; after the end: all.
    let early = began[0] - Duration::from_secs(60);
    let (code, _, err) = restore_at(&out("early"), early, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("was shipped before") && err.contains("later time"),
        "{err}"
    );
    assert!(!out("early").exists());
    let late = SystemTime::now() + Duration::from_secs(60);
    let (code, _, err) = restore_at(&out("late"), late, &[]);
    assert_eq!(code, 0, "{err}");
    assert_cut_copy(&out("late"), &data, n);

    // The error of --to-time at times inside the bursts, against when each
    // append was acknowledged: the ids it restores that were acknowledged
    // at or after the time, and those before it that it leaves out.
    let (mut worst_ids, mut worst_s) = (0u64, 0f64);
    for k in 1..BURSTS {
        for j in [1u64, 3] {
            let t = acked[k * PER_BURST as usize + j as usize - 1];
            let b = walfs::replica::follow::BucketLog::open({
                let mut o = walfs::replica::follow::FollowOptions::new(common::replica_options(
                    url,
                    &s3.endpoint(),
                ));
                o.cache_dir = Some(dir.path().to_path_buf());
                o
            })
            .unwrap();
            let got = b.id_at_time("default", t).unwrap();
            // The true cut: the first id acknowledged after t.
            let truth = acked.iter().position(|a| *a > t).unwrap() as u64;
            let (lo, hi) = (got.min(truth), got.max(truth));
            let off_s = (lo..hi)
                .map(|i| {
                    let a = acked[i as usize];
                    a.duration_since(t)
                        .or_else(|_| t.duration_since(a))
                        .unwrap()
                        .as_secs_f64()
                })
                .fold(0.0, f64::max);
            worst_ids = worst_ids.max(hi - lo);
            worst_s = worst_s.max(off_s);
        }
    }
    println!(
        "figure: --to-time error over {} times inside bursts: at most {worst_ids} ids, {worst_s:.3} s",
        2 * (BURSTS - 1)
    );
    // Marks are a second apart at most: never more than a burst off, and
    // never by more than a second.
    assert!(worst_ids <= PER_BURST, "{worst_ids} ids");
    assert!(worst_s <= 1.0, "{worst_s} s");

    // A times object that lies is named, never believed.
    let key = with_object.times_object.as_ref().unwrap().key.clone();
    let mut body = s3.get("walfs-test", &format!("t/{key}"));
    body[3] ^= 1;
    s3.put("walfs-test", &format!("t/{key}"), &body);
    let (code, _, err) = restore_at(&out("lied"), began[9], &[]);
    assert_ne!(code, 0);
    assert!(err.contains(&key), "{err}");
    let (code, o, err) = common::walfs_cli(&["verify", url], &env);
    assert_ne!(code, 0);
    assert!(o.contains(&key), "{o} {err}");

    // One that lies consistently (the manifest's length and crc32 are its
    // own, every record's crc holds) but names an id past its segment: named
    // too, never believed.
    let mut m = Manifest::decode(&s3.get("walfs-test", "t/manifest.json")).unwrap();
    let g = m
        .streams
        .get_mut("default")
        .unwrap()
        .segments
        .iter_mut()
        .find(|g| g.times_object.is_some())
        .unwrap();
    let t0 = g.times[0].0;
    let (start, end) = (g.start_id, g.end_id);
    let body: Vec<u8> = (0..9u64)
        .flat_map(|k| {
            let id = if k == 8 {
                end + 5
            } else {
                start + k.min(end - start)
            };
            walfs::format::time_record_encode(t0 + k * 1000, id)
        })
        .collect();
    let o = g.times_object.as_mut().unwrap();
    o.len = body.len() as u64;
    o.crc32 = crc32fast::hash(&body);
    s3.put("walfs-test", &format!("t/{key}"), &body);
    s3.put("walfs-test", "t/manifest.json", &m.encode());
    let (code, o, err) = common::walfs_cli(&["verify", url], &env);
    assert_ne!(code, 0, "{o}");
    assert!(
        o.contains(&key) && o.contains("not the time marks"),
        "{o} {err}"
    );

    // A stream shipped without marks (by a walfs before them): a time is
    // refused, naming the ids to use instead, never answered with its
    // first id.
    for g in &mut m.streams.get_mut("default").unwrap().segments {
        g.times.clear();
        g.times_object = None;
    }
    s3.put("walfs-test", "t/manifest.json", &m.encode());
    let (code, _, err) = restore_at(&out("unmarked"), began[9], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("holds no times of its ids"), "{err}");
    // An empty stream needs no marks: it is refused for what it is, a
    // stream with no id shipped before any time.
    m.streams.insert("empty".into(), Default::default());
    s3.put("walfs-test", "t/manifest.json", &m.encode());
    let (code, _, err) = restore_at(&out("empty"), began[9], &["-s", "empty"]);
    assert_ne!(code, 0);
    assert!(err.contains("no id of stream empty"), "{err}");
}
