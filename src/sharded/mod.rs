//! A sharded log: keys routed to N shard streams, and checkpoints (a
//! user-chosen id naming one offset per shard), on disk exactly as
//! ironwal 0.6's `sharded` feature lays them out.
//!
//! ```text
//! DATA/
//!   shard_00/ … shard_NN/   one ordinary stream per shard
//!   checkpoints.log         the checkpoint history (see [`checkpoints`])
//!   HEAD                    the latest checkpoint's id
//!   SHARDS                  walfs only: the shard count, so that another
//!                           count is refused at open (ironwal ignores it)
//! ```
//!
//! ```no_run
//! use walfs::{sharded::ShardedWal, WalOptions};
//! let wal = ShardedWal::new(WalOptions::new("./data"), 16)?;
//! let (shard, id) = wal.append(b"user_123", b"profile")?;
//! wal.create_checkpoint(b"raft-5000")?;
//! let (name, cp) = wal.load_latest_checkpoint()?;
//! for (shard, &from) in cp.offsets.iter().enumerate() {
//!     for entry in wal.iter_shard(shard as u16, from)? {
//!         let _ = entry?;
//!     }
//! }
//! # Ok::<(), walfs::Error>(())
//! ```
//!
//! Where walfs differs from ironwal 0.6.9, on purpose:
//!
//! * A checkpoint names each shard's durable position as the engine knows
//!   it (what has been fdatasynced), in every sync mode; ironwal tracks it
//!   by hand and leaves it at 0 under `Async` until a flush.
//! * Pruning never goes below an older checkpoint still listed: compact the
//!   checkpoints first to release them ([`PruneStats::held_back_by`] names
//!   the one that held a shard back).
//! * Opening with another shard count than the log was made with fails
//!   (`SHARDS`, the checkpoint records and the shard directories are all
//!   checked); ironwal only notices when a checkpoint is loaded.
//! * Listing and "latest" follow the order checkpoints were made in (the
//!   log's order); ironwal sorts by timestamp, and walfs keeps timestamps
//!   strictly increasing so both agree.
//! * `compact_checkpoints(0)` also removes HEAD, so that
//!   `load_latest_checkpoint` answers [`Error::NoCheckpoints`].

pub mod checkpoints;

use crate::storage::{RealStorage, Storage};
use crate::{Error, Result, Wal, WalIdIterator, WalIterator, WalOptions};
use checkpoints::{CheckpointLog, Entry};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::Path;
use std::sync::Arc;

pub use checkpoints::show_id;

/// walfs's record of the shard count.
pub const SHARDS_FILE: &str = "SHARDS";

/// A checkpoint as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointData {
    /// The offset (next id to read) of each shard, by shard number.
    pub offsets: Vec<u64>,
    /// Unix time in nanoseconds when it was made.
    pub timestamp: u64,
    /// The number of shards.
    pub shard_count: u16,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneStats {
    /// Shards that lost at least one segment.
    pub shards_pruned: u16,
    /// Segments freed across all shards.
    pub segments_deleted: usize,
    /// The oldest listed checkpoint that kept some shard from being pruned
    /// as far as asked, if one did.
    pub held_back_by: Option<Vec<u8>>,
}

/// What a compaction of the checkpoint log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    /// Checkpoints listed before.
    pub checkpoints_before: usize,
    /// Checkpoints listed after.
    pub checkpoints_after: usize,
    /// Bytes the log shrank by.
    pub bytes_reclaimed: u64,
}

/// The shard `key` routes to among `shards`: SipHash-1-3 with zero keys
/// over the key as Rust's `Hash` for a byte slice feeds it (its length as
/// a `usize`, then its bytes), modulo the count. This is what ironwal
/// computes with the standard library's `DefaultHasher`; walfs names the
/// algorithm so that a change of that (unspecified) hasher can never
/// re-route a log.
pub fn route(key: &[u8], shards: u16) -> u16 {
    assert!(shards > 0, "shard count must be positive");
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write_usize(key.len());
    h.write(key);
    (h.finish() % shards as u64) as u16
}

/// The stream name of shard `id`: `shard_00`, `shard_01`, … `shard_100`.
pub fn shard_name(id: u16) -> String {
    format!("shard_{id:02}")
}

