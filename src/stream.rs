//! One stream: its segments, its writer and its commit state.
//!
//! Write path: `append` encodes the frame outside any lock, then under the
//! writer lock rotates if needed, stamps the id, and hands the frame to the
//! kernel with one pwrite; durability is waited for afterwards, without the
//! lock (see `commit`). Read path: id → segment (ordered map) → frame
//! (sparse index) → decoded batch (block cache).

use crate::cache::{BlockCache, Lru};
use crate::commit::{Commit, SyncFailure};
use crate::error::{Error, Location, Result};
use crate::format::{self, DecodedFrame, EncodedFrame};
use crate::index::SparseIndex;
use crate::options::{ReadStrategy, SyncMode, WalOptions};
use crate::recovery;
use crate::segment::{Extent, ReadError, ReadHandle, Segment, Window};
use crate::storage::{Storage, StorageFile};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Bytes read at once when looking up one entry: the sparse index's
/// stride plus room for the frame itself.
const LOOKUP_READ: usize = 8192;

/// What every stream shares: storage, options and the bounded caches.
pub struct Ctx {
    pub storage: Arc<dyn Storage>,
    pub opts: WalOptions,
    pub blocks: Option<BlockCache>,
    /// Open read descriptors, across streams.
    pub readers: Mutex<Lru<(u64, u64), Weak<Segment>>>,
    /// Open write descriptors, across streams.
    pub writers: Mutex<Lru<u64, Weak<Stream>>>,
    /// Bumped on every publication in any stream.
    pub epoch: Arc<crate::commit::Epoch>,
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

pub struct Writer {
    pub active: Arc<Segment>,
    file: Option<Arc<dyn StorageFile>>,
    /// Bytes of the active segment written.
    pub len: u64,
    pub next_id: u64,
    /// Entry bytes of the active segment, buffered or not.
    payload: u64,
    /// Start ids in segments.idx, in order (mirrors the file).
    idx: Vec<u64>,
    pub poisoned: Option<(i32, String)>,
    pub deleted: bool,
    /// Async mode: frames appended but not yet handed to the kernel; they
    /// start at byte `len - pending.len()` of the active segment.
    pending: Vec<u8>,
}

pub struct Stream {
    pub name: String,
    pub dir: PathBuf,
    /// Identifies this incarnation of the stream in the caches.
    pub uid: u64,
    /// Structural damage found at open (a missing segment): the stream
    /// serves what it has and refuses writes. Fixed for the stream's life.
    pub damaged: Option<String>,
    pub writer: Mutex<Writer>,
    segs: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub commit: Commit,
    /// One past the last id appended, buffered or not: a reader asking for
    /// an id below it but not yet visible flushes the buffer first.
    appended: AtomicU64,
}

/// A summary of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    /// The first retained id.
    pub first_id: u64,
    /// One past the last id readers can see.
    pub next_id: u64,
    /// One past the last id known to be on disk.
    pub durable_id: u64,
    pub segments: usize,
    pub bytes: u64,
    pub active_segment: u64,
    /// Structural damage that makes the stream refuse writes.
    pub damaged: Option<String>,
}

impl StreamInfo {
    /// The `key: value` text of `walfs stat` and the mount's `stat` file;
    /// `modes` adds the sync mode and compression of the process writing.
    pub fn to_text(&self, modes: Option<(SyncMode, crate::options::CompressionType)>) -> String {
        let mut t = format!(
            "stream: {}\nfirst_id: {}\nnext_id: {}\ndurable_id: {}\nentries: {}\nsegments: {}\nbytes: {}\nactive_segment: {}\n",
            self.name,
            self.first_id,
            self.next_id,
            self.durable_id,
            self.next_id - self.first_id.min(self.next_id),
            self.segments,
            self.bytes,
            format::segment_name(self.active_segment),
        );
        if let Some(d) = &self.damaged {
            t.push_str(&format!("damaged: {d}\n"));
        }
        if let Some((sync, compression)) = modes {
            let sync = match sync {
                SyncMode::Strict => "strict",
                SyncMode::BatchOnly => "batch",
                SyncMode::Async => "async",
            };
            let compression = match compression {
                crate::options::CompressionType::None => "none",
                crate::options::CompressionType::Lz4 => "lz4",
            };
            t.push_str(&format!("sync_mode: {sync}\ncompression: {compression}\n"));
        }
        t
    }
}

