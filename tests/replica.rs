//! Shipping to object storage, against a real S3-compatible server (moto)
//! on loopback, with faults from a TCP proxy: restore byte for byte, strict
//! acknowledgement, unreachable and slow buckets, fencing, kill -9 mid
//! upload, and the refusals at start.

mod common;

use common::mount::{sh, Mounted};
use common::s3::{aws_env, Mode, Proxy, S3Server, SECRET};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use walfs::replica::manifest::Manifest;
use walfs::{Error, ReplicaMode, ReplicaOptions, Wal, WalOptions};

fn replica(url: &str, endpoint: &str) -> ReplicaOptions {
    common::replica_options(url, endpoint)
}

fn wal_at(root: &Path, r: ReplicaOptions, segment: u64) -> walfs::Result<Wal> {
    let mut o = WalOptions::new(root);
    o.max_segment_size = segment;
    o.replicate = Some(r);
    Wal::new(o)
}

fn walfs(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    common::walfs_cli(args, env)
}

fn manifest(s: &S3Server, bucket: &str, prefix: &str) -> Manifest {
    Manifest::decode(&s.get(bucket, &format!("{prefix}/manifest.json"))).unwrap()
}

use common::{eventually, stat_value};

/// `stat` says the bucket holds everything and the prefix is held.
fn replication_ok(m: &Mounted) -> bool {
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    stat_value(&stat, "replication") == "ok"
}

fn mount_caught_up(m: &Mounted) -> bool {
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    stat_value(&stat, "replicated_id") == stat_value(&stat, "next_id")
}

/// Every file of every stream but walfs's own sidecars, byte for byte.
fn assert_same_log(a: &Path, b: &Path) {
    let mut n = 0;
    for stream in std::fs::read_dir(a).unwrap() {
        let stream = stream.unwrap();
        if !stream.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(stream.path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            // walfs's own sidecars are local: hints, the synced mark, the
            // times of ids (not shipped).
            if name == "walfs.payloads" || name == "walfs.synced" || name == "walfs.times" {
                continue;
            }
            let other = b.join(stream.file_name()).join(&name);
            assert_eq!(
                std::fs::read(f.path()).unwrap(),
                std::fs::read(&other).unwrap_or_else(|e| panic!("{}: {e}", other.display())),
                "{name} differs"
            );
            n += 1;
        }
    }
    assert!(n >= 3, "compared only {n} files");
}

/// The acceptance path: shell writers through a replicating mount, a clean
/// stop, `walfs restore`, and the restored directory equal to the primary's
/// (sealed segments, active segment, segments.idx, head.state), sound,
/// readable by ironwal 0.6 and mountable.
#[test]
fn a_shipped_log_restores_byte_for_byte() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let mut m = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/logs/one",
            "--replicate-interval",
            "0.1",
            "--segment-size",
            "8192",
        ],
        &env,
    );
    let mnt = m.mnt.display().to_string();
    let (code, _, err) = sh(&format!(
        "for w in 1 2 3 4; do (for i in $(seq 1 150); do echo \"writer $w line $i\" >> {mnt}/append || exit 1; done) & done; wait; printf 'b1\\nb2\\n' >> {mnt}/append"
    ));
    assert_eq!(code, 0, "{err}");
    eventually("the bucket to catch up", 20, || mount_caught_up(&m));
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert_eq!(stat_value(&stat, "replication"), "ok");
    assert_eq!(stat_value(&stat, "replication_lag_ms"), "0");
    assert_eq!(stat_value(&stat, "replica"), "s3://walfs-test/logs/one");
    let log = m.stop_capturing();
    assert!(!log.contains(SECRET));

    // The CLI's stat reads the bucket too.
    let data = m.data.display().to_string();
    let (code, out, err) = walfs(
        &["stat", &data, "--replicate", "s3://walfs-test/logs/one"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(stat_value(&out, "replicated_id"), "602");
    assert_eq!(stat_value(&out, "replication"), "ok");

    let m1 = manifest(&s3, "walfs-test", "logs/one");
    let segs = &m1.streams["default"].segments;
    assert!(segs.len() >= 3, "{segs:?}");
    for g in &segs[..segs.len() - 1] {
        assert!(
            g.sealed && g.objects.len() == 1,
            "a sealed segment is one object: {g:?}"
        );
    }

    let restored = m.dir.path().join("restored");
    let r = restored.display().to_string();
    let (code, _, err) = walfs(&["restore", "s3://walfs-test/logs/one", &r], &env);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("602 entries"), "{err}");
    assert_same_log(&m.data, &restored);
    let (code, _, err) = walfs(&["verify", &r], &[]);
    assert_eq!(code, 0, "{err}");

    let iw = ironwal::Wal::new(ironwal::WalOptions::new(&restored)).unwrap();
    let all: Vec<Vec<u8>> = iw.iter("default", 0).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(all.len(), 602);
    assert_eq!(all[601], b"b2\n");
    drop(iw);

    // On a terminal (script(1) gives it one) a progress bar shows.
    common::provision::tool("script", "bsdutils");
    let vars: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let r3 = m.dir.path().join("restored-on-a-terminal");
    let (code, out, err) = sh(&format!(
        "script -qec 'env {vars}{} restore s3://walfs-test/logs/one {}' /dev/null",
        env!("CARGO_BIN_EXE_walfs"),
        r3.display()
    ));
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("restoring") && out.contains("602 entries"),
        "{out}"
    );
    assert!(!out.contains(SECRET));

    // A second restore into a directory that is not empty is refused.
    let (code, _, err) = walfs(&["restore", "s3://walfs-test/logs/one", &r], &env);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");

    // And the restored directory mounts, and reads the same.
    let m2 = Mounted::start_on(&restored, &[]);
    assert_eq!(std::fs::read(m2.path("log")).unwrap(), all.concat());
}

/// A long-lived active segment shipped in hundreds of rounds stays a few
/// objects (merged four of a level into one of the next), and still
/// restores to the local bytes.
#[test]
fn an_active_segment_stays_a_few_objects_over_many_rounds() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/p", &s3.endpoint());
    r.interval = Duration::from_millis(5);
    let wal = wal_at(&dir.path().join("data"), r.clone(), 64 << 20).unwrap();
    let rounds = 150;
    for i in 0..rounds {
        let id = wal.append("s", format!("entry {i}").as_bytes()).unwrap();
        eventually("a round", 10, || {
            wal.stream_info("s")
                .unwrap()
                .replication
                .unwrap()
                .replicated_id
                > id
        });
    }
    let (shipped_rounds, puts, entries) = wal.replication_counters().unwrap();
    assert!(shipped_rounds >= rounds, "{shipped_rounds} rounds");
    // A part and the manifest each round, and a merged part now and then.
    assert!(
        (2 * shipped_rounds..=4 * shipped_rounds).contains(&puts),
        "{puts} PUTs in {shipped_rounds} rounds"
    );
    assert_eq!(entries, rounds);
    let m = manifest(&s3, "walfs-test", "p");
    let g = &m.streams["s"].segments[0];
    assert!(!g.sealed);
    println!("{} objects after {rounds} rounds", g.objects.len());
    // Merged four at a time: 150 parts need level 3, and no more than 4
    // levels; each level holds at most 3, in descending order.
    let levels: Vec<_> = g.objects.iter().map(|o| o.level).collect();
    assert_eq!(levels.iter().max(), Some(&3), "levels {levels:?}");
    assert!(levels.windows(2).all(|w| w[0] >= w[1]), "levels {levels:?}");
    assert!(
        (0..=3).all(|l| levels.iter().filter(|&&x| x == l).count() <= 3),
        "levels {levels:?}"
    );
    // 150 parts: at most 3 per level over 4 levels.
    assert!(
        g.objects.len() <= 12,
        "{} objects: {:?}",
        g.objects.len(),
        g.objects
    );
    drop(wal);
    // Superseded parts were deleted: only referenced objects remain.
    let mut keys = s3.keys("walfs-test");
    keys.retain(|k| k != "p/manifest.json");
    let m = manifest(&s3, "walfs-test", "p");
    let mut referenced: Vec<String> = m.keys().map(|k| format!("p/{k}")).collect();
    keys.sort();
    referenced.sort();
    assert_eq!(keys, referenced);
    let out = dir.path().join("restored");
    walfs::replica::restore(&r, &out, &mut |_, _| {}).unwrap();
    assert_same_log_stream(&dir.path().join("data"), &out, "s");
}