/// The shard number a stream name is, if it is one.
pub fn shard_number(name: &str) -> Option<u16> {
    let n: u16 = name.strip_prefix("shard_")?.parse().ok()?;
    (shard_name(n) == name).then_some(n)
}

/// The lowest offset the checkpoints `cps` name for shard `shard`, with
/// the id of the (first) checkpoint naming it: ids from there on must stay.
pub fn checkpoint_floor<'a>(
    cps: impl IntoIterator<Item = &'a Entry>,
    shard: u16,
) -> Option<(u64, Vec<u8>)> {
    let mut floor: Option<(u64, Vec<u8>)> = None;
    for e in cps {
        if let Some(&o) = e.offsets.get(shard as usize) {
            if floor.as_ref().is_none_or(|(f, _)| o < *f) {
                floor = Some((o, e.id.clone()));
            }
        }
    }
    floor
}

/// What a data directory says of its shard count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    /// Recorded: in `SHARDS` or in the checkpoint records.
    Exact(u16),
    /// Only a lower bound: one past the highest shard directory (ironwal
    /// makes shard streams on first append, so some may be missing).
    AtLeast(u16),
}

/// What a data directory says of its shard count, if it is sharded: from
/// `SHARDS`, else the checkpoint records, else (a checkpoint log or HEAD
/// present) the highest shard directory. None for a directory that shows
/// no sign of being sharded.
pub fn detect(root: &Path) -> Result<Option<ShardCount>> {
    Ok(survey(&RealStorage, root)?.0)
}

/// From one listing of `root`: what it says of its shard count (as
/// [`detect`]), and its highest shard directory.
fn survey(storage: &dyn Storage, root: &Path) -> Result<(Option<ShardCount>, Option<u16>)> {
    if !storage.exists(root) {
        return Ok((None, None));
    }
    let entries = storage.read_dir(root)?;
    let top = entries
        .iter()
        .filter(|e| e.is_dir)
        .filter_map(|e| e.name.as_deref().and_then(shard_number))
        .max();
    // Regular files only: `HEAD` may also be an ordinary stream's name.
    let has = |name: &str| {
        entries
            .iter()
            .any(|e| !e.is_dir && !e.is_symlink && e.name.as_deref() == Some(name))
    };
    if has(SHARDS_FILE) {
        let shards_file = root.join(SHARDS_FILE);
        let text = storage.read_file(&shards_file)?;
        let n = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{} does not hold a shard count (a number from 1 to 65535)",
                    shards_file.display()
                ))
            })?;
        return Ok((Some(ShardCount::Exact(n)), top));
    }
    if has(checkpoints::LOG_FILE) {
        let log = root.join(checkpoints::LOG_FILE);
        if let Some(n) = checkpoints::first_shard_count(storage, &log)? {
            return Ok((Some(ShardCount::Exact(n)), top));
        }
    }
    if has(checkpoints::LOG_FILE) || has(checkpoints::HEAD_FILE) {
        return Ok((Some(ShardCount::AtLeast(top.map_or(1, |t| t + 1))), top));
    }
    Ok((None, top))
}

/// Refuses a zero count, and `asked` where the directory says otherwise.
fn check_count(storage: &dyn Storage, root: &Path, asked: u16) -> Result<()> {
    if asked == 0 {
        return Err(Error::Config(
            "shard_count must be greater than zero".into(),
        ));
    }
    let found = match survey(storage, root)? {
        (Some(ShardCount::Exact(n)), _) if n != asked => Some(n),
        (_, top) => top.map(|t| t + 1).filter(|&n| n > asked),
    };
    match found {
        Some(found) => Err(Error::ShardCountMismatch {
            expected: asked,
            found,
        }),
        None => Ok(()),
    }
}

/// A log of N shard streams with checkpoints. All methods take `&self` and
/// are safe from many threads: appends to different shards run in
/// parallel, appends to one shard share its fdatasyncs (group commit).
pub struct ShardedWal {
    wal: Wal,
    shards: u16,
    names: Vec<String>,
    log: Mutex<CheckpointLog>,
}

impl ShardedWal {
    /// Opens or creates the sharded log at `options.root_path` with
    /// `shard_count` shards. A log made with another count is refused with
    /// [`Error::ShardCountMismatch`].
    pub fn new(options: WalOptions, shard_count: u16) -> Result<ShardedWal> {
        ShardedWal::with_storage(options, Arc::new(RealStorage), shard_count)
    }

