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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        self.getattr(child)
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
mod tests {
    use super::*;

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
            assert_eq!(v.source().next_id("default"), i + 1);
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
        // A held partial line, then more bytes without a newline past the
        // bound (as `cat big >> append` hands them over): the held part is
        // never committed either.
        let h = v.open(append, false, true).unwrap();
        v.write(h.fh, 0, &vec![b'a'; MAX_RECORD - 1]).unwrap();
        assert_eq!(v.write(h.fh, 0, b"xy"), Err(libc::EFBIG));
        assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
        v.release(h.fh);
        assert_eq!(
            v.source().next_id("default"),
            0,
            "the held prefix stays uncommitted"
        );
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
        assert_eq!(v.source().next_id("default"), 0, "nothing was committed");
        // A line of exactly the bound is fine.
        let mut line = vec![b'c'; MAX_RECORD - 1];
        line.push(b'\n');
        append_ok(&v, &line);
        assert_eq!(v.source().next_id("default"), 1);
    }

    /// A descriptor held open for many writes costs the daemon a bounded
    /// amount: a write-only one keeps no ids at all, a read-write one at
    /// most MAX_UNREAD_IDS of unread ones (and nothing once read).
    #[test]
    fn a_long_lived_descriptor_holds_bounded_ids() {
        use crate::mount::files::append::MAX_UNREAD_IDS;
        let t = tempfile::tempdir().unwrap();
        let mut o = crate::WalOptions::new(t.path());
        o.sync_mode = crate::SyncMode::Async;
        let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
        let append = node(&v, Node::Root, b"append");
        let held = |fh: u64| match &*v.handle(fh).unwrap().lock() {
            Handle::Append(s) => s.ids_held(),
            _ => unreachable!(),
        };
        let wo = v.open(append, false, true).unwrap().fh;
        let rw = v.open(append, true, true).unwrap().fh;
        for i in 0..150_000u32 {
            let line = format!("{i}\n");
            v.write(wo, 0, line.as_bytes()).unwrap();
            v.write(rw, 0, line.as_bytes()).unwrap();
        }
        assert_eq!(held(wo), 0, "a write-only handle keeps no ids");
        assert!(held(rw) <= MAX_UNREAD_IDS, "{} bytes of ids", held(rw));
        assert!(held(rw) > MAX_UNREAD_IDS / 2, "the newest are kept");
        // The newest line is the last write's ids.
        let all = v.read(append, rw, 0, (2 * MAX_UNREAD_IDS) as u32).unwrap();
        let last = String::from_utf8(all).unwrap();
        assert!(
            last.ends_with("299999-299999\n"),
            "{}",
            &last[last.len() - 40..]
        );
        // Old ones went as whole lines: every line is "FIRST-LAST".
        assert!(
            last.lines().all(|l| l
                .split_once('-')
                .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())),
            "a partial line of ids"
        );
        v.write(rw, 0, b"x\n").unwrap();
        assert!(held(rw) < 64, "what was read is let go");
        v.release(wo);
        v.release(rw);
    }

    /// A reader of a read-write handle is owed every line of ids up to the
    /// bound, whatever it read before: nothing is dropped early.
    #[test]
    fn a_reader_behind_by_less_than_the_bound_misses_no_ids() {
        use crate::mount::files::append::MAX_UNREAD_IDS;
        let t = tempfile::tempdir().unwrap();
        let mut o = crate::WalOptions::new(t.path());
        o.sync_mode = crate::SyncMode::Async;
        let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
        let append = node(&v, Node::Root, b"append");
        let rw = v.open(append, true, true).unwrap().fh;
        let (mut want, mut i) = (String::new(), 0u64);
        let mut write_until = |len: usize, want: &mut String| {
            while want.len() < len {
                v.write(rw, 0, b"x\n").unwrap();
                want.push_str(&format!("{i}-{i}\n"));
                i += 1;
            }
        };
        write_until(70_000, &mut want);
        // Read some (less than what makes the handle let read ids go).
        let mut got = v.read(append, rw, 0, 60_000).unwrap();
        // Unread: under the bound; read and unread together: over it.
        write_until(MAX_UNREAD_IDS + 10_000, &mut want);
        got.extend(v.read(append, rw, 0, (2 * MAX_UNREAD_IDS) as u32).unwrap());
        assert!(String::from_utf8(got).unwrap() == want, "ids were dropped");
        v.release(rw);
    }

    /// Ids a reader has read are let go at the next write, however few.
    #[test]
    fn ids_once_read_are_let_go() {
        let t = tempfile::tempdir().unwrap();
        let v = view(t.path(), 64 << 20);
        let append = node(&v, Node::Root, b"append");
        let held = |fh: u64| match &*v.handle(fh).unwrap().lock() {
            Handle::Append(s) => s.ids_held(),
            _ => unreachable!(),
        };
        let rw = v.open(append, true, true).unwrap().fh;
        for _ in 0..10 {
            v.write(rw, 0, b"y\n").unwrap();
        }
        assert_eq!(
            v.read(append, rw, 0, 1 << 20).unwrap(),
            b"0-0\n1-1\n2-2\n3-3\n4-4\n5-5\n6-6\n7-7\n8-8\n9-9\n"
        );
        v.write(rw, 0, b"y\n").unwrap();
        assert_eq!(held(rw), "10-10\n".len());
        v.release(rw);
    }

    /// `record` is write-only: opened for reading (alone or with writing)
    /// it is refused, so its read is never reached.
    #[test]
    fn record_opens_for_writing_only() {
        let t = tempfile::tempdir().unwrap();
        let v = view(t.path(), 64 << 20);
        let record = node(&v, Node::Root, b"record");
        for (read, write) in [(true, true), (true, false), (false, false)] {
            assert_eq!(
                v.open(record, read, write).err(),
                Some(libc::EACCES),
                "read {read}, write {write}"
            );
        }
        let h = v.open(record, false, true).unwrap();
        v.release(h.fh);
    }

    /// The bound on a line (MAX_RECORD) is exact wherever the line sits: a
    /// held partial line, a trailing one, or many lines in one write.
    #[test]
    fn the_line_bound_is_exact() {
        let t = tempfile::tempdir().unwrap();
        let mut o = crate::WalOptions::new(t.path());
        o.sync_mode = crate::SyncMode::Async;
        let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
        let append = node(&v, Node::Root, b"append");
        // Held, no newline: exactly the bound, then one byte more.
        let h = v.open(append, false, true).unwrap();
        v.write(h.fh, 0, &vec![b'a'; MAX_RECORD]).unwrap();
        assert_eq!(v.write(h.fh, 0, b"a"), Err(libc::EFBIG));
        v.release(h.fh);
        // A trailing partial line of exactly the bound after a line.
        let h = v.open(append, false, true).unwrap();
        let mut w = b"x\n".to_vec();
        w.extend(std::iter::repeat_n(b'r', MAX_RECORD));
        v.write(h.fh, 0, &w).unwrap();
        v.flush(h.fh).unwrap();
        v.release(h.fh);
        assert_eq!(v.source().next_id("default"), 2);
        // One write of short lines, far more than the bound in all.
        let h = v.open(append, false, true).unwrap();
        let lines = b"0123456789abcdef\n".repeat(MAX_RECORD / 16);
        v.write(h.fh, 0, &lines).unwrap();
        v.release(h.fh);
        assert_eq!(v.source().next_id("default"), 2 + (MAX_RECORD / 16) as u64);
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
        assert_eq!(v.source().next_id("default"), 0);
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
        let first = v.source().segments("default")[0].clone();
        let segments = Node::In {
            sno: 0,
            root_view: true,
            kind: Kind::Segments,
            value: 0,
        };
        v.unlink(
            segments,
            crate::format::segment_name(first.start_id).as_bytes(),
        )
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
