//! `segments/` and `segments/<name>.wal`: the raw segment files, byte for
//! byte, growing while active. Removing the oldest sealed segment frees it
//! (truncation); removing any other is refused.

use super::{Add, At, FileOps, Handle, Serve, View};
use crate::format;
use crate::mount::errno::{errno, Errno};
use crate::mount::tree::{Attr, Cache, Kind, Node, VALUE_BITS};
use crate::sharded;
use crate::SegmentInfo;

pub(super) struct Segments;
pub(super) struct Segment;

impl FileOps for Segments {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        Ok(
            Attr::dir(at.node.ino(), v.modes().changeable_dir(), Cache::Name)
                .modified(v.source().modified(at.stream)),
        )
    }

    fn lookup(&self, _v: &View, at: &At, name: &[u8]) -> Result<Node, Errno> {
        let start = std::str::from_utf8(name)
            .ok()
            .and_then(format::parse_segment_name)
            .filter(|&s| s < 1 << VALUE_BITS)
            .ok_or(libc::ENOENT)?;
        Ok(segment(at, start))
    }

    fn readdir(&self, v: &View, at: &At, offset: u64, add: &mut Add) -> Result<(), Errno> {
        v.require_stream(at)?;
        for seg in v.source().segments(at.stream) {
            let next = seg.start_id + 4;
            if next <= offset || seg.start_id >= 1 << VALUE_BITS {
                continue;
            }
            let name = format::segment_name(seg.start_id);
            if !add(
                name.as_bytes(),
                segment(at, seg.start_id).ino(),
                false,
                next,
            ) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn open(
        &self,
        _v: &View,
        _at: &At,
        _read: bool,
        write: bool,
    ) -> Result<(Handle, Serve), Errno> {
        super::refuse_dir_open(write)
    }

    /// Unlinking the oldest sealed segment truncates the stream; every
    /// other unlink is refused.
    fn unlink(&self, v: &View, at: &At, name: &[u8]) -> Result<(), Errno> {
        if v.read_only() {
            return Err(libc::EROFS);
        }
        v.require_stream(at)?;
        let start = std::str::from_utf8(name)
            .ok()
            .and_then(format::parse_segment_name)
            .ok_or(libc::ENOENT)?;
        let segs = v.source().segments(at.stream);
        let Some(pos) = segs.iter().position(|s| s.start_id == start) else {
            return Err(libc::ENOENT);
        };
        if pos != 0 || !segs[0].sealed {
            return Err(libc::EPERM);
        }
        let next = segs[1].start_id;
        // A shard of a sharded log keeps every id a listed checkpoint
        // names (as `prune` does).
        if let Some((floor, id)) = checkpoint_floor(v, at.stream) {
            if next > floor {
                log::warn!(
                    "refused to remove segment {} of {}: checkpoint {id} names offset {floor} of the shard, and the segment holds ids up to {}; compact the checkpoints first (`walfs checkpoint compact DATA --keep N`, with the log unmounted)",
                    segs[0].start_id,
                    at.stream,
                    next - 1
                );
                return Err(libc::EBUSY);
            }
        }
        before_truncation(v, at.stream)?;
        v.source()
            .truncate(at.stream, next)
            .map_err(|e| errno(&e))?;
        Ok(())
    }
}

/// For a shard of a sharded log: the lowest offset of it a listed
/// checkpoint names, and that checkpoint's id (shown). Ids from the floor
/// on are kept, as `prune` keeps them.
pub(crate) fn checkpoint_floor(v: &View, stream: &str) -> Option<(u64, String)> {
    let (cp, shard) = (v.sharded()?, sharded::shard_number(stream)?);
    let listed = cp.checkpoints();
    sharded::checkpoint_floor(listed.iter().map(|(_, e)| e), shard)
        .map(|(floor, id)| (floor, format!("{:?}", sharded::show_id(&id))))
}

/// Before the oldest segments of `stream` go: `log` learns where each
/// segment's entries are, so that its offsets stay where they are even if
/// nobody read it yet.
pub(crate) fn before_truncation(v: &View, stream: &str) -> Result<(), Errno> {
    let sno = v.sno(stream).ok_or(libc::ENOENT)?;
    super::log::size(v, sno, stream).map(|_| ())
}

fn segment(at: &At, start: u64) -> Node {
    Node::In {
        sno: at.sno,
        root_view: at.root_view,
        kind: Kind::Segment,
        value: start,
    }
}

/// The retained segment of the node's stream starting at its value.
fn find(v: &View, at: &At) -> Result<SegmentInfo, Errno> {
    v.source()
        .segments(at.stream)
        .into_iter()
        .find(|s| s.start_id == at.value)
        .ok_or(libc::ENOENT)
}

impl FileOps for Segment {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        let seg = find(v, at)?;
        let cache = if seg.sealed {
            Cache::Immutable
        } else {
            Cache::Live
        };
        Ok(
            Attr::file(at.node.ino(), seg.len, v.modes().readable_file(), cache)
                .modified(v.source().segment_modified(at.stream, &seg)),
        )
    }

    fn open(&self, v: &View, at: &At, _read: bool, write: bool) -> Result<(Handle, Serve), Errno> {
        if write {
            return Err(libc::EACCES);
        }
        let seg = find(v, at)?;
        let bytes = v
            .source()
            .open_segment(at.stream, &seg)
            .map_err(|e| errno(&e))?;
        // A sealed segment never changes: its pages may stay cached, or
        // the kernel may read its file itself (passthrough). The active
        // one may hold bytes not yet durable: always through the daemon.
        let serve = Serve {
            direct: !seg.sealed,
            keep_cache: seg.sealed,
            passthrough: seg.sealed,
            no_flush: true,
            ..Serve::default()
        };
        Ok((Handle::Segment(bytes), serve))
    }

    fn read(
        &self,
        _v: &View,
        _at: &At,
        h: &mut Handle,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, Errno> {
        let Handle::Segment(f) = h else {
            return Err(libc::EBADF);
        };
        let mut buf = vec![0u8; size];
        let mut got = 0;
        while got < size {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }
}
