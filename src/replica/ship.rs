//! The shipping thread: takes the prefix (advancing the epoch with a
//! conditional write), then in rounds uploads what became durable locally
//! and commits it with one conditional manifest write.
//!
//! A round, per stream: each sealed segment the manifest does not hold
//! sealed goes up whole (byte-identical to the file); the active segment's
//! newly durable bytes go up as one part. Parts merge four of a level into
//! one of the next level (read back from the local file), so a long-lived
//! active segment holds at most 3 parts per level, about 3·log4(rounds).
//! Objects are written before the manifest that references them, and
//! superseded objects are deleted only after it.

use super::manifest::{self, Manifest, ObjectRef, SegmentManifest, MERGE_FAN_IN};
use super::store::{Bucket, BucketUrl, Fault};
use super::{Link, Phase, ReplicaMode, ReplicaOptions};
use crate::error::{Error, Result};
use crate::options::SyncMode;
use crate::stream::Stream;
use crate::wal::Core;
use bytes::Bytes;
use object_store::UpdateVersion;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shipping thread and its link to appenders.
pub(crate) struct Replicator {
    pub link: Arc<Link>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum Takeover {
    /// Retry later (the bucket is unreachable).
    Retry(String),
    /// Never: the prefix belongs to someone else, or diverges.
    Fatal(String),
}

struct Shipper {
    core: Arc<Core>,
    bucket: Bucket,
    link: Arc<Link>,
    /// The manifest this writer last wrote, and its version; None until
    /// the prefix is taken.
    manifest: Option<(Manifest, UpdateVersion)>,
    /// Waiters the last strict round carried: how many to gather.
    last_waiters: usize,
    last_round: Duration,
    /// The incarnation (uid) of each stream this writer shipped: a stream
    /// deleted and made again must not ship under the old one's ids.
    incarnations: std::collections::HashMap<String, u64>,
    /// Streams not shipped, and already said so.
    reported: std::collections::HashSet<String>,
    /// Root files as last read: their stamp and crc, so that a round reads
    /// again only a file that changed.
    root_files: std::collections::HashMap<&'static str, (FileStamp, u32)>,
    /// When the last successful manifest write started.
    last_put: Instant,
}

/// What tells a root file changed without reading it: its inode (an atomic
/// replacement makes a new one), length and modification time.
type FileStamp = (u64, u64, i64, i64);

impl Replicator {
    /// Connects and takes the prefix. A refusal (credentials, missing
    /// bucket, another writer, a bucket ahead of the local log) is an
    /// error; an unreachable bucket is retried in the background.
    pub fn start(core: Arc<Core>, opts: ReplicaOptions) -> Result<Replicator> {
        let url = BucketUrl::parse(&opts.url).map_err(Error::Config)?;
        let mut shipper = Shipper::new(core, opts)?;
        let link = shipper.link.clone();
        match shipper.take_over() {
            Ok(()) => {}
            Err(Takeover::Fatal(m)) => return Err(Error::Replication(m)),
            Err(Takeover::Retry(m)) => {
                if link.opts.lease.is_some() {
                    log::warn!("replication to {url}: the bucket is unreachable ({m}); appends are refused until this writer takes the prefix (it holds it by a lease; `--lease off` acknowledges without one)");
                } else {
                    log::warn!("replication to {url}: the bucket is unreachable ({m}); appends go on locally and shipping starts when it answers");
                }
                link.state.lock().phase = Phase::Unreachable(m);
            }
        }
        Replicator::spawn(shipper)
    }

    /// Ships for a standby that has just taken the prefix: `taken` is the
    /// manifest it wrote (epoch advanced) at `version`, whose write started
    /// at `sent`.
    pub fn start_taken(
        core: Arc<Core>,
        opts: ReplicaOptions,
        taken: Manifest,
        version: UpdateVersion,
        sent: Instant,
    ) -> Result<Replicator> {
        let mut shipper = Shipper::new(core, opts)?;
        shipper.link.renewed(sent);
        shipper.last_put = sent;
        {
            let mut st = shipper.link.state.lock();
            for (name, s) in &taken.streams {
                st.shipped.insert(name.clone(), s.next_id);
            }
            st.phase = Phase::Ok;
        }
        shipper.manifest = Some((taken, version));
        Replicator::spawn(shipper)
    }

