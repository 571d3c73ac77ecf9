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

    /// The first id of `stream` not shipped before `t`, by the marks of
    /// the manifest last read (see [`crate::replica::times::id_at_time`]).
    pub fn id_at_time(&self, stream: &str, t: std::time::SystemTime) -> Result<u64> {
        let sm = self
            .inner
            .state
            .read()
            .manifest
            .streams
            .get(stream)
            .cloned()
            .ok_or_else(|| Error::NoSuchStream(stream.to_owned()))?;
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        super::times::id_at_time(&self.inner.bucket, stream, &sm, super::times::unix_ms(t))
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

impl Drop for BucketLog {
    fn drop(&mut self) {
        if let Some((h, stop)) = self.poller.take() {
            stop.store(true, Ordering::Release);
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

mod checkpoints;
mod read;
mod source;

pub use checkpoints::BucketCheckpoints;
