//! Reading a shipped log from the bucket: a follower mount beside a
//! primary, the CLI on s3:// addresses, tiered retention and the explicit
//! bucket truncation, a bucket that goes away and comes back, and what a
//! cold read costs. Against moto's S3 server on loopback.

mod common;

use common::mount::{sh, Mounted};
use common::s3::{aws_env, Mode, Proxy, S3Server};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use walfs::mount::source::LogSource;
use walfs::replica::follow::{BucketLog, FollowOptions};
use walfs::{ReplicaOptions, Wal, WalOptions};

fn replica(url: &str, endpoint: &str) -> ReplicaOptions {
    let mut o = common::replica_options(url, endpoint);
    o.interval = Duration::from_millis(50);
    o.timeout = Duration::from_secs(2);
    o
}

fn follower(r: &ReplicaOptions, cache: &Path) -> BucketLog {
    let mut o = FollowOptions::new(r.clone());
    o.poll = Duration::from_millis(100);
    o.cache_dir = Some(cache.to_path_buf());
    BucketLog::open(o).unwrap()
}

use common::{eventually, stat_value, walfs_cli as walfs};

/// A primary mount shipping, a follower mount on the bucket: the
/// follower's `segments/`, `entries/` and `log` match the primary's byte
/// for byte once caught up, `tail -f` on the follower prints what is
/// appended on the primary, and the follower refuses writes.
#[test]
fn a_follower_mount_mirrors_the_primary() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let p = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/m",
            "--replicate-interval",
            "0.1",
            "--segment-size",
            "8192",
        ],
        &env,
    );
    let pm = p.mnt.display().to_string();
    let (code, _, err) = sh(&format!(
        "for w in 1 2 3; do (for i in $(seq 1 100); do echo \"w$w $i\" >> {pm}/append || exit 1; done) & done; wait"
    ));
    assert_eq!(code, 0, "{err}");
    // The cache goes into a directory of its own inside the one given,
    // and only that is removed.
    let cache = p.dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(cache.join("mine"), b"keep").unwrap();
    let f = Mounted::start_env(
        Some(Path::new("s3://walfs-test/m")),
        &[
            "--poll",
            "0.1",
            "--cache-dir",
            p.dir.path().join("cache").to_str().unwrap(),
        ],
        &env,
    );
    let fm = f.mnt.display().to_string();
    // The follower may start before the first round ships the stream:
    // its root shows `default` once it does.
    eventually("the follower to see all 300", 30, || {
        std::fs::read_to_string(f.path("stat"))
            .is_ok_and(|stat| stat_value(&stat, "next_id") == "300")
    });
    let stat = std::fs::read_to_string(f.path("stat")).unwrap();
    assert!(
        stat_value(&stat, "replication").starts_with("following"),
        "{stat}"
    );
    for e in std::fs::read_dir(p.path("segments")).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            std::fs::read(e.path()).unwrap(),
            std::fs::read(f.path("segments").join(e.file_name())).unwrap(),
            "{:?}",
            e.file_name()
        );
    }
    assert_eq!(
        std::fs::read(p.path("log")).unwrap(),
        std::fs::read(f.path("log")).unwrap()
    );
    for id in [0, 1, 150, 299] {
        assert_eq!(
            std::fs::read(p.path(&format!("entries/{id}"))).unwrap(),
            std::fs::read(f.path(&format!("entries/{id}"))).unwrap()
        );
    }
    // Writes are refused.
    let (code, _, err) = sh(&format!("/bin/echo no >> {fm}/append"));
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");

    // tail -f on the follower prints a line appended on the primary.
    let mut tail = Command::new("tail")
        .args(["-c", "0", "-f", &format!("{fm}/log")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = tail.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sh(&format!("echo from-the-primary >> {pm}/append")).0, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"from-the-primary\n") {
                let _ = tx.send(got.clone());
                break;
            }
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    let _ = tail.kill();
    let _ = tail.wait();
    assert_eq!(
        got.expect("tail -f on the follower printed the new line"),
        b"from-the-primary\n"
    );
    // Its stop line says what it was: a follower, no log of its own.
    let mut f = f;
    let said = f.stop_capturing();
    assert!(
        said.contains("no longer following") && !said.contains("acknowledged on disk"),
        "{said}"
    );
    drop(f);
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["mine"]);
}