fn assert_same_log_stream(a: &Path, b: &Path, stream: &str) {
    let seg = walfs::format::segment_name(0);
    assert_eq!(
        std::fs::read(a.join(stream).join(&seg)).unwrap(),
        std::fs::read(b.join(stream).join(&seg)).unwrap()
    );
}

/// Strict mode: an append returns only once the bucket's manifest covers
/// it; concurrent appenders share upload rounds; with the bucket gone an
/// append fails after the bounded wait, and works again when it is back.
#[test]
fn strict_replication_acknowledges_only_what_the_bucket_holds() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let proxy = Proxy::start(s3.port);
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/strict", &proxy.endpoint());
    r.mode = ReplicaMode::Strict;
    r.timeout = Duration::from_secs(2);
    let wal = wal_at(&dir.path().join("data"), r.clone(), 1 << 20).unwrap();
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (wal, r) = (wal.clone(), r.clone());
            sc.spawn(move || {
                for i in 0..30 {
                    let id = wal.append("s", format!("t{t} {i}").as_bytes()).unwrap();
                    if i % 10 == 9 {
                        let m = walfs::replica::read_manifest(&r).unwrap().unwrap();
                        assert!(
                            m.streams["s"].next_id > id,
                            "acknowledged {id} before the bucket had it"
                        );
                    }
                }
            });
        }
    });
    let (rounds, _, entries) = wal.replication_counters().unwrap();
    assert_eq!(entries, 240);
    assert!(
        rounds < entries,
        "{rounds} rounds for {entries} entries: no group commit"
    );

    proxy.set(Mode::Blackhole);
    let started = Instant::now();
    match wal.append("s", b"while the bucket is away") {
        Err(Error::Replication(m)) => assert!(m.contains("did not confirm"), "{m}"),
        other => panic!("expected a replication timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    proxy.set(Mode::Pass);
    eventually("shipping to resume", 30, || {
        wal.append("s", b"back").is_ok()
    });
    let info = wal.stream_info("s").unwrap();
    assert_eq!(info.replication.unwrap().replicated_id, info.next_id);
}

/// Async mode without a lease rides out an unreachable, flapping and slow
/// bucket: appends go on, `stat` says what is happening, and the bucket
/// catches up; no message shows the secret key. Strict mode through the mount fails the
/// write(2) with ETIMEDOUT instead of hanging.
#[test]
fn an_unreachable_bucket_delays_shipping_not_appends() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let proxy = Proxy::start(s3.port);
    proxy.set(Mode::Reset);
    let env = aws_env(&proxy.endpoint());
    let mut m = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/flaky",
            "--replicate-interval",
            "0.1",
            "--replicate-timeout",
            "2",
            // Without a lease: a writer that holds one stops acknowledging
            // when the bucket is away (tests/failover.rs).
            "--lease",
            "off",
        ],
        &env,
    );
    let append = |n: usize| {
        let mnt = m.mnt.display().to_string();
        let (code, _, err) = sh(&format!(
            "for i in $(seq 1 {n}); do echo line $i >> {mnt}/append || exit 1; done"
        ));
        assert_eq!(code, 0, "{err}");
    };
    append(50);
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert!(
        stat_value(&stat, "replication").starts_with("unreachable"),
        "{stat}"
    );
    assert_eq!(stat_value(&stat, "replicated_id"), "0");
    assert!(!stat.contains(SECRET));
    proxy.set(Mode::Pass);
    eventually("the bucket to catch up", 30, || mount_caught_up(&m));

    proxy.set(Mode::Blackhole);
    append(30);
    eventually("stat to say unreachable", 30, || {
        let stat = std::fs::read_to_string(m.path("stat")).unwrap();
        stat_value(&stat, "replication").starts_with("unreachable")
    });
    proxy.set(Mode::Pass);
    eventually("the bucket to catch up after the black hole", 30, || {
        mount_caught_up(&m)
    });
    // Reachable again (here a round, not a takeover, succeeds), it says so.
    eventually("stat to say ok again", 10, || replication_ok(&m));
    // Connections reset while rounds upload.
    proxy.set(Mode::Delay(Duration::from_millis(20)));
    append(10);
    proxy.set(Mode::Reset);
    append(10);
    proxy.set(Mode::Delay(Duration::from_millis(20)));
    append(20);
    eventually("the bucket to catch up through a slow link", 60, || {
        mount_caught_up(&m)
    });
    proxy.set(Mode::Pass);
    let log = m.stop_capturing();
    assert!(!log.contains(SECRET), "{log}");
    assert!(log.contains("unreachable"), "{log}");
    assert_eq!(
        manifest(&s3, "walfs-test", "flaky").streams["default"].next_id,
        120
    );

    // Strict mode through the mount.
    let mut m = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/strict",
            "--replicate-sync",
            "strict",
            "--replicate-timeout",
            "1",
        ],
        &env,
    );
    let mnt = m.mnt.display().to_string();
    assert_eq!(sh(&format!("echo one >> {mnt}/append")).0, 0);
    proxy.set(Mode::Blackhole);
    // coreutils' echo names the errno (the shell builtin says "I/O error"
    // for every failure).
    let started = Instant::now();
    let (code, _, err) = sh(&format!("/bin/echo two >> {mnt}/append"));
    assert_ne!(code, 0);
    assert!(err.contains("Connection timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    proxy.set(Mode::Pass);
    eventually("strict appends to work again", 30, || {
        sh(&format!("echo three >> {mnt}/append")).0 == 0
    });
    let log = m.stop_capturing();
    assert!(!log.contains(SECRET), "{log}");
}

/// Two writers starting together on one prefix: one of them is refused
/// when it tries to take the prefix, the other acknowledges, and the bucket
/// holds exactly the winner's log. (The fence after a lost round is
/// `a_writer_that_loses_a_round_to_a_takeover_stops_acknowledging`.)
#[test]
fn two_writers_starting_together_on_one_prefix_one_is_refused() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/race", &s3.endpoint());
    r.mode = ReplicaMode::Strict;
    r.timeout = Duration::from_secs(5);
    let barrier = std::sync::Barrier::new(2);
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Vec<u64>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|w| {
                let (r, barrier, dir, tried) = (r.clone(), &barrier, dir.path(), &tried);
                sc.spawn(move || {
                    use std::sync::atomic::Ordering;
                    barrier.wait();
                    let wal = wal_at(&dir.join(format!("d{w}")), r, 1 << 20);
                    tried.fetch_add(1, Ordering::SeqCst);
                    let wal = match wal {
                        Ok(w) => w,
                        Err(e) => {
                            assert!(e.to_string().contains("another writer"), "{e}");
                            return (w, Vec::new());
                        }
                    };
                    // Both have tried to start before either appends.
                    while tried.load(Ordering::SeqCst) < 2 {
                        std::thread::yield_now();
                    }
                    let mut acked = Vec::new();
                    for i in 0..20u64 {
                        if wal.append("s", format!("w{w} {i}").as_bytes()).is_ok() {
                            acked.push(i);
                        }
                    }
                    (w, acked)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<_> = results.iter().filter(|(_, a)| !a.is_empty()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let (w, acked) = winners[0];
    assert_eq!(acked.len(), 20);
    let m = manifest(&s3, "walfs-test", "race");
    assert_eq!(m.streams["s"].next_id, 20);
    let out = dir.path().join("restored");
    walfs::replica::restore(&r, &out, &mut |_, _| {}).unwrap();
    assert_same_log_stream(&dir.path().join(format!("d{w}")), &out, "s");
}

/// Over TLS (rustls with ring, the provider walfs installs): a log ships to
/// an HTTPS endpoint and restores from it.
#[test]
fn a_bucket_over_tls_ships_and_restores() {
    let s3 = S3Server::start_tls("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/tls", &s3.endpoint());
    r.settings
        .retain(|(k, _)| k != "aws_endpoint" && k != "aws_allow_http");
    r.settings.push((
        "aws_endpoint".into(),
        format!("https://127.0.0.1:{}", s3.port),
    ));
    r.settings
        .push(("allow_invalid_certificates".into(), "true".into()));
    r.mode = ReplicaMode::Strict;
    let wal = wal_at(&dir.path().join("data"), r.clone(), 1 << 20).unwrap();
    for i in 0..10 {
        wal.append("s", format!("over tls {i}").as_bytes()).unwrap();
    }
    drop(wal);
    let out = dir.path().join("restored");
    walfs::replica::restore(&r, &out, &mut |_, _| {}).unwrap();
    assert_same_log_stream(&dir.path().join("data"), &out, "s");
}

/// The fence after a lost round: a writer holds the prefix (strict
/// replication), another restores the bucket and takes the prefix over; the
/// first one's next round loses its conditional manifest write, and from
/// then on it acknowledges nothing, while the new writer goes on. No id is
/// acknowledged by both, and the bucket holds the new writer's history.
#[test]
fn a_writer_that_loses_a_round_to_a_takeover_stops_acknowledging() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/fence", &s3.endpoint());
    r.mode = ReplicaMode::Strict;
    r.timeout = Duration::from_secs(5);
    let a = wal_at(&dir.path().join("a"), r.clone(), 1 << 20).unwrap();
    let mut acked_a = Vec::new();
    for i in 0..5 {
        acked_a.push((a.append("s", format!("a {i}").as_bytes()).unwrap(), i));
    }
    let copy = dir.path().join("b");
    walfs::replica::restore(&r, &copy, &mut |_, _| {}).unwrap();
    // Taken from a live holder on purpose (--takeover).
    let mut take = r.clone();
    take.takeover = true;
    let b = wal_at(&copy, take, 1 << 20).unwrap();
    let taken_at = b.next_id("s");
    assert_eq!(taken_at, 5);
    let epoch = manifest(&s3, "walfs-test", "fence").epoch;
    // Both go on appending, turn by turn.
    let mut acked_b = Vec::new();
    let mut refused_a = 0;
    for i in 5..25 {
        match a.append("s", format!("a {i}").as_bytes()) {
            Ok(id) => acked_a.push((id, i)),
            Err(_) => refused_a += 1,
        }
        acked_b.push(b.append("s", format!("b {i}").as_bytes()).unwrap());
    }
    assert_eq!(
        refused_a, 20,
        "the old writer acknowledged after losing the prefix"
    );
    assert!(acked_a.iter().all(|&(id, _)| id < taken_at), "{acked_a:?}");
    // A refused append commits nothing: the old writer's log ends where
    // the bucket had it, its next id no other entry's there.
    assert_eq!(
        a.next_id("s"),
        taken_at,
        "the refused entry stayed in the local log"
    );
    assert_eq!(a.get("s", taken_at).unwrap(), None);
    assert_eq!(acked_b, (5..25).collect::<Vec<u64>>());
    let m = manifest(&s3, "walfs-test", "fence");
    assert_eq!(m.epoch, epoch, "the fenced writer wrote a manifest");
    assert_eq!(m.streams["s"].next_id, 25);
    drop(a);
    drop(b);
    // Also on disk, after a reopen.
    let mut ro = WalOptions::new(dir.path().join("a"));
    ro.read_only = true;
    let reopened = Wal::new(ro).unwrap();
    assert_eq!(reopened.next_id("s"), taken_at);
    let v = walfs::verify(&walfs::RealStorage, &dir.path().join("a"), &mut |_, _| {}).unwrap();
    assert!(v.faults.is_empty(), "{:?}", v.faults);
    drop(reopened);
    let out = dir.path().join("restored");
    walfs::replica::restore(&r, &out, &mut |_, _| {}).unwrap();
    let w = Wal::new(WalOptions::new(&out)).unwrap();
    for id in 0..25u64 {
        let want = if id < 5 {
            format!("a {id}")
        } else {
            format!("b {id}")
        };
        assert_eq!(w.get("s", id).unwrap().unwrap(), want.as_bytes(), "id {id}");
    }
}

/// kill -9 in the middle of uploads (slowed by the proxy): the bucket's
/// manifest references only whole, checksummed objects (restore checks
/// every one and verifies every frame); the restarted daemon resumes from
/// the bucket's end, removes the killed one's leftovers, and the final
/// restore equals the primary byte for byte.
#[test]
fn kill_9_mid_upload_then_restart_resumes_and_restores() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let proxy = Proxy::start(s3.port);
    proxy.set(Mode::Delay(Duration::from_millis(5)));
    let env = aws_env(&proxy.endpoint());
    let args = [
        "--replicate",
        "s3://walfs-test/k",
        "--replicate-interval",
        "0.05",
        "--segment-size",
        "65536",
        "--sync",
        "batch",
    ];
    let mut m = Mounted::start_env(None, &args, &env);
    let mnt = m.mnt.display().to_string();
    let line = "x".repeat(2000);
    let writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while true; do echo {line} >> {mnt}/append || exit 0; done"
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut writer = scopeguard(writer);
    eventually("a few rounds", 30, || {
        s3.keys("walfs-test")
            .iter()
            .filter(|k| k.ends_with(".wal"))
            .count()
            >= 3
    });
    // The writer goes first: once the crashed mount is cleared, its
    // mountpoint is a plain directory, and a `>>` still running there would
    // fill the disk with a plain file (seen: 26 GB in 3 minutes). Rounds
    // are still uploading the backlog when the daemon is killed.
    let _ = writer.0.kill();
    let _ = writer.0.wait();
    m.kill9();
    let env_direct = aws_env(&s3.endpoint());

    let r1 = m.dir.path().join("r1");
    let (code, _, err) = walfs(
        &["restore", "s3://walfs-test/k", r1.to_str().unwrap()],
        &env_direct,
    );
    assert_eq!(code, 0, "{err}");

    // Restart: the local log is ahead of the bucket; shipping resumes.
    proxy.set(Mode::Pass);
    let mut m2 = Mounted::start_env(Some(&m.data), &args, &env);
    assert_eq!(
        sh(&format!("echo after >> {}/append", m2.mnt.display())).0,
        0
    );
    eventually("the bucket to catch up", 30, || mount_caught_up(&m2));
    m2.stop();
    let man = manifest(&s3, "walfs-test", "k");
    let mut referenced: Vec<String> = man.keys().map(|k| format!("k/{k}")).collect();
    let mut keys = s3.keys("walfs-test");
    keys.retain(|k| k != "k/manifest.json");
    referenced.sort();
    keys.sort();
    assert_eq!(keys, referenced, "objects no manifest references remain");
    assert!(man.epoch >= 2);

    let r2 = m.dir.path().join("r2");
    let (code, _, err) = walfs(
        &["restore", "s3://walfs-test/k", r2.to_str().unwrap()],
        &env_direct,
    );
    assert_eq!(code, 0, "{err}");
    assert_same_log(&m.data, &r2);
}

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

/// Starting is refused with one line that names the fix, leaving nothing
/// behind, and never showing the secret: a missing bucket, refused
/// credentials, a bucket ahead of the data directory, one that diverges
/// from it.
#[test]
fn refusals_at_start_are_one_clear_line() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = |data: &Path, url: &str, env: &[(String, String)]| {
        let _guard = common::mount::DetachOnDrop(mnt.clone());
        walfs(
            &[
                "mount",
                data.to_str().unwrap(),
                mnt.to_str().unwrap(),
                "--replicate",
                url,
            ],
            env,
        )
    };
    let one_line = |code: i32, err: &str, want: &str| {
        assert_eq!(code, 1, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains(SECRET), "{err}");
    };

    let fresh = dir.path().join("fresh");
    let (code, _, err) = mount(&fresh, "s3://no-such-bucket/p", &env);
    one_line(code, &err, "does not exist");
    assert!(!fresh.exists(), "a refused mount left its data directory");

    // A bucket ahead of an empty directory; then one that diverges.
    let mut r = replica("s3://walfs-test/p", &s3.endpoint());
    r.interval = Duration::from_millis(20);
    let a = dir.path().join("a");
    {
        let wal = wal_at(&a, r.clone(), 1 << 20).unwrap();
        for i in 0..10 {
            wal.append("default", format!("a{i}").as_bytes()).unwrap();
        }
    }
    let (code, _, err) = mount(&fresh, "s3://walfs-test/p", &env);
    one_line(code, &err, "walfs restore s3://walfs-test/p");
    assert!(!fresh.exists());
    let b = dir.path().join("b");
    {
        let mut o = WalOptions::new(&b);
        o.max_segment_size = 1 << 20;
        let wal = Wal::new(o).unwrap();
        for i in 0..12 {
            wal.append("default", format!("b{i}").as_bytes()).unwrap();
        }
    }
    let (code, _, err) = mount(&b, "s3://walfs-test/p", &env);
    one_line(code, &err, "differ from the bucket");
    assert!(err.contains("walfs restore"), "{err}");
    // The owner still can.
    assert_eq!(mount_and_umount(&a, &mnt, &env), 0);

    // Credentials the server refuses.
    let (strict, _, _) = S3Server::start_authenticated("walfs-test");
    let env2 = aws_env(&strict.endpoint());
    let (code, _, err) = mount(&fresh, "s3://walfs-test/p", &env2);
    one_line(code, &err, "credentials");
    assert!(!fresh.exists());

    // Not a bucket address.
    let (code, _, err) = mount(&fresh, "http://x/y", &env);
    one_line(code, &err, "s3://BUCKET/PREFIX");

    // A plain-HTTP endpoint without AWS_ALLOW_HTTP: refused at start (it
    // used to mount and wait for shipping that never starts).
    let no_http: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "AWS_ALLOW_HTTP")
        .cloned()
        .collect();
    let (code, _, err) = mount(&fresh, "s3://walfs-test/p", &no_http);
    one_line(code, &err, "AWS_ALLOW_HTTP=true");
    assert!(!fresh.exists());
    // No credentials anywhere: said so, with where they were looked for
    // (not the instance metadata service's failure).
    let no_creds: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.contains("KEY"))
        .cloned()
        .chain([("HOME".into(), dir.path().display().to_string())])
        .collect();
    let (code, _, err) = mount(&fresh, "s3://walfs-test/p", &no_creds);
    one_line(code, &err, "no AWS credentials found");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(!fresh.exists());
}

