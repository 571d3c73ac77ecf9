//! The read path: id to segment to frame to entry bytes.

use super::cursor::{Cursor, Kept};
use super::{Ctx, Stream, StreamInfo};
use crate::error::{Error, Location, Result};
use crate::format::{DecodedFrame, FrameHeader, FrameType, HEADER_SIZE};
use crate::index::Stretch;
use crate::options::ReadStrategy;
use crate::recovery;
use crate::segment::{Fault, ReadError, ReadHandle, Segment, Window};
use std::io;
use std::sync::Arc;

/// Bytes read at once when looking up one entry: the sparse index's
/// stride plus room for the frame itself.
const LOOKUP_READ: usize = 8192;

/// A frame of one raw entry at least this large is served in ranges,
/// checked once through a bounded buffer, never decoded whole.
pub const RANGED_FRAME: u32 = 1 << 20;
/// Large frames remembered as checked while open.
const CHECKED_FRAMES: usize = 1024;

/// A frame found: its segment, a window on it, its offset and header.
type Located = (Arc<Segment>, Window, u64, FrameHeader);

impl Stream {
    pub(super) fn location(&self, seg: &Segment, offset: u64) -> Location {
        Location {
            stream: self.name.clone(),
            segment: seg.name.clone(),
            offset,
        }
    }

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

    pub(super) fn is_retained(&self, seg: &Segment) -> bool {
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
            let ix = recovery::build_index(&mut win, seg.start_id, seg.extent().end_id)?;
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
        if let Some(f) = self.cached_frame(ctx, id) {
            return Ok(Some(f));
        }
        let Some((seg, mut win, off, h)) = self.locate_frame(ctx, id)? else {
            return Ok(None);
        };
        self.decode_frame(ctx, &seg, &mut win, off, &h).map(Some)
    }

    /// The decoded frame holding `id`, if a cache has it.
    fn cached_frame(&self, ctx: &Ctx, id: u64) -> Option<Arc<DecodedFrame>> {
        if let Some(f) = ctx.blocks.as_ref().and_then(|b| b.get(self.uid, id)) {
            return Some(f);
        }
        ctx.last_big
            .lock()
            .as_ref()
            .filter(|(uid, f)| *uid == self.uid && f.start_id <= id && id < f.end_id())
            .map(|(_, f)| f.clone())
    }

    /// The segment, a window on it, the offset and the header of the frame
    /// holding `id`; None if its segment is no longer retained.
    fn locate_frame(&self, ctx: &Ctx, id: u64) -> Result<Option<Located>> {
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
        match seg.locate(&mut win, id) {
            Ok((off, h)) => Ok(Some((seg, win, off, h))),
            Err(e) => Err(self.read_error(&seg, e)),
        }
    }

    fn read_error(&self, seg: &Segment, e: ReadError) -> Error {
        match e {
            ReadError::Io(e) => e.into(),
            ReadError::Bad(f) => Error::Corruption {
                location: self.location(seg, f.offset),
                reason: f.reason,
            },
        }
    }

    /// Reads, checks and decodes the frame at `off`, and keeps it in the
    /// block cache (or, too large for it, in the one-frame slot).
    fn decode_frame(
        &self,
        ctx: &Ctx,
        seg: &Segment,
        win: &mut Window,
        off: u64,
        h: &FrameHeader,
    ) -> Result<Arc<DecodedFrame>> {
        let frame = match win.frame(off, h) {
            Ok(f) => Arc::new(f),
            Err(ReadError::Bad(mut f)) => {
                f.offset = off;
                return Err(self.read_error(seg, ReadError::Bad(f)));
            }
            Err(e) => return Err(self.read_error(seg, e)),
        };
        self.keep_frame(ctx, &frame);
        Ok(frame)
    }

    /// Keeps a decoded frame in the block cache, or, too large for it, in
    /// the one-frame slot.
    fn keep_frame(&self, ctx: &Ctx, frame: &Arc<DecodedFrame>) {
        match ctx.blocks.as_ref().filter(|b| b.fits(frame.weight())) {
            Some(b) => b.insert(self.uid, frame.clone()),
            None => *ctx.last_big.lock() = Some((self.uid, frame.clone())),
        }
    }

