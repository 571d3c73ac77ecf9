//! `append`: each line written (up to and including `\n`) is an entry; the
//! complete lines of one write(2) are one frame, committed (durably, in
//! strict mode) before the write returns. A trailing partial line waits in
//! the open file and is committed at close. Reading a read-write handle
//! shows `FIRST-LAST` per committed write, each line once.

use super::{At, FileOps, Handle, Serve, View};
use crate::mount::errno::{errno, Errno};
use crate::mount::tree::{Attr, Cache};

/// The longest entry the mount takes: a line of `append` (with its
/// newline, or held before it arrives), or a `record`.
pub const MAX_RECORD: usize = 64 << 20;

/// The most unread "FIRST-LAST" lines a read-write handle keeps (1 MiB,
/// some 50,000 writes): past it the oldest go. A write-only handle keeps
/// none (nobody can read them), so a descriptor held open for days by a
/// logger costs nothing per write.
pub const MAX_UNREAD_IDS: usize = 1 << 20;

pub(super) struct Append;

/// An open `append`.
pub struct State {
    sno: u32,
    /// The `append` inode it was opened on (see `mount/slots.rs`).
    pub(super) slot: u64,
    /// The bytes of a line whose newline has not arrived yet.
    pending: Vec<u8>,
    /// "FIRST-LAST\n" per committed write: what reads of the handle show,
    /// each line once, whatever the file position (like a pipe).
    ids: String,
    ids_read: usize,
    /// Opened for reading too: ids are kept for it.
    keep_ids: bool,
    /// Unread ids were dropped (said once).
    ids_dropped: bool,
    /// Set by the first failed write: the handle then refuses every write
    /// and commit with this errno, and nothing it held is ever committed.
    pub(super) failed: Option<Errno>,
}

impl FileOps for Append {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        // Its attributes never change (cached: the kernel checks them on
        // every open); its name is looked up every time (see the lookup).
        Ok(Attr::file(
            at.node.ino(),
            0,
            v.modes().append(),
            Cache::Fixed,
        ))
    }

    fn open(&self, v: &View, at: &At, read: bool, write: bool) -> Result<(Handle, Serve), Errno> {
        if v.read_only() {
            return Err(libc::EROFS);
        }
        if !write {
            return Err(libc::EACCES);
        }
        let state = State {
            sno: at.sno,
            slot: at.value,
            pending: Vec::new(),
            ids: String::new(),
            ids_read: 0,
            keep_ids: read,
            ids_dropped: false,
            failed: None,
        };
        Ok((Handle::Append(state), writer_serve()))
    }

    fn read(
        &self,
        _v: &View,
        _at: &At,
        h: &mut Handle,
        _offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, Errno> {
        let Handle::Append(a) = h else {
            return Err(libc::EBADF);
        };
        let out = a.ids.as_bytes()[a.ids_read..(a.ids_read + size).min(a.ids.len())].to_vec();
        a.ids_read += out.len();
        Ok(out)
    }
}

/// How `append` and `record` are served: every write reaches the daemon
/// (no page cache), writes through different handles may run at once
/// (group commit), and close(2) must reach it to commit.
pub(super) fn writer_serve() -> Serve {
    Serve {
        direct: true,
        keep_cache: false,
        parallel_writes: true,
        no_flush: false,
        passthrough: false,
    }
}

impl State {
    pub(super) fn poison(&mut self, errno: Errno) {
        self.failed = Some(errno);
        self.pending = Vec::new();
    }

    /// Every complete line of one write(2) becomes one entry of one frame;
    /// a trailing partial line waits in the handle.
    pub(super) fn write(&mut self, v: &View, data: &[u8]) -> Result<u32, Errno> {
        let Some(last_nl) = data.iter().rposition(|&b| b == b'\n') else {
            if self.pending.len() + data.len() > MAX_RECORD {
                return Err(libc::EFBIG);
            }
            self.pending.extend_from_slice(data);
            return Ok(data.len() as u32);
        };
        let (complete, rest) = data.split_at(last_nl + 1);
        if rest.len() > MAX_RECORD {
            return Err(libc::EFBIG);
        }
        let mut lines: Vec<&[u8]> = Vec::with_capacity(complete.len() / 32 + 1);
        let mut from = 0;
        for nl in memchr::memchr_iter(b'\n', complete) {
            // The held partial line joins the first one: no entry, joined or
            // not, may pass the bound.
            let held = if lines.is_empty() {
                self.pending.len()
            } else {
                0
            };
            if held + nl + 1 - from > MAX_RECORD {
                return Err(libc::EFBIG);
            }
            lines.push(&complete[from..=nl]);
            from = nl + 1;
        }
        let first;
        if !self.pending.is_empty() {
            first = [self.pending.as_slice(), lines[0]].concat();
            lines[0] = &first;
        }
        let name = v.live_name(self.sno)?;
        let r = v
            .source()
            .append_batch(&name, &lines)
            .map_err(|e| errno(&e))?;
        self.note_ids(r);
        self.pending.clear();
        self.pending.extend_from_slice(rest);
        Ok(data.len() as u32)
    }

    /// Commits the held partial line, if any.
    pub(super) fn commit(&mut self, v: &View) -> Result<(), Errno> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let entry = std::mem::take(&mut self.pending);
        let r = v.commit_entry(self.sno, &entry)?;
        self.note_ids(r);
        Ok(())
    }

    /// Bytes of "FIRST-LAST" lines kept (read or not) for the handle.
    #[cfg(test)]
    pub(crate) fn ids_held(&self) -> usize {
        self.ids.len()
    }

    /// Keeps "FIRST-LAST" of a committed write for reads of the handle
    /// (none for a write-only one; at most [`MAX_UNREAD_IDS`] unread).
    fn note_ids(&mut self, r: std::ops::Range<u64>) {
        if !self.keep_ids {
            return;
        }
        // What was read goes (all of it, or once it is worth a copy).
        if self.ids_read == self.ids.len() || self.ids_read >= 1 << 16 {
            self.ids.drain(..self.ids_read);
            self.ids_read = 0;
        }
        self.ids.push_str(&format!("{}-{}\n", r.start, r.end - 1));
        if self.ids.len() - self.ids_read > MAX_UNREAD_IDS {
            // Drop whole old lines, unread: the handle's reader fell too far
            // behind to be owed them.
            let cut = self.ids.len() - MAX_UNREAD_IDS;
            let cut = self.ids[cut..]
                .find('\n')
                .map_or(self.ids.len(), |i| cut + i + 1);
            if !self.ids_dropped {
                log::warn!("an append handle's unread ids passed {MAX_UNREAD_IDS} bytes: the oldest are dropped (read the handle as you write)");
                self.ids_dropped = true;
            }
            self.ids.drain(..cut);
            self.ids_read = 0;
        }
    }
}