fn mount_and_umount(data: &Path, mnt: &Path, env: &[(String, String)]) -> i32 {
    let _guard = common::mount::DetachOnDrop(mnt.to_path_buf());
    let mut child = Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args([
            "mount",
            data.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--replicate",
            "s3://walfs-test/p",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child_opt = Some(child);
    common::mount::wait_ready(&mut child_opt, || mnt.join("streams").exists());
    child = child_opt.take().unwrap();
    let _ = Command::new("umount").arg(mnt).status();
    child.wait().unwrap().code().unwrap_or(-1)
}

/// A daemon whose prefix is taken over by another writer (here one started
/// on a restored copy) is fenced at its next round: its appends fail with
/// ESTALE, `stat` says so, and it never writes to the bucket again.
#[test]
fn a_fenced_daemon_stops_acknowledging() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let m = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/f",
            "--replicate-interval",
            "0.05",
        ],
        &env,
    );
    let mnt = m.mnt.display().to_string();
    assert_eq!(sh(&format!("echo one >> {mnt}/append")).0, 0);
    eventually("the bucket to catch up", 30, || mount_caught_up(&m));

    let r = replica("s3://walfs-test/f", &s3.endpoint());
    let copy = m.dir.path().join("copy");
    walfs::replica::restore(&r, &copy, &mut |_, _| {}).unwrap();
    // Taken from a live holder on purpose (--takeover).
    let mut take = r.clone();
    take.takeover = true;
    let other = wal_at(&copy, take, 64 << 20).unwrap();
    other.append("default", b"from the new writer\n").unwrap();
    let epoch = manifest(&s3, "walfs-test", "f").epoch;

    eventually("the old daemon to refuse appends", 30, || {
        let (code, _, err) = sh(&format!("/bin/echo two >> {mnt}/append"));
        code != 0 && err.contains("Stale file handle")
    });
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert!(
        stat_value(&stat, "replication").starts_with("fenced"),
        "{stat}"
    );
    drop(other);
    let after = manifest(&s3, "walfs-test", "f");
    assert_eq!(after.epoch, epoch, "the fenced daemon wrote a manifest");
    assert_eq!(after.streams["default"].next_id, 2);
}

