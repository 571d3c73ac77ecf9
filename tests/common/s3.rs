//! A real S3-compatible server (moto's) on loopback for the replication
//! tests, started and stopped by each test, and a TCP proxy in front of it
//! that can delay, reset or black-hole connections.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A secret no log line or message may ever show.
pub const SECRET: &str = "walfs-test-secret-Zq8vX1";

fn moto_server() -> PathBuf {
    super::provision::moto_server()
}

/// One moto server, killed on drop.
pub struct S3Server {
    child: Child,
    pub port: u16,
    /// The server's TMPDIR: with `-s` it writes its made-up certificate
    /// and key there and removes them only at a clean exit, which a killed
    /// server never reaches. Removed after the server (field order).
    _tmp: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        S3Server::start_with(&[])
    }

    /// A server speaking HTTPS only, with a certificate made up at start
    /// (clients must allow invalid certificates), and `bucket` made.
    pub fn start_tls(bucket: &str) -> S3Server {
        let s = S3Server::spawn(&["-s"], &[]);
        // The helpers here speak plain HTTP: python makes the bucket.
        let made = Command::new("python3")
            .args([
                "-c",
                "import ssl,sys,urllib.request as u; u.urlopen(u.Request(sys.argv[1], method='PUT'), context=ssl._create_unverified_context()).read()",
                &format!("https://127.0.0.1:{}/{bucket}", s.port),
            ])
            .status()
            .unwrap();
        assert!(made.success(), "create bucket over TLS");
        s
    }

    /// Starts with extra environment (INITIAL_NO_AUTH_ACTION_COUNT=0 makes
    /// it check credentials).
    pub fn start_with(env: &[(&str, &str)]) -> S3Server {
        let s = S3Server::spawn(&[], env);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(s.port, "GET", "/moto-api/", b"").is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn spawn(args: &[&str], env: &[(&str, &str)]) -> S3Server {
        // Port 0: the server binds a free port itself and says which (a
        // port found free here and handed over could be taken meanwhile by
        // a test running beside this one).
        let tmp = tempfile::tempdir().expect("a temporary directory for moto_server");
        let mut cmd = Command::new(moto_server());
        cmd.env("TMPDIR", tmp.path());
        cmd.args(["-H", "127.0.0.1", "-p", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        {
            use std::os::unix::process::CommandExt;
            let die_with_parent = || {
                // SAFETY: prctl with integer arguments only; async-signal-safe.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                Ok(())
            };
            // SAFETY: the hook runs in the child before exec and calls only
            // prctl: the server dies with the test thread even if the test
            // process is killed.
            unsafe { cmd.pre_exec(die_with_parent) };
        }
        let mut child = cmd.spawn().expect("start moto_server");
        // Its log goes to standard error: the port from its first lines,
        // then drained for as long as it runs.
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let port = line
                    .split("Running on http")
                    .nth(1)
                    .and_then(|l| l.split("://127.0.0.1:").nth(1))
                    .and_then(|p| p.trim().parse::<u16>().ok());
                if let (Some(p), Some(t)) = (port, &tx) {
                    let _ = t.send(p);
                    tx = None;
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("moto_server did not say which port it bound ({status:?})");
            }
        };
        S3Server {
            child,
            port,
            _tmp: tmp,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A server that checks every request's signature against its IAM
    /// users, with bucket `bucket` and one user allowed everything: returns
    /// the server and that user's (access key id, secret key).
    pub fn start_authenticated(bucket: &str) -> (S3Server, String, String) {
        // Four requests go unchecked: the three that make the user, and
        // the bucket's creation.
        let s = S3Server::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
        let iam = |query: &str| {
            let (code, body) = http_service(
                s.port,
                "POST",
                &format!("/?{query}&Version=2010-05-08"),
                b"",
                "iam",
            )
            .unwrap();
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(code, 200, "{body}");
            body
        };
        iam("Action=CreateUser&UserName=walfs");
        iam("Action=PutUserPolicy&UserName=walfs&PolicyName=all&PolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D");
        let key = iam("Action=CreateAccessKey&UserName=walfs");
        let field = |name: &str| {
            key.split(&format!("<{name}>"))
                .nth(1)
                .and_then(|r| r.split(&format!("</{name}>")).next())
                .unwrap()
                .to_string()
        };
        let (id, secret) = (field("AccessKeyId"), field("SecretAccessKey"));
        s.create_bucket(bucket);
        (s, id, secret)
    }

    pub fn create_bucket(&self, name: &str) {
        let (code, body) = http(self.port, "PUT", &format!("/{name}"), b"").unwrap();
        assert_eq!(code, 200, "create bucket: {body}");
    }

    /// Every key in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (code, body) = http(self.port, "GET", &format!("/{bucket}?list-type=2"), b"").unwrap();
        assert_eq!(code, 200, "{body}");
        body.split("<Key>")
            .skip(1)
            .map(|s| s.split("</Key>").next().unwrap().to_string())
            .collect()
    }

    /// Deletes an object (as a lifecycle rule or another tool would).
    pub fn delete(&self, bucket: &str, key: &str) {
        let (code, body) = http(self.port, "DELETE", &format!("/{bucket}/{key}"), b"").unwrap();
        assert!(code == 204 || code == 200, "delete {key}: {code} {body}");
    }

    /// An object's bytes.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (code, body) = http_bytes(self.port, "GET", &format!("/{bucket}/{key}"), b"").unwrap();
        assert_eq!(code, 200);
        body
    }

    /// The response head of a HEAD request for an object (its headers,
    /// lowercased).
    pub fn head(&self, bucket: &str, key: &str) -> String {
        let (code, head, _) =
            http_full(self.port, "HEAD", &format!("/{bucket}/{key}"), b"", "s3").unwrap();
        assert_eq!(code, 200, "{head}");
        head.to_ascii_lowercase()
    }

    /// Writes an object (unsigned; moto accepts it).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let (code, _) = http(self.port, "PUT", &format!("/{bucket}/{key}"), body).unwrap();
        assert_eq!(code, 200);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a walfs process needs to reach `endpoint`.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "walfs-test-key".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL".into(), endpoint.into()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        // Never the developer's own files.
        ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
        ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
    ]
}

