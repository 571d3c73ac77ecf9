//! A standby: keeps its data directory a continuously applied copy of what
//! the bucket holds (segments byte-identical to the holder's), serves it
//! read-only, and takes the prefix when the holder's lease lapses.
//!
//! The lapse is judged by this machine's monotonic clock alone: the lease
//! runs from when this standby first saw the current manifest object, which
//! is after its holder started writing it, and the holder stops
//! acknowledging three quarters of a lease after it started that write
//! ([`super::lease_valid_for`]). No wall clocks are compared.
//!
//! Of several standbys exactly one wins: taking the prefix is a conditional
//! write (If-Match) of the manifest each of them saw.

use super::manifest::{self, Manifest};
use super::store::{Bucket, BucketUrl, Fault};
use super::{ReplicaInfo, ReplicaOptions, Replicator};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::Wal;
use object_store::UpdateVersion;
use parking_lot::{Condvar, Mutex};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `stat` and the metrics show of a standby.
#[derive(Debug, Clone)]
pub struct Status {
    /// `standby`, then `primary` once promoted.
    pub role: &'static str,
    /// The epoch of the manifest last applied.
    pub epoch: u64,
    /// Who holds the prefix, as its manifest says.
    pub holder: String,
    /// When the manifest last changed, by this machine's clock.
    pub changed: Instant,
    /// The last failure to read or apply the bucket, if the last try failed.
    pub failure: Option<String>,
    /// Milliseconds between a manifest's write (its holder's clock) and its
    /// apply here, for the last one applied: the apply lag, to within the
    /// two machines' clock offset.
    pub lag_ms: u64,
    /// Takeovers won.
    pub failovers: u64,
}

/// The longest a standby waits between two reads of the manifest: its
/// apply lag is at most the holder's upload interval plus this (a GET
/// each time, about 345,600 a day).
const POLL_MAX: Duration = Duration::from_millis(250);

struct Shared {
    status: Mutex<Status>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    /// A standby that has applied nothing yet.
    fn new() -> Shared {
        Shared {
            status: Mutex::new(Status {
                role: "standby",
                epoch: 0,
                holder: String::new(),
                changed: Instant::now(),
                failure: None,
                lag_ms: 0,
                failovers: 0,
            }),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        }
    }
}

/// The standby's thread.
pub struct Standby {
    shared: Arc<Shared>,
    url: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Standby {
    /// Starts applying the bucket at `opts.url` to `wal` (opened as a
    /// standby), and promotes it when the holder's lease lapses;
    /// `promoted` runs then, with a line saying so.
    pub fn start(
        wal: Wal,
        opts: ReplicaOptions,
        promoted: Box<dyn FnOnce(&str) + Send>,
    ) -> Result<Standby> {
        let url = BucketUrl::parse(&opts.url).map_err(Error::Config)?;
        let bucket =
            Bucket::open(&url, opts.timeout, &opts.settings).map_err(Error::Replication)?;
        let shared = Arc::new(Shared::new());
        let applier = Applier {
            wal,
            bucket,
            opts: opts.clone(),
            shared: shared.clone(),
        };
        crate::metrics::global().role.set(2);
        let thread = std::thread::Builder::new()
            .name("walfs-standby".into())
            .spawn(move || applier.run(promoted))
            .map_err(Error::Io)?;
        Ok(Standby {
            shared,
            url: opts.url,
            thread: Some(thread),
        })
    }

    /// The standby's state now.
    pub fn status(&self) -> Status {
        self.shared.status.lock().clone()
    }

    /// `stat`'s replication facts of a stream of which `held` ids are
    /// applied here (`aside`: where an earlier primary's unshipped entries
    /// were moved).
    pub fn info_source(&self, aside: Option<PathBuf>) -> impl Fn(u64) -> ReplicaInfo + Send + Sync {
        let (shared, url) = (self.shared.clone(), self.url.clone());
        move |held| info(&shared, &url, aside.as_deref(), held)
    }
}

fn info(shared: &Shared, url: &str, aside: Option<&std::path::Path>, held: u64) -> ReplicaInfo {
    {
        let st = shared.status.lock();
        let mut state = match &st.failure {
            Some(f) => format!("standby, unreachable ({f})"),
            None => format!("standby of {} (epoch {})", st.holder, st.epoch),
        };
        if let Some(a) = aside {
            state.push_str(&format!(
                "; entries this directory acknowledged but never shipped are in {}",
                a.display()
            ));
        }
        ReplicaInfo {
            replicated_id: held,
            state,
            lag_ms: st.lag_ms,
            url: url.to_owned(),
            role: st.role.into(),
            lease_age_ms: Some(st.changed.elapsed().as_millis() as u64),
        }
    }
}

impl Standby {
    /// Stops applying (a promotion already made stays).
    pub fn stop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Applier {
    wal: Wal,
    bucket: Bucket,
    opts: ReplicaOptions,
    shared: Arc<Shared>,
}

enum Took {
    Won,
    Lost,
}

impl Applier {
    fn stopped(&self) -> bool {
        *self.shared.stop.lock()
    }