    /// Like [`ShardedWal::new`], on any storage (the simulated disk).
    pub fn with_storage(
        options: WalOptions,
        storage: Arc<dyn Storage>,
        shard_count: u16,
    ) -> Result<ShardedWal> {
        // Refuse a wrong count before anything is created or recovered.
        check_count(&*storage, &options.root_path, shard_count)?;
        ShardedWal::attach(Wal::with_storage(options, storage)?, shard_count)
    }

    /// Opens an existing sharded log with the count it was made with.
    pub fn open(options: WalOptions) -> Result<ShardedWal> {
        let root = options.root_path.clone();
        match detect(&root)? {
            Some(ShardCount::Exact(n)) => ShardedWal::new(options, n),
            Some(ShardCount::AtLeast(n)) => Err(Error::Config(format!(
                "the shard count of {} is not recorded (no SHARDS file, no checkpoint) and its highest shard is {}: give the count it was made with (at least {n})",
                root.display(),
                shard_name(n - 1)
            ))),
            None => Err(Error::Config(format!(
                "{} is not a sharded log (no SHARDS, checkpoints.log or HEAD); create one with a shard count",
                root.display()
            ))),
        }
    }

    /// A sharded view of a log already open (the mount's).
    pub fn from_wal(wal: Wal, shard_count: u16) -> Result<ShardedWal> {
        check_count(&**wal.storage(), wal.root(), shard_count)?;
        ShardedWal::attach(wal, shard_count)
    }

    /// The checkpoints and shards of `wal`, whose count is checked.
    fn attach(wal: Wal, shard_count: u16) -> Result<ShardedWal> {
        let storage = wal.storage().clone();
        let root = wal.root().to_path_buf();
        let writable = !wal.options().read_only;
        let log = CheckpointLog::open(
            storage.clone(),
            &root,
            shard_count,
            writable,
            wal.options().on_corruption,
        )?;
        let shards_file = root.join(SHARDS_FILE);
        if writable && !storage.exists(&shards_file) {
            storage.write_atomic(&shards_file, format!("{shard_count}\n").as_bytes())?;
        }
        let names: Vec<String> = (0..shard_count).map(shard_name).collect();
        if writable {
            // Every shard exists from the start (ironwal makes them on first
            // append): the mount lists them all, and their count shows.
            for n in names.iter().filter(|n| !wal.has_stream(n)) {
                wal.create_stream(n)?;
            }
        }
        Ok(ShardedWal {
            wal,
            shards: shard_count,
            names,
            log: Mutex::new(log),
        })
    }

    fn name(&self, shard: u16) -> Result<&str> {
        self.names
            .get(shard as usize)
            .map(String::as_str)
            .ok_or_else(|| {
                Error::Config(format!(
                    "invalid shard {shard} (this log has shards 0 to {})",
                    self.shards - 1
                ))
            })
    }

    /// The shard `key` routes to.
    pub fn route(&self, key: &[u8]) -> u16 {
        route(key, self.shards)
    }

    /// Appends `value` to the shard of `key` (the key is not stored).
    /// Returns (shard, id).
    pub fn append(&self, key: &[u8], value: &[u8]) -> Result<(u16, u64)> {
        let shard = self.route(key);
        let id = self.wal.append(&self.names[shard as usize], value)?;
        Ok((shard, id))
    }

    /// Appends many (key, value) pairs: one atomic batch per shard (not
    /// atomic across shards). Returns (shard, id) in input order.
    pub fn append_batch(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<(u16, u64)>> {
        let routes: Vec<u16> = entries.iter().map(|(k, _)| self.route(k)).collect();
        let mut groups: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        for (&s, (_, v)) in routes.iter().zip(entries) {
            groups.entry(s).or_default().push(v);
        }
        let mut next: BTreeMap<u16, u64> = BTreeMap::new();
        for (s, values) in groups {
            let range = self.wal.append_batch(&self.names[s as usize], &values)?;
            next.insert(s, range.start);
        }
        Ok(routes
            .into_iter()
            .map(|s| {
                let id = next.get_mut(&s).expect("grouped");
                *id += 1;
                (s, *id - 1)
            })
            .collect())
    }

    /// Appends `values` to the shard of `key` as one atomic batch.
    pub fn append_batch_for_key(&self, key: &[u8], values: &[&[u8]]) -> Result<Vec<(u16, u64)>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let shard = self.route(key);
        let range = self.wal.append_batch(&self.names[shard as usize], values)?;
        Ok(range.map(|id| (shard, id)).collect())
    }

