//! `log`: every retained entry of a stream, concatenated in id order,
//! growing as entries arrive. Offsets never move while mounted, so `tail -f`
//! never re-prints or loses its place; `tail -n` reads only the end.
//! Damaged entries keep their place (their length, or their stretch's
//! length on disk when it is unknown): a read that touches them fails
//! with EIO, every other byte reads.

use super::{At, FileOps, Handle, Serve, View};
use crate::mount::errno::{errno, Errno};
use crate::mount::tree::{Attr, Cache};
use std::collections::HashMap;

pub(super) struct Log;

impl FileOps for Log {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        let size = size(v, at.sno, at.stream)?;
        Ok(
            Attr::file(at.node.ino(), size, v.modes().readable_file(), Cache::Name)
                .modified(v.source().modified(at.stream)),
        )
    }

    fn open(
        &self,
        _v: &View,
        _at: &At,
        _read: bool,
        write: bool,
    ) -> Result<(Handle, Serve), Errno> {
        // `log` bypasses the page cache: a page cached from a short read
        // (zero-filled past the old end) can survive the kernel's
        // invalidation while a concurrent read holds it, and a reader would
        // then see zeros where entries are.
        super::open_live_reader(write)
    }

    fn read(
        &self,
        v: &View,
        at: &At,
        _h: &mut Handle,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, Errno> {
        v.require_stream(at)?;
        read(v, at.sno, at.stream, offset, size)
    }
}

/// Where each segment's entries start in the `log` file. Offsets never
/// move while mounted: truncation leaves a hole (read as zeros) instead of
/// shifting the data, so a follower's position stays valid.
#[derive(Default)]
pub struct LogMap {
    /// (segment start id, log offset, entry bytes), ascending.
    segs: Vec<(u64, u64, u64)>,
    /// Log offset where the first segment ever seen starts (0).
    hole_end: u64,
}

impl LogMap {
    pub fn refresh(&mut self, payloads: &[(u64, u64)]) {
        let known: HashMap<u64, u64> = self.segs.iter().map(|&(s, o, _)| (s, o)).collect();
        let anchor = payloads.iter().position(|(s, _)| known.contains_key(s));
        let (from, mut off) = match anchor {
            Some(i) => (i, known[&payloads[i].0]),
            // Everything known was truncated away: continue after it.
            None => (0, self.end()),
        };
        let mut segs = Vec::with_capacity(payloads.len() - from);
        for &(s, p) in &payloads[from..] {
            segs.push((s, off, p));
            off += p;
        }
        if let Some(&(_, first, _)) = segs.first() {
            self.hole_end = first;
        }
        self.segs = segs;
    }

    pub fn end(&self) -> u64 {
        self.segs.last().map_or(self.hole_end, |&(_, o, p)| o + p)
    }
}

/// The size of the stream's `log`, bringing its layout up to date.
pub(super) fn size(v: &View, sno: u32, name: &str) -> Result<u64, Errno> {
    let payloads = v.source().segment_payloads(name).map_err(|e| errno(&e))?;
    let mut logs = v.logs().lock();
    let map = logs.entry(sno).or_default();
    map.refresh(&payloads);
    Ok(map.end())
}

fn read(v: &View, sno: u32, name: &str, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
    let end = self::size(v, sno, name)?;
    let (segs, hole_end) = {
        let logs = v.logs().lock();
        let m = &logs[&sno];
        (m.segs.clone(), m.hole_end)
    };
    let mut out = Vec::with_capacity(size.min(end.saturating_sub(offset) as usize));
    let mut pos = offset;
    // Entries truncated away while mounted read as zeros.
    if pos < hole_end {
        let n = ((hole_end - pos) as usize).min(size);
        out.resize(n, 0);
        pos += n as u64;
    }
    let mut i = segs
        .partition_point(|&(_, o, _)| o <= pos)
        .saturating_sub(1);
    while out.len() < size && i < segs.len() {
        let (start, log_off, payload) = segs[i];
        if pos >= log_off + payload {
            i += 1;
            continue;
        }
        let before = out.len();
        match v
            .source()
            .read_payload(name, start, pos - log_off, size, &mut out)
        {
            Ok(()) => {}
            // Damaged entries: the bytes before them are served, and the
            // read that starts in them fails (EIO).
            Err(_) if before > 0 => break,
            Err(e) => return Err(errno(&e)),
        }
        if out.len() == before {
            break;
        }
        pos += (out.len() - before) as u64;
    }
    Ok(out)
}
