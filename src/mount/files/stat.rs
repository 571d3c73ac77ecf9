//! `stat`: the stream's state as `key: value` lines.

use super::{At, FileOps, Handle, Serve, View};
use crate::mount::errno::Errno;
use crate::mount::tree::{Attr, Cache};

pub(super) struct Stat;

/// The text of `stat` for `stream` (empty once it is gone).
pub(crate) fn text(v: &View, stream: &str) -> String {
    match v.source().stream_info(stream) {
        Some(info) => info.to_text(v.source().modes()),
        None => String::new(),
    }
}

impl FileOps for Stat {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        let size = text(v, at.stream).len() as u64;
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
        Ok(super::byte_range(
            text(v, at.stream).as_bytes(),
            offset,
            size,
        ))
    }
}
