//! Argument parsing and the commands that need no mount. Messages follow
//! coreutils: `walfs: <command>: <what went wrong>`; exit 0 on success, 1 on
//! failure (or an unsound log for verify), 2 for bad usage.

mod append;
mod cat;
mod checkpoint;
mod fstab;
mod get;
pub mod logging;
mod mount;
mod repair;
mod restore;
mod stat;
mod truncate;
mod verify;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io;
use std::path::PathBuf;
use walfs::{CompressionType, Error, SyncMode, Wal, WalOptions};

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
    Mount(Box<mount::MountArgs>),
    /// Append entries: each ARG, or each line of standard input
    /// (with its newline), becomes one entry.
    Append(append::AppendArgs),
    /// Print entries, concatenated, from an id on.
    Cat(cat::CatArgs),
    /// Print one entry.
    Get(get::GetArgs),
    /// Print a stream's state, one `key: value` a line.
    Stat(stat::StatArgs),
    /// Check every frame of every segment; exit 0 only for a sound log.
    Verify(verify::VerifyArgs),
    /// Cut torn tails, rebuild metadata, then verify; intact entries are
    /// never dropped unless --discard-damaged asks for it.
    Repair(repair::RepairArgs),
    /// Free the sealed segments that hold only ids below ID.
    Truncate(truncate::TruncateArgs),
    /// Rebuild a data directory from a bucket the log was shipped to
    /// (`mount --replicate`); DATA must be absent or empty.
    Restore(restore::RestoreArgs),
    /// Make, list, show or compact the checkpoints of a sharded log.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Free every shard's segments below a checkpoint of a sharded log.
    Prune(checkpoint::PruneArgs),
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
    /// The data directory, or s3://BUCKET/PREFIX for a log shipped there
    data: PathBuf,
    /// The stream to work on (names may start with '-').
    #[arg(
        long,
        short = 's',
        default_value = "default",
        allow_hyphen_values = true
    )]
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
    /// Size at which a segment is sealed and a new one started: bytes, or
    /// with a suffix (64M, 1G, 512KiB, 1MB).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = size)]
    segment_size: u64,
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if fstab::is_fstab_form(&args) {
        return match fstab::run(&args) {
            Ok(code) => code,
            Err(f) => {
                eprintln!("walfs: mount: {}", f.message);
                f.code
            }
        };
    }
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Mount(a) => ("mount", mount::run(*a)),
        Command::Append(a) => ("append", append::run(a)),
        Command::Cat(a) => ("cat", cat::run(a)),
        Command::Get(a) => ("get", get::run(a)),
        Command::Stat(a) => ("stat", stat::run(a)),
        Command::Verify(a) => ("verify", verify::run(a)),
        Command::Repair(a) => ("repair", repair::run(a)),
        Command::Truncate(a) => ("truncate", truncate::run(a)),
        Command::Restore(a) => ("restore", restore::run(a)),
        Command::Checkpoint(a) => ("checkpoint", checkpoint::run(a)),
        Command::Prune(a) => ("prune", checkpoint::run_prune(a)),
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

/// The bucket address DATA names, if it is one (`s3://BUCKET/PREFIX`).
fn bucket_url(data: &std::path::Path) -> Option<String> {
    data.to_str()
        .filter(|d| walfs::replica::BucketUrl::is_bucket(d))
        .map(str::to_owned)
}

/// A shipped log, read from its bucket.
fn open_bucket(url: &str) -> Result<walfs::replica::follow::BucketLog, Failure> {
    walfs::replica::BucketUrl::parse(url).map_err(fail)?;
    let mut o = walfs::replica::follow::FollowOptions::new(walfs::ReplicaOptions::new(url));
    // One command's blocks: a temporary cache, removed when it ends.
    o.cache_dir = Some(std::env::temp_dir());
    Ok(walfs::replica::follow::BucketLog::open(o)?)
}

fn need_bucket_stream(
    b: &walfs::replica::follow::BucketLog,
    url: &str,
    stream: &str,
) -> Result<(), Failure> {
    use walfs::source::LogSource;
    if !b.has_stream(stream) {
        return Err(fail(format!("no stream '{stream}' in {url}")));
    }
    Ok(())
}