/// Credentials, region and endpoint from `~/.aws/credentials` and
/// `~/.aws/config` (here through AWS_SHARED_CREDENTIALS_FILE and
/// AWS_CONFIG_FILE), for the profile in AWS_PROFILE, as the AWS tools read
/// them, against a server that checks signatures; and a wrong secret is a
/// one-line refusal that does not show it.
#[test]
fn aws_files_configure_the_bucket() {
    let (s3, key, secret) = S3Server::start_authenticated("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/files", &s3.endpoint());
    r.settings.retain(|(k, _)| !k.contains("access_key"));
    r.settings.push(("aws_access_key_id".into(), key.clone()));
    r.settings
        .push(("aws_secret_access_key".into(), secret.clone()));
    r.interval = Duration::from_millis(20);
    {
        let wal = wal_at(&dir.path().join("data"), r, 1 << 20).unwrap();
        wal.append("default", b"configured from files\n").unwrap();
    }
    let creds = dir.path().join("credentials");
    let config = dir.path().join("config");
    let write_creds = |secret: &str| {
        std::fs::write(
            &creds,
            format!("[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n[ledger]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap()
    };
    write_creds(&secret);
    std::fs::write(
        &config,
        format!("[default]\nregion = eu-west-1\n\n[profile ledger]\nregion = us-east-1\nendpoint_url = {}\n", s3.endpoint()),
    )
    .unwrap();
    let restore = |to: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_walfs"))
            .args([
                "restore",
                "s3://walfs-test/files",
                dir.path().join(to).to_str().unwrap(),
                "--timeout",
                "5",
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_PROFILE", "ledger")
            .env("AWS_ALLOW_HTTP", "true")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = restore("r1");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 entry "), "{err}");

    write_creds(SECRET);
    let (code, err) = restore("r2");
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("credentials"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
}

/// A stream deleted and made again after its history was shipped is not
/// shipped under the old one's ids (an id never names two entries in the
/// bucket); other streams go on shipping.
#[test]
fn a_stream_made_again_never_ships_over_its_old_history() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/again", &s3.endpoint());
    r.interval = Duration::from_millis(20);
    let wal = wal_at(&dir.path().join("data"), r, 1 << 20).unwrap();
    for i in 0..5 {
        wal.append("s", format!("old {i}\n").as_bytes()).unwrap();
    }
    let shipped = |name: &str| {
        wal.stream_info(name)
            .unwrap()
            .replication
            .unwrap()
            .replicated_id
    };
    eventually("the old stream shipped", 20, || shipped("s") == 5);
    wal.delete_stream("s").unwrap();
    for i in 0..10 {
        wal.append("s", format!("new {i}\n").as_bytes()).unwrap();
    }
    // Rounds that shipped the other stream, each after the new `s` held
    // entries: each looked at `s` and left the bucket's history alone.
    for n in 1..=2 {
        wal.append("other", b"still shipping\n").unwrap();
        eventually("the other stream shipped", 20, || {
            manifest(&s3, "walfs-test", "again")
                .streams
                .get("other")
                .is_some_and(|o| o.next_id == n)
        });
        let m = manifest(&s3, "walfs-test", "again");
        assert_eq!(m.streams["s"].next_id, 5, "round {n}");
    }
}

/// Two daemons started together on one prefix (strict replication): at most
/// one of them ever acknowledges an append; the other was refused at start
/// or is fenced. (The loser is refused when it takes the prefix; the fence
/// after a lost round is `a_writer_that_loses_a_round_to_a_takeover_stops`.)
#[test]
fn two_daemons_starting_together_on_one_prefix_one_is_refused() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let args = |d: &str, m: &str| {
        vec![
            "mount".to_string(),
            dir.path().join(d).display().to_string(),
            dir.path().join(m).display().to_string(),
            "--replicate".into(),
            "s3://walfs-test/race2".into(),
            "--replicate-sync".into(),
            "strict".into(),
            "--replicate-timeout".into(),
            "3".into(),
        ]
    };
    let mut children = Vec::new();
    let mut guards = Vec::new();
    for (d, m) in [("d1", "m1"), ("d2", "m2")] {
        std::fs::create_dir(dir.path().join(m)).unwrap();
        guards.push(common::mount::DetachOnDrop(dir.path().join(m)));
        children.push(
            Command::new(env!("CARGO_BIN_EXE_walfs"))
                .args(args(d, m))
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    // Each is either serving or has exited (refused).
    eventually("both daemons to settle", 30, || {
        children.iter_mut().zip(["m1", "m2"]).all(|(c, m)| {
            c.try_wait().unwrap().is_some() || dir.path().join(m).join("streams").exists()
        })
    });
    let mut acknowledged = Vec::new();
    for m in ["m1", "m2"] {
        let append = dir.path().join(m).join("append");
        let ok = (0..5)
            .filter(|i| {
                append.exists() && sh(&format!("/bin/echo {m}-{i} >> {}", append.display())).0 == 0
            })
            .count();
        acknowledged.push(ok);
    }
    for (c, m) in children.iter_mut().zip(["m1", "m2"]) {
        if c.try_wait().unwrap().is_none() {
            let _ = Command::new("umount").arg(dir.path().join(m)).status();
            let _ = c.wait();
        }
    }
    drop(guards);
    assert_eq!(
        acknowledged.iter().filter(|n| **n > 0).count(),
        1,
        "acknowledged per daemon: {acknowledged:?}"
    );
    assert!(acknowledged.contains(&5), "{acknowledged:?}");
    let m = manifest(&s3, "walfs-test", "race2");
    assert_eq!(m.streams["default"].next_id, 5);
}

/// A sharded log ships its checkpoints (SHARDS, checkpoints.log, HEAD) with
/// its shards; a restore brings them back, readable by walfs and ironwal,
/// and verify on the bucket checks them.
#[test]
fn a_sharded_log_ships_and_restores_its_checkpoints() {
    use walfs::sharded::ShardedWal;
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut r = replica("s3://walfs-test/sharded", &s3.endpoint());
    r.interval = Duration::from_millis(20);
    let mut o = WalOptions::new(&data);
    o.max_segment_size = 4096;
    o.replicate = Some(r);
    let w = ShardedWal::new(o, 4).unwrap();
    for round in 0..3 {
        for i in 0..100 {
            w.append(
                format!("key-{i}").as_bytes(),
                format!("r{round} e{i}").as_bytes(),
            )
            .unwrap();
        }
        w.create_checkpoint(format!("cp-{round}").as_bytes())
            .unwrap();
    }
    w.compact_checkpoints(2).unwrap();
    let caught_up = || {
        let m = manifest(&s3, "walfs-test", "sharded");
        let log = std::fs::read(data.join("checkpoints.log")).unwrap();
        m.files
            .get("checkpoints.log")
            .is_some_and(|o| o.crc32 == crc32fast::hash(&log))
            && (0..4u16).all(|s| {
                let n = walfs::sharded::shard_name(s);
                m.streams.get(&n).map(|x| x.next_id) == Some(w.inner().next_id(&n))
            })
    };
    eventually("the checkpoints shipped", 20, caught_up);
    let m = manifest(&s3, "walfs-test", "sharded");
    assert_eq!(
        m.files.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["HEAD", "SHARDS", "checkpoints.log"]
    );
    // The versions compaction replaced are retired: no longer referenced,
    // listed for deletion after the grace a follower's read needs; nothing
    // else is left in the bucket.
    let m = manifest(&s3, "walfs-test", "sharded");
    let in_use: Vec<&str> = m.files.values().map(|o| o.key.as_str()).collect();
    let retired: Vec<&str> = m.retired.iter().map(|r| r.key.as_str()).collect();
    for k in s3.keys("walfs-test") {
        if let Some(k) = k
            .strip_prefix("sharded/")
            .filter(|k| k.starts_with("files/"))
        {
            assert!(
                in_use.contains(&k) || retired.contains(&k),
                "{k}: neither in use nor retired"
            );
        }
    }
    assert!(!retired.is_empty(), "compaction replaced versions");
    let listed = w.list_checkpoints();
    drop(w);

    let env = aws_env(&s3.endpoint());
    let (code, _, err) = walfs(&["verify", "s3://walfs-test/sharded"], &env);
    assert_eq!(code, 0, "{err}");
    let restored = dir.path().join("restored");
    let (code, _, err) = walfs(
        &[
            "restore",
            "s3://walfs-test/sharded",
            restored.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    for f in ["SHARDS", "checkpoints.log", "HEAD"] {
        assert_eq!(
            std::fs::read(restored.join(f)).unwrap(),
            std::fs::read(data.join(f)).unwrap(),
            "{f}"
        );
    }
    let back = ShardedWal::open(WalOptions::new(&restored)).unwrap();
    assert_eq!(back.list_checkpoints(), listed);
    let (latest, cp) = back.load_latest_checkpoint().unwrap();
    assert_eq!(latest, b"cp-2");
    assert_eq!(cp.offsets.iter().sum::<u64>(), 300);
    let cp1 = back.load_checkpoint(b"cp-1").unwrap();
    let after: usize = (0..4u16)
        .map(|s| back.iter_shard(s, cp1.offsets[s as usize]).unwrap().count())
        .sum();
    assert_eq!(after, 100);
    drop(back);
    let iw = ironwal::sharded::ShardedWal::new(ironwal::WalOptions::new(&restored), 4).unwrap();
    assert_eq!(iw.load_latest_checkpoint().unwrap().0, b"cp-2");
}

/// `stat` says "ok" only once the bucket holds everything durable here;
/// before, it says what is still to ship.
#[test]
fn stat_says_ok_only_when_the_bucket_has_everything() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/okay", &s3.endpoint());
    r.interval = Duration::from_secs(3600);
    let wal = wal_at(&dir.path().join("data"), r, 1 << 20).unwrap();
    for i in 0..50 {
        wal.append("s", format!("{i}").as_bytes()).unwrap();
    }
    let info = wal.stream_info("s").unwrap().replication.unwrap();
    assert_eq!(info.replicated_id, 0);
    assert!(
        info.state.starts_with("shipping (50 entries"),
        "{}",
        info.state
    );
    drop(wal); // a clean close ships the rest
    let m = manifest(&s3, "walfs-test", "okay");
    assert_eq!(m.streams["s"].next_id, 50);
}

/// Restore stages in a directory of its own: a user's `DATA.restoring` is
/// left alone, and `DIR/` (a trailing slash) restores into DIR.
#[test]
fn restore_touches_nothing_but_data() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let r = replica("s3://walfs-test/rs", &s3.endpoint());
    {
        let wal = wal_at(&dir.path().join("src"), r.clone(), 1 << 20).unwrap();
        wal.append("s", b"kept\n").unwrap();
    }
    let mine = dir.path().join("out.restoring");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("thesis.tex"), b"years of work").unwrap();
    walfs::replica::restore(&r, &dir.path().join("out"), &mut |_, _| {}).unwrap();
    assert_eq!(
        std::fs::read(mine.join("thesis.tex")).unwrap(),
        b"years of work"
    );
    // DIR/ with DIR empty.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = walfs(
        &[
            "restore",
            "s3://walfs-test/rs",
            &format!("{}/", empty.display()),
        ],
        &aws_env(&s3.endpoint()),
    );
    assert_eq!(code, 0, "{err}");
    let wal = Wal::new(WalOptions::new(&empty)).unwrap();
    assert_eq!(wal.get("s", 0).unwrap().unwrap(), b"kept\n");
    let beside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        beside
            .iter()
            .all(|n| ["src", "out", "out.restoring", "empty"].contains(&n.as_str())),
        "{beside:?}"
    );
}

#[test]
fn retention_frees_nothing_the_bucket_does_not_hold() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let proxy = Proxy::start(s3.port);
    proxy.set(Mode::Reset);
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/kept", &proxy.endpoint());
    r.interval = Duration::from_millis(100);
    r.timeout = Duration::from_secs(2);
    // Appends go on while the bucket is away only without a lease.
    r.lease = None;
    let mut o = WalOptions::new(dir.path());
    o.max_segment_size = 16 << 10;
    o.replicate = Some(r);
    o.retain_bytes = Some(1);
    let wal = Wal::new(o).unwrap();
    let line = |i: u64| format!("kept {i:05} {}\n", "k".repeat(500)).into_bytes();
    for i in 0..200 {
        wal.append("default", &line(i)).unwrap();
    }
    // The bucket is unreachable: its replicated id is 0, nothing may go.
    let held = wal.apply_retention("default", u64::MAX).unwrap().unwrap();
    assert_eq!(held.segments, 0);
    let (at, why) = held.held.unwrap();
    assert_eq!(at, 0);
    assert!(why.contains("not in the bucket yet"), "{why}");
    assert_eq!(wal.first_id("default"), 0);
    // Once the bucket holds them, the sealed segments go; the bucket keeps
    // the whole history (tiered retention).
    proxy.set(Mode::Pass);
    eventually("the bucket to catch up", 30, || {
        wal.stream_info("default")
            .and_then(|i| i.replication)
            .is_some_and(|r| r.replicated_id == 200)
    });
    let done = wal.apply_retention("default", u64::MAX).unwrap().unwrap();
    assert!(done.segments > 5 && done.held.is_none(), "{done:?}");
    assert_eq!(wal.segments("default").len(), 1);
    let first = wal.first_id("default");
    assert_eq!(wal.get("default", first).unwrap(), Some(line(first)));
    drop(wal);
    // Restarted, the writer takes its prefix again: the bucket's segments
    // this directory lacks are the ones retention freed here.
    {
        let mut r = replica("s3://walfs-test/kept", &s3.endpoint());
        r.lease = None;
        let mut o = WalOptions::new(dir.path());
        o.max_segment_size = 16 << 10;
        o.replicate = Some(r);
        let wal = Wal::new(o).unwrap();
        assert_eq!(wal.append("default", &line(200)).unwrap(), 200);
    }
    let back = tempfile::tempdir().unwrap();
    let restored = back.path().join("data");
    let (code, _, err) = walfs(
        &[
            "restore",
            "s3://walfs-test/kept",
            restored.to_str().unwrap(),
        ],
        &aws_env(&s3.endpoint()),
    );
    assert_eq!(code, 0, "{err}");
    let w = Wal::new(WalOptions::new(&restored)).unwrap();
    assert_eq!(w.first_id("default"), 0);
    for i in [0, 1, first - 1, first, 199] {
        assert_eq!(w.get("default", i).unwrap(), Some(line(i)), "id {i}");
    }
}

#[test]
fn sse_encrypts_every_object_shipped() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    for (sse, header, key) in [
        ("aes256", "aes256", None),
        ("aws:kms:walfs-key-1", "aws:kms", Some("walfs-key-1")),
    ] {
        let prefix = format!("sse-{}", header.replace(':', "-"));
        let url = format!("s3://walfs-test/{prefix}");
        let mut m = Mounted::start_env(
            None,
            &[
                "--replicate",
                &url,
                "--replicate-interval",
                "0.1",
                "--sse",
                sse,
            ],
            &env,
        );
        let (code, _, err) = sh(&format!("echo one >> {}", m.path("append").display()));
        assert_eq!(code, 0, "{err}");
        eventually("the bucket to catch up", 30, || mount_caught_up(&m));
        m.stop();
        let keys = s3.keys("walfs-test");
        let ours: Vec<&String> = keys.iter().filter(|k| k.starts_with(&prefix)).collect();
        assert!(ours.len() >= 2, "{keys:?}");
        for k in ours {
            let head = s3.head("walfs-test", k);
            assert!(
                head.contains(&format!("x-amz-server-side-encryption: {header}")),
                "{k}: {head}"
            );
            if let Some(key) = key {
                assert!(head.contains(key), "{k}: {head}");
            }
        }
    }
}

