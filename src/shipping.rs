//! What the engine knows of shipping, and nothing more: the options a
//! replicated log is opened with, the facts `stat` shows, and the narrow
//! interface through which whatever ships the log (`replica`, a layer
//! above the engine) refuses or confirms appends. The engine imports
//! nothing of the replica layer; it holds a `dyn Shipping`.

use std::time::Duration;

/// When an append is acknowledged, relative to the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaMode {
    /// On local durability; the bucket follows within `interval`.
    Async,
    /// Once the bucket's manifest covers the entry.
    Strict,
}

/// Where and how a writer ships its log.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// When appends are acknowledged.
    pub mode: ReplicaMode,
    /// Async mode: the longest the bucket lags behind local durability
    /// under steady load (plus one upload round).
    pub interval: Duration,
    /// Strict mode: how long an append waits for the bucket before it
    /// fails; also bounds each request.
    pub timeout: Duration,
    /// S3 settings applied over the environment's, as (key, value) with
    /// object_store's names (`aws_endpoint`, `aws_access_key_id`,
    /// `aws_allow_http`, ...): for programs that configure the bucket
    /// themselves.
    pub settings: Vec<(String, String)>,
    /// Bucket retention: the oldest segments leave the bucket while a
    /// stream holds more than this there (applied by
    /// [`crate::replica::check::apply_bucket_retention`]; the mount does it every 30 s).
    pub retain_bytes: Option<u64>,
    /// Bucket retention: segments whose objects were last written longer
    /// ago than this leave the bucket.
    pub retain_age: Option<Duration>,
    /// How often the mount applies the bucket's retention.
    pub retain_interval: Duration,
    /// The lease this writer holds the prefix by (None: `--lease off`, no
    /// lease). It rewrites the manifest at least every third of it, also
    /// when idle, and acknowledges appends only within three quarters of
    /// it after the start of its last successful manifest write; a
    /// standby takes over after a whole lease without a change.
    pub lease: Option<Duration>,
    /// Take the prefix even from a holder whose lease is live (it is
    /// fenced); without it such a start is refused.
    pub takeover: bool,
}

/// The default lease: a standby takes over within about this long after
/// the primary stops renewing.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The shortest lease accepted.
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// How long after the start of its last successful manifest write a
/// holder acknowledges appends: three quarters of the lease. A standby
/// waits a whole lease from when it first saw that manifest, which is
/// later, so the quarter is the margin for clocks that run at different
/// rates (it covers rates that differ by up to 14%; real ones differ by
/// parts per million).
pub fn lease_valid_for(lease: Duration) -> Duration {
    lease * 3 / 4
}

impl ReplicaOptions {
    /// Async shipping to `url`, 1 s interval, 10 s timeout.
    pub fn new(url: impl Into<String>) -> ReplicaOptions {
        ReplicaOptions {
            url: url.into(),
            mode: ReplicaMode::Async,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            settings: Vec::new(),
            retain_bytes: None,
            retain_age: None,
            retain_interval: Duration::from_secs(30),
            lease: Some(DEFAULT_LEASE),
            takeover: false,
        }
    }
}

/// Replication facts of one stream, for `stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// One past the last id the bucket's manifest covers.
    pub replicated_id: u64,
    /// `ok`, `behind`, `connecting`, `unreachable` or `fenced`.
    pub state: String,
    /// How long the oldest entry not yet in the bucket has waited, in ms
    /// (0 when the bucket has everything).
    pub lag_ms: u64,
    /// The bucket address.
    pub url: String,
    /// `primary`, `standby` or `fenced`.
    pub role: String,
    /// Since the start of the last manifest write that renewed this
    /// writer's lease (a standby: since the manifest last changed), in ms;
    /// None without a lease or before the first.
    pub lease_age_ms: Option<u64>,
}

/// What the engine asks of the layer that ships it.
pub trait Shipping: Send + Sync {
    /// Ok when an append may be taken now (Err: fenced, or the lease is
    /// not held).
    fn check(&self) -> crate::Result<()>;
    /// Called after entries below `end` were appended to `stream`: returns
    /// once they may be acknowledged (strict: in the bucket; async: the
    /// lease still held).
    fn appended(&self, stream: &str, end: u64) -> crate::Result<()>;
    /// `stat`'s facts of `stream`, of which ids below `durable` are durable
    /// here.
    fn info(&self, stream: &str, durable: u64) -> ReplicaInfo;
    /// Upload rounds that wrote a manifest, PUT requests, entries shipped.
    fn counters(&self) -> (u64, u64, u64);
    /// Ships what is durable, lets the prefix go, and stops (at close).
    fn stop(&self);
}
