//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod mount;
pub mod provision;

/// Runs `f` on a thread of its own; None if it has not returned in 10 s
/// (what waits on a held operation does not return).
pub fn done_soon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).ok()
}

/// Writes stream `s` in `dir` in `cat big >> append`'s shape: 256 frames
/// of 1,310 lines of 100 bytes (128 KiB each, 32 MiB), in 8 MiB segments,
/// async. Returns the entry bytes, as `log` serves them.
pub fn write_cat_shaped_log(dir: &std::path::Path) -> Vec<u8> {
    let line = format!("{}\n", "x".repeat(99));
    let mut want = Vec::new();
    let mut o = walfs::WalOptions::new(dir);
    o.max_segment_size = 8 << 20;
    o.sync_mode = walfs::SyncMode::Async;
    let wal = walfs::Wal::new(o).unwrap();
    for _ in 0..256 {
        let batch: Vec<&[u8]> = (0..1310).map(|_| line.as_bytes()).collect();
        wal.append_batch("s", &batch).unwrap();
        for b in &batch {
            want.extend_from_slice(b);
        }
    }
    want
}

/// Bytes this process has read so far (`rchar` in /proc/self/io): a test
/// that counts with it must be alone in its binary.
pub fn rchar() -> u64 {
    rchar_of("self")
}

/// Bytes the process `pid` ("self" for this one) has read (`rchar`).
pub fn rchar_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// splitmix64: a tiny deterministic generator for reproducible workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max as u64 + 1) as usize;
        let seed = self.next();
        (0..len)
            .map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8)
            .collect()
    }
}

/// Copies a directory tree (a data directory to damage or reopen).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
pub mod s3;

/// Polls `f` (bounded) until it holds.
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The value of `key: value` in a `stat` text.
pub fn stat_value(stat: &str, key: &str) -> String {
    stat.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {stat}"))
        .to_string()
}

/// Runs the walfs binary with extra environment: (status, stdout, stderr).
pub fn walfs_cli(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Options to ship to (or read) `url` on the test server at `endpoint`,
/// configured in code rather than through the environment.
pub fn replica_options(url: &str, endpoint: &str) -> walfs::ReplicaOptions {
    let mut o = walfs::ReplicaOptions::new(url);
    o.settings = s3::aws_env(endpoint)
        .into_iter()
        .filter_map(|(k, v)| {
            let key = match k.as_str() {
                "AWS_ACCESS_KEY_ID" => "aws_access_key_id",
                "AWS_SECRET_ACCESS_KEY" => "aws_secret_access_key",
                "AWS_REGION" => "aws_region",
                "AWS_ENDPOINT_URL" => "aws_endpoint",
                "AWS_ALLOW_HTTP" => "aws_allow_http",
                _ => return None,
            };
            Some((key.to_string(), v))
        })
        .collect();
    o
}

/// The reply (status line, headers, body) of an HTTP GET of `path` on
/// 127.0.0.1:`port`: the daemon's metrics endpoint.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of one metric (its name with its labels, as the text shows
/// it) on the daemon's metrics endpoint; 0 when it is not shown yet.
pub fn metric(port: u16, name: &str) -> u64 {
    let name = format!("{name} ");
    http_get(port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&name))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A loopback port free now, for the daemon's metrics endpoint.
pub fn metrics_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
