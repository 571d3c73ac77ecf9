//! One segment file: how its frames are read (pread or mmap) and found.
//!
//! Readers see a segment through a [`Window`], which hands out byte slices
//! of the file whether they come from a mapping or from pread, so frames
//! are decoded once, over `&[u8]`.

use crate::format::{
    decode_batch, decode_shared, DecodedFrame, FrameHeader, FrameType, HEADER_SIZE, MAGIC,
};
use crate::index::{Point, SparseIndex, Stretch};
use crate::storage::StorageFile;
use parking_lot::{Mutex, RwLock};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An open segment for reading.
pub enum ReadHandle {
    /// pread on an open file.
    File(Arc<dyn StorageFile>),
    /// Sealed segments only: a mapping never grows under its reader.
    Map(memmap2::Mmap),
}

/// A frame-level fault: the byte offset and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Byte offset of the damaged frame.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
}

impl Fault {
    /// A fault at `offset`.
    pub fn new(offset: u64, reason: impl Into<String>) -> Fault {
        Fault {
            offset,
            reason: reason.into(),
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The system call failed.
    Io(io::Error),
    /// The bytes are not a valid frame.
    Bad(Fault),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Byte access to `[0, limit)` of a segment, in reads of at least `chunk`
/// bytes when it has to read.
pub struct Window {
    handle: Arc<ReadHandle>,
    limit: u64,
    chunk: usize,
    /// Extend a filled window only as far as asked (see [`Window::exact`]).
    exact: bool,
    /// Read buffer; `buf[base..base + buf_len]` holds the file bytes from
    /// `buf_off`. `base` puts them at a page-aligned address and `buf_off`
    /// is page aligned: the kernel copies aligned reads several times
    /// faster than unaligned ones.
    buf: Arc<Vec<u8>>,
    base: usize,
    buf_len: usize,
    buf_off: u64,
}

const PAGE: u64 = 4096;

/// Payloads larger than this are checked through a buffer of this size.
const CRC_CHUNK: usize = 1 << 20;

impl Drop for Window {
    /// The read buffer goes back for reuse, unless a decoded frame holds it
    /// (the frame gives it back when dropped).
    fn drop(&mut self) {
        crate::bufpool::give_unshared(&mut self.buf);
    }
}

impl Window {
    /// A window over bytes `[0, limit)` read in chunks of at least `chunk`.
    pub fn new(handle: Arc<ReadHandle>, limit: u64, chunk: usize) -> Window {
        let limit = match &*handle {
            ReadHandle::Map(m) => limit.min(m.len() as u64),
            ReadHandle::File(_) => limit,
        };
        Window {
            handle,
            limit,
            chunk,
            exact: false,
            buf: Arc::default(),
            base: 0,
            buf_len: 0,
            buf_off: 0,
        }
    }

    /// After the first read of `chunk` bytes, reads only what is asked:
    /// for a reader whose first read covers all it wants but the rest of
    /// its last frame (a `log` request), so that the rest is not read ahead
    /// for nothing.
    pub fn exact(mut self) -> Window {
        self.exact = true;
        self
    }

    /// One past the last byte readable.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes `[off, off + len)`, which the caller has checked lie below the
    /// limit. A short file (shrunk under us) is an UnexpectedEof error.
    pub fn bytes(&mut self, off: u64, len: usize) -> io::Result<&[u8]> {
        let end = off
            .checked_add(len as u64)
            .filter(|&e| e <= self.limit)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match &*self.handle {
            ReadHandle::Map(m) => Ok(&m[off as usize..end as usize]),
            ReadHandle::File(f) => {
                let buf_end = self.buf_off + self.buf_len as u64;
                if !(off >= self.buf_off && end <= buf_end) {
                    let start = off / PAGE * PAGE;
                    // Keep the part of the window that is still wanted
                    // (sequential readers ask for the rest of a frame), also
                    // when the buffer must grow for it: a frame longer than
                    // the first read is then not read twice.
                    let wanted = (start >= self.buf_off && start < buf_end && self.buf_len > 0)
                        .then(|| {
                            let from = self.base + (start - self.buf_off) as usize;
                            (from, (buf_end - start) as usize)
                        });
                    let ahead = if self.exact && self.buf_len > 0 {
                        end
                    } else {
                        end.max(off + self.chunk as u64)
                    };
                    let stop = (ahead.div_ceil(PAGE) * PAGE).min(self.limit);
                    let size = (stop - start) as usize;
                    // A buffer that decoded frames still share is left to
                    // them (see `frame`).
                    let keep = if self.buf.len() < size + PAGE as usize
                        || Arc::get_mut(&mut self.buf).is_none()
                    {
                        let mut grown = crate::bufpool::take(size + PAGE as usize);
                        let base = grown.as_ptr().align_offset(PAGE as usize);
                        let keep = match wanted {
                            Some((from, keep)) => {
                                grown[base..base + keep]
                                    .copy_from_slice(&self.buf[from..from + keep]);
                                keep
                            }
                            None => 0,
                        };
                        crate::bufpool::give_unshared(&mut self.buf);
                        self.buf = Arc::new(grown);
                        self.base = base;
                        self.buf_len = 0;
                        keep
                    } else {
                        match wanted {
                            Some((from, keep)) => {
                                Arc::get_mut(&mut self.buf)
                                    .expect("not shared")
                                    .copy_within(from..from + keep, self.base);
                                keep
                            }
                            None => 0,
                        }
                    };
                    let b = self.base;
                    let buf = Arc::get_mut(&mut self.buf).expect("not shared");
                    f.read_exact_at(&mut buf[b + keep..b + size], start + keep as u64)?;
                    self.buf_off = start;
                    self.buf_len = size;
                }
                let at = self.base + (off - self.buf_off) as usize;
                Ok(&self.buf[at..at + len])
            }
        }
    }

    /// Fills `out` with the bytes from `off`, which the caller has checked
    /// lie below the limit, without passing through the window's buffer
    /// (ranges of a frame too large to hold).
    pub fn read_into(&self, off: u64, out: &mut [u8]) -> io::Result<()> {
        let end = off
            .checked_add(out.len() as u64)
            .filter(|&e| e <= self.limit)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        match &*self.handle {
            ReadHandle::Map(m) => {
                out.copy_from_slice(&m[off as usize..end as usize]);
                Ok(())
            }
            ReadHandle::File(f) => f.read_exact_at(out, off),
        }
    }

    /// Bytes `[off, off + len)` if the window already holds them (always,
    /// for a mapping): no I/O.
    pub fn cached(&self, off: u64, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len as u64)?;
        match &*self.handle {
            ReadHandle::Map(m) => m.get(off as usize..end as usize),
            ReadHandle::File(_) => {
                if off < self.buf_off || end > self.buf_off + self.buf_len as u64 {
                    return None;
                }
                let at = self.base + (off - self.buf_off) as usize;
                Some(&self.buf[at..at + len])
            }
        }
    }

    /// The header at `off`, checked to describe a frame that fits below the
    /// limit.
    pub fn header(&mut self, off: u64) -> Result<FrameHeader, ReadError> {
        if off + HEADER_SIZE as u64 > self.limit {
            return Err(ReadError::Bad(Fault::new(
                off,
                format!(
                    "truncated frame header ({} of {HEADER_SIZE} bytes)",
                    self.limit - off
                ),
            )));
        }
        let h = FrameHeader::decode(self.bytes(off, HEADER_SIZE)?)
            .map_err(|e| ReadError::Bad(Fault::new(off, e.to_string())))?;
        if off + h.frame_len() > self.limit {
            return Err(ReadError::Bad(Fault::new(
                off,
                format!(
                    "frame payload of {} bytes runs past the end of the segment ({} bytes left)",
                    h.disk_size,
                    self.limit - off - HEADER_SIZE as u64
                ),
            )));
        }
        Ok(h)
    }

    /// The payload of the frame at `off` passes its crc. A large payload
    /// the window does not hold is read through a bounded buffer instead
    /// of into the window: checking a frame never allocates its size.
    pub fn crc_ok(&mut self, off: u64, h: &FrameHeader) -> io::Result<bool> {
        let (p_off, len) = (off + HEADER_SIZE as u64, h.disk_size as usize);
        let whole = len <= CRC_CHUNK
            || matches!(*self.handle, ReadHandle::Map(_))
            || self.cached(p_off, len).is_some();
        if whole {
            let p = self.bytes(p_off, len)?;
            return Ok(h.expected_crc(p) == h.crc);
        }
        let mut crc = h.crc_hasher();
        let mut buf = crate::bufpool::take(CRC_CHUNK);
        let (mut at, end) = (p_off, p_off + len as u64);
        while at < end {
            let n = (end - at).min(CRC_CHUNK as u64) as usize;
            self.read_into(at, &mut buf[..n])?;
            crc.update(&buf[..n]);
            at += n as u64;
        }
        crate::bufpool::give(buf);
        Ok(crc.finalize() == h.crc)
    }

    /// Checks the crc of the raw frame at `off` and returns where its
    /// entries sit, relative to its payload, without copying them.
    pub fn raw_spans(
        &mut self,
        off: u64,
        h: &FrameHeader,
    ) -> Result<Vec<std::ops::Range<u32>>, ReadError> {
        let p = self.bytes(off + HEADER_SIZE as u64, h.disk_size as usize)?;
        crate::format::frame::raw_spans(h, p).map_err(|r| ReadError::Bad(Fault::new(off, r)))
    }

    /// Reads, checks and decodes the frame at `off`. A frame that fills
    /// most of the read buffer keeps the buffer rather than a copy of
    /// itself (the copy was a third of the daemon's time serving `log`);
    /// smaller ones are copied, so that a cached frame never keeps more
    /// than twice its size alive.
    pub fn frame(&mut self, off: u64, h: &FrameHeader) -> Result<DecodedFrame, ReadError> {
        self.decode(off, h, false)
    }

    /// As [`Window::frame`] for a frame whose crc was checked earlier
    /// while open, in a segment that cannot have changed since (sealed):
    /// a raw frame's crc is not computed again, its structure is.
    pub fn frame_again(&mut self, off: u64, h: &FrameHeader) -> Result<DecodedFrame, ReadError> {
        self.decode(off, h, true)
    }

    fn decode(
        &mut self,
        off: u64,
        h: &FrameHeader,
        again: bool,
    ) -> Result<DecodedFrame, ReadError> {
        let (p_off, len) = (off + HEADER_SIZE as u64, h.disk_size as usize);
        self.bytes(p_off, len)?;
        let bad = |r| ReadError::Bad(Fault::new(off, r));
        let again = again && h.frame_type == FrameType::Raw;
        if !again {
            crate::metrics::global().frames_checked.inc();
        }
        match &*self.handle {
            ReadHandle::File(_) if len * 2 >= self.buf.len() => {
                let at = self.base + (p_off - self.buf_off) as usize;
                decode_shared(h, &self.buf, at..at + len, again).map_err(bad)
            }
            _ => {
                let p = self.cached(p_off, len).expect("just read");
                if again {
                    decode_shared(h, &Arc::new(p.to_vec()), 0..len, true).map_err(bad)
                } else {
                    decode_batch(h, p).map_err(bad)
                }
            }
        }
    }

    /// The next offset in `[from, below)` holding a whole, crc-valid frame
    /// whose ids start in `[min_start, max_start]`: where valid data
    /// resumes after damage.
    pub fn resync(
        &mut self,
        from: u64,
        min_start: u64,
        max_start: u64,
        below: u64,
    ) -> io::Result<Option<(u64, FrameHeader)>> {
        let magic = MAGIC.to_le_bytes();
        let below = below.min(self.limit);
        let mut at = from;
        while at < below && at + HEADER_SIZE as u64 <= self.limit {
            let n = ((self.limit - at) as usize).min(self.chunk.max(1 << 16));
            let hit = self.bytes(at, n)?.windows(4).position(|w| w == magic);
            let Some(i) = hit else {
                // Keep 3 bytes: a magic may straddle the boundary.
                at += (n as u64).saturating_sub(3).max(1);
                continue;
            };
            let cand = at + i as u64;
            if cand >= below {
                break;
            }
            if let Ok(h) = self.header(cand) {
                if (min_start..=max_start).contains(&h.start_id) && self.crc_ok(cand, &h)? {
                    return Ok(Some((cand, h)));
                }
            }
            at = cand + 1;
        }
        Ok(None)
    }
}

/// Mutable facts of a segment, changed by the writer.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    /// Bytes holding whole frames (what readers may read).
    pub len: u64,
    /// One past the last id the segment holds.
    pub end_id: u64,
    /// No more frames will be appended.
    pub sealed: bool,
    /// Entry bytes in `len` (for a sealed segment: from walfs.payloads, or
    /// None until the index is built).
    pub payload: Option<u64>,
}

/// One segment file of a stream.
pub struct Segment {
    /// The id of its first entry.
    pub start_id: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its file name.
    pub name: String,
    extent: RwLock<Extent>,
    /// Built on first read for segments found sealed at open.
    index: RwLock<Option<SparseIndex>>,
    reader: Mutex<Option<Arc<ReadHandle>>>,
    /// Named by segments.idx, but its file is gone: its ids are lost.
    pub missing: bool,
    /// Sealed segments: the end of the prefix of whole frames whose crcs
    /// were checked while open (a sealed file never changes), so that
    /// `log` read again does not compute them again. One number per
    /// segment: bounded.
    checked_to: AtomicU64,
}

impl Segment {
    /// A segment with a known extent (and index, if built).
    pub fn new(
        start_id: u64,
        path: PathBuf,
        extent: Extent,
        index: Option<SparseIndex>,
    ) -> Segment {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        Segment {
            start_id,
            path,
            name,
            extent: RwLock::new(extent),
            index: RwLock::new(index),
            reader: Mutex::new(None),
            missing: false,
            checked_to: AtomicU64::new(0),
        }
    }