    /// Each shard's durable position now (the offsets a checkpoint names).
    pub fn durable_offsets(&self) -> Vec<u64> {
        self.names
            .iter()
            .map(|n| self.wal.durable_next(n))
            .collect()
    }

    /// Records a checkpoint named `id` holding every shard's durable
    /// position; durable on return. An id made again replaces the earlier
    /// one.
    pub fn create_checkpoint(&self, id: &[u8]) -> Result<()> {
        let mut log = self.log.lock();
        let offsets = self.durable_offsets();
        log.create(id, offsets)
    }

    fn data(&self, r: checkpoints::Record) -> CheckpointData {
        CheckpointData {
            shard_count: r.offsets.len() as u16,
            offsets: r.offsets,
            timestamp: r.timestamp,
        }
    }

    /// Loads checkpoint `id` (read and checked from disk).
    pub fn load_checkpoint(&self, id: &[u8]) -> Result<CheckpointData> {
        let r = self.log.lock().load(id)?;
        Ok(self.data(r))
    }

    /// The latest checkpoint, with its id.
    pub fn load_latest_checkpoint(&self) -> Result<(Vec<u8>, CheckpointData)> {
        let r = self.log.lock().load_latest()?;
        let id = r.id.clone();
        Ok((id, self.data(r)))
    }

    /// Every listed checkpoint as (id, timestamp), oldest first.
    pub fn list_checkpoints(&self) -> Vec<(Vec<u8>, u64)> {
        self.log
            .lock()
            .entries()
            .map(|(_, e)| (e.id.clone(), e.timestamp))
            .collect()
    }

    /// The number of listed checkpoints.
    pub fn checkpoint_count(&self) -> usize {
        self.log.lock().len()
    }

    /// Damage in `checkpoints.log` kept at open: (start, end, why).
    pub fn checkpoint_damage(&self) -> Vec<(u64, u64, String)> {
        self.log.lock().damage().to_vec()
    }

    /// Reads shard `shard` from id `start` on (empty if it has no stream yet).
    pub fn iter_shard(&self, shard: u16, start: u64) -> Result<WalIterator> {
        self.wal.iter(self.name(shard)?, start)
    }

    /// Like [`ShardedWal::iter_shard`], yielding (id, entry).
    pub fn iter_shard_with_ids(&self, shard: u16, start: u64) -> Result<WalIdIterator> {
        self.wal.iter_with_ids(self.name(shard)?, start)
    }

    /// Frees, in every shard, the sealed segments that hold only entries
    /// below checkpoint `id`'s offset, but never below what an older listed
    /// checkpoint still needs. Each shard's truncation is crash-safe on its
    /// own; a crash between shards leaves some pruned and some not, and
    /// every listed checkpoint readable either way.
    pub fn prune_before_checkpoint(&self, id: &[u8]) -> Result<PruneStats> {
        let log = self.log.lock();
        let target = log.load(id)?;
        // The first listed checkpoint (in the log's order) below the
        // target in some shard.
        let held_back_by = log
            .entries()
            .find(|(_, e)| e.offsets.iter().zip(&target.offsets).any(|(o, t)| o < t))
            .map(|(_, e)| e.id.clone());
        let mut stats = PruneStats {
            shards_pruned: 0,
            segments_deleted: 0,
            held_back_by,
        };
        for (s, &offset) in target.offsets.iter().enumerate() {
            let (n, _) = self.truncate_below(&log, s as u16, offset)?;
            if n > 0 {
                stats.shards_pruned += 1;
                stats.segments_deleted += n;
            }
        }
        if let Some(h) = &stats.held_back_by {
            log::info!(
                "prune before {:?} held back by the older checkpoint {:?}; compact the checkpoints to release it",
                show_id(id),
                show_id(h)
            );
        }
        Ok(stats)
    }

