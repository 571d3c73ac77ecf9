//! The mounted tree as plain Rust, organised by operation only as far as
//! dispatch: each operation resolves its node, then asks the node's kind
//! (`files/`) what to do. The view owns what spans kinds: stream numbering,
//! open handles, the `log` layouts, and the stop state. No FUSE types here,
//! so all of it is testable without a mount; errors are errnos.

use super::errno::errno;
use super::files::{ops, At, Handle, LogMap};
use crate::source::LogSource;
use crate::{CompressionType, Error, SyncMode, Wal};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use super::errno::Errno;
pub use super::files::MAX_RECORD;
use super::tree::SNO_BITS;
pub use super::tree::{Attr, Cache, FileKind, Kind, Modes, Node, ROOT_INO};

/// How an opened file should be served.
#[derive(Debug)]
pub struct Opened {
    /// The handle number the kernel passes back.
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
    /// A sealed segment's file, which the kernel may read itself (FUSE
    /// passthrough).
    pub backing: Option<std::fs::File>,
}

/// Stream numbers for inode numbers, assigned on first sight.
#[derive(Default)]
struct Names {
    by_name: HashMap<String, u32>,
    by_sno: Vec<String>,
}

/// The mounted tree over a log.
pub struct View {
    source: Arc<dyn LogSource>,
    /// The number of the stream shown at the root, if one is.
    root: Option<u32>,
    names: RwLock<Names>,
    logs: Mutex<HashMap<u32, LogMap>>,
    handles: RwLock<HashMap<u64, Arc<Mutex<Handle>>>>,
    next_fh: AtomicU64,
    /// What the tree shows, read-only included.
    modes: Modes,
    /// Set when the daemon is asked to stop: every change (open for
    /// writing, write, mkdir, rmdir, unlink) is refused from then on.
    stopping: AtomicBool,
    /// Changes refused since stopping began: writers still at work.
    refused: AtomicU64,
    /// Counts the inodes given to lookups of `append`.
    append_slots: super::slots::AppendSlots,
    /// The growing files' inodes the kernel holds: only these have caches
    /// to invalidate after a commit.
    pub(super) held: super::invalidate::Held,
    /// The checkpoints of a sharded log, for `checkpoints/`.
    sharded: Option<Arc<dyn crate::sharded::CheckpointSource>>,
}

impl View {
    /// A view of `wal`, whose root shows `root_stream` (created if missing).
    pub fn new(wal: Wal, root_stream: &str, read_only: bool) -> crate::Result<View> {
        View::with_source(Arc::new(wal), root_stream, read_only)
    }

    /// A view of any log source.
    pub fn with_source(
        source: Arc<dyn LogSource>,
        root_stream: &str,
        read_only: bool,
    ) -> crate::Result<View> {
        if source.stream_info(root_stream).is_none() {
            if read_only {
                return Err(Error::NoSuchStream(root_stream.to_owned()));
            }
            source.create_stream(root_stream)?;
        }
        View::with_root(source, Some(root_stream), read_only)
    }

    /// A view whose root shows `root`, or only `streams/` when None. The
    /// root stream must exist, but for a read-only view (a follower's, whose
    /// stream may be shipped later): its files appear once it does.
    pub fn with_root(
        source: Arc<dyn LogSource>,
        root: Option<&str>,
        read_only: bool,
    ) -> crate::Result<View> {
        if let Some(r) = root.filter(|r| !read_only && !source.has_stream(r)) {
            return Err(Error::NoSuchStream(r.to_owned()));
        }
        let mut view = View {
            source,
            root: None,
            names: RwLock::default(),
            logs: Mutex::default(),
            handles: RwLock::default(),
            next_fh: AtomicU64::new(1),
            modes: Modes {
                read_only,
                ..Modes::default()
            },
            stopping: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            append_slots: Default::default(),
            held: Default::default(),
            sharded: None,
        };
        view.root = root.map(|r| view.sno(r).expect("fresh numbering"));
        Ok(view)
    }

    /// Shows `checkpoints/` for this sharded log (the same log as the
    /// source).
    pub fn with_sharded(mut self, sharded: Arc<dyn crate::sharded::CheckpointSource>) -> View {
        self.sharded = Some(sharded);
        self
    }

