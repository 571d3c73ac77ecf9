//! Sequential reads: frames are read in large chunks and decoded once,
//! whether the bytes come from a mapping or from pread.

use crate::error::{Error, Location, Result};
use crate::format::{DecodedFrame, FrameType, HEADER_SIZE};
use crate::segment::{ReadError, Segment, Window};
use crate::stream::{Ctx, Stream};
use std::sync::Arc;

struct Cursor {
    seg: Arc<Segment>,
    win: Window,
    off: u64,
}

/// The frame being yielded from.
enum Current {
    None,
    /// Decoded into memory (LZ4).
    Owned(DecodedFrame),
    /// Raw, read in place: entries are slices of the cursor's window at
    /// `base + span` (the window is not refilled until the frame is done).
    InWindow {
        start_id: u64,
        base: u64,
        spans: Vec<std::ops::Range<u32>>,
    },
}

/// Yields `(id, entry)` from a start id to the end of what is visible when
/// each call is made; after `None`, later calls pick up new entries.
pub struct WalIdIterator {
    ctx: Arc<Ctx>,
    stream: Option<Arc<Stream>>,
    next: u64,
    cursor: Option<Cursor>,
    frame: Current,
    failed: bool,
    /// The error `load` returns names a damaged stretch it stepped over:
    /// iteration goes on after it.
    skipped: bool,
}

impl WalIdIterator {
    pub(crate) fn new(ctx: Arc<Ctx>, stream: Option<Arc<Stream>>, start: u64) -> WalIdIterator {
        WalIdIterator {
            ctx,
            stream,
            next: start,
            cursor: None,
            frame: Current::None,
            failed: false,
            skipped: false,
        }
    }

    /// The id the next call will yield (if it exists by then).
    pub fn next_id(&self) -> u64 {
        self.next
    }

    fn corruption(s: &Stream, seg: &Segment, offset: u64, reason: String) -> Error {
        Error::Corruption {
            location: Location {
                stream: s.name.clone(),
                segment: seg.name.clone(),
                offset,
            },
            reason,
        }
    }

    /// The current frame holds `self.next`.
    fn holds_next(&self) -> bool {
        match &self.frame {
            Current::None => false,
            Current::Owned(f) => f.entry(self.next).is_some(),
            Current::InWindow {
                start_id, spans, ..
            } => self
                .next
                .checked_sub(*start_id)
                .is_some_and(|i| (i as usize) < spans.len()),
        }
    }

    /// Entry `id`, which the current frame holds. A raw frame's payload
    /// was read into the window whole and stays there until the frame is
    /// done, so this needs no I/O.
    fn entry_at(&self, id: u64) -> &[u8] {
        match &self.frame {
            Current::None => unreachable!("checked by holds_next"),
            Current::Owned(f) => f.entry(id).expect("checked by holds_next"),
            Current::InWindow {
                start_id,
                base,
                spans,
            } => {
                let span = &spans[(id - start_id) as usize];
                let c = self.cursor.as_ref().expect("in-window frame has a cursor");
                c.win
                    .cached(base + span.start as u64, (span.end - span.start) as usize)
                    .expect("frame payload stays in the window")
            }
        }
    }

