//! A log read straight from its bucket: the manifest, polled, says what
//! exists; bytes come by range GETs, in blocks kept in a bounded local
//! cache (objects are immutable, so a cached block is never stale).
//!
//! Finding an id in a sealed segment needs no index object: a binary
//! search over byte offsets, each probe finding the first whole,
//! crc-valid frame at or after its offset (as recovery resyncs after
//! damage), so a cold `entries/<id>` costs about log2(segment / block)
//! requests; what probes learn is kept per segment.

use super::cache::DiskCache;
use super::manifest::{Manifest, SegmentManifest};
use super::store::Bucket;
use crate::cache::Lru;
use crate::error::{Error, Result};
use crate::format::frame::{
    decode_batch, raw_spans, DecodedFrame, FrameHeader, FrameType, HEADER_SIZE, MAGIC,
};
use crate::source::{LogSource, SegmentBytes};
use crate::{CompressionType, ReplicaInfo, SegmentInfo, StreamInfo, SyncMode};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes fetched per range GET and kept per cache file.
pub const BLOCK: u64 = 1 << 20;

/// How a bucket is read.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Where the log was shipped, and how to reach it.
    pub bucket: super::ReplicaOptions,
    /// How often the manifest is read for news.
    pub poll: Duration,
    /// Where the block cache goes (default: `$XDG_CACHE_HOME/walfs` or
    /// `~/.cache/walfs`): a directory of its own inside, named after the
    /// bucket, prefix and process, removed when the log is dropped.
    pub cache_dir: Option<PathBuf>,
    /// The most bytes the block cache keeps on disk.
    pub cache_size: u64,
}

impl FollowOptions {
    /// Defaults: polled every second, 1 GiB of cache.
    pub fn new(bucket: super::ReplicaOptions) -> FollowOptions {
        FollowOptions {
            bucket,
            poll: Duration::from_secs(1),
            cache_dir: None,
            cache_size: 1 << 30,
        }
    }
}

fn eio(m: impl Into<String>) -> Error {
    let m = m.into();
    log::error!("{m}");
    Error::Io(std::io::Error::from_raw_os_error(libc::EIO))
}

/// A frame found in a segment.
#[derive(Clone, Copy)]
struct Found {
    off: u64,
    h: FrameHeader,
}

/// What reads have learned of one segment.
#[derive(Default)]
struct Learned {
    /// Frames by start id.
    by_id: BTreeMap<u64, Found>,
    /// Frame offsets by the entry byte (of `log`) they start at, every
    /// 64 KiB of entries or so.
    by_payload: BTreeMap<u64, u64>,
}

/// An object's key and a block number in it.
type BlockKey = (String, u64);

/// A root file as fetched: the key it was fetched under, and its bytes.
type Fetched = (String, Arc<Vec<u8>>);

struct State {
    manifest: Manifest,
    /// When the manifest was last read, and the last failure since.
    fetched: Instant,
    failure: Option<String>,
    changes: u64,
}

struct Inner {
    bucket: Bucket,
    url: String,
    state: RwLock<State>,
    changed: Condvar,
    changed_lock: Mutex<()>,
    /// One manifest read at a time: a slower, older read must never land
    /// after a newer one.
    refreshing: Mutex<()>,
    cache: DiskCache,
    learned: Mutex<HashMap<(String, u64), Learned>>,
    frames: Mutex<Lru<(String, u64, u64), Arc<DecodedFrame>>>,
    /// Blocks in memory, in front of the disk cache.
    hot: Mutex<Lru<BlockKey, Arc<Vec<u8>>>>,
    /// Blocks a read-ahead is fetching; readers wait for them.
    inflight: Mutex<std::collections::HashSet<BlockKey>>,
    landed: Condvar,
    requests: std::sync::atomic::AtomicU64,
    /// Root files fetched (a sharded log's checkpoints), by name: the key
    /// they were fetched under and their bytes.
    files: Mutex<HashMap<String, Fetched>>,
}