    /// The sharded log's checkpoints, if the view shows them.
    pub(super) fn sharded(&self) -> Option<&dyn crate::sharded::CheckpointSource> {
        self.sharded.as_deref().filter(|s| s.shown())
    }

    /// The log behind the view.
    pub fn source(&self) -> &dyn LogSource {
        &*self.source
    }

    /// A new inode value for a lookup of `append` (1 .. 2^40, wrapping).
    pub(super) fn append_value(&self) -> u64 {
        self.append_slots.lookup()
    }

    /// The kernel dropped `n` lookups of `node` (FORGET).
    pub fn forget(&self, node: Node, n: u64) {
        if let Node::In {
            kind: Kind::Append,
            value,
            ..
        } = node
        {
            self.append_slots.forgot(value, n);
        }
        if grows(node) {
            self.held.forgot(node.ino(), n);
        }
    }

    pub(super) fn read_only(&self) -> bool {
        self.modes.read_only
    }

    /// Shows files and directories with these permission bits
    /// (`--file-mode`, `--dir-mode`).
    pub fn with_modes(mut self, file: u16, dir: u16) -> View {
        self.modes = Modes {
            file,
            dir,
            read_only: self.modes.read_only,
        };
        self
    }

    pub(super) fn modes(&self) -> Modes {
        self.modes
    }

    pub(super) fn logs(&self) -> &Mutex<HashMap<u32, LogMap>> {
        &self.logs
    }

    // --- stopping ---

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

    /// Files open through the mount.
    pub fn open_handles(&self) -> usize {
        self.handles.read().len()
    }

    /// Files open for writing (`append` and `record` handles).
    pub fn open_writers(&self) -> usize {
        self.handles
            .read()
            .values()
            .filter(|h| h.lock().is_writer())
            .count()
    }

