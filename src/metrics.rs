//! Process-wide counters, in Prometheus's model (prometheus-client): what
//! the engine did (appends, frames, fdatasyncs and how many entries each
//! carried) and, when mounted, what the kernel asked (FUSE requests by
//! kind, their latency, errors by errno). `walfs mount --metrics ADDR`
//! serves them; the benchmark reads the same numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// A FUSE request kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// The operation (`lookup`, `write`, ...).
    pub op: &'static str,
}

/// An errno returned to the kernel.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrnoLabel {
    /// The errno's number.
    pub errno: i64,
}

/// Every counter walfs keeps.
pub struct Metrics {
    registry: Registry,
    /// Entries appended.
    pub entries: Counter,
    /// Entry bytes appended.
    pub bytes: Counter,
    /// Frames (atomic batches) appended.
    pub frames: Counter,
    /// fdatasyncs of a group commit.
    pub fdatasyncs: Counter,
    /// How long each took.
    pub fdatasync_seconds: Histogram,
    /// How many entries each made durable.
    pub group_commit_entries: Histogram,
    /// FUSE requests by kind.
    pub fuse_requests: Family<OpLabel, Counter>,
    /// FUSE requests of every kind.
    pub fuse_requests_all: Counter,
    /// Their latency, by kind.
    pub fuse_seconds: Family<OpLabel, Histogram>,
    /// Errors returned to the kernel, by errno.
    pub fuse_errors: Family<ErrnoLabel, Counter>,
    /// Files open through the mount.
    pub open_handles: Gauge,
    /// Frames decoded for a read (`log`, `entries/`) whose crc was
    /// computed: a sealed segment's frames once while open. Iteration and
    /// recovery check theirs without counting here.
    pub frames_checked: Counter,
    /// Writebacks of a growing segment's bytes started before its sync.
    pub writebacks_started: Counter,
    /// Notifications to the kernel that a growing file it holds changed.
    pub invalidations: Counter,
    /// Segments sealed at a rotation, each with an fdatasync (not a group
    /// commit's) that the append that rotated waits for.
    pub seal_syncs: Counter,
    /// The time those fdatasyncs took, in all.
    pub seal_sync_seconds: Counter<f64, AtomicU64>,
    /// Opens of sealed segments the kernel serves itself (FUSE passthrough).
    pub passthrough_opens: Counter,
    /// Backing files registered with the kernel for passthrough now.
    pub passthrough_backing_files: Gauge,
    /// Entries the bucket's manifest came to cover.
    pub replicated_entries: Counter,
    /// PUT requests to the bucket (objects and manifests).
    pub replica_puts: Counter,
    /// Upload rounds that wrote a manifest.
    pub replica_rounds: Counter,
    /// Segments freed by the retention policy.
    pub retention_segments: Counter,
    /// Bytes freed by the retention policy.
    pub retention_bytes: Counter,
    /// Segments removed from the bucket by its retention policy.
    pub retention_bucket_segments: Counter,
    /// Truncations (by policy or asked) that freed files.
    pub truncations: Counter,
    /// The time those truncations held their stream's writer lock (appends
    /// wait for it), in all.
    pub truncation_lock_seconds: Counter<f64, AtomicU64>,
    /// This process's role on its prefix: 0 none, 1 primary, 2 standby,
    /// 3 fenced.
    pub role: Gauge,
    /// Prefixes this process took as a standby when a lease lapsed.
    pub failovers: Counter,
    /// 1 while this primary does not hold its lease (appends refused).
    pub lease_lapsed: Gauge,
    /// A standby's apply lag: from its holder's manifest write to the apply
    /// here, in ms (to within the two clocks' offset).
    pub standby_apply_lag_ms: Gauge,
}

