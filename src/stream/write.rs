//! The write path: append, the Async buffer, group-commit sync, rotation
//! and poisoning.

use super::writeback::{writeback_due, Writeback};
use super::{Ctx, Stream, Writer};
use crate::commit::SyncFailure;
use crate::error::{Error, Result};
use crate::format::{self, EncodedFrame};
use crate::index::SparseIndex;
use crate::options::SyncMode;
use crate::segment::{Extent, Segment};
use crate::storage::StorageFile;
use std::io;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Stream {
    pub(super) fn adopt_write_file(
        self: &Arc<Self>,
        ctx: &Ctx,
        w: &mut Writer,
        f: Arc<dyn StorageFile>,
    ) {
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

    pub(super) fn write_file(
        self: &Arc<Self>,
        ctx: &Ctx,
        w: &mut Writer,
    ) -> io::Result<Arc<dyn StorageFile>> {
        if let Some(f) = &w.file {
            return Ok(f.clone());
        }
        let f = ctx.storage.open(&w.active.path, true)?;
        self.adopt_write_file(ctx, w, f.clone());
        Ok(f)
    }

    pub(super) fn check_writable(&self, w: &mut Writer) -> Result<()> {
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

    pub(super) fn poison(&self, w: &mut Writer, errno: i32, cause: String) {
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
        // Writeback starts due, made once the writer's lock is let go.
        let mut due = Vec::new();
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
            let flen = frame.len();
            // A frame as large as the buffer is not copied into it: with a
            // flusher thread, it becomes the buffer (whatever waited before
            // it is written first, in order) and the flusher writes it while
            // the caller goes on (write-behind); without one, it goes to the
            // file at once.
            let large = flen as usize >= ctx.opts.write_buffer_size;
            let behind = buffer && large && ctx.flusher.get().is_some();
            let buffer = buffer && (behind || !(w.pending.is_empty() && large));
            if behind {
                due.extend(self.hand_to_kernel(ctx, &mut w)?);
                let written = std::mem::replace(&mut w.pending, std::mem::take(&mut frame.bytes));
                crate::bufpool::give_empty(written);
            } else if buffer {
                w.pending.extend_from_slice(&frame.bytes);
            } else {
                due.extend(self.hand_to_kernel(ctx, &mut w)?);
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
            w.len += flen;
            if !buffer {
                due.extend(writeback_due(&mut w));
            }
            w.next_id += n;
            w.payload += frame.payload;
            crate::metrics::global().appended(n, frame.payload);
            w.active.note_frame(start, off, frame.payload);
            self.appended.store(w.next_id, Ordering::Release);
            if !buffer {
                w.active.set_written(w.len, w.next_id, w.payload);
                self.commit.wrote(w.next_id, w.len);
            } else if behind {
                if let Some(t) = ctx.flusher.get() {
                    t.unpark();
                }
            } else if w.pending.len() >= ctx.opts.write_buffer_size {
                due.extend(self.hand_to_kernel(ctx, &mut w)?);
            }
            start..w.next_id
        };
        for wb in due {
            wb.start();
        }
        crate::bufpool::give_empty(frame.bytes);
        if sync {
            self.sync_to(ctx, range.end)?;
        }
        Ok(range)
    }

    /// Hands buffered frames to the kernel. Their ids were already given
    /// out, so a failure poisons the stream rather than reuse them.
    pub(super) fn flush_locked(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> Result<()> {
        if let Some(wb) = self.hand_to_kernel(ctx, w)? {
            wb.start();
        }
        Ok(())
    }

    /// Hands buffered frames to the kernel, as [`Stream::flush_locked`],
    /// and returns the writeback start that is due for the caller to issue
    /// once it has let the writer's lock go: starting a writeback submits
    /// pages to the device, which appends must not wait for.
    fn hand_to_kernel(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> Result<Option<Writeback>> {
        if w.pending.is_empty() {
            return Ok(None);
        }
        let from = w.len - w.pending.len() as u64;
        let r = self
            .write_file(ctx, w)
            .and_then(|f| f.write_all_at(&w.pending, from));
        w.pending.clear();
        match r {
            Ok(()) => {
                let due = writeback_due(w);
                w.active.set_written(w.len, w.next_id, w.payload);
                self.commit.wrote(w.next_id, w.len);
                Ok(due)
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
        let due = self.hand_to_kernel(ctx, &mut w)?;
        drop(w);
        if let Some(wb) = due {
            wb.start();
        }
        Ok(())
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
    pub(super) fn after_sync_failure(&self, ctx: &Ctx, f: &SyncFailure) {
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
    pub(super) fn rotate(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> Result<()> {
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
    pub(super) fn note_sealed(&self, ctx: &Ctx, start: u64, len: u64, payload: u64) {
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

    pub(super) fn try_rotate(self: &Arc<Self>, ctx: &Ctx, w: &mut Writer) -> io::Result<()> {
        let st = &*ctx.storage;
        self.flush_locked(ctx, w).map_err(|e| match e {
            Error::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
        let old = self.write_file(ctx, w)?;
        let took = std::time::Instant::now();
        old.sync_data()?;
        let m = crate::metrics::global();
        m.seal_syncs.inc();
        m.seal_sync_seconds.inc_by(took.elapsed().as_secs_f64());
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
        w.written_back = 0;
        w.payload = 0;
        w.file = None;
        self.adopt_write_file(ctx, w, file.clone());
        self.commit.rotated(start, Some(file));
        Ok(())
    }

    /// Cuts the stream back to ids below `to`, which must lie in the active
    /// segment (else nothing is cut: an error says why), and refuses writes
    /// from then on: for entries that were written and synced here but
    /// refused to their writers (a fenced writer's, which the bucket will
    /// never hold and whose ids name other entries there). Returns how
    /// many entries were taken back.
    pub fn take_back(self: &Arc<Self>, ctx: &Ctx, to: u64, why: &str) -> Result<u64> {
        let mut w = self.writer.lock();
        self.flush_locked(ctx, &mut w)?;
        if w.poisoned.is_none() {
            w.poisoned = Some((libc::ESTALE, why.to_owned()));
        }
        if to >= w.next_id {
            return Ok(0);
        }
        if to < w.active.start_id {
            return Err(Error::Damaged {
                stream: self.name.clone(),
                reason: format!(
                    "ids {to}..{} were refused but span a sealed segment: they stay in the local log (moved aside at the next start with replication)",
                    w.next_id
                ),
            });
        }
        let file = self.write_file(ctx, &mut w)?;
        let mut win = crate::segment::Window::new(
            Arc::new(crate::segment::ReadHandle::File(file.clone())),
            w.len,
            1 << 16,
        );
        // The frames below `to`, again: the cut's offset, index and entry
        // bytes (ids shipped end on a frame boundary).
        let (off, payload, ix) = {
            let mut ix = crate::index::SparseIndex::new();
            let mut payload = 0;
            let mut at = 0u64;
            let mut id = w.active.start_id;
            while id < to && at < w.len {
                let h = win.header(at).map_err(|e| match e {
                    crate::segment::ReadError::Io(e) => Error::Io(e),
                    crate::segment::ReadError::Bad(f) => Error::Corruption {
                        location: self.location(&w.active, f.offset),
                        reason: f.reason,
                    },
                })?;
                ix.note(h.start_id, at, h.payload_len());
                payload += h.payload_len();
                id = h.end_id();
                at += h.frame_len();
            }
            if id != to {
                return Err(Error::Damaged {
                    stream: self.name.clone(),
                    reason: format!("id {to} is not at a frame boundary: nothing taken back"),
                });
            }
            (at, payload, ix)
        };
        file.set_len(off)?;
        file.sync_data()?;
        let taken = w.next_id - to;
        w.len = off;
        w.written_back = w.written_back.min(off);
        w.next_id = to;
        w.payload = payload;
        w.active.set_index(ix);
        w.active.set_written(off, to, payload);
        self.appended.store(to, Ordering::Release);
        self.commit.take_back(to, off);
        log::warn!(
            "stream {}: took back ids {to}..{} ({why}): they were refused to their writers and are gone from the local log",
            self.name,
            to + taken
        );
        Ok(taken)
    }

    /// A standby's apply: writes `bytes`, whole frames another writer made
    /// (their ids sealed in), at byte `off` of the segment starting at id
    /// `segment`, byte for byte, and returns once they are durable. They
    /// must continue this copy exactly: the active segment at its end, or
    /// a new segment starting at the next id (the active one is sealed).
    /// Every frame's header, crc and ids are checked before a byte is
    /// written. Returns one past the last id now held.
    pub fn apply_frames(
        self: &Arc<Self>,
        ctx: &Ctx,
        segment: u64,
        off: u64,
        bytes: &[u8],
    ) -> Result<u64> {
        let bad = |m: String| Error::Replication(format!("stream {}: {m}", self.name));
        let end = {
            let mut w = self.writer.lock();
            self.check_writable(&mut w)?;
            self.flush_locked(ctx, &mut w)?;
            if segment != w.active.start_id {
                if segment != w.next_id || off != 0 {
                    return Err(bad(format!(
                        "the bucket's segment {segment} at byte {off} does not continue this copy (segment {} holds {} bytes, ids below {})",
                        w.active.start_id, w.len, w.next_id
                    )));
                }
                self.rotate(ctx, &mut w)?;
            }
            if off != w.len {
                return Err(bad(format!(
                    "the bucket's bytes of segment {segment} start at {off}, this copy holds {}",
                    w.len
                )));
            }
            let mut frames = Vec::new();
            let (mut at, mut id) = (0usize, w.next_id);
            while at < bytes.len() {
                let h = format::FrameHeader::decode(&bytes[at..]).map_err(|e| {
                    bad(format!(
                        "segment {segment} at byte {}: {e}",
                        off + at as u64
                    ))
                })?;
                let flen = h.frame_len() as usize;
                let body = bytes
                    .get(at + format::HEADER_SIZE..at + flen)
                    .ok_or_else(|| {
                        bad(format!(
                            "segment {segment}: a frame at byte {} runs past the bytes given",
                            off + at as u64
                        ))
                    })?;
                if h.start_id != id || h.expected_crc(body) != h.crc {
                    return Err(bad(format!(
                        "segment {segment} at byte {}: the frame's ids or crc are wrong (ids {}.., expected {id})",
                        off + at as u64,
                        h.start_id
                    )));
                }
                frames.push((h.start_id, off + at as u64, h.payload_len()));
                id = h.end_id();
                at += flen;
            }
            let file = self.write_file(ctx, &mut w)?;
            if let Err(e) = file.write_all_at(bytes, off) {
                let _ = file.set_len(off);
                self.poison(
                    &mut w,
                    e.raw_os_error().unwrap_or(libc::EIO),
                    format!("applying the bucket's bytes failed ({e})"),
                );
                return Err(e.into());
            }
            for (start, at, payload) in frames {
                w.active.note_frame(start, at, payload);
                w.payload += payload;
            }
            w.len += bytes.len() as u64;
            w.next_id = id;
            self.appended.store(id, Ordering::Release);
            w.active.set_written(w.len, w.next_id, w.payload);
            self.commit.wrote(w.next_id, w.len);
            id
        };
        self.sync_to(ctx, end)?;
        Ok(end)
    }

    /// (active segment's start id, its bytes written, next id): where a
    /// standby's next apply must continue.
    pub fn position(&self) -> (u64, u64, u64) {
        let w = self.writer.lock();
        (w.active.start_id, w.len, w.next_id)
    }

    /// Syncs the active segment (for `Wal::sync` and a clean close).
    pub fn sync(self: &Arc<Self>, ctx: &Ctx) -> Result<()> {
        self.flush(ctx)?;
        if self.appended() > self.commit.visible() {
            // Appended and never made visible: dropped after a failed
            // write (the flush thread's, of a frame written behind), which
            // poisoned the stream. Not durable, so not a success.
            if let Some((_, cause)) = self.commit.failed() {
                return Err(Error::Poisoned {
                    stream: self.name.clone(),
                    cause,
                });
            }
        }
        let target = self.commit.state.lock().written;
        self.sync_to(ctx, target)
    }
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
