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
        shipper.know_incarnations(&taken);
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

mod round;
mod takeover;

pub(in crate::replica) use takeover::writer_name;

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
}
