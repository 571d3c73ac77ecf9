//! FUSE passthrough for sealed segments: the kernel reads `segments/*.wal`
//! from the segment file itself, so their READs never reach the daemon and
//! their bytes cross no FUSE buffer.
//!
//! Only sealed segments of a local log (never the active one, whose bytes
//! may not be durable yet, nor a follower's, which live in a bucket). It
//! needs the kernel's FUSE_PASSTHROUGH and CAP_SYS_ADMIN to register a
//! backing file; without either, segments are served as before.
//!
//! The kernel allows one backing file per inode while any open file uses
//! it, and refuses a passthrough open of an inode that a page-cached open
//! holds (and the other way round). So one backing id per segment inode is
//! shared by its open handles and closed with the last of them, and while
//! passthrough is on, an open that cannot have it is served with direct
//! I/O, which conflicts with neither.

use super::view::Opened;
use crate::metrics;
use fuser::{BackingId, FileHandle, FopenFlags, ReplyOpen};
use parking_lot::Mutex;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default)]
pub(super) struct Passthrough {
    /// Negotiated with the kernel at INIT.
    on: AtomicBool,
    /// The kernel refused to register a backing file for lack of
    /// privilege: stop asking.
    refused: AtomicBool,
    inner: Mutex<Backings>,
}

#[derive(Default)]
struct Backings {
    /// Per inode: its backing id and how many open handles use it.
    by_ino: HashMap<u64, (BackingId, usize)>,
    /// The inode each passed-through handle uses.
    by_fh: HashMap<u64, u64>,
}

/// Whether this process may register backing files (CAP_SYS_ADMIN in its
/// effective set), read from /proc/self/status.
fn may_register() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps >> CAP_SYS_ADMIN & 1 == 1)
}

impl Passthrough {
    /// At INIT: asks the kernel for passthrough if `wanted`, the kernel
    /// offers it and this process may use it.
    pub fn negotiate(&self, wanted: bool, config: &mut fuser::KernelConfig) {
        if !wanted || !may_register() {
            return;
        }
        if config
            .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
            .is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.on.store(true, Ordering::Relaxed);
        }
    }

    /// Whether passthrough was negotiated: then no segment may be opened
    /// through the page cache (the kernel would refuse a passthrough open
    /// of that inode while it is held).
    fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Answers an open of inode `ino` as the view asks, through
    /// passthrough where it can.
    pub fn reply(&self, reply: ReplyOpen, ino: u64, o: &Opened) {
        let mut flags = FopenFlags::empty();
        flags.set(FopenFlags::FOPEN_DIRECT_IO, o.direct);
        flags.set(FopenFlags::FOPEN_KEEP_CACHE, o.keep_cache);
        flags.set(FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES, o.parallel_writes);
        flags.set(FopenFlags::FOPEN_NOFLUSH, o.no_flush);
        let reply = match &o.backing {
            Some(file) => match self.open(reply, ino, o.fh, flags, file) {
                Ok(()) => return,
                // Never through the page cache while passthrough is on:
                // the kernel would refuse a passthrough open of the inode
                // while that open lasts.
                Err(r) if self.on() => {
                    flags.remove(FopenFlags::FOPEN_KEEP_CACHE);
                    flags.insert(FopenFlags::FOPEN_DIRECT_IO);
                    r
                }
                Err(r) => r,
            },
            None => reply,
        };
        reply.opened(FileHandle(o.fh), flags)
    }

    /// Replies to the open of handle `fh` on inode `ino` with the backing
    /// file `file`; gives the reply back when the kernel refuses it (the
    /// caller then serves the file itself, with direct I/O).
    fn open(
        &self,
        reply: ReplyOpen,
        ino: u64,
        fh: u64,
        flags: FopenFlags,
        file: &std::fs::File,
    ) -> Result<(), ReplyOpen> {
        if !self.on() || self.refused.load(Ordering::Relaxed) {
            return Err(reply);
        }
        // Neither flag goes with passthrough: the kernel refuses
        // KEEP_CACHE with it, and direct I/O would bypass it.
        let flags = flags - FopenFlags::FOPEN_KEEP_CACHE - FopenFlags::FOPEN_DIRECT_IO;
        let mut b = self.inner.lock();
        let b = &mut *b;
        let (id, users) = match b.by_ino.entry(ino) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match reply.open_backing(file) {
                Ok(id) => {
                    metrics::global().passthrough_backing_files.inc();
                    e.insert((id, 0))
                }
                Err(err) => {
                    if err.raw_os_error() == Some(libc::EPERM) {
                        self.refused.store(true, Ordering::Relaxed);
                    }
                    log::warn!("segment served through the daemon: the kernel refused its backing file ({err})");
                    return Err(reply);
                }
            },
        };
        *users += 1;
        b.by_fh.insert(fh, ino);
        reply.opened_passthrough(FileHandle(fh), flags, id);
        metrics::global().passthrough_opens.inc();
        Ok(())
    }

    /// The handle `fh` was released: the last handle of an inode closes
    /// its backing id.
    pub fn release(&self, fh: u64) {
        let mut b = self.inner.lock();
        let Some(ino) = b.by_fh.remove(&fh) else {
            return;
        };
        if let Some((_, users)) = b.by_ino.get_mut(&ino) {
            *users -= 1;
            if *users == 0 {
                b.by_ino.remove(&ino);
                metrics::global().passthrough_backing_files.dec();
            }
        }
    }
}
