//! A standby that takes over by itself, against a real S3-compatible server
//! (moto) on loopback, with one TCP fault proxy per daemon where a test
//! partitions one: kill -9 of a strict primary under 8 writers, two
//! standbys racing for one lapse, a plain start refused on a live prefix,
//! a partitioned async primary whose unshipped entries are moved aside when
//! it rejoins as a standby, and a loop of failovers
//! (WALFS_FAILOVER_LOOPS, 20 by default).

mod common;

use common::mount::Mounted;
use common::s3::{aws_env, Mode, Proxy, S3Server};
use common::{eventually, stat_value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use walfs::replica::manifest::Manifest;

const LEASE: &str = "2s";

fn manifest(s: &S3Server, prefix: &str) -> Manifest {
    Manifest::decode(&s.get("walfs-test", &format!("{prefix}/manifest.json"))).unwrap()
}

fn primary_args<'a>(url: &'a str, sync: &'a str) -> Vec<&'a str> {
    vec![
        "--replicate",
        url,
        "--replicate-sync",
        sync,
        "--replicate-interval",
        "0.05",
        "--lease",
        LEASE,
    ]
}

/// A standby that will ship with `sync` replication once promoted.
fn standby_args<'a>(url: &'a str, sync: &'a str) -> Vec<&'a str> {
    let mut a = primary_args(url, sync);
    a.push("--standby");
    a
}

/// One append through a mount: Ok once write(2) returned (acknowledged).
fn append(mnt: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("append"))?;
    f.write_all(line.as_bytes())
}

fn role(m: &Mounted) -> String {
    std::fs::read_to_string(m.path("stat"))
        .map(|s| stat_value(&s, "role"))
        .unwrap_or_default()
}

fn lines(log: &str) -> HashMap<&str, usize> {
    let mut n = HashMap::new();
    for l in log.lines() {
        *n.entry(l).or_default() += 1;
    }
    n
}

