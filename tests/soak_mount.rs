//! Load through the mount: writer processes in strict mode and concurrent
//! readers (`cat log`, `tail -f log`, `ls entries`, entry reads) for a
//! bounded time (WALFS_SOAK_SECS, default 4). Readers never see a partial
//! or torn entry, each writer's entries keep their order, memory stays
//! bounded, and every acknowledged entry is found at the end.

mod common;

use common::mount::{sh, Mounted};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the daemon's /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

/// What the daemon may hold at most in this run: the block cache of
/// decoded frames (64 MiB by default), the read buffer pool (16 MiB), and
/// 48 MiB for everything else (threads' stacks, the binary, buffers of the
/// requests in flight). Measured: 8-17 MiB.
const RSS_BOUND_KIB: u64 = (64 + 16 + 48) << 10;

/// Checks a snapshot of the log: whole lines of the writers' form, each
/// writer's numbers increasing.
fn check_lines(text: &str, what: &str) -> usize {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what}: torn last entry"
    );
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut n = 0;
    for line in text.lines() {
        let (w, i) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{what}: bad line {line:?}"));
        assert!(w.starts_with('w'), "{what}: bad line {line:?}");
        let i: u64 = i
            .strip_prefix('i')
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{what}: bad line {line:?}"));
        if let Some(p) = last.insert(w, i) {
            assert!(i > p, "{what}: {w} went from {p} to {i}");
        }
        n += 1;
    }
    n
}

#[test]
fn writers_and_readers_together() {
    let secs: u64 = std::env::var("WALFS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let m = Mounted::start(&["--segment-size", "262144"]);
    std::fs::create_dir(m.path("streams/rec")).unwrap();
    let run = m.dir.path().join("running");
    std::fs::write(&run, b"").unwrap();
    let mut writers = Vec::new();
    for w in 0..6 {
        writers.push(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "i=0; while [ -e {run} ]; do echo \"w{w} i$i\" >> {append} && echo \"w{w} i$i\"; i=$((i+1)); done",
                    run = run.display(),
                    append = m.path("append").display()
                ))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    // Each writer's acknowledgements are read as they come: a pipe left
    // unread fills (64 KiB) and would stall its writer, not the mount.
    let writers: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let out = w.stdout.take().unwrap();
            let lines = std::thread::spawn(move || {
                BufReader::new(out)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<String>>()
            });
            (w, lines)
        })
        .collect();
    let blob = m.dir.path().join("blob");
    std::fs::write(&blob, vec![7u8; 100_000]).unwrap();
    let recs = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while [ -e {run} ]; do cp {blob} {rec} || exit 1; done",
            run = run.display(),
            blob = blob.display(),
            rec = m.path("streams/rec/record").display()
        ))
        .spawn()
        .unwrap();
    let mut tail = Command::new("tail")
        .args(["-f", "-s", "0.1", "-n", "+1"])
        .arg(m.path("log"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tail_out = tail.stdout.take().unwrap();
    let tailed_so_far = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tail_reader = {
        let so_far = tailed_so_far.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1 << 16];
            while let Ok(n @ 1..) = tail_out.read(&mut buf) {
                so_far.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (stop, mnt) = (stop.clone(), m.mnt.clone());
            std::thread::spawn(move || {
                let mut checks = 0;
                let mut last_count = 0;
                while !stop.load(Ordering::Relaxed) {
                    match r {
                        0 => {
                            let text = std::fs::read_to_string(mnt.join("log")).unwrap();
                            check_lines(&text, "cat log");
                        }
                        1 => {
                            let n = std::fs::read_dir(mnt.join("entries")).unwrap().count();
                            assert!(n >= last_count, "ls entries went from {last_count} to {n}");
                            last_count = n;
                            if n > 0 {
                                let e =
                                    std::fs::read_to_string(mnt.join(format!("entries/{}", n / 2)))
                                        .unwrap();
                                check_lines(&e, "entry");
                                // (No record yet is fine; any other error is not.)
                                match std::fs::read(mnt.join("streams/rec/entries/0")) {
                                    Ok(r) => assert!(
                                        r.len() == 100_000 && r.iter().all(|&b| b == 7),
                                        "record torn"
                                    ),
                                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                    Err(e) => panic!("reading a record: {e}"),
                                }
                            }
                        }
                        _ => {
                            let (_, out, _) =
                                sh(&format!("ls {} | wc -l", mnt.join("entries").display()));
                            let n: usize = String::from_utf8(out).unwrap().trim().parse().unwrap();
                            assert!(n >= last_count);
                            last_count = n;
                        }
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let pid = m.pid();
    let start = Instant::now();
    let mut rss = Vec::new();
    let mut rates = Vec::new();
    let mut last = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(rss_kib(pid));
        let stat = std::fs::read_to_string(m.path("stat")).unwrap();
        let next: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("next_id: "))
            .unwrap()
            .parse()
            .unwrap();
        rates.push(next - last);
        last = next;
    }
    std::fs::remove_file(&run).unwrap();
    let acked: Vec<String> = writers
        .into_iter()
        .flat_map(|(mut w, lines)| {
            w.wait().unwrap();
            lines.join().unwrap()
        })
        .collect();
    let mut recs = recs;
    recs.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let checks: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let log = std::fs::read_to_string(m.path("log")).unwrap();
    let n = check_lines(&log, "final log");
    // tail -f catches up with the whole log (it polls every 0.1 s), then
    // is stopped: what it printed is the log, once, in order.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tailed_so_far.lock().unwrap().len() < log.len() {
        assert!(
            Instant::now() < deadline,
            "tail -f did not print the whole log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Anything it would print past the log would show now.
    std::thread::sleep(Duration::from_millis(300));
    let _ = tail.kill();
    let _ = tail.wait();
    tail_reader.join().unwrap();
    let tailed = String::from_utf8(std::mem::take(&mut *tailed_so_far.lock().unwrap())).unwrap();
    check_lines(&tailed, "tail -f");
    assert_eq!(
        tailed.len(),
        log.len(),
        "tail -f printed the whole log, once"
    );
    assert!(
        tailed == log,
        "tail -f printed what the log holds, in order"
    );
    let present: std::collections::HashSet<&str> = log.lines().collect();
    for a in &acked {
        assert!(present.contains(a.as_str()), "acknowledged {a:?} lost");
    }
    assert_eq!(n, present.len(), "no duplicates");
    println!(
        "{secs}s: {} entries acknowledged, {n} in the log, {checks} reader passes; appends/s per second: {rates:?}; daemon RSS KiB: {rss:?}",
        acked.len()
    );
    let peak = rss.iter().max().copied().unwrap();
    assert!(
        peak < RSS_BOUND_KIB,
        "daemon memory {peak} KiB, over the {RSS_BOUND_KIB} KiB bound"
    );
    assert!(n > 0 && !acked.is_empty());
}