#[test]
fn restore_to_an_id_gives_the_log_as_it_stood() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let line = |i: u64| format!("ledger {i:04}\n").into_bytes();
    {
        let mut r = replica("s3://walfs-test/pit", &s3.endpoint());
        r.mode = ReplicaMode::Strict;
        let wal = wal_at(&data, r, 1024).unwrap();
        for i in 0..100 {
            wal.append("default", &line(i)).unwrap();
        }
        let batch: Vec<Vec<u8>> = (100..105).map(line).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        assert_eq!(wal.append_batch("default", &refs).unwrap(), 100..105);
        for i in 105..120 {
            wal.append("default", &line(i)).unwrap();
        }
        wal.append("audit", b"other stream\n").unwrap();
        assert!(wal.segments("default").len() > 3);
    }
    let url = "s3://walfs-test/pit";
    let out = |name: &str| dir.path().join(name).display().to_string();
    // Two streams: which one must be said.
    let (code, _, err) = walfs(&["restore", url, &out("r0"), "--to-id", "57"], &env);
    assert_ne!(code, 0);
    assert!(
        err.contains("audit, default") && err.contains("--stream"),
        "{err}"
    );
    assert!(!dir.path().join("r0").exists());
    // Inside the batch: refused, naming its ends.
    let (code, _, err) = walfs(
        &[
            "restore",
            url,
            &out("r1"),
            "--to-id",
            "102",
            "-s",
            "default",
        ],
        &env,
    );
    assert_ne!(code, 0);
    assert!(err.contains("--to-id 100 or 105"), "{err}");
    // Past the end, or nothing: refused.
    for bad in ["121", "0"] {
        let (code, _, err) = walfs(
            &["restore", url, &out("r2"), "--to-id", bad, "-s", "default"],
            &env,
        );
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains("--to-id takes 1..=120"), "{err}");
    }
    // In the middle of a segment, and at the batch's start.
    for to in [57u64, 100, 105, 120] {
        let r = out(&format!("at{to}"));
        let (code, _, err) = walfs(
            &[
                "restore",
                url,
                &r,
                "--to-id",
                &to.to_string(),
                "-s",
                "default",
            ],
            &env,
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(&format!("{to} entries up to id {to}"))
                && err.contains("ship it to another prefix"),
            "{err}"
        );
        let (code, _, err) = walfs(&["verify", &r], &[]);
        assert_eq!(code, 0, "{to}: {err}");
        // The last segment is the original's, cut where id `to` starts.
        let mine = w_path(&Path::new(&r).join("default"), to);
        let theirs = data.join("default").join(mine.file_name().unwrap());
        let (mine, theirs) = (std::fs::read(mine).unwrap(), std::fs::read(theirs).unwrap());
        assert!(!mine.is_empty() && theirs.starts_with(&mine), "{to}");
        let w = Wal::new(WalOptions::new(&r)).unwrap();
        assert_eq!(w.streams(), ["default"]);
        assert_eq!(w.next_id("default"), to);
        let got: Vec<Vec<u8>> = w.iter("default", 0).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(got, (0..to).map(line).collect::<Vec<_>>());
        // It goes on from there.
        assert_eq!(w.append("default", b"after\n").unwrap(), to);
    }
    // The CLI on the bucket stops where asked too.
    let (code, o, err) = walfs(&["cat", url, "--from", "3", "--until", "6"], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(o, "ledger 0003\nledger 0004\nledger 0005\n");
}