    /// The length of entry `id` (None: not readable). A large frame of one
    /// entry answers from its header: a `stat` never reads the entry.
    pub fn entry_len(self: &Arc<Self>, ctx: &Ctx, id: u64) -> Result<Option<u64>> {
        if !self.readable(ctx, id)? {
            return Ok(None);
        }
        if let Some(f) = self.cached_frame(ctx, id) {
            return Ok(f.entry(id).map(|e| e.len() as u64));
        }
        let Some((seg, mut win, off, h)) = self.locate_frame(ctx, id)? else {
            return Ok(None);
        };
        if h.entry_count == 1 && h.disk_size >= RANGED_FRAME {
            return Ok(Some(h.payload_len()));
        }
        let f = self.decode_frame(ctx, &seg, &mut win, off, &h)?;
        Ok(f.entry(id).map(|e| e.len() as u64))
    }

    /// Bytes `[offset, offset + size)` of entry `id`, clipped to its end
    /// (None: not readable). A large raw frame of one entry is checked
    /// once, through a bounded buffer, and then read only where asked: its
    /// bytes are never held whole.
    pub fn read_entry_range(
        self: &Arc<Self>,
        ctx: &Ctx,
        id: u64,
        offset: u64,
        size: usize,
    ) -> Result<Option<Vec<u8>>> {
        if !self.readable(ctx, id)? {
            return Ok(None);
        }
        let clip = |e: &[u8]| {
            let from = (offset.min(e.len() as u64)) as usize;
            e[from..e.len().min(from.saturating_add(size))].to_vec()
        };
        if let Some(f) = self.cached_frame(ctx, id) {
            return Ok(f.entry(id).map(clip));
        }
        let Some((seg, mut win, off, h)) = self.locate_frame(ctx, id)? else {
            return Ok(None);
        };
        if h.entry_count != 1 || h.disk_size < RANGED_FRAME || h.frame_type != FrameType::Raw {
            let f = self.decode_frame(ctx, &seg, &mut win, off, &h)?;
            return Ok(f.entry(id).map(clip));
        }
        self.check_whole(ctx, &seg, &mut win, off, &h)?;
        let len = h.payload_len();
        let from = offset.min(len);
        let mut out = vec![0; (len - from).min(size as u64) as usize];
        win.read_into(off + HEADER_SIZE as u64 + 4 + from, &mut out)
            .map_err(Error::from)?;
        Ok(Some(out))
    }

