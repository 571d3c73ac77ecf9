//! Kernel caches of growing files, invalidated after commits from a thread
//! of their own (invalidating from a request handler can deadlock against
//! the kernel): a growing file's pages and size at each publication, its
//! stream's directories at most once a second.

use super::config::MountError;
use super::view::View;
use fuser::INodeNo;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Starts the invalidation thread; it ends once `stop` is set.
pub(super) fn spawn(
    view: Arc<View>,
    notifier: fuser::Notifier,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, MountError> {
    std::thread::Builder::new()
        .name("walfs-invalidate".into())
        .spawn(move || {
            let mut epoch = 0;
            let mut seen: HashMap<u32, u64> = HashMap::new();
            // Stream directories changed since their attributes were
            // last invalidated, and when that was: at most once a
            // second, since every path walk through the root then
            // asks for its attributes again.
            let mut dirs: HashMap<u32, (bool, std::time::Instant)> = HashMap::new();
            while !stop.load(Ordering::Acquire) {
                // While the kernel holds no growing file, commits have no
                // cache to invalidate: the thread is not woken by each
                // one (a wake-up per commit, on another core), only by
                // the first lookup of one, or every 250 ms for the
                // directories.
                let tick = Duration::from_millis(250);
                if view.held.wait_any(tick) {
                    epoch = view.source().wait_any(epoch, tick);
                }
                for (sno, name) in view.streams_of_interest() {
                    // What readers may have seen; never a flush from
                    // here (it would undo Async mode's batching).
                    let next = view.source().published_id(&name);
                    if seen.insert(sno, next) != Some(next) {
                        // Only what the kernel holds: a notification for
                        // an inode it never looked up fails (ENOENT) and
                        // costs a system call per file per commit.
                        for node in view.growing_nodes(sno) {
                            if view.held.holds(node.ino()) {
                                let _ = notifier.inval_inode(INodeNo(node.ino()), 0, 0);
                                crate::metrics::global().invalidations.inc();
                            }
                        }
                        dirs.entry(sno)
                            .or_insert((false, std::time::Instant::now() - Duration::from_secs(1)))
                            .0 = true;
                    }
                    if let Some((pending, at)) = dirs.get_mut(&sno) {
                        if *pending && at.elapsed() >= Duration::from_secs(1) {
                            for node in view.stream_dirs(sno) {
                                let _ = notifier.inval_inode(INodeNo(node.ino()), 0, 0);
                            }
                            *pending = false;
                            *at = std::time::Instant::now();
                        }
                    }
                }
            }
        })
        .map_err(|e| MountError(format!("cannot start the invalidation thread: {e}")))
}

/// Inodes the kernel holds, with their lookup counts: counted at each
/// LOOKUP answered, dropped by FORGET. An inode it does not hold has no
/// cache to invalidate, and a notification for it fails with ENOENT.
#[derive(Default)]
pub(super) struct Held {
    counts: Mutex<HashMap<u64, u64>>,
    /// Notified at each lookup counted.
    looked_up: Condvar,
}

impl Held {
    pub(super) fn looked_up(&self, ino: u64) {
        *self.counts.lock().entry(ino).or_default() += 1;
        self.looked_up.notify_all();
    }

    /// Whether the kernel holds any of them, waiting up to `timeout` for
    /// it to look one up if it holds none.
    pub(super) fn wait_any(&self, timeout: Duration) -> bool {
        let mut held = self.counts.lock();
        if held.is_empty() {
            self.looked_up.wait_for(&mut held, timeout);
        }
        !held.is_empty()
    }

    pub(super) fn forgot(&self, ino: u64, n: u64) {
        let mut held = self.counts.lock();
        if let Some(c) = held.get_mut(&ino) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                held.remove(&ino);
            }
        }
    }

    pub(super) fn holds(&self, ino: u64) -> bool {
        self.counts.lock().contains_key(&ino)
    }
}