    /// Like `next`, lending the entry's bytes instead of copying them: the
    /// fastest way through a log.
    pub fn next_ref(&mut self) -> Option<Result<(u64, &[u8])>> {
        if self.failed {
            return None;
        }
        let s = self.stream.clone()?;
        while !self.holds_next() {
            // Guards the cursor too: its window may reach frames written
            // but not yet durable (Strict) or not yet flushed (Async).
            match s.readable(&self.ctx, self.next) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
            match self.load(&s) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    // A damaged stretch is reported once, and stepped over:
                    // `next_id` is then the first id after it.
                    self.failed = !std::mem::take(&mut self.skipped);
                    return Some(Err(e));
                }
            }
        }
        let id = self.next;
        self.next += 1;
        Some(Ok((id, self.entry_at(id))))
    }

    /// Loads the frame holding `self.next`. Ok(false): nothing to load.
    fn load(&mut self, s: &Arc<Stream>) -> Result<bool> {
        let ctx = &*self.ctx;
        if let Some(c) = &mut self.cursor {
            if c.off < c.win.limit() {
                let read = c.win.header(c.off).and_then(|h| {
                    if !h.contains(self.next) {
                        return Err(ReadError::Bad(crate::segment::Fault::new(
                            c.off,
                            format!(
                                "frame starts at id {} where id {} was expected",
                                h.start_id, self.next
                            ),
                        )));
                    }
                    let frame = match h.frame_type {
                        FrameType::Raw => Current::InWindow {
                            start_id: h.start_id,
                            base: c.off + HEADER_SIZE as u64,
                            spans: c.win.raw_spans(c.off, &h)?,
                        },
                        FrameType::Lz4 => Current::Owned(c.win.frame(c.off, &h)?),
                    };
                    Ok((h, frame))
                });
                return match read {
                    Ok((h, f)) => {
                        c.off += h.frame_len();
                        self.frame = f;
                        Ok(true)
                    }
                    Err(ReadError::Io(e)) => Err(e.into()),
                    Err(ReadError::Bad(f)) => {
                        let seg = c.seg.clone();
                        Err(self.step_over(s, seg, f))
                    }
                };
            }
            // This window is used up: the segment ended or grew past it.
            self.cursor = None;
            self.frame = Current::None;
        }
        let seg = match s.segment_for(self.next) {
            Some(seg) if self.next < seg.extent().end_id || !seg.extent().sealed => seg,
            Some(seg) => match s.segment_after(seg.start_id) {
                Some(n) => {
                    self.next = self.next.max(n.start_id);
                    n
                }
                None => return Ok(false),
            },
            None => {
                // Below the first retained id: start at the first one.
                let Some(first) = s.segment_after(self.next) else {
                    return Ok(false);
                };
                self.next = first.start_id;
                first
            }
        };
        if !s.readable(ctx, self.next)? {
            return Ok(false);
        }
        let chunk = ctx.opts.read_buffer_size.max(64 << 10);
        // A reader entering a segment at its first id starts at byte 0 and
        // needs no index (building one would check every crc a second time).
        let (win, off) = if self.next == seg.start_id {
            (s.raw_window(ctx, &seg, chunk)?, 0)
        } else {
            let mut win = s.window(ctx, &seg, chunk)?;
            match seg.locate(&mut win, self.next) {
                Ok((off, _)) => (win, off),
                Err(ReadError::Io(e)) => return Err(e.into()),
                Err(ReadError::Bad(f)) => return Err(self.step_over(s, seg, f)),
            }
        };
        self.cursor = Some(Cursor { seg, win, off });
        self.load(s)
    }
}

impl WalIdIterator {
    /// The error for damage found at `f` while looking for `self.next`;
    /// when the segment's index knows the damaged stretch (classified when
    /// the segment was recovered or indexed), the iterator moves past it.
    fn step_over(&mut self, s: &Arc<Stream>, seg: Arc<Segment>, f: crate::segment::Fault) -> Error {
        let ctx = self.ctx.clone();
        let chunk = ctx.opts.read_buffer_size.max(64 << 10);
        // Reading from a segment's start needs no index; damage does.
        let win = match s.window(&ctx, &seg, chunk) {
            Ok(w) => w,
            Err(e) => {
                self.cursor = None;
                return e;
            }
        };
        let next = self.next;
        let Some(d) = seg.stretch(|ix| ix.stretch_of(next, Some(f.offset)).cloned()) else {
            return Self::corruption(s, &seg, f.offset, f.reason);
        };
        self.next = self.next.max(d.end_id);
        self.frame = Current::None;
        self.skipped = true;
        let err = Self::corruption(s, &seg, d.offset, d.reason);
        self.cursor = Some(Cursor {
            seg,
            win,
            off: d.end,
        });
        err
    }
}

impl Iterator for WalIdIterator {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|r| r.map(|(id, e)| (id, e.to_vec())))
    }
}

/// Yields entries from a start id on; see [`WalIdIterator`].
pub struct WalIterator(WalIdIterator);

impl WalIterator {
    pub(crate) fn new(ctx: Arc<Ctx>, stream: Option<Arc<Stream>>, start: u64) -> WalIterator {
        WalIterator(WalIdIterator::new(ctx, stream, start))
    }

    /// The id the next call yields.
    pub fn next_id(&self) -> u64 {
        self.0.next_id()
    }
}

impl Iterator for WalIterator {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|r| r.map(|(_, e)| e))
    }
}