    /// Whether the frame ending at `end` lies in the checked prefix (only
    /// a sealed segment has one: [`Segment::checked`]).
    pub fn checked_before(&self, end: u64) -> bool {
        end <= self.checked_to.load(Ordering::Acquire)
    }

    /// The frame at `[off, end)` passed its crc check: in a sealed segment
    /// the checked prefix grows if the frame continues it. The active
    /// segment's frames are checked at every read.
    pub fn checked(&self, off: u64, end: u64) {
        if self.extent().sealed {
            let _ = self
                .checked_to
                .compare_exchange(off, end, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// A segment whose file is missing: it keeps its ids and reads fail.
    pub fn lost(start_id: u64, path: PathBuf, end_id: u64) -> Segment {
        let mut seg = Segment::sealed(start_id, path, 0, end_id, Some(0));
        seg.missing = true;
        seg
    }

    /// A sealed segment found on disk: indexed on first read. `payload`,
    /// when known, spares a scan to count its entry bytes.
    pub fn sealed(
        start_id: u64,
        path: PathBuf,
        len: u64,
        end_id: u64,
        payload: Option<u64>,
    ) -> Segment {
        let extent = Extent {
            len,
            end_id,
            sealed: true,
            payload,
        };
        Segment::new(start_id, path, extent, None)
    }

    /// The segment's current extent.
    pub fn extent(&self) -> Extent {
        *self.extent.read()
    }

    /// Replaces the extent.
    pub fn set_extent(&self, e: Extent) {
        *self.extent.write() = e;
    }

    /// Indexes a frame the writer appended (before it is readable).
    pub fn note_frame(&self, start_id: u64, offset: u64, payload: u64) {
        if let Some(ix) = self.index.write().as_mut() {
            ix.note(start_id, offset, payload);
        }
    }

    /// Frames up to `len` bytes, `end_id` and `payload` entry bytes are in
    /// the file.
    pub fn set_written(&self, len: u64, end_id: u64, payload: u64) {
        let mut e = self.extent.write();
        e.len = len;
        e.end_id = end_id;
        e.payload = Some(payload);
    }

    /// Entry bytes of the readable frames (known once indexed).
    pub fn payload(&self) -> Option<u64> {
        let e = self.extent();
        match e.payload {
            Some(p) => Some(p),
            None => self.index.read().as_ref().map(SparseIndex::payload),
        }
    }

    /// Whether the sparse index is built.
    pub fn has_index(&self) -> bool {
        self.index.read().is_some()
    }

    /// Installs the sparse index.
    pub fn set_index(&self, ix: SparseIndex) {
        *self.index.write() = Some(ix);
    }

    pub(crate) fn cached_reader(&self) -> Option<Arc<ReadHandle>> {
        self.reader.lock().clone()
    }

    pub(crate) fn set_reader(&self, h: Option<Arc<ReadHandle>>) {
        *self.reader.lock() = h;
    }

    /// Finds the frame holding `id`: a binary search in the sparse index,
    /// then a walk over at most `SPARSE_BYTES` of headers.
    pub fn locate(&self, win: &mut Window, id: u64) -> Result<(u64, FrameHeader), ReadError> {
        if let Some(d) = self.stretch(|ix| ix.stretch_of(id, None).cloned()) {
            return Err(ReadError::Bad(Fault::new(d.offset, d.reason)));
        }
        let mut off = self.floor(|ix| ix.floor(id)).offset;
        loop {
            let h = win.header(off)?;
            if h.contains(id) {
                return Ok((off, h));
            }
            if h.start_id > id {
                return Err(ReadError::Bad(Fault::new(
                    off,
                    format!(
                        "entry {id} is missing: frame at this offset starts at id {}",
                        h.start_id
                    ),
                )));
            }
            off += h.frame_len();
        }
    }

    /// Finds the frame holding entry byte `payload` of the segment: returns
    /// its offset, header and the entry bytes before it. None past the end.
    pub fn locate_payload(
        &self,
        win: &mut Window,
        payload: u64,
    ) -> Result<Option<(u64, FrameHeader, u64)>, ReadError> {
        if let Some(d) = self.stretch(|ix| ix.stretch_at_payload(payload).cloned()) {
            return Err(ReadError::Bad(Fault::new(d.offset, d.reason)));
        }
        let p = self.floor(|ix| ix.floor_payload(payload));
        let (mut off, mut before) = (p.offset, p.payload_before);
        while off < win.limit() {
            let h = win.header(off)?;
            if payload < before + h.payload_len() {
                return Ok(Some((off, h, before)));
            }
            before += h.payload_len();
            off += h.frame_len();
        }
        Ok(None)
    }

    /// The damaged stretch `f` picks from the index, if any.
    pub fn stretch(&self, f: impl FnOnce(&SparseIndex) -> Option<Stretch>) -> Option<Stretch> {
        self.index.read().as_ref().and_then(f)
    }

    fn floor(&self, f: impl FnOnce(&SparseIndex) -> Option<Point>) -> Point {
        let ix = self.index.read();
        let ix = ix.as_ref().expect("index built before a lookup");
        f(ix).unwrap_or(Point {
            start_id: self.start_id,
            offset: 0,
            payload_before: 0,
        })
    }
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
