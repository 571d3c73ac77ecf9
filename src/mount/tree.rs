//! The tree's layout and inode numbering, nothing else: which files a
//! stream directory holds, how a node maps to an inode number and back,
//! and the attribute types the kernel is given.
//!
//! ```text
//! /                     the root stream (--stream)
//!   append              write-only: each line is an entry; one write(2) is one frame
//!   record              write-only: everything written between open and close is one entry
//!   log                 read-only: every retained entry, concatenated, growing
//!   stat                read-only: `key: value` lines
//!   entries/<id>        read-only: one entry
//!   segments/<name>.wal read-only: raw segment files; unlink the oldest to truncate
//!   streams/<name>/     the same layout for every stream; mkdir creates, rmdir deletes
//!   checkpoints/        a sharded log only: one read-only file per checkpoint
//!     HEAD              the latest checkpoint's id
//!     new               write-only: each line written is a checkpoint to make
//! ```
//!
//! An inode number is `kind << 60 | root_view << 59 | sno << 40 | value`:
//! the kind of file, whether it is the root's copy of the root stream, the
//! stream's number (assigned on first sight) and the entry id or segment
//! start it names. Nothing has to be remembered to answer a request.

/// The root directory: the root stream's files plus `streams/`.
pub const ROOT_INO: u64 = 1;
/// `streams/`.
pub const STREAMS_INO: u64 = 2;
/// `checkpoints/` (a sharded log).
pub const CHECKPOINTS_INO: u64 = 3;
/// `checkpoints/HEAD`.
pub const CHECKPOINT_HEAD_INO: u64 = 4;
/// `checkpoints/new`.
pub const CHECKPOINT_NEW_INO: u64 = 5;
/// The kind bits of a checkpoint file's inode (its value is the serial).
const CHECKPOINT_KIND: u64 = 10;

/// What a file of a stream directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stream directory.
    Dir = 1,
    /// `append`.
    Append = 2,
    /// `record`.
    Record = 3,
    /// `log`.
    Log = 4,
    /// `stat`.
    Stat = 5,
    /// `entries/`.
    Entries = 6,
    /// `segments/`.
    Segments = 7,
    /// `entries/<id>`.
    Entry = 8,
    /// `segments/<name>.wal`.
    Segment = 9,
}

/// The files of a stream directory, in listing order.
pub const FILES: [(&str, Kind); 6] = [
    ("append", Kind::Append),
    ("record", Kind::Record),
    ("log", Kind::Log),
    ("stat", Kind::Stat),
    ("entries", Kind::Entries),
    ("segments", Kind::Segments),
];

/// A node of the tree. `root_view` tells the root's copy of the root
/// stream from its copy under `streams/` (a directory has one parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The root: the root stream and `streams/`.
    Root,
    /// `streams/`.
    Streams,
    /// `checkpoints/`.
    Checkpoints,
    /// `checkpoints/HEAD`.
    CheckpointHead,
    /// `checkpoints/new`.
    CheckpointNew,
    /// `checkpoints/<id>`, by the checkpoint's serial number.
    Checkpoint(u64),
    /// A node of one stream.
    In {
        /// The stream's number.
        sno: u32,
        /// The root's copy of the root stream.
        root_view: bool,
        /// What the node is.
        kind: Kind,
        /// The entry id or segment start it names.
        value: u64,
    },
}

/// Bits of an inode number that carry an id or a segment start.
pub const VALUE_BITS: u32 = 40;
/// Bits that carry the stream number.
pub const SNO_BITS: u32 = 19;

impl Node {
    /// The inode number of this node.
    pub fn ino(self) -> u64 {
        match self {
            Node::Root => ROOT_INO,
            Node::Streams => STREAMS_INO,
            Node::Checkpoints => CHECKPOINTS_INO,
            Node::CheckpointHead => CHECKPOINT_HEAD_INO,
            Node::CheckpointNew => CHECKPOINT_NEW_INO,
            Node::Checkpoint(serial) => CHECKPOINT_KIND << 60 | (serial & ((1 << 60) - 1)),
            Node::In {
                sno,
                root_view,
                kind,
                value,
            } => {
                (kind as u64) << 60 | (root_view as u64) << 59 | (sno as u64) << VALUE_BITS | value
            }
        }
    }