    fn pause(&self, d: Duration) {
        let mut s = self.shared.stop.lock();
        if !*s {
            self.shared.wake.wait_for(&mut s, d);
        }
    }

    fn failed(&self, m: String) {
        let mut st = self.shared.status.lock();
        if st.failure.as_ref() != Some(&m) {
            log::warn!("standby of {}: {m}; retrying", self.bucket.url);
        }
        st.failure = Some(m);
    }

    fn run(self, promoted: Box<dyn FnOnce(&str) + Send>) {
        let own = self.opts.lease.unwrap_or(super::DEFAULT_LEASE);
        let mut seen: Option<UpdateVersion> = None;
        let mut applied = false;
        let mut said_no_lease = false;
        let mut ever_seen = false;
        let mut poll = (own / 8).clamp(Duration::from_millis(50), POLL_MAX);
        while !self.stopped() {
            let got = match self.bucket.get_manifest() {
                Ok(Some((bytes, v))) => Manifest::decode(&bytes)
                    .map(|m| (m, v))
                    .map_err(|e| format!("{}/{}: {e}", self.bucket.url, manifest::MANIFEST)),
                Ok(None) if !ever_seen => match self.take_fresh() {
                    Ok(Took::Won) => {
                        let line = format!(
                            "promoted: took the new prefix {} (no log there yet); appends are taken",
                            self.bucket.url
                        );
                        log::warn!("{line}");
                        promoted(&line);
                        return;
                    }
                    Ok(Took::Lost) => Err("another writer made the prefix first".into()),
                    Err(e) => Err(e.to_string()),
                },
                Ok(None) => Err(
                    "the manifest is gone from the bucket: not taking the prefix (restore it, or start a primary with --takeover)"
                        .into(),
                ),
                Err(f) => Err(f.to_string()),
            };
            ever_seen |= got.is_ok();
            let (m, v) = match got {
                Ok(x) => x,
                Err(e) => {
                    self.failed(e);
                    self.pause(poll);
                    continue;
                }
            };
            if seen.as_ref() != Some(&v) {
                seen = Some(v.clone());
                {
                    let mut st = self.shared.status.lock();
                    st.changed = Instant::now();
                    st.epoch = m.epoch;
                    st.holder = m.writer.clone();
                }
                applied = match self.apply(&m) {
                    Ok(()) => {
                        let mut st = self.shared.status.lock();
                        st.failure = None;
                        st.lag_ms = manifest::now_ms().saturating_sub(m.updated_ms);
                        crate::metrics::global()
                            .standby_apply_lag_ms
                            .set(st.lag_ms as i64);
                        true
                    }
                    Err(e) => {
                        self.failed(format!("applying epoch {}: {e}", m.epoch));
                        // Read it again next time.
                        seen = None;
                        false
                    }
                };
            }
            if m.lease_ms > 0 {
                poll = (Duration::from_millis(m.lease_ms) / 8)
                    .clamp(Duration::from_millis(50), POLL_MAX);
            }
            let since = self.shared.status.lock().changed.elapsed();
            let lapsed =
                m.released || (m.lease_ms > 0 && since >= Duration::from_millis(m.lease_ms));
            if m.lease_ms == 0 && !m.released && !said_no_lease {
                log::warn!(
                    "standby of {}: its holder {} runs without a lease (--lease off, or an older walfs): this standby follows it but never takes the prefix by itself",
                    self.bucket.url,
                    m.writer
                );
                said_no_lease = true;
            }
            if lapsed && applied {
                match self.take(&m, &v, since) {
                    Ok(Took::Won) => {
                        let line = format!(
                            "promoted: took {} at epoch {} after {} {}; appends are taken",
                            self.bucket.url,
                            m.epoch + 1,
                            m.writer,
                            if m.released {
                                "released it".to_string()
                            } else {
                                format!(
                                    "let its lease lapse ({:.1} s without a renewal)",
                                    since.as_secs_f64()
                                )
                            }
                        );
                        log::warn!("{line}");
                        promoted(&line);
                        return;
                    }
                    Ok(Took::Lost) => {
                        log::info!(
                            "standby of {}: another standby took the prefix first; following it",
                            self.bucket.url
                        );
                        seen = None;
                        continue;
                    }
                    Err(e) => self.failed(format!("taking the prefix: {e}")),
                }
            }
            self.pause(poll);
        }
    }