/// A shipped log, read from its bucket: a read-only [`LogSource`] for the
/// mount and the CLI.
pub struct BucketLog {
    inner: Arc<Inner>,
    poller: Option<(std::thread::JoinHandle<()>, Arc<AtomicBool>)>,
}

fn default_cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("walfs")
}

impl BucketLog {
    /// Reads the manifest (an error if the bucket cannot be read or holds
    /// no log) and starts polling it.
    pub fn open(o: FollowOptions) -> Result<BucketLog> {
        let (bucket, manifest, _) = super::open_log(&o.bucket)?;
        let url = bucket.url.clone();
        // Always a directory of our own inside the one given: it is
        // emptied at start and removed at exit, so it must never be the
        // user's directory itself.
        let mut safe: String = format!("{}-{}", url.bucket, url.prefix)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        safe.truncate(200);
        let root = o.cache_dir.clone().unwrap_or_else(default_cache_root);
        let inner = Arc::new(Inner {
            bucket,
            url: url.to_string(),
            state: RwLock::new(State {
                manifest,
                fetched: Instant::now(),
                failure: None,
                changes: 1,
            }),
            changed: Condvar::new(),
            changed_lock: Mutex::new(()),
            refreshing: Mutex::new(()),
            cache: DiskCache::open(&root, &safe, o.cache_size.max(BLOCK))?,
            learned: Mutex::new(HashMap::new()),
            frames: Mutex::new(Lru::new(64 << 20)),
            hot: Mutex::new(Lru::new(64 << 20)),
            inflight: Mutex::new(Default::default()),
            landed: Condvar::new(),
            requests: Default::default(),
            files: Mutex::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (i2, s2) = (inner.clone(), stop.clone());
        let poll = o.poll;
        let h = std::thread::Builder::new()
            .name("walfs-follow".into())
            .spawn(move || {
                while !s2.load(Ordering::Acquire) {
                    std::thread::park_timeout(poll);
                    if s2.load(Ordering::Acquire) {
                        break;
                    }
                    i2.refresh();
                }
            })
            .map_err(Error::Io)?;
        Ok(BucketLog {
            inner,
            poller: Some((h, stop)),
        })
    }

    /// Reads the manifest now (the poller does it every interval).
    pub fn refresh(&self) {
        self.inner.refresh();
    }

    /// Range GETs issued so far.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The manifest as last read.
    pub fn manifest(&self) -> Manifest {
        self.inner.state.read().manifest.clone()
    }

    /// A root file of the log (a sharded log's `checkpoints.log`, `HEAD`
    /// or `SHARDS`) as the manifest last read names it, checked against
    /// it; fetched once per version. None if the manifest names none.
    pub fn root_file(&self, name: &str) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(o) = self.inner.state.read().manifest.files.get(name).cloned() else {
            return Ok(None);
        };
        if let Some((key, bytes)) = self.inner.files.lock().get(name) {
            if *key == o.key {
                return Ok(Some(bytes.clone()));
            }
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let body = self
            .inner
            .bucket
            .get_range(&o.key, 0..o.len)
            .map_err(|f| Error::Replication(format!("{}: {f}", o.key)))?;
        o.check(&body).map_err(Error::Replication)?;
        let bytes = Arc::new(body.to_vec());
        self.inner
            .files
            .lock()
            .insert(name.to_owned(), (o.key, bytes.clone()));
        Ok(Some(bytes))
    }
}

/// The checkpoints of a sharded log followed in a bucket, for the
/// follower's `checkpoints/` (read-only). Serial numbers stay with a
/// checkpoint (its id and time) across manifest updates.
pub struct BucketCheckpoints {
    log: Arc<BucketLog>,
    state: Mutex<Listed>,
}

#[derive(Default)]
struct Listed {
    /// The object the list was read from.
    key: Option<String>,
    list: Arc<Vec<(u64, crate::sharded::checkpoints::Entry)>>,
    serials: HashMap<(Vec<u8>, u64), u64>,
}

impl BucketCheckpoints {
    /// The checkpoints of `log`: shown once its manifest names a
    /// checkpoint log or a shard count.
    pub fn of(log: Arc<BucketLog>) -> BucketCheckpoints {
        BucketCheckpoints {
            log,
            state: Mutex::default(),
        }
    }

    /// The list as the manifest last read names it (kept as it was when the
    /// bucket cannot be read).
    fn current(&self) -> Arc<Vec<(u64, crate::sharded::checkpoints::Entry)>> {
        let key = self
            .log
            .manifest()
            .files
            .get(crate::sharded::checkpoints::LOG_FILE)
            .map(|o| o.key.clone());
        let mut st = self.state.lock();
        if st.key != key {
            let bytes = match self.log.root_file(crate::sharded::checkpoints::LOG_FILE) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("checkpoints: {e}");
                    return st.list.clone();
                }
            };
            let scan = crate::sharded::checkpoints::scan(bytes.as_deref().map_or(&[][..], |b| b));
            let st = &mut *st;
            let mut list = Vec::new();
            for e in scan.listed() {
                let next = st.serials.len() as u64 + 1;
                let serial = *st
                    .serials
                    .entry((e.id.clone(), e.timestamp))
                    .or_insert(next);
                list.push((serial, e));
            }
            st.list = Arc::new(list);
            st.key = key;
        }
        st.list.clone()
    }
}

