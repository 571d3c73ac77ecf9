//! The mounted tree as plain Rust: inode numbers, attributes, lookup,
//! readdir, read, write and the state of open files. No FUSE types here,
//! so all of it is testable without a mount; errors are errnos.
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
//! ```

use crate::format;
use crate::mount::names::parse_id;
use crate::{CompressionType, Error, SyncMode, Wal};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub const ROOT_INO: u64 = 1;
const STREAMS_INO: u64 = 2;
/// The largest record `record` takes, and the longest partial line an
/// `append` handle holds before its newline arrives.
pub const MAX_RECORD: usize = 64 << 20;

/// What a file of a stream directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir = 1,
    Append = 2,
    Record = 3,
    Log = 4,
    Stat = 5,
    Entries = 6,
    Segments = 7,
    Entry = 8,
    Segment = 9,
}

const FILES: [(&str, Kind); 6] = [
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
    Root,
    Streams,
    In {
        sno: u32,
        root_view: bool,
        kind: Kind,
        value: u64,
    },
}

const VALUE_BITS: u32 = 40;
const SNO_BITS: u32 = 19;

impl Node {
    pub fn ino(self) -> u64 {
        match self {
            Node::Root => ROOT_INO,
            Node::Streams => STREAMS_INO,
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

    pub fn from_ino(ino: u64) -> Option<Node> {
        match ino {
            ROOT_INO => return Some(Node::Root),
            STREAMS_INO => return Some(Node::Streams),
            _ => {}
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
pub enum FileKind {
    Dir,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub cache: Cache,
}

/// How an opened file should be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Reads and writes bypass the page cache (contents change in place
    /// or writes must reach the engine one by one).
    pub direct: bool,
    /// Cached pages stay valid across opens.
    pub keep_cache: bool,
    /// Writes through different handles may run at once (group commit).
    pub parallel_writes: bool,
    /// close(2) has nothing to commit: skip the FLUSH round trip.
    pub no_flush: bool,
}

/// An errno, as the kernel wants it.
pub type Errno = i32;

fn errno_of(e: &Error) -> Errno {
    let code = e.errno();
    match e {
        Error::Corruption { .. } | Error::Damaged { .. } | Error::Io(_) => log::error!("{e}"),
        _ => log::debug!("{e}"),
    }
    code
}

/// Per-stream numbering and the `log` file's byte layout.
#[derive(Default)]
struct Names {
    by_name: HashMap<String, u32>,
    by_sno: Vec<String>,
}

/// Where each segment's entries start in the `log` file. Offsets never
/// move while mounted: truncation leaves a hole (read as zeros) instead of
/// shifting the data, so a follower's position stays valid.
#[derive(Default)]
struct LogMap {
    /// (segment start id, log offset, entry bytes), ascending.
    segs: Vec<(u64, u64, u64)>,
    /// Log offset where the first segment ever seen starts (0).
    hole_end: u64,
}

impl LogMap {
    fn refresh(&mut self, payloads: &[(u64, u64)]) {
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

    fn end(&self) -> u64 {
        self.segs.last().map_or(self.hole_end, |&(_, o, p)| o + p)
    }
}

/// The state of an open file.
pub enum Handle {
    Append(AppendState),
    Record(RecordState),
    Segment(File),
    Plain,
}

pub struct AppendState {
    sno: u32,
    /// The bytes of a line whose newline has not arrived yet.
    pending: Vec<u8>,
    /// "FIRST-LAST\n" per committed write: what reads of the handle show,
    /// each line once, whatever the file position (like a pipe).
    ids: String,
    ids_read: usize,
    /// Set by the first failed write: the handle then refuses every write
    /// and commit with this errno, and nothing it held is ever committed.
    failed: Option<Errno>,
}

pub struct RecordState {
    sno: u32,
    buf: Vec<u8>,
    dirty: bool,
    /// As for `AppendState`.
    failed: Option<Errno>,
}

impl Handle {
    /// The errno of an earlier failed write, if this handle took one.
    fn failed(&self) -> Option<Errno> {
        match self {
            Handle::Append(a) => a.failed,
            Handle::Record(r) => r.failed,
            _ => None,
        }
    }

    /// A write failed: drop everything uncommitted and refuse from now on.
    fn poison(&mut self, errno: Errno) {
        match self {
            Handle::Append(a) => {
                a.failed = Some(errno);
                a.pending = Vec::new();
            }
            Handle::Record(r) => {
                r.failed = Some(errno);
                r.buf = Vec::new();
                r.dirty = false;
            }
            _ => {}
        }
    }
}

pub struct View {
    wal: Wal,
    root_sno: u32,
    names: RwLock<Names>,
    logs: Mutex<HashMap<u32, LogMap>>,
    handles: RwLock<HashMap<u64, Arc<Mutex<Handle>>>>,
    next_fh: AtomicU64,
    read_only: bool,
    /// Set when the daemon is asked to stop: every change (open for
    /// writing, write, mkdir, rmdir, unlink) is refused from then on.
    stopping: AtomicBool,
    /// Changes refused since stopping began: writers still at work.
    refused: AtomicU64,
}

impl View {
    /// A view of `wal`, whose root shows `root_stream` (created if missing).
    pub fn new(wal: Wal, root_stream: &str, read_only: bool) -> crate::Result<View> {
        if wal.stream_info(root_stream).is_none() {
            if read_only {
                return Err(Error::NoSuchStream(root_stream.to_owned()));
            }
            wal.create_stream(root_stream)?;
        }
        let view = View {
            wal,
            root_sno: 0,
            names: RwLock::default(),
            logs: Mutex::default(),
            handles: RwLock::default(),
            next_fh: AtomicU64::new(1),
            read_only,
            stopping: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        };
        let sno = view.sno(root_stream).expect("fresh numbering");
        debug_assert_eq!(sno, 0);
        Ok(view)
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The daemon is stopping: refuse every change from now on with
    /// ESHUTDOWN, so that nothing is acknowledged that the log will not
    /// hold. Commits that already started finish; open files may still
    /// close (committing what they hold) and readers keep reading.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Changes refused since `begin_stop`.
    pub fn refused_changes(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Files open for writing (`append` and `record` handles).
    pub fn open_writers(&self) -> usize {
        self.handles
            .read()
            .values()
            .filter(|h| matches!(&*h.lock(), Handle::Append(_) | Handle::Record(_)))
            .count()
    }

    fn refuse_if_stopping(&self) -> Result<(), Errno> {
        if self.stopping.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(libc::ESHUTDOWN);
        }
        Ok(())
    }

    /// The number of a stream, assigned on first sight.
    fn sno(&self, name: &str) -> Option<u32> {
        if let Some(&n) = self.names.read().by_name.get(name) {
            return Some(n);
        }
        let mut names = self.names.write();
        if let Some(&n) = names.by_name.get(name) {
            return Some(n);
        }
        let n = names.by_sno.len() as u32;
        if n >= 1 << SNO_BITS {
            log::warn!(
                "more than {} streams seen: {name} is not shown",
                1u32 << SNO_BITS
            );
            return None;
        }
        names.by_sno.push(name.to_owned());
        names.by_name.insert(name.to_owned(), n);
        Some(n)
    }

    /// The name of a stream that still exists: an open handle must not
    /// bring a deleted stream back to life.
    fn live_name(&self, sno: u32) -> Result<String, Errno> {
        self.name(sno)
            .filter(|n| self.wal.has_stream(n))
            .ok_or(libc::ENOENT)
    }

    fn name(&self, sno: u32) -> Option<String> {
        self.names.read().by_sno.get(sno as usize).cloned()
    }

    /// The stream of a node, if it still exists.
    fn stream_of(&self, node: Node) -> Result<(u32, String), Errno> {
        let sno = match node {
            Node::Root => self.root_sno,
            Node::Streams => return Err(libc::EISDIR),
            Node::In { sno, .. } => sno,
        };
        let name = self.name(sno).ok_or(libc::ENOENT)?;
        if !self.wal.has_stream(&name) {
            return Err(libc::ENOENT);
        }
        Ok((sno, name))
    }

    pub fn streams_of_interest(&self) -> Vec<(u32, String)> {
        self.names
            .read()
            .by_sno
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, n.clone()))
            .collect()
    }

    /// The nodes of the files whose contents grow with `sno` (for cache
    /// invalidation after commits).
    pub fn growing_nodes(&self, sno: u32) -> Vec<Node> {
        let mut v = Vec::new();
        for root_view in [false, true] {
            if root_view && sno != self.root_sno {
                continue;
            }
            for kind in [Kind::Log, Kind::Stat, Kind::Entries, Kind::Segments] {
                v.push(Node::In {
                    sno,
                    root_view,
                    kind,
                    value: 0,
                });
            }
        }
        v
    }

    /// The retained segment of `stream` starting at `start`.
    fn segment(&self, stream: &str, start: u64) -> Result<crate::SegmentInfo, Errno> {
        self.wal
            .segments(stream)
            .into_iter()
            .find(|s| s.start_id == start)
            .ok_or(libc::ENOENT)
    }

    // --- attributes and lookup ---

    pub fn getattr(&self, node: Node) -> Result<Attr, Errno> {
        let dir = |ino, cache| Attr {
            ino,
            kind: FileKind::Dir,
            size: 0,
            perm: 0o755,
            nlink: 2,
            cache,
        };
        let file = |ino, size, perm, cache| Attr {
            ino,
            kind: FileKind::File,
            size,
            perm,
            nlink: 1,
            cache,
        };
        let ino = node.ino();
        match node {
            Node::Root | Node::Streams => Ok(dir(ino, Cache::Live)),
            Node::In { kind, value, .. } => {
                let (sno, name) = self.stream_of(node)?;
                match kind {
                    Kind::Dir => Ok(dir(ino, Cache::Live)),
                    Kind::Entries | Kind::Segments => Ok(dir(ino, Cache::Name)),
                    // Each lookup of `append` and `record` gives a new inode
                    // (see `lookup`): nothing about them may be cached.
                    Kind::Append => Ok(file(
                        ino,
                        0,
                        if self.read_only { 0o400 } else { 0o622 },
                        Cache::Live,
                    )),
                    Kind::Record => Ok(file(
                        ino,
                        0,
                        if self.read_only { 0o000 } else { 0o222 },
                        Cache::Live,
                    )),
                    Kind::Log => Ok(file(ino, self.log_size(sno, &name)?, 0o444, Cache::Name)),
                    Kind::Stat => Ok(file(
                        ino,
                        self.stat_text(&name).len() as u64,
                        0o444,
                        Cache::Name,
                    )),
                    Kind::Entry => {
                        let len = self
                            .wal
                            .get_with(&name, value, <[u8]>::len)
                            .map_err(|e| errno_of(&e))?;
                        Ok(file(
                            ino,
                            len.ok_or(libc::ENOENT)? as u64,
                            0o444,
                            Cache::Immutable,
                        ))
                    }
                    Kind::Segment => {
                        let seg = self.segment(&name, value)?;
                        Ok(file(
                            ino,
                            seg.len,
                            0o444,
                            if seg.sealed {
                                Cache::Immutable
                            } else {
                                Cache::Live
                            },
                        ))
                    }
                }
            }
        }
    }

    pub fn lookup(&self, parent: Node, name: &[u8]) -> Result<Attr, Errno> {
        if name.len() > 255 {
            return Err(libc::ENOENT);
        }
        let child = match parent {
            Node::Root
            | Node::In {
                kind: Kind::Dir, ..
            } => {
                let (sno, _) = self.stream_of(parent)?;
                let root_view = parent == Node::Root;
                if root_view && name == b"streams" {
                    Node::Streams
                } else {
                    let kind = FILES
                        .iter()
                        .find(|(n, _)| n.as_bytes() == name)
                        .ok_or(libc::ENOENT)?
                        .1;
                    Node::In {
                        sno,
                        root_view,
                        kind,
                        value: 0,
                    }
                }
            }
            Node::Streams => {
                let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
                if !format::validate_stream_name(name) || self.wal.stream_info(name).is_none() {
                    return Err(libc::ENOENT);
                }
                let sno = self.sno(name).ok_or(libc::ENOENT)?;
                Node::In {
                    sno,
                    root_view: false,
                    kind: Kind::Dir,
                    value: 0,
                }
            }
            Node::In {
                sno,
                root_view,
                kind: Kind::Entries,
                ..
            } => {
                let id = parse_id(name)
                    .filter(|&id| id < 1 << VALUE_BITS)
                    .ok_or(libc::ENOENT)?;
                Node::In {
                    sno,
                    root_view,
                    kind: Kind::Entry,
                    value: id,
                }
            }
            Node::In {
                sno,
                root_view,
                kind: Kind::Segments,
                ..
            } => {
                let start = std::str::from_utf8(name)
                    .ok()
                    .and_then(format::parse_segment_name)
                    .filter(|&s| s < 1 << VALUE_BITS)
                    .ok_or(libc::ENOENT)?;
                Node::In {
                    sno,
                    root_view,
                    kind: Kind::Segment,
                    value: start,
                }
            }
            Node::In { .. } => return Err(libc::ENOTDIR),
        };
        self.getattr(child)
    }

    // --- directories ---

    /// Entries of a directory from `offset` on, as (name, ino, is_dir,
    /// next offset). `add` returns false when the reply buffer is full.
    pub fn readdir(
        &self,
        dir: Node,
        offset: u64,
        mut add: impl FnMut(&[u8], u64, bool, u64) -> bool,
    ) -> Result<(), Errno> {
        let parent_ino = match dir {
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
        };
        if offset < 1 && !add(b".", dir.ino(), true, 1) {
            return Ok(());
        }
        if offset < 2 && !add(b"..", parent_ino, true, 2) {
            return Ok(());
        }
        match dir {
            Node::Root
            | Node::In {
                kind: Kind::Dir, ..
            } => {
                let (sno, _) = self.stream_of(dir)?;
                let root_view = dir == Node::Root;
                let mut items: Vec<(&str, Node)> = FILES
                    .iter()
                    .map(|&(n, kind)| {
                        (
                            n,
                            Node::In {
                                sno,
                                root_view,
                                kind,
                                value: 0,
                            },
                        )
                    })
                    .collect();
                if root_view {
                    items.push(("streams", Node::Streams));
                }
                for (i, (n, node)) in items.into_iter().enumerate() {
                    let next = i as u64 + 3;
                    let is_dir = matches!(
                        node,
                        Node::Streams
                            | Node::In {
                                kind: Kind::Entries | Kind::Segments,
                                ..
                            }
                    );
                    if next > offset && !add(n.as_bytes(), node.ino(), is_dir, next) {
                        return Ok(());
                    }
                }
            }
            Node::Streams => {
                for (i, name) in self.wal.streams().into_iter().enumerate() {
                    let next = i as u64 + 3;
                    if next <= offset {
                        continue;
                    }
                    let Some(sno) = self.sno(&name) else { continue };
                    let node = Node::In {
                        sno,
                        root_view: false,
                        kind: Kind::Dir,
                        value: 0,
                    };
                    if !add(name.as_bytes(), node.ino(), true, next) {
                        return Ok(());
                    }
                }
            }
            Node::In {
                sno,
                root_view,
                kind: Kind::Entries,
                ..
            } => {
                // The id is the offset: listing resumes without state and
                // never builds the list. Entry `id` has offset id + 4.
                let (_, name) = self.stream_of(dir)?;
                let end = self.wal.next_id(&name).min(1 << VALUE_BITS);
                let mut id = self.wal.first_id(&name).max(offset.saturating_sub(3));
                let mut buf = itoa_buf();
                while id < end {
                    let node = Node::In {
                        sno,
                        root_view,
                        kind: Kind::Entry,
                        value: id,
                    };
                    if !add(itoa(&mut buf, id), node.ino(), false, id + 4) {
                        return Ok(());
                    }
                    id += 1;
                }
            }
            Node::In {
                sno,
                root_view,
                kind: Kind::Segments,
                ..
            } => {
                let (_, name) = self.stream_of(dir)?;
                for seg in self.wal.segments(&name) {
                    let next = seg.start_id + 4;
                    if next <= offset || seg.start_id >= 1 << VALUE_BITS {
                        continue;
                    }
                    let node = Node::In {
                        sno,
                        root_view,
                        kind: Kind::Segment,
                        value: seg.start_id,
                    };
                    if !add(
                        format::segment_name(seg.start_id).as_bytes(),
                        node.ino(),
                        false,
                        next,
                    ) {
                        return Ok(());
                    }
                }
            }
            Node::In { .. } => return Err(libc::ENOTDIR),
        }
        Ok(())
    }

    pub fn mkdir(&self, parent: Node, name: &[u8]) -> Result<Attr, Errno> {
        self.refuse_if_stopping()?;
        if parent != Node::Streams {
            return Err(libc::EACCES);
        }
        if self.read_only {
            return Err(libc::EROFS);
        }
        let name_str = std::str::from_utf8(name).map_err(|_| libc::EINVAL)?;
        if !format::validate_stream_name(name_str) {
            return Err(libc::EINVAL);
        }
        self.wal.create_stream(name_str).map_err(|e| errno_of(&e))?;
        self.lookup(parent, name)
    }

    /// `rmdir streams/<name>` deletes the stream and all its entries.
    pub fn rmdir(&self, parent: Node, name: &[u8]) -> Result<(), Errno> {
        self.refuse_if_stopping()?;
        if parent != Node::Streams {
            return Err(libc::EACCES);
        }
        if self.read_only {
            return Err(libc::EROFS);
        }
        let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
        if self.wal.stream_info(name).is_none() {
            return Err(libc::ENOENT);
        }
        if self.name(self.root_sno).as_deref() == Some(name) {
            return Err(libc::EBUSY);
        }
        self.wal.delete_stream(name).map_err(|e| errno_of(&e))
    }

    /// Unlinking the oldest sealed segment truncates the stream; every
    /// other unlink is refused.
    pub fn unlink(&self, parent: Node, name: &[u8]) -> Result<(), Errno> {
        self.refuse_if_stopping()?;
        let Node::In {
            kind: Kind::Segments,
            ..
        } = parent
        else {
            return Err(libc::EACCES);
        };
        if self.read_only {
            return Err(libc::EROFS);
        }
        let (_, stream) = self.stream_of(parent)?;
        let start = std::str::from_utf8(name)
            .ok()
            .and_then(format::parse_segment_name)
            .ok_or(libc::ENOENT)?;
        let segs = self.wal.segments(&stream);
        let Some(pos) = segs.iter().position(|s| s.start_id == start) else {
            return Err(libc::ENOENT);
        };
        if pos != 0 || !segs[0].sealed {
            return Err(libc::EPERM);
        }
        let next = segs[1].start_id;
        self.wal.truncate(&stream, next).map_err(|e| errno_of(&e))?;
        Ok(())
    }

    // --- files ---

    /// Opens `node`; `write` and `read` are the access asked for.
    pub fn open(&self, node: Node, read: bool, write: bool) -> Result<Opened, Errno> {
        let Node::In { kind, value, .. } = node else {
            return Err(libc::EISDIR);
        };
        let (sno, name) = self.stream_of(node)?;
        if write {
            self.refuse_if_stopping()?;
        }
        let mut sealed_segment = false;
        let handle = match kind {
            Kind::Append | Kind::Record if self.read_only => return Err(libc::EROFS),
            Kind::Append if !write => return Err(libc::EACCES),
            Kind::Append => Handle::Append(AppendState {
                sno,
                pending: Vec::new(),
                ids: String::new(),
                ids_read: 0,
                failed: None,
            }),
            Kind::Record if read || !write => return Err(libc::EACCES),
            Kind::Record => Handle::Record(RecordState {
                sno,
                buf: Vec::new(),
                dirty: false,
                failed: None,
            }),
            _ if write => return Err(libc::EACCES),
            Kind::Dir | Kind::Entries | Kind::Segments => return Err(libc::EISDIR),
            Kind::Segment => {
                let seg = self.segment(&name, value)?;
                sealed_segment = seg.sealed;
                Handle::Segment(
                    File::open(&seg.path).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?,
                )
            }
            Kind::Entry => {
                self.getattr(node)?;
                Handle::Plain
            }
            Kind::Log | Kind::Stat => Handle::Plain,
        };
        let writes = matches!(kind, Kind::Append | Kind::Record);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .write()
            .insert(fh, Arc::new(Mutex::new(handle)));
        Ok(Opened {
            fh,
            // `log` bypasses the page cache too: a page cached from a short
            // read (zero-filled past the old end) can survive the kernel's
            // invalidation when a concurrent read holds it, and a reader
            // would then see zeros where entries are.
            direct: matches!(kind, Kind::Append | Kind::Record | Kind::Stat | Kind::Log)
                || (kind == Kind::Segment && !sealed_segment),
            keep_cache: kind == Kind::Entry || sealed_segment,
            parallel_writes: writes,
            no_flush: !writes,
        })
    }

    fn handle(&self, fh: u64) -> Result<Arc<Mutex<Handle>>, Errno> {
        self.handles.read().get(&fh).cloned().ok_or(libc::EBADF)
    }

    pub fn read(&self, node: Node, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let size = size as usize;
        let Node::In { kind, value, .. } = node else {
            return Err(libc::EISDIR);
        };
        let slice = |b: &[u8]| -> Vec<u8> {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
            b[start..(start.saturating_add(size)).min(b.len())].to_vec()
        };
        match kind {
            Kind::Log => {
                let (sno, name) = self.stream_of(node)?;
                self.read_log(sno, &name, offset, size)
            }
            Kind::Stat => {
                let (_, name) = self.stream_of(node)?;
                Ok(slice(self.stat_text(&name).as_bytes()))
            }
            Kind::Entry => {
                let (_, name) = self.stream_of(node)?;
                self.wal
                    .get_with(&name, value, slice)
                    .map_err(|e| errno_of(&e))?
                    .ok_or(libc::ENOENT)
            }
            Kind::Segment => {
                let h = self.handle(fh)?;
                let h = h.lock();
                let Handle::Segment(f) = &*h else {
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
            Kind::Append | Kind::Record => {
                let h = self.handle(fh)?;
                let mut h = h.lock();
                let Handle::Append(a) = &mut *h else {
                    return Err(libc::EBADF);
                };
                let out =
                    a.ids.as_bytes()[a.ids_read..(a.ids_read + size).min(a.ids.len())].to_vec();
                a.ids_read += out.len();
                Ok(out)
            }
            Kind::Dir | Kind::Entries | Kind::Segments => Err(libc::EISDIR),
        }
    }

    /// Writes to an `append` or `record` handle; returns bytes taken. A
    /// failed write poisons the handle: nothing it holds uncommitted is ever
    /// committed, and every later write, fsync and close fails too.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let h = self.handle(fh)?;
        let mut h = h.lock();
        if let Some(e) = h.failed() {
            return Err(e);
        }
        let r = self
            .refuse_if_stopping()
            .and_then(|()| self.write_to(&mut h, offset, data));
        if let Err(e) = r {
            h.poison(e);
        }
        r
    }

    fn write_to(&self, h: &mut Handle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        match h {
            Handle::Append(a) => self.write_append(a, data),
            Handle::Record(r) => {
                let end = offset
                    .checked_add(data.len() as u64)
                    .filter(|&e| e <= MAX_RECORD as u64)
                    .ok_or(libc::EFBIG)? as usize;
                if r.buf.len() < end {
                    r.buf.resize(end, 0);
                }
                r.buf[offset as usize..end].copy_from_slice(data);
                r.dirty = true;
                Ok(data.len() as u32)
            }
            _ => Err(libc::EBADF),
        }
    }

    /// Every complete line of one write(2) becomes one entry of one frame;
    /// a trailing partial line waits in the handle. The write returns only
    /// once the frame is stored (durably, in Strict mode).
    fn write_append(&self, a: &mut AppendState, data: &[u8]) -> Result<u32, Errno> {
        let Some(last_nl) = data.iter().rposition(|&b| b == b'\n') else {
            if a.pending.len() + data.len() > MAX_RECORD {
                return Err(libc::EFBIG);
            }
            a.pending.extend_from_slice(data);
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
            let held = if lines.is_empty() { a.pending.len() } else { 0 };
            if held + nl + 1 - from > MAX_RECORD {
                return Err(libc::EFBIG);
            }
            lines.push(&complete[from..=nl]);
            from = nl + 1;
        }
        let first;
        if !a.pending.is_empty() {
            first = [a.pending.as_slice(), lines[0]].concat();
            lines[0] = &first;
        }
        let name = self.live_name(a.sno)?;
        let r = self
            .wal
            .append_batch(&name, &lines)
            .map_err(|e| errno_of(&e))?;
        a.ids.push_str(&format!("{}-{}\n", r.start, r.end - 1));
        a.pending.clear();
        a.pending.extend_from_slice(rest);
        Ok(data.len() as u32)
    }

    /// Commits what a handle holds (close(2) and fsync(2)): the partial
    /// line of `append`, the record of `record`.
    pub fn flush(&self, fh: u64) -> Result<(), Errno> {
        let h = self.handle(fh)?;
        let mut h = h.lock();
        if let Some(e) = h.failed() {
            return Err(e);
        }
        let (sno, entry) = match &mut *h {
            Handle::Append(a) if !a.pending.is_empty() => (a.sno, std::mem::take(&mut a.pending)),
            Handle::Record(r) if r.dirty => {
                r.dirty = false;
                (r.sno, std::mem::take(&mut r.buf))
            }
            _ => return Ok(()),
        };
        let r = self.live_name(sno).and_then(|name| {
            self.wal
                .append_batch(&name, &[&entry])
                .map_err(|e| errno_of(&e))
        });
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                h.poison(e);
                return Err(e);
            }
        };
        let ids = match &mut *h {
            Handle::Append(a) => Some(&mut a.ids),
            _ => None,
        };
        if let Some(ids) = ids {
            ids.push_str(&format!("{}-{}\n", r.start, r.end - 1));
        }
        Ok(())
    }

    /// fsync(2): makes everything written through the handle durable, in
    /// every sync mode.
    pub fn fsync(&self, node: Node, fh: u64) -> Result<(), Errno> {
        let (_, name) = self.stream_of(node)?;
        if let Some(e) = self.handles.read().get(&fh).and_then(|h| h.lock().failed()) {
            return Err(e);
        }
        self.wal.sync(&name).map_err(|e| errno_of(&e))
    }

    /// The last close of a handle: commits what is left (an error here can
    /// no longer reach the writer; flush already reported it).
    pub fn release(&self, fh: u64) {
        let poisoned = self
            .handles
            .read()
            .get(&fh)
            .is_some_and(|h| h.lock().failed().is_some());
        if !poisoned {
            if let Err(e) = self.flush(fh) {
                log::error!("commit at release failed: errno {e}");
            }
        }
        self.handles.write().remove(&fh);
    }

    /// `truncate` and `O_TRUNC` on `append` and `record` are no-ops (there
    /// is nothing to cut); everything else refuses attribute changes.
    pub fn setattr(&self, node: Node, size: Option<u64>, other: bool) -> Result<Attr, Errno> {
        let attr = self.getattr(node)?;
        match node {
            Node::In {
                kind: Kind::Append | Kind::Record,
                ..
            } if size == Some(0) && !other => Ok(attr),
            _ => Err(libc::EPERM),
        }
    }

    // --- contents ---

    fn stat_text(&self, name: &str) -> String {
        let o = self.wal.options();
        match self.wal.stream_info(name) {
            Some(info) => info.to_text(Some((o.sync_mode, o.compression))),
            None => String::new(),
        }
    }

    fn log_size(&self, sno: u32, name: &str) -> Result<u64, Errno> {
        let payloads = self.wal.segment_payloads(name).map_err(|e| errno_of(&e))?;
        let mut logs = self.logs.lock();
        let map = logs.entry(sno).or_default();
        map.refresh(&payloads);
        Ok(map.end())
    }

    fn read_log(&self, sno: u32, name: &str, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
        let end = self.log_size(sno, name)?;
        let (segs, hole_end) = {
            let logs = self.logs.lock();
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
            self.wal
                .read_payload(name, start, pos - log_off, size, &mut out)
                .map_err(|e| errno_of(&e))?;
            if out.len() == before {
                break;
            }
            pos += (out.len() - before) as u64;
        }
        Ok(out)
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.wal.options().sync_mode
    }

    pub fn compression(&self) -> CompressionType {
        self.wal.options().compression
    }
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// Formats `n` in decimal into `buf` without allocating.
fn itoa(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
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
        assert_eq!(Node::from_ino(0), None);
        assert_eq!(Node::from_ino(15 << 60), None);
    }

    #[test]
    fn itoa_formats() {
        let mut b = itoa_buf();
        assert_eq!(itoa(&mut b, 0), b"0");
        assert_eq!(itoa(&mut b, u64::MAX), u64::MAX.to_string().as_bytes());
    }

    fn view(dir: &std::path::Path, segment_size: u64) -> View {
        let mut o = crate::WalOptions::new(dir);
        o.max_segment_size = segment_size;
        View::new(Wal::new(o).unwrap(), "default", false).unwrap()
    }

    fn append(v: &View, data: &[u8]) -> Result<u32, Errno> {
        let o = v.open(
            v.lookup(Node::Root, b"append")
                .map(|a| Node::from_ino(a.ino).unwrap())
                .unwrap(),
            false,
            true,
        )?;
        let r = v.write(o.fh, 0, data);
        v.release(o.fh);
        r
    }

    fn entries_node() -> Node {
        Node::In {
            sno: 0,
            root_view: true,
            kind: Kind::Entries,
            value: 0,
        }
    }

    fn node(v: &View, parent: Node, name: &[u8]) -> Node {
        Node::from_ino(v.lookup(parent, name).unwrap().ino).unwrap()
    }

    /// In Async mode, entries wait in memory for a few milliseconds; `stat`,
    /// `entries/`, `log` and the ids read back must still agree at once.
    #[test]
    fn every_view_agrees_right_after_an_async_append() {
        let t = tempfile::tempdir().unwrap();
        let mut o = crate::WalOptions::new(t.path());
        o.sync_mode = SyncMode::Async;
        let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
        let (stat, log) = (node(&v, Node::Root, b"stat"), node(&v, Node::Root, b"log"));
        let h = v.open(node(&v, Node::Root, b"append"), true, true).unwrap();
        let mut bytes = 0;
        for i in 0..300u64 {
            let line = format!("line {i}\n");
            v.write(h.fh, 0, line.as_bytes()).unwrap();
            bytes += line.len() as u64;
            let text = String::from_utf8(v.read(stat, 0, 0, 4096).unwrap()).unwrap();
            assert!(
                text.contains(&format!("next_id: {}\n", i + 1)),
                "after {i}: {text}"
            );
            assert_eq!(v.getattr(log).unwrap().size, bytes, "log size after {i}");
            assert!(v.lookup(entries_node(), i.to_string().as_bytes()).is_ok());
            assert_eq!(v.wal().next_id("default"), i + 1);
        }
        let ids = v
            .read(node(&v, Node::Root, b"append"), h.fh, 0, 1 << 20)
            .unwrap();
        assert!(String::from_utf8(ids).unwrap().ends_with("299-299\n"));
        v.release(h.fh);
    }

    /// A write that fails poisons its handle: what it held is dropped, every
    /// later write and the close fail, and no entry passes the bound.
    #[test]
    fn a_failed_write_commits_nothing_ever() {
        let t = tempfile::tempdir().unwrap();
        let v = view(t.path(), 64 << 20);
        let append = node(&v, Node::Root, b"append");
        // A held partial line that a later line would push past the bound.
        let h = v.open(append, false, true).unwrap();
        v.write(h.fh, 0, &vec![b'a'; MAX_RECORD - 1]).unwrap();
        assert_eq!(v.write(h.fh, 0, b"bc\n"), Err(libc::EFBIG));
        assert_eq!(v.write(h.fh, 0, b"later\n"), Err(libc::EFBIG));
        assert_eq!(v.fsync(append, h.fh), Err(libc::EFBIG));
        assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
        v.release(h.fh);
        // One write whose first line alone is too long: its other lines go too.
        let h = v.open(append, false, true).unwrap();
        let mut big = vec![b'b'; MAX_RECORD + 1];
        big.extend_from_slice(b"\nshort\n");
        assert_eq!(v.write(h.fh, 0, &big), Err(libc::EFBIG));
        assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
        v.release(h.fh);
        // A record past the bound, then a write inside it.
        let record = node(&v, Node::Root, b"record");
        let h = v.open(record, false, true).unwrap();
        v.write(h.fh, 0, b"head").unwrap();
        assert_eq!(v.write(h.fh, MAX_RECORD as u64, b"x"), Err(libc::EFBIG));
        assert_eq!(v.write(h.fh, 4, b"tail"), Err(libc::EFBIG));
        assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
        v.release(h.fh);
        assert_eq!(v.wal().next_id("default"), 0, "nothing was committed");
        // A line of exactly the bound is fine.
        let mut line = vec![b'c'; MAX_RECORD - 1];
        line.push(b'\n');
        append_ok(&v, &line);
        assert_eq!(v.wal().next_id("default"), 1);
    }

    /// Once stopping, every change is refused with ESHUTDOWN and counted;
    /// an open file's held bytes are never committed after a refused write.
    #[test]
    fn stopping_refuses_every_change() {
        let t = tempfile::tempdir().unwrap();
        let v = view(t.path(), 64 << 20);
        let append = node(&v, Node::Root, b"append");
        let h = v.open(append, false, true).unwrap();
        v.write(h.fh, 0, b"held, no newline").unwrap();
        assert_eq!(v.open_writers(), 1);
        v.begin_stop();
        assert_eq!(v.write(h.fh, 0, b" and more\n"), Err(libc::ESHUTDOWN));
        assert_eq!(v.flush(h.fh), Err(libc::ESHUTDOWN));
        v.release(h.fh);
        assert_eq!(v.open_writers(), 0);
        assert_eq!(
            v.open(append, false, true).map(|_| ()),
            Err(libc::ESHUTDOWN)
        );
        assert_eq!(
            v.mkdir(Node::Streams, b"new").map(|_| ()),
            Err(libc::ESHUTDOWN)
        );
        assert_eq!(v.refused_changes(), 3);
        // Readers go on.
        assert!(v.open(node(&v, Node::Root, b"log"), true, false).is_ok());
        assert_eq!(v.wal().next_id("default"), 0);
    }

    fn append_ok(v: &View, data: &[u8]) {
        assert_eq!(append(v, data), Ok(data.len() as u32));
    }

    #[test]
    fn readdir_of_entries_resumes_from_any_offset() {
        let t = tempfile::tempdir().unwrap();
        let v = view(t.path(), 64 << 20);
        append(&v, b"a\nb\nc\nd\n").unwrap();
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let mut got = 0;
            v.readdir(entries_node(), offset, |name, _, _, next| {
                if got == 2 {
                    return false; // a small reply buffer
                }
                got += 1;
                all.push(String::from_utf8(name.to_vec()).unwrap());
                offset = next;
                true
            })
            .unwrap();
            if got == 0 {
                break;
            }
        }
        assert_eq!(all, [".", "..", "0", "1", "2", "3"]);
    }

    #[test]
    fn log_offsets_survive_truncation() {
        let t = tempfile::tempdir().unwrap();
        let v = view(t.path(), 100);
        for i in 0..20 {
            append(&v, format!("line {i:02}\n").as_bytes()).unwrap();
        }
        let log = Node::In {
            sno: 0,
            root_view: true,
            kind: Kind::Log,
            value: 0,
        };
        let size = v.getattr(log).unwrap().size;
        assert_eq!(size, 20 * 8);
        let all = v.read(log, 0, 0, 4096).unwrap();
        assert_eq!(
            all,
            (0..20)
                .map(|i| format!("line {i:02}\n"))
                .collect::<String>()
                .as_bytes()
        );
        // A read from the middle.
        assert_eq!(v.read(log, 0, 8 * 13 + 5, 3).unwrap(), b"13\n");
        let first = v.wal.segments("default")[0].clone();
        let segments = Node::In {
            sno: 0,
            root_view: true,
            kind: Kind::Segments,
            value: 0,
        };
        v.unlink(segments, format::segment_name(first.start_id).as_bytes())
            .unwrap();
        // Same size, same offsets; the freed prefix reads as zeros.
        assert_eq!(v.getattr(log).unwrap().size, size);
        let after = v.read(log, 0, 0, 4096).unwrap();
        let cut = (first.end_id * 8) as usize;
        assert!(after[..cut].iter().all(|&b| b == 0));
        assert_eq!(after[cut..], all[cut..]);
        append(&v, b"new\n").unwrap();
        assert_eq!(v.read(log, 0, size, 100).unwrap(), b"new\n");
    }

    #[test]
    fn names_the_kernel_sends_are_parsed_strictly() {
        let t = tempfile::tempdir().unwrap();
        let v = view(t.path(), 64 << 20);
        append(&v, b"x\n").unwrap();
        assert!(v.lookup(entries_node(), b"0").is_ok());
        for bad in [&b"00"[..], b"+0", b"-0", b"1", b"", b"0\0", &[b'a'; 300]] {
            assert_eq!(
                v.lookup(entries_node(), bad).err(),
                Some(libc::ENOENT),
                "{bad:?}"
            );
        }
        assert_eq!(v.lookup(Node::Root, b"nope").err(), Some(libc::ENOENT));
        assert_eq!(v.lookup(Node::Streams, b"..").err(), Some(libc::ENOENT));
        // Writes where writing is not allowed.
        let log = v.lookup(Node::Root, b"log").unwrap();
        assert_eq!(
            v.open(Node::from_ino(log.ino).unwrap(), false, true).err(),
            Some(libc::EACCES)
        );
        assert_eq!(v.mkdir(Node::Root, b"x").err(), Some(libc::EACCES));
        assert_eq!(v.unlink(Node::Root, b"log").err(), Some(libc::EACCES));
    }

    #[test]
    fn the_end_of_a_large_log_reads_only_its_end() {
        let disk = crate::SimDisk::with_root(std::path::Path::new("/v"));
        let mut o = crate::WalOptions::new("/v/data");
        o.max_segment_size = 64 << 10;
        o.sync_mode = SyncMode::Async;
        {
            let wal = Wal::with_storage(o.clone(), Arc::new(disk.clone())).unwrap();
            let line = vec![b'x'; 99];
            for _ in 0..20_000 {
                wal.append("default", &[line.as_slice(), b"\n"].concat())
                    .unwrap();
            }
        }
        let wal = Wal::with_storage(o, Arc::new(disk.clone())).unwrap();
        assert!(wal.segments("default").len() > 20);
        let v = View::new(wal, "default", true).unwrap();
        let log = Node::In {
            sno: 0,
            root_view: true,
            kind: Kind::Log,
            value: 0,
        };
        let before = disk.bytes_read();
        let size = v.getattr(log).unwrap().size;
        assert_eq!(size, 20_000 * 100);
        let tail = v.read(log, 0, size - 4096, 4096).unwrap();
        assert_eq!(tail.len(), 4096);
        assert!(tail.ends_with(b"x\n"));
        let read = disk.bytes_read() - before;
        // The log is 2 MB in 30+ segments; stat plus the read touch only the
        // last segment (at most 64 KiB and a window).
        assert!(
            read < 256 << 10,
            "read {read} bytes for the last 4 KiB of a {size}-byte log"
        );
    }
}