    /// The node an inode number names, if any.
    pub fn from_ino(ino: u64) -> Option<Node> {
        match ino {
            ROOT_INO => return Some(Node::Root),
            STREAMS_INO => return Some(Node::Streams),
            CHECKPOINTS_INO => return Some(Node::Checkpoints),
            CHECKPOINT_HEAD_INO => return Some(Node::CheckpointHead),
            CHECKPOINT_NEW_INO => return Some(Node::CheckpointNew),
            _ => {}
        }
        if ino >> 60 == CHECKPOINT_KIND {
            return Some(Node::Checkpoint(ino & ((1 << 60) - 1)));
        }
        let kind = match ino >> 60 {
            1 => Kind::Dir,
            2 => Kind::Append,
            3 => Kind::Record,
            4 => Kind::Log,
            5 => Kind::Stat,
            6 => Kind::Entries,
            7 => Kind::Segments,
            8 => Kind::Entry,
            9 => Kind::Segment,
            _ => return None,
        };
        Some(Node::In {
            sno: ((ino >> VALUE_BITS) & ((1 << SNO_BITS) - 1)) as u32,
            root_view: (ino >> 59) & 1 == 1,
            kind,
            value: ino & ((1 << VALUE_BITS) - 1),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A directory or a regular file.
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// What the kernel may cache about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Nothing: ask again every time.
    Live,
    /// The name's binding, not the attributes (the size grows).
    Name,
    /// Everything: it never changes while it exists.
    Immutable,
    /// The attributes (they never change), not the name's binding (a
    /// lookup may name another inode).
    Fixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What the kernel is told of a node.
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Directory or file.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// What the kernel may cache.
    pub cache: Cache,
    /// When its contents last changed (None: the mount's start).
    pub mtime: Option<std::time::SystemTime>,
}

/// An errno, as the kernel wants it.
pub type Errno = i32;

impl Node {
    /// The inode of the directory holding this node's listing's `..`.
    pub fn parent_ino(self) -> u64 {
        match self {
            Node::CheckpointHead | Node::CheckpointNew | Node::Checkpoint(_) => CHECKPOINTS_INO,
            Node::In {
                root_view: true, ..
            } => ROOT_INO,
            Node::In {
                kind: Kind::Dir, ..
            } => STREAMS_INO,
            Node::In {
                sno,
                root_view: false,
                ..
            } => Node::In {
                sno,
                root_view: false,
                kind: Kind::Dir,
                value: 0,
            }
            .ino(),
            _ => ROOT_INO,
        }
    }
}

/// The permission bits the tree shows, from `--file-mode` and
/// `--dir-mode`. The mount always asks the kernel to enforce them
/// (`default_permissions`), so what `ls -l` shows is what it enforces; the
/// daemon refuses on top whatever a kind never allows (writing `log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Files: the read bits apply to every readable file, the write bits
    /// to `append` and `record` (default 0644: the owner alone appends).
    pub file: u16,
    /// Directories: `streams/` (mkdir, rmdir) and `segments/` (rm) take
    /// the write bits; the others cannot be written at all.
    pub dir: u16,
    /// A read-only mount shows no write bit anywhere.
    pub read_only: bool,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            file: 0o644,
            dir: 0o755,
            read_only: false,
        }
    }
}

impl Modes {
    fn writable(&self) -> u16 {
        if self.read_only {
            0o555
        } else {
            0o777
        }
    }

    /// `log`, `stat`, `entries/<id>`, `segments/<name>.wal`.
    pub fn readable_file(&self) -> u16 {
        self.file & 0o444
    }

    /// `append`: written by whoever has the write bits; read (the ids a
    /// handle committed) by whoever has the read bits.
    pub fn append(&self) -> u16 {
        self.file & 0o666 & self.writable()
    }

    /// `record`: write-only.
    pub fn record(&self) -> u16 {
        self.file & 0o222 & self.writable()
    }

    /// `streams/` and `segments/`: their write bits govern mkdir, rmdir and
    /// rm.
    pub fn changeable_dir(&self) -> u16 {
        self.dir & 0o777 & self.writable()
    }

    /// Every other directory: nothing can be created or removed in it.
    pub fn fixed_dir(&self) -> u16 {
        self.dir & 0o555
    }
}

impl Attr {
    /// A directory.
    pub fn dir(ino: u64, perm: u16, cache: Cache) -> Attr {
        Attr {
            ino,
            kind: FileKind::Dir,
            size: 0,
            perm,
            nlink: 2,
            cache,
            mtime: None,
        }
    }

    /// A regular file.
    pub fn file(ino: u64, size: u64, perm: u16, cache: Cache) -> Attr {
        Attr {
            ino,
            kind: FileKind::File,
            size,
            perm,
            nlink: 1,
            cache,
            mtime: None,
        }
    }

    /// The same, changed at `t`.
    pub fn modified(mut self, t: Option<std::time::SystemTime>) -> Attr {
        self.mtime = t;
        self
    }
}

/// A buffer for [`itoa`].
pub fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// Formats `n` in decimal into `buf` without allocating.
pub fn itoa(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_round_trip() {
        for node in [
            Node::Root,
            Node::Streams,
            Node::In {
                sno: 0,
                root_view: true,
                kind: Kind::Log,
                value: 0,
            },
            Node::In {
                sno: 77,
                root_view: false,
                kind: Kind::Entry,
                value: (1 << VALUE_BITS) - 1,
            },
            Node::In {
                sno: (1 << SNO_BITS) - 1,
                root_view: false,
                kind: Kind::Segment,
                value: 4096,
            },
        ] {
            assert_eq!(Node::from_ino(node.ino()), Some(node));
        }
        for node in [
            Node::Checkpoints,
            Node::CheckpointHead,
            Node::CheckpointNew,
            Node::Checkpoint(1),
            Node::Checkpoint(1 << 40),
        ] {
            assert_eq!(Node::from_ino(node.ino()), Some(node));
        }
        assert_eq!(Node::from_ino(0), None);
        assert_eq!(Node::from_ino(15 << 60), None);
    }

    #[test]
    fn itoa_formats() {
        let mut b = itoa_buf();
        assert_eq!(itoa(&mut b, 0), b"0");
        assert_eq!(itoa(&mut b, u64::MAX), u64::MAX.to_string().as_bytes());
    }
}
