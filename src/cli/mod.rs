//! Argument parsing and the commands that need no mount. Messages follow
//! coreutils: `walfs: <command>: <what went wrong>`; exit 0 on success, 1 on
//! failure (or an unsound log for verify), 2 for bad usage.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use walfs::{CompressionType, CorruptionPolicy, Error, RealStorage, SyncMode, Wal, WalOptions};

#[derive(Parser)]
#[command(name = "walfs", version, about = "A durable, checksummed write-ahead log you can mount", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the log in DATA as files under MOUNTPOINT (foreground; Ctrl-C,
    /// SIGTERM or `umount MOUNTPOINT` unmounts cleanly).
    Mount(MountArgs),
    /// Append entries: each ARG, or each line of standard input
    /// (with its newline), becomes one entry.
    Append(AppendArgs),
    /// Print entries, concatenated, from an id on.
    Cat(CatArgs),
    /// Print one entry.
    Get(GetArgs),
    /// Print a stream's state, one `key: value` a line.
    Stat(StatArgs),
    /// Check every frame of every segment; exit 0 only for a sound log.
    Verify(VerifyArgs),
    /// Cut torn or corrupt tails, rebuild metadata, then verify.
    Repair(RepairArgs),
    /// Free the sealed segments that hold only ids below ID.
    Truncate(TruncateArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SyncArg {
    /// Durable before the write returns (group-committed).
    Strict,
    /// Batches durable before they return; single entries handed to the kernel.
    Batch,
    /// Nothing synced until asked (fsync, close of the log).
    Async,
}

impl From<SyncArg> for SyncMode {
    fn from(s: SyncArg) -> Self {
        match s {
            SyncArg::Strict => SyncMode::Strict,
            SyncArg::Batch => SyncMode::BatchOnly,
            SyncArg::Async => SyncMode::Async,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Lz4,
}

#[derive(Args)]
struct Common {
    /// The data directory (one subdirectory per stream).
    data: PathBuf,
    /// The stream to work on.
    #[arg(long, short = 's', default_value = "default")]
    stream: String,
}

#[derive(Args)]
struct WriteOpts {
    /// When appends are made durable.
    #[arg(long, value_enum, default_value = "strict")]
    sync: SyncArg,
    /// Payload compression of new frames.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    /// Size at which a segment is sealed and a new one started (bytes).
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
}

#[derive(Args)]
struct MountArgs {
    /// The data directory (created if missing).
    data: PathBuf,
    /// An empty directory to mount on.
    mountpoint: PathBuf,
    /// The stream shown at the root of the mount.
    #[arg(long, short = 's', default_value = "default")]
    stream: String,
    #[command(flatten)]
    write: WriteOpts,
    /// Serve reads only.
    #[arg(long)]
    read_only: bool,
    /// FUSE worker threads (concurrent writers are group-committed).
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Let other users use the mount (kernel permission checks apply).
    #[arg(long)]
    allow_other: bool,
    /// Bytes of decoded frames cached for reads.
    #[arg(long, default_value_t = 64 << 20)]
    block_cache: u64,
}

#[derive(Args)]
struct AppendArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    write: WriteOpts,
    /// Do not add a newline to each ARG.
    #[arg(short = 'n')]
    no_newline: bool,
    /// Print the id range given to the entries (`FIRST-LAST`).
    #[arg(long)]
    ids: bool,
    /// Entries; read lines from standard input when none are given.
    entries: Vec<String>,
}

#[derive(Args)]
struct CatArgs {
    #[command(flatten)]
    common: Common,
    /// First id to print (ids below the first retained one start there).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Keep printing entries as they are appended (by any process).
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Args)]
struct GetArgs {
    #[command(flatten)]
    common: Common,
    /// The entry's id.
    id: u64,
}

#[derive(Args)]
struct StatArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct VerifyArgs {
    /// The data directory.
    data: PathBuf,
    /// Show progress on standard error (default: when it is a terminal).
    #[arg(long)]
    progress: bool,
}

#[derive(Args)]
struct RepairArgs {
    /// The data directory.
    data: PathBuf,
    /// Also cut each active segment at its first damaged frame, dropping the
    /// intact entries after it (their ids are then given to new entries).
    /// The whole segment is first copied aside to `<segment>.damaged`.
    /// Without this flag, repair never drops an intact entry.
    #[arg(long)]
    discard_damaged: bool,
}

#[derive(Args)]
struct TruncateArgs {
    #[command(flatten)]
    common: Common,
    /// Free segments holding only ids below the segment of this id.
    #[arg(long)]
    before: u64,
}

/// A failure with its message; `code` is the exit status.
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = match &e {
            Error::Locked { path, holder } => format!(
                "{} is in use by another walfs process{}: stop it (or unmount it) first",
                path.display(),
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            _ => e.to_string(),
        };
        Failure { message, code: 1 }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Mount(a) => ("mount", mount(a)),
        Command::Append(a) => ("append", append(a)),
        Command::Cat(a) => ("cat", cat(a)),
        Command::Get(a) => ("get", get(a)),
        Command::Stat(a) => ("stat", stat(a)),
        Command::Verify(a) => ("verify", verify(a)),
        Command::Repair(a) => ("repair", repair(a)),
        Command::Truncate(a) => ("truncate", truncate(a)),
    };
    match result {
        Ok(code) => code,
        Err(f) if f.message.is_empty() => f.code,
        Err(f) => {
            eprintln!("walfs: {name}: {}", f.message);
            f.code
        }
    }
}

