//! `walfs mount`: parses the mount options and runs the daemon.

use super::{fail, CompressionArg, Failure, WriteOpts};
use clap::Args;
use std::path::PathBuf;
use walfs::CompressionType;

#[derive(Args)]
pub struct MountArgs {
    /// The data directory (created if missing), or s3://BUCKET/PREFIX to
    /// follow a shipped log read-only from its bucket.
    data: PathBuf,
    /// An empty directory to mount on.
    mountpoint: PathBuf,
    /// The stream shown at the root of the mount (created if missing).
    /// Without it: `default` if it exists, else the only stream, else none
    /// (every stream is under streams/); an empty data directory gets
    /// `default`.
    #[arg(long, short = 's', allow_hyphen_values = true)]
    stream: Option<String>,
    #[command(flatten)]
    write: WriteOpts,
    /// Serve reads only.
    #[arg(long)]
    read_only: bool,
    /// FUSE worker threads (concurrent writers are group-committed).
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Let other users use the mount; what each may do follows the modes
    /// shown (--file-mode, --dir-mode). A non-root user needs
    /// `user_allow_other` in /etc/fuse.conf.
    #[arg(long)]
    allow_other: bool,
    /// Owner of every file and directory (default: the mounting user).
    #[arg(long, value_name = "UID")]
    uid: Option<u32>,
    /// Group of every file and directory (default: the mounting user's).
    #[arg(long, value_name = "GID")]
    gid: Option<u32>,
    /// Permission bits of files, octal: the read bits for every readable
    /// file, the write bits for `append` and `record`.
    #[arg(long, value_name = "MODE", default_value = "0644", value_parser = octal)]
    file_mode: u16,
    /// Permission bits of directories, octal: the write bits of `streams/`
    /// (mkdir, rmdir) and `segments/` (rm); other directories never take
    /// writes.
    #[arg(long, value_name = "MODE", default_value = "0755", value_parser = octal)]
    dir_mode: u16,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, or a
    /// port alone for 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Decoded frames cached for reads: bytes, or with a suffix (64M).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = super::size)]
    block_cache: u64,
    /// Serve sealed segments (`segments/*.wal`) through the daemon even
    /// where the kernel could read them itself (FUSE passthrough, used by
    /// default when the kernel offers it and the daemon may register
    /// backing files, which takes CAP_SYS_ADMIN).
    #[arg(long)]
    no_passthrough: bool,
    /// A sharded log (ironwal's ShardedWal layout): its shard count, to
    /// make a new one or where DATA does not record it. A sharded DATA is
    /// recognized without it; it then shows its shards under streams/ and
    /// its checkpoints under checkpoints/.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    shards: Option<u16>,
    /// Retention: free each stream's oldest sealed segments while it holds
    /// more than SIZE (bytes, or with a suffix: 10G). Never the active
    /// segment, nothing not yet in the bucket (--replicate), nothing a
    /// sharded log's checkpoint names. Checked every second.
    #[arg(long, value_name = "SIZE", value_parser = super::size)]
    retain_bytes: Option<u64>,
    /// Retention: free sealed segments last written longer ago than
    /// DURATION (30d, 12h, 90min, 1w 2d), with the same limits as
    /// --retain-bytes.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    retain_age: Option<std::time::Duration>,
    #[command(flatten)]
    replica: ReplicaArgs,
    #[command(flatten)]
    follow: FollowArgs,
    /// Append the daemon's log to FILE (created 0640) instead of standard
    /// error.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Send the daemon's log to syslog (the daemon facility, as `walfs`;
    /// journald keeps it where it runs): what `mount -t fuse.walfs` and
    /// /etc/fstab use unless `log_file=` names a file.
    #[arg(long)]
    syslog: bool,
}

#[derive(Args)]
pub struct FollowArgs {
    /// Following a bucket: how often its manifest is read (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = seconds)]
    poll: f64,
    /// Following a bucket: where the cache of fetched blocks goes (default
    /// $XDG_CACHE_HOME/walfs, else ~/.cache/walfs): a directory of its own
    /// inside, named after the bucket, prefix and process, removed at exit.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Following a bucket: the most bytes the cache keeps.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = super::size)]
    cache_size: u64,
    /// Following a bucket: how long each request may take, retries
    /// included (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = seconds)]
    request_timeout: f64,
}

impl FollowArgs {
    /// Options to follow `url`.
    pub fn options(&self, url: &str) -> walfs::replica::follow::FollowOptions {
        let mut b = walfs::ReplicaOptions::new(url.to_owned());
        b.timeout = std::time::Duration::from_secs_f64(self.request_timeout);
        let mut o = walfs::replica::follow::FollowOptions::new(b);
        o.poll = std::time::Duration::from_secs_f64(self.poll);
        o.cache_dir = self.cache_dir.clone();
        o.cache_size = self.cache_size;
        o
    }
}

