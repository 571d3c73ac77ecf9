//! `entries/` and `entries/<id>`: one read-only file per entry, named by its
//! id in canonical decimal, with its exact size.

use super::{Add, At, FileOps, Handle, Serve, View};
use crate::mount::errno::{errno, Errno};
use crate::mount::names::parse_id;
use crate::mount::tree::{itoa, itoa_buf, Attr, Cache, Kind, Node, VALUE_BITS};

pub(super) struct Entries;
pub(super) struct Entry;

impl FileOps for Entries {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        Ok(Attr::dir(at.node.ino(), v.modes().fixed_dir(), Cache::Name)
            .modified(v.source().modified(at.stream)))
    }

    fn lookup(&self, _v: &View, at: &At, name: &[u8]) -> Result<Node, Errno> {
        let id = parse_id(name)
            .filter(|&id| id < 1 << VALUE_BITS)
            .ok_or(libc::ENOENT)?;
        Ok(entry(at, id))
    }

    /// The id is the offset: listing resumes without state and never
    /// builds the list. Entry `id` has offset id + 4.
    fn readdir(&self, v: &View, at: &At, offset: u64, add: &mut Add) -> Result<(), Errno> {
        v.require_stream(at)?;
        let end = v.source().next_id(at.stream).min(1 << VALUE_BITS);
        let mut id = v.source().first_id(at.stream).max(offset.saturating_sub(3));
        let mut buf = itoa_buf();
        while id < end {
            if !add(itoa(&mut buf, id), entry(at, id).ino(), false, id + 4) {
                return Ok(());
            }
            id += 1;
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
}

fn entry(at: &At, id: u64) -> Node {
    Node::In {
        sno: at.sno,
        root_view: at.root_view,
        kind: Kind::Entry,
        value: id,
    }
}

impl FileOps for Entry {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        let len = v
            .source()
            .entry_len(at.stream, at.value)
            .map_err(|e| errno(&e))?
            .ok_or(libc::ENOENT)?;
        Ok(Attr::file(
            at.node.ino(),
            len,
            v.modes().readable_file(),
            Cache::Immutable,
        ))
    }

    fn open(&self, v: &View, at: &At, _read: bool, write: bool) -> Result<(Handle, Serve), Errno> {
        if write {
            return Err(libc::EACCES);
        }
        self.attr(v, at)?;
        let serve = Serve {
            keep_cache: true,
            no_flush: true,
            ..Serve::default()
        };
        Ok((Handle::Plain, serve))
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
        v.source()
            .read_entry(at.stream, at.value, offset, size)
            .map_err(|e| errno(&e))?
            .ok_or(libc::ENOENT)
    }
}
