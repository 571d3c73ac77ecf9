//! Group commit: many appenders, one fdatasync.
//!
//! Appenders write their frames under the stream's writer lock, then wait
//! here without it. The first waiter to find no sync in flight becomes the
//! leader: it notes how far the file is written, syncs without holding any
//! lock, and on return marks everything up to that point durable and wakes
//! everyone. Before it syncs, a leader gathers: it waits, bounded by the
//! last sync's duration, until as many entries are pending as the last sync
//! carried, so that the writers that sync released ride the next one. Waiters whose frames were written after the leader looked wait
//! for the next round, led by one of them. A failed sync fails every waiter
//! of that round with its errno, and all later ones: the stream then
//! refuses writes until reopened (the kernel may have dropped the pages).
//!
//! The same state publishes progress to followers (`wait_visible`).
//!
//! After each sync the leader records how far it reached in walfs.synced
//! (the [`Marker`]), without syncing that file: whatever value of it
//! survives a crash was true before the crash, so recovery can tell
//! damage in synced bytes (corruption) from what a crash leaves.

use crate::storage::StorageFile;
use parking_lot::{Condvar, Mutex};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a leader waits to gather writers before it syncs.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// A log-wide counter bumped whenever any stream publishes entries, for one
/// thread to follow every stream at once (the mount's cache invalidation).
#[derive(Default)]
pub struct Epoch {
    n: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Epoch {
    pub fn bump(&self) {
        self.n.fetch_add(1, Ordering::AcqRel);
        let _g = self.lock.lock();
        self.cv.notify_all();
    }

    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock.lock();
        loop {
            let n = self.n.load(Ordering::Acquire);
            if n != seen || self.cv.wait_until(&mut g, deadline).timed_out() {
                return self.n.load(Ordering::Acquire);
            }
        }
    }
}

pub struct CommitState {
    /// One past the last id handed to the kernel.
    pub written: u64,
    /// Bytes of the active segment handed to the kernel.
    pub written_len: u64,
    /// One past the last id known to be on disk.
    pub durable: u64,
    /// Bytes of the active segment known to be on disk.
    pub durable_len: u64,
    /// Start id of the active segment the lengths refer to.
    pub segment: u64,
    /// The active segment's write descriptor, when open.
    pub file: Option<Arc<dyn StorageFile>>,
    syncing: bool,
    /// Entries the last sync made durable: about how many writers are at
    /// work, and so how many to gather before the next one.
    last_batch: u64,
    /// How long the last sync took.
    last_sync: Duration,
    /// errno and message of the sync failure that poisoned the stream.
    pub failed: Option<(i32, String)>,
    pub closed: bool,
}

/// Writes walfs.synced: one slot per sync, alternating; the file itself is
/// synced at most once a second (and at a clean close), so its record may
/// lag the segment after a power loss, never lead it.
pub struct Marker {
    open: Box<dyn Fn() -> io::Result<Arc<dyn StorageFile>> + Send + Sync>,
    file: Option<Arc<dyn StorageFile>>,
    seq: u32,
    last: Option<crate::format::SyncedMark>,
    /// When the file was last synced, and whether a record was written since.
    synced_at: Instant,
    dirty: bool,
}

/// How often walfs.synced itself is synced (the most a power loss can
/// make its record lag).
pub const MARK_SYNC_INTERVAL: Duration = Duration::from_secs(1);

impl Marker {
    /// A marker writing through the file `open` returns (opened again
    /// whenever the stream gives up its descriptors).
    pub fn new(
        open: impl Fn() -> io::Result<Arc<dyn StorageFile>> + Send + Sync + 'static,
    ) -> Marker {
        Marker {
            open: Box::new(open),
            file: None,
            seq: 0,
            last: None,
            synced_at: Instant::now(),
            dirty: false,
        }
    }

    fn file(&mut self) -> io::Result<Arc<dyn StorageFile>> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let f = (self.open)()?;
        self.file = Some(f.clone());
        Ok(f)
    }

    /// Records `m` (bytes of a segment now known on disk). A record lower
    /// than the last (a slow leader's, or of a segment since sealed) is
    /// skipped: the mark only grows.
    pub fn record(&mut self, m: crate::format::SyncedMark) {
        if self
            .last
            .is_some_and(|l| l.segment > m.segment || (l.segment == m.segment && l.len >= m.len))
        {
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        let slot = if self.seq % 2 == 0 {
            0
        } else {
            crate::format::SYNCED_SLOT
        };
        let r = self
            .file()
            .and_then(|f| f.write_all_at(&crate::format::synced_encode(self.seq, m), slot));
        match r {
            Ok(()) => {
                self.last = Some(m);
                self.dirty = true;
            }
            // A hint: without it, recovery takes less for synced than is.
            Err(e) => {
                log::warn!(
                    "could not record the synced length of segment {}: {e}",
                    m.segment
                );
                self.file = None;
            }
        }
        if self.synced_at.elapsed() >= MARK_SYNC_INTERVAL {
            self.sync();
        }
    }

    /// Makes the last record durable (a clean close).
    pub fn sync(&mut self) {
        if !self.dirty {
            return;
        }
        self.synced_at = Instant::now();
        match self.file().and_then(|f| f.sync_data()) {
            Ok(()) => self.dirty = false,
            Err(e) => log::warn!("could not sync walfs.synced: {e}"),
        }
    }

    /// Closes the descriptor (the stream's write descriptors were evicted).
    pub fn release(&mut self) {
        self.file = None;
    }
}