/// History truncated on the primary stays in the bucket and is served by
/// a follower and by `walfs cat s3://...`; `walfs truncate s3://...` removes
/// it (manifest first, then objects) while the primary keeps shipping, and
/// the primary never ships those ids again.
#[test]
fn tiered_retention_and_the_explicit_bucket_truncation() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let r = replica("s3://walfs-test/t", &s3.endpoint());
    let mut o = WalOptions::new(dir.path().join("data"));
    o.max_segment_size = 4096;
    o.replicate = Some(r.clone());
    let wal = Wal::new(o).unwrap();
    for i in 0..400u64 {
        wal.append("s", format!("entry {i}\n").as_bytes()).unwrap();
    }
    eventually("shipping", 20, || {
        wal.stream_info("s")
            .unwrap()
            .replication
            .unwrap()
            .replicated_id
            == 400
    });
    assert!(wal.truncate("s", 300).unwrap() > 0);
    let local_first = wal.first_id("s");
    assert!(local_first > 0);
    assert_eq!(wal.get("s", 0).unwrap(), None);

    let f = follower(&r, &dir.path().join("cache"));
    assert_eq!(f.first_id("s"), 0);
    assert_eq!(f.read_entry("s", 0, 0, 100).unwrap().unwrap(), b"entry 0\n");
    let (code, out, err) = walfs(&["cat", "s3://walfs-test/t", "-s", "s"], &env);
    assert_eq!(code, 0, "{err}");
    let want: String = (0..400).map(|i| format!("entry {i}\n")).collect();
    assert_eq!(out, want);
    // `cat --follow` on the bucket prints what the primary ships next.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args([
            "cat",
            "s3://walfs-test/t",
            "-s",
            "s",
            "--from",
            "399",
            "--follow",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut fout = follow.stdout.take().unwrap();
    wal.append("s", b"followed\n").unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.ends_with(b"followed\n") && Instant::now() < deadline {
        use std::io::Read;
        let mut buf = [0u8; 64];
        match fout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(got, b"entry 399\nfollowed\n");
    let (code, out, _) = walfs(&["get", "s3://walfs-test/t", "-s", "s", "7"], &env);
    assert_eq!((code, out.as_str()), (0, "entry 7\n"));

    // The explicit removal, while the primary runs.
    let objects_before = s3.keys("walfs-test").len();
    let (code, out, err) = walfs(
        &[
            "truncate",
            "s3://walfs-test/t",
            "-s",
            "s",
            "--before",
            "200",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out:?}");
    assert!(s3.keys("walfs-test").len() < objects_before);
    wal.append("s", b"after the truncation\n").unwrap();
    eventually("the primary to ship again", 20, || {
        wal.stream_info("s")
            .unwrap()
            .replication
            .unwrap()
            .replicated_id
            == 402
    });
    let info = wal.stream_info("s").unwrap();
    assert_eq!(info.replication.unwrap().state, "ok");
    f.refresh();
    let first = f.first_id("s");
    assert!(first > 0 && first <= 200, "{first}");
    assert_eq!(f.read_entry("s", 0, 0, 100).unwrap(), None);
    assert_eq!(
        f.read_entry("s", 401, 0, 100).unwrap().unwrap(),
        b"after the truncation\n"
    );
    let (code, _, err) = walfs(&["verify", "s3://walfs-test/t"], &env);
    assert_eq!(code, 0, "{err}");
    drop(wal);
    // The primary did not ship the removed history again.
    let m = f.manifest();
    assert_eq!(m.streams["s"].segments[0].start_id, first);
}

/// A follower serves cached ranges while the bucket is away, fails other
/// reads with EIO after a bounded wait, and recovers by itself.
#[test]
fn the_bucket_going_away_and_coming_back() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let proxy = Proxy::start(s3.port);
    let dir = tempfile::tempdir().unwrap();
    let r = replica("s3://walfs-test/g", &s3.endpoint());
    {
        let mut o = WalOptions::new(dir.path().join("data"));
        o.max_segment_size = 64 << 10;
        o.replicate = Some(r.clone());
        let wal = Wal::new(o).unwrap();
        for i in 0..2000u64 {
            wal.append("s", format!("{i:0>100}\n").as_bytes()).unwrap();
        }
    }
    let f = follower(
        &replica("s3://walfs-test/g", &proxy.endpoint()),
        &dir.path().join("cache"),
    );
    assert!(f.read_entry("s", 5, 0, 1000).unwrap().is_some());
    proxy.set(Mode::Blackhole);
    // Cached: still served.
    assert_eq!(
        f.read_entry("s", 6, 0, 1000).unwrap().unwrap(),
        format!("{:0>100}\n", 6).as_bytes()
    );
    // Not cached: an error after a bounded wait.
    let t = Instant::now();
    let e = f.read_entry("s", 1990, 0, 1000).unwrap_err();
    assert!(e.errno_is(libc::EIO), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
    f.refresh();
    let info = f.stream_info("s").unwrap();
    assert!(info.replication.unwrap().state.starts_with("unreachable"));
    proxy.set(Mode::Pass);
    eventually("reads to work again", 30, || {
        f.read_entry("s", 1990, 0, 1000).is_ok()
    });
    f.refresh();
    assert!(f
        .stream_info("s")
        .unwrap()
        .replication
        .unwrap()
        .state
        .starts_with("following"));
}

/// A cold read of one entry in the middle of large sealed segments costs
/// a few range requests, not the segment; a warm one costs none.
#[test]
fn a_cold_read_costs_a_few_requests() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let r = replica("s3://walfs-test/c", &s3.endpoint());
    let n = 200_000u64;
    {
        let mut o = WalOptions::new(dir.path().join("data"));
        o.max_segment_size = 16 << 20;
        o.sync_mode = walfs::SyncMode::Async;
        o.replicate = Some(r.clone());
        let wal = Wal::new(o).unwrap();
        for i in 0..n {
            wal.append("s", format!("entry {i:>90}\n").as_bytes())
                .unwrap();
        }
    }
    let f = follower(&r, &dir.path().join("cache"));
    let segs = f.segments("s");
    assert!(segs.len() >= 2 && segs[0].len > 8 << 20, "{segs:?}");
    let before = f.requests();
    let id = segs[0].end_id / 2 + 17;
    assert_eq!(
        f.read_entry("s", id, 0, 1000).unwrap().unwrap(),
        format!("entry {id:>90}\n").as_bytes()
    );
    let cold = f.requests() - before;
    // A 16 MiB segment is 16 blocks: a binary search needs about 4 probes.
    assert!(cold <= 8, "{cold} requests for one cold read");
    let before = f.requests();
    f.read_entry("s", id + 1, 0, 1000).unwrap().unwrap();
    assert_eq!(f.requests() - before, 0);
}

