//! One module per kind of mounted file. Each holds everything that kind
//! means: its attributes, lookup and listing (directories), open, read and
//! write. A new kind is a new module, a new [`Kind`], and one line in
//! [`ops`].

pub(crate) mod append;
mod checkpoints;
mod dir;
mod entries;
mod log;
mod record;
mod segments;
pub(crate) use segments::{before_truncation, checkpoint_floor};
mod stat;
mod streams;

pub(super) use self::log::LogMap;
pub use append::MAX_RECORD;

use super::errno::Errno;
use super::tree::{Attr, Kind, Node};
use super::view::View;
use crate::source::SegmentBytes;

/// A node, with its stream resolved by the view.
pub(super) struct At<'a> {
    pub node: Node,
    /// The stream's number in inode numbers.
    pub sno: u32,
    /// The stream's name (empty for `streams/`).
    pub stream: &'a str,
    /// The root's copy of the root stream, not the one under `streams/`.
    pub root_view: bool,
    /// The entry id or segment start the node names.
    pub value: u64,
}

/// How an opened file is served (the view adds its handle number).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Serve {
    pub direct: bool,
    pub keep_cache: bool,
    pub parallel_writes: bool,
    pub no_flush: bool,
    /// The kernel may read the file itself (a sealed segment).
    pub passthrough: bool,
}

/// Adds a directory entry (name, inode, is a directory, next offset);
/// false when the reply is full.
pub(super) type Add<'a> = dyn FnMut(&[u8], u64, bool, u64) -> bool + 'a;

/// What a kind of file does. The defaults answer as a file that allows
/// nothing: a directory operation on a file is ENOTDIR, a change EACCES.
pub(super) trait FileOps: Sync {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno>;

    fn lookup(&self, _v: &View, _at: &At, _name: &[u8]) -> Result<Node, Errno> {
        Err(libc::ENOTDIR)
    }

    /// The entries after `.` and `..`, numbered from offset 3.
    fn readdir(&self, _v: &View, _at: &At, _offset: u64, _add: &mut Add) -> Result<(), Errno> {
        Err(libc::ENOTDIR)
    }

    fn open(
        &self,
        _v: &View,
        _at: &At,
        _read: bool,
        write: bool,
    ) -> Result<(Handle, Serve), Errno> {
        if write {
            return Err(libc::EACCES);
        }
        Ok((
            Handle::Plain,
            Serve {
                no_flush: true,
                ..Serve::default()
            },
        ))
    }

    fn read(
        &self,
        _v: &View,
        _at: &At,
        _h: &mut Handle,
        _offset: u64,
        _size: usize,
    ) -> Result<Vec<u8>, Errno> {
        Err(libc::EISDIR)
    }

    fn mkdir(&self, _v: &View, _at: &At, _name: &[u8]) -> Result<Node, Errno> {
        Err(libc::EACCES)
    }

    fn rmdir(&self, _v: &View, _at: &At, _name: &[u8]) -> Result<(), Errno> {
        Err(libc::EACCES)
    }

    fn unlink(&self, _v: &View, _at: &At, _name: &[u8]) -> Result<(), Errno> {
        Err(libc::EACCES)
    }

    /// `truncate` to `size`, refused on every file (`O_TRUNC` at open is
    /// passed with the open, atomically, and means nothing here: `>`
    /// redirections to `append` and `record` work); other attribute changes
    /// are always refused.
    fn set_size(&self, _size: u64) -> Result<(), Errno> {
        Err(libc::EPERM)
    }
}

/// Up to `size` bytes of `b` from `offset` (none past its end): a read of
/// a file whose whole contents are at hand.
pub(super) fn byte_range(b: &[u8], offset: u64, size: usize) -> Vec<u8> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
    b[start..start.saturating_add(size).min(b.len())].to_vec()
}

/// Opening a file whose contents change under readers (`log`, `stat`):
/// read-only, served around the page cache.
pub(super) fn open_live_reader(write: bool) -> Result<(Handle, Serve), Errno> {
    if write {
        return Err(libc::EACCES);
    }
    let serve = Serve {
        direct: true,
        no_flush: true,
        ..Serve::default()
    };
    Ok((Handle::Plain, serve))
}

/// Opening a directory that takes no writes as a file.
pub(super) fn refuse_dir_open(write: bool) -> Result<(Handle, Serve), Errno> {
    Err(if write { libc::EACCES } else { libc::EISDIR })
}

/// `truncate` to 0 and `O_TRUNC` on a file that only takes new entries:
/// nothing to cut. Any other size is refused.
/// The table: what each kind of node is.
pub(super) fn ops(node: Node) -> &'static dyn FileOps {
    match node {
        Node::Root => &dir::StreamDir,
        Node::Streams => &streams::Streams,
        Node::Checkpoints => &checkpoints::Dir,
        Node::CheckpointHead => &checkpoints::Head,
        Node::CheckpointNew => &checkpoints::New,
        Node::Checkpoint(_) => &checkpoints::File,
        Node::In { kind, .. } => match kind {
            Kind::Dir => &dir::StreamDir,
            Kind::Append => &append::Append,
            Kind::Record => &record::Record,
            Kind::Log => &log::Log,
            Kind::Stat => &stat::Stat,
            Kind::Entries => &entries::Entries,
            Kind::Entry => &entries::Entry,
            Kind::Segments => &segments::Segments,
            Kind::Segment => &segments::Segment,
        },
    }
}

/// The state of an open file.
pub enum Handle {
    Append(append::State),
    Record(record::State),
    /// An open `checkpoints/new`.
    Checkpoint(checkpoints::State),
    Segment(Box<dyn SegmentBytes>),
    Plain,
}

impl Handle {
    /// Open for writing (`append`, `record`).
    pub fn is_writer(&self) -> bool {
        matches!(
            self,
            Handle::Append(_) | Handle::Record(_) | Handle::Checkpoint(_)
        )
    }

    /// The errno of an earlier failed write, if this handle took one.
    pub fn failed(&self) -> Option<Errno> {
        match self {
            Handle::Append(a) => a.failed,
            Handle::Record(r) => r.failed,
            Handle::Checkpoint(c) => c.failed,
            _ => None,
        }
    }

    /// The `append` inode an `append` handle was opened on.
    pub fn append_slot(&self) -> Option<u64> {
        match self {
            Handle::Append(a) => Some(a.slot),
            _ => None,
        }
    }

    /// A write failed: drop everything uncommitted and refuse from now on.
    pub fn poison(&mut self, errno: Errno) {
        match self {
            Handle::Append(a) => a.poison(errno),
            Handle::Record(r) => r.poison(errno),
            Handle::Checkpoint(c) => c.poison(errno),
            _ => {}
        }
    }

    /// Takes bytes written at `offset`; returns how many.
    pub(super) fn write(&mut self, v: &View, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        match self {
            Handle::Append(a) => a.write(v, data),
            Handle::Record(r) => r.write(offset, data),
            Handle::Checkpoint(c) => c.write(v, data),
            _ => Err(libc::EBADF),
        }
    }

    /// Commits what the handle holds (close(2) and fsync(2)).
    pub(super) fn commit(&mut self, v: &View) -> Result<(), Errno> {
        match self {
            Handle::Append(a) => a.commit(v),
            Handle::Record(r) => r.commit(v),
            Handle::Checkpoint(c) => c.commit(v),
            _ => Ok(()),
        }
    }
}