pub struct Commit {
    pub state: Mutex<CommitState>,
    /// walfs.synced, once the stream is writable.
    pub marker: Mutex<Option<Marker>>,
    synced: Condvar,
    /// A leader gathering writers waits here for their writes.
    wrote_cv: Condvar,
    published: Condvar,
    visible: AtomicU64,
    /// When entries were last published (nanoseconds since the epoch): the
    /// stream's modification time.
    modified: AtomicU64,
    /// Readers see only durable entries (Strict mode), else written ones.
    visible_when_durable: bool,
    epoch: Arc<Epoch>,
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How a wait for durability failed.
pub struct SyncFailure {
    pub errno: i32,
    pub message: String,
    /// This waiter ran the failed sync and must roll the stream back.
    pub leader: bool,
}

impl SyncFailure {
    pub fn io_error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

impl Commit {
    pub fn new(
        next_id: u64,
        len: u64,
        segment: u64,
        visible_when_durable: bool,
        epoch: Arc<Epoch>,
    ) -> Commit {
        Commit {
            state: Mutex::new(CommitState {
                written: next_id,
                written_len: len,
                durable: next_id,
                durable_len: len,
                segment,
                file: None,
                syncing: false,
                last_batch: 0,
                last_sync: Duration::ZERO,
                failed: None,
                closed: false,
            }),
            marker: Mutex::new(None),
            synced: Condvar::new(),
            wrote_cv: Condvar::new(),
            published: Condvar::new(),
            visible: AtomicU64::new(next_id),
            modified: AtomicU64::new(nanos(std::time::SystemTime::now())),
            visible_when_durable,
            epoch,
        }
    }

    /// One past the last id readers may see.
    pub fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// When entries were last published (or, before any, what the stream
    /// was last changed by, as set at open).
    pub fn modified(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_nanos(self.modified.load(Ordering::Acquire))
    }

    /// Sets the modification time (at open: the active segment's mtime).
    pub fn set_modified(&self, t: std::time::SystemTime) {
        self.modified.store(nanos(t), Ordering::Release);
    }

    fn publish(&self, st: &CommitState) {
        let v = if self.visible_when_durable {
            st.durable
        } else {
            st.written
        };
        if v > self.visible.swap(v, Ordering::AcqRel) {
            self.modified
                .store(nanos(std::time::SystemTime::now()), Ordering::Release);
            self.published.notify_all();
            self.epoch.bump();
        }
    }

    /// Called by the writer (holding its lock) after a frame is written.
    pub fn wrote(&self, end_id: u64, len: u64) {
        let mut st = self.state.lock();
        st.written = end_id;
        st.written_len = len;
        self.publish(&st);
        if st.syncing {
            self.wrote_cv.notify_one();
        }
    }

    /// Called by the writer after sealing the old segment (synced) and
    /// opening `file` as the new, empty, active segment.
    pub fn rotated(&self, segment: u64, file: Option<Arc<dyn StorageFile>>) {
        let mut st = self.state.lock();
        st.durable = st.written;
        st.segment = segment;
        st.written_len = 0;
        st.durable_len = 0;
        st.file = file;
        self.publish(&st);
        self.synced.notify_all();
    }

    pub fn set_file(&self, file: Option<Arc<dyn StorageFile>>) {
        let release = file.is_none();
        self.state.lock().file = file;
        if release {
            if let Some(m) = self.marker.lock().as_mut() {
                m.release();
            }
        }
    }

    /// Takes back what was written past `end_id` (at byte `len` of the
    /// active segment), which the caller has cut from the file: entries
    /// refused after the fact (a fenced writer's, never shipped).
    pub fn take_back(&self, end_id: u64, len: u64) {
        let mut st = self.state.lock();
        st.written = end_id;
        st.durable = end_id;
        st.written_len = len;
        st.durable_len = len;
        self.visible.store(end_id, Ordering::Release);
        if let Some(m) = self.marker.lock().as_mut() {
            m.last = None;
            m.record(crate::format::SyncedMark {
                segment: st.segment,
                len,
                end_id,
            });
            m.sync();
        }
        self.epoch.bump();
    }

    /// Records in walfs.synced that `len` bytes of segment `segment`,
    /// holding ids below `end_id`, are on disk.
    pub fn mark_synced(&self, segment: u64, len: u64, end_id: u64) {
        if let Some(m) = self.marker.lock().as_mut() {
            m.record(crate::format::SyncedMark {
                segment,
                len,
                end_id,
            });
        }
    }

