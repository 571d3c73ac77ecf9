//! The read side of [`Wal`]: entries by id (whole, in ranges, in batches),
//! iteration, the entry bytes behind the mount's `log`, waiting for new
//! entries, and ids by time.

use super::Wal;
use crate::error::{Error, Result};
use crate::iter::{WalIdIterator, WalIterator};
use std::sync::Arc;
use std::time::Duration;

impl Wal {
    /// The entry with id `id`, or None if it does not exist (not yet
    /// written, truncated away, or no such stream). A damaged frame is an
    /// error naming its segment and offset.
    pub fn get(&self, stream: &str, id: u64) -> Result<Option<Vec<u8>>> {
        self.get_with(stream, id, |b| b.to_vec())
    }

    /// Like [`Wal::get`], handing the entry's bytes to `f` without a copy.
    pub fn get_with<T>(
        &self,
        stream: &str,
        id: u64,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>> {
        let Some(s) = self.stream(stream) else {
            return Ok(None);
        };
        if !s.readable(&self.inner.ctx, id)? {
            return Ok(None);
        }
        let Some(frame) = s.frame_of(&self.inner.ctx, id)? else {
            return Ok(None);
        };
        Ok(frame.entry(id).map(f))
    }

    /// The length of entry `id`, None if it does not exist. An entry alone
    /// in a large frame answers from the frame's header, without reading
    /// the entry (its crc is checked when its bytes are read).
    pub fn entry_len(&self, stream: &str, id: u64) -> Result<Option<u64>> {
        match self.stream(stream) {
            Some(s) => s.entry_len(&self.inner.ctx, id),
            None => Ok(None),
        }
    }

    /// Bytes `[offset, offset + size)` of entry `id`, clipped to its end;
    /// None if it does not exist. An entry alone in a large frame is
    /// checked whole once while open, through a bounded buffer, then read
    /// only where asked: reading a large entry piece by piece never holds
    /// it in memory.
    pub fn read_entry_range(
        &self,
        stream: &str,
        id: u64,
        offset: u64,
        size: usize,
    ) -> Result<Option<Vec<u8>>> {
        match self.stream(stream) {
            Some(s) => s.read_entry_range(&self.inner.ctx, id, offset, size),
            None => Ok(None),
        }
    }

    /// Several entries at once; frames shared by neighbouring ids are read
    /// and decoded once.
    pub fn get_batch(&self, stream: &str, ids: &[u64]) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(s) = self.stream(stream) else {
            return Ok(vec![None; ids.len()]);
        };
        s.flush(&self.inner.ctx)?;
        let visible = s.commit.visible();
        let mut last: Option<Arc<crate::format::DecodedFrame>> = None;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if id >= visible {
                out.push(None);
                continue;
            }
            if let Some(e) = last.as_ref().and_then(|f| f.entry(id)) {
                out.push(Some(e.to_vec()));
                continue;
            }
            last = s.frame_of(&self.inner.ctx, id)?;
            out.push(last.as_ref().and_then(|f| f.entry(id)).map(<[u8]>::to_vec));
        }
        Ok(out)
    }

    /// Entries from `start` on, in id order. A start below the first
    /// retained id begins at the first retained id.
    pub fn iter(&self, stream: &str, start: u64) -> Result<WalIterator> {
        Ok(WalIterator::new(
            self.inner.ctx.clone(),
            self.stream(stream),
            start,
        ))
    }

    /// Like [`Wal::iter`], with ids.
    pub fn iter_with_ids(&self, stream: &str, start: u64) -> Result<WalIdIterator> {
        Ok(WalIdIterator::new(
            self.inner.ctx.clone(),
            self.stream(stream),
            start,
        ))
    }

    /// Blocks until an entry with id `after` or later exists in `stream`,
    /// or `timeout` passes, and returns one past the last visible id. Wakes
    /// on append, without polling.
    pub fn wait_for(&self, stream: &str, after: u64, timeout: Duration) -> Result<u64> {
        match self.stream(stream) {
            Some(s) => {
                s.flush(&self.inner.ctx)?;
                Ok(s.commit.wait_visible(after, timeout))
            }
            None => Err(Error::NoSuchStream(stream.to_owned())),
        }
    }

    /// Entry bytes held by each retained segment of `stream`, as
    /// (start id, bytes): the concatenated entries (the mount's `log`)
    /// laid out segment by segment. Indexes sealed segments on first use.
    pub fn segment_payloads(&self, stream: &str) -> Result<Vec<(u64, u64)>> {
        let Some(s) = self.stream(stream) else {
            return Ok(Vec::new());
        };
        s.flush(&self.inner.ctx)?;
        s.segments()
            .iter()
            .map(|seg| Ok((seg.start_id, s.segment_payload(&self.inner.ctx, seg)?)))
            .collect()
    }

    /// Appends to `out`, up to `max` bytes, the concatenated visible entries
    /// of the segment starting at `segment`, from its entry byte `from` on.
    /// Reads nothing if the segment is no longer retained.
    pub fn read_payload(
        &self,
        stream: &str,
        segment: u64,
        from: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(s) = self.stream(stream) else {
            return Ok(());
        };
        let Some(seg) = s.segment_for(segment).filter(|g| g.start_id == segment) else {
            return Ok(());
        };
        s.read_payload(&self.inner.ctx, &seg, from, max, out)
    }

    /// Blocks until anything is appended to any stream or `timeout` passes;
    /// returns a counter that changes with every publication.
    pub fn wait_any(&self, seen: u64, timeout: Duration) -> u64 {
        self.inner.ctx.epoch.wait(seen, timeout)
    }

    /// The first id of `stream` not acknowledged before `t`, to within a
    /// second (from walfs.times, written while appending): every id below
    /// it was acknowledged before `t`. Before the first record, the first
    /// retained id; 0 if the stream does not exist.
    pub fn id_at_time(&self, stream: &str, t: std::time::SystemTime) -> u64 {
        self.stream(stream)
            .map_or(0, |s| s.id_at_time(&self.inner.ctx, t))
    }
}