/// Appends of `writers` threads, each to every one of `mounts` in turn,
/// until stopped: every acknowledged line, with when and where.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, Instant, usize)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(writers: usize, mounts: Vec<PathBuf>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..writers)
            .map(|w| {
                let (stop, acked, mounts) = (stop.clone(), acked.clone(), mounts.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // Every mount in turn, so that two machines
                        // acknowledging at once would show.
                        for (at, mnt) in mounts.iter().enumerate() {
                            let line = format!("w{w}-{n}\n");
                            n += 1;
                            match append(mnt, &line) {
                                Ok(()) => acked.lock().unwrap().push((
                                    line.trim_end().to_owned(),
                                    Instant::now(),
                                    at,
                                )),
                                // Not acknowledged: it may be in a log or
                                // not; a new line goes on (never the same
                                // one twice).
                                Err(_) => std::thread::sleep(Duration::from_millis(2)),
                            }
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            threads,
        }
    }

    fn finish(self) -> Vec<(String, Instant, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// The mount's stream has every line of `acked` exactly once and its
/// stat's ids are contiguous; returns the log.
fn assert_all_once(m: &Mounted, acked: &[(String, Instant, usize)]) -> String {
    let log = std::fs::read_to_string(m.path("log")).unwrap();
    let seen = lines(&log);
    let missing: Vec<&str> = acked
        .iter()
        .filter(|(l, _, _)| !seen.contains_key(l.as_str()))
        .map(|(l, _, _)| l.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged but lost of {} (the log holds {} lines), the first: {:?}",
        missing.len(),
        acked.len(),
        seen.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(10).collect();
    assert!(twice.is_empty(), "lines twice: {twice:?}");
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    let next: usize = stat_value(&stat, "next_id").parse().unwrap();
    let first: usize = stat_value(&stat, "first_id").parse().unwrap();
    assert_eq!(next - first, log.lines().count(), "ids are not contiguous");
    log
}

/// The bucket's log, restored, equals the mount's data directory's
/// segments byte for byte.
fn assert_bucket_agrees(s3: &S3Server, url: &str, m: &Mounted) {
    eventually("the new primary to ship everything", 30, || {
        let stat = std::fs::read_to_string(m.path("stat")).unwrap();
        stat_value(&stat, "replicated_id") == stat_value(&stat, "next_id")
    });
    let copy = m.dir.path().join("restored");
    let r = common::replica_options(url, &s3.endpoint());
    walfs::replica::restore(&r, &copy, &mut |_, _| {}).unwrap();
    let mut n = 0;
    for f in std::fs::read_dir(copy.join("default")).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().into_string().unwrap();
        if name.ends_with(".wal") {
            assert_eq!(
                std::fs::read(f.path()).unwrap(),
                std::fs::read(m.data.join("default").join(&name)).unwrap(),
                "segment {name} differs between the bucket and the new primary"
            );
            n += 1;
        }
    }
    assert!(n > 0);
}

/// kill -9 of a strict primary under 8 writers: the standby promotes
/// within the lease plus 2 s, the writers go on through its mount, and
/// every acknowledged entry is there exactly once, ids contiguous, the
/// bucket agreeing byte for byte.
#[test]
fn kill_9_of_a_strict_primary_under_8_writers_the_standby_takes_over() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/kill";
    let mut a = Mounted::start_env(None, &primary_args(url, "strict"), &env);
    append(&a.mnt, "before the standby\n").unwrap();
    let b = Mounted::start_env(None, &standby_args(url, "strict"), &env);
    assert_eq!(role(&b), "standby");
    eventually("the standby to apply the first entry", 10, || {
        std::fs::read_to_string(b.path("log")).unwrap_or_default() == "before the standby\n"
    });
    let e = append(&b.mnt, "refused\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    // `tail -f` on the standby's mount, across its promotion.
    let tailed = b.dir.path().join("tailed");
    let mut tail = std::process::Command::new("tail")
        .args(["-n", "+1", "-f"])
        .arg(b.path("log"))
        .stdout(std::fs::File::create(&tailed).unwrap())
        .spawn()
        .unwrap();
    let writers = Writers::start(8, vec![a.mnt.clone(), b.mnt.clone()]);
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    a.kill9();
    eventually("the standby to take over", 20, || role(&b) == "primary");
    std::thread::sleep(Duration::from_millis(1500));
    let mut acked = writers.finish();
    acked.push(("before the standby".into(), killed, 0));
    let first_on_b = acked
        .iter()
        .filter(|(_, _, at)| *at == 1)
        .map(|(_, t, _)| *t)
        .min()
        .expect("the writers appended through the new primary");
    let failover = first_on_b - killed;
    eprintln!(
        "failover: {:.2} s from kill -9 to the first acknowledged append ({} acknowledged in all)",
        failover.as_secs_f64(),
        acked.len()
    );
    assert!(acked.iter().any(|(_, _, at)| *at == 0));
    let log = assert_all_once(&b, &acked);
    eventually("tail -f on the standby to show the whole log", 10, || {
        std::fs::read_to_string(&tailed).unwrap_or_default().len() >= log.len()
    });
    let _ = tail.kill();
    let _ = tail.wait();
    assert_eq!(std::fs::read_to_string(&tailed).unwrap(), log);
    assert_bucket_agrees(&s3, url, &b);
    // Writes that failed may be in the log too (a primary killed between
    // its manifest write and the reply): never more than 8 of them.
    let held = manifest(&s3, "kill").streams["default"].next_id as usize;
    assert_eq!(held, log.lines().count());
    assert!(
        held - acked.len() <= 8,
        "{held} held, {} acknowledged",
        acked.len()
    );
}

/// Two standbys race for one lapse: exactly one becomes primary, the other
/// stays a standby (refusing appends) and follows the winner.
#[test]
fn two_standbys_race_for_one_lapse_exactly_one_becomes_primary() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/race";
    let mut a = Mounted::start_env(None, &primary_args(url, "strict"), &env);
    append(&a.mnt, "one\n").unwrap();
    // Each standby tells its own NOTIFY_SOCKET and serves its metrics.
    let t = tempfile::tempdir().unwrap();
    let standby = |name: &str| {
        let sock_path = t.path().join(name);
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let mut env = env.clone();
        env.push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
        // Both decide within a poll (250 ms) of each other, then wait 1 s
        // before writing: their conditional writes race.
        env.push(("WALFS_FAILPOINT_STANDBY_TAKE_MS".into(), "1000".into()));
        let mut args = standby_args(url, "strict");
        args.extend(["--metrics", &port]);
        (Mounted::start_env(None, &args, &env), sock, port)
    };
    let (b, b_sock, b_port) = standby("b");
    let (c, c_sock, c_port) = standby("c");
    assert_eq!(metric(&b_port, "walfs_role"), 2.0);
    let epoch = manifest(&s3, "race").epoch;
    a.kill9();
    eventually("a standby to take over", 20, || {
        role(&b) == "primary" || role(&c) == "primary"
    });
    // Time for a second winner, if there were one.
    std::thread::sleep(Duration::from_secs(3));
    let (won, lost, won_sock, lost_sock, won_port, lost_port) = if role(&b) == "primary" {
        (&b, &c, &b_sock, &c_sock, &b_port, &c_port)
    } else {
        (&c, &b, &c_sock, &b_sock, &c_port, &b_port)
    };
    assert_eq!(role(lost), "standby");
    assert_eq!(manifest(&s3, "race").epoch, epoch + 1);
    append(&won.mnt, "two\n").unwrap();
    let e = append(&lost.mnt, "three\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    eventually("the loser to follow the winner", 10, || {
        std::fs::read_to_string(lost.path("log")).unwrap_or_default() == "one\ntwo\n"
    });
    // Announced: to systemd and in the metrics, by the winner only.
    let said = |sock: &std::os::unix::net::UnixDatagram| {
        let mut all = String::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        all
    };
    let w = said(won_sock);
    assert!(
        w.contains("READY=1") && w.contains("STATUS=promoted: took s3://walfs-test/race"),
        "{w}"
    );
    let l = said(lost_sock);
    assert!(l.contains("READY=1") && !l.contains("promoted"), "{l}");
    assert_eq!(metric(won_port, "walfs_role"), 1.0);
    assert_eq!(metric(won_port, "walfs_failovers_total"), 1.0);
    assert_eq!(metric(lost_port, "walfs_role"), 2.0);
    assert_eq!(metric(lost_port, "walfs_failovers_total"), 0.0);
}

/// One value of a mount's metrics.
fn metric(port: &str, name: &str) -> f64 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

/// A plain start (no --standby) on a prefix whose holder is alive is
/// refused with one line naming --standby and --takeover, and changes
/// nothing in the bucket; the holder goes on.
#[test]
fn a_plain_start_on_a_live_prefix_is_refused() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/live";
    let a = Mounted::start_env(None, &primary_args(url, "async"), &env);
    append(&a.mnt, "one\n").unwrap();
    eventually("the bucket to hold it", 10, || {
        manifest(&s3, "live")
            .streams
            .get("default")
            .map(|s| s.next_id)
            == Some(1)
    });
    let keys = s3.keys("walfs-test");
    let epoch = manifest(&s3, "live").epoch;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = common::mount::DetachOnDrop(mnt.clone());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .arg("mount")
        .arg(&data)
        .arg(&mnt)
        .args(primary_args(url, "async"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--standby") && err.contains("--takeover") && err.contains("lease is live"),
        "{err}"
    );
    assert!(!common::mount::is_mounted(&mnt));
    assert!(!data.exists(), "the refused start left its data directory");
    assert_eq!(manifest(&s3, "live").epoch, epoch);
    assert_eq!(role(&a), "primary");
    append(&a.mnt, "two\n").unwrap();
    let mut after = s3.keys("walfs-test");
    after.retain(|k| !keys.contains(k));
    eventually("the holder to ship on", 10, || {
        manifest(&s3, "live").streams["default"].next_id == 2
    });
    // The refused start wrote no object: only the holder's new ones.
    assert!(
        after.iter().all(|k| k.contains(&format!("-{epoch:016x}"))
            || k.ends_with("manifest.json")
            || k.contains(&format!("{epoch}"))),
        "{after:?}"
    );
}

/// An async primary partitioned from the bucket stops acknowledging within
/// its lease; the standby takes over after it; no id is acknowledged by
/// both (every acknowledgment of the old primary precedes the first of the
/// new); restarted with --standby, the old primary moves what it
/// acknowledged but never shipped aside, and follows the new history.
#[test]
fn a_partitioned_async_primary_rejoins_as_a_standby_with_its_unshipped_entries_aside() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let proxy = Proxy::start(s3.port);
    let env = aws_env(&s3.endpoint());
    let a_env = aws_env(&proxy.endpoint());
    let url = "s3://walfs-test/part";
    let a_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut a_args = primary_args(url, "async");
    a_args.extend(["--metrics", &a_port]);
    let mut a = Mounted::start_env(None, &a_args, &a_env);
    append(&a.mnt, "shipped\n").unwrap();
    assert_eq!(metric(&a_port, "walfs_lease_lapsed"), 0.0);
    let b = Mounted::start_env(None, &standby_args(url, "async"), &env);
    eventually("the standby to apply it", 10, || {
        std::fs::read_to_string(b.path("log")).unwrap_or_default() == "shipped\n"
    });
    let writers = Writers::start(4, vec![a.mnt.clone(), b.mnt.clone()]);
    std::thread::sleep(Duration::from_millis(500));
    proxy.set(Mode::Blackhole);
    let cut = Instant::now();
    eventually("the standby to take over", 20, || role(&b) == "primary");
    std::thread::sleep(Duration::from_millis(1000));
    let acked = writers.finish();
    let last_a = acked
        .iter()
        .filter(|(_, _, at)| *at == 0)
        .map(|(_, t, _)| *t)
        .max()
        .unwrap();
    let first_b = acked
        .iter()
        .filter(|(_, _, at)| *at == 1)
        .map(|(_, t, _)| *t)
        .min()
        .unwrap();
    eprintln!(
        "partition: the old primary's last acknowledgment {:.2} s after the cut, the new one's first {:.2} s after it",
        (last_a - cut).as_secs_f64(),
        (first_b - cut).as_secs_f64()
    );
    assert!(last_a < first_b, "both acknowledged at once");
    assert!(
        last_a - cut < Duration::from_millis(1600),
        "acknowledged past its lease"
    );
    let stat = std::fs::read_to_string(a.path("stat")).unwrap();
    assert!(
        stat_value(&stat, "replication").starts_with("lease lapsed"),
        "{stat}"
    );
    assert_eq!(metric(&a_port, "walfs_lease_lapsed"), 1.0);
    assert_eq!(metric(&a_port, "walfs_role"), 1.0);
    let e = append(&a.mnt, "after the lapse\n").unwrap_err();
    assert!(e.raw_os_error().is_some(), "{e}");

    // The old primary, restarted as a standby with the bucket reachable.
    a.kill9();
    proxy.set(Mode::Pass);
    let on_a: Vec<&str> = acked
        .iter()
        .filter(|(_, _, at)| *at == 0)
        .map(|(l, _, _)| l.as_str())
        .collect();
    let mut a2 = Mounted::start_env(Some(&a.data), &standby_args(url, "async"), &env);
    let b_log = std::fs::read_to_string(b.path("log")).unwrap();
    eventually("the old primary to follow the new history", 10, || {
        std::fs::read_to_string(a2.path("log")).unwrap_or_default() == b_log
    });
    assert_eq!(role(&a2), "standby");
    let stat = std::fs::read_to_string(a2.path("stat")).unwrap();
    let aside: PathBuf = a
        .dir
        .path()
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("data.aside-")
        })
        .unwrap_or_else(|| panic!("no aside directory; stat: {stat}"));
    assert!(stat.contains(&aside.display().to_string()), "{stat}");
    // Every line the old primary acknowledged is in the new history or
    // in the aside files, never in both.
    let mut aside_bytes = Vec::new();
    for f in std::fs::read_dir(aside.join("default")).unwrap() {
        aside_bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
    }
    let aside_text = String::from_utf8_lossy(&aside_bytes).to_string();
    let in_b = lines(&b_log);
    for l in &on_a {
        let in_aside = aside_text.contains(&format!("{l}\n"));
        assert!(
            in_b.contains_key(l) != in_aside,
            "{l}: in the log {}, aside {in_aside}",
            in_b.contains_key(l)
        );
    }
    a2.stop();
}