fn http_bytes(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    http_service(port, method, path, body, "s3")
}

/// moto routes a request by the service named in its Authorization header.
fn http_service(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    service: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    http_full(port, method, path, body, service).map(|(c, _, b)| (c, b))
}

/// A request's status, response head and body.
fn http_full(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    service: &str,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        // moto answers unsigned object reads as a browser's (403); any
        // signature-shaped header will do, it does not check them.
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=walfs-test-key/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((code, head, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_bytes(port, method, path, body).map(|(c, b)| (c, String::from_utf8_lossy(&b).into_owned()))
}

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Forward.
    Pass,
    /// Forward, each chunk after a pause.
    Delay(Duration),
    /// Reset every connection (new and open ones).
    Reset,
    /// Accept, then never answer.
    Blackhole,
}

/// A TCP proxy on loopback in front of a server.
pub struct Proxy {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    let _ = s.shutdown(Shutdown::Both);
}

fn pump(mut from: TcpStream, mut to: TcpStream, mode: Arc<Mutex<Mode>>, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            reset(&from);
            reset(&to);
            return;
        }
        let m = *mode.lock().unwrap();
        match m {
            Mode::Reset => {
                reset(&from);
                reset(&to);
                return;
            }
            Mode::Blackhole => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if let Mode::Delay(d) = m {
                    std::thread::sleep(d);
                }
                if to.write_all(&buf[..n]).is_err() {
                    reset(&from);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                reset(&to);
                return;
            }
        }
    }
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (mode.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut pumps = Vec::new();
            while !st.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                match *m.lock().unwrap() {
                    Mode::Reset => {
                        reset(&client);
                        continue;
                    }
                    Mode::Blackhole => {
                        // Held open, never answered (until the mode changes
                        // and the pump below forwards it).
                    }
                    _ => {}
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    reset(&client);
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (m1, m2, st1, st2) = (m.clone(), m.clone(), st.clone(), st.clone());
                pumps.push(std::thread::spawn(move || pump(client, server, m1, st1)));
                pumps.push(std::thread::spawn(move || pump(s2, c2, m2, st2)));
                pumps.retain(|p: &std::thread::JoinHandle<()>| !p.is_finished());
            }
            for p in pumps {
                let _ = p.join();
            }
        });
        Proxy {
            port,
            mode,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
