//! The handle that wires streams, storage and caches together. No byte
//! math lives here. Its read side (entries by id, iteration, ranges, the
//! layout of `log`, waiting) is in `read.rs`.

mod flusher;
mod read;
mod standby;

use crate::cache::{BlockCache, Lru};
use crate::error::{Error, Result};
use crate::format::{self, encode_frame, MAX_BATCH_BYTES};
use crate::options::{CompressionType, SyncMode, WalOptions};
use crate::storage::{DirLock, Storage};
use crate::stream::{Ctx, Stream, StreamInfo};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use flusher::Flusher;

pub(crate) struct Core {
    /// Shared with iterators, which outlive no handle but need no `Wal`.
    pub ctx: Arc<Ctx>,
    streams: RwLock<HashMap<String, Arc<Stream>>>,
    /// Serializes stream creation and deletion.
    lifecycle: Mutex<()>,
}

type StandbyInfo = Box<dyn Fn(u64) -> crate::shipping::ReplicaInfo + Send + Sync>;

pub(crate) struct Shared {
    core: Arc<Core>,
    flusher: Option<Flusher>,
    /// Whatever ships the log (the replica layer), once attached.
    shipping: std::sync::OnceLock<Box<dyn crate::shipping::Shipping>>,
    /// A standby's log: appends refused until promoted.
    standby: AtomicBool,
    /// A standby's replication facts for `stat`, given the ids it holds.
    standby_info: std::sync::OnceLock<StandbyInfo>,
    /// Per stream, where retention was last held (logged once).
    retention_held: Mutex<HashMap<String, u64>>,
    _lock: Option<DirLock>,
}

impl std::ops::Deref for Shared {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Core {
    /// Every open stream.
    pub(crate) fn all_streams(&self) -> Vec<Arc<Stream>> {
        self.streams.read().values().cloned().collect()
    }

    /// The stream named `name`, if open.
    pub(crate) fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().get(name).cloned()
    }
}

/// A write-ahead log: a directory of streams. Cheap to clone; all methods
/// take `&self` and are safe to call from many threads.
#[derive(Clone)]
pub struct Wal {
    pub(crate) inner: Arc<Shared>,
}