/// A standby killed (SIGKILL) again and again while it applies a busy
/// primary's rounds: each restart finds its data directory sound, moves
/// nothing aside, and catches up byte for byte.
#[test]
fn a_standby_killed_mid_apply_restarts_sound_and_catches_up() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/apply";
    let a = Mounted::start_env(
        None,
        &[
            "--replicate",
            url,
            "--replicate-interval",
            "0.02",
            "--lease",
            LEASE,
            "--sync",
            "async",
            "--segment-size",
            "64K",
        ],
        &env,
    );
    let writers = Writers::start(2, vec![a.mnt.clone()]);
    let mut b = Mounted::start_env(None, &standby_args(url, "strict"), &env);
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(300 + 170 * i));
        b.kill9();
        b.spawn();
        assert_eq!(role(&b), "standby");
    }
    let acked = writers.finish();
    assert!(acked.len() > 100, "{} appends", acked.len());
    eventually("the standby to catch up", 20, || {
        std::fs::read(b.path("log")).ok() == std::fs::read(a.path("log")).ok()
    });
    b.stop();
    let (code, out, err) = common::walfs_cli(&["verify", b.data.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !b.dir.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("aside")),
        "a standby moved something aside"
    );
    for f in std::fs::read_dir(b.data.join("default")).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wal") {
            let ours = std::fs::read(b.data.join("default").join(&name)).unwrap();
            let theirs = std::fs::read(a.data.join("default").join(&name)).unwrap();
            assert_eq!(ours, theirs, "segment {name}");
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Failover after failover, kill -9 and partition alternating, strict
/// replication: every acknowledged entry is in the last primary's log
/// exactly once, ids contiguous, the bucket agreeing; each old primary
/// rejoins as a standby. WALFS_FAILOVER_LOOPS sets the count (20).
#[test]
fn failovers_in_a_loop_lose_nothing_acknowledged() {
    let loops: usize = std::env::var("WALFS_FAILOVER_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let url = "s3://walfs-test/loop";
    let proxies = [Proxy::start(s3.port), Proxy::start(s3.port)];
    let envs = [
        aws_env(&proxies[0].endpoint()),
        aws_env(&proxies[1].endpoint()),
    ];
    let mut nodes = [
        Some(Mounted::start_env(
            None,
            &primary_args(url, "strict"),
            &envs[0],
        )),
        None,
    ];
    nodes[1] = Some(Mounted::start_env(
        None,
        &standby_args(url, "strict"),
        &envs[1],
    ));
    let mut primary = 0;
    let mut graveyard = Vec::new();
    let mut acked: Vec<String> = Vec::new();
    let mut times = Vec::new();
    let mut n = 0;
    for round in 0..loops {
        let standby = 1 - primary;
        let p_mnt = nodes[primary].as_ref().unwrap().mnt.clone();
        for _ in 0..20 {
            let line = format!("r{round}-{n}");
            n += 1;
            append(&p_mnt, &format!("{line}\n")).unwrap();
            acked.push(line);
        }
        let partition = round % 2 == 1;
        let fault = Instant::now();
        if partition {
            proxies[primary].set(Mode::Blackhole);
        } else {
            nodes[primary].as_mut().unwrap().kill9();
        }
        // Appends to the old primary while it is partitioned (on a thread
        // of their own: a strict append there waits up to the bucket's
        // timeout), and to the standby until it takes one.
        let old_writer = partition.then(|| {
            let (p_mnt, stop) = (p_mnt.clone(), Arc::new(AtomicBool::new(false)));
            let s2 = stop.clone();
            let t = std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut k = 0;
                while !s2.load(Ordering::Relaxed) {
                    let line = format!("r{round}-old-{k}");
                    k += 1;
                    if append(&p_mnt, &format!("{line}\n")).is_ok() {
                        acked.push(line);
                    } else {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                acked
            });
            (stop, t)
        });
        let s_mnt = nodes[standby].as_ref().unwrap().mnt.clone();
        let took = loop {
            assert!(
                fault.elapsed() < Duration::from_secs(30),
                "no failover in round {round}"
            );
            let line = format!("r{round}-{n}");
            n += 1;
            if append(&s_mnt, &format!("{line}\n")).is_ok() {
                acked.push(line);
                break fault.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some((stop, t)) = old_writer {
            stop.store(true, Ordering::Relaxed);
            acked.extend(t.join().unwrap());
        }
        times.push(took.as_secs_f64());
        eprintln!(
            "round {round}: {} on node {standby} after {:.2} s; {} acknowledged so far",
            if partition { "partition" } else { "kill -9" },
            took.as_secs_f64(),
            acked.len()
        );
        // The old primary rejoins as a standby on its own data directory.
        let mut old = nodes[primary].take().unwrap();
        if partition {
            old.kill9();
            proxies[primary].set(Mode::Pass);
        }
        let data = old.data.clone();
        let joined = Mounted::start_env(Some(&data), &standby_args(url, "strict"), &envs[primary]);
        assert_eq!(role(&joined), "standby");
        // `old` owns the temporary directory that holds the data.
        graveyard.push(old);
        nodes[primary] = Some(joined);
        primary = standby;
    }
    let last = nodes[primary].as_ref().unwrap();
    let acked: Vec<(String, Instant, usize)> =
        acked.into_iter().map(|l| (l, Instant::now(), 0)).collect();
    assert_all_once(last, &acked);
    assert_bucket_agrees(&s3, url, last);
    let mut t = times.clone();
    eprintln!(
        "{loops} failovers (lease {LEASE}): fault to the first acknowledged append on the new primary p50 {:.2} s, p99 {:.2} s, max {:.2} s; {} acknowledged, 0 lost",
        percentile(&mut t, 0.5),
        percentile(&mut t, 0.99),
        t.last().unwrap(),
        acked.len()
    );
}

/// A sharded log's standby applies its root files (shard count,
/// checkpoints) as well as its shards, each as the primary has it.
#[test]
fn a_sharded_logs_standby_applies_its_checkpoints() {
    use walfs::sharded::ShardedWal;
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let dir = tempfile::tempdir().unwrap();
    let url = "s3://walfs-test/sharded";
    let mut r = common::replica_options(url, &s3.endpoint());
    r.interval = Duration::from_millis(20);
    r.lease = Some(Duration::from_secs(2));
    let data = dir.path().join("primary");
    let mut o = walfs::WalOptions::new(&data);
    o.replicate = Some(r.clone());
    let w = ShardedWal::new(o, 3).unwrap();
    w.append(b"k", b"first").unwrap();
    w.create_checkpoint(b"cp-0").unwrap();
    let copy = dir.path().join("standby");
    walfs::replica::standby::prepare(&r, &copy, &mut |_, _| {}).unwrap();
    let mut so = walfs::WalOptions::new(&copy);
    so.standby = true;
    let sw = walfs::Wal::new(so).unwrap();
    let standby =
        walfs::replica::standby::Standby::start(sw.clone(), r.clone(), Box::new(|_: &str| {}))
            .unwrap();
    for i in 0..50 {
        w.append(format!("key-{i}").as_bytes(), b"more").unwrap();
    }
    w.create_checkpoint(b"cp-1").unwrap();
    let same =
        |name: &str| std::fs::read(data.join(name)).ok() == std::fs::read(copy.join(name)).ok();
    eventually("the standby to apply the checkpoints", 20, || {
        ["SHARDS", "checkpoints.log", "HEAD"]
            .iter()
            .all(|f| same(f))
            && (0..3u16).all(|s| {
                let n = walfs::sharded::shard_name(s);
                sw.next_id(&n) == w.inner().next_id(&n)
            })
    });
    drop(standby);
}

/// A primary's arguments with the default 10 s lease (a lapse is slow).
fn ten_second_lease(url: &str) -> [&str; 6] {
    [
        "--replicate",
        url,
        "--replicate-interval",
        "0.05",
        "--lease",
        "10s",
    ]
}

/// A primary mounted with `args` that has acknowledged 20 lines.
fn primary_of_20_lines(args: &[&str], env: &[(String, String)]) -> Mounted {
    let a = Mounted::start_env(None, args, env);
    for i in 0..20 {
        append(&a.mnt, &format!("line {i}\n")).unwrap();
    }
    a
}

/// A primary stopped cleanly releases the prefix: its standby takes it at
/// once, not a lease later (10 s here), and the primary's every entry is
/// there.
#[test]
fn a_clean_stop_releases_the_prefix_to_the_standby_at_once() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/release";
    let args = ten_second_lease(url);
    let mut a = primary_of_20_lines(&args, &env);
    // Five more, over a second later: the standby's copy answers times as
    // the primary's log does (it records the manifest's marks).
    std::thread::sleep(Duration::from_millis(1300));
    let mid = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..5 {
        append(&a.mnt, &format!("late {i}\n")).unwrap();
    }
    let mut sargs = args.to_vec();
    sargs.push("--standby");
    let b = Mounted::start_env(None, &sargs, &env);
    let log = std::fs::read_to_string(a.path("log")).unwrap();
    let epoch = manifest(&s3, "release").epoch;
    let out = a.stop_capturing();
    assert!(out.contains("replication: released"), "{out}");
    // Released; the standby may have taken it already (a later epoch, not
    // released), before this read.
    let m = manifest(&s3, "release");
    assert!(
        (m.released && m.epoch == epoch) || m.epoch > epoch,
        "epoch {} (the primary's {epoch}), released {}: {out}",
        m.epoch,
        m.released
    );
    let stopped = Instant::now();
    eventually("the standby to take the released prefix", 20, || {
        role(&b) == "primary"
    });
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: waited for the lease"
    );
    assert_eq!(std::fs::read_to_string(b.path("log")).unwrap(), log);
    let (code, late, err) =
        common::walfs_cli(&["cat", b.data.to_str().unwrap(), "--since", &mid], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(late, "late 0\nlate 1\nlate 2\nlate 3\nlate 4\n");
    append(&b.mnt, "after\n").unwrap();
    assert!(!manifest(&s3, "release").released);
}

/// A bucket that lies to a standby (a manifest that adds an object of
/// garbage with a matching crc) gets nothing written: every frame is
/// checked before a byte is, the standby says why it is stuck, never takes
/// a prefix it could not apply (not even once the lease lapsed), and its
/// DATA stays sound.
#[test]
fn a_lying_bucket_writes_nothing_to_a_standby() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/lie";
    let args = ten_second_lease(url);
    let mut a = primary_of_20_lines(&args, &env);
    eventually("the bucket to hold them", 10, || {
        manifest(&s3, "lie")
            .streams
            .get("default")
            .map(|s| s.next_id)
            == Some(20)
    });
    let log = std::fs::read_to_string(a.path("log")).unwrap();
    a.kill9();
    let mut m = manifest(&s3, "lie");
    // The lie: 100 more bytes of segment 0, a "part" of garbage whose
    // length and crc the manifest gets right.
    let garbage: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
    s3.put("walfs-test", "lie/default/lie.part", &garbage);
    let s = m.streams.get_mut("default").unwrap();
    let g = s.segments.last_mut().unwrap();
    g.objects.push(walfs::replica::manifest::ObjectRef {
        key: "default/lie.part".into(),
        offset: g.len,
        len: 100,
        crc32: crc32fast::hash(&garbage),
        level: 0,
    });
    g.len += 100;
    g.end_id += 1;
    s.next_id += 1;
    // A standby filled before the lie, then the lie planted.
    let mut sargs = args.to_vec();
    sargs.push("--standby");
    let mut b = Mounted::start_env(None, &sargs, &env);
    s3.put("walfs-test", "lie/manifest.json", &m.encode());
    eventually("the standby to say why it is stuck", 10, || {
        let stat = std::fs::read_to_string(b.path("stat")).unwrap();
        stat_value(&stat, "replication").contains("applying epoch")
    });
    // Past the lease (10 s) of the last manifest it saw change.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(role(&b), "standby", "took a prefix it could not apply");
    assert_eq!(std::fs::read_to_string(b.path("log")).unwrap(), log);
    b.stop();
    let (code, out, err) = common::walfs_cli(&["verify", b.data.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Every machine may be configured `--standby`: on a new prefix the first
/// to start makes it (a conditional create) and becomes its primary; the
/// next stays a standby and follows it.
#[test]
fn standbys_on_a_new_prefix_elect_the_first_primary() {
    let s3 = S3Server::start();
    s3.create_bucket("walfs-test");
    let env = aws_env(&s3.endpoint());
    let url = "s3://walfs-test/fresh";
    let b = Mounted::start_env(None, &standby_args(url, "strict"), &env);
    eventually("the first standby to make the prefix", 10, || {
        role(&b) == "primary"
    });
    let c = Mounted::start_env(None, &standby_args(url, "strict"), &env);
    append(&b.mnt, "one\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(role(&c), "standby");
    assert_eq!(manifest(&s3, "fresh").epoch, 1);
    eventually("the second to follow", 10, || {
        std::fs::read_to_string(c.path("log")).unwrap_or_default() == "one\n"
    });
}
