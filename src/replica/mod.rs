//! Shipping a log to S3-compatible object storage, and restoring it.
//!
//! - `store.rs`: the bucket client (object_store's S3 client, configured
//!   from the AWS environment and files, on a runtime of its own);
//! - `manifest.rs`: the manifest, the bucket's single commit point;
//! - `ship.rs`: the shipping thread: takeover (fencing), upload rounds,
//!   part merging;
//! - `restore.rs`: a data directory rebuilt from the bucket.
//!
//! How it fits the engine: appends never wait for the bucket in async
//! mode; in strict mode they wait (bounded) until a manifest that covers
//! them is written. A writer whose conditional manifest write fails has
//! been fenced and refuses every later append.

mod aside;
pub mod cache;
pub mod check;
pub mod follow;
pub mod manifest;
mod restore;
mod ship;
pub mod standby;
pub mod store;
pub mod times;

pub use restore::{restore, restore_to, RestorePoint, RestoreReport, RestoreTo};

/// The manifest at `opts.url`, or None if the prefix holds none.
pub fn read_manifest(opts: &ReplicaOptions) -> crate::Result<Option<manifest::Manifest>> {
    let u = BucketUrl::parse(&opts.url).map_err(crate::Error::Config)?;
    let b =
        store::Bucket::open(&u, opts.timeout, &opts.settings).map_err(crate::Error::Replication)?;
    fetch_manifest(&b)
}

/// The bucket's manifest, decoded, or None if it holds none.
pub(crate) fn fetch_manifest(b: &store::Bucket) -> crate::Result<Option<manifest::Manifest>> {
    match b.get_manifest() {
        Ok(None) => Ok(None),
        Ok(Some((bytes, _))) => manifest::Manifest::decode(&bytes)
            .map(Some)
            .map_err(|e| crate::Error::Replication(format!("{}: {e}", b.url))),
        Err(f) => Err(crate::Error::Replication(format!("{}: {f}", b.url))),
    }
}

/// The bucket at `opts.url` and the log it holds: its manifest and that
/// manifest's version. No manifest is an error that tells a missing bucket
/// (a GET there is "not found" too) from a prefix holding no log.
pub(crate) fn open_log(
    opts: &ReplicaOptions,
) -> crate::Result<(
    store::Bucket,
    manifest::Manifest,
    object_store::UpdateVersion,
)> {
    use crate::Error;
    let url = BucketUrl::parse(&opts.url).map_err(Error::Config)?;
    let bucket =
        store::Bucket::open(&url, opts.timeout, &opts.settings).map_err(Error::Replication)?;
    let (bytes, version) = bucket
        .get_manifest()
        .map_err(|f| Error::Replication(format!("{url}: {f}")))?
        .ok_or_else(|| match bucket.list() {
            Err(f) => Error::Replication(format!("{url}: {f}")),
            Ok(_) => Error::Replication(format!(
                "no walfs log at {url}: it holds no {}",
                manifest::MANIFEST
            )),
        })?;
    let m = manifest::Manifest::decode(&bytes)
        .map_err(|e| Error::Replication(format!("{url}: {e}")))?;
    Ok((bucket, m, version))
}

pub use crate::shipping::{
    lease_valid_for, ReplicaInfo, ReplicaMode, ReplicaOptions, DEFAULT_LEASE, MIN_LEASE,
};
pub(crate) use ship::Replicator;
pub use store::BucketUrl;