    fn spawn(shipper: Shipper) -> Result<Replicator> {
        let link = shipper.link.clone();
        let thread = std::thread::Builder::new()
            .name("walfs-replicate".into())
            .spawn(move || shipper.run())
            .map_err(Error::Io)?;
        Ok(Replicator {
            link,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Ships what is durable (one last round), lets the prefix go, and
    /// stops the thread.
    pub fn stop(&self) {
        self.link.state.lock().stop = true;
        self.link.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl crate::shipping::Shipping for Replicator {
    fn check(&self) -> Result<()> {
        self.link.check()
    }
    fn appended(&self, stream: &str, end: u64) -> Result<()> {
        self.link.appended(stream, end)
    }
    fn info(&self, stream: &str, durable: u64) -> crate::shipping::ReplicaInfo {
        self.link.info(stream, durable)
    }
    fn counters(&self) -> (u64, u64, u64) {
        self.link.counters()
    }
    fn stop(&self) {
        Replicator::stop(self)
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bytes `from..to` of a local file.
fn read_range(path: &Path, from: u64, to: u64) -> std::io::Result<Bytes> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; (to - from) as usize];
    f.read_exact_at(&mut buf, from)?;
    Ok(Bytes::from(buf))
}

fn object(key: String, offset: u64, bytes: &Bytes, level: u32) -> ObjectRef {
    ObjectRef {
        key,
        offset,
        len: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
        level,
    }
}

pub(super) fn writer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host} pid {}", std::process::id())
}

/// The refusal of a plain start on a prefix whose holder is alive.
pub(crate) fn live_holder_message(url: &BucketUrl, holder: &Manifest) -> String {
    format!(
        "{url} is held by {} (epoch {}), whose lease is live: it renewed within the last {:?}. Mount with --standby to follow it and take over when its lease lapses, or with --takeover to take the prefix now (the holder is fenced)",
        holder.writer,
        holder.epoch,
        Duration::from_millis(holder.lease_ms)
    )
}

fn ahead_message(url: &BucketUrl, what: String) -> String {
    format!(
        "{what}: the bucket at {url} is ahead of, or diverges from, this data directory; rebuild a data directory from it with `walfs restore {url} NEW_DATA`, or ship to another prefix"
    )
}

impl Shipper {
    fn new(core: Arc<Core>, opts: ReplicaOptions) -> Result<Shipper> {
        let url = BucketUrl::parse(&opts.url).map_err(Error::Config)?;
        let bucket =
            Bucket::open(&url, opts.timeout, &opts.settings).map_err(Error::Replication)?;
        Ok(Shipper {
            core,
            bucket,
            link: Arc::new(Link::new(opts)),
            manifest: None,
            last_waiters: 0,
            last_round: Duration::ZERO,
            incarnations: Default::default(),
            reported: Default::default(),
            root_files: Default::default(),
            last_put: Instant::now(),
        })
    }

    fn ctx(&self) -> &crate::stream::Ctx {
        &self.core.ctx
    }

    fn take_over(&mut self) -> std::result::Result<(), Takeover> {
        let url = self.bucket.url.clone();
        let classify = |f: Fault| match f {
            Fault::Refused(m) => Takeover::Fatal(format!("{url}: {m}")),
            Fault::Conflict => {
                Takeover::Fatal("another writer took the prefix at the same moment".into())
            }
            f => Takeover::Retry(f.to_string()),
        };
        let (current, expected) = match self.bucket.get_manifest().map_err(classify)? {
            None => {
                // A GET of a missing bucket is also "not found": listing
                // tells the two apart.
                self.bucket.list().map_err(classify)?;
                (Manifest::empty(0), None)
            }
            Some((bytes, v)) => (
                Manifest::decode(&bytes)
                    .map_err(|m| Takeover::Fatal(format!("{url}/{}: {m}", manifest::MANIFEST)))?,
                Some(v),
            ),
        };
        if let Some(v) = &expected {
            self.respect_lease(&current, v)?;
        }
        self.check_against_local(&current)
            .map_err(|m| Takeover::Fatal(ahead_message(&url, m)))?;
        let mut next = current.clone();
        next.epoch += 1;
        next.writer = writer_name();
        next.updated_ms = manifest::now_ms();
        next.lease_ms = self.lease_ms();
        next.released = false;
        let sent = Instant::now();
        let version = self
            .bucket
            .put_manifest(next.encode(), expected)
            .map_err(|f| match f {
                Fault::Conflict => Takeover::Fatal(format!(
                    "another writer took {url} at the same moment (epoch {}); this one stands down",
                    current.epoch + 1
                )),
                f => classify(f),
            })?;
        // Objects no manifest references are leftovers of a writer killed
        // mid-round or fenced: nobody will ever reference them.
        let referenced: std::collections::HashSet<&str> = next.keys().collect();
        if let Ok(all) = self.bucket.list() {
            let orphans: Vec<String> = all
                .into_iter()
                .filter(|k| k != manifest::MANIFEST && !referenced.contains(k.as_str()))
                .filter(|k| k.ends_with(".wal") || k.ends_with(".part") || k.ends_with(".file"))
                .collect();
            if !orphans.is_empty() {
                log::info!(
                    "replication: removing {} unreferenced objects left by an earlier writer",
                    orphans.len()
                );
                if let Err(f) = self.bucket.delete_all(orphans) {
                    log::warn!("replication: removing unreferenced objects failed: {f}");
                }
            }
        }
        self.link.renewed(sent);
        self.last_put = sent;
        crate::metrics::global().role.set(1);
        {
            let mut st = self.link.state.lock();
            for (name, s) in &next.streams {
                st.shipped.insert(name.clone(), s.next_id);
            }
            st.phase = Phase::Ok;
        }
        self.link.progress.notify_all();
        log::info!(
            "replication: took {url} at epoch {} ({} streams in the bucket)",
            next.epoch,
            next.streams.len()
        );
        self.manifest = Some((next, version));
        Ok(())
    }

    fn lease_ms(&self) -> u64 {
        self.link.opts.lease.map_or(0, |l| l.as_millis() as u64)
    }

    /// A holder whose lease may be live keeps the prefix: watch its
    /// manifest for one lease by this machine's clock. A change means it is
    /// alive: refused, naming `--standby` and `--takeover`. No change: the
    /// lease lapsed, and the prefix is taken. `--takeover` skips the wait.
    fn respect_lease(
        &self,
        current: &Manifest,
        seen: &UpdateVersion,
    ) -> std::result::Result<(), Takeover> {
        if current.lease_ms == 0 || current.released {
            return Ok(());
        }
        let url = &self.bucket.url;
        if self.link.opts.takeover {
            log::warn!(
                "replication: taking {url} from {} (epoch {}) by --takeover, whatever its lease: it is fenced and stops acknowledging",
                current.writer,
                current.epoch
            );
            return Ok(());
        }
        let lease = Duration::from_millis(current.lease_ms);
        log::info!(
            "replication: {url} was last held by {} (epoch {}) with a {lease:?} lease: watching the manifest for that long before taking it",
            current.writer,
            current.epoch
        );
        let watched = Instant::now();
        let poll = (lease / 8).clamp(Duration::from_millis(50), Duration::from_millis(500));
        while watched.elapsed() < lease {
            std::thread::sleep(poll.min(lease.saturating_sub(watched.elapsed())));
            let now = self.bucket.get_manifest().map_err(|f| match f {
                Fault::Refused(m) => Takeover::Fatal(format!("{url}: {m}")),
                f => Takeover::Retry(f.to_string()),
            })?;
            let alive = match &now {
                Some((_, v)) => v != seen,
                None => true,
            };
            if alive {
                return Err(Takeover::Fatal(live_holder_message(url, current)));
            }
        }
        log::info!(
            "replication: the lease of {} on {url} lapsed ({lease:?} without a renewal): taking the prefix",
            current.writer
        );
        Ok(())
    }

    /// The manifest must describe a prefix of what this directory holds.
    fn check_against_local(&self, m: &Manifest) -> std::result::Result<(), String> {
        for (name, sm) in &m.streams {
            if sm.next_id == 0 {
                continue;
            }
            let Some(s) = self.core.stream(name) else {
                return Err(format!(
                    "the bucket holds stream {name} up to id {}, this directory has no such stream",
                    sm.next_id
                ));
            };
            let view = s.ship_view();
            if view.durable_id < sm.next_id {
                return Err(format!(
                    "the bucket holds stream {name} up to id {}, this directory only up to {}",
                    sm.next_id, view.durable_id
                ));
            }
            let first_local = view.segments.first().map_or(u64::MAX, |g| g.start_id);
            for (i, mseg) in sm.segments.iter().enumerate() {
                let Some(local) = view.segments.iter().find(|g| g.start_id == mseg.start_id) else {
                    if mseg.start_id < first_local {
                        continue; // truncated here, kept in the bucket
                    }
                    return Err(format!(
                        "stream {name}: the bucket has segment {} that this directory lacks",
                        mseg.start_id
                    ));
                };
                if local.len < mseg.len || (mseg.sealed && local.len != mseg.len) {
                    return Err(format!(
                        "stream {name}: segment {} holds {} bytes here and {} in the bucket",
                        mseg.start_id, local.len, mseg.len
                    ));
                }
                // The newest segment is where a diverging writer would
                // differ: compare its bytes.
                if i + 1 == sm.segments.len() {
                    for o in &mseg.objects {
                        let bytes = read_range(&local.path, o.offset, o.offset + o.len)
                            .map_err(|e| format!("reading {}: {e}", local.path.display()))?;
                        if crc32fast::hash(&bytes) != o.crc32 {
                            return Err(format!(
                                "stream {name}: bytes {}..{} of segment {} differ from the bucket's",
                                o.offset,
                                o.offset + o.len,
                                mseg.start_id
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn run(mut self) {
        let interval = self.link.opts.interval;
        let strict = self.link.opts.mode == ReplicaMode::Strict;
        let mut last_round = Instant::now();
        loop {
            let stopping = {
                let mut st = self.link.state.lock();
                loop {
                    if st.stop {
                        break;
                    }
                    if st.waiters > 0 && self.manifest.is_some() {
                        // Gather the writers a round carried last time
                        // (they are appending again), for at most about
                        // one round's time.
                        let until = Instant::now() + self.last_round.min(Duration::from_millis(20));
                        while st.waiters < self.last_waiters && !st.stop {
                            if self.link.wake.wait_until(&mut st, until).timed_out() {
                                break;
                            }
                        }
                        break;
                    }
                    let mut due = last_round + interval;
                    if let (Some(lease), Some(_)) = (self.link.opts.lease, &self.manifest) {
                        // Renew at a third of the lease, also when idle;
                        // after a failure, retry 4 times a lease.
                        let renew = (self.last_put + lease / 3).max(last_round + lease / 12);
                        due = due.min(renew);
                    }
                    if Instant::now() >= due {
                        break;
                    }
                    self.link.wake.wait_until(&mut st, due);
                }
                if let Phase::Fenced(_) = st.phase {
                    if st.stop {
                        return;
                    }
                    // Fenced for good: wait for the end.
                    while !st.stop {
                        self.link.wake.wait(&mut st);
                    }
                    return;
                }
                st.stop
            };
            last_round = Instant::now();
            if self.manifest.is_none() {
                match self.take_over() {
                    Ok(()) => {}
                    Err(Takeover::Retry(m)) => {
                        self.set_unreachable(m);
                        if stopping {
                            return;
                        }
                        continue;
                    }
                    Err(Takeover::Fatal(m)) => {
                        self.fence(m);
                        continue;
                    }
                }
            }
            let waiters = self.link.state.lock().waiters;
            let started = Instant::now();
            match self.round() {
                Ok(()) => {
                    self.last_round = started.elapsed();
                    if strict {
                        self.last_waiters = waiters;
                    }
                    let mut st = self.link.state.lock();
                    if st.phase != Phase::Ok {
                        log::info!("replication to {}: shipping again", self.bucket.url);
                        st.phase = Phase::Ok;
                    }
                }
                Err(Fault::Conflict) => match self.adopt() {
                    Ok(()) => {}
                    Err(why) => {
                        let url = self.bucket.url.clone();
                        self.fence(format!("another writer took {url} ({why}): a conditional manifest write lost; this daemon no longer acknowledges appends"));
                    }
                },
                Err(f) => self.set_unreachable(f.to_string()),
            }
            if stopping {
                self.release();
                return;
            }
        }
    }

    /// At a clean stop, after the last round: lets the prefix go, so that a
    /// standby or the next start takes it at once.
    fn release(&mut self) {
        let Some((m, v)) = self.manifest.take() else {
            return;
        };
        if matches!(self.link.state.lock().phase, Phase::Fenced(_)) || m.lease_ms == 0 {
            return;
        }
        let mut next = m;
        next.released = true;
        next.updated_ms = manifest::now_ms();
        match self.bucket.put_manifest(next.encode(), Some(v)) {
            Ok(_) => log::info!(
                "replication: released {} (epoch {}): a standby or the next start takes it at once",
                self.bucket.url,
                next.epoch
            ),
            Err(f) => log::warn!(
                "replication: could not release {} ({f}): the next holder waits for the lease to lapse",
                self.bucket.url
            ),
        }
    }

    /// After a lost conditional write: if the manifest still carries this
    /// writer's epoch, someone edited it without taking the prefix (a
    /// bucket truncation): adopt it, and the next round retries. Anything
    /// else means another writer.
    fn adopt(&mut self) -> std::result::Result<(), String> {
        let ours = self.manifest.as_ref().map_or(0, |(m, _)| m.epoch);
        match self.bucket.get_manifest() {
            Ok(Some((bytes, v))) => {
                let m = Manifest::decode(&bytes)?;
                if m.epoch != ours {
                    return Err(format!("epoch {} is not ours ({ours})", m.epoch));
                }
                log::info!(
                    "replication: the manifest was edited (a bucket truncation); adopting it"
                );
                {
                    let mut st = self.link.state.lock();
                    for (name, s) in &m.streams {
                        st.shipped.insert(name.clone(), s.next_id);
                    }
                }
                self.manifest = Some((m, v));
                self.link.wake.notify_all();
                Ok(())
            }
            Ok(None) => Err("the manifest is gone".into()),
            // Cannot tell now: retry the round later.
            Err(f) => {
                self.set_unreachable(f.to_string());
                Ok(())
            }
        }
    }

    fn set_unreachable(&self, m: String) {
        let mut st = self.link.state.lock();
        if !matches!(st.phase, Phase::Unreachable(_)) {
            log::warn!("replication to {}: {m}; retrying", self.bucket.url);
        }
        st.phase = Phase::Unreachable(m);
        drop(st);
        self.link.progress.notify_all();
    }

    fn fence(&self, m: String) {
        log::error!("replication: fenced: {m}");
        // Strict replication acknowledges only what the bucket holds: what
        // is here past that was refused to its writers (they get the fence
        // below), so it goes, before they hear of it: a refused append
        // commits nothing, and no id here names another entry than the
        // bucket's.
        if self.link.opts.mode == crate::ReplicaMode::Strict {
            let shipped = self.link.state.lock().shipped.clone();
            for s in self.core.all_streams() {
                let to = shipped.get(&s.name).copied().unwrap_or(0);
                if let Err(e) = s.take_back(self.ctx(), to, "fenced") {
                    log::error!("stream {}: {e}", s.name);
                }
            }
        }
        self.link.state.lock().phase = Phase::Fenced(m);
        crate::metrics::global().role.set(3);
        self.link.progress.notify_all();
    }

    /// One upload round and its manifest write.
    fn round(&mut self) -> std::result::Result<(), Fault> {
        let (current, version) = self.manifest.clone().expect("the prefix is taken");
        let epoch = current.epoch;
        let mut next = current.clone();
        let mut uploads: Vec<(String, Bytes)> = Vec::new();
        let mut superseded: Vec<String> = Vec::new();
        let snapshot = Instant::now();
        let mut ends: Vec<(String, u64)> = Vec::new();
        // Root files first: a checkpoint names offsets durable when it was
        // made, so the streams read after it cover them in this manifest.
        let root = self.ctx().opts.root_path.clone();
        ship_files(
            &root,
            &mut self.root_files,
            &mut next,
            epoch,
            &mut uploads,
            &mut superseded,
        );
        for s in self.core.all_streams() {
            if s.damaged.is_some() {
                continue;
            }
            if self.ctx().opts.sync_mode != SyncMode::Strict && s.writer.lock().poisoned.is_none() {
                // Only what is durable locally is shipped.
                if let Err(e) = s.sync(self.ctx()) {
                    log::warn!("replication: syncing stream {} failed: {e}", s.name);
                }
            }
            let view = s.ship_view();
            let sm = next.streams.entry(s.name.clone()).or_default();
            let first = *self.incarnations.entry(s.name.clone()).or_insert(s.uid);
            if first != s.uid || view.durable_id < sm.next_id {
                // A stream deleted and made again here: the bucket keeps the
                // old one's history, and an id must never name two entries.
                if self.reported.insert(s.name.clone()) {
                    log::warn!(
                        "replication: stream {} was deleted and made again here after its history was shipped: it is not shipped (its ids would name other entries in the bucket); ship to another prefix to keep it",
                        s.name
                    );
                }
                continue;
            }
            ship_stream(&s, &view, sm, epoch, &mut uploads, &mut superseded);
            ends.push((s.name.clone(), sm.next_id));
        }
        let renew = self
            .link
            .opts
            .lease
            .is_some_and(|l| self.last_put.elapsed() >= l / 3);
        if uploads.is_empty()
            && next.streams == current.streams
            && next.files == current.files
            && !renew
        {
            self.settle(&ends, snapshot, 0);
            return Ok(());
        }
        let puts = uploads.len() as u64 + 1;
        self.bucket.put_all(uploads)?;
        next.updated_ms = manifest::now_ms();
        // Superseded objects stay, listed, for a grace period: a follower
        // may be reading them by the manifest before this one.
        let expired = next.retire(std::mem::take(&mut superseded), next.updated_ms);
        next.writer = current.writer.clone();
        next.lease_ms = self.lease_ms();
        next.released = false;
        let sent = Instant::now();
        let version = self.bucket.put_manifest(next.encode(), Some(version))?;
        self.link.renewed(sent);
        self.last_put = sent;
        let shipped: u64 = next
            .streams
            .iter()
            .map(|(n, s)| s.next_id - current.streams.get(n).map_or(0, |c| c.next_id))
            .sum();
        log::debug!(
            "replication: a round shipped {shipped} entries with {puts} PUTs ({:?})",
            ends
        );
        self.manifest = Some((next, version));
        self.settle(&ends, snapshot, puts);
        {
            let mut st = self.link.state.lock();
            st.counters.rounds += 1;
            st.counters.entries += shipped;
        }
        crate::metrics::global().replicated(shipped, puts);
        if !expired.is_empty() {
            if let Err(f) = self.bucket.delete_all(expired) {
                log::warn!("replication: removing retired objects failed ({f}); the next writer removes them");
            }
        }
        Ok(())
    }

    /// Publishes what the bucket now holds and wakes waiters.
    fn settle(&self, ends: &[(String, u64)], snapshot: Instant, puts: u64) {
        let mut st = self.link.state.lock();
        st.counters.puts += puts;
        for (name, end) in ends {
            st.shipped.insert(name.clone(), *end);
            let appended = self.core.stream(name).map_or(0, |s| s.appended());
            self.link
                .set_behind(name, (appended > *end).then_some(snapshot));
        }
        drop(st);
        self.link.progress.notify_all();
    }
}

/// Adds to `uploads` the root files (a sharded log's checkpoints) whose
/// bytes differ from what `m` names, and drops from `m` those gone here.
/// A file whose stamp and crc are as `seen` last noted, and as `m` names,
/// is not read again.
fn ship_files(
    root: &std::path::Path,
    seen: &mut std::collections::HashMap<&'static str, (FileStamp, u32)>,
    m: &mut Manifest,
    epoch: u64,
    uploads: &mut Vec<(String, Bytes)>,
    superseded: &mut Vec<String>,
) {
    use std::os::unix::fs::MetadataExt;
    for name in manifest::ROOT_FILES {
        let path = root.join(name);
        let stamp = match std::fs::metadata(&path) {
            Ok(md) => (md.ino(), md.len(), md.mtime(), md.mtime_nsec()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                seen.remove(name);
                if let Some(old) = m.files.remove(name) {
                    superseded.push(old.key);
                }
                continue;
            }
            Err(e) => {
                log::warn!("replication: {name} could not be read ({e}); shipped later");
                continue;
            }
        };
        let named = m.files.get(name).map(|o| o.crc32);
        if seen
            .get(name)
            .is_some_and(|&(st, crc)| st == stamp && named == Some(crc))
        {
            continue;
        }
        // The stamp is taken before the read: a change meanwhile shows at
        // the next round.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("replication: {name} could not be read ({e}); shipped later");
                continue;
            }
        };
        let crc = crc32fast::hash(&bytes);
        seen.insert(name, (stamp, crc));
        if m.files
            .get(name)
            .is_some_and(|o| o.len == bytes.len() as u64 && o.crc32 == crc)
        {
            continue;
        }
        let bytes = Bytes::from(bytes);
        let key = manifest::file_key(name, epoch, crc);
        if let Some(old) = m
            .files
            .insert(name.to_owned(), object(key.clone(), 0, &bytes, 0))
        {
            if old.key != key {
                superseded.push(old.key);
            }
        }
        uploads.push((key, bytes));
    }
}

/// Adds to `uploads` what `sm` lacks of the local stream, and updates `sm`.
fn ship_stream(
    s: &Stream,
    view: &crate::stream::ShipView,
    sm: &mut manifest::StreamManifest,
    epoch: u64,
    uploads: &mut Vec<(String, Bytes)>,
    superseded: &mut Vec<String>,
) {
    for seg in &view.segments {
        if seg.start_id < sm.floor {
            continue; // removed from the bucket on purpose
        }
        let pos = sm.segments.iter().position(|g| g.start_id == seg.start_id);
        if let Some(i) = pos {
            if sm.segments[i].sealed || (!seg.sealed && sm.segments[i].len >= seg.len) {
                continue;
            }
        }
        if seg.sealed {
            let bytes = match read_range(&seg.path, 0, seg.len) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!(
                        "replication: stream {}: segment {} could not be read ({e}); it was removed here before it was shipped",
                        s.name,
                        seg.start_id
                    );
                    continue;
                }
            };
            let key = manifest::sealed_key(&s.name, seg.start_id, epoch);
            let entry = SegmentManifest {
                start_id: seg.start_id,
                end_id: seg.end_id,
                len: seg.len,
                sealed: true,
                payload: manifest::payload_of(&bytes),
                objects: vec![object(key.clone(), 0, &bytes, 0)],
            };
            uploads.push((key, bytes));
            match pos {
                Some(i) => {
                    superseded.extend(sm.segments[i].objects.drain(..).map(|o| o.key));
                    sm.segments[i] = entry;
                }
                None => {
                    let at = sm.segments.partition_point(|g| g.start_id < seg.start_id);
                    sm.segments.insert(at, entry);
                }
            }
        } else {
            let i = match pos {
                Some(i) => i,
                None => {
                    let at = sm.segments.partition_point(|g| g.start_id < seg.start_id);
                    sm.segments.insert(
                        at,
                        SegmentManifest {
                            start_id: seg.start_id,
                            end_id: seg.start_id,
                            len: 0,
                            sealed: false,
                            payload: 0,
                            objects: Vec::new(),
                        },
                    );
                    at
                }
            };
            let g = &mut sm.segments[i];
            let from = g.len;
            let bytes = match read_range(&seg.path, from, seg.len) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!(
                        "replication: stream {}: reading the active segment failed: {e}",
                        s.name
                    );
                    continue;
                }
            };
            let key = manifest::part_key(&s.name, seg.start_id, epoch, from, seg.len);
            g.payload += manifest::payload_of(&bytes);
            g.objects.push(object(key.clone(), from, &bytes, 0));
            uploads.push((key, bytes));
            merge_parts(&seg.path, &s.name, g, epoch, uploads, superseded);
            g.len = seg.len;
            g.end_id = seg.end_id;
        }
    }
    sm.next_id = sm.next_id.max(view.durable_id);
}

/// While the last MERGE_FAN_IN parts share a level, replaces them with one
/// part of the next level, read back from the local file.
fn merge_parts(
    path: &Path,
    stream: &str,
    g: &mut SegmentManifest,
    epoch: u64,
    uploads: &mut Vec<(String, Bytes)>,
    superseded: &mut Vec<String>,
) {
    loop {
        let n = g.objects.len();
        if n < MERGE_FAN_IN {
            return;
        }
        let tail = &g.objects[n - MERGE_FAN_IN..];
        let level = tail[0].level;
        if tail.iter().any(|o| o.level != level) {
            return;
        }
        let (from, to) = (
            tail[0].offset,
            tail[MERGE_FAN_IN - 1].offset + tail[MERGE_FAN_IN - 1].len,
        );
        let Ok(bytes) = read_range(path, from, to) else {
            return;
        };
        let key = manifest::part_key(stream, g.start_id, epoch, from, to);
        for o in g.objects.drain(n - MERGE_FAN_IN..) {
            // A part made in this round is simply not uploaded.
            if let Some(p) = uploads.iter().position(|(k, _)| *k == o.key) {
                uploads.remove(p);
            } else {
                superseded.push(o.key);
            }
        }
        g.objects.push(object(key.clone(), from, &bytes, level + 1));
        uploads.push((key, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_file_is_read_again_only_when_its_stamp_changes() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join(crate::sharded::checkpoints::LOG_FILE);
        std::fs::write(&log, b"first version").unwrap();
        let mut seen = Default::default();
        let mut m = Manifest::empty(1);
        let round = |m: &mut Manifest, seen: &mut _| {
            let (mut up, mut gone) = (Vec::new(), Vec::new());
            ship_files(t.path(), seen, m, 1, &mut up, &mut gone);
            up.len()
        };
        assert_eq!(round(&mut m, &mut seen), 1);
        assert_eq!(round(&mut m, &mut seen), 0, "unchanged");
        // Same inode, length and mtime, other bytes: not read, not shipped.
        let mtime = std::fs::metadata(&log).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"FIRST", 0).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert_eq!(round(&mut m, &mut seen), 0, "the stamp says unchanged");
        // A new mtime: read and shipped.
        std::fs::write(&log, b"second version").unwrap();
        assert_eq!(round(&mut m, &mut seen), 1);
        assert_eq!(
            m.files[crate::sharded::checkpoints::LOG_FILE].crc32,
            crc32fast::hash(b"second version")
        );
    }
}
