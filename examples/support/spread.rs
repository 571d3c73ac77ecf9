//! `spread` and `spread-nosync` of the null filesystem: `durable` and
//! `append` as concurrent writers need them (an inode each, walfs's own
//! lookup policy), and `spread`'s group commit in its simplest form.

use std::fs::File;
use std::io::Write;
use walfs::mount::slots::AppendSlots;

/// `spread`'s inodes are `SPREAD + slot`, `spread-nosync`'s
/// `SPREAD_NOSYNC + slot` (slots from 1, at most 4,096).
pub const SPREAD: u64 = 1 << 20;
pub const SPREAD_NOSYNC: u64 = 2 << 20;

/// The state of `spread` and `spread-nosync`.
#[derive(Default)]
pub struct Spread {
    pub synced: AppendSlots,
    pub nosync: AppendSlots,
    /// Writes made (tickets) and the last ticket an fdatasync covers.
    group: std::sync::Mutex<Group>,
    synced_cv: std::sync::Condvar,
    /// fdatasyncs made for `spread` (so that the sharing is counted, not
    /// assumed).
    pub syncs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Group {
    written: u64,
    synced: u64,
    syncing: bool,
}

impl Spread {
    /// Which slot pool an inode belongs to, and its slot.
    pub fn slot(&self, ino: u64) -> Option<(&AppendSlots, u64)> {
        match ino {
            SPREAD_NOSYNC.. => Some((&self.nosync, ino - SPREAD_NOSYNC)),
            SPREAD.. => Some((&self.synced, ino - SPREAD)),
            _ => None,
        }
    }

    /// Writes `data` to `sink` and returns once an fdatasync begun after
    /// the write has succeeded: one sync for every writer that wrote while
    /// the one before ran.
    pub fn write_durably(&self, sink: &File, data: &[u8]) -> std::io::Result<()> {
        let mut g = self.group.lock().unwrap();
        (&*sink).write_all(data)?;
        g.written += 1;
        let ticket = g.written;
        loop {
            if g.synced >= ticket {
                return Ok(());
            }
            if g.syncing {
                g = self.synced_cv.wait(g).unwrap();
                continue;
            }
            g.syncing = true;
            let upto = g.written;
            drop(g);
            let r = sink.sync_data();
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            g = self.group.lock().unwrap();
            g.syncing = false;
            if r.is_ok() {
                g.synced = upto;
            }
            self.synced_cv.notify_all();
            r?;
        }
    }
}
