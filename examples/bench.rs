//! The engine benchmark: walfs against the machine's physical limits and
//! ironwal 0.6.9 doing the same work, in one run, on one filesystem.
//!
//!     cargo run --release --example bench            # full run
//!     WALFS_BENCH_DIR=/path cargo run --release --example bench
//!     WALFS_BENCH_OPEN_GIB=10 ...                     # the spec's 10 GiB open
//!     WALFS_BENCH_ONLY=strict,async,get,iter,mount,bigentry,segments,sharded,replica,failover,retention,follow,open ...  # some rows only
//!
//! The replication rows start moto's S3 server (installed into .ci/venv,
//! pinned by .ci/moto-requirements.txt, when it is missing).
//!
//! Every row prints walfs, its baseline and the ratio; the machine is
//! noisy, so read the ratios, not the absolute figures.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(3);

#[path = "support/nullfs.rs"]
mod nullfs;
#[path = "../tests/common/provision.rs"]
mod provision;
#[path = "../tests/common/s3.rs"]
mod s3;
#[path = "support/segment_rows.rs"]
mod segment_rows;

struct Row {
    name: String,
    unit: &'static str,
    walfs: f64,
    baseline_name: &'static str,
    baseline: f64,
    /// walfs / baseline must reach this (or, when `lower_is_better`, stay under).
    target: f64,
    lower_is_better: bool,
}

/// Where the bench's directory `name` goes (see [`dir`]).
fn bench_path(name: &str) -> PathBuf {
    let base = std::env::var_os("WALFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("walfs-bench-{}-{name}", std::process::id()))
}

/// The bench's directory `name`, empty.
fn dir(name: &str) -> PathBuf {
    let d = bench_path(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `op` on `threads` threads for RUN; returns operations per second.
fn rate(threads: usize, op: impl Fn(usize, u64) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, count, op) = (&stop, &count, &op);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(t, i);
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn fdatasync_rate() -> f64 {
    let d = dir("fsync");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(d.join("f"))
        .unwrap();
    let off = AtomicU64::new(0);
    let r = rate(1, |_, _| {
        let o = off.fetch_add(64, Ordering::Relaxed);
        f.write_all_at(&[7u8; 64], o).unwrap();
        f.sync_data().unwrap();
    });
    let _ = std::fs::remove_dir_all(d);
    r
}

fn write_bandwidth() -> f64 {
    let d = dir("bw");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(d.join("f"))
        .unwrap();
    let block = vec![3u8; 1 << 20];
    let total = 512u64 << 20;
    let start = Instant::now();
    let mut off = 0;
    while off < total {
        f.write_all_at(&block, off).unwrap();
        off += block.len() as u64;
    }
    f.sync_data().unwrap();
    let mbs = total as f64 / 1e6 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(d);
    mbs
}

fn walfs_opts(root: &Path, mode: walfs::SyncMode) -> walfs::WalOptions {
    let mut o = walfs::WalOptions::new(root);
    o.sync_mode = mode;
    o
}

fn ironwal_opts(root: &Path, mode: ironwal::SyncMode) -> ironwal::WalOptions {
    let mut o = ironwal::WalOptions::new(root);
    o.sync_mode = mode;
    o
}

/// Entries appended and fdatasyncs made so far in this process.
fn engine_counters() -> (u64, u64) {
    let m = walfs::metrics::global();
    (m.entries.get(), m.fdatasyncs.get())
}

/// Strict appends by `threads` threads: (walfs ops/s, ironwal ops/s,
/// walfs entries per fdatasync).
fn strict_appends(threads: usize) -> (f64, f64, f64) {
    let entry = [5u8; 100];
    let d = dir("strict-w");
    let w = walfs::Wal::new(walfs_opts(&d, walfs::SyncMode::Strict)).unwrap();
    let (e0, s0) = engine_counters();
    let walfs_rate = rate(threads, |_, _| {
        w.append("s", &entry).unwrap();
    });
    let (e1, s1) = engine_counters();
    drop(w);
    let d2 = dir("strict-i");
    let i = ironwal::Wal::new(ironwal_opts(&d2, ironwal::SyncMode::Strict)).unwrap();
    let iron_rate = rate(threads, |_, _| {
        i.append("s", &entry).unwrap();
    });
    drop(i);
    let _ = std::fs::remove_dir_all(d);
    let _ = std::fs::remove_dir_all(d2);
    (
        walfs_rate,
        iron_rate,
        (e1 - e0) as f64 / (s1 - s0).max(1) as f64,
    )
}

/// Runs `a` and `b` alternately, three times each (the machine is noisy),
/// and returns the median of each.
fn medians_of_3(mut a: impl FnMut(u32) -> f64, mut b: impl FnMut(u32) -> f64) -> (f64, f64) {
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    for round in 0..3 {
        va.push(a(round));
        vb.push(b(round));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut va), median(&mut vb))
}

/// Strict sharded appends, `writers` threads over `shards` shards, each
/// thread cycling through keys of its own: (walfs ops/s, ironwal
/// ShardedWal ops/s, both medians of 3 alternating runs; walfs entries per
/// fdatasync).
fn sharded_appends(shards: u16, writers: usize) -> (f64, f64, f64) {
    let entry = [3u8; 100];
    let keys: Vec<Vec<Vec<u8>>> = (0..writers)
        .map(|t| {
            (0..64)
                .map(|k| format!("w{t}-key{k}").into_bytes())
                .collect()
        })
        .collect();
    let (mut entries, mut syncs) = (0, 0);
    let (walfs_rate, iron_rate) = medians_of_3(
        |_| {
            let d = dir("sharded-w");
            let w =
                walfs::sharded::ShardedWal::new(walfs_opts(&d, walfs::SyncMode::Strict), shards)
                    .unwrap();
            let (e0, s0) = engine_counters();
            let r = rate(writers, |t, i| {
                w.append(&keys[t][i as usize % 64], &entry).unwrap();
            });
            let (e1, s1) = engine_counters();
            (entries, syncs) = (entries + e1 - e0, syncs + s1 - s0);
            drop(w);
            let _ = std::fs::remove_dir_all(d);
            r
        },
        |_| {
            let d = dir("sharded-i");
            let mut o = ironwal_opts(&d, ironwal::SyncMode::Strict);
            o.max_open_segments = (shards as usize * 2).max(o.max_open_segments);
            let i = ironwal::sharded::ShardedWal::new(o, shards).unwrap();
            let r = rate(writers, |t, n| {
                i.append(&keys[t][n as usize % 64], &entry).unwrap();
            });
            drop(i);
            let _ = std::fs::remove_dir_all(d);
            r
        },
    );
    (walfs_rate, iron_rate, entries as f64 / syncs.max(1) as f64)
}

/// Checkpoints made per second on a 16-shard log: (walfs, ironwal),
/// medians of 3 alternating runs.
fn sharded_checkpoints() -> (f64, f64) {
    medians_of_3(
        |_| {
            let d = dir("ckpt-w");
            let w = walfs::sharded::ShardedWal::new(walfs_opts(&d, walfs::SyncMode::Strict), 16)
                .unwrap();
            let r = rate(1, |_, i| {
                w.create_checkpoint(format!("cp-{i}").as_bytes()).unwrap();
            });
            drop(w);
            let _ = std::fs::remove_dir_all(d);
            r
        },
        |_| {
            let d = dir("ckpt-i");
            let i =
                ironwal::sharded::ShardedWal::new(ironwal_opts(&d, ironwal::SyncMode::Strict), 16)
                    .unwrap();
            let r = rate(1, |_, n| {
                i.create_checkpoint(format!("cp-{n}").as_bytes()).unwrap();
            });
            drop(i);
            let _ = std::fs::remove_dir_all(d);
            r
        },
    )
}

fn async_4k() -> (f64, f64) {
    let entry = vec![9u8; 4096];
    let d = dir("async-w");
    let w = walfs::Wal::new(walfs_opts(&d, walfs::SyncMode::Async)).unwrap();
    let walfs_rate = rate(1, |_, _| {
        w.append("s", &entry).unwrap();
    });
    drop(w);
    let _ = std::fs::remove_dir_all(&d);
    let d2 = dir("async-i");
    let i = ironwal::Wal::new(ironwal_opts(&d2, ironwal::SyncMode::Async)).unwrap();
    let iron_rate = rate(1, |_, _| {
        i.append("s", &entry).unwrap();
    });
    drop(i);
    let _ = std::fs::remove_dir_all(d2);
    (walfs_rate * 4096.0 / 1e6, iron_rate * 4096.0 / 1e6)
}

const MILLION: u64 = 1_000_000;

/// One directory with a 1,000,000-entry stream of 16-byte entries, one
/// frame each (52 MB: it all sits in the active 64 MiB segment), written by
/// ironwal, read by both.
fn million_dir() -> PathBuf {
    let d = dir("million");
    let i = ironwal::Wal::new(ironwal_opts(&d, ironwal::SyncMode::Async)).unwrap();
    let mut e = [0u8; 16];
    for id in 0..MILLION {
        e[..8].copy_from_slice(&id.to_le_bytes());
        i.append("s", &e).unwrap();
    }
    drop(i);
    d
}

fn random_ids(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % MILLION
        })
        .collect()
}

fn per_second(n: usize, f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    (0..n).for_each(f);
    n as f64 / start.elapsed().as_secs_f64()
}

fn random_gets(d: &Path, mmap: bool) -> (f64, f64) {
    let mut wo = walfs::WalOptions::new(d);
    wo.read_only = true;
    if mmap {
        wo.read_strategy = walfs::ReadStrategy::Mmap;
    }
    let w = walfs::Wal::new(wo).unwrap();
    let ids = random_ids(300_000, 42);
    let walfs_rate = per_second(ids.len(), |k| {
        let e = w.get("s", ids[k]).unwrap().unwrap();
        assert_eq!(e[..8], ids[k].to_le_bytes());
    });
    drop(w);
    let mut io = ironwal::WalOptions::new(d);
    if mmap {
        io.read_strategy = ironwal::ReadStrategy::Mmap;
    }
    let i = ironwal::Wal::new(io).unwrap();
    // ironwal scans the active segment's headers on every get (one read
    // syscall per header with StandardIo): a few samples take seconds.
    let ids = random_ids(if mmap { 200 } else { 10 }, 43);
    let iron_rate = per_second(ids.len(), |k| {
        let e = i.get("s", ids[k]).unwrap().unwrap();
        assert_eq!(e[..8], ids[k].to_le_bytes());
    });
    (walfs_rate, iron_rate)
}

