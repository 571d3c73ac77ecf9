//! `record`: everything written between open and close is one entry,
//! whatever bytes it holds, up to [`MAX_RECORD`], committed at close. The
//! boundary does not depend on how the kernel splits the writes.

use super::append::{writer_serve, MAX_RECORD};
use super::{At, FileOps, Handle, Serve, View};
use crate::mount::errno::Errno;
use crate::mount::tree::{Attr, Cache};

pub(super) struct Record;

/// An open `record`.
pub struct State {
    sno: u32,
    buf: Vec<u8>,
    dirty: bool,
    /// As for `append`'s state.
    pub(super) failed: Option<Errno>,
}

impl FileOps for Record {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        Ok(Attr::file(
            at.node.ino(),
            0,
            v.modes().record(),
            Cache::Fixed,
        ))
    }

    fn open(&self, v: &View, at: &At, read: bool, write: bool) -> Result<(Handle, Serve), Errno> {
        if v.read_only() {
            return Err(libc::EROFS);
        }
        if read || !write {
            return Err(libc::EACCES);
        }
        let state = State {
            sno: at.sno,
            buf: Vec::new(),
            dirty: false,
            failed: None,
        };
        Ok((Handle::Record(state), writer_serve()))
    }

    fn read(
        &self,
        _v: &View,
        _at: &At,
        _h: &mut Handle,
        _offset: u64,
        _size: usize,
    ) -> Result<Vec<u8>, Errno> {
        Err(libc::EBADF)
    }
}

impl State {
    pub(super) fn poison(&mut self, errno: Errno) {
        self.failed = Some(errno);
        self.buf = Vec::new();
        self.dirty = false;
    }

    pub(super) fn write(&mut self, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_RECORD as u64)
            .ok_or(libc::EFBIG)? as usize;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[offset as usize..end].copy_from_slice(data);
        self.dirty = true;
        Ok(data.len() as u32)
    }

    pub(super) fn commit(&mut self, v: &View) -> Result<(), Errno> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let entry = std::mem::take(&mut self.buf);
        v.commit_entry(self.sno, &entry).map(|_| ())
    }
}