    /// Frees the sealed segments of shard stream `stream` holding only ids
    /// below the segment of `before` (as [`Wal::truncate`]), but never ids a
    /// listed checkpoint names: it stops at the lowest offset any of them
    /// gives the shard. Returns the segments freed and, when a checkpoint
    /// held the truncation back, its id.
    pub fn truncate_shard(&self, stream: &str, before: u64) -> Result<(usize, Option<Vec<u8>>)> {
        let shard = shard_number(stream)
            .filter(|&n| n < self.shards)
            .ok_or_else(|| Error::Config(format!("{stream} is not a shard of this log")))?;
        let log = self.log.lock();
        self.truncate_below(&log, shard, before)
    }

    /// Truncates `shard` below `before`, or below the lowest offset a
    /// listed checkpoint of `log` names for it if that is lower (naming
    /// that checkpoint). The caller holds the log, so that no checkpoint
    /// is made or compacted meanwhile.
    fn truncate_below(
        &self,
        log: &CheckpointLog,
        shard: u16,
        before: u64,
    ) -> Result<(usize, Option<Vec<u8>>)> {
        let (upto, held) = match checkpoint_floor(log.entries().map(|(_, e)| e), shard) {
            Some((f, id)) if f < before => (f, Some(id)),
            _ => (before, None),
        };
        if upto == 0 {
            return Ok((0, held));
        }
        Ok((self.wal.truncate(&self.names[shard as usize], upto)?, held))
    }

    /// Rewrites the checkpoint log with only its `keep` newest checkpoints
    /// (crash-safe: a new file, synced, renamed over the old one).
    pub fn compact_checkpoints(&self, keep: usize) -> Result<CompactionStats> {
        let (before, after, reclaimed) = self.log.lock().compact(keep)?;
        Ok(CompactionStats {
            checkpoints_before: before,
            checkpoints_after: after,
            bytes_reclaimed: reclaimed,
        })
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u16 {
        self.shards
    }

    /// The log underneath.
    pub fn inner(&self) -> &Wal {
        &self.wal
    }

    /// Makes everything appended to shard `shard` durable.
    pub fn flush_shard(&self, shard: u16) -> Result<()> {
        self.wal.sync(self.name(shard)?)
    }

    /// Makes every shard durable.
    pub fn flush_all(&self) -> Result<()> {
        for n in &self.names {
            self.wal.sync(n)?;
        }
        Ok(())
    }
}

/// What the mount's `checkpoints/` needs of a sharded log: the local one
/// ([`ShardedWal`]) or one followed in a bucket (read-only).
pub trait CheckpointSource: Send + Sync {
    /// Whether the log is sharded now (a followed bucket may become so
    /// once its primary ships its checkpoints).
    fn shown(&self) -> bool {
        true
    }
    /// Listed checkpoints with their serial numbers (stable while mounted:
    /// the inode numbers), oldest first.
    fn checkpoints(&self) -> Vec<(u64, Entry)>;
    /// The checkpoint with serial `serial`.
    fn by_serial(&self, serial: u64) -> Option<Entry>;
    /// The latest checkpoint's id.
    fn latest_id(&self) -> Option<Vec<u8>>;
    /// The serial of checkpoint `id`.
    fn serial_of(&self, id: &[u8]) -> Option<u64>;
    /// Reads checkpoint `id`'s record again and checks it.
    fn check(&self, id: &[u8]) -> Result<()>;
    /// Makes checkpoint `id` naming every entry acknowledged so far (the
    /// shards are synced first); [`Error::ReadOnly`] where it cannot.
    fn make(&self, id: &[u8]) -> Result<()>;
}

impl CheckpointSource for ShardedWal {
    fn checkpoints(&self) -> Vec<(u64, Entry)> {
        self.log
            .lock()
            .entries()
            .map(|(s, e)| (s, e.clone()))
            .collect()
    }

    fn by_serial(&self, serial: u64) -> Option<Entry> {
        self.log.lock().by_serial(serial).cloned()
    }

    fn latest_id(&self) -> Option<Vec<u8>> {
        self.log.lock().latest().map(|e| e.id.clone())
    }

    fn serial_of(&self, id: &[u8]) -> Option<u64> {
        self.log.lock().find(id).map(|(s, _)| s)
    }

    fn check(&self, id: &[u8]) -> Result<()> {
        self.load_checkpoint(id).map(|_| ())
    }

    fn make(&self, id: &[u8]) -> Result<()> {
        if self.wal.options().read_only {
            return Err(Error::ReadOnly);
        }
        self.flush_all()?;
        self.create_checkpoint(id)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