/// The segment file of `dir` holding id `id - 1` (the restored active one).
fn w_path(dir: &Path, id: u64) -> std::path::PathBuf {
    let mut segs: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".wal")?.parse().ok()
        })
        .collect();
    segs.sort();
    let start = segs.into_iter().filter(|&s| s < id).max().unwrap();
    dir.join(format!("{start:020}.wal"))
}

/// Bucket retention keeps the bucket at its bound while the primary ships
/// on, and a follower reading meanwhile sees the floor move without
/// losing its place.
#[test]
fn bucket_retention_removes_the_oldest_segments_and_shipping_goes_on() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let mut m = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/bret",
            "--replicate-interval",
            "0.1",
            "--segment-size",
            "2K",
            "--bucket-retain-bytes",
            "4K",
            "--bucket-retain-interval",
            "0.5",
        ],
        &env,
    );
    let mnt = m.mnt.display().to_string();
    let (code, _, err) = sh(&format!("echo \"bucket retention line 1\" >> {mnt}/append"));
    assert_eq!(code, 0, "{err}");
    eventually("the first line shipped", 30, || mount_caught_up(&m));
    // A follower reads while the bucket's floor moves: `tail -f` on its
    // `log` from the first line.
    let cache = m.dir.path().join("cache");
    let f = Mounted::start_env(
        Some(Path::new("s3://walfs-test/bret")),
        &["--poll", "0.1", "--cache-dir", cache.to_str().unwrap()],
        &env,
    );
    let tailed = f.dir.path().join("tailed");
    let mut tail = Command::new("tail")
        .args(["-n", "+1", "-f"])
        .arg(f.path("log"))
        .stdout(std::fs::File::create(&tailed).unwrap())
        .spawn()
        .unwrap();
    let (code, _, err) = sh(&format!(
        "for i in $(seq 2 200); do echo \"bucket retention line $i\" >> {mnt}/append || exit 1; done"
    ));
    assert_eq!(code, 0, "{err}");
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert!(
        stat.contains("retention: bucket: bytes <= 4096\n"),
        "{stat}"
    );
    // The bucket keeps about the newest 4 KiB; the writer adopts each
    // truncation and ships everything.
    eventually("the bucket to drop its oldest segments", 30, || {
        let m = manifest(&s3, "walfs-test", "bret");
        m.streams
            .get("default")
            .is_some_and(|g| g.segments[0].start_id > 0 && g.next_id == 200)
    });
    eventually("the bucket to hold no more than the bound", 30, || {
        let g = &manifest(&s3, "walfs-test", "bret").streams["default"];
        let held: u64 = g.segments.iter().map(|s| s.len).sum();
        let last = g.segments.last().unwrap().len;
        held <= 4096 + last
    });
    // More appends still ship.
    let (code, _, err) = sh(&format!("echo after >> {mnt}/append"));
    assert_eq!(code, 0, "{err}");
    eventually("the bucket to catch up", 30, || mount_caught_up(&m));
    // The follower sees the floor move: the oldest ids are gone there, the
    // newest read; its `tail -f` goes on past the floor.
    eventually("the follower to see the floor", 30, || {
        let stat = std::fs::read_to_string(f.path("stat")).unwrap();
        stat_value(&stat, "first_id") != "0" && stat_value(&stat, "next_id") == "201"
    });
    assert!(std::fs::read(f.path("entries/0")).is_err());
    assert_eq!(std::fs::read(f.path("entries/200")).unwrap(), b"after\n");
    let want: String = (1..=200)
        .map(|i| format!("bucket retention line {i}\n"))
        .chain(["after\n".to_string()])
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&tailed)
        .unwrap_or_default()
        .ends_with("after\n")
    {
        assert!(
            Instant::now() < deadline,
            "tail -f on the follower (exited: {:?}) printed {:?}",
            tail.try_wait(),
            std::fs::read_to_string(&tailed).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = tail.kill();
    let _ = tail.wait();
    // What retention removed before `tail -f` (a poll a second) read it is
    // skipped; nothing is read twice, out of order, or as other bytes.
    let got = std::fs::read_to_string(&tailed).unwrap();
    let want: Vec<&str> = want.lines().collect();
    let mut at = 0;
    for line in got.lines() {
        let i = want[at..]
            .iter()
            .position(|w| *w == line)
            .unwrap_or_else(|| panic!("{line:?} out of order or not written: {got}"));
        at += i + 1;
    }
    drop(f);
    // The local disk keeps everything (tiered).
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert_eq!(stat_value(&stat, "first_id"), "0");
    let log = m.stop_capturing();
    assert!(log.contains("bucket retention removed"), "{log}");
    let g = &manifest(&s3, "walfs-test", "bret").streams["default"];
    assert_eq!(g.next_id, 201);
    assert_eq!(g.floor, g.segments[0].start_id);
}

#[test]
fn bucket_retention_by_age_removes_what_was_written_before_it() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/aged", &s3.endpoint());
    r.mode = ReplicaMode::Strict;
    let wal = wal_at(dir.path(), r.clone(), 1024).unwrap();
    for i in 0..100u32 {
        wal.append("default", format!("aged {i:03}\n").as_bytes())
            .unwrap();
    }
    let segs = manifest(&s3, "walfs-test", "aged").streams["default"]
        .segments
        .len();
    assert!(segs > 3, "{segs}");
    let check = walfs::replica::check::apply_bucket_retention;
    let hour = Duration::from_secs(3600);
    assert_eq!(check(&r, None, Some(hour)).unwrap(), []);
    std::thread::sleep(Duration::from_millis(2100));
    let done = check(&r, None, Some(Duration::from_secs(1))).unwrap();
    assert_eq!(done.len(), 1);
    let (stream, n, first) = &done[0];
    assert_eq!((stream.as_str(), *n), ("default", segs - 1));
    let g = &manifest(&s3, "walfs-test", "aged").streams["default"];
    assert_eq!(g.segments.len(), 1, "never the last");
    assert_eq!(g.segments[0].start_id, *first);
    // The writer adopts it and ships on.
    wal.append("default", b"after\n").unwrap();
    assert_eq!(
        manifest(&s3, "walfs-test", "aged").streams["default"].next_id,
        101
    );
}