    fn refuse_if_stopping(&self) -> Result<(), Errno> {
        if self.stopping.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(libc::ESHUTDOWN);
        }
        Ok(())
    }

    // --- streams ---

    /// The number of a stream, assigned on first sight.
    pub(super) fn sno(&self, name: &str) -> Option<u32> {
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

    fn name(&self, sno: u32) -> Option<String> {
        self.names.read().by_sno.get(sno as usize).cloned()
    }

    /// The name of the stream shown at the root.
    pub(super) fn root_stream(&self) -> Option<String> {
        self.root.and_then(|sno| self.name(sno))
    }

    /// The name of a stream that still exists: an open handle must not
    /// bring a deleted stream back to life.
    pub(super) fn live_name(&self, sno: u32) -> Result<String, Errno> {
        self.name(sno)
            .filter(|n| self.source.has_stream(n))
            .ok_or(libc::ENOENT)
    }

    /// ENOENT once the node's stream is gone.
    pub(super) fn require_stream(&self, at: &At) -> Result<(), Errno> {
        if self.source.has_stream(at.stream) {
            Ok(())
        } else {
            Err(libc::ENOENT)
        }
    }

    /// Commits one entry to the stream numbered `sno`.
    pub(super) fn commit_entry(&self, sno: u32, entry: &[u8]) -> Result<Range<u64>, Errno> {
        let name = self.live_name(sno)?;
        self.source
            .append_batch(&name, &[entry])
            .map_err(|e| errno(&e))
    }

    /// Runs `f` on the node's kind with its place resolved: its stream's
    /// number and name (ENOENT if the number is unknown). `live` also
    /// requires the stream to still exist (for nodes below a stream
    /// directory; the root stream cannot be deleted).
    fn with<T>(
        &self,
        node: Node,
        live: bool,
        f: impl FnOnce(&dyn super::files::FileOps, &At) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let (sno, root_view, value) = match node {
            Node::Root
            | Node::Streams
            | Node::Checkpoints
            | Node::CheckpointHead
            | Node::CheckpointNew
            | Node::Checkpoint(_) => (self.root.unwrap_or(u32::MAX), true, 0),
            Node::In {
                sno,
                root_view,
                value,
                ..
            } => (sno, root_view, value),
        };
        let name = match node {
            Node::Streams
            | Node::Checkpoints
            | Node::CheckpointHead
            | Node::CheckpointNew
            | Node::Checkpoint(_) => String::new(),
            Node::Root if self.root.is_none() => String::new(),
            _ => self.name(sno).ok_or(libc::ENOENT)?,
        };
        let at = At {
            node,
            sno,
            stream: &name,
            root_view,
            value,
        };
        if live && matches!(node, Node::In { .. }) {
            self.require_stream(&at)?;
        }
        f(ops(node), &at)
    }

    /// Every stream numbered so far, with its number.
    pub fn streams_of_interest(&self) -> Vec<(u32, String)> {
        self.names
            .read()
            .by_sno
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, n.clone()))
            .collect()
    }

    /// The directories of stream `sno` (its `streams/<name>/`, and the root
    /// when it shows it): their mtime follows the stream's.
    pub fn stream_dirs(&self, sno: u32) -> Vec<Node> {
        let mut v = vec![Node::In {
            sno,
            root_view: false,
            kind: Kind::Dir,
            value: 0,
        }];
        if Some(sno) == self.root {
            v.push(Node::Root);
        }
        v
    }

    /// The nodes of the files whose contents grow with `sno` (for cache
    /// invalidation after commits).
    pub fn growing_nodes(&self, sno: u32) -> Vec<Node> {
        let mut v = Vec::new();
        for root_view in [false, true] {
            if root_view && Some(sno) != self.root {
                continue;
            }
            for kind in GROWING {
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

    // --- attributes and directories ---

    /// The attributes of `node`.
    pub fn getattr(&self, node: Node) -> Result<Attr, Errno> {
        self.with(node, true, |k, at| k.attr(self, at))
    }

    /// The child `name` of `parent`, with its attributes.
    pub fn lookup(&self, parent: Node, name: &[u8]) -> Result<Attr, Errno> {
        if name.len() > 255 {
            return Err(libc::ENOENT);
        }
        let child = self.with(parent, false, |k, at| k.lookup(self, at, name))?;
        let a = self.getattr(child)?;
        // Counted before the reply: an invalidation may then go to an
        // inode the kernel is about to hold, never miss one it holds.
        if grows(child) {
            self.held.looked_up(child.ino());
        }
        Ok(a)
    }

    /// Entries of a directory from `offset` on, as (name, ino, is_dir,
    /// next offset). `add` returns false when the reply buffer is full.
    pub fn readdir(
        &self,
        dir: Node,
        offset: u64,
        mut add: impl FnMut(&[u8], u64, bool, u64) -> bool,
    ) -> Result<(), Errno> {
        if offset < 1 && !add(b".", dir.ino(), true, 1) {
            return Ok(());
        }
        if offset < 2 && !add(b"..", dir.parent_ino(), true, 2) {
            return Ok(());
        }
        self.with(dir, false, |k, at| k.readdir(self, at, offset, &mut add))
    }

    /// `mkdir`: creates a stream under `streams/`.
    pub fn mkdir(&self, parent: Node, name: &[u8]) -> Result<Attr, Errno> {
        self.refuse_if_stopping()?;
        let child = self.with(parent, false, |k, at| k.mkdir(self, at, name))?;
        self.getattr(child)
    }

    /// `rmdir`: deletes a stream under `streams/`.
    pub fn rmdir(&self, parent: Node, name: &[u8]) -> Result<(), Errno> {
        self.refuse_if_stopping()?;
        self.with(parent, false, |k, at| k.rmdir(self, at, name))
    }

    /// `unlink`: frees the oldest sealed segment under `segments/`.
    pub fn unlink(&self, parent: Node, name: &[u8]) -> Result<(), Errno> {
        self.refuse_if_stopping()?;
        self.with(parent, false, |k, at| k.unlink(self, at, name))
    }

    /// `truncate` and `O_TRUNC`: only what the kind allows (a no-op on
    /// `append` and `record`); other attribute changes are refused.
    pub fn setattr(&self, node: Node, size: Option<u64>, other: bool) -> Result<Attr, Errno> {
        let attr = self.getattr(node)?;
        match size {
            Some(size) if !other => {
                self.with(node, false, |k, _| k.set_size(size))?;
                Ok(attr)
            }
            _ => Err(libc::EPERM),
        }
    }

    // --- files ---

    /// Opens `node`; `write` and `read` are the access asked for.
    pub fn open(&self, node: Node, read: bool, write: bool) -> Result<Opened, Errno> {
        let (handle, serve) = self.with(node, true, |k, at| {
            if write && matches!(node, Node::In { .. } | Node::CheckpointNew) {
                self.refuse_if_stopping()?;
            }
            k.open(self, at, read, write)
        })?;
        if let Node::In {
            kind: Kind::Append,
            value,
            ..
        } = node
        {
            self.append_slots.opened(value);
        }
        let backing = match &handle {
            Handle::Segment(bytes) if serve.passthrough => {
                bytes.file().and_then(|f| f.try_clone().ok())
            }
            _ => None,
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .write()
            .insert(fh, Arc::new(Mutex::new(handle)));
        Ok(Opened {
            fh,
            direct: serve.direct,
            keep_cache: serve.keep_cache,
            parallel_writes: serve.parallel_writes,
            no_flush: serve.no_flush,
            backing,
        })
    }

    fn handle(&self, fh: u64) -> Result<Arc<Mutex<Handle>>, Errno> {
        self.handles.read().get(&fh).cloned().ok_or(libc::EBADF)
    }

    /// Reads `size` bytes at `offset` of an open file.
    pub fn read(&self, node: Node, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        // Only handles with state are locked: reads of plain files through
        // one handle may run at once.
        let h = self.handle(fh).ok();
        let mut guard = h
            .as_ref()
            .map(|h| h.lock())
            .filter(|g| !matches!(**g, Handle::Plain));
        let mut plain = Handle::Plain;
        let h = guard.as_deref_mut().unwrap_or(&mut plain);
        self.with(node, false, |k, at| {
            k.read(self, at, h, offset, size as usize)
        })
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
            .and_then(|()| h.write(self, offset, data));
        if let Err(e) = r {
            h.poison(e);
        }
        r
    }

    /// Commits what a handle holds (close(2) and fsync(2)): the partial
    /// line of `append`, the record of `record`.
    pub fn flush(&self, fh: u64) -> Result<(), Errno> {
        let h = self.handle(fh)?;
        let mut h = h.lock();
        if let Some(e) = h.failed() {
            return Err(e);
        }
        let r = h.commit(self);
        if let Err(e) = r {
            h.poison(e);
        }
        r
    }

    /// fsync(2): makes everything written through the handle durable, in
    /// every sync mode.
    pub fn fsync(&self, node: Node, fh: u64) -> Result<(), Errno> {
        if node == Node::CheckpointNew {
            // Checkpoints are durable when the write that makes them returns.
            return self.flush(fh);
        }
        let name = self.with(node, true, |_, at| Ok(at.stream.to_owned()))?;
        if let Some(e) = self.handles.read().get(&fh).and_then(|h| h.lock().failed()) {
            return Err(e);
        }
        self.source.sync(&name).map_err(|e| errno(&e))
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
        if let Some(h) = self.handles.write().remove(&fh) {
            if let Some(slot) = h.lock().append_slot() {
                self.append_slots.released(slot);
            }
        }
    }

    /// The sync mode of the log behind the view.
    pub fn sync_mode(&self) -> SyncMode {
        self.source.modes().map_or(SyncMode::Strict, |m| m.0)
    }

    /// The compression of the log behind the view.
    pub fn compression(&self) -> CompressionType {
        self.source.modes().map_or(CompressionType::None, |m| m.1)
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;

/// The kinds of file whose contents grow with their stream's commits.
const GROWING: [Kind; 4] = [Kind::Log, Kind::Stat, Kind::Entries, Kind::Segments];

/// Whether `node` is one of [`View::growing_nodes`].
fn grows(node: Node) -> bool {
    matches!(node, Node::In { kind, value: 0, .. } if GROWING.contains(&kind))
}