fn mount(a: MountArgs) -> Result<i32, Failure> {
    let cfg = walfs::mount::MountConfig {
        data: a.data,
        mountpoint: a.mountpoint,
        stream: a.stream,
        sync: a.write.sync.into(),
        compression: match a.write.compression {
            CompressionArg::None => CompressionType::None,
            CompressionArg::Lz4 => CompressionType::Lz4,
        },
        segment_size: a.write.segment_size,
        read_only: a.read_only,
        threads: a.threads,
        allow_other: a.allow_other,
        block_cache: a.block_cache,
    };
    walfs::mount::mount(cfg).map_err(|e| fail(e.0))?;
    Ok(0)
}

fn write_options(data: &std::path::Path, w: &WriteOpts) -> WalOptions {
    let mut o = WalOptions::new(data);
    o.sync_mode = w.sync.into();
    o.compression = match w.compression {
        CompressionArg::None => CompressionType::None,
        CompressionArg::Lz4 => CompressionType::Lz4,
    };
    o.max_segment_size = w.segment_size;
    o
}

fn open_read(data: &std::path::Path) -> Result<Wal, Failure> {
    if !data.is_dir() {
        return Err(fail(format!("{}: no such data directory", data.display())));
    }
    let mut o = WalOptions::new(data);
    o.read_only = true;
    Ok(Wal::new(o)?)
}

fn need_stream(wal: &Wal, stream: &str) -> Result<(), Failure> {
    if wal.stream_info(stream).is_none() {
        return Err(fail(format!(
            "no stream '{stream}' in {}",
            wal.root().display()
        )));
    }
    Ok(())
}

fn append(a: AppendArgs) -> Result<i32, Failure> {
    // Checked before the data directory is made: a refused append leaves
    // no trace.
    if !walfs::format::validate_stream_name(&a.common.stream) {
        return Err(Error::InvalidStreamName(a.common.stream.clone()).into());
    }
    let wal = Wal::new(write_options(&a.common.data, &a.write))?;
    let s = &a.common.stream;
    let report = |r: std::ops::Range<u64>| {
        if a.ids && !r.is_empty() {
            println!("{}-{}", r.start, r.end - 1);
        }
    };
    if !a.entries.is_empty() {
        let owned: Vec<Vec<u8>> = a
            .entries
            .iter()
            .map(|e| {
                let mut v = e.clone().into_bytes();
                if !a.no_newline {
                    v.push(b'\n');
                }
                v
            })
            .collect();
        let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        report(wal.append_batch(s, &refs)?);
    } else {
        // Lines are committed in batches of what one read brings.
        let mut input = io::BufReader::with_capacity(1 << 20, io::stdin().lock());
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        loop {
            let mut line = Vec::new();
            let n = input.read_until(b'\n', &mut line)?;
            if n > 0 {
                bytes += n;
                pending.push(line);
            }
            if (n == 0 || bytes >= 1 << 20 || input.buffer().is_empty()) && !pending.is_empty() {
                let refs: Vec<&[u8]> = pending.iter().map(Vec::as_slice).collect();
                report(wal.append_batch(s, &refs)?);
                pending.clear();
                bytes = 0;
            }
            if n == 0 {
                break;
            }
        }
    }
    wal.close()?;
    Ok(0)
}