    /// Applies what `m` holds beyond this copy, stream by stream, object by
    /// object (each checked against its length and crc, every frame against
    /// its own crc and ids before a byte is written).
    fn apply(&self, m: &Manifest) -> Result<()> {
        // A sharded log's root files (its shard count and checkpoints),
        // each replaced whole (atomically) when its bytes differ. They name
        // offsets the streams' bytes below cover once applied.
        for (name, o) in &m.files {
            let path = self.wal.root().join(name);
            if std::fs::read(&path).is_ok_and(|b| crc32fast::hash(&b) == o.crc32) {
                continue;
            }
            let mut body = None;
            self.bucket
                .get_all(std::slice::from_ref(o), |_, b| {
                    body = Some(b?);
                    Ok(())
                })
                .map_err(Error::Replication)?;
            crate::RealStorage
                .write_atomic(&path, &body.unwrap_or_default())
                .map_err(Error::Io)?;
        }
        for (name, sm) in &m.streams {
            let (mut seg, mut len, mut next) = self.wal.position(name).unwrap_or((0, 0, 0));
            for g in &sm.segments {
                if g.start_id < seg || (g.start_id == seg && g.len <= len) || g.len == 0 {
                    continue;
                }
                let from = if g.start_id == seg { len } else { 0 };
                if g.start_id != seg && g.start_id != next {
                    return Err(Error::Replication(format!(
                        "stream {name}: the bucket's segment {} does not continue this copy (ids below {next}): restore this directory again",
                        g.start_id
                    )));
                }
                let objects: Vec<_> = g
                    .objects
                    .iter()
                    .filter(|o| o.offset + o.len > from)
                    .cloned()
                    .collect();
                let mut at = from;
                let wal = &self.wal;
                self.bucket
                    .get_all(&objects, |i, body| {
                        let o = &objects[i];
                        let body = body?;
                        if o.offset > at {
                            return Err(format!(
                                "stream {name}: segment {} has a gap at byte {at}",
                                g.start_id
                            ));
                        }
                        let skip = (at - o.offset) as usize;
                        next = wal
                            .apply_frames(name, g.start_id, at, &body[skip..])
                            .map_err(|e| e.to_string())?;
                        at = o.offset + o.len;
                        Ok(())
                    })
                    .map_err(Error::Replication)?;
                seg = g.start_id;
                len = at;
                // When they were shipped: a sealed segment's marks may be in
                // an object (read once, when the segment is applied).
                match super::times::segment_marks(&self.bucket, g) {
                    Ok(marks) => {
                        let applied: Vec<(u64, u64)> =
                            marks.into_iter().filter(|&(_, id)| id < next).collect();
                        self.wal.record_marks(name, &applied);
                    }
                    Err(e) => log::warn!(
                        "stream {name}: the times of segment {} could not be read ({e}): a time names its ids less precisely here",
                        g.start_id
                    ),
                }
            }
        }
        Ok(())
    }

