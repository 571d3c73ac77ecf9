//! One stream: its segments, its writer and its commit state.
//!
//! - `open.rs`: finding the segments and recovering the active one;
//! - `write.rs`: append, buffered flush, group-commit sync, rotation,
//!   poisoning;
//! - `read.rs`: segment lookup, read handles and windows, frames by id,
//!   entry bytes for `log`;
//! - `retention.rs`: truncation, archive and restore, deletion.
//!
//! Invariants that tie them together:
//! - Locks: `writer` is taken before `commit.state` and before `segs`
//!   (write); never the other way round. Readers take `segs` (read) and a
//!   segment's own locks only. The group commit waits for durability
//!   without the writer lock. Another stream's writer is only ever
//!   `try_lock`ed (descriptor eviction).
//! - Visibility: an id becomes readable when `commit.visible()` passes it:
//!   once written in BatchOnly and Async modes (after the buffer is handed
//!   to the kernel), once durable in Strict mode. `appended` runs ahead of
//!   it by what Async mode still buffers; readers flush before reading.
//! - Poisoning: after a failed write, sync or rotation the stream refuses
//!   appends, truncation and restore (`check_writable`) until the log is
//!   reopened; what was written past the last durable point is cut where
//!   it can be, so it never reappears.
//! - Damage found at open (a missing segment) makes the stream read-only
//!   for its whole life.

mod cursor;
mod open;
mod read;
mod retention;
mod times;
mod write;
mod writeback;

pub use read::ShipView;

use crate::cache::{BlockCache, Lru};
use crate::commit::Commit;
use crate::format::{self};
use crate::options::{SyncMode, WalOptions};
use crate::segment::Segment;
use crate::storage::{Storage, StorageFile};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

/// What every stream shares: storage, options and the bounded caches.
pub struct Ctx {
    pub storage: Arc<dyn Storage>,
    pub opts: WalOptions,
    pub blocks: Option<BlockCache>,
    /// Open read descriptors, across streams.
    pub readers: Mutex<Lru<(u64, u64), Weak<Segment>>>,
    /// Open write descriptors, across streams.
    pub writers: Mutex<Lru<u64, Weak<Stream>>>,
    /// Bumped on every publication in any stream.
    pub epoch: Arc<crate::commit::Epoch>,
    /// The last decoded frame too large for the block cache (or every
    /// frame, without one), with its stream's uid: the reads of one large
    /// entry, request after request, decode it once.
    pub last_big: Mutex<Option<(u64, Arc<crate::format::DecodedFrame>)>>,
    /// Large single-entry frames whose crc was checked while open (served
    /// in ranges, see [`read::RANGED_FRAME`]): (stream uid, segment, offset,
    /// crc), the oldest forgotten first.
    pub checked: Mutex<std::collections::VecDeque<(u64, u64, u64, u32)>>,
    /// Async mode: the thread that hands buffered frames to the kernel,
    /// woken when a large frame waits (write-behind).
    pub flusher: std::sync::OnceLock<std::thread::Thread>,
}

pub struct Writer {
    pub active: Arc<Segment>,
    file: Option<Arc<dyn StorageFile>>,
    /// Bytes of the active segment written.
    pub len: u64,
    pub next_id: u64,
    /// Entry bytes of the active segment, buffered or not.
    payload: u64,
    /// Start ids in segments.idx, in order (mirrors the file).
    idx: Vec<u64>,
    pub poisoned: Option<(i32, String)>,
    pub deleted: bool,
    /// Bytes of the active segment whose writeback was started (see
    /// [`writeback::WRITEBACK_STEP`]).
    written_back: u64,
    /// Async mode: frames appended but not yet handed to the kernel; they
    /// start at byte `len - pending.len()` of the active segment.
    pending: Vec<u8>,
}