#[derive(Args)]
pub struct ReplicaArgs {
    /// Ship every stream to an S3-compatible bucket (s3://BUCKET/PREFIX).
    /// Credentials, region and endpoint come from the AWS environment
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL; AWS_ALLOW_HTTP=true for plain HTTP) or
    /// ~/.aws/credentials and ~/.aws/config.
    #[arg(long, value_name = "URL")]
    replicate: Option<String>,
    /// async: appends are acknowledged once durable locally, the bucket
    /// follows within --replicate-interval; strict: once the bucket holds
    /// them.
    #[arg(long, value_enum, default_value = "async", requires = "replicate")]
    replicate_sync: ReplicaSyncArg,
    /// Async mode: the most the bucket lags under steady load (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, requires = "replicate", value_parser = seconds)]
    replicate_interval: f64,
    /// How long a strict-mode append waits for the bucket before it fails
    /// with ETIMEDOUT; also bounds each request (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, requires = "replicate", value_parser = seconds)]
    replicate_timeout: f64,
    /// Server-side encryption of every object shipped: aes256 (SSE-S3),
    /// aws:kms or aws:kms:KEY_ID (SSE-KMS, the bucket's default key or
    /// KEY_ID), aws:kms:dsse or aws:kms:dsse:KEY_ID (DSSE-KMS). The same as
    /// AWS_SERVER_SIDE_ENCRYPTION and AWS_SSE_KMS_KEY_ID, which every
    /// command reads.
    #[arg(long, value_name = "KIND", requires = "replicate", value_parser = sse)]
    sse: Option<Sse>,
    /// Bucket retention: remove each stream's oldest segments from the
    /// bucket while it holds more than SIZE there (never the last; a
    /// conditional manifest write, as `walfs truncate s3://`). Checked
    /// every 30 s.
    #[arg(long, value_name = "SIZE", requires = "replicate", value_parser = super::size)]
    bucket_retain_bytes: Option<u64>,
    /// Bucket retention: remove segments whose objects were last written
    /// longer ago than DURATION (30d, 1y).
    #[arg(long, value_name = "DURATION", requires = "replicate", value_parser = duration)]
    bucket_retain_age: Option<std::time::Duration>,
    /// How often the bucket's retention is checked (seconds): a manifest
    /// read each time, and a LIST with --bucket-retain-age.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, requires = "replicate", value_parser = seconds)]
    bucket_retain_interval: f64,
    /// The lease this writer holds the prefix by (2s to 10min, or off). It
    /// rewrites the manifest every third of it, also when idle (one
    /// conditional PUT), and acknowledges appends only within three
    /// quarters of it after its last successful write, so a standby may
    /// take over a whole lease after the last change it saw. `off`: no
    /// lease; appends go on while the bucket is unreachable, and nothing
    /// takes the prefix without --takeover.
    #[arg(long, value_name = "DURATION", default_value = "10s", requires = "replicate", value_parser = lease)]
    lease: Lease,
    /// Take the prefix now even if its holder's lease is live (after a
    /// machine is known dead): the holder is fenced. Without it, a start
    /// on a live prefix is refused.
    #[arg(long, requires = "replicate", conflicts_with = "standby")]
    takeover: bool,
    /// Stand by: keep DATA a continuously applied copy of what the bucket
    /// holds (filled from it first when empty), served read-only (appends
    /// get EROFS), and take the prefix and become writable on the same
    /// mountpoint once the holder's lease lapses.
    #[arg(long, requires = "replicate")]
    standby: bool,
}

/// A --lease value: a duration, or none.
#[derive(Clone, Copy)]
pub struct Lease(Option<std::time::Duration>);

fn lease(s: &str) -> Result<Lease, String> {
    if s == "off" {
        return Ok(Lease(None));
    }
    let d = duration(s)?;
    if d < walfs::replica::MIN_LEASE || d > std::time::Duration::from_secs(600) {
        return Err(format!("{s:?}: a lease is between 2s and 10min (or off)"));
    }
    Ok(Lease(Some(d)))
}

/// The object_store settings of a --sse value.
#[derive(Clone)]
pub struct Sse(Vec<(String, String)>);

