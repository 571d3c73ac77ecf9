//! `checkpoints/` of a sharded log: one read-only file per checkpoint
//! (`shard_NN: offset` lines), `HEAD` (the latest one's file name) and
//! `new` (each line written makes a checkpoint with that id, durable when
//! the write returns, naming every entry acknowledged before it, whatever
//! the sync mode).
//!
//! A checkpoint id is its file name when it is one (1-255 bytes, no `/` or
//! NUL, not `.`, `..`, `HEAD` or `new`, not starting with `%`); any other id
//! shows as `%` and its bytes in hex.

use super::append::writer_serve;
use super::{At, FileOps, Handle, Serve, View};
use crate::mount::errno::{errno, Errno};
use crate::mount::tree::{Attr, Cache, Node};
use crate::sharded::checkpoints::Entry;

pub(super) struct Dir;
pub(super) struct File;
pub(super) struct Head;
pub(super) struct New;

/// The file name of checkpoint `id`.
pub fn file_name(id: &[u8]) -> Vec<u8> {
    let plain = !id.is_empty()
        && id.len() <= 255
        && !id.contains(&b'/')
        && !id.contains(&0)
        && !matches!(id, b"." | b".." | b"HEAD" | b"new")
        && id[0] != b'%';
    if plain {
        return id.to_vec();
    }
    let mut s = b"%".to_vec();
    for b in id {
        s.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    s
}

/// The id a file name stands for.
pub fn id_of(name: &[u8]) -> Option<Vec<u8>> {
    match name.strip_prefix(b"%") {
        None => Some(name.to_vec()),
        Some(hex) if hex.len() % 2 == 0 && !hex.is_empty() => hex
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
            .collect(),
        Some(_) => None,
    }
}

/// What a checkpoint's file holds.
pub fn text(e: &Entry) -> String {
    e.offsets
        .iter()
        .enumerate()
        .map(|(s, o)| format!("{}: {o}\n", crate::sharded::shard_name(s as u16)))
        .collect()
}

fn head_text(v: &View) -> Vec<u8> {
    let Some(sw) = v.sharded() else {
        return Vec::new();
    };
    match sw.latest_id() {
        Some(id) => {
            let mut t = file_name(&id);
            t.push(b'\n');
            t
        }
        None => Vec::new(),
    }
}

impl FileOps for Dir {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        v.sharded().ok_or(libc::ENOENT)?;
        Ok(Attr::dir(at.node.ino(), v.modes().fixed_dir(), Cache::Live))
    }

    fn lookup(&self, v: &View, _at: &At, name: &[u8]) -> Result<Node, Errno> {
        let sw = v.sharded().ok_or(libc::ENOENT)?;
        match name {
            b"HEAD" => Ok(Node::CheckpointHead),
            b"new" => Ok(Node::CheckpointNew),
            _ => {
                let id = id_of(name).ok_or(libc::ENOENT)?;
                if file_name(&id) != name {
                    return Err(libc::ENOENT);
                }
                sw.serial_of(&id).map(Node::Checkpoint).ok_or(libc::ENOENT)
            }
        }
    }

    fn readdir(&self, v: &View, _at: &At, offset: u64, add: &mut super::Add) -> Result<(), Errno> {
        let sw = v.sharded().ok_or(libc::ENOENT)?;
        let mut items: Vec<(Vec<u8>, Node)> = vec![
            (b"HEAD".to_vec(), Node::CheckpointHead),
            (b"new".to_vec(), Node::CheckpointNew),
        ];
        // An id whose name would be over 255 bytes cannot be listed; it
        // stays reachable through the library and the CLI.
        items.extend(
            sw.checkpoints()
                .into_iter()
                .map(|(s, e)| (file_name(&e.id), Node::Checkpoint(s)))
                .filter(|(n, _)| n.len() <= 255),
        );
        for (i, (n, node)) in items.into_iter().enumerate() {
            let next = i as u64 + 3;
            if next > offset && !add(&n, node.ino(), false, next) {
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
}

fn entry(v: &View, at: &At) -> Result<Entry, Errno> {
    let Node::Checkpoint(serial) = at.node else {
        return Err(libc::ENOENT);
    };
    v.sharded()
        .and_then(|sw| sw.by_serial(serial))
        .ok_or(libc::ENOENT)
}

impl FileOps for File {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        let e = entry(v, at)?;
        Ok(Attr::file(
            at.node.ino(),
            text(&e).len() as u64,
            v.modes().readable_file(),
            Cache::Fixed,
        ))
    }

    fn open(&self, v: &View, at: &At, _read: bool, write: bool) -> Result<(Handle, Serve), Errno> {
        if write {
            return Err(libc::EACCES);
        }
        // Opening reads the record again and checks it.
        let e = entry(v, at)?;
        let sw = v.sharded().ok_or(libc::ENOENT)?;
        sw.check(&e.id).map_err(|err| errno(&err))?;
        Ok((
            Handle::Plain,
            Serve {
                no_flush: true,
                keep_cache: true,
                ..Serve::default()
            },
        ))
    }

    fn read(
        &self,
        v: &View,
        at: &At,
        _h: &mut Handle,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, Errno> {
        let e = entry(v, at)?;
        Ok(super::byte_range(text(&e).as_bytes(), offset, size))
    }
}

impl FileOps for Head {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        Ok(Attr::file(
            at.node.ino(),
            head_text(v).len() as u64,
            v.modes().readable_file(),
            Cache::Live,
        ))
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
        _at: &At,
        _h: &mut Handle,
        offset: u64,
        size: usize,
    ) -> Result<Vec<u8>, Errno> {
        Ok(super::byte_range(&head_text(v), offset, size))
    }
}

/// An open `new`: bytes of a line not yet ended.
#[derive(Default)]
pub struct State {
    line: Vec<u8>,
    /// As for `append`'s state.
    pub(super) failed: Option<Errno>,
}

impl FileOps for New {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        Ok(Attr::file(
            at.node.ino(),
            0,
            v.modes().record(),
            Cache::Fixed,
        ))
    }

    fn open(&self, v: &View, _at: &At, read: bool, write: bool) -> Result<(Handle, Serve), Errno> {
        if v.read_only() {
            return Err(libc::EROFS);
        }
        if read || !write {
            return Err(libc::EACCES);
        }
        Ok((Handle::Checkpoint(State::default()), writer_serve()))
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

/// Ids longer than this are refused as they are written (a checkpoint id
/// holds at most 65535 bytes).
const MAX_ID: usize = u16::MAX as usize;

impl State {
    pub(super) fn poison(&mut self, errno: Errno) {
        self.failed = Some(errno);
        self.line = Vec::new();
    }

    /// A checkpoint through the mount names every entry acknowledged
    /// before it, in every sync mode: the shards are synced first (in
    /// strict mode there is nothing left to sync).
    fn make(v: &View, id: &[u8]) -> Result<(), Errno> {
        let sw = v.sharded().ok_or(libc::ENOENT)?;
        sw.make(id).map_err(|e| errno(&e))
    }

    /// Makes a checkpoint of every whole line; keeps the rest.
    pub(super) fn write(&mut self, v: &View, data: &[u8]) -> Result<u32, Errno> {
        let mut rest = data;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            self.line.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            let id = std::mem::take(&mut self.line);
            Self::make(v, &id)?;
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_ID {
            return Err(libc::EINVAL);
        }
        Ok(data.len() as u32)
    }

    /// close(2): a last line without its newline is a checkpoint too.
    pub(super) fn commit(&mut self, v: &View) -> Result<(), Errno> {
        if self.line.is_empty() {
            return Ok(());
        }
        let id = std::mem::take(&mut self.line);
        Self::make(v, &id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for id in [
            &b"raft-5000"[..],
            b"HEAD",
            b"new",
            b".",
            b"a/b",
            b"%41",
            b"\x00\xff",
            &[b'x'; 300],
        ] {
            let n = file_name(id);
            assert!(n.len() <= 255 || id.len() > 127);
            assert_eq!(id_of(&n).as_deref(), Some(id), "{n:?}");
        }
        assert_eq!(file_name(b"snap-1"), b"snap-1");
        assert_eq!(file_name(b"HEAD"), b"%48454144");
        assert_eq!(id_of(b"%4"), None);
    }
}