impl crate::sharded::CheckpointSource for BucketCheckpoints {
    fn shown(&self) -> bool {
        let st = self.log.inner.state.read();
        let f = &st.manifest.files;
        f.contains_key(crate::sharded::checkpoints::LOG_FILE)
            || f.contains_key(crate::sharded::SHARDS_FILE)
    }

    fn checkpoints(&self) -> Vec<(u64, crate::sharded::checkpoints::Entry)> {
        self.current().to_vec()
    }

    fn by_serial(&self, serial: u64) -> Option<crate::sharded::checkpoints::Entry> {
        self.current()
            .iter()
            .find(|(s, _)| *s == serial)
            .map(|(_, e)| e.clone())
    }

    fn latest_id(&self) -> Option<Vec<u8>> {
        self.current().last().map(|(_, e)| e.id.clone())
    }

    fn serial_of(&self, id: &[u8]) -> Option<u64> {
        self.current()
            .iter()
            .find(|(_, e)| e.id == id)
            .map(|(s, _)| *s)
    }

    fn check(&self, _id: &[u8]) -> Result<()> {
        // The object was checked against the manifest when fetched, and
        // every listed record's crc when it was read.
        Ok(())
    }

    fn make(&self, _id: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }
}

impl Drop for BucketLog {
    fn drop(&mut self) {
        if let Some((h, stop)) = self.poller.take() {
            stop.store(true, Ordering::Release);
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Inner {
    fn refresh(&self) {
        let _one = self.refreshing.lock();
        match super::fetch_manifest(&self.bucket) {
            Ok(Some(m)) if m.epoch < self.state.read().manifest.epoch => {
                log::warn!(
                    "{}: ignoring a manifest of an older epoch ({})",
                    self.url,
                    m.epoch
                );
            }
            Ok(Some(m)) => {
                let mut st = self.state.write();
                st.fetched = Instant::now();
                if st.failure.take().is_some() {
                    log::info!("{}: reachable again", self.url);
                }
                // Never go back: a manifest is only ever replaced by one
                // that holds as much (or truncated history).
                if m != st.manifest {
                    st.manifest = m;
                    st.changes += 1;
                    drop(st);
                    let _g = self.changed_lock.lock();
                    self.changed.notify_all();
                }
            }
            Ok(None) => {
                self.state.write().failure = Some("the manifest is gone".into());
            }
            Err(e) => {
                let mut st = self.state.write();
                if st.failure.is_none() {
                    log::warn!("{e}; serving what is cached, retrying");
                }
                st.failure = Some(e.to_string());
            }
        }
    }

    fn segment(&self, stream: &str, start: u64) -> Option<SegmentManifest> {
        let st = self.state.read();
        let s = st.manifest.streams.get(stream)?;
        s.segments.iter().find(|g| g.start_id == start).cloned()
    }

    fn segment_for(&self, stream: &str, id: u64) -> Option<SegmentManifest> {
        let st = self.state.read();
        let s = st.manifest.streams.get(stream)?;
        if id >= s.next_id {
            return None;
        }
        let i = s.segments.partition_point(|g| g.start_id <= id);
        let g = s.segments.get(i.checked_sub(1)?)?;
        (id < g.end_id).then(|| g.clone())
    }

    /// One block of an object: from memory, the disk cache or the bucket.
    fn block(&self, key: &str, obj_len: u64, b: u64) -> Result<Arc<Vec<u8>>> {
        let k = (key.to_owned(), b);
        {
            // A read-ahead already fetching it: wait for that.
            let mut inflight = self.inflight.lock();
            while inflight.contains(&k) {
                self.landed.wait(&mut inflight);
            }
        }
        if let Some(v) = self.hot.lock().get(&k) {
            return Ok(v);
        }
        let v = match self.cache.get(key, b) {
            Some(v) => Arc::new(v),
            None => {
                let range = b * BLOCK..((b + 1) * BLOCK).min(obj_len);
                self.requests.fetch_add(1, Ordering::Relaxed);
                let bytes = self.bucket.get_range(key, range).map_err(|f| match f {
                    // Retired by the writer (merged into a larger part):
                    // the caller reads the manifest again.
                    super::store::Fault::NotFound => Error::Io(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("object {key}"),
                    )),
                    f => eio(format!("{}/{key}: {f}", self.url)),
                })?;
                self.cache.put(key, b, &bytes);
                Arc::new(bytes.to_vec())
            }
        };
        let w = v.len() as u64;
        self.hot.lock().insert(k, v.clone(), w);
        Ok(v)
    }

    /// Starts fetching blocks `first..first + n` of an object that are
    /// neither cached nor being fetched, in one request on a thread of its
    /// own: a sequential reader's read-ahead, overlapping the network with
    /// the parsing of the blocks before.
    fn prefetch(self: &Arc<Self>, key: &str, obj_len: u64, first: u64, n: u64) {
        let last = obj_len.div_ceil(BLOCK).min(first + n);
        let want: Vec<u64> = {
            let mut inflight = self.inflight.lock();
            let want: Vec<u64> = (first..last)
                .filter(|b| {
                    let k = (key.to_owned(), *b);
                    !inflight.contains(&k) && self.hot.lock().get(&k).is_none()
                })
                .collect();
            for b in &want {
                inflight.insert((key.to_owned(), *b));
            }
            want
        };
        if want.is_empty() {
            return;
        }
        let (me, owned) = (self.clone(), key.to_owned());
        let fetch = move || {
            let key = owned;
            let ranges: Vec<Range<u64>> = want
                .iter()
                .map(|b| b * BLOCK..((b + 1) * BLOCK).min(obj_len))
                .collect();
            me.requests.fetch_add(1, Ordering::Relaxed);
            if let Ok(got) = me.bucket.get_ranges(&key, &ranges) {
                for (b, bytes) in want.iter().zip(got) {
                    me.cache.put(&key, *b, &bytes);
                    let w = bytes.len() as u64;
                    me.hot
                        .lock()
                        .insert((key.clone(), *b), Arc::new(bytes.to_vec()), w);
                }
            }
            let mut inflight = me.inflight.lock();
            for b in &want {
                inflight.remove(&(key.clone(), *b));
            }
            me.landed.notify_all();
        };
        if std::thread::Builder::new()
            .name("walfs-readahead".into())
            .spawn(fetch)
            .is_err()
        {
            // No thread: readers fetch what they need themselves.
            let mut inflight = self.inflight.lock();
            inflight.retain(|(k, b)| !(k == key && (first..last).contains(b)));
            self.landed.notify_all();
        }
    }

    /// Bytes `off..off + len` of segment `g` of `stream` (clipped to its
    /// length). An object gone from the bucket (the writer merged it into
    /// a larger one after this manifest was read) sends the read to the
    /// manifest again, which names what holds those bytes now: a reader
    /// never fails because the writer compacted (bounded: three tries).
    fn read(&self, stream: &str, g: &SegmentManifest, off: u64, len: u64) -> Result<Vec<u8>> {
        let mut g = std::borrow::Cow::Borrowed(g);
        let mut tries = 0;
        loop {
            match self.read_once(&g, off, len) {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    tries += 1;
                    self.refresh();
                    match self.segment(stream, g.start_id) {
                        Some(n) if tries <= 3 && n.len >= (off + len).min(g.len) => {
                            log::debug!("{}: {e} is gone; reading it from the manifest's newer objects", self.url);
                            g = std::borrow::Cow::Owned(n);
                        }
                        _ => {
                            return Err(eio(format!(
                                "{}: stream {stream} segment {}: {e} is gone and the manifest names nothing in its place",
                                self.url, g.start_id
                            )))
                        }
                    }
                }
                r => return r,
            }
        }
    }

    fn read_once(&self, g: &SegmentManifest, off: u64, len: u64) -> Result<Vec<u8>> {
        let end = (off + len).min(g.len);
        let mut out = Vec::with_capacity(end.saturating_sub(off) as usize);
        let mut at = off;
        while at < end {
            let i = g.objects.partition_point(|o| o.offset <= at) - 1;
            let o = &g.objects[i];
            let rel = at - o.offset;
            let b = rel / BLOCK;
            let block = self.block(&o.key, o.len, b)?;
            let from = (rel - b * BLOCK) as usize;
            let take = ((end - at) as usize).min(block.len().saturating_sub(from));
            if take == 0 {
                // A block shorter than its place (a cache file cut short):
                // never wait for bytes that will not come.
                return Err(eio(format!(
                    "{}: object {} block {b}: {} bytes where {} were expected",
                    self.url,
                    o.key,
                    block.len(),
                    ((b + 1) * BLOCK).min(o.len) - b * BLOCK
                )));
            }
            out.extend_from_slice(&block[from..from + take]);
            at += take as u64;
        }
        Ok(out)
    }

    fn header(&self, stream: &str, g: &SegmentManifest, off: u64) -> Result<FrameHeader> {
        let b = self.read(stream, g, off, HEADER_SIZE as u64)?;
        let h = FrameHeader::decode(&b).map_err(|e| {
            eio(format!(
                "{}: stream {stream} segment {} at byte {off}: {e}",
                self.url, g.start_id
            ))
        })?;
        if off + h.frame_len() > g.len {
            return Err(eio(format!(
                "{}: stream {stream} segment {} at byte {off}: a frame runs past the segment's end",
                self.url, g.start_id
            )));
        }
        Ok(h)
    }

    /// The decoded frame at `off`, crc-checked.
    fn frame(&self, stream: &str, g: &SegmentManifest, f: Found) -> Result<Arc<DecodedFrame>> {
        let k = (stream.to_owned(), g.start_id, f.off);
        if let Some(d) = self.frames.lock().get(&k) {
            return Ok(d);
        }
        let p = self.read(stream, g, f.off + HEADER_SIZE as u64, f.h.disk_size as u64)?;
        let d = Arc::new(decode_batch(&f.h, &p).map_err(|e| {
            eio(format!(
                "{}: stream {stream} segment {} at byte {}: {e}",
                self.url, g.start_id, f.off
            ))
        })?);
        let w = d.weight();
        self.frames.lock().insert(k, d.clone(), w);
        Ok(d)
    }

    /// The first whole, crc-valid frame at or after `from` starting at id
    /// `min_start` or later, below `limit`.
    fn resync(
        &self,
        stream: &str,
        g: &SegmentManifest,
        from: u64,
        limit: u64,
        min_start: u64,
    ) -> Result<Option<Found>> {
        let magic = MAGIC.to_le_bytes();
        let mut at = from;
        while at + HEADER_SIZE as u64 <= limit {
            let n = (limit - at).min(BLOCK);
            let buf = self.read(stream, g, at, n)?;
            let mut i = 0;
            while let Some(p) = buf[i..].windows(4).position(|w| w == magic) {
                let cand = at + (i + p) as u64;
                if let Ok(hb) = self.read(stream, g, cand, HEADER_SIZE as u64) {
                    if let Ok(h) = FrameHeader::decode(&hb) {
                        if h.start_id >= min_start && cand + h.frame_len() <= g.len {
                            let payload = self.read(
                                stream,
                                g,
                                cand + HEADER_SIZE as u64,
                                h.disk_size as u64,
                            )?;
                            if h.expected_crc(&payload) == h.crc {
                                return Ok(Some(Found { off: cand, h }));
                            }
                        }
                    }
                }
                i += p + 1;
            }
            at += (n).saturating_sub(3).max(1);
        }
        Ok(None)
    }

    /// The frame holding `id` in segment `g`.
    fn locate(&self, stream: &str, g: &SegmentManifest, id: u64) -> Result<Found> {
        let key = (stream.to_owned(), g.start_id);
        let (mut lo, mut hi) = {
            let mut l = self.learned.lock();
            let l = l.entry(key.clone()).or_default();
            if let Some((_, f)) = l.by_id.range(..=id).next_back() {
                if f.h.contains(id) {
                    return Ok(*f);
                }
            }
            let lo = l.by_id.range(..=id).next_back().map(|(_, f)| *f);
            let hi = l.by_id.range(id + 1..).next().map_or(g.len, |(_, f)| f.off);
            (lo, hi)
        };
        let learn = |f: Found| {
            self.learned
                .lock()
                .entry(key.clone())
                .or_default()
                .by_id
                .insert(f.h.start_id, f);
        };
        let first = match lo {
            Some(f) => f,
            None => {
                let h = self.header(stream, g, 0)?;
                let f = Found { off: 0, h };
                learn(f);
                f
            }
        };
        lo = Some(first);
        loop {
            let cur = lo.expect("set");
            if cur.h.contains(id) {
                return Ok(cur);
            }
            let next = cur.off + cur.h.frame_len();
            if hi <= next + 2 * BLOCK {
                // Close: walk frame by frame.
                let mut at = next;
                while at < g.len {
                    let h = self.header(stream, g, at)?;
                    let f = Found { off: at, h };
                    learn(f);
                    if h.contains(id) {
                        return Ok(f);
                    }
                    at += h.frame_len();
                }
                return Err(eio(format!(
                    "{}: stream {stream} segment {}: no frame holds id {id}",
                    self.url, g.start_id
                )));
            }
            let mid = next + (hi - next) / 2;
            match self.resync(stream, g, mid, hi, cur.h.end_id())? {
                Some(f) if f.h.start_id <= id => {
                    learn(f);
                    lo = Some(f);
                }
                Some(f) => {
                    learn(f);
                    hi = mid;
                }
                None => hi = mid,
            }
        }
    }

    fn entry(&self, stream: &str, id: u64) -> Result<Option<Arc<DecodedFrame>>> {
        let Some(g) = self.segment_for(stream, id) else {
            return Ok(None);
        };
        let f = self.locate(stream, &g, id)?;
        self.frame(stream, &g, f).map(Some)
    }

    /// Entry bytes of segment `g` from its entry byte `from`, up to `max`.
    /// Frames inside one cached block are parsed in place; a miss reads
    /// ahead 8 blocks in one request.
    fn payload(
        self: &Arc<Self>,
        stream: &str,
        g: &SegmentManifest,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let key = (stream.to_owned(), g.start_id);
        let (mut pos, mut off) = {
            let mut l = self.learned.lock();
            let l = l.entry(key.clone()).or_default();
            l.by_payload
                .range(..=from)
                .next_back()
                .map_or((0, 0), |(p, o)| (*p, *o))
        };
        let want_end = out.len() + max;
        let mut last_mark = pos;
        // Copies the part of a frame's entries (the first at entry byte
        // `pos`) that lies at `from` or later, up to `want_end`.
        let emit = |entries: &mut dyn Iterator<Item = &[u8]>, pos: u64, out: &mut Vec<u8>| {
            let mut at = pos;
            for e in entries {
                let (s, t) = (at, at + e.len() as u64);
                if t > from && out.len() < want_end {
                    let a = (from.max(s) - s) as usize;
                    let take = (e.len() - a).min(want_end - out.len());
                    out.extend_from_slice(&e[a..a + take]);
                }
                at = t;
            }
        };
        while off < g.len && out.len() < want_end {
            let i = g.objects.partition_point(|o| o.offset <= off) - 1;
            let o = &g.objects[i];
            let rel = off - o.offset;
            let b = rel / BLOCK;
            let block = self.block(&o.key, o.len, b)?;
            // Keep 8 to 16 blocks ahead of the reader in flight.
            if b % 8 == 0 {
                self.prefetch(&o.key, o.len, b + 1, 16);
            }
            let mut p = (rel - b * BLOCK) as usize;
            let mut progressed = false;
            while p + HEADER_SIZE <= block.len() && out.len() < want_end && off < g.len {
                let Ok(h) = FrameHeader::decode(&block[p..p + HEADER_SIZE]) else {
                    break;
                };
                let fl = h.frame_len() as usize;
                if p + fl > block.len() || off + fl as u64 > g.len {
                    break;
                }
                let plen = h.payload_len();
                if pos + plen > from {
                    let payload = &block[p + HEADER_SIZE..p + fl];
                    let bad = |e: String| {
                        eio(format!(
                            "{}: stream {stream} segment {} at byte {off}: {e}",
                            self.url, g.start_id
                        ))
                    };
                    if h.frame_type == FrameType::Raw {
                        // In place: entries copied once, straight to `out`.
                        let spans = raw_spans(&h, payload).map_err(bad)?;
                        let mut entries = spans
                            .iter()
                            .map(|r| &payload[r.start as usize..r.end as usize]);
                        emit(&mut entries, pos, out);
                    } else {
                        let d = decode_batch(&h, payload).map_err(bad)?;
                        emit(&mut d.entries(), pos, out);
                    }
                }
                pos += plen;
                off += fl as u64;
                p += fl;
                progressed = true;
                if pos - last_mark >= 64 << 10 {
                    last_mark = pos;
                    self.learned
                        .lock()
                        .entry(key.clone())
                        .or_default()
                        .by_payload
                        .insert(pos, off);
                }
            }
            if !progressed {
                // A frame across blocks (or damage, which header() names).
                let h = self.header(stream, g, off)?;
                let plen = h.payload_len();
                if pos + plen > from {
                    let d = self.frame(stream, g, Found { off, h })?;
                    emit(&mut d.entries(), pos, out);
                }
                pos += plen;
                off += h.frame_len();
            }
        }
        Ok(())
    }
}

impl LogSource for BucketLog {
    fn streams(&self) -> Vec<String> {
        self.inner
            .state
            .read()
            .manifest
            .streams
            .keys()
            .cloned()
            .collect()
    }
    fn has_stream(&self, stream: &str) -> bool {
        self.inner
            .state
            .read()
            .manifest
            .streams
            .contains_key(stream)
    }
    fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        let st = self.inner.state.read();
        let s = st.manifest.streams.get(stream)?;
        Some(StreamInfo {
            name: stream.to_owned(),
            first_id: s.segments.first().map_or(s.next_id, |g| g.start_id),
            next_id: s.next_id,
            durable_id: s.next_id,
            segments: s.segments.len(),
            bytes: s.segments.iter().map(|g| g.len).sum(),
            active_segment: s.segments.last().map_or(0, |g| g.start_id),
            damaged: None,
            retention: None,
            first_time: None,
            replication: Some(ReplicaInfo {
                replicated_id: s.next_id,
                state: match &st.failure {
                    Some(f) => format!("unreachable ({f})"),
                    None => format!(
                        "following (epoch {}, manifest read {} ms ago)",
                        st.manifest.epoch,
                        st.fetched.elapsed().as_millis()
                    ),
                },
                // How stale this view may be beyond the writer's own lag.
                lag_ms: st.fetched.elapsed().as_millis() as u64,
                url: self.inner.url.clone(),
                role: "follower".into(),
                lease_age_ms: None,
            }),
        })
    }
    fn first_id(&self, stream: &str) -> u64 {
        let st = self.inner.state.read();
        st.manifest
            .streams
            .get(stream)
            .map_or(0, |s| s.segments.first().map_or(s.next_id, |g| g.start_id))
    }
    fn next_id(&self, stream: &str) -> u64 {
        let st = self.inner.state.read();
        st.manifest.streams.get(stream).map_or(0, |s| s.next_id)
    }
    fn modes(&self) -> Option<(SyncMode, CompressionType)> {
        None
    }
    fn entry_len(&self, stream: &str, id: u64) -> Result<Option<u64>> {
        Ok(self
            .inner
            .entry(stream, id)?
            .and_then(|d| d.entry(id).map(|e| e.len() as u64)))
    }
    fn read_entry(
        &self,
        stream: &str,
        id: u64,
        offset: u64,
        size: usize,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.entry(stream, id)?.and_then(|d| {
            d.entry(id).map(|e| {
                let a = (offset as usize).min(e.len());
                let b = a.saturating_add(size).min(e.len());
                e[a..b].to_vec()
            })
        }))
    }
    fn segments(&self, stream: &str) -> Vec<SegmentInfo> {
        let st = self.inner.state.read();
        st.manifest
            .streams
            .get(stream)
            .map(|s| {
                s.segments
                    .iter()
                    .map(|g| SegmentInfo {
                        start_id: g.start_id,
                        end_id: g.end_id,
                        path: PathBuf::from(crate::format::segment_name(g.start_id)),
                        len: g.len,
                        sealed: g.sealed,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn open_segment(&self, stream: &str, segment: &SegmentInfo) -> Result<Box<dyn SegmentBytes>> {
        let g = self
            .inner
            .segment(stream, segment.start_id)
            .ok_or_else(|| Error::NoSuchStream(stream.to_owned()))?;
        Ok(Box::new(Remote {
            inner: self.inner.clone(),
            stream: stream.to_owned(),
            g,
        }))
    }
    fn segment_payloads(&self, stream: &str) -> Result<Vec<(u64, u64)>> {
        let st = self.inner.state.read();
        Ok(st
            .manifest
            .streams
            .get(stream)
            .map(|s| s.segments.iter().map(|g| (g.start_id, g.payload)).collect())
            .unwrap_or_default())
    }
    fn read_payload(
        &self,
        stream: &str,
        segment: u64,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(g) = self.inner.segment(stream, segment) else {
            return Ok(());
        };
        self.inner.payload(stream, &g, from, max, out)
    }
    fn wait_any(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.changed_lock.lock();
        loop {
            let now = self.inner.state.read().changes;
            if now != seen {
                return now;
            }
            if self.inner.changed.wait_until(&mut g, deadline).timed_out() {
                return self.inner.state.read().changes;
            }
        }
    }
    fn local_root(&self) -> Option<&Path> {
        None
    }
    fn append_batch(&self, _: &str, _: &[&[u8]]) -> Result<Range<u64>> {
        Err(Error::ReadOnly)
    }
    fn sync(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn create_stream(&self, _: &str) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn delete_stream(&self, _: &str) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn truncate(&self, _: &str, _: u64) -> Result<usize> {
        Err(Error::ReadOnly)
    }
}

/// A segment's bytes in the bucket, for `segments/`.
struct Remote {
    inner: Arc<Inner>,
    stream: String,
    g: SegmentManifest,
}

impl SegmentBytes for Remote {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let b = self
            .inner
            .read(&self.stream, &self.g, offset, buf.len() as u64)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EIO))?;
        buf[..b.len()].copy_from_slice(&b);
        Ok(b.len())
    }
}