fn latency() -> Histogram {
    // 10 us .. ~10 s.
    Histogram::new(exponential_buckets(1e-5, 4.0, 11))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("walfs");
        let m = Metrics {
            registry: Registry::default(),
            entries: Counter::default(),
            bytes: Counter::default(),
            frames: Counter::default(),
            fdatasyncs: Counter::default(),
            fdatasync_seconds: latency(),
            group_commit_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            fuse_requests: Family::default(),
            fuse_requests_all: Counter::default(),
            fuse_seconds: Family::new_with_constructor(latency),
            fuse_errors: Family::default(),
            open_handles: Gauge::default(),
            frames_checked: Counter::default(),
            writebacks_started: Counter::default(),
            invalidations: Counter::default(),
            seal_syncs: Counter::default(),
            seal_sync_seconds: Counter::default(),
            passthrough_opens: Counter::default(),
            passthrough_backing_files: Gauge::default(),
            replicated_entries: Counter::default(),
            replica_puts: Counter::default(),
            replica_rounds: Counter::default(),
            retention_segments: Counter::default(),
            retention_bytes: Counter::default(),
            retention_bucket_segments: Counter::default(),
            truncations: Counter::default(),
            truncation_lock_seconds: Counter::default(),
            role: Gauge::default(),
            failovers: Counter::default(),
            lease_lapsed: Gauge::default(),
            standby_apply_lag_ms: Gauge::default(),
        };
        registry.register("appended_entries", "Entries appended", m.entries.clone());
        registry.register("appended_bytes", "Entry bytes appended", m.bytes.clone());
        registry.register(
            "appended_frames",
            "Frames (atomic batches) appended",
            m.frames.clone(),
        );
        registry.register(
            "fdatasyncs",
            "fdatasyncs of group commits",
            m.fdatasyncs.clone(),
        );
        registry.register(
            "fdatasync_seconds",
            "Time each group-commit fdatasync took",
            m.fdatasync_seconds.clone(),
        );
        registry.register(
            "group_commit_entries",
            "Entries made durable by each fdatasync",
            m.group_commit_entries.clone(),
        );
        registry.register(
            "fuse_requests",
            "FUSE requests by kind",
            m.fuse_requests.clone(),
        );
        registry.register(
            "fuse_request_seconds",
            "FUSE request latency by kind",
            m.fuse_seconds.clone(),
        );
        registry.register(
            "fuse_errors",
            "Errors returned to the kernel by errno",
            m.fuse_errors.clone(),
        );
        registry.register(
            "open_handles",
            "Files open through the mount",
            m.open_handles.clone(),
        );
        registry.register(
            "replicated_entries",
            "Entries the bucket's manifest came to cover",
            m.replicated_entries.clone(),
        );
        registry.register(
            "replica_puts",
            "PUT requests to the bucket",
            m.replica_puts.clone(),
        );
        registry.register(
            "replica_rounds",
            "Upload rounds that wrote a manifest",
            m.replica_rounds.clone(),
        );
        registry.register(
            "retention_freed_segments",
            "Segments freed by the retention policy",
            m.retention_segments.clone(),
        );
        registry.register(
            "retention_freed_bytes",
            "Bytes freed by the retention policy",
            m.retention_bytes.clone(),
        );
        registry.register(
            "retention_bucket_removed_segments",
            "Segments removed from the bucket by its retention policy",
            m.retention_bucket_segments.clone(),
        );
        registry.register(
            "truncations",
            "Truncations that freed files",
            m.truncations.clone(),
        );
        registry.register(
            "truncation_lock_seconds",
            "Time truncations held a stream's writer lock, in all",
            m.truncation_lock_seconds.clone(),
        );
        registry.register(
            "role",
            "Role on the replicated prefix: 0 none, 1 primary, 2 standby, 3 fenced",
            m.role.clone(),
        );
        registry.register(
            "failovers",
            "Prefixes taken over as a standby when a lease lapsed",
            m.failovers.clone(),
        );
        registry.register(
            "lease_lapsed",
            "1 while this primary does not hold its lease and refuses appends",
            m.lease_lapsed.clone(),
        );
        registry.register(
            "standby_apply_lag_ms",
            "A standby's lag from its holder's manifest write to the apply here",
            m.standby_apply_lag_ms.clone(),
        );
        registry.register(
            "frames_checked",
            "Frames decoded for a read whose crc was computed",
            m.frames_checked.clone(),
        );
        registry.register(
            "writebacks_started",
            "Writebacks of a growing segment's bytes started ahead of its sync",
            m.writebacks_started.clone(),
        );
        registry.register(
            "invalidations",
            "Notifications to the kernel that a growing file it holds changed",
            m.invalidations.clone(),
        );
        registry.register(
            "seal_syncs",
            "Segments sealed at a rotation, each with an fdatasync",
            m.seal_syncs.clone(),
        );
        registry.register(
            "seal_sync_seconds",
            "Time the fdatasyncs sealing segments took, in all",
            m.seal_sync_seconds.clone(),
        );
        registry.register(
            "passthrough_opens",
            "Opens of sealed segments the kernel reads itself (FUSE passthrough)",
            m.passthrough_opens.clone(),
        );
        registry.register(
            "passthrough_backing_files",
            "Backing files registered with the kernel for passthrough",
            m.passthrough_backing_files.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus (OpenMetrics) text of every counter.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A group commit's fdatasync took `took` and made `entries` durable.
    pub fn synced(&self, took: Duration, entries: u64) {
        self.fdatasyncs.inc();
        self.fdatasync_seconds.observe(took.as_secs_f64());
        self.group_commit_entries.observe(entries as f64);
    }

    /// A frame of `entries` entries and `bytes` entry bytes was appended.
    pub fn appended(&self, entries: u64, bytes: u64) {
        self.frames.inc();
        self.entries.inc_by(entries);
        self.bytes.inc_by(bytes);
    }

    /// An upload round shipped `entries` with `puts` PUT requests.
    pub fn replicated(&self, entries: u64, puts: u64) {
        self.replica_rounds.inc();
        self.replica_puts.inc_by(puts);
        self.replicated_entries.inc_by(entries);
    }

    /// A standby took its prefix.
    pub fn failover(&self) {
        self.failovers.inc();
        self.role.set(1);
    }

    /// Counts a FUSE request; its latency is recorded when the guard drops.
    pub fn fuse_op(&'static self, op: &'static str) -> OpTimer {
        self.fuse_requests.get_or_create(&OpLabel { op }).inc();
        self.fuse_requests_all.inc();
        OpTimer {
            op,
            started: Instant::now(),
        }
    }

    /// Counts an errno returned to the kernel.
    pub fn fuse_error(&self, errno: i32) {
        self.fuse_errors
            .get_or_create(&ErrnoLabel {
                errno: errno.into(),
            })
            .inc();
    }
}

/// Records a FUSE request's latency when dropped.
pub struct OpTimer {
    op: &'static str,
    started: Instant,
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        global()
            .fuse_seconds
            .get_or_create(&OpLabel { op: self.op })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's counters.
pub fn global() -> &'static Metrics {
    &METRICS
}