    /// A prefix that holds no log at all (no manifest, no object): taken by
    /// a conditional create (If-None-Match), so that of several standbys
    /// started on a new prefix exactly one becomes its first primary.
    fn take_fresh(&self) -> Result<Took> {
        let objects = self
            .bucket
            .list()
            .map_err(|f| Error::Replication(f.to_string()))?;
        if !objects.is_empty() {
            return Err(Error::Replication(format!(
                "the bucket holds {} objects under the prefix but no manifest: not taking it (restore it, or start a primary with --takeover)",
                objects.len()
            )));
        }
        self.take_with(&Manifest::empty(0), None, Duration::ZERO)
    }

    /// Takes the prefix from the holder of `m` (at `v`): epoch advanced by
    /// a conditional write, then shipping starts and appends are taken.
    fn take(&self, m: &Manifest, v: &UpdateVersion, since: Duration) -> Result<Took> {
        self.take_with(m, Some(v), since)
    }

    fn take_with(&self, m: &Manifest, v: Option<&UpdateVersion>, since: Duration) -> Result<Took> {
        if let Some(d) = take_delay() {
            // A failpoint for tests: standbys that decided together write
            // together, so the conditional write alone picks the winner.
            std::thread::sleep(d);
        }
        let mut next = m.clone();
        next.epoch += 1;
        next.writer = super::ship::writer_name();
        next.updated_ms = manifest::now_ms();
        next.lease_ms = self.opts.lease.map_or(0, |l| l.as_millis() as u64);
        next.released = false;
        if v.is_some() {
            log::info!(
                "standby of {}: the lease of {} lapsed ({:.1} s without a change; released: {}): taking the prefix",
                self.bucket.url,
                m.writer,
                since.as_secs_f64(),
                m.released
            );
        }
        let sent = Instant::now();
        let version = match self.bucket.put_manifest(next.encode(), v.cloned()) {
            Ok(v) => v,
            Err(Fault::Conflict) => return Ok(Took::Lost),
            Err(f) => return Err(Error::Replication(f.to_string())),
        };
        let r = Replicator::start_taken(self.wal.core(), self.opts.clone(), next, version, sent)?;
        self.wal.promote(Box::new(r));
        crate::metrics::global().failover();
        let mut st = self.shared.status.lock();
        st.role = "primary";
        st.failovers += 1;
        Ok(Took::Won)
    }
}

/// `WALFS_FAILPOINT_STANDBY_TAKE_MS`: how long a standby waits between
/// deciding a lease lapsed and its conditional write (tests make two
/// standbys race with it; unset, no wait).
fn take_delay() -> Option<Duration> {
    static D: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("WALFS_FAILPOINT_STANDBY_TAKE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    })
}

/// Where a standby's data directory is made: DATA itself, filled from the
/// bucket first when it is missing or empty.
pub fn prepare(
    opts: &ReplicaOptions,
    data: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<PathBuf>> {
    let empty = match std::fs::read_dir(data) {
        Ok(mut d) => d.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::Io(e)),
    };
    if empty {
        if super::read_manifest(opts)?.is_some() {
            let r = super::restore(opts, data, progress)?;
            log::info!(
                "standby: filled {} from {} ({} segments, {} entries, epoch {})",
                data.display(),
                opts.url,
                r.segments,
                r.entries,
                r.epoch
            );
        }
        return Ok(None);
    }
    super::aside::move_aside_if_diverged(opts, data, progress)
}

#[cfg(test)]
#[path = "standby_tests.rs"]
mod tests;