use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The shipping state, as `stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not yet in touch with the bucket.
    Connecting,
    /// Everything durable locally is in the bucket, or on its way.
    Ok,
    /// The last attempt failed; retrying.
    Unreachable(String),
    /// Another writer took the prefix, or the bucket diverges: this writer
    /// never writes to the bucket again and refuses appends.
    Fenced(String),
}

#[derive(Default)]
struct Counters {
    rounds: u64,
    puts: u64,
    entries: u64,
}

struct LinkState {
    phase: Phase,
    /// Per stream: one past the last id the bucket holds.
    shipped: HashMap<String, u64>,
    /// Strict-mode appenders waiting for a round.
    waiters: usize,
    stop: bool,
    counters: Counters,
    /// When the last successful manifest write started (the lease runs
    /// from then).
    renewed: Option<Instant>,
    /// The lapse of the lease was logged (once per lapse).
    lapse_said: bool,
}

/// What appenders and the shipping thread share.
pub(crate) struct Link {
    opts: ReplicaOptions,
    state: Mutex<LinkState>,
    /// Signalled when shipped ids advance or the phase changes.
    progress: Condvar,
    /// Signalled to start a round early (strict waiters, stop).
    wake: Condvar,
    /// Per stream: since when (ns after `born`, plus one; 0 for never)
    /// something appended has not been shipped. Atomics behind a read
    /// lock, so appenders rarely write shared memory.
    behind: RwLock<HashMap<String, AtomicU64>>,
    born: Instant,
}

impl Link {
    fn new(opts: ReplicaOptions) -> Link {
        Link {
            opts,
            state: Mutex::new(LinkState {
                phase: Phase::Connecting,
                shipped: HashMap::new(),
                waiters: 0,
                stop: false,
                counters: Counters::default(),
                renewed: None,
                lapse_said: false,
            }),
            progress: Condvar::new(),
            wake: Condvar::new(),
            behind: RwLock::new(HashMap::new()),
            born: Instant::now(),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.born).as_nanos() as u64 + 1
    }

    /// Notes that `stream` has entries the bucket lacks, since `at` unless
    /// an earlier time is already noted.
    fn mark_behind(&self, stream: &str, at: Instant) {
        {
            let b = self.behind.read();
            if let Some(c) = b.get(stream) {
                if c.load(Ordering::Relaxed) == 0 {
                    let _ =
                        c.compare_exchange(0, self.stamp(at), Ordering::Relaxed, Ordering::Relaxed);
                }
                return;
            }
        }
        self.behind
            .write()
            .entry(stream.to_owned())
            .or_insert_with(|| AtomicU64::new(self.stamp(at)));
    }

    /// After a round: caught up (None), or still behind since `at`.
    fn set_behind(&self, stream: &str, at: Option<Instant>) {
        let v = at.map_or(0, |t| self.stamp(t));
        let b = self.behind.read();
        if let Some(c) = b.get(stream) {
            let old = c.load(Ordering::Relaxed);
            // Keep an older mark only when it is still the oldest unshipped.
            if v == 0 || old == 0 || old < v {
                c.store(v, Ordering::Relaxed);
            }
            return;
        }
        drop(b);
        if v != 0 {
            self.mark_behind(stream, at.expect("set"));
        }
    }

    fn behind_ms(&self, stream: &str) -> u64 {
        let b = self.behind.read();
        match b.get(stream).map(|c| c.load(Ordering::Relaxed)) {
            None | Some(0) => 0,
            Some(v) => {
                let since = self.born + std::time::Duration::from_nanos(v - 1);
                since.elapsed().as_millis() as u64
            }
        }
    }

    /// Refuses appends once fenced, and while the lease is not held.
    pub fn check(&self) -> crate::Result<()> {
        let mut st = self.state.lock();
        if let Phase::Fenced(why) = &st.phase {
            return Err(crate::Error::Fenced(why.clone()));
        }
        self.lease_check(&mut st)
    }

    /// Records a manifest write that started at `at` and succeeded: the
    /// lease runs from `at`.
    fn renewed(&self, at: Instant) {
        let mut st = self.state.lock();
        if st.lapse_said {
            log::info!(
                "replication to {}: the lease is renewed; acknowledging appends again",
                self.opts.url
            );
            st.lapse_said = false;
            crate::metrics::global().lease_lapsed.set(0);
        }
        st.renewed = Some(at);
    }

    /// Ok while this writer holds its lease (always, without one).
    fn lease_check(&self, st: &mut LinkState) -> crate::Result<()> {
        let Some(lease) = self.opts.lease else {
            return Ok(());
        };
        let since = st.renewed.map(|t| t.elapsed());
        if since.is_some_and(|d| d < lease_valid_for(lease)) {
            return Ok(());
        }
        let when = match since {
            Some(d) => format!("last renewed {:.1} s ago", d.as_secs_f64()),
            None => "the prefix is not taken yet".into(),
        };
        if !st.lapse_said {
            crate::metrics::global().lease_lapsed.set(1);
            log::error!(
                "replication to {}: this writer does not hold its lease ({when}; the lease is {lease:?}): appends are refused until it renews, since a standby may take the prefix",
                self.opts.url
            );
            st.lapse_said = true;
        }
        Err(crate::Error::Replication(format!(
            "this writer does not hold its lease on {} ({when}): appends are refused until the bucket answers",
            self.opts.url
        )))
    }

    /// Called after entries below `end` were appended to `stream`; in
    /// strict mode, returns once the bucket holds them (the shipper makes
    /// them durable locally first).
    pub fn appended(&self, stream: &str, end: u64) -> crate::Result<()> {
        self.mark_behind(stream, Instant::now());
        if self.opts.mode != ReplicaMode::Strict {
            // Acknowledged only while the lease holds: past it another
            // machine may hand out the same ids. The entry stays in the
            // local log: shipped if this writer renews, moved aside at its
            // next start if another took the prefix.
            return self.lease_check(&mut self.state.lock()).map_err(|e| {
                crate::Error::Replication(format!(
                    "not acknowledged: {e}; the entry is in the local log and ships if the lease is renewed"
                ))
            });
        }
        let mut st = self.state.lock();
        let deadline = Instant::now() + self.opts.timeout;
        st.waiters += 1;
        self.wake.notify_one();
        let r = loop {
            if let Phase::Fenced(why) = &st.phase {
                break Err(crate::Error::Fenced(why.clone()));
            }
            if st.shipped.get(stream).copied().unwrap_or(0) >= end {
                break Ok(());
            }
            if st.stop {
                break Err(crate::Error::Replication(
                    "the log closed before the bucket had the entry".into(),
                ));
            }
            if self.progress.wait_until(&mut st, deadline).timed_out() {
                let why = match &st.phase {
                    Phase::Unreachable(m) => format!(": {m}"),
                    _ => String::new(),
                };
                break Err(crate::Error::Replication(format!(
                    "the bucket did not confirm the entry within {:?}{why}",
                    self.opts.timeout
                )));
            }
        };
        st.waiters -= 1;
        r
    }

    /// `stat`'s view of `stream`.
    pub fn info(&self, stream: &str, durable: u64) -> ReplicaInfo {
        let st = self.state.lock();
        let replicated_id = st.shipped.get(stream).copied().unwrap_or(0);
        let lag_ms = if replicated_id >= durable {
            0
        } else {
            self.behind_ms(stream)
        };
        let lapsed = self.opts.lease.is_some_and(|l| {
            !matches!(st.phase, Phase::Fenced(_))
                && st.renewed.is_none_or(|t| t.elapsed() >= lease_valid_for(l))
        });
        let state = match &st.phase {
            _ if lapsed => format!(
                "lease lapsed, appends refused ({})",
                match &st.phase {
                    Phase::Unreachable(m) => format!("unreachable: {m}"),
                    Phase::Connecting => "connecting".into(),
                    _ => "the bucket has not answered within the lease".into(),
                }
            ),
            Phase::Connecting => "connecting".into(),
            Phase::Unreachable(m) => format!("unreachable ({m})"),
            Phase::Fenced(m) => format!("fenced ({m})"),
            Phase::Ok if lag_ms > 2 * self.opts.interval.as_millis() as u64 + 1000 => {
                format!(
                    "behind ({} entries not in the bucket yet)",
                    durable - replicated_id
                )
            }
            // Only "ok" once the bucket holds everything durable here.
            Phase::Ok if replicated_id < durable => format!(
                "shipping ({} entries not in the bucket yet)",
                durable - replicated_id
            ),
            Phase::Ok => "ok".into(),
        };
        ReplicaInfo {
            replicated_id,
            state,
            lag_ms,
            url: self.opts.url.clone(),
            role: if matches!(st.phase, Phase::Fenced(_)) {
                "fenced".into()
            } else {
                "primary".into()
            },
            lease_age_ms: self
                .opts
                .lease
                .and(st.renewed)
                .map(|t| t.elapsed().as_millis() as u64),
        }
    }

    /// Upload rounds that wrote a manifest, PUT requests, and entries
    /// shipped, since start.
    pub fn counters(&self) -> (u64, u64, u64) {
        let c = &self.state.lock().counters;
        (c.rounds, c.puts, c.entries)
    }
}
