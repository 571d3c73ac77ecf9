//! `streams/`: every stream as a directory; `mkdir` creates a stream and
//! `rmdir` deletes one with all its entries (never the root stream).

use super::{Add, At, FileOps, Handle, Serve, View};
use crate::format;
use crate::mount::errno::{errno, Errno};
use crate::mount::tree::{Attr, Cache, Kind, Node};

pub(super) struct Streams;

impl FileOps for Streams {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        Ok(Attr::dir(
            at.node.ino(),
            v.modes().changeable_dir(),
            Cache::Live,
        ))
    }

    fn lookup(&self, v: &View, _at: &At, name: &[u8]) -> Result<Node, Errno> {
        let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
        if !format::validate_stream_name(name) || v.source().stream_info(name).is_none() {
            return Err(libc::ENOENT);
        }
        let sno = v.sno(name).ok_or(libc::ENOENT)?;
        Ok(dir_node(sno))
    }

    fn readdir(&self, v: &View, _at: &At, offset: u64, add: &mut Add) -> Result<(), Errno> {
        for (i, name) in v.source().streams().into_iter().enumerate() {
            let next = i as u64 + 3;
            if next <= offset {
                continue;
            }
            let Some(sno) = v.sno(&name) else { continue };
            if !add(name.as_bytes(), dir_node(sno).ino(), true, next) {
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
        _write: bool,
    ) -> Result<(Handle, Serve), Errno> {
        Err(libc::EISDIR)
    }

    fn mkdir(&self, v: &View, at: &At, name: &[u8]) -> Result<Node, Errno> {
        if v.read_only() {
            return Err(libc::EROFS);
        }
        let name_str = std::str::from_utf8(name).map_err(|_| libc::EINVAL)?;
        if !format::validate_stream_name(name_str) {
            return Err(libc::EINVAL);
        }
        if let Some(why) = format::refuse_new_stream_name(name_str) {
            log::warn!("mkdir streams/{name_str} refused: {why}");
            return Err(libc::EINVAL);
        }
        // A name taken by something else in the data directory (walfs.lock,
        // a file): it exists, it is not a stream.
        v.source().create_stream(name_str).map_err(|e| match &e {
            crate::Error::Io(io) if io.kind() == std::io::ErrorKind::AlreadyExists => libc::EEXIST,
            _ if e.errno_is(libc::ENOTDIR) => libc::EEXIST,
            _ => errno(&e),
        })?;
        self.lookup(v, at, name)
    }

    /// `rmdir streams/<name>` deletes the stream and all its entries.
    fn rmdir(&self, v: &View, _at: &At, name: &[u8]) -> Result<(), Errno> {
        if v.read_only() {
            return Err(libc::EROFS);
        }
        let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
        if v.source().stream_info(name).is_none() {
            return Err(libc::ENOENT);
        }
        if v.root_stream().as_deref() == Some(name) {
            return Err(libc::EBUSY);
        }
        v.source().delete_stream(name).map_err(|e| errno(&e))
    }
}

fn dir_node(sno: u32) -> Node {
    Node::In {
        sno,
        root_view: false,
        kind: Kind::Dir,
        value: 0,
    }
}