fn cat(a: CatArgs) -> Result<i32, Failure> {
    let data = &a.common.data;
    let s = &a.common.stream;
    let mut out = io::stdout().lock();
    let mut next = a.from;
    let mut seen = None;
    loop {
        // Another process may be writing: reopen (read-only, a scan of the
        // active segment) only when the stream's files changed.
        let now = fingerprint(&data.join(s));
        if seen.as_ref() != Some(&now) {
            seen = Some(now);
            let wal = open_read(data)?;
            if !a.follow {
                need_stream(&wal, s)?;
            }
            let mut it = wal.iter_with_ids(s, next)?;
            while let Some(r) = it.next_ref() {
                let (id, e) = r?;
                if let Err(e) = out.write_all(e) {
                    return broken_pipe(e);
                }
                next = id + 1;
            }
            if let Err(e) = out.flush() {
                return broken_pipe(e);
            }
        }
        if !a.follow {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Names and sizes of a stream directory's files: what changes when
/// anything is appended, rotated or truncated.
fn fingerprint(dir: &std::path::Path) -> Vec<(std::ffi::OsString, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| (e.file_name(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn broken_pipe(e: io::Error) -> Result<i32, Failure> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(0)
    } else {
        Err(e.into())
    }
}

fn get(a: GetArgs) -> Result<i32, Failure> {
    let wal = open_read(&a.common.data)?;
    need_stream(&wal, &a.common.stream)?;
    match wal.get(&a.common.stream, a.id)? {
        Some(e) => {
            io::stdout()
                .lock()
                .write_all(&e)
                .or_else(|e| broken_pipe(e).map(|_| ()))?;
            Ok(0)
        }
        None => Err(fail(format!(
            "no entry {} in stream '{}'",
            a.id, a.common.stream
        ))),
    }
}

fn stat(a: StatArgs) -> Result<i32, Failure> {
    let wal = open_read(&a.common.data)?;
    need_stream(&wal, &a.common.stream)?;
    let info = wal.stream_info(&a.common.stream).expect("checked");
    print!("{}", info.to_text(None));
    Ok(0)
}

fn verify(a: VerifyArgs) -> Result<i32, Failure> {
    if !a.data.is_dir() {
        return Err(fail(format!(
            "{}: no such data directory",
            a.data.display()
        )));
    }
    let show = a.progress || io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut progress = |done: u64, total: u64| {
        if show && (last.elapsed() > Duration::from_millis(500) || done == total) {
            last = Instant::now();
            eprint!("\rverifying: {} of {} MiB", done >> 20, total >> 20);
        }
    };
    let report = walfs::verify(&RealStorage, &a.data, &mut progress)?;
    if show {
        eprintln!();
    }
    for f in &report.faults {
        println!("{f}");
    }
    eprintln!(
        "{} streams, {} segments, {} frames, {} entries, {} bytes checked in {:.1}s: {}",
        report.streams,
        report.segments,
        report.frames,
        report.entries,
        report.bytes,
        started.elapsed().as_secs_f64(),
        if report.is_sound() {
            "sound".to_string()
        } else {
            format!("{} fault(s)", report.faults.len())
        }
    );
    Ok(if report.is_sound() { 0 } else { 1 })
}

fn repair(a: RepairArgs) -> Result<i32, Failure> {
    if !a.data.is_dir() {
        return Err(fail(format!(
            "{}: no such data directory",
            a.data.display()
        )));
    }
    let mut o = WalOptions::new(&a.data);
    o.on_corruption = CorruptionPolicy::Truncate;
    // A writable open cuts torn tails and rebuilds metadata; it keeps
    // corruption that intact frames follow.
    Wal::new(o.clone())?.close()?;
    let mut report = walfs::verify(&RealStorage, &a.data, &mut |_, _| {})?;
    if a.discard_damaged && !report.is_sound() {
        let mut ro = o.clone();
        ro.read_only = true;
        let wal = Wal::new(ro)?;
        let mut cuts: Vec<(PathBuf, u64)> = Vec::new();
        for f in &report.faults {
            let Some(active) = wal.segments(&f.location.stream).pop() else {
                continue;
            };
            let is_active = active.path.file_name().and_then(|n| n.to_str())
                == Some(f.location.segment.as_str());
            if is_active && !cuts.iter().any(|(p, _)| *p == active.path) {
                cuts.push((active.path, f.location.offset));
            }
        }
        drop(wal);
        for (path, at) in &cuts {
            let aside = path.with_extension("wal.damaged");
            std::fs::copy(path, &aside)?;
            std::fs::File::open(&aside)?.sync_all()?;
            let f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.set_len(*at)?;
            f.sync_all()?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            eprintln!(
                "cut {} at byte {at}; the whole segment was kept as {}",
                path.display(),
                aside.display()
            );
        }
        Wal::new(o)?.close()?;
        report = walfs::verify(&RealStorage, &a.data, &mut |_, _| {})?;
    }
    for f in &report.faults {
        println!("{f}");
    }
    if report.is_sound() {
        eprintln!("repaired: the log is sound");
        Ok(0)
    } else {
        eprintln!(
            "{} fault(s) remain: the damaged entries read as errors and every other entry is intact; {}",
            report.faults.len(),
            if a.discard_damaged {
                "damage in sealed segments cannot be cut without renumbering the entries after it"
            } else {
                "`walfs repair --discard-damaged` cuts active segments at their damage, dropping the intact entries after it"
            }
        );
        Ok(1)
    }
}

fn truncate(a: TruncateArgs) -> Result<i32, Failure> {
    if !a.common.data.is_dir() {
        return Err(fail(format!(
            "{}: no such data directory",
            a.common.data.display()
        )));
    }
    let wal = Wal::new(WalOptions::new(&a.common.data))?;
    need_stream(&wal, &a.common.stream)?;
    let n = wal.truncate(&a.common.stream, a.before)?;
    let info = wal.stream_info(&a.common.stream).expect("checked");
    println!("freed {n} segment(s); first id is now {}", info.first_id);
    wal.close()?;
    Ok(0)
}