/// Refuses a DATA that is not a directory, saying which way.
fn need_data_dir(data: &std::path::Path) -> Result<(), Failure> {
    match std::fs::metadata(data) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(fail(format!(
            "{}: not a directory (DATA is a walfs data directory)",
            data.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(fail(format!("{}: no such data directory", data.display())))
        }
        Err(e) => Err(fail(format!("{}: {e}", data.display()))),
    }
}

/// Refuses a directory that holds no walfs log (nothing walfs or ironwal
/// made: no lock, no stream directory with a segment or its metadata), so
/// that `verify` never calls such a directory sound and `repair` and
/// `truncate` leave nothing in it.
fn need_log(data: &std::path::Path) -> Result<(), Failure> {
    need_data_dir(data)?;
    let is_stream = |e: &std::fs::DirEntry| {
        e.file_type().is_ok_and(|t| t.is_dir())
            && e.file_name()
                .to_str()
                .is_some_and(walfs::format::validate_stream_name)
            && std::fs::read_dir(e.path()).is_ok_and(|d| {
                d.flatten().any(|f| {
                    f.file_name().to_str().is_some_and(|n| {
                        n == walfs::format::SEGMENTS_IDX
                            || n == walfs::format::HEAD_STATE
                            || walfs::format::parse_segment_name(n).is_some()
                    })
                })
            })
    };
    let log = data.join("walfs.lock").is_file()
        || std::fs::read_dir(data).is_ok_and(|d| d.flatten().any(|e| is_stream(&e)));
    if log {
        Ok(())
    } else {
        Err(fail(format!(
            "{}: not a walfs data directory (no stream directory holds a segment, segments.idx or head.state)",
            data.display()
        )))
    }
}

/// "1 stream", "2 streams" (`many`: the plural).
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn open_read(data: &std::path::Path) -> Result<Wal, Failure> {
    need_data_dir(data)?;
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

fn broken_pipe(e: io::Error) -> Result<i32, Failure> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(0)
    } else {
        Err(e.into())
    }
}

/// A size in bytes: digits, optionally with a suffix as coreutils takes
/// them: K, M, G, T (and KiB, MiB, ...) for powers of 1024, KB, MB, GB, TB
/// for powers of 1000. Zero is refused.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (n, suffix) = t.split_at(digits);
    let n: u64 = n.parse().map_err(|_| {
        format!("{s:?} is not a size: write bytes, or a number with K, M, G or T (64M, 1G)")
    })?;
    let unit: u64 = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown size suffix {suffix:?} (K, M, G, T for 1024s; KB, MB, GB, TB for 1000s)"
            ))
        }
    };
    match n.checked_mul(unit) {
        Some(0) => Err("the size must be more than 0".into()),
        Some(b) => Ok(b),
        None => Err(format!("{s:?} is too large")),
    }
}

/// An entry id as the mount names it: canonical decimal (`42`, never `042`
/// or `+42`), so the same id is written the same way everywhere.
fn entry_id(s: &str) -> Result<u64, String> {
    walfs::mount::names::parse_id(s.as_bytes()).ok_or_else(|| {
        format!("{s:?} is not an entry id: write it in decimal without leading zeros or signs, as entries/ names it")
    })
}

/// Progress of a long check over bytes: a bar on a terminal (indicatif),
/// plain lines when asked for with `--progress` elsewhere, nothing else.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    last: std::time::Instant,
}

impl Progress {
    /// For work described by `what` ("verifying").
    pub fn new(what: &'static str, force_lines: bool) -> Progress {
        use std::io::IsTerminal;
        let bar = io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.set_message(what);
            b
        });
        Progress {
            lines: bar.is_none() && force_lines,
            bar,
            last: std::time::Instant::now(),
        }
    }

    /// `done` of `total` bytes checked.
    pub fn update(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        } else if self.lines
            && (self.last.elapsed() > std::time::Duration::from_millis(500) || done == total)
        {
            self.last = std::time::Instant::now();
            eprintln!("checked {} of {} MiB", done >> 20, total >> 20);
        }
    }

    /// The work is over: the bar goes away.
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