impl Stream {
    /// Opens (recovering) or creates the stream in `dir`.
    pub fn open(ctx: &Ctx, name: &str, dir: PathBuf, create: bool) -> Result<Arc<Stream>> {
        let st = &*ctx.storage;
        if create {
            if ctx.opts.read_only {
                return Err(Error::ReadOnly);
            }
            st.create_dir(&dir)?;
        }
        let layout = recovery::plan_layout(st, &dir, name)?;
        let damaged = layout.damage();
        // A damaged stream is opened as if read-only: nothing of it is
        // rewritten or cut until the damage is dealt with.
        let ro = ctx.opts.read_only || damaged.is_some();
        let active_start = *layout.segments.last().expect("layout has a segment");
        let active_path = dir.join(format::segment_name(active_start));
        if !ro {
            if layout.create_active {
                st.open(&active_path, true)?;
            }
            if layout.rewrite_idx {
                st.write_atomic(
                    &dir.join(format::SEGMENTS_IDX),
                    &format::segments_idx_encode(&layout.segments),
                )?;
            }
            if layout.rewrite_head {
                st.write_atomic(
                    &dir.join(format::HEAD_STATE),
                    &format::head_state_encode(active_start),
                )?;
            }
            if layout.create_active || layout.rewrite_idx || layout.rewrite_head {
                st.sync_dir(&dir)?;
            }
            if create {
                st.sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
            }
        }

        // The active segment is scanned with crcs; sealed ones are trusted
        // until read (verify checks them all).
        let (file, rec) = match st.open(&active_path, !ro) {
            Ok(f) => {
                let len = f.len()?;
                let mut win = Window::new(
                    Arc::new(ReadHandle::File(f.clone())),
                    len,
                    ctx.opts.read_buffer_size.max(1 << 16),
                );
                let rec = recovery::recover_active(
                    &mut win,
                    name,
                    &format::segment_name(active_start),
                    active_start,
                    ctx.opts.on_corruption,
                )?;
                if let Some(torn) = &rec.cut {
                    let what = format!(
                        "{}/{} at byte {}: torn tail ({}): {} bytes past the last whole frame, entries from id {} on were never acknowledged",
                        name,
                        format::segment_name(active_start),
                        torn.offset,
                        torn.reason,
                        len - rec.valid_len,
                        rec.end_id
                    );
                    if ro {
                        log::info!("{what}; a writable open will cut them (read-only: left as is)");
                    } else {
                        log::warn!("{what}; cutting them");
                        f.set_len(rec.valid_len)?;
                    }
                }
                if !ro {
                    // Whatever is on disk now counts as durable: make it so.
                    f.sync_data()?;
                }
                (Some(f), rec)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && ro => (
                None,
                recovery::Recovered {
                    index: SparseIndex::new(),
                    valid_len: 0,
                    end_id: active_start,
                    cut: None,
                    damage: Vec::new(),
                },
            ),
            Err(e) => return Err(e.into()),
        };

        let active_payload = rec.index.payload();
        // Entry bytes of sealed segments, as recorded when walfs sealed them.
        let hints: std::collections::HashMap<u64, (u64, u64)> = st
            .read_file(&dir.join(format::PAYLOADS))
            .map(|b| {
                format::payload_records_decode(&b)
                    .into_iter()
                    .map(|(s, l, p)| (s, (l, p)))
                    .collect()
            })
            .unwrap_or_default();
        let mut active_index = Some(rec.index);
        let mut segs = BTreeMap::new();
        for (i, &start) in layout.segments.iter().enumerate() {
            let path = dir.join(format::segment_name(start));
            let seg = if layout.missing.contains(&start) {
                Segment::lost(start, path, layout.segments[i + 1])
            } else if start == active_start {
                Segment::new(
                    start,
                    path,
                    Extent {
                        len: rec.valid_len,
                        end_id: rec.end_id,
                        sealed: false,
                        payload: Some(active_payload),
                    },
                    active_index.take(),
                )
            } else {
                let len = st.file_len(&path)?;
                let hint = hints.get(&start).filter(|h| h.0 == len).map(|h| h.1);
                Segment::sealed(start, path, len, layout.segments[i + 1], hint)
            };
            segs.insert(start, Arc::new(seg));
        }
        let active = segs[&active_start].clone();
        let stream = Arc::new(Stream {
            name: name.to_owned(),
            dir,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            damaged,
            writer: Mutex::new(Writer {
                active,
                file: None,
                len: rec.valid_len,
                next_id: rec.end_id,
                payload: active_payload,
                idx: layout.segments.clone(),
                poisoned: None,
                deleted: false,
                pending: Vec::new(),
            }),
            segs: RwLock::new(segs),
            appended: AtomicU64::new(rec.end_id),
            commit: Commit::new(
                rec.end_id,
                rec.valid_len,
                active_start,
                ctx.opts.sync_mode == SyncMode::Strict,
                ctx.epoch.clone(),
            ),
        });
        if let (Some(f), false) = (file, ro) {
            let mut w = stream.writer.lock();
            stream.adopt_write_file(ctx, &mut w, f);
        }
        Ok(stream)
    }

    fn location(&self, seg: &Segment, offset: u64) -> Location {
        Location {
            stream: self.name.clone(),
            segment: seg.name.clone(),
            offset,
        }
    }

    fn adopt_write_file(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer, f: Arc<dyn StorageFile>) {
        w.file = Some(f.clone());
        self.commit.set_file(Some(f));
        let evicted = ctx.writers.lock().insert(self.uid, Arc::downgrade(self), 1);
        for (_, other) in evicted {
            let Some(other) = other.upgrade() else {
                continue;
            };
            if Arc::ptr_eq(&other, self) {
                continue;
            }
            // Never wait for another stream's writer (it may be waiting for
            // ours); a busy one stays open past the bound for a while.
            let guard = other.writer.try_lock();
            if let Some(mut ow) = guard {
                ow.file = None;
                other.commit.set_file(None);
            }
        }
    }

    fn write_file(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> io::Result<Arc<dyn StorageFile>> {
        if let Some(f) = &w.file {
            return Ok(f.clone());
        }
        let f = ctx.storage.open(&w.active.path, true)?;
        self.adopt_write_file(ctx, w, f.clone());
        Ok(f)
    }

    fn check_writable(&self, w: &mut Writer) -> Result<()> {
        if w.deleted {
            return Err(Error::NoSuchStream(self.name.clone()));
        }
        if let Some(reason) = &self.damaged {
            return Err(Error::Damaged {
                stream: self.name.clone(),
                reason: reason.clone(),
            });
        }
        if w.poisoned.is_none() {
            w.poisoned = self.commit.failed();
        }
        match &w.poisoned {
            Some((_, cause)) => Err(Error::Poisoned {
                stream: self.name.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&self, w: &mut Writer, errno: i32, cause: String) {
        log::error!(
            "stream {}: {cause}; refusing writes until reopened",
            self.name
        );
        self.commit.poison(errno, cause.clone());
        w.poisoned = Some((errno, cause));
    }

    /// Appends one frame; with `sync`, returns once it is durable. In
    /// Async mode (`buffer`), the frame may wait in memory for a flush.
    pub fn append(
        self: &Arc<Self>,
        ctx: &Ctx,
        mut frame: EncodedFrame,
        sync: bool,
        buffer: bool,
    ) -> Result<Range<u64>> {
        let n = frame.entry_count as u64;
        let range = {
            let mut w = self.writer.lock();
            self.check_writable(&mut w)?;
            let in_segment = w.next_id - w.active.start_id;
            if w.len > 0
                && (w.len + frame.len() > ctx.opts.max_segment_size
                    || in_segment + n > ctx.opts.max_entries_per_segment)
            {
                self.rotate(ctx, &mut w)?;
            }
            let (off, start) = (w.len, w.next_id);
            frame.seal(start);
            if buffer {
                w.pending.extend_from_slice(&frame.bytes);
            } else {
                self.flush_locked(ctx, &mut w)?;
                let file = self.write_file(ctx, &mut w)?;
                if let Err(e) = file.write_all_at(&frame.bytes, off) {
                    // Undo whatever part of the frame reached the file, so it
                    // can never become durable and its id is free again after
                    // a reopen; then refuse writes until that reopen, as after
                    // a failed sync (the state of the device is unknown).
                    let undo = match file.set_len(off) {
                        Ok(()) => "undone".to_string(),
                        Err(e2) => format!("not undone: {e2}"),
                    };
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    self.poison(&mut w, errno, format!("a write failed ({e}; {undo})"));
                    return Err(e.into());
                }
            }
            w.len += frame.len();
            w.next_id += n;
            w.payload += frame.payload;
            w.active.note_frame(start, off, frame.payload);
            self.appended.store(w.next_id, Ordering::Release);
            if !buffer {
                w.active.set_written(w.len, w.next_id, w.payload);
                self.commit.wrote(w.next_id, w.len);
            } else if w.pending.len() >= ctx.opts.write_buffer_size {
                self.flush_locked(ctx, &mut w)?;
            }
            start..w.next_id
        };
        if sync {
            self.sync_to(ctx, range.end)?;
        }
        Ok(range)
    }

    /// Hands buffered frames to the kernel. Their ids were already given
    /// out, so a failure poisons the stream rather than reuse them.
    fn flush_locked(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> Result<()> {
        if w.pending.is_empty() {
            return Ok(());
        }
        let from = w.len - w.pending.len() as u64;
        let r = self
            .write_file(ctx, w)
            .and_then(|f| f.write_all_at(&w.pending, from));
        w.pending.clear();
        match r {
            Ok(()) => {
                w.active.set_written(w.len, w.next_id, w.payload);
                self.commit.wrote(w.next_id, w.len);
                Ok(())
            }
            Err(e) => {
                if let Some(f) = &w.file {
                    let _ = f.set_len(from);
                }
                self.poison(
                    w,
                    e.raw_os_error().unwrap_or(libc::EIO),
                    format!("writing buffered entries failed: {e}"),
                );
                Err(e.into())
            }
        }
    }

    /// Makes buffered entries readable (no-op when nothing is buffered).
    pub fn flush(self: &Arc<Self>, ctx: &Ctx) -> Result<()> {
        if self.appended.load(Ordering::Acquire) <= self.commit.visible() {
            return Ok(());
        }
        let mut w = self.writer.lock();
        self.flush_locked(ctx, &mut w)
    }

    /// Makes buffered entries visible before a read of the stream's extent.
    /// A failure poisons the stream (logged there); the reader then sees
    /// what is visible.
    pub fn flush_for_read(self: &Arc<Self>, ctx: &Ctx) {
        let _ = self.flush(ctx);
    }

    /// Whether `id` can be read now. Buffered (Async) entries are flushed
    /// on demand; in Strict mode an entry is readable only once durable.
    pub fn readable(self: &Arc<Self>, ctx: &Ctx, id: u64) -> Result<bool> {
        if id < self.commit.visible() {
            return Ok(true);
        }
        if id >= self.appended() {
            return Ok(false);
        }
        self.flush(ctx)?;
        Ok(id < self.commit.visible())
    }

    /// One past the last id appended, buffered or not.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Returns once ids below `target` are durable.
    pub fn sync_to(self: &Arc<Self>, ctx: &Ctx, target: u64) -> Result<()> {
        self.flush(ctx)?;
        let r = self.commit.wait_durable(target, |segment| {
            ctx.storage
                .open(&self.dir.join(format::segment_name(segment)), true)
        });
        match r {
            Ok(()) => Ok(()),
            Err(f) => {
                if f.leader {
                    self.after_sync_failure(ctx, &f);
                }
                Err(Error::Io(f.io_error()))
            }
        }
    }

    /// A sync failed: stop writes, and in Strict mode (where nothing past
    /// the durable point was acknowledged) cut what was written past it so
    /// that it cannot reappear.
    fn after_sync_failure(&self, ctx: &Ctx, f: &SyncFailure) {
        let mut w = self.writer.lock();
        self.poison(&mut w, f.errno, f.message.clone());
        if ctx.opts.sync_mode != SyncMode::Strict {
            return;
        }
        let (segment, durable_len) = {
            let st = self.commit.state.lock();
            (st.segment, st.durable_len)
        };
        if segment == w.active.start_id && w.len > durable_len {
            if let Some(file) = &w.file {
                match file.set_len(durable_len) {
                    Ok(()) => log::warn!(
                        "stream {}: dropped {} unacknowledged bytes after the failed sync",
                        self.name,
                        w.len - durable_len
                    ),
                    Err(e) => log::error!(
                        "stream {}: could not drop unacknowledged bytes: {e}",
                        self.name
                    ),
                }
            }
        }
    }

    /// Seals the active segment and starts a new one at `next_id`. Any
    /// failure poisons the stream: a half-made rotation must not be
    /// followed by more appends to the old segment.
    fn rotate(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> Result<()> {
        match self.try_rotate(ctx, w) {
            Ok(()) => Ok(()),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.poison(w, errno, format!("segment rotation failed: {e}"));
                Err(e.into())
            }
        }
    }

    /// Records a sealed segment's length and entry bytes in walfs.payloads.
    /// A hint, never synced: a lost or torn record only costs a scan later.
    fn note_sealed(&self, ctx: &Ctx, start: u64, len: u64, payload: u64) {
        let path = self.dir.join(format::PAYLOADS);
        let r = ctx.storage.open(&path, true).and_then(|f| {
            let slot =
                f.len()?.div_ceil(format::PAYLOAD_RECORD as u64) * format::PAYLOAD_RECORD as u64;
            f.write_all_at(&format::payload_record_encode(start, len, payload), slot)
        });
        if let Err(e) = r {
            log::warn!(
                "stream {}: could not record the size of a sealed segment: {e}",
                self.name
            );
        }
    }

    fn try_rotate(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> io::Result<()> {
        let st = &*ctx.storage;
        self.flush_locked(ctx, w).map_err(|e| match e {
            Error::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
        let old = self.write_file(ctx, w)?;
        old.sync_data()?;
        self.commit.all_durable();
        self.note_sealed(ctx, w.active.start_id, w.len, w.payload);
        let start = w.next_id;
        let path = self.dir.join(format::segment_name(start));
        let file = st.open(&path, true)?;
        file.set_len(0)?;
        let idx = st.open(&self.dir.join(format::SEGMENTS_IDX), true)?;
        idx.write_all_at(&start.to_le_bytes(), 8 * w.idx.len() as u64)?;
        idx.sync_data()?;
        // head.state's atomic write syncs the directory, making the new
        // segment's name durable; before that, recovery recreates a segment
        // that segments.idx names but the directory lacks.
        st.write_atomic(
            &self.dir.join(format::HEAD_STATE),
            &format::head_state_encode(start),
        )?;
        w.idx.push(start);

        let mut e = w.active.extent();
        e.sealed = true;
        w.active.set_extent(e);
        // The sealed segment's read descriptor may be replaced by a mapping.
        w.active.set_reader(None);
        let seg = Arc::new(Segment::new(
            start,
            path,
            Extent {
                len: 0,
                end_id: start,
                sealed: false,
                payload: Some(0),
            },
            Some(SparseIndex::new()),
        ));
        self.segs.write().insert(start, seg.clone());
        w.active = seg;
        w.len = 0;
        w.payload = 0;
        w.file = None;
        self.adopt_write_file(ctx, w, file.clone());
        self.commit.rotated(start, Some(file));
        Ok(())
    }

    // --- reads ---

    pub fn first_id(&self) -> u64 {
        self.segs.read().keys().next().copied().unwrap_or(0)
    }

    /// The segment that holds `id`, if it is retained.
    pub fn segment_for(&self, id: u64) -> Option<Arc<Segment>> {
        self.segs
            .read()
            .range(..=id)
            .next_back()
            .map(|(_, s)| s.clone())
    }

    /// The first retained segment starting after `id`.
    pub fn segment_after(&self, id: u64) -> Option<Arc<Segment>> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.segs
            .read()
            .range((Excluded(id), Unbounded))
            .next()
            .map(|(_, s)| s.clone())
    }

    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segs.read().values().cloned().collect()
    }

    fn is_retained(&self, seg: &Segment) -> bool {
        self.segs.read().contains_key(&seg.start_id)
    }

    /// An open read handle for `seg` (cached in the bounded LRU).
    pub fn reader(&self, ctx: &Ctx, seg: &Arc<Segment>) -> io::Result<Arc<ReadHandle>> {
        if let Some(h) = seg.cached_reader() {
            return Ok(h);
        }
        let file = ctx.storage.open(&seg.path, false)?;
        let sealed = seg.extent().sealed;
        let handle = match (sealed && ctx.opts.read_strategy == ReadStrategy::Mmap)
            .then(|| file.map())
            .flatten()
        {
            Some(m) => ReadHandle::Map(m),
            None => ReadHandle::File(file),
        };
        let handle = Arc::new(handle);
        seg.set_reader(Some(handle.clone()));
        let evicted = ctx
            .readers
            .lock()
            .insert((self.uid, seg.start_id), Arc::downgrade(seg), 1);
        for (_, s) in evicted {
            if let Some(s) = s.upgrade() {
                s.set_reader(None);
            }
        }
        Ok(handle)
    }

    /// A window over the readable bytes of `seg`, with its index built.
    pub fn window(&self, ctx: &Ctx, seg: &Arc<Segment>, chunk: usize) -> Result<Window> {
        let mut win = self.raw_window(ctx, seg, chunk)?;
        if !seg.has_index() {
            let ix = recovery::build_index(&mut win, seg.start_id)?;
            seg.set_index(ix);
        }
        Ok(win)
    }

    /// A window over the readable bytes of `seg`, without building its
    /// index (for readers that start at its first frame).
    pub fn raw_window(&self, ctx: &Ctx, seg: &Arc<Segment>, chunk: usize) -> Result<Window> {
        if seg.missing {
            return Err(Error::Damaged {
                stream: self.name.clone(),
                reason: format!(
                    "segment {} is missing: ids {}..{} are lost",
                    seg.name,
                    seg.start_id,
                    seg.extent().end_id
                ),
            });
        }
        let handle = self.reader(ctx, seg)?;
        Ok(Window::new(handle, seg.extent().len, chunk))
    }

    /// The decoded frame holding `id`, which the caller has checked is
    /// visible. None if its segment was truncated away meanwhile.
    pub fn frame_of(&self, ctx: &Ctx, id: u64) -> Result<Option<Arc<DecodedFrame>>> {
        if let Some(f) = ctx.blocks.as_ref().and_then(|b| b.get(self.uid, id)) {
            return Ok(Some(f));
        }
        let Some(seg) = self.segment_for(id) else {
            return Ok(None);
        };
        let mut win = match self.window(ctx, &seg, LOOKUP_READ) {
            Ok(w) => w,
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound && !self.is_retained(&seg) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let read = seg.locate(&mut win, id).and_then(|(off, h)| {
            win.frame(off, &h).map_err(|e| match e {
                ReadError::Bad(mut f) => {
                    f.offset = off;
                    ReadError::Bad(f)
                }
                other => other,
            })
        });
        let frame = match read {
            Ok(f) => Arc::new(f),
            Err(ReadError::Io(e)) => return Err(e.into()),
            Err(ReadError::Bad(f)) => {
                return Err(Error::Corruption {
                    location: self.location(&seg, f.offset),
                    reason: f.reason,
                })
            }
        };
        if let Some(b) = &ctx.blocks {
            b.insert(self.uid, frame.clone());
        }
        Ok(Some(frame))
    }

    /// Entry bytes held by `seg` (indexing it if needed).
    pub fn segment_payload(&self, ctx: &Ctx, seg: &Arc<Segment>) -> Result<u64> {
        if let Some(p) = seg.payload() {
            return Ok(p);
        }
        self.window(ctx, seg, 1 << 20)?;
        Ok(seg.payload().unwrap_or(0))
    }

    /// Appends to `out`, up to `max` bytes, the entry bytes of `seg` from
    /// its entry byte `from` on: the concatenation of its visible entries.
    pub fn read_payload(
        &self,
        ctx: &Ctx,
        seg: &Arc<Segment>,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let visible = self.commit.visible();
        let bad = |f: crate::segment::Fault| Error::Corruption {
            location: self.location(seg, f.offset),
            reason: f.reason,
        };
        let read_err = |e| match e {
            ReadError::Io(e) => Error::Io(e),
            ReadError::Bad(f) => bad(f),
        };
        // Reading from the segment's first byte needs no index (building
        // one would check every crc a second time).
        let (mut win, found) = if from == 0 {
            let mut win = self.raw_window(ctx, seg, 1 << 17)?;
            let found = if win.limit() == 0 {
                None
            } else {
                Some((0, win.header(0).map_err(read_err)?, 0))
            };
            (win, found)
        } else {
            let mut win = self.window(ctx, seg, 1 << 17)?;
            let found = seg.locate_payload(&mut win, from).map_err(read_err)?;
            (win, found)
        };
        let Some((mut off, mut h, before)) = found else {
            return Ok(());
        };
        let mut skip = from - before;
        let limit = win.limit();
        loop {
            if h.start_id >= visible || out.len() >= max {
                return Ok(());
            }
            let frame = win.frame(off, &h).map_err(read_err)?;
            for e in frame.entries() {
                if (skip as usize) >= e.len() {
                    skip -= e.len() as u64;
                    continue;
                }
                let part = &e[skip as usize..];
                skip = 0;
                let room = max - out.len();
                out.extend_from_slice(&part[..part.len().min(room)]);
                if out.len() >= max {
                    return Ok(());
                }
            }
            off += h.frame_len();
            if off >= limit {
                return Ok(());
            }
            h = win.header(off).map_err(read_err)?;
        }
    }

    pub fn info(&self, ctx: &Ctx) -> StreamInfo {
        let segs = self.segments();
        let bytes = segs.iter().map(|s| s.extent().len).sum();
        let _ = ctx;
        StreamInfo {
            name: self.name.clone(),
            first_id: segs.first().map_or(0, |s| s.start_id),
            next_id: self.commit.visible(),
            durable_id: self.commit.state.lock().durable,
            segments: segs.len(),
            bytes,
            active_segment: segs.last().map_or(0, |s| s.start_id),
            damaged: self.damaged.clone(),
        }
    }

    // --- maintenance ---

    /// Frees whole sealed segments below the one holding `safe_id`.
    pub fn truncate(
        self: &Arc<Self>,
        ctx: &Ctx,
        safe_id: u64,
        archive: Option<&Path>,
    ) -> Result<usize> {
        let st = &*ctx.storage;
        let mut w = self.writer.lock();
        self.check_writable(&mut w)?;
        let keep_from = self
            .segment_for(safe_id)
            .map_or_else(|| self.first_id(), |s| s.start_id)
            .min(w.active.start_id);
        let doomed: Vec<u64> = w.idx.iter().copied().filter(|&s| s < keep_from).collect();
        let strays: Vec<u64> = recovery::plan_layout(st, &self.dir, &self.name)?.strays;
        if doomed.is_empty() && strays.is_empty() {
            return Ok(0);
        }
        let keep: Vec<u64> = w.idx.iter().copied().filter(|&s| s >= keep_from).collect();
        // The index moves first: a crash after it leaves files that the
        // next open ignores and the next truncate removes.
        st.write_atomic(
            &self.dir.join(format::SEGMENTS_IDX),
            &format::segments_idx_encode(&keep),
        )?;
        w.idx = keep;
        {
            let mut segs = self.segs.write();
            for s in &doomed {
                segs.remove(s);
            }
        }
        if let Some(dir) = archive {
            st.create_dir(dir)?;
        }
        for &s in doomed.iter().chain(&strays) {
            let name = format::segment_name(s);
            let path = self.dir.join(&name);
            let r = match archive {
                Some(dir) => move_file(st, &path, &dir.join(&name)),
                None => st.remove_file(&path),
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!(
                    "stream {}: could not free {name}: {e} (it is no longer part of the stream)",
                    self.name
                ),
            }
            ctx.readers.lock().remove(&(self.uid, s));
        }
        if let Some(dir) = archive {
            st.sync_dir(dir)?;
        }
        st.sync_dir(&self.dir)?;
        if let Some(b) = &ctx.blocks {
            b.forget(self.uid, keep_from);
        }
        Ok(doomed.len())
    }

    /// Moves archived segments back and re-reads the stream's layout.
    pub fn restore(self: &Arc<Self>, ctx: &Ctx, archive: &Path) -> Result<usize> {
        let st = &*ctx.storage;
        let mut w = self.writer.lock();
        self.check_writable(&mut w)?;
        let mut found: Vec<u64> = match st.read_dir(archive) {
            Ok(v) => v
                .into_iter()
                .filter_map(|e| e.name.as_deref().and_then(format::parse_segment_name))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        found.retain(|s| !w.idx.contains(s) && *s < w.active.start_id);
        // Newest first: an interrupted restore leaves a contiguous run
        // below the index's first segment, which a rerun completes.
        found.sort_unstable_by(|a, b| b.cmp(a));
        for &s in &found {
            let name = format::segment_name(s);
            move_file(st, &archive.join(&name), &self.dir.join(&name))?;
        }
        st.sync_dir(&self.dir)?;
        let mut ids: Vec<u64> = w.idx.iter().copied().chain(found.iter().copied()).collect();
        ids.sort_unstable();
        st.write_atomic(
            &self.dir.join(format::SEGMENTS_IDX),
            &format::segments_idx_encode(&ids),
        )?;
        {
            let mut segs = self.segs.write();
            for (i, &s) in ids.iter().enumerate() {
                if segs.contains_key(&s) {
                    continue;
                }
                let path = self.dir.join(format::segment_name(s));
                let len = st.file_len(&path)?;
                segs.insert(s, Arc::new(Segment::sealed(s, path, len, ids[i + 1], None)));
            }
        }
        w.idx = ids;
        Ok(found.len())
    }

    /// Syncs the active segment (for `Wal::sync` and a clean close).
    pub fn sync(self: &Arc<Self>, ctx: &Ctx) -> Result<()> {
        self.flush(ctx)?;
        let target = self.commit.state.lock().written;
        self.sync_to(ctx, target)
    }

    pub(crate) fn mark_deleted(&self) {
        let mut w = self.writer.lock();
        w.deleted = true;
        w.file = None;
        self.commit.set_file(None);
        self.commit.close();
    }
}

/// Rename, or copy and remove across filesystems.
fn move_file(st: &dyn Storage, from: &Path, to: &Path) -> io::Result<()> {
    match st.rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let bytes = st.read_file(from)?;
            let f = st.open(to, true)?;
            f.set_len(0)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_data()?;
            st.remove_file(from)
        }
        r => r,
    }
}