/// CPU ticks (user and system) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Between rounds the shipper sleeps until its interval (or a writer)
/// wakes it, and a round with nothing new writes nothing and says
/// nothing: a replicating daemon with nothing to ship uses next to no CPU
/// and sends no PUT (no lease to renew here).
#[test]
fn an_idle_replicating_daemon_sleeps_between_rounds() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let port = common::metrics_port();
    let mut m = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/idle",
            "--replicate-interval",
            "0.2",
            "--sync",
            "async",
            "--lease",
            "off",
            "--metrics",
            &port.to_string(),
        ],
        &env,
    );
    let (code, _, err) = sh(&format!("echo one >> {}", m.path("append").display()));
    assert_eq!(code, 0, "{err}");
    eventually("the bucket to catch up", 20, || mount_caught_up(&m));
    let puts = || common::metric(port, "walfs_replica_puts_total");
    let (t0, p0) = (cpu_ticks(m.pid()), puts());
    std::thread::sleep(Duration::from_secs(2));
    let (used, put) = (cpu_ticks(m.pid()) - t0, puts() - p0);
    // A shipper that does not wait spins a core: about 200 ticks in 2 s.
    println!("idle for 2 s: {used} ticks of CPU, {put} PUTs");
    assert!(
        used <= 30,
        "idle for 2 s, the daemon used {used} ticks of CPU"
    );
    assert_eq!(put, 0, "idle rounds wrote to the bucket");
    // Caught up all along: no lag, whatever the time since the last round.
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert_eq!(stat_value(&stat, "replication_lag_ms"), "0", "{stat}");
    assert_eq!(stat_value(&stat, "replication"), "ok", "{stat}");
    let log = m.stop_capturing();
    assert!(!log.contains("made again"), "{log}");
    // A log without root files (no sharded checkpoints) has nothing to warn of.
    assert!(!log.contains("could not be read"), "{log}");
}

