//! Sequential reads: frames are read in large chunks and decoded once,
//! whether the bytes come from a mapping or from pread.

use crate::error::{Error, Location, Result};
use crate::format::DecodedFrame;
use crate::segment::{ReadError, Segment, Window};
use crate::stream::Stream;
use crate::wal::Wal;
use std::sync::Arc;

struct Cursor {
    seg: Arc<Segment>,
    win: Window,
    off: u64,
}

/// Yields `(id, entry)` from a start id to the end of what is visible when
/// each call is made; after `None`, later calls pick up new entries.
pub struct WalIdIterator {
    wal: Wal,
    stream: Option<Arc<Stream>>,
    next: u64,
    cursor: Option<Cursor>,
    frame: Option<DecodedFrame>,
    failed: bool,
}

impl WalIdIterator {
    pub(crate) fn new(wal: Wal, stream: Option<Arc<Stream>>, start: u64) -> WalIdIterator {
        WalIdIterator {
            wal,
            stream,
            next: start,
            cursor: None,
            frame: None,
            failed: false,
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

    /// Loads the frame holding `self.next`. Ok(false): nothing to load.
    fn load(&mut self, s: &Arc<Stream>) -> Result<bool> {
        let ctx = self.wal.ctx();
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
                    c.win.frame(c.off, &h).map(|f| (h, f))
                });
                return match read {
                    Ok((h, f)) => {
                        c.off += h.frame_len();
                        self.frame = Some(f);
                        Ok(true)
                    }
                    Err(ReadError::Io(e)) => Err(e.into()),
                    Err(ReadError::Bad(f)) => Err(Self::corruption(s, &c.seg, f.offset, f.reason)),
                };
            }
            // This window is used up: the segment ended or grew past it.
            self.cursor = None;
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
        if self.next >= s.commit.visible() {
            if self.next >= s.appended() {
                return Ok(false);
            }
            s.flush(ctx)?;
            if self.next >= s.commit.visible() {
                return Ok(false);
            }
        }
        let mut win = s.window(ctx, &seg, ctx.opts.read_buffer_size.max(64 << 10))?;
        let off = match seg.locate(&mut win, self.next) {
            Ok((off, _)) => off,
            Err(ReadError::Io(e)) => return Err(e.into()),
            Err(ReadError::Bad(f)) => return Err(Self::corruption(s, &seg, f.offset, f.reason)),
        };
        self.cursor = Some(Cursor { seg, win, off });
        self.load(s)
    }
}

impl Iterator for WalIdIterator {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let s = self.stream.clone()?;
        loop {
            if let Some(e) = self.frame.as_ref().and_then(|f| f.entry(self.next)) {
                let id = self.next;
                self.next += 1;
                return Some(Ok((id, e.to_vec())));
            }
            if self.next >= s.commit.visible() {
                if self.next >= s.appended() {
                    return None;
                }
                if let Err(e) = s.flush(self.wal.ctx()) {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
            match self.load(&s) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Yields entries from a start id on; see [`WalIdIterator`].
pub struct WalIterator(WalIdIterator);

impl WalIterator {
    pub(crate) fn new(wal: Wal, stream: Option<Arc<Stream>>, start: u64) -> WalIterator {
        WalIterator(WalIdIterator::new(wal, stream, start))
    }

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
