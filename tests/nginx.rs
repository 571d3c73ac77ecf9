//! A real client: nginx writing its access log into a mounted `append`,
//! four workers sharing the master's descriptor (opened once, O_WRONLY,
//! held for the whole run, as every logger does), with `nginx -s reopen`
//! in the middle. Every request's line is in the log exactly once, and the
//! daemon's memory stays flat over the run.

mod common;

use common::mount::Mounted;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn get(port: u16, path: &str) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// nginx, stopped (and reaped) on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nginx_logs_every_request_once_with_the_daemon_flat() {
    common::provision::tool("nginx", "nginx-light");
    let m = Mounted::start(&[]);
    let t = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = t.path().display();
    let conf = t.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nuser root;\nworker_processes 4;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  log_format walfs '$request_uri';\n  access_log {append} walfs;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
            append = m.path("append").display()
        ),
    )
    .unwrap();
    let nginx = Nginx(
        Command::new("nginx")
            .args([
                "-c",
                conf.to_str().unwrap(),
                "-p",
                t.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(t.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let daemon = m.pid();
    let n = 4000;
    let mut rss = Vec::new();
    for i in 0..n {
        get(port, &format!("/req-{i}"));
        if i == n / 2 {
            // nginx -s reopen: the master opens the log again.
            let (code, _, err) = common::mount::sh(&format!(
                "nginx -c {} -p {} -s reopen",
                conf.display(),
                t.path().display()
            ));
            assert_eq!(code, 0, "{err}");
        }
        if i % 500 == 0 {
            rss.push(rss_kib(daemon));
        }
    }
    rss.push(rss_kib(daemon));
    drop(nginx);
    let log = std::fs::read_to_string(m.path("log")).unwrap();
    let mut seen = std::collections::HashMap::new();
    for l in log.lines() {
        *seen.entry(l.to_string()).or_insert(0) += 1;
    }
    for i in 0..n {
        assert_eq!(seen.get(&format!("/req-{i}")), Some(&1), "request {i}");
    }
    assert_eq!(seen.len(), n, "no line but the requests'");
    // Flat: the second half costs the daemon no more than 1 MiB.
    let (mid, end) = (rss[rss.len() / 2], *rss.last().unwrap());
    println!("daemon RSS KiB every 500 requests: {rss:?}");
    assert!(end <= mid + 1024, "daemon RSS grew from {mid} to {end} KiB");
}

/// One descriptor, write-only, held for many writes (a logger's life in a
/// few seconds): the daemon's memory does not grow with the writes.
/// WALFS_HANDLE_WRITES=N writes N lines (default 300,000; millions for the
/// long version).
#[test]
fn one_descriptor_held_for_many_writes_keeps_the_daemon_flat() {
    let n: u64 = std::env::var("WALFS_HANDLE_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let m = Mounted::start(&["--sync", "async"]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("append"))
        .unwrap();
    let daemon = m.pid();
    let mut at_tenth = 0;
    for i in 0..n {
        f.write_all(format!("{i}\n").as_bytes()).unwrap();
        if i == n / 10 {
            at_tenth = rss_kib(daemon);
        }
    }
    let end = rss_kib(daemon);
    drop(f);
    println!("{n} writes through one descriptor: daemon RSS {at_tenth} KiB after a tenth, {end} KiB at the end");
    // The old per-write id line alone was about 14 bytes a write: 3.7 MiB
    // over these 270,000.
    assert!(
        end <= at_tenth + 1024,
        "the daemon grew from {at_tenth} to {end} KiB over {} writes",
        n - n / 10
    );
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    assert!(stat.contains(&format!("next_id: {n}\n")), "{stat}");
}