/// An idle primary renews its lease every third of it (one conditional
/// PUT of the manifest), not more often and not later: a 2 s lease, and
/// rounds otherwise only every minute, gives 4 or 5 PUTs in 3 s.
#[test]
fn an_idle_primary_renews_its_lease_every_third_of_it() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let port = common::metrics_port();
    let m = Mounted::start_env(
        None,
        &[
            "--replicate",
            "s3://walfs-test/renew",
            "--replicate-interval",
            "60",
            "--lease",
            "2s",
            "--metrics",
            &port.to_string(),
        ],
        &env,
    );
    let puts = || common::metric(port, "walfs_replica_puts_total");
    eventually("the prefix taken", 20, || replication_ok(&m));
    let p0 = puts();
    std::thread::sleep(Duration::from_secs(3));
    let renewals = puts() - p0;
    println!("idle for 3 s with a 2 s lease: {renewals} PUTs");
    assert!(
        (3..=6).contains(&renewals),
        "idle for 3 s with a 2 s lease: {renewals} PUTs, not one every 0.67 s"
    );
}

/// A stream deleted and made again right after a start, before the first
/// round, is the same case as one made again later: its new entries never
/// ship over the old history, even once it holds more ids than the bucket.
#[test]
fn a_stream_made_again_before_the_first_round_never_ships_over_its_history() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/early", &s3.endpoint());
    r.interval = Duration::from_millis(20);
    {
        let wal = wal_at(&dir.path().join("data"), r.clone(), 1 << 20).unwrap();
        for i in 0..5 {
            wal.append("s", format!("old {i}\n").as_bytes()).unwrap();
        }
    } // a clean close ships them
    assert_eq!(manifest(&s3, "walfs-test", "early").streams["s"].next_id, 5);
    r.interval = Duration::from_secs(3600);
    let wal = wal_at(&dir.path().join("data"), r, 1 << 20).unwrap();
    wal.delete_stream("s").unwrap();
    for i in 0..10 {
        wal.append("s", format!("new {i}\n").as_bytes()).unwrap();
    }
    drop(wal); // the last round looks at `s`
    let m = manifest(&s3, "walfs-test", "early");
    assert_eq!(
        m.streams["s"].next_id, 5,
        "the new stream shipped over the old"
    );
}

/// A retired object (a part merged into a larger one) is deleted by the
/// first round after its grace: here one planted in the manifest as
/// retired at the epoch's start, long over its 60 s.
#[test]
fn a_retired_object_past_its_grace_is_deleted() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let mut r = replica("s3://walfs-test/grace", &s3.endpoint());
    r.interval = Duration::from_millis(20);
    {
        let wal = wal_at(&dir.path().join("data"), r.clone(), 1 << 20).unwrap();
        wal.append("s", b"first\n").unwrap();
    }
    let mut m = manifest(&s3, "walfs-test", "grace");
    s3.put("walfs-test", "grace/s/old-part", b"merged long ago");
    m.retired.push(walfs::replica::manifest::Retired {
        key: "s/old-part".into(),
        since_ms: 1,
    });
    s3.put("walfs-test", "grace/manifest.json", &m.encode());
    let wal = wal_at(&dir.path().join("data"), r, 1 << 20).unwrap();
    let id = wal.append("s", b"second\n").unwrap();
    eventually("a round", 20, || {
        wal.stream_info("s")
            .unwrap()
            .replication
            .unwrap()
            .replicated_id
            > id
    });
    let m = manifest(&s3, "walfs-test", "grace");
    assert!(m.retired.iter().all(|r| r.key != "s/old-part"), "{m:?}");
    let keys = s3.keys("walfs-test");
    assert!(!keys.contains(&"grace/s/old-part".to_string()), "{keys:?}");
}