/// Sequential iteration over a stream of 1 KiB entries in 64 MiB segments.
/// Runs `read`, which returns the bytes it read: (bytes, MB/s).
fn timed_mbs(read: impl FnOnce() -> u64) -> (u64, f64) {
    let start = Instant::now();
    let bytes = read();
    (bytes, bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// Sequential iteration MB/s: (walfs iter, walfs next_ref, ironwal), with
/// StandardIo or, with `mmap`, both engines' Mmap strategy.
fn iteration(mmap: bool) -> (f64, f64, f64) {
    let d = dir("iter");
    let total: u64 = 1 << 30;
    {
        let w = walfs::Wal::new(walfs_opts(&d, walfs::SyncMode::Async)).unwrap();
        let e = vec![1u8; 1024];
        let batch: Vec<&[u8]> = (0..64).map(|_| &e[..]).collect();
        for _ in 0..total / (1024 * 64) {
            w.append_batch("s", &batch).unwrap();
        }
        w.close().unwrap();
    }
    let open_walfs = || {
        let mut wo = walfs::WalOptions::new(&d);
        wo.read_only = true;
        if mmap {
            wo.read_strategy = walfs::ReadStrategy::Mmap;
        }
        walfs::Wal::new(wo).unwrap()
    };
    let walfs_pass = || {
        let w = open_walfs();
        timed_mbs(|| {
            w.iter("s", 0)
                .unwrap()
                .map(|e| e.unwrap().len() as u64)
                .sum()
        })
    };
    let walfs_lend = || {
        let w = open_walfs();
        timed_mbs(|| {
            let mut bytes = 0u64;
            let mut it = w.iter_with_ids("s", 0).unwrap();
            while let Some(r) = it.next_ref() {
                bytes += r.unwrap().1.len() as u64;
            }
            bytes
        })
    };
    let iron_pass = || {
        let mut io = ironwal::WalOptions::new(&d);
        if mmap {
            io.read_strategy = ironwal::ReadStrategy::Mmap;
        }
        let i = ironwal::Wal::new(io).unwrap();
        timed_mbs(|| {
            i.iter("s", 0)
                .unwrap()
                .map(|e| e.unwrap().len() as u64)
                .sum()
        })
    };
    // Alternate and keep the best of each: the page cache warms for both.
    let (mut walfs_mbs, mut lend_mbs, mut iron_mbs) = (0f64, 0f64, 0f64);
    for _ in 0..2 {
        let (wb, w) = walfs_pass();
        let (lb, l) = walfs_lend();
        let (ib, i) = iron_pass();
        assert_eq!(wb, ib);
        assert_eq!(lb, ib);
        walfs_mbs = walfs_mbs.max(w);
        lend_mbs = lend_mbs.max(l);
        iron_mbs = iron_mbs.max(i);
    }
    let _ = std::fs::remove_dir_all(d);
    (walfs_mbs, lend_mbs, iron_mbs)
}

/// Open time of a large stream: (walfs clean, ironwal clean, walfs after
/// a crash, ironwal after a crash), in milliseconds.
fn open_times(gib: u64) -> [f64; 4] {
    let d = dir("open");
    {
        let w = walfs::Wal::new(walfs_opts(&d, walfs::SyncMode::Async)).unwrap();
        let e = vec![2u8; 4096];
        let batch: Vec<&[u8]> = (0..256).map(|_| &e[..]).collect();
        // Leave the active segment nearly full: the worst case for a scan.
        let frames = (gib << 30) / (4100 * 256);
        for _ in 0..frames {
            w.append_batch("s", &batch).unwrap();
        }
        w.close().unwrap();
    }
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64() * 1e3
    };
    let walfs_open = || drop(walfs::Wal::new(walfs::WalOptions::new(&d)).unwrap());
    let iron_open = || drop(ironwal::Wal::new(ironwal::WalOptions::new(&d)).unwrap());
    walfs_open();
    let wc = time(&walfs_open);
    let ic = time(&iron_open);
    // A crash: a torn frame at the end of the active segment.
    let active = std::fs::read_dir(d.join("s"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()
        .unwrap();
    let tear = || {
        let f = OpenOptions::new().append(true).open(&active).unwrap();
        let mut junk = 0x4C57_414Cu32.to_le_bytes().to_vec();
        junk.extend_from_slice(&[0xAB; 40]);
        std::io::Write::write_all(&mut &f, &junk).unwrap();
    };
    tear();
    let wx = time(&walfs_open);
    tear();
    let ix = time(&iron_open);
    let _ = std::fs::remove_dir_all(d);
    [wc, ic, wx, ix]
}

/// A mount served by a thread of this process; unmounted (and the thread
/// joined) on drop, whatever happens.
struct BenchMount {
    mnt: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BenchMount {
    fn start(root: &Path, sync: walfs::SyncMode) -> BenchMount {
        BenchMount::start_with(root, sync, true)
    }

    /// With sealed segments through FUSE passthrough or not.
    fn start_with(root: &Path, sync: walfs::SyncMode, passthrough: bool) -> BenchMount {
        let data = root.join("data");
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let cfg = walfs::mount::MountConfig {
            data,
            mountpoint: mnt.clone(),
            stream: Some("default".into()),
            sync,
            compression: walfs::CompressionType::None,
            segment_size: 64 << 20,
            read_only: false,
            threads: 8,
            allow_other: false,
            block_cache: 64 << 20,
            passthrough,
            uid: None,
            gid: None,
            file_mode: 0o644,
            dir_mode: 0o755,
            metrics: None,
            replicate: None,
            standby: false,
            standby_aside: None,
            follow: None,
            shards: None,
            retain_bytes: None,
            retain_age: None,
        };
        let thread = std::thread::spawn(move || walfs::mount::mount(cfg).unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !mnt.join("stat").exists() {
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
        BenchMount {
            mnt,
            thread: Some(thread),
        }
    }
}

impl Drop for BenchMount {
    fn drop(&mut self) {
        nullfs::unmount_and_join(&self.mnt, self.thread.take());
    }
}

/// bindfs (a libfuse passthrough filesystem) of a scratch directory: the
/// cost of a FUSE round trip on this kernel, as a second baseline.
/// Unmounted on drop. None (with a note) when bindfs is not installed.
struct BindMount {
    src: PathBuf,
    mnt: PathBuf,
}

impl BindMount {
    fn start(root: &Path) -> Option<BindMount> {
        let (src, mnt) = (root.join("src"), root.join("mnt"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        match std::process::Command::new("bindfs")
            .arg(&src)
            .arg(&mnt)
            .status()
        {
            Ok(s) if s.success() => Some(BindMount { src, mnt }),
            _ => {
                eprintln!("bindfs is not installed (Debian: apt-get install bindfs): skipping the bindfs rows");
                None
            }
        }
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
        let _ = std::fs::remove_dir_all(&self.src);
    }
}

/// A row against the null FUSE filesystem doing the same work: the
/// ceiling of what the transport allows, measured in the same run.
fn null_row(
    rows: &mut Vec<Row>,
    name: &str,
    unit: &'static str,
    walfs: f64,
    null: f64,
    lower: bool,
) {
    rows.push(Row {
        name: name.into(),
        unit,
        walfs,
        baseline_name: "null FUSE fs, same work",
        baseline: null,
        target: 0.0,
        lower_is_better: lower,
    });
}

/// A row against bindfs doing the same work: walfs must be ahead.
fn bindfs_row(
    rows: &mut Vec<Row>,
    name: &str,
    unit: &'static str,
    walfs: f64,
    bindfs: f64,
    lower: bool,
) {
    rows.push(Row {
        name: name.into(),
        unit,
        walfs,
        baseline_name: "bindfs, same work",
        baseline: bindfs,
        target: 1.0,
        lower_is_better: lower,
    });
}

/// Flushes the dirty pages (`sync`), then writes 384 MiB to a scratch file
/// in `dir` and removes it, so that the page cache pages the next timed
/// write needs come from pages just freed. This machine (a Firecracker
/// guest with free page reporting) hands freed memory back to its host;
/// touching it again costs a fault in the host, and a write into fresh
/// page cache runs at 380-490 MB/s where one into pages just freed runs at
/// 3.3-4.6 GB/s (dd of 256 MiB, this session). Without this step a run
/// that keeps its files (a walfs mount) pays that cost and a run that
/// removes its file before the next (the plain append) does not.
fn sync_and_warm(dir: &Path) {
    sh_time("sync");
    let scratch = dir.join("warm-scratch");
    let chunk = vec![b'w'; 1 << 20];
    let mut f = std::fs::File::create(&scratch).unwrap();
    for _ in 0..384 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    drop(f);
    std::fs::remove_file(&scratch).unwrap();
}

/// The baseline of every bulk append: `cat big >> plain` into a fresh
/// file, from pages just freed (see [`sync_and_warm`]), in the directory of
/// `plain`. Seconds.
fn plain_append(big: &Path, plain: &Path) -> f64 {
    let _ = std::fs::remove_file(plain);
    sync_and_warm(plain.parent().expect("a file in a directory"));
    sh_time(&format!("cat {} >> {}", big.display(), plain.display()))
}

/// `big` written in 1 MiB writes into 64 MiB files in `dir` (walfs's
/// segment size), the writeback of each MiB started as walfs starts it,
/// and each file that is full fdatasync'ed before the next is begun, as
/// walfs seals a full segment: what sealing costs a bulk append on this
/// disk with no FUSE transport and no framing. The bytes are read first
/// (not timed). Seconds.
fn sealed_segments_append(big: &Path, dir: &Path) -> f64 {
    let data = std::fs::read(big).unwrap();
    let sealer = nullfs::Sealer::new(dir);
    sync_and_warm(dir);
    let start = Instant::now();
    for c in data.chunks(1 << 20) {
        sealer.append(c).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    drop(sealer);
    std::fs::remove_dir_all(dir).unwrap();
    secs
}

/// Removes every file in `dir` (which stays).
fn empty_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
}

/// Two rows for a ceiling of the async bulk append, from the seconds a
/// plain append, the ceiling and walfs took for `mb` MB: the ceiling
/// against the plain append (target 0.5x, as walfs's), and walfs against
/// the ceiling (named `as_baseline` there).
fn sealed_ceiling_rows(
    rows: &mut Vec<Row>,
    ceiling: &str,
    as_baseline: &'static str,
    mb: f64,
    [plain, ceiling_t, walfs]: [f64; 3],
) {
    rows.push(Row {
        name: ceiling.into(),
        unit: "MB/s",
        walfs: mb / ceiling_t,
        baseline_name: "cat >> plain file",
        baseline: mb / plain,
        target: 0.5,
        lower_is_better: false,
    });
    rows.push(Row {
        name: "mount: cat 256 MiB >> append (async)".into(),
        unit: "MB/s",
        walfs: mb / walfs,
        baseline_name: as_baseline,
        baseline: mb / ceiling_t,
        target: 0.0,
        lower_is_better: false,
    });
}

/// Writes 64 MiB to a fresh file at `path` and times its fdatasync alone
/// (median of 3): what sealing a full segment costs when no writeback was
/// started before it.
fn median_of_3_sync_of_64_mib(path: &Path) -> f64 {
    let chunk = vec![b'x'; 1 << 20];
    let mut v: Vec<f64> = (0..3)
        .map(|_| {
            sh_time("sync");
            let mut f = std::fs::File::create(path).unwrap();
            for _ in 0..64 {
                std::io::Write::write_all(&mut f, &chunk).unwrap();
            }
            let start = Instant::now();
            f.sync_data().unwrap();
            start.elapsed().as_secs_f64()
        })
        .collect();
    let _ = std::fs::remove_file(path);
    v.sort_by(f64::total_cmp);
    v[1]
}

/// Times 8 shells each running `n` of `echo "wW I" >> file`, at once.
fn eight_echo_loops(n: usize, file: &Path) -> f64 {
    sh_time(&format!(
        "for w in 1 2 3 4 5 6 7 8; do (i=0; while [ $i -lt {n} ]; do echo \"w$w $i\" >> {}; i=$((i+1)); done) & done; wait",
        file.display()
    ))
}

/// walfs's figures for 256 MiB: `cat log` first and again and the null
/// filesystem's read, as (seconds, daemon CPU seconds); the async bulk
/// append's median seconds.
struct Figures {
    first: (f64, f64),
    again: (f64, f64),
    null: (f64, f64),
    append: f64,
}

/// The contract's floor (`Floor` in examples/support/nullfs.rs) beside
/// walfs and the null filesystem: the least work walfs's contract leaves
/// (for `log`: the pread, every frame's crc before its bytes are served,
/// one copy of the entry bytes; for an append: memchr, the frame's copy and
/// crc, one write). What the floor misses of a target, the contract
/// misses; what walfs misses beyond it is walfs's own overhead.
fn floor_rows(rows: &mut Vec<Row>, root: &Path, big: &Path, stream: &Path, w: &Figures) {
    let floor = nullfs::NullMount::with_segments(root, big, Some(stream));
    let (framed, checked) = (floor.mnt.join("framed"), floor.mnt.join("framed-checked"));
    // The floor serves the very bytes walfs serves, or its figures mean
    // nothing.
    sh_time(&format!("cmp {} {}", big.display(), framed.display()));
    let size = std::fs::metadata(big).unwrap().len() as f64;
    let timed = |f: &Path| {
        let c0 = self_cpu();
        let t = sh_time(&format!("cat {} > /dev/null", f.display()));
        (t, self_cpu() - c0)
    };
    let (first, again) = (timed(&framed), timed(&checked));
    let ms_per_gib = 1000.0 * f64::from(1u32 << 30) / size;
    let plain = root.join("plain");
    let (plain_t, floor_t) = medians_of_3(
        |_| plain_append(big, &plain),
        |_| {
            // Emptied, not removed: the floor's writer holds it open, and
            // an unlinked file it keeps appending to grew slower each run
            // (0.09 s a run, then 0.42 s and 0.65 s by the fourth).
            std::fs::File::create(root.join("framed-sink")).unwrap();
            sync_and_warm(root);
            sh_time(&format!(
                "cat {} >> {}",
                big.display(),
                floor.mnt.join("framing").display()
            ))
        },
    );
    let _ = std::fs::remove_file(&plain);
    let mbs = |t: f64| size / 1e6 / t;
    let mut row = |name: String, unit, walfs, baseline_name, baseline, target, lower| {
        rows.push(Row {
            name,
            unit,
            walfs,
            baseline_name,
            baseline,
            target,
            lower_is_better: lower,
        })
    };
    for (how, f, wf, target) in [
        ("", first, w.first, 0.7),
        (", read again (no crc)", again, w.again, 0.7),
    ] {
        row(
            format!("mount: cat log{how}: the contract's floor (pread, crc, one copy)"),
            "MB/s",
            mbs(f.0),
            "null FUSE fs, pread + reply",
            mbs(w.null.0),
            target,
            false,
        );
        row(
            format!("mount: cat log{how}: the contract's floor, CPU per GiB"),
            "CPU-ms",
            f.1 * ms_per_gib,
            "null FUSE fs, pread + reply",
            w.null.1 * ms_per_gib,
            1.3,
            true,
        );
        row(
            format!("mount: cat log{how}"),
            "MB/s",
            mbs(wf.0),
            "the contract's floor",
            mbs(f.0),
            0.0,
            false,
        );
        row(
            format!("mount: cat log{how}, CPU per GiB"),
            "CPU-ms",
            wf.1 * ms_per_gib,
            "the contract's floor",
            f.1 * ms_per_gib,
            0.0,
            true,
        );
    }
    row(
        "mount: cat 256 MiB >> append (async): the contract's floor (memchr, frame, crc, write; median of 3)".into(),
        "MB/s",
        mbs(floor_t),
        "cat >> plain file",
        mbs(plain_t),
        0.5,
        false,
    );
    row(
        "mount: cat 256 MiB >> append (async)".into(),
        "MB/s",
        mbs(w.append),
        "the contract's floor",
        mbs(floor_t),
        0.0,
        false,
    );
}

fn sh_time(cmd: &str) -> f64 {
    let start = Instant::now();
    let s = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(s.success(), "{cmd}");
    start.elapsed().as_secs_f64()
}

/// `cat entries/<id>` of one 64 MiB entry through a mount with default
/// options, cold (first read: one decode) and warm, against a plain file.
fn big_entry_rows(rows: &mut Vec<Row>) {
    let root = dir("mount-big");
    let plain = root.join("plain");
    std::fs::write(&plain, vec![b'a'; (64 << 20) - 1024]).unwrap();
    let m = BenchMount::start(&root.join("b"), walfs::SyncMode::Async);
    let t = sh_time(&format!(
        "cp {} {}",
        plain.display(),
        m.mnt.join("record").display()
    ));
    assert!(t > 0.0);
    let entry = m.mnt.join("entries").join("0");
    // The daemon runs in this process: what a `stat` of the entry costs it
    // in memory (anonymous pages: the mapped segment's page cache is not
    // the daemon's) and in reads.
    let (anon, r0) = (rss_anon_kib(), rchar());
    assert_eq!(std::fs::metadata(&entry).unwrap().len(), (64 << 20) - 1024);
    let (grown, read) = (rss_anon_kib().saturating_sub(anon), rchar() - r0);
    let entry_mb = ((64 << 20) - 1024) as f64 / 1e6;
    rows.push(Row {
        name: "mount: memory held after a stat of a 64 MiB entry".into(),
        unit: "MB",
        walfs: grown as f64 * 1024.0 / 1e6,
        baseline_name: "the entry's size",
        baseline: entry_mb,
        target: 2.0 / entry_mb,
        lower_is_better: true,
    });
    rows.push(Row {
        name: "mount: bytes read by a stat of a 64 MiB entry".into(),
        unit: "MB",
        walfs: read as f64 / 1e6,
        baseline_name: "the entry's size",
        baseline: entry_mb,
        target: 0.02,
        lower_is_better: true,
    });
    let base = sh_time(&format!("cat {} > /dev/null", plain.display()));
    let cold = sh_time(&format!("cat {} > /dev/null", entry.display()));
    let warm = sh_time(&format!("cat {} > /dev/null", entry.display()));
    let bind = BindMount::start(&root.join("bind"));
    let through_bindfs = bind.as_ref().map(|b| {
        std::fs::copy(&plain, b.src.join("e")).unwrap();
        let e = b.mnt.join("e");
        let cold = sh_time(&format!("cat {} > /dev/null", e.display()));
        let warm = sh_time(&format!("cat {} > /dev/null", e.display()));
        (cold, warm)
    });
    for (i, (name, t)) in [("cold", cold), ("warm", warm)].into_iter().enumerate() {
        rows.push(Row {
            name: format!("mount: cat entries/<id> of a 64 MiB entry, {name}"),
            unit: "MB/s",
            walfs: 64.0 * 1.048576 / t,
            baseline_name: "cat plain 64 MiB file",
            baseline: 64.0 * 1.048576 / base,
            target: if name == "cold" { 0.6 } else { 0.0 },
            lower_is_better: false,
        });
        if let Some((bc, bw)) = through_bindfs {
            let tb = if i == 0 { bc } else { bw };
            bindfs_row(
                rows,
                &format!("mount: cat entries/<id> of a 64 MiB entry, {name}"),
                "MB/s",
                64.0 * 1.048576 / t,
                64.0 * 1.048576 / tb,
                false,
            );
        }
    }
    // The ceiling: the same plain file through the null FUSE filesystem
    // (pread and reply, direct I/O): its first read through a fresh mount,
    // as walfs's cold read is the daemon's first of the entry (the page
    // cache warm in both).
    {
        let null = nullfs::NullMount::start(&root.join("null"), &plain);
        let tn = sh_time(&format!(
            "cat {} > /dev/null",
            null.mnt.join("file").display()
        ));
        null_row(
            rows,
            "mount: cat entries/<id> of a 64 MiB entry, cold",
            "MB/s",
            64.0 * 1.048576 / cold,
            64.0 * 1.048576 / tn,
            false,
        );
    }
    drop(bind);
    drop(m);
    let _ = std::fs::remove_dir_all(root);
}

fn mount_rows(rows: &mut Vec<Row>, fsyncs: f64) {
    let root = dir("mount");
    // A 256 MiB file of 100-byte lines.
    let big = root.join("big");
    {
        let line = format!("{}\n", "x".repeat(99));
        let chunk = line.repeat(10_000);
        let mut f = std::fs::File::create(&big).unwrap();
        for _ in 0..(256 << 20) / chunk.len() {
            std::io::Write::write_all(&mut f, chunk.as_bytes()).unwrap();
        }
    }
    let size = std::fs::metadata(&big).unwrap().len() as f64;
    let bind = BindMount::start(&root.join("bind"));
    let null = nullfs::NullMount::start(&root.join("null"), &big);
    {
        // Medians of 3 alternating runs, each after a sync: the kernel's
        // writeback of the run before takes a core (on 2 cores, a single
        // run measured 0.36-0.80 s for the same walfs work). Each walfs run
        // has a mount of its own; the last one serves the rows below.
        let plain = root.join("plain");
        let mut mounts = Vec::new();
        let metrics = walfs::metrics::global();
        let (seal_s0, seal_n0) = (metrics.seal_sync_seconds.get(), metrics.seal_syncs.get());
        let (base, t) = medians_of_3(
            |_| plain_append(&big, &plain),
            |round| {
                let m = BenchMount::start(&root.join(format!("a{round}")), walfs::SyncMode::Async);
                sync_and_warm(&root);
                let t = sh_time(&format!(
                    "cat {} >> {}",
                    big.display(),
                    m.mnt.join("append").display()
                ));
                mounts.push(m);
                t
            },
        );
        let m = mounts.pop().expect("three runs");
        drop(mounts);
        // The fdatasync that seals each full segment, against the same
        // fdatasync of 64 MiB just written to a plain file: what it costs
        // without the writeback started as the segment grew.
        let seals = (metrics.seal_syncs.get() - seal_n0).max(1) as f64;
        let seal_ms = (metrics.seal_sync_seconds.get() - seal_s0) * 1e3 / seals;
        let bare_ms = median_of_3_sync_of_64_mib(&root.join("sync64")) * 1e3;
        rows.push(Row {
            name: format!(
                "mount: cat 256 MiB >> append (async): the fdatasync sealing each segment ({seals} sealed)"
            ),
            unit: "ms",
            walfs: seal_ms,
            baseline_name: "fdatasync of 64 MiB just written",
            baseline: bare_ms,
            target: 0.5,
            lower_is_better: true,
        });
        rows.push(Row {
            name: "mount: cat 256 MiB >> append (async)".into(),
            unit: "MB/s",
            walfs: size / 1e6 / t,
            baseline_name: "cat >> plain file",
            baseline: size / 1e6 / base,
            target: 0.5,
            lower_is_better: false,
        });
        // The durability the contract asks of it, without FUSE or
        // framing: the same bytes into 64 MiB files, each full one sealed
        // with an fdatasync on the way (as walfs seals a segment).
        let (base2, sealed) = medians_of_3(
            |_| plain_append(&big, &plain),
            |_| sealed_segments_append(&big, &root.join("sealed")),
        );
        sealed_ceiling_rows(
            rows,
            "ceiling: 256 MiB written into 64 MiB files, writeback started every MiB, each full one fdatasync'ed (median of 3)",
            "sealed 64 MiB files, no FUSE, no framing",
            size / 1e6,
            [base2, sealed, t],
        );
        // The same durability through the transport: the null filesystem's
        // `sealing` (a write(2) per WRITE into 64 MiB files, writeback
        // every MiB, an fdatasync of each full one; nothing else).
        let null_sealed = root.join("null").join("sealed");
        let (base3, null_sealing) = medians_of_3(
            |_| plain_append(&big, &plain),
            |_| {
                empty_dir(&null_sealed);
                sync_and_warm(&root);
                sh_time(&format!(
                    "cat {} >> {}",
                    big.display(),
                    null.mnt.join("sealing").display()
                ))
            },
        );
        empty_dir(&null_sealed);
        sealed_ceiling_rows(
            rows,
            "ceiling: null FUSE fs, cat 256 MiB >> a file sealed as walfs seals (64 MiB files, writeback every MiB, fdatasync each full one; median of 3)",
            "null FUSE fs, sealing as walfs",
            size / 1e6,
            [base3, null_sealing, t],
        );
        let append_t = t;
        let base = sh_time(&format!("cat {} > /dev/null", plain.display()));
        // The daemon runs in this process: its segment reads are this
        // process's `rchar` while `cat` reads `log`, plus what `cat` read
        // (the kernel adds a reaped child's counts to its parent's): the
        // `size` bytes served, taken off again.
        let (r0, c0) = (rchar(), self_cpu());
        let t = sh_time(&format!("cat {} > /dev/null", m.mnt.join("log").display()));
        let cpu = self_cpu() - c0;
        rows.push(Row {
            name: "mount: cat log, segment bytes read per byte served".into(),
            unit: "bytes",
            walfs: (rchar() - r0) as f64 / size - 1.0,
            baseline_name: "one read of each byte",
            baseline: 1.0,
            target: 1.1,
            lower_is_better: true,
        });
        sync_and_warm(&root);
        let tn = sh_time(&format!(
            "cat {} >> {}",
            big.display(),
            null.mnt.join("append").display()
        ));
        null_row(
            rows,
            "mount: cat 256 MiB >> append (async)",
            "MB/s",
            size / 1e6 / append_t,
            size / 1e6 / tn,
            false,
        );
        // bindfs after walfs, its writeback flushed before anything else
        // is timed.
        if let Some(b) = &bind {
            sync_and_warm(&root);
            let tb = sh_time(&format!(
                "cat {} >> {}",
                big.display(),
                b.mnt.join("file").display()
            ));
            bindfs_row(
                rows,
                "mount: cat 256 MiB >> append (async)",
                "MB/s",
                size / 1e6 / append_t,
                size / 1e6 / tb,
                false,
            );
            sh_time("sync");
        }
        let c0 = self_cpu();
        let tn = sh_time(&format!(
            "cat {} > /dev/null",
            null.mnt.join("file").display()
        ));
        let null_cpu = self_cpu() - c0;
        // Read again: a sealed segment's frames were checked by the first
        // read, and their crcs are not computed again.
        let c0 = self_cpu();
        let again = sh_time(&format!("cat {} > /dev/null", m.mnt.join("log").display()));
        let again_cpu = self_cpu() - c0;
        let c0 = self_cpu();
        let null_again = sh_time(&format!(
            "cat {} > /dev/null",
            null.mnt.join("file").display()
        ));
        let null_again_cpu = self_cpu() - c0;
        floor_rows(
            rows,
            &root.join("floor"),
            &big,
            &root.join("a2").join("data").join("default"),
            &Figures {
                first: (t, cpu),
                again: (again, again_cpu),
                null: (tn, null_cpu),
                append: append_t,
            },
        );
        let ms_per_gib = 1000.0 * f64::from(1u32 << 30) / size;
        for (how, w, n) in [
            ("", cpu, null_cpu),
            (", read again", again_cpu, null_again_cpu),
        ] {
            rows.push(Row {
                name: format!("mount: daemon CPU per GiB of cat log{how}"),
                unit: "CPU-ms",
                walfs: w * ms_per_gib,
                baseline_name: "null FUSE fs, same work",
                baseline: n * ms_per_gib,
                target: 1.3,
                lower_is_better: true,
            });
        }
        // What no first read may skip: the crc of every byte, computed
        // here over the same bytes (crc32fast, as walfs does).
        let bytes = std::fs::read(&big).unwrap();
        let c0 = self_cpu();
        let crc = crc32fast::hash(&bytes);
        let crc_cpu = self_cpu() - c0;
        assert_ne!(crc, 1);
        drop(bytes);
        rows.push(Row {
            name: "mount: crc32 of the bytes alone (a first read must check them), CPU per GiB"
                .into(),
            unit: "CPU-ms",
            walfs: crc_cpu * ms_per_gib,
            baseline_name: "null FUSE fs, cat log's work",
            baseline: null_cpu * ms_per_gib,
            target: 0.0,
            lower_is_better: true,
        });
        null_row(
            rows,
            "mount: cat log (256 MiB), read again",
            "MB/s",
            size / 1e6 / again,
            size / 1e6 / null_again,
            false,
        );
        null_row(
            rows,
            "mount: cat log (256 MiB)",
            "MB/s",
            size / 1e6 / t,
            size / 1e6 / tn,
            false,
        );
        rows.push(Row {
            name: "mount: cat log (256 MiB)".into(),
            unit: "MB/s",
            walfs: size / 1e6 / t,
            baseline_name: "cat plain file",
            baseline: size / 1e6 / base,
            target: 0.5,
            lower_is_better: false,
        });
        if let Some(b) = &bind {
            let tb = sh_time(&format!("cat {} > /dev/null", b.mnt.join("file").display()));
            bindfs_row(
                rows,
                "mount: cat log (256 MiB), warm",
                "MB/s",
                size / 1e6 / t,
                size / 1e6 / tb,
                false,
            );
        }
        let _ = std::fs::remove_file(plain);
    }
    {
        // The shell's `echo >>` loop without durability: the request path
        // alone (walfs async against the null fs's plain append).
        let m = BenchMount::start(&root.join("e"), walfs::SyncMode::Async);
        let n = 2000;
        let echo = |f: &Path| {
            sh_time(&format!(
                "i=0; while [ $i -lt {n} ]; do echo \"entry $i\" >> {}; i=$((i+1)); done",
                f.display()
            ))
        };
        let (tn, t) = medians_of_3(
            |_| echo(&null.mnt.join("append")),
            |_| echo(&m.mnt.join("append")),
        );
        null_row(
            rows,
            "mount: async echo >> append, 1 process (median of 3)",
            "appends/s",
            n as f64 / t,
            n as f64 / tn,
            false,
        );
    }
    {
        let m = BenchMount::start(&root.join("s"), walfs::SyncMode::Strict);
        let n = 500;
        let append = m.mnt.join("append");
        let echo_loop = |f: &Path| {
            sh_time(&format!(
                "i=0; while [ $i -lt {n} ]; do echo \"entry $i\" >> {}; i=$((i+1)); done",
                f.display()
            ))
        };
        // walfs, and the null filesystem doing walfs's very requests:
        // `spread` is looked up at every open (as `append` is; `durable`'s
        // name is cached for a second) and, with one writer, syncs once
        // per echo. Medians of 3 alternating runs: one run swings by 20%
        // here.
        let (q0, g0) = (null.requests(), null.spread_syncs());
        let metrics = walfs::metrics::global();
        let requests = std::cell::Cell::new(0);
        let (t, ts) = medians_of_3(
            |_| {
                let r0 = metrics.fuse_requests_all.get();
                let t = echo_loop(&append);
                requests.set(requests.get() + metrics.fuse_requests_all.get() - r0);
                t
            },
            |_| echo_loop(&null.mnt.join("spread")),
        );
        let (q1, g1) = (null.requests(), null.spread_syncs());
        assert_eq!(g1 - g0, 3 * n as u64, "the null fs syncs once per echo");
        rows.push(Row {
            name: "mount: strict echo >> append, 1 process (median of 3)".into(),
            unit: "appends/s",
            walfs: n as f64 / t,
            baseline_name: "fdatasync/s",
            baseline: fsyncs,
            target: 0.0,
            lower_is_better: false,
        });
        // The same durable append through bindfs: an O_APPEND write and
        // its fdatasync, from one process per append (as echo is).
        let durable = |b: &BindMount, who: &str| {
            format!(
                "i=0; while [ $i -lt {n} ]; do printf '{who} %s\\n' $i | dd of={} oflag=append conv=notrunc,fdatasync status=none; i=$((i+1)); done",
                b.mnt.join("durable").display()
            )
        };
        let tn = echo_loop(&null.mnt.join("durable"));
        null_row(
            rows,
            "mount: strict echo >> append, 1 process",
            "appends/s",
            n as f64 / t,
            n as f64 / tn,
            false,
        );
        rows.push(Row {
            name: "mount: strict echo >> append, 1 process (median of 3)".into(),
            unit: "appends/s",
            walfs: n as f64 / t,
            baseline_name: "null FUSE fs, the same requests and an fdatasync each",
            baseline: n as f64 / ts,
            target: 0.85,
            lower_is_better: false,
        });
        rows.push(Row {
            name: "mount: strict echo >> append, 1 process: FUSE requests per echo".into(),
            unit: "requests",
            walfs: requests.get() as f64 / (3 * n) as f64,
            baseline_name: "one request",
            baseline: 1.0,
            target: 4.0,
            lower_is_better: true,
        });
        rows.push(Row {
            name: "ceiling: null FUSE fs, echo >> spread, 1 process: FUSE requests per append"
                .into(),
            unit: "requests",
            walfs: (q1 - q0) as f64 / (3 * n) as f64,
            baseline_name: "one request",
            baseline: 1.0,
            target: 0.0,
            lower_is_better: true,
        });
        if let Some(b) = &bind {
            let tb = sh_time(&durable(b, "one"));
            bindfs_row(
                rows,
                "mount: strict echo >> append, 1 process",
                "appends/s",
                n as f64 / t,
                n as f64 / tb,
                false,
            );
        }
        let m0 = walfs::metrics::global();
        let (e0, s0, r0) = (
            m0.entries.get(),
            m0.fdatasyncs.get(),
            m0.fuse_requests_all.get(),
        );
        let t = eight_echo_loops(n, &append);
        let (e1, s1, r1) = (
            m0.entries.get(),
            m0.fdatasyncs.get(),
            m0.fuse_requests_all.get(),
        );
        rows.push(Row {
            name: "mount: strict echo >> append, 8 processes".into(),
            unit: "appends/s",
            walfs: 8.0 * n as f64 / t,
            baseline_name: "fdatasync/s",
            baseline: fsyncs,
            target: 2.5,
            lower_is_better: false,
        });
        let tn = eight_echo_loops(n, &null.mnt.join("durable"));
        null_row(
            rows,
            "mount: strict echo >> append, 8 processes",
            "appends/s",
            8.0 * n as f64 / t,
            8.0 * n as f64 / tn,
            false,
        );
        // Appends/s of 8 loops that took `secs`; a null-fs ceiling against
        // the fdatasync rate (the strict target); walfs against a null row.
        let rate = |secs: f64| 8.0 * n as f64 / secs;
        let ceiling = |rows: &mut Vec<Row>, what: &str, secs: f64| {
            rows.push(Row {
                name: format!("ceiling: null FUSE fs, {what}"),
                unit: "appends/s",
                walfs: rate(secs),
                baseline_name: "fdatasync/s",
                baseline: fsyncs,
                target: 2.5,
                lower_is_better: false,
            })
        };
        let against = |rows: &mut Vec<Row>, baseline_name: &'static str, secs: f64| {
            rows.push(Row {
                name: "mount: strict echo >> append, 8 processes".into(),
                unit: "appends/s",
                walfs: rate(t),
                baseline_name,
                baseline: rate(secs),
                target: 0.0,
                lower_is_better: false,
            })
        };
        // What 8 echo loops reach on this machine with no fdatasync at
        // all (the null fs's plain append, one inode: writers take turns).
        let tc = eight_echo_loops(n, &null.mnt.join("append"));
        against(rows, "null FUSE fs, no fdatasync at all", tc);
        ceiling(rows, "echo >> append, 8 processes, no fdatasync at all", tc);
        // The same 8 loops through the null filesystem as concurrent
        // writers need it: an inode each (walfs's own lookup policy) and a
        // shared fdatasync, then the same without any fdatasync. What these
        // miss of the target, the transport misses with the requests that
        // concurrency on one name costs.
        let (q0, g0) = (null.requests(), null.spread_syncs());
        let tg = eight_echo_loops(n, &null.mnt.join("spread"));
        let (q1, g1) = (null.requests(), null.spread_syncs());
        let ts = eight_echo_loops(n, &null.mnt.join("spread-nosync"));
        ceiling(rows, "8 processes, an inode each, a shared fdatasync", tg);
        against(rows, "null FUSE fs, an inode each, a shared fdatasync", tg);
        ceiling(rows, "8 processes, an inode each, no fdatasync at all", ts);
        rows.push(Row {
            name: "ceiling: null FUSE fs, 8 processes, an inode each: appends per fdatasync".into(),
            unit: "entries",
            walfs: (8 * n) as f64 / (g1 - g0).max(1) as f64,
            baseline_name: "writers",
            baseline: 8.0,
            target: 0.0,
            lower_is_better: false,
        });
        rows.push(Row {
            name: "ceiling: null FUSE fs, 8 processes, an inode each: FUSE requests per append"
                .into(),
            unit: "requests",
            walfs: (q1 - q0) as f64 / (8 * n) as f64,
            baseline_name: "one request",
            baseline: 1.0,
            target: 0.0,
            lower_is_better: true,
        });
        if let Some(b) = &bind {
            let cmds: Vec<String> = (1..=8)
                .map(|w| format!("({}) &", durable(b, &format!("w{w}"))))
                .collect();
            let tb = sh_time(&format!("{} wait", cmds.join(" ")));
            bindfs_row(
                rows,
                "mount: strict echo >> append, 8 processes",
                "appends/s",
                8.0 * n as f64 / t,
                8.0 * n as f64 / tb,
                false,
            );
        }
        rows.push(Row {
            name: "mount: strict, 8 processes: entries per fdatasync".into(),
            unit: "entries",
            walfs: (e1 - e0) as f64 / (s1 - s0).max(1) as f64,
            baseline_name: "writers",
            baseline: 8.0,
            target: 0.5,
            lower_is_better: false,
        });
        rows.push(Row {
            name: "mount: strict, 8 processes: FUSE requests per append".into(),
            unit: "requests",
            walfs: (r1 - r0) as f64 / (e1 - e0).max(1) as f64,
            baseline_name: "one request",
            baseline: 1.0,
            target: 0.0,
            lower_is_better: true,
        });
    }
    {
        let m = BenchMount::start(&root.join("m"), walfs::SyncMode::Async);
        let million = root.join("million");
        sh_time(&format!("seq 0 999999 > {}", million.display()));
        sh_time(&format!(
            "cat {} >> {}",
            million.display(),
            m.mnt.join("append").display()
        ));
        let t = sh_time(&format!(
            "test $(ls {} | wc -l) -eq 1000000",
            m.mnt.join("entries").display()
        ));
        rows.push(Row {
            name: "mount: ls entries | wc -l, 1M entries".into(),
            unit: "s",
            walfs: t,
            baseline_name: "the 1 s target",
            baseline: 1.0,
            target: 1.0,
            lower_is_better: true,
        });
        // Random entry reads: open, read, close, from this process.
        let ids = random_ids(20_000, 7);
        let start = Instant::now();
        for &id in &ids {
            let b = std::fs::read(m.mnt.join(format!("entries/{id}"))).unwrap();
            assert_eq!(b, format!("{id}\n").as_bytes());
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / ids.len() as f64;
        let small = root.join("small");
        std::fs::write(&small, b"12345\n").unwrap();
        let start = Instant::now();
        for _ in &ids {
            std::fs::read(&small).unwrap();
        }
        let base = start.elapsed().as_secs_f64() * 1e6 / ids.len() as f64;
        rows.push(Row {
            name: "mount: random read of entries/<id>".into(),
            unit: "us/read",
            walfs: per,
            baseline_name: "read a small plain file",
            baseline: base,
            target: 0.0,
            lower_is_better: true,
        });
        if let Some(b) = &bind {
            for &id in ids.iter().take(2000) {
                std::fs::write(b.src.join(id.to_string()), format!("{id}\n")).unwrap();
            }
            let start = Instant::now();
            for &id in ids.iter().take(2000) {
                std::fs::read(b.mnt.join(id.to_string())).unwrap();
            }
            let tb = start.elapsed().as_secs_f64() * 1e6 / 2000.0;
            bindfs_row(
                rows,
                "mount: random read of entries/<id>",
                "us/read",
                per,
                tb,
                true,
            );
        }
    }
    drop(null);
    drop(bind);
    let _ = std::fs::remove_dir_all(root);
}

fn replica_opts(url: &str, endpoint: &str, mode: walfs::ReplicaMode) -> walfs::ReplicaOptions {
    let mut o = walfs::ReplicaOptions::new(url);
    o.mode = mode;
    o.settings = vec![
        ("aws_access_key_id".into(), "bench".into()),
        ("aws_secret_access_key".into(), "bench".into()),
        ("aws_region".into(), "us-east-1".into()),
        ("aws_endpoint".into(), endpoint.into()),
        ("aws_allow_http".into(), "true".into()),
    ];
    o
}

/// Strict appends of 100 bytes by `threads` threads, shipping as `r`
/// says: (ops/s, entries per upload round).
fn replicated_appends(threads: usize, r: Option<walfs::ReplicaOptions>) -> (f64, f64) {
    let entry = [5u8; 100];
    let d = dir("replica-w");
    let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
    o.replicate = r;
    let w = walfs::Wal::new(o).unwrap();
    let ops = rate(threads, |_, _| {
        w.append("s", &entry).unwrap();
    });
    let per_round = w
        .replication_counters()
        .map_or(0.0, |(rounds, _, entries)| {
            entries as f64 / rounds.max(1) as f64
        });
    drop(w);
    let _ = std::fs::remove_dir_all(d);
    (ops, per_round)
}

/// A steady 1,000 appends/s for `secs` with async shipping (1 s interval):
/// (lag p50 ms, lag p99 ms, PUTs per second) from each append's return
/// to the manifest covering it.
fn replication_lag(endpoint: &str, secs: u64) -> (f64, f64, f64) {
    let d = dir("replica-lag");
    let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
    o.replicate = Some(replica_opts(
        "s3://bench/lag",
        endpoint,
        walfs::ReplicaMode::Async,
    ));
    let w = walfs::Wal::new(o).unwrap();
    let n = (secs * 1000) as usize;
    let times = std::sync::Mutex::new(Vec::with_capacity(n));
    let done = AtomicBool::new(false);
    let lags = std::sync::Mutex::new(Vec::with_capacity(n));
    let start = Instant::now();
    let puts0 = walfs::metrics::global().replica_puts.get();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 0..n {
                let due = start + Duration::from_micros(i as u64 * 1000);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                w.append(
                    "s",
                    b"a steady entry of about fifty bytes, as ledgers write",
                )
                .unwrap();
                times.lock().unwrap().push(Instant::now());
            }
            done.store(true, Ordering::Release);
        });
        sc.spawn(|| {
            let mut seen = 0usize;
            loop {
                let shipped = w
                    .stream_info("s")
                    .and_then(|i| i.replication)
                    .map_or(0, |r| r.replicated_id as usize);
                let now = Instant::now();
                let t = times.lock().unwrap();
                let mut l = lags.lock().unwrap();
                while seen < shipped.min(t.len()) {
                    l.push(now.duration_since(t[seen]).as_secs_f64() * 1000.0);
                    seen += 1;
                }
                drop(l);
                if seen >= n && done.load(Ordering::Acquire) {
                    break;
                }
                drop(t);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    });
    let elapsed = start.elapsed().as_secs_f64();
    let puts = walfs::metrics::global().replica_puts.get() - puts0;
    drop(w);
    let _ = std::fs::remove_dir_all(d);
    let mut l = lags.into_inner().unwrap();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    (pct(0.5), pct(0.99), puts as f64 / elapsed)
}

/// The server's raw GET rate (MB/s) for the objects of bucket `bench`
/// whose keys `pick` takes, fetched whole, one at a time, over plain HTTP.
fn raw_get_mbs(server: &s3::S3Server, pick: impl Fn(&str) -> bool) -> f64 {
    let keys: Vec<String> = server
        .keys("bench")
        .into_iter()
        .filter(|k| pick(k))
        .collect();
    let t = Instant::now();
    let bytes: usize = keys.iter().map(|k| server.get("bench", k).len()).sum();
    bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// Ships `mib` MiB, then restores it: (restore MB/s, the server's raw GET
/// MB/s for the same objects, one at a time over plain HTTP).
fn restore_rate(server: &s3::S3Server, mib: usize) -> (f64, f64) {
    let endpoint = server.endpoint();
    let d = dir("replica-src");
    let r = replica_opts("s3://bench/restore", &endpoint, walfs::ReplicaMode::Async);
    {
        let mut o = walfs_opts(&d, walfs::SyncMode::Async);
        o.max_segment_size = 8 << 20;
        o.replicate = Some(r.clone());
        let w = walfs::Wal::new(o).unwrap();
        let entry = vec![7u8; 64 * 1024];
        for _ in 0..mib * 16 {
            w.append("s", &entry).unwrap();
        }
    }
    let out = dir("replica-out").join("data");
    let t = Instant::now();
    let rep = walfs::replica::restore(&r, &out, &mut |_, _| {}).unwrap();
    let restore_mbs = rep.bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let raw_mbs = raw_get_mbs(server, |k| k.starts_with("restore/") && k.ends_with(".wal"));
    let _ = std::fs::remove_dir_all(d);
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
    (restore_mbs, raw_mbs)
}

fn replica_rows(rows: &mut Vec<Row>) {
    let server = s3::S3Server::start();
    server.create_bucket("bench");
    let endpoint = server.endpoint();
    for n in [1usize, 8] {
        // The machine is noisy: local and async runs alternate, three of
        // each, and the medians are compared.
        let (local, asy) = medians_of_3(
            |_| replicated_appends(n, None).0,
            |round| {
                replicated_appends(
                    n,
                    Some(replica_opts(
                        &format!("s3://bench/async{n}-{round}"),
                        &endpoint,
                        walfs::ReplicaMode::Async,
                    )),
                )
                .0
            },
        );
        let (strict, per_round) = replicated_appends(
            n,
            Some(replica_opts(
                &format!("s3://bench/strict{n}"),
                &endpoint,
                walfs::ReplicaMode::Strict,
            )),
        );
        rows.push(Row {
            name: format!("strict append, {n} writers, --replicate-sync async (median of 3)"),
            unit: "ops/s",
            walfs: asy,
            baseline_name: "local only, median of 3",
            baseline: local,
            target: 0.9,
            lower_is_better: false,
        });
        rows.push(Row {
            name: format!("strict append, {n} writers, --replicate-sync strict"),
            unit: "ops/s",
            walfs: strict,
            baseline_name: "local only",
            baseline: local,
            target: 0.0,
            lower_is_better: false,
        });
        rows.push(Row {
            name: format!("--replicate-sync strict, {n} writers: entries per upload round"),
            unit: "entries",
            walfs: per_round,
            baseline_name: "writers",
            baseline: n as f64,
            target: if n == 8 { 0.5 } else { 0.0 },
            lower_is_better: false,
        });
    }
    let (p50, p99, puts) = replication_lag(&endpoint, 8);
    rows.push(Row {
        name: "replication lag at 1,000 appends/s (async, 1 s interval), p50".into(),
        unit: "ms",
        walfs: p50,
        baseline_name: "2 s",
        baseline: 2000.0,
        target: 0.0,
        lower_is_better: true,
    });
    rows.push(Row {
        name: "replication lag at 1,000 appends/s (async, 1 s interval), p99".into(),
        unit: "ms",
        walfs: p99,
        baseline_name: "2 s",
        baseline: 2000.0,
        target: 1.0,
        lower_is_better: true,
    });
    rows.push(Row {
        name: "PUT requests per second, one stream at 1,000 appends/s".into(),
        unit: "PUT/s",
        walfs: puts,
        baseline_name: "appends/s",
        baseline: 1000.0,
        target: 0.0,
        lower_is_better: true,
    });
    let (restore, raw) = restore_rate(&server, 128);
    rows.push(Row {
        name: "restore 128 MiB".into(),
        unit: "MB/s",
        walfs: restore,
        baseline_name: "raw GET, same objects",
        baseline: raw,
        target: 0.5,
        lower_is_better: false,
    });
}

/// Strict appends of 1 KiB by `threads` writers into 1 MiB segments, with
/// (`retain`) or without a 4 MiB retention applied every second as the
/// mount's thread does: (ops/s, segments freed).
fn retained_appends(threads: usize, retain: bool) -> (f64, u64) {
    let d = dir("retention");
    let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
    o.max_segment_size = 1 << 20;
    if retain {
        o.retain_bytes = Some(4 << 20);
    }
    let w = walfs::Wal::new(o).unwrap();
    let entry = [9u8; 1024];
    let freed0 = walfs::metrics::global().retention_segments.get();
    let stop = AtomicBool::new(false);
    let ops = std::thread::scope(|sc| {
        if retain {
            sc.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = w.apply_retention("s", u64::MAX);
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
        let ops = rate(threads, |_, _| {
            w.append("s", &entry).unwrap();
        });
        stop.store(true, Ordering::Relaxed);
        ops
    });
    let freed = walfs::metrics::global().retention_segments.get() - freed0;
    drop(w);
    let _ = std::fs::remove_dir_all(d);
    (ops, freed)
}

fn retention_rows(rows: &mut Vec<Row>) {
    let m = walfs::metrics::global();
    for n in [1usize, 8] {
        let (truncations0, locked0) = (m.truncations.get(), m.truncation_lock_seconds.get());
        let mut freed = 0;
        let (plain, kept) = medians_of_3(
            |_| retained_appends(n, false).0,
            |_| {
                let (ops, f) = retained_appends(n, true);
                freed += f;
                ops
            },
        );
        let truncations = (m.truncations.get() - truncations0).max(1);
        let locked_ms = (m.truncation_lock_seconds.get() - locked0) * 1e3 / truncations as f64;
        rows.push(Row {
            name: format!(
                "strict append of 1 KiB, {n} writers, --retain-bytes 4M applied each second ({freed} segments freed over 3 runs by {truncations} truncations, each holding the writer's lock {locked_ms:.2} ms; median of 3)"
            ),
            unit: "ops/s",
            walfs: kept,
            baseline_name: "no retention, median of 3",
            baseline: plain,
            target: 0.9,
            lower_is_better: false,
        });
    }
}

/// A standby's Wal and its applier on a fresh directory.
fn standby_of(
    r: &walfs::ReplicaOptions,
    name: &str,
) -> (PathBuf, walfs::Wal, walfs::replica::standby::Standby) {
    let d = dir(name);
    let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
    o.standby = true;
    let w = walfs::Wal::new(o).unwrap();
    let s = walfs::replica::standby::Standby::start(w.clone(), r.clone(), Box::new(|_: &str| {}))
        .unwrap();
    (d, w, s)
}

/// A standby applying a primary's async shipping (1 s interval) at a
/// steady 1,000 appends/s for `secs`: (lag p50 ms, p99 ms) from each
/// append's return on the primary to the standby holding it.
fn standby_lag(endpoint: &str, secs: u64) -> (f64, f64) {
    let r = replica_opts(
        "s3://bench/standby-lag",
        endpoint,
        walfs::ReplicaMode::Async,
    );
    let d = dir("standby-lag-primary");
    let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
    o.replicate = Some(r.clone());
    let p = walfs::Wal::new(o).unwrap();
    p.append("s", b"first").unwrap();
    let (sd, sw, standby) = standby_of(&r, "standby-lag-standby");
    let n = (secs * 1000) as usize;
    let times = std::sync::Mutex::new(Vec::with_capacity(n));
    let done = AtomicBool::new(false);
    let mut lags = Vec::with_capacity(n);
    let start = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for i in 0..n {
                let due = start + Duration::from_micros(i as u64 * 1000);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                p.append(
                    "s",
                    b"a steady entry of about fifty bytes, as ledgers write",
                )
                .unwrap();
                times.lock().unwrap().push(Instant::now());
            }
            done.store(true, Ordering::Release);
        });
        let mut seen = 0usize;
        let deadline = start + Duration::from_secs(secs + 30);
        while seen < n && Instant::now() < deadline {
            // Id 0 was there before the clock started.
            let held = sw.next_id("s").saturating_sub(1) as usize;
            let now = Instant::now();
            let t = times.lock().unwrap();
            while seen < held.min(t.len()) {
                lags.push(now.duration_since(t[seen]).as_secs_f64() * 1000.0);
                seen += 1;
            }
            drop(t);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    drop(standby);
    drop(sw);
    drop(p);
    let _ = std::fs::remove_dir_all(d);
    let _ = std::fs::remove_dir_all(sd);
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| lags[((lags.len() as f64 * q) as usize).min(lags.len() - 1)];
    (pct(0.5), pct(0.99))
}

/// An idle primary holding a `lease` for `secs`: PUT requests it made.
fn idle_lease_puts(endpoint: &str, lease: Duration, secs: u64) -> u64 {
    let mut r = replica_opts("s3://bench/idle", endpoint, walfs::ReplicaMode::Async);
    r.lease = Some(lease);
    let d = dir("idle-primary");
    let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
    o.replicate = Some(r);
    let p = walfs::Wal::new(o).unwrap();
    p.append("s", b"one").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let before = p.replication_counters().unwrap().1;
    std::thread::sleep(Duration::from_secs(secs));
    let puts = p.replication_counters().unwrap().1 - before;
    drop(p);
    let _ = std::fs::remove_dir_all(d);
    puts
}

/// `runs` failovers with a `lease`: a primary cut off from the bucket (a
/// black-holing proxy) to the first append its standby acknowledges, in s.
fn failover_times(server: &s3::S3Server, lease: Duration, runs: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for run in 0..runs {
        let proxy = s3::Proxy::start(server.port);
        let url = format!("s3://bench/failover-{}-{run}", lease.as_secs());
        let mut r = replica_opts(&url, &proxy.endpoint(), walfs::ReplicaMode::Strict);
        r.lease = Some(lease);
        r.timeout = Duration::from_secs(1);
        let d = dir("failover-primary");
        let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
        o.replicate = Some(r.clone());
        let p = walfs::Wal::new(o).unwrap();
        p.append("s", b"before").unwrap();
        let mut sr = replica_opts(&url, &server.endpoint(), walfs::ReplicaMode::Strict);
        sr.lease = Some(lease);
        let (sd, sw, standby) = standby_of(&sr, "failover-standby");
        while sw.next_id("s") < 1 {
            std::thread::sleep(Duration::from_millis(10));
        }
        proxy.set(s3::Mode::Blackhole);
        let cut = Instant::now();
        while sw.append("s", b"after").is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        out.push(cut.elapsed().as_secs_f64());
        drop(standby);
        drop(sw);
        drop(p);
        drop(proxy);
        let _ = std::fs::remove_dir_all(d);
        let _ = std::fs::remove_dir_all(sd);
    }
    out
}

fn failover_rows(rows: &mut Vec<Row>) {
    let server = s3::S3Server::start();
    server.create_bucket("bench");
    let endpoint = server.endpoint();
    for (lease, runs) in [
        (walfs::replica::DEFAULT_LEASE, 5),
        (walfs::replica::MIN_LEASE, 10),
    ] {
        let mut t = failover_times(&server, lease, runs);
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        for (what, v) in [("p50", pct(0.5)), ("p99 (the slowest)", pct(0.99))] {
            rows.push(Row {
                name: format!(
                    "failover, {} s lease: primary cut off to the first append on the standby, {what} of {runs}",
                    lease.as_secs()
                ),
                unit: "s",
                walfs: v,
                baseline_name: "lease + 2 s",
                baseline: lease.as_secs_f64() + 2.0,
                target: if what == "p50" { 0.0 } else { 1.0 },
                lower_is_better: true,
            });
        }
    }
    let (p50, p99) = standby_lag(&endpoint, 8);
    for (what, v, target) in [("p50", p50, 0.0), ("p99", p99, 1.0)] {
        rows.push(Row {
            name: format!("standby apply lag at 1,000 appends/s (async, 1 s interval), {what}"),
            unit: "ms",
            walfs: v,
            baseline_name: "2 s",
            baseline: 2000.0,
            target,
            lower_is_better: true,
        });
    }
    let lease = walfs::replica::DEFAULT_LEASE;
    let secs = 30;
    let puts = idle_lease_puts(&endpoint, lease, secs);
    rows.push(Row {
        name: format!(
            "an idle primary's PUTs in {secs} s, {} s lease",
            lease.as_secs()
        ),
        unit: "PUTs",
        walfs: puts as f64,
        baseline_name: "1 per lease/3",
        baseline: secs as f64 / (lease.as_secs_f64() / 3.0),
        target: 1.0,
        lower_is_better: true,
    });
}

fn follower(r: &walfs::ReplicaOptions, poll: Duration) -> walfs::replica::follow::BucketLog {
    let mut o = walfs::replica::follow::FollowOptions::new(r.clone());
    o.poll = poll;
    o.cache_dir = Some(dir("follow-cache"));
    walfs::replica::follow::BucketLog::open(o).unwrap()
}

/// `n` entries appended one at a time to a primary shipping every
/// `interval` (async), each waited for on a follower polling every second:
/// milliseconds from shipped to seen, and from appended to seen, sorted.
fn follower_latency(
    endpoint: &str,
    name: &str,
    interval: Duration,
    n: u64,
) -> (Vec<f64>, Vec<f64>) {
    use walfs::mount::source::LogSource;
    let d = dir(name);
    let mut r = replica_opts(
        &format!("s3://bench/{name}"),
        endpoint,
        walfs::ReplicaMode::Async,
    );
    r.interval = interval;
    let mut o = walfs_opts(&d, walfs::SyncMode::Strict);
    o.replicate = Some(r.clone());
    let w = walfs::Wal::new(o).unwrap();
    let shipped_id = |w: &walfs::Wal| {
        w.stream_info("s")
            .unwrap()
            .replication
            .unwrap()
            .replicated_id
    };
    w.append("s", b"first").unwrap();
    while shipped_id(&w) < 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let f = follower(&r, Duration::from_secs(1));
    let (mut after_ship, mut end_to_end) = (Vec::new(), Vec::new());
    for i in 0..n {
        let id = w.append("s", format!("entry {i}").as_bytes()).unwrap();
        let appended = Instant::now();
        while shipped_id(&w) <= id {
            std::thread::sleep(Duration::from_millis(1));
        }
        let shipped = Instant::now();
        let mut seen = 0;
        while f.next_id("s") <= id {
            seen = f.wait_any(seen, Duration::from_millis(50));
        }
        after_ship.push(shipped.elapsed().as_secs_f64() * 1000.0);
        end_to_end.push(appended.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(f);
    drop(w);
    let _ = std::fs::remove_dir_all(d);
    for v in [&mut after_ship, &mut end_to_end] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    (after_ship, end_to_end)
}

/// Follower rows: how long after shipping a follower (default 1 s poll)
/// sees an entry; cold and warm random reads (requests, ms); a sequential
/// read of `log` against the raw GET bandwidth of the same objects.
fn follow_rows(rows: &mut Vec<Row>, server: &s3::S3Server) {
    use walfs::mount::source::LogSource;
    let endpoint = server.endpoint();
    // Latency after shipping: one entry every 50 ms, shipped every 100 ms.
    let (after_ship, _) = follower_latency(&endpoint, "follow-lat", Duration::from_millis(100), 60);
    // End to end with the defaults (shipping every 1 s, a 1 s poll): from
    // the append's return to the follower showing it.
    let (_, end_to_end) = follower_latency(&endpoint, "follow-e2e", Duration::from_secs(1), 15);
    for (what, lat) in [
        (
            "follower sees an entry after it is shipped (1 s poll)",
            after_ship,
        ),
        (
            "follower sees an entry after its append (defaults: 1 s shipping, 1 s poll)",
            end_to_end,
        ),
    ] {
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            let v = lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            rows.push(Row {
                name: format!("{what}, {name}"),
                unit: "ms",
                walfs: v,
                baseline_name: "2 s",
                baseline: 2000.0,
                target: if name == "p99" { 1.0 } else { 0.0 },
                lower_is_better: true,
            });
        }
    }

    // A 128 MiB log in 32 MiB segments of 100-byte entries.
    let d = dir("follow-src");
    let r = replica_opts("s3://bench/follow", &endpoint, walfs::ReplicaMode::Async);
    let n = 1_200_000u64;
    {
        let mut o = walfs_opts(&d, walfs::SyncMode::Async);
        o.max_segment_size = 32 << 20;
        o.replicate = Some(r.clone());
        let w = walfs::Wal::new(o).unwrap();
        let e = [9u8; 100];
        for _ in 0..n {
            w.append("s", &e).unwrap();
        }
    }
    let local = walfs::Wal::new(walfs_opts(&d, walfs::SyncMode::Strict)).unwrap();
    let ids = random_ids(200, 7);
    let t = Instant::now();
    for &i in &ids {
        local.get("s", i % n).unwrap().unwrap();
    }
    let local_ms = t.elapsed().as_secs_f64() * 1000.0 / ids.len() as f64;
    drop(local);
    let f = follower(&r, Duration::from_secs(1));
    let (mut cold_ms, mut cold_req) = (0.0, 0);
    for &i in ids.iter().take(50) {
        let before = f.requests();
        let t = Instant::now();
        f.read_entry("s", i % n, 0, 1 << 20).unwrap().unwrap();
        cold_ms += t.elapsed().as_secs_f64() * 1000.0;
        cold_req += f.requests() - before;
    }
    let before = f.requests();
    let t = Instant::now();
    for &i in ids.iter().take(50) {
        f.read_entry("s", i % n, 0, 1 << 20).unwrap().unwrap();
    }
    let warm_ms = t.elapsed().as_secs_f64() * 1000.0 / 50.0;
    let warm_req = (f.requests() - before) as f64 / 50.0;
    drop(f);
    rows.push(Row {
        name: "follower: cold random entries/<id> (128 MiB log, 32 MiB segments)".into(),
        unit: "ms/read",
        walfs: cold_ms / 50.0,
        baseline_name: "local get",
        baseline: local_ms,
        target: 0.0,
        lower_is_better: true,
    });
    rows.push(Row {
        name: "follower: cold random entries/<id>: range GETs per read".into(),
        unit: "requests",
        walfs: cold_req as f64 / 50.0,
        baseline_name: "blocks in a segment",
        baseline: 32.0,
        target: 0.0,
        lower_is_better: true,
    });
    rows.push(Row {
        name: "follower: warm entries/<id> (same ids again)".into(),
        unit: "ms/read",
        walfs: warm_ms,
        baseline_name: "local get",
        baseline: local_ms,
        target: 0.0,
        lower_is_better: true,
    });
    rows.push(Row {
        name: "follower: warm entries/<id>: range GETs per read".into(),
        unit: "requests",
        walfs: warm_req,
        baseline_name: "one",
        baseline: 1.0,
        target: 0.0,
        lower_is_better: true,
    });
    // Sequential `log`, cold.
    let f = follower(&r, Duration::from_secs(1));
    let payloads = f.segment_payloads("s").unwrap();
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut out = Vec::with_capacity(1 << 20);
    for (seg, total) in payloads {
        let mut from = 0;
        while from < total {
            out.clear();
            f.read_payload("s", seg, from, 1 << 20, &mut out).unwrap();
            from += out.len() as u64;
            bytes += out.len() as u64;
            if out.is_empty() {
                break;
            }
        }
    }
    let log_mbs = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    drop(f);
    let raw_mbs = raw_get_mbs(server, |k| k.starts_with("follow/s/"));
    rows.push(Row {
        name: "follower: sequential log, cold (entry bytes)".into(),
        unit: "MB/s",
        walfs: log_mbs,
        baseline_name: "raw GET, same objects",
        baseline: raw_mbs,
        target: 0.5,
        lower_is_better: false,
    });
    let _ = std::fs::remove_dir_all(d);
    // The followers' block cache (see `follower`).
    let _ = std::fs::remove_dir_all(bench_path("follow-cache"));
}

/// This process's anonymous resident memory, in KiB.
fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user and system) this process has used, every thread:
/// the in-process daemons' work (a reaped `cat` is not counted).
fn self_cpu() -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// Bytes this process has read (`rchar` in /proc/self/io).
fn rchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn wanted(group: &str) -> bool {
    std::env::var("WALFS_BENCH_ONLY").map_or(true, |v| v.split(',').any(|g| g == group))
}

fn main() {
    let gib: u64 = std::env::var("WALFS_BENCH_OPEN_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    eprintln!("measuring the machine...");
    let fsyncs = fdatasync_rate();
    let bw = write_bandwidth();
    let mut rows = Vec::new();
    if wanted("strict") {
        eprintln!("strict appends...");
        let (w1, i1, g1) = strict_appends(1);
        rows.push(Row {
            name: "strict append, 1 writer".into(),
            unit: "ops/s",
            walfs: w1,
            baseline_name: "fdatasync/s",
            baseline: fsyncs,
            target: 0.8,
            lower_is_better: false,
        });
        rows.push(Row {
            name: "strict append, 1 writer".into(),
            unit: "ops/s",
            walfs: w1,
            baseline_name: "ironwal",
            baseline: i1,
            target: 0.0,
            lower_is_better: false,
        });
        let (w8, i8, g8) = strict_appends(8);
        rows.push(Row {
            name: "strict append, 8 writers, 1 stream".into(),
            unit: "ops/s",
            walfs: w8,
            baseline_name: "ironwal",
            baseline: i8,
            target: 20.0,
            lower_is_better: false,
        });
        // The counter behind group commit: entries each fdatasync carried,
        // against the number of writers (the most it can carry).
        for (n, g) in [(1usize, g1), (8, g8)].into_iter().chain(
            [2usize, 4, 16]
                .into_iter()
                .map(|n| (n, strict_appends(n).2)),
        ) {
            rows.push(Row {
                name: format!("strict append, {n} writers: entries per fdatasync"),
                unit: "entries",
                walfs: g,
                baseline_name: "writers",
                baseline: n as f64,
                target: 0.8,
                lower_is_better: false,
            });
        }
    }
    if wanted("async") {
        eprintln!("async appends...");
        let (wa, ia) = async_4k();
        rows.push(Row {
            name: "async append, 4 KiB entries".into(),
            unit: "MB/s",
            walfs: wa,
            baseline_name: "ironwal",
            baseline: ia,
            target: 3.0,
            lower_is_better: false,
        });
        rows.push(Row {
            name: "async append, 4 KiB entries".into(),
            unit: "MB/s",
            walfs: wa,
            baseline_name: "write bandwidth",
            baseline: bw,
            target: 0.0,
            lower_is_better: false,
        });
    }
    if wanted("get") {
        eprintln!("random gets on 1,000,000 entries...");
        let m = million_dir();
        let (wg, ig) = random_gets(&m, false);
        rows.push(Row {
            name: "random get, 1M entries, StandardIo".into(),
            unit: "gets/s",
            walfs: wg,
            baseline_name: "ironwal",
            baseline: ig,
            target: 200.0,
            lower_is_better: false,
        });
        let (wm, im) = random_gets(&m, true);
        rows.push(Row {
            name: "random get, 1M entries, Mmap".into(),
            unit: "gets/s",
            walfs: wm,
            baseline_name: "ironwal mmap",
            baseline: im,
            target: 200.0,
            lower_is_better: false,
        });
        let _ = std::fs::remove_dir_all(m);
    }
    if wanted("iter") {
        eprintln!("sequential iteration...");
        let (wi, wl, ii) = iteration(false);
        rows.push(Row {
            name: "sequential iteration, StandardIo (iter: a Vec per entry)".into(),
            unit: "MB/s",
            walfs: wi,
            baseline_name: "ironwal StandardIo",
            baseline: ii,
            target: 2.0,
            lower_is_better: false,
        });
        rows.push(Row {
            name: "sequential iteration, StandardIo (next_ref: borrowed)".into(),
            unit: "MB/s",
            walfs: wl,
            baseline_name: "ironwal StandardIo",
            baseline: ii,
            target: 2.0,
            lower_is_better: false,
        });
        {
            let (wi, wl, ii) = iteration(true);
            rows.push(Row {
                name: "sequential iteration, Mmap (iter: a Vec per entry)".into(),
                unit: "MB/s",
                walfs: wi,
                baseline_name: "ironwal Mmap",
                baseline: ii,
                target: 2.0,
                lower_is_better: false,
            });
            rows.push(Row {
                name: "sequential iteration, Mmap (next_ref: borrowed)".into(),
                unit: "MB/s",
                walfs: wl,
                baseline_name: "ironwal Mmap",
                baseline: ii,
                target: 2.0,
                lower_is_better: false,
            });
        }
    }
    if wanted("mount") {
        eprintln!("the mount...");
        mount_rows(&mut rows, fsyncs);
    }
    if wanted("mount") || wanted("bigentry") {
        big_entry_rows(&mut rows);
    }
    if wanted("mount") || wanted("segments") {
        segment_rows::rows(&mut rows);
    }
    if wanted("sharded") {
        eprintln!("sharded appends...");
        for (shards, writers) in [(4u16, 1usize), (4, 4), (4, 16), (16, 16)] {
            let (w, i, g) = sharded_appends(shards, writers);
            rows.push(Row {
                name: format!(
                    "sharded strict append, {shards} shards, {writers} writers (median of 3)"
                ),
                unit: "ops/s",
                walfs: w,
                baseline_name: "ironwal",
                baseline: i,
                target: 1.0,
                lower_is_better: false,
            });
            rows.push(Row {
                name: format!(
                    "sharded strict append, {shards} shards, {writers} writers: entries per fdatasync"
                ),
                unit: "entries",
                walfs: g,
                baseline_name: "writers/shard",
                baseline: (writers as f64 / shards as f64).max(1.0),
                target: 0.0,
                lower_is_better: false,
            });
        }
        let (w, i) = sharded_checkpoints();
        rows.push(Row {
            name: "create_checkpoint, 16 shards (median of 3)".into(),
            unit: "ops/s",
            walfs: w,
            baseline_name: "ironwal",
            baseline: i,
            target: 0.0,
            lower_is_better: false,
        });
    }
    if wanted("replica") {
        eprintln!("replication (moto's S3 server on loopback)...");
        replica_rows(&mut rows);
    }
    if wanted("retention") {
        eprintln!("retention...");
        retention_rows(&mut rows);
    }
    if wanted("failover") {
        eprintln!("failover (moto's S3 server on loopback, a fault proxy per primary)...");
        failover_rows(&mut rows);
    }
    if wanted("follow") {
        eprintln!("followers (moto's S3 server on loopback)...");
        let server = s3::S3Server::start();
        server.create_bucket("bench");
        follow_rows(&mut rows, &server);
    }
    let mut open_ms = None;
    if wanted("open") {
        eprintln!("open times ({gib} GiB stream)...");
        let [wc, ic, wx, ix] = open_times(gib);
        rows.push(Row {
            name: format!("open {gib} GiB stream, clean"),
            unit: "ms",
            walfs: wc,
            baseline_name: "ironwal",
            baseline: ic,
            target: 0.0,
            lower_is_better: true,
        });
        rows.push(Row {
            name: format!("open {gib} GiB stream, after crash"),
            unit: "ms",
            walfs: wx,
            baseline_name: "ironwal",
            baseline: ix,
            target: 0.0,
            lower_is_better: true,
        });
        open_ms = Some(wc);
    }

    println!("machine: fdatasync {fsyncs:.0}/s, sequential write {bw:.0} MB/s\n");
    println!("| measurement | unit | walfs | baseline | baseline value | walfs/baseline | target | met |");
    println!("|---|---|---:|---|---:|---:|---:|---|");
    for r in rows {
        let ratio = r.walfs / r.baseline;
        let (target, met) = if r.target == 0.0 {
            ("-".to_string(), "-")
        } else if r.lower_is_better {
            (
                format!("<= {:.2}x", r.target),
                if ratio <= r.target { "yes" } else { "NO" },
            )
        } else {
            (
                format!(">= {:.2}x", r.target),
                if ratio >= r.target { "yes" } else { "NO" },
            )
        };
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.2}x | {} | {} |",
            r.name, r.unit, r.walfs, r.baseline_name, r.baseline, ratio, target, met
        );
    }
    if let Some(wc) = open_ms {
        println!("\nopen after a clean close must take under 50 ms (spec, for 10 GiB): walfs took {wc:.1} ms for {gib} GiB");
    }
}