    /// Checks the crc (and the length prefix) of the one-entry raw frame at
    /// `off`, reading it through a bounded buffer, unless it was checked
    /// while open.
    fn check_whole(
        &self,
        ctx: &Ctx,
        seg: &Segment,
        win: &mut Window,
        off: u64,
        h: &FrameHeader,
    ) -> Result<()> {
        let key = (self.uid, seg.start_id, off, h.crc);
        if ctx.checked.lock().contains(&key) {
            return Ok(());
        }
        let crc_ok = win.crc_ok(off, h).map_err(Error::from)?;
        let mut prefix = [0u8; 4];
        win.read_into(off + HEADER_SIZE as u64, &mut prefix)
            .map_err(Error::from)?;
        let prefix = u32::from_le_bytes(prefix);
        let reason = if !crc_ok {
            Some(format!("crc mismatch: header says {:#010x}", h.crc))
        } else if u64::from(prefix) != h.payload_len() {
            Some(format!(
                "entry length {prefix} does not fill its frame of {} bytes",
                h.disk_size
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(self.read_error(seg, ReadError::Bad(Fault::new(off, reason))));
        }
        let mut checked = ctx.checked.lock();
        if checked.len() >= CHECKED_FRAMES {
            checked.pop_front();
        }
        checked.push_back(key);
        Ok(())
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
        // One read should cover the request: `max` entry bytes plus their
        // frame headers and length prefixes (an eighth more is generous for
        // any entry over 36 bytes), so a request does not read twice.
        // (What earlier segments put in `out` is not wanted again.)
        let room = max.saturating_sub(out.len());
        let chunk = (room + room / 8 + 8192).clamp(1 << 16, 8 << 20);
        let resume = self.cursor.lock().take().filter(|c| c.resumes(seg, from));
        let (win, found) = if let Some(mut c) = resume {
            // The frame it stopped in is decoded (kept by the cursor, or in
            // the block cache); what the request needs beyond it is all the
            // window should read (the frame the request ends in is read
            // whole anyway, and kept for the next request).
            let held = c.frame.take();
            let served = (c.before + c.h.payload_len()).saturating_sub(from) as usize;
            let rest = max.saturating_sub(served).max(4096);
            // The cursor knows where the frame is: no index needed (building
            // one would read the whole segment first).
            (
                self.raw_window(ctx, seg, rest)?.exact(),
                Some((c.off, c.h, c.before, held)),
            )
        } else if from == 0 {
            let mut win = self.raw_window(ctx, seg, chunk)?.exact();
            let found = if win.limit() == 0 {
                None
            } else {
                match win.header(0) {
                    Ok(h) => Some((0, h, 0, None)),
                    // Damage at the start: where the first entry byte is
                    // depends on what it stands for (the index knows).
                    Err(_) => {
                        let mut win = self.window(ctx, seg, chunk)?.exact();
                        let found = seg.locate_payload(&mut win, 0).map_err(read_err)?;
                        let found = found.map(|(off, h, before)| (off, h, before, None));
                        return self.serve_from(ctx, seg, (from, visible, max), out, win, found);
                    }
                }
            };
            (win, found)
        } else {
            let mut win = self.window(ctx, seg, chunk)?.exact();
            let found = seg.locate_payload(&mut win, from).map_err(read_err)?;
            (win, found.map(|(off, h, before)| (off, h, before, None)))
        };
        self.serve_from(ctx, seg, (from, visible, max), out, win, found)
    }

    /// The rest of `read_payload`: from the frame found (at offset `off`,
    /// with header `h` and `before` entry bytes of the segment before it,
    /// and, resuming, the frame itself as the cursor kept it), the entry
    /// bytes up to `max`. Stops short, with what it has, at a
    /// damaged stretch whose entries it cannot serve (the next request,
    /// starting there, gets the error); steps over one that holds no id.
    /// `(from, visible, max)`: the request's first entry byte, the
    /// visible end when it began, and the most it takes.
    fn serve_from(
        &self,
        ctx: &Ctx,
        seg: &Arc<Segment>,
        (from, visible, max): (u64, u64, usize),
        out: &mut Vec<u8>,
        mut win: Window,
        found: Option<(u64, FrameHeader, u64, Option<Kept>)>,
    ) -> Result<()> {
        let bad = |f: crate::segment::Fault| Error::Corruption {
            location: self.location(seg, f.offset),
            reason: f.reason,
        };
        let read_err = |e| match e {
            ReadError::Io(e) => Error::Io(e),
            ReadError::Bad(f) => bad(f),
        };
        let Some((mut off, mut h, mut before, mut held)) = found else {
            return Ok(());
        };
        let start_len = out.len();
        let mut skip = from - before;
        let limit = win.limit();
        let stop = |off: u64, h: FrameHeader, before: u64, out: &Vec<u8>, frame| {
            *self.cursor.lock() = Some(Cursor {
                seg: seg.start_id,
                pos: from + (out.len() - start_len) as u64,
                off,
                h,
                before,
                frame,
            });
        };
        loop {
            let resumed = held.take().filter(|k| k.holds(h.start_id));
            if h.start_id >= visible || out.len() >= max {
                stop(off, h, before, out, resumed);
                return Ok(());
            }
            // The frame a request stopped in is the next one's first: the
            // cursor keeps it decoded (or, past its bound, the block
            // cache), so it is read once. The last frame the cache cannot
            // hold (or every frame, with no cache) waits in the one-frame
            // slot: a request that stops inside it must not make the next
            // one read it again.
            let slot = || {
                ctx.last_big
                    .lock()
                    .as_ref()
                    .filter(|(uid, f)| *uid == self.uid && f.start_id == h.start_id)
                    .map(|(_, f)| f.clone())
            };
            let cached = || {
                ctx.blocks
                    .as_ref()
                    .and_then(|b| b.get(self.uid, h.start_id))
                    .or_else(slot)
            };
            let (frame, fresh) = match resumed.as_ref().map(Kept::frame).or_else(cached) {
                Some(f) => (f, false),
                None => {
                    // A sealed segment's frames are checked once while
                    // open: `log` read again does not compute their crcs.
                    let end = off + h.frame_len();
                    let again = seg.checked_before(end);
                    let f = if again {
                        win.frame_again(off, &h)
                    } else {
                        win.frame(off, &h)
                    };
                    let f = match f {
                        Ok(f) => {
                            if !again {
                                seg.checked(off, end);
                            }
                            Arc::new(f)
                        }
                        Err(ReadError::Bad(_)) if out.len() > start_len => {
                            *self.cursor.lock() = None;
                            return Ok(());
                        }
                        Err(e) => return Err(read_err(e)),
                    };
                    (f, true)
                }
            };
            if frame.gather(skip, out, max) {
                // Only the frame a request stops in is kept: the frames a
                // scan passes go (their buffers back to the pool), neither
                // filling the block cache nor evicting what it holds.
                let kept = match resumed {
                    Some(k) => Some(k),
                    None if fresh => {
                        let cap = ctx.blocks.as_ref().map_or(0, |b| b.capacity() / 2);
                        Kept::new(frame, cap)
                            .map_err(|f| self.keep_frame(ctx, &f))
                            .ok()
                    }
                    None => None,
                };
                stop(off, h, before, out, kept);
                return Ok(());
            }
            skip = skip.saturating_sub(h.payload_len());
            before += h.payload_len();
            off += h.frame_len();
            if off >= limit {
                return Ok(());
            }
            h = loop {
                match win.header(off) {
                    Ok(h) => break h,
                    Err(ReadError::Io(e)) => return Err(e.into()),
                    Err(ReadError::Bad(f)) => {
                        let d = self.damage_at(ctx, seg, off)?;
                        match d {
                            // Damage that stands for no entry byte.
                            Some(d) if d.payload == 0 && d.end > off => off = d.end,
                            _ if out.len() > start_len => {
                                *self.cursor.lock() = None;
                                return Ok(());
                            }
                            _ => return Err(bad(f)),
                        }
                        if off >= limit {
                            return Ok(());
                        }
                    }
                }
            };
        }
    }

    /// The damaged stretch of `seg` starting at byte `off`, as its index
    /// (built if need be) records it.
    fn damage_at(&self, ctx: &Ctx, seg: &Arc<Segment>, off: u64) -> Result<Option<Stretch>> {
        self.window(ctx, seg, 1 << 16)?;
        Ok(seg.stretch(|ix| ix.stretch_of(u64::MAX, Some(off)).cloned()))
    }

    pub fn info(&self, ctx: &Ctx) -> StreamInfo {
        let segs = self.segments();
        let bytes = segs.iter().map(|s| s.extent().len).sum();
        StreamInfo {
            first_time: self.first_time(ctx),
            name: self.name.clone(),
            first_id: segs.first().map_or(0, |s| s.start_id),
            next_id: self.commit.visible(),
            durable_id: self.commit.state.lock().durable,
            segments: segs.len(),
            bytes,
            active_segment: segs.last().map_or(0, |s| s.start_id),
            damaged: self.damaged.clone(),
            replication: None,
            retention: None,
        }
    }
}

/// One segment as the shipper sees it.
pub struct ShipSegment {
    pub start_id: u64,
    pub path: std::path::PathBuf,
    /// Bytes durable on disk (whole frames).
    pub len: u64,
    /// One past the last durable id it holds.
    pub end_id: u64,
    pub sealed: bool,
}

/// What of a stream is durable locally, consistently: sealed segments
/// whole, the active one up to its last synced frame.
pub struct ShipView {
    pub segments: Vec<ShipSegment>,
    /// One past the last durable id.
    pub durable_id: u64,
}

impl Stream {
    pub fn ship_view(&self) -> ShipView {
        // Lock order: commit.state before segs, as the writer takes them.
        let st = self.commit.state.lock();
        let segs = self.segs.read();
        let mut segments = Vec::with_capacity(segs.len());
        for seg in segs.values().filter(|g| !g.missing) {
            let e = seg.extent();
            if seg.start_id < st.segment {
                segments.push(ShipSegment {
                    start_id: seg.start_id,
                    path: seg.path.clone(),
                    len: e.len,
                    end_id: e.end_id,
                    sealed: true,
                });
            } else if seg.start_id == st.segment {
                segments.push(ShipSegment {
                    start_id: seg.start_id,
                    path: seg.path.clone(),
                    len: st.durable_len,
                    end_id: st.durable,
                    sealed: false,
                });
            }
        }
        ShipView {
            segments,
            durable_id: st.durable,
        }
    }
}