/// `walfs verify s3://...` checks every object against the manifest and
/// names the object and offset of a fault.
#[test]
fn verify_on_a_bucket_names_the_object() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let r = replica("s3://walfs-test/v", &s3.endpoint());
    {
        let mut o = WalOptions::new(dir.path().join("data"));
        o.max_segment_size = 4096;
        o.replicate = Some(r);
        let wal = Wal::new(o).unwrap();
        for i in 0..200u64 {
            wal.append("s", format!("entry {i}\n").as_bytes()).unwrap();
        }
    }
    let (code, _, err) = walfs(&["verify", "s3://walfs-test/v"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("200 entries") && err.contains("sound"),
        "{err}"
    );
    let victim = s3
        .keys("walfs-test")
        .into_iter()
        .find(|k| k.ends_with(".wal"))
        .unwrap();
    let mut bytes = s3.get("walfs-test", &victim);
    bytes[100] ^= 0x40;
    s3.put("walfs-test", &victim, &bytes);
    let (code, out, err) = walfs(&["verify", "s3://walfs-test/v"], &env);
    assert_eq!(code, 1, "{err}");
    let key = victim.trim_start_matches("v/");
    assert!(out.contains(key) && out.contains("corruption"), "{out}");
}

/// A follower of a sharded log shows its checkpoints/ as the primary makes
/// them, read-only.
#[test]
fn a_follower_shows_a_sharded_logs_checkpoints() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let p = Mounted::start_env(
        None,
        &[
            "--shards",
            "2",
            "--replicate",
            "s3://walfs-test/sh",
            "--replicate-interval",
            "0.1",
        ],
        &env,
    );
    let pm = p.mnt.display().to_string();
    let (code, _, err) = sh(&format!(
        "for i in 1 2 3; do echo a$i >> {pm}/streams/shard_00/append; done; echo b >> {pm}/streams/shard_01/append; echo cp1 > {pm}/checkpoints/new"
    ));
    assert_eq!(code, 0, "{err}");
    let cp1 = std::fs::read_to_string(p.path("checkpoints/cp1")).unwrap();
    assert_eq!(cp1, "shard_00: 3\nshard_01: 1\n");
    let f = Mounted::start_env(
        Some(Path::new("s3://walfs-test/sh")),
        &[
            "--poll",
            "0.1",
            "--cache-dir",
            p.dir.path().to_str().unwrap(),
        ],
        &env,
    );
    eventually("the follower to list cp1", 30, || {
        std::fs::read_to_string(f.path("checkpoints/cp1"))
            .ok()
            .as_deref()
            == Some(cp1.as_str())
    });
    assert_eq!(
        std::fs::read_to_string(f.path("checkpoints/HEAD")).unwrap(),
        "cp1\n"
    );
    let e = std::fs::write(f.path("checkpoints/new"), "x\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // A new checkpoint on the primary appears on the follower.
    let (code, _, err) = sh(&format!(
        "echo a4 >> {pm}/streams/shard_00/append && echo cp2 > {pm}/checkpoints/new"
    ));
    assert_eq!(code, 0, "{err}");
    eventually("the follower to list cp2", 30, || {
        std::fs::read_to_string(f.path("checkpoints/HEAD")).unwrap() == "cp2\n"
    });
    assert_eq!(
        std::fs::read_to_string(f.path("checkpoints/cp2")).unwrap(),
        "shard_00: 4\nshard_01: 1\n"
    );
    // The follower's shard streams hold what the checkpoint names.
    eventually("the follower to hold shard_00's 4 entries", 30, || {
        std::fs::read_to_string(f.path("streams/shard_00/log")).unwrap() == "a1\na2\na3\na4\n"
    });
    let mut names: Vec<String> = std::fs::read_dir(f.path("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["HEAD", "cp1", "cp2", "new"]);
}

/// The writer's merges never pull objects from under a follower: parts a
/// merge supersedes stay in the bucket, listed as retired, for the grace a
/// follower's read by an older manifest needs; and a follower whose
/// manifest names objects that are gone anyway (past the grace) reads the
/// manifest again and finds the bytes in the merged objects.
#[test]
fn a_follower_never_fails_because_the_writer_merged() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let r = replica("s3://walfs-test/merge", &s3.endpoint());
    let mut o = WalOptions::new(dir.path().join("data"));
    o.replicate = Some(r.clone());
    let wal = Wal::new(o).unwrap();
    let shipped = |wal: &Wal, n: u64| {
        common::eventually("a round", 20, || {
            wal.stream_info("s")
                .unwrap()
                .replication
                .unwrap()
                .replicated_id
                == n
        })
    };
    // Six rounds of one entry each: parts of the active segment (four of
    // them already merged into one).
    for i in 0..6u64 {
        wal.append("s", format!("entry {i}\n").as_bytes()).unwrap();
        shipped(&wal, i + 1);
    }
    // A follower that reads the manifest now and then never again.
    let mut fo = FollowOptions::new(r.clone());
    fo.poll = Duration::from_secs(3600);
    fo.cache_dir = Some(dir.path().join("cache"));
    let f = BucketLog::open(fo).unwrap();
    let old = f.manifest();
    let old_keys: Vec<String> = old.streams["s"].segments[0].keys();
    assert!(old_keys.len() >= 2, "{old_keys:?}");
    // More rounds: the writer merges the parts the follower's manifest names.
    for i in 6..22u64 {
        wal.append("s", format!("entry {i}\n").as_bytes()).unwrap();
        shipped(&wal, i + 1);
    }
    let now =
        walfs::replica::manifest::Manifest::decode(&s3.get("walfs-test", "merge/manifest.json"))
            .unwrap();
    let live: Vec<String> = now.streams["s"].segments[0].keys();
    let gone: Vec<&String> = old_keys.iter().filter(|k| !live.contains(k)).collect();
    assert!(
        !gone.is_empty(),
        "no merge happened: the test proves nothing"
    );
    // The writer kept them, retired.
    let bucket = s3.keys("walfs-test");
    for k in &gone {
        assert!(
            bucket.contains(&format!("merge/{k}")),
            "{k} deleted at once"
        );
        assert!(
            now.retired.iter().any(|r| &&r.key == k),
            "{k} not listed as retired"
        );
    }
    // Past the grace: gone from the bucket. The follower, on its old
    // manifest, still reads every entry.
    for k in &gone {
        s3.delete("walfs-test", &format!("merge/{k}"));
    }
    for i in 0..6u64 {
        assert_eq!(
            f.read_entry("s", i, 0, 100).unwrap().unwrap(),
            format!("entry {i}\n").as_bytes(),
            "entry {i}"
        );
    }
    assert!(f.manifest() != old, "the follower read the manifest again");
}