pub struct Stream {
    pub name: String,
    pub dir: PathBuf,
    /// Identifies this incarnation of the stream in the caches.
    pub uid: u64,
    /// Structural damage found at open (a missing segment): the stream
    /// serves what it has and refuses writes. Fixed for the stream's life.
    pub damaged: Option<String>,
    pub writer: Mutex<Writer>,
    /// Held through a truncation, a restore and the stream's deletion:
    /// one at a time, as a truncation moves segment files while the
    /// writer's lock is free.
    retention: Mutex<()>,
    segs: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub commit: Commit,
    /// One past the last id appended, buffered or not: a reader asking for
    /// an id below it but not yet visible flushes the buffer first.
    appended: AtomicU64,
    /// When walfs.times was last written (unix ms; 0: not since open).
    time_mark: AtomicU64,
    /// The highest id a record of walfs.times names, once read (a
    /// standby's apply adds only records above it).
    times_last: Mutex<Option<Option<u64>>>,
    /// `first_time()` as last read from walfs.times, for the first id it
    /// was read for (`stat` asks on every lookup); dropped when the file
    /// changes.
    first_time: Mutex<Option<(u64, Option<std::time::SystemTime>)>>,
    /// Where the last `read_payload` stopped, so the next request of a
    /// sequential reader of `log` starts there without locating again.
    cursor: Mutex<Option<cursor::Cursor>>,
}

/// A summary of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// The first retained id.
    pub first_id: u64,
    /// One past the last id readers can see.
    pub next_id: u64,
    /// One past the last id known to be on disk.
    pub durable_id: u64,
    /// Retained segments.
    pub segments: usize,
    /// Bytes of the retained segments.
    pub bytes: u64,
    /// The start id of the active segment.
    pub active_segment: u64,
    /// Structural damage that makes the stream refuse writes.
    pub damaged: Option<String>,
    /// Shipping to a bucket, when the log replicates.
    pub replication: Option<crate::shipping::ReplicaInfo>,
    /// The retention policy in force, if any.
    pub retention: Option<String>,
    /// When the first retained id was acknowledged (to within a second),
    /// if walfs.times records it.
    pub first_time: Option<std::time::SystemTime>,
}

impl StreamInfo {
    /// The `key: value` text of `walfs stat` and the mount's `stat` file;
    /// `modes` adds the sync mode and compression of the process writing.
    pub fn to_text(&self, modes: Option<(SyncMode, crate::options::CompressionType)>) -> String {
        let mut t = format!(
            "stream: {}\nfirst_id: {}\nnext_id: {}\ndurable_id: {}\nentries: {}\nsegments: {}\nbytes: {}\nactive_segment: {}\n",
            self.name,
            self.first_id,
            self.next_id,
            self.durable_id,
            self.next_id - self.first_id.min(self.next_id),
            self.segments,
            self.bytes,
            format::segment_name(self.active_segment),
        );
        if let Some(ft) = self.first_time {
            t.push_str(&format!(
                "first_time: {}\n",
                humantime::format_rfc3339_seconds(ft)
            ));
        }
        if let Some(d) = &self.damaged {
            t.push_str(&format!("damaged: {d}\n"));
        }
        if let Some(r) = &self.retention {
            t.push_str(&format!("retention: {r}\n"));
        }
        if let Some(r) = &self.replication {
            t.push_str(&format!(
                "replicated_id: {}\nreplication: {}\nreplication_lag_ms: {}\nreplica: {}\nrole: {}\n",
                r.replicated_id, r.state, r.lag_ms, r.url, r.role
            ));
            if let Some(age) = r.lease_age_ms {
                t.push_str(&format!("lease_age_ms: {age}\n"));
            }
        }
        if let Some((sync, compression)) = modes {
            let sync = match sync {
                SyncMode::Strict => "strict",
                SyncMode::BatchOnly => "batch",
                SyncMode::Async => "async",
            };
            let compression = match compression {
                crate::options::CompressionType::None => "none",
                crate::options::CompressionType::Lz4 => "lz4",
            };
            t.push_str(&format!("sync_mode: {sync}\ncompression: {compression}\n"));
        }
        t
    }
}