    /// Syncs walfs.synced (a clean close).
    pub fn sync_mark(&self) {
        if let Some(m) = self.marker.lock().as_mut() {
            m.sync();
        }
    }

    pub fn failed(&self) -> Option<(i32, String)> {
        self.state.lock().failed.clone()
    }

    /// Marks everything written as durable (after a sync done by the writer).
    pub fn all_durable(&self) {
        let mut st = self.state.lock();
        st.durable = st.written;
        st.durable_len = st.written_len;
        self.publish(&st);
        self.synced.notify_all();
    }

    /// Returns once ids below `target` are durable, syncing as the leader
    /// when no sync is in flight. `open(start id)` reopens the segment the
    /// leader's snapshot belongs to when its descriptor was evicted.
    pub fn wait_durable(
        &self,
        target: u64,
        open: impl Fn(u64) -> io::Result<Arc<dyn StorageFile>>,
    ) -> Result<(), SyncFailure> {
        let mut st = self.state.lock();
        loop {
            if st.durable >= target {
                return Ok(());
            }
            if let Some((errno, message)) = &st.failed {
                return Err(SyncFailure {
                    errno: *errno,
                    message: message.clone(),
                    leader: false,
                });
            }
            if st.syncing {
                self.synced.wait(&mut st);
                continue;
            }
            st.syncing = true;
            // Gather: the writers the last sync released are writing their
            // next entries; a sync started at once would carry only those
            // that beat it, about half of them, and the rest would wait a
            // whole sync more. Wait (at most as long as the last sync took,
            // never more than MAX_GATHER) until as many entries are pending
            // as the last sync carried. A lone writer never waits: its
            // entry is all there is.
            let want = st.last_batch;
            if st.written.saturating_sub(st.durable) < want {
                let deadline = Instant::now() + st.last_sync.min(MAX_GATHER);
                while st.written.saturating_sub(st.durable) < want
                    && st.failed.is_none()
                    && !st.closed
                    && !self.wrote_cv.wait_until(&mut st, deadline).timed_out()
                {}
            }
            if st.durable >= target || st.failed.is_some() {
                // Made durable meanwhile (a rotation), or failed (another
                // writer poisoned the stream): the loop says which.
                st.syncing = false;
                self.synced.notify_all();
                continue;
            }
            let (written, written_len, segment) = (st.written, st.written_len, st.segment);
            let file = st.file.clone();
            let (before, started) = (st.durable, std::time::Instant::now());
            let result = parking_lot::MutexGuard::unlocked(&mut st, || match file {
                Some(f) => f.sync_data(),
                None => open(segment).and_then(|f| f.sync_data()),
            });
            if result.is_ok() {
                let carried = written.saturating_sub(before);
                st.last_batch = carried;
                st.last_sync = started.elapsed();
                crate::metrics::global().synced(st.last_sync, carried);
            }
            st.syncing = false;
            match result {
                Ok(()) => {
                    st.durable = st.durable.max(written);
                    if st.segment == segment {
                        st.durable_len = st.durable_len.max(written_len);
                    }
                    self.publish(&st);
                    self.synced.notify_all();
                    // The waiters are on their way; the leader records how
                    // far the sync reached.
                    parking_lot::MutexGuard::unlocked(&mut st, || {
                        self.mark_synced(segment, written_len, written)
                    });
                }
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    let message = format!("fdatasync failed: {e}");
                    st.failed = Some((errno, message.clone()));
                    self.synced.notify_all();
                    return Err(SyncFailure {
                        errno,
                        message,
                        leader: true,
                    });
                }
            }
        }
    }

    /// Marks the stream failed without a sync (a write could not be undone).
    pub fn poison(&self, errno: i32, message: String) {
        let mut st = self.state.lock();
        if st.failed.is_none() {
            st.failed = Some((errno, message));
        }
        self.synced.notify_all();
    }

    /// Blocks until an id at or past `after` is visible, the stream is
    /// closed, or `timeout` passes; returns the visible end.
    pub fn wait_visible(&self, after: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        loop {
            let v = self.visible();
            if v > after || st.closed {
                return v;
            }
            if self.published.wait_until(&mut st, deadline).timed_out() {
                return self.visible();
            }
        }
    }

    /// Wakes every follower for good (the stream was deleted or the log closed).
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        self.published.notify_all();
        self.synced.notify_all();
        self.epoch.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wait` returns the count a bump made, at once; without a bump, the
    /// same count after the timeout.
    #[test]
    fn an_epoch_wait_returns_what_changed() {
        let e = Arc::new(Epoch::default());
        assert_eq!(e.wait(0, Duration::from_millis(10)), 0, "nothing changed");
        let e2 = e.clone();
        let t = std::thread::spawn(move || e2.wait(0, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        e.bump();
        e.bump();
        let seen = t.join().unwrap();
        assert!(seen == 1 || seen == 2, "{seen}");
        assert_eq!(e.wait(2, Duration::from_millis(10)), 2);
        assert_eq!(e.wait(1, Duration::from_secs(30)), 2, "already past 1");
    }
}