/// The object_store settings for a --sse value.
fn sse(s: &str) -> Result<Sse, String> {
    let (kind, key) = match s {
        "aes256" | "AES256" => ("AES256", None),
        "aws:kms" => ("aws:kms", None),
        "aws:kms:dsse" => ("aws:kms:dsse", None),
        _ => match (s.strip_prefix("aws:kms:dsse:"), s.strip_prefix("aws:kms:")) {
            (Some(k), _) if !k.is_empty() => ("aws:kms:dsse", Some(k)),
            (None, Some(k)) if !k.is_empty() => ("aws:kms", Some(k)),
            _ => {
                return Err(format!(
                    "{s:?} is not a kind of server-side encryption: aes256, aws:kms, aws:kms:KEY_ID, aws:kms:dsse or aws:kms:dsse:KEY_ID"
                ))
            }
        },
    };
    let mut out = vec![("aws_server_side_encryption".to_owned(), kind.to_owned())];
    if let Some(k) = key {
        out.push(("aws_sse_kms_key_id".to_owned(), k.to_owned()));
    }
    Ok(Sse(out))
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReplicaSyncArg {
    /// Acknowledged on local durability.
    Async,
    /// Acknowledged once in the bucket.
    Strict,
}

impl ReplicaArgs {
    pub fn options(&self) -> Option<walfs::ReplicaOptions> {
        self.replicate.as_ref().map(|url| {
            let mut o = walfs::ReplicaOptions::new(url.clone());
            o.mode = match self.replicate_sync {
                ReplicaSyncArg::Async => walfs::ReplicaMode::Async,
                ReplicaSyncArg::Strict => walfs::ReplicaMode::Strict,
            };
            o.interval = std::time::Duration::from_secs_f64(self.replicate_interval);
            o.timeout = std::time::Duration::from_secs_f64(self.replicate_timeout);
            o.settings = self.sse.clone().map(|s| s.0).unwrap_or_default();
            o.retain_bytes = self.bucket_retain_bytes;
            o.retain_age = self.bucket_retain_age;
            o.retain_interval = std::time::Duration::from_secs_f64(self.bucket_retain_interval);
            o.lease = self.lease.0;
            o.takeover = self.takeover;
            o
        })
    }
}

/// A positive number of seconds, at most a day.
pub fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400 (for example 1 or 0.25)"
        )),
    }
}

pub fn run(a: MountArgs) -> Result<i32, Failure> {
    let bucket = a
        .data
        .to_str()
        .filter(|d| walfs::replica::BucketUrl::is_bucket(d))
        .map(str::to_owned);
    if let Some(url) = &bucket {
        walfs::replica::BucketUrl::parse(url).map_err(fail)?;
        if a.replica.replicate.is_some() {
            return Err(fail(
                "a bucket is followed read-only: --replicate is for a data directory",
            ));
        }
    }
    if let Some(url) = &a.replica.replicate {
        walfs::replica::BucketUrl::parse(url).map_err(fail)?;
        if a.read_only {
            return Err(fail(
                "--read-only and --replicate do not go together: only a writer ships the log",
            ));
        }
    }
    if a.replica.standby && a.replica.lease.0.is_none() {
        return Err(fail(
            "--standby takes over when a lease lapses: drop --lease off",
        ));
    }
    if (a.retain_bytes.is_some() || a.retain_age.is_some()) && (a.read_only || bucket.is_some()) {
        return Err(fail(
            "--retain-bytes and --retain-age apply to a writable local log: a read-only mount or a follower frees nothing",
        ));
    }
    let mut standby_aside = None;
    if a.replica.standby {
        let opts = a.replica.options().expect("--standby requires --replicate");
        if a.read_only {
            return Err(fail(
                "--standby serves read-only until it takes over: drop --read-only",
            ));
        }
        // Filled from the bucket first (with a bar on a terminal); an old
        // primary's unshipped entries are moved aside.
        let mut progress = super::Progress::new("standby: filling from the bucket", false);
        standby_aside =
            walfs::replica::standby::prepare(&opts, &a.data, &mut |d, t| progress.update(d, t))
                .map_err(|e| fail(format!("standing by for {}: {e}", opts.url)))?;
        progress.finish();
    }
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
        passthrough: !a.no_passthrough,
        uid: a.uid,
        gid: a.gid,
        file_mode: a.file_mode,
        dir_mode: a.dir_mode,
        metrics: a.metrics,
        replicate: a.replica.options(),
        standby: a.replica.standby,
        standby_aside,
        follow: bucket.as_deref().map(|u| a.follow.options(u)),
        shards: a.shards,
        retain_bytes: a.retain_bytes,
        retain_age: a.retain_age,
    };
    if let Err(e) = walfs::mount::mount(cfg) {
        // Whoever waits for READY=1 (systemd, `mount -t fuse.walfs`) hears
        // why it will not come.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&e.0)]);
        return Err(fail(e.0));
    }
    Ok(0)
}

/// Permission bits in octal, as chmod takes them (`644`, `0644`, `0o644`).
fn octal(s: &str) -> Result<u16, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u16::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{s:?} is not a permission mode: give octal bits such as 0644 (setuid, setgid and sticky bits are not taken)"
        )),
    }
}

/// A duration as people write it (30d, 12h, 90min, 1w 2d).
fn duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the duration must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{s:?} is not a duration ({e}): write a number with a unit, as in 30d, 12h, 90min or 1w 2d"
        )),
    }
}