impl Wal {
    /// The engine alone: opens (recovering every stream) or creates the
    /// log at `options.root_path` on `storage`; nothing ships it until a
    /// [`crate::shipping::Shipping`] is attached ([`Wal::new`], in
    /// `open.rs`, does both).
    pub(crate) fn open_engine(options: WalOptions, storage: Arc<dyn Storage>) -> Result<Wal> {
        if options.max_segment_size == 0 || options.max_entries_per_segment == 0 {
            return Err(Error::Config(
                "max_segment_size and max_entries_per_segment must be positive".into(),
            ));
        }
        let root = options.root_path.clone();
        let lock = if options.read_only {
            if !storage.exists(&root) {
                return Err(Error::Io(std::io::Error::from_raw_os_error(libc::ENOENT)));
            }
            None
        } else {
            let fresh = !storage.exists(&root);
            storage.create_dir(&root)?;
            if let Some(mode) = storage.mode(&root).filter(|m| m & 0o077 != 0) {
                log::warn!(
                    "data directory {} is open to other users (mode {mode:o}): they can read every entry on disk whatever the mount allows; `chmod 700 {0}` keeps it private",
                    root.display()
                );
            }
            if fresh {
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    storage.sync_dir(parent)?;
                }
            }
            // A lock held by this very process may be a handle just
            // dropped whose descriptor a child forked meanwhile still
            // shares until it execs: wait for that (briefly) before saying
            // the directory is in use.
            let patience = std::time::Instant::now() + Duration::from_secs(2);
            loop {
                match storage.lock_dir(&root)? {
                    Ok(l) => break Some(l),
                    Err(Some(pid))
                        if pid == std::process::id() && std::time::Instant::now() < patience =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(holder) => return Err(Error::Locked { path: root, holder }),
                }
            }
        };
        let ctx = Ctx {
            blocks: options.block_cache_size.map(BlockCache::new),
            readers: Mutex::new(Lru::new(options.max_open_read_segments.max(1) as u64)),
            writers: Mutex::new(Lru::new(options.max_open_segments.max(1) as u64)),
            epoch: Arc::default(),
            last_big: Mutex::new(None),
            checked: Mutex::default(),
            flusher: std::sync::OnceLock::new(),
            storage,
            opts: options,
        };
        let mut streams = HashMap::new();
        for e in ctx.storage.read_dir(&root)? {
            if let (Some(name), true) = (&e.name, e.is_symlink) {
                if format::validate_stream_name(name) {
                    log::warn!(
                        "{} is a symbolic link: not opened as a stream (walfs never follows links in its data directory)",
                        root.join(name).display()
                    );
                }
            }
            let (Some(name), true) = (e.name, e.is_dir) else {
                continue;
            };
            if name.ends_with(format::DELETE_MARKER_SUFFIX) {
                // A delete_stream interrupted by a crash: finish it.
                if !ctx.opts.read_only {
                    log::info!("finishing the deletion of {name}");
                    ctx.storage.remove_dir_all(&root.join(&name))?;
                }
                continue;
            }
            if !format::validate_stream_name(&name) {
                log::debug!("ignoring {name:?}: not a stream name");
                continue;
            }
            let s = Stream::open(&ctx, &name, root.join(&name), false)?;
            streams.insert(name, s);
        }
        let core = Arc::new(Core {
            ctx: Arc::new(ctx),
            streams: RwLock::new(streams),
            lifecycle: Mutex::new(()),
        });
        let standby = core.ctx.opts.standby && !core.ctx.opts.read_only;
        let flusher = (core.ctx.opts.sync_mode == SyncMode::Async && !core.ctx.opts.read_only)
            .then(|| Flusher::spawn(core.clone()));
        Ok(Wal {
            inner: Arc::new(Shared {
                core,
                flusher,
                retention_held: Mutex::default(),
                shipping: std::sync::OnceLock::new(),
                standby: AtomicBool::new(standby),
                standby_info: std::sync::OnceLock::new(),
                _lock: lock,
            }),
        })
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.inner.ctx.opts
    }

    /// One past the last id of `stream` the bucket holds (None without
    /// replication).
    pub(crate) fn replicated_id(&self, stream: &str) -> Option<u64> {
        self.inner
            .shipping
            .get()
            .map(|r| r.info(stream, self.durable_next(stream)).replicated_id)
    }

    /// Records that retention on `stream` is held at `at`: true if that is
    /// new (worth a line in the log).
    pub(crate) fn note_held(&self, stream: &str, at: u64) -> bool {
        self.inner
            .retention_held
            .lock()
            .insert(stream.to_owned(), at)
            != Some(at)
    }

    fn dir_of(&self, stream: &str) -> Result<PathBuf> {
        if !format::validate_stream_name(stream) {
            return Err(Error::InvalidStreamName(stream.to_owned()));
        }
        Ok(self.inner.ctx.opts.root_path.join(stream))
    }

    pub(crate) fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.inner.streams.read().get(name).cloned()
    }

    fn stream_or_create(&self, name: &str) -> Result<Arc<Stream>> {
        if let Some(s) = self.stream(name) {
            return Ok(s);
        }
        let dir = self.dir_of(name)?;
        let _g = self.inner.lifecycle.lock();
        if let Some(s) = self.stream(name) {
            return Ok(s);
        }
        let s = Stream::open(&self.inner.ctx, name, dir, true)?;
        self.inner
            .streams
            .write()
            .insert(name.to_owned(), s.clone());
        Ok(s)
    }

    /// Creates an empty stream; fails if it exists.
    pub fn create_stream(&self, name: &str) -> Result<()> {
        if self.stream(name).is_some() {
            return Err(Error::StreamExists(name.to_owned()));
        }
        self.stream_or_create(name).map(|_| ())
    }

    /// The names of all streams, sorted.
    pub fn streams(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.streams.read().keys().cloned().collect();
        v.sort();
        v
    }

    fn lz4_min(&self) -> Option<usize> {
        let o = &self.inner.ctx.opts;
        (o.compression == CompressionType::Lz4).then_some(o.min_compression_size)
    }

    fn write(&self, stream: &str, entries: &[&[u8]], sync: bool) -> Result<Range<u64>> {
        if self.inner.ctx.opts.read_only || self.is_standby() {
            return Err(Error::ReadOnly);
        }
        let frame = encode_frame(entries, self.lz4_min()).map_err(|size| Error::TooLarge {
            size,
            limit: MAX_BATCH_BYTES as u64,
        })?;
        if let Some(r) = self.inner.shipping.get() {
            r.check()?;
        }
        let s = self.stream_or_create(stream)?;
        let buffer = !sync && self.inner.ctx.opts.sync_mode == SyncMode::Async;
        let range = match s.append(&self.inner.ctx, frame, sync, buffer) {
            // Deleted between lookup and append: append to the new one.
            Err(Error::NoSuchStream(_)) => return self.write(stream, entries, sync),
            r => r?,
        };
        if let Some(r) = self.inner.shipping.get() {
            r.appended(stream, range.end)?;
        }
        s.note_time(&self.inner.ctx, range.start);
        Ok(range)
    }

    /// Appends one entry and returns its id. Durable on return in Strict mode.
    pub fn append(&self, stream: &str, entry: &[u8]) -> Result<u64> {
        let sync = self.inner.ctx.opts.sync_mode == SyncMode::Strict;
        self.write(stream, &[entry], sync).map(|r| r.start)
    }

    /// Appends entries atomically, as one frame, and returns their ids.
    /// Durable on return in Strict and BatchOnly modes.
    pub fn append_batch(&self, stream: &str, entries: &[&[u8]]) -> Result<Range<u64>> {
        if entries.is_empty() {
            let next = self.stream(stream).map_or(0, |s| s.commit.visible());
            return Ok(next..next);
        }
        let sync = self.inner.ctx.opts.sync_mode != SyncMode::Async;
        self.write(stream, entries, sync)
    }

    /// A buffer of entries committed together by [`TxnWriter::commit`].
    pub fn writer(&self, stream: &str) -> TxnWriter {
        TxnWriter {
            wal: self.clone(),
            stream: stream.to_owned(),
            buffer: Vec::new(),
        }
    }

    /// Makes every entry appended to `stream` so far durable.
    pub fn sync(&self, stream: &str) -> Result<()> {
        match self.stream(stream) {
            Some(s) => s.sync(&self.inner.ctx),
            None => Ok(()),
        }
    }

    /// Makes every stream durable.
    pub fn sync_all(&self) -> Result<()> {
        let all: Vec<Arc<Stream>> = self.inner.streams.read().values().cloned().collect();
        for s in all {
            if s.writer.lock().poisoned.is_none() {
                s.sync(&self.inner.ctx)?;
            }
        }
        Ok(())
    }

    /// Frees the sealed segments that hold only ids below the segment of
    /// `safe_id` (never the active one). Returns how many were freed.
    pub fn truncate(&self, stream: &str, safe_id: u64) -> Result<usize> {
        self.check_writable()?;
        let Some(s) = self.stream(stream) else {
            return Ok(0);
        };
        let archive = self.archive_dir(stream)?;
        s.truncate(&self.inner.ctx, safe_id, archive.as_deref())
    }

    fn archive_dir(&self, stream: &str) -> Result<Option<PathBuf>> {
        self.dir_of(stream)?;
        Ok(self
            .inner
            .ctx
            .opts
            .archive_path
            .as_ref()
            .map(|p| p.join(stream)))
    }

    /// Moves the segments `truncate` archived back into the stream.
    pub fn restore_archived(&self, stream: &str) -> Result<usize> {
        self.check_writable()?;
        let Some(archive) = self.archive_dir(stream)? else {
            return Ok(0);
        };
        let s = self.stream_or_create(stream)?;
        s.restore(&self.inner.ctx, &archive)
    }

    /// Removes a stream and all its entries, crash-safely: the directory is
    /// renamed to `<name>#deleted` (durably) before it is removed, and an
    /// interrupted removal is finished at the next open.
    pub fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_writable()?;
        let dir = self.dir_of(stream)?;
        let _g = self.inner.lifecycle.lock();
        let Some(s) = self.inner.streams.write().remove(stream) else {
            return Ok(());
        };
        s.mark_deleted();
        let ctx = &self.inner.ctx;
        if let Some(b) = &ctx.blocks {
            b.forget(s.uid, u64::MAX);
        }
        ctx.readers.lock().retain(|(uid, _)| *uid != s.uid);
        ctx.writers.lock().remove(&s.uid);
        let mut marker = dir.as_os_str().to_owned();
        marker.push(format::DELETE_MARKER_SUFFIX);
        let marker = PathBuf::from(marker);
        if ctx.storage.exists(&marker) {
            ctx.storage.remove_dir_all(&marker)?;
        }
        ctx.storage.rename(&dir, &marker)?;
        ctx.storage.sync_dir(&ctx.opts.root_path)?;
        ctx.storage.remove_dir_all(&marker)?;
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.ctx.opts.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// A summary of `stream`. Like every read, it sees entries still
    /// buffered in Async mode (they are handed to the kernel first), so it
    /// agrees with `get`, `iter` and the mount at every moment.
    pub fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        self.stream(stream).map(|s| {
            s.flush_for_read(&self.inner.ctx);
            let mut info = s.info(&self.inner.ctx);
            if let Some(r) = self.inner.shipping.get() {
                info.replication = Some(r.info(stream, info.durable_id));
            } else if let Some(f) = self.inner.standby_info.get() {
                info.replication = Some(f(info.durable_id));
            }
            info.retention = self.retention_text();
            info
        })
    }

    /// Whether `stream` exists.
    pub fn has_stream(&self, stream: &str) -> bool {
        self.stream(stream).is_some()
    }

    /// The first retained id of `stream` (0 if it does not exist).
    pub fn first_id(&self, stream: &str) -> u64 {
        self.stream(stream).map_or(0, |s| s.first_id())
    }

    /// One past the last visible id of `stream` (0 if it does not exist).
    pub fn next_id(&self, stream: &str) -> u64 {
        self.stream(stream).map_or(0, |s| {
            s.flush_for_read(&self.inner.ctx);
            s.commit.visible()
        })
    }

    /// One past the last id already visible, without handing Async-mode
    /// buffers to the kernel first: for watching what readers may have
    /// seen (the mount's cache invalidation), not for reading.
    pub fn published_id(&self, stream: &str) -> u64 {
        self.stream(stream).map_or(0, |s| s.commit.visible())
    }

    /// When `stream`'s entries last changed: the last publication of new
    /// entries, or before any since the open, its active segment's mtime.
    pub fn modified(&self, stream: &str) -> Option<std::time::SystemTime> {
        self.stream(stream).map(|s| s.commit.modified())
    }

    /// The start id of the segment being appended to.
    pub fn current_segment_start_id(&self, stream: &str) -> Option<u64> {
        self.stream(stream).map(|s| s.writer.lock().active.start_id)
    }

    /// The segments of `stream`: start id, file path, readable bytes, sealed.
    pub fn segments(&self, stream: &str) -> Vec<SegmentInfo> {
        self.stream(stream)
            .map(|s| {
                s.flush_for_read(&self.inner.ctx);
                s.segments()
                    .iter()
                    .filter(|seg| !seg.missing)
                    .map(|seg| {
                        let e = seg.extent();
                        SegmentInfo {
                            start_id: seg.start_id,
                            end_id: e.end_id,
                            path: seg.path.clone(),
                            len: e.len,
                            sealed: e.sealed,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replication counters since open: upload rounds that wrote a
    /// manifest, PUT requests, entries shipped (None without replication).
    pub fn replication_counters(&self) -> Option<(u64, u64, u64)> {
        self.inner.shipping.get().map(|r| r.counters())
    }

    /// One past the last id of `stream` known durable (0 if it does not
    /// exist): what a checkpoint may name.
    pub fn durable_next(&self, stream: &str) -> u64 {
        self.stream(stream)
            .map_or(0, |s| s.commit.state.lock().durable)
    }

    /// The storage the log lives on.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.ctx.storage
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.ctx.opts.root_path
    }

    /// Syncs everything and releases the directory lock (when the last
    /// clone is dropped). Dropping does the same, logging failures instead.
    pub fn close(self) -> Result<()> {
        self.sync_all()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            f.stop();
        }
        if self.ctx.opts.read_only {
            return;
        }
        for s in self.streams.read().values() {
            if s.writer.lock().poisoned.is_some() {
                continue;
            }
            if let Err(e) = s.sync(&self.ctx) {
                log::error!("stream {}: sync at close failed: {e}", s.name);
            }
            // A clean close leaves walfs.synced exact on disk: any damage in
            // the segment found later is corruption, never a torn tail.
            s.commit.sync_mark();
            s.commit.close();
        }
        // Last: ship what the syncs above made durable.
        if let Some(r) = self.shipping.take() {
            r.stop();
        }
    }
}

/// A segment as [`Wal::segments`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The id of its first entry.
    pub start_id: u64,
    /// One past the id of its last entry.
    pub end_id: u64,
    /// Its path.
    pub path: PathBuf,
    /// Bytes of whole frames.
    pub len: u64,
    /// No more frames will be appended.
    pub sealed: bool,
}

/// Entries gathered in memory and appended as one atomic batch.
pub struct TxnWriter {
    wal: Wal,
    stream: String,
    buffer: Vec<Vec<u8>>,
}

impl TxnWriter {
    /// Adds an entry to the batch.
    pub fn add(&mut self, entry: impl Into<Vec<u8>>) {
        self.buffer.push(entry.into());
    }

    /// Entries in the batch.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Appends the buffered entries as one frame and returns their ids.
    pub fn commit(self) -> Result<Range<u64>> {
        let refs: Vec<&[u8]> = self.buffer.iter().map(Vec::as_slice).collect();
        self.wal.append_batch(&self.stream, &refs)
    }
}
