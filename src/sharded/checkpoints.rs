//! `checkpoints.log` and `HEAD`: the checkpoint history of a sharded log,
//! in ironwal 0.6's bytes.
//!
//! ```text
//! record  = "CKPT" | crc32(payload) u32 LE | len(payload) u32 LE | payload
//! payload = 0x01 | id_len u16 LE | id | timestamp_ns u64 LE
//!         | shard_count u16 LE | shard_count × offset u64 LE
//! HEAD    = id_len u16 LE | id          (the latest checkpoint's id)
//! ```
//!
//! What walfs adds to those bytes:
//!
//! * A record is durable (fdatasync) before `create` returns, and HEAD is
//!   replaced atomically after it (temporary file, fsync, rename, directory
//!   fsync). The log is the truth: HEAD that lags it (a crash between the
//!   two) is rewritten at open.
//! * Opening cuts a torn tail (bytes after the last intact record with no
//!   intact record after them: a create that never returned), so the next
//!   record never lands behind garbage. Damage followed by intact records
//!   is skipped, not a stop: every intact checkpoint before and after it
//!   stays listed (or, with [`CorruptionPolicy::Error`], the open is
//!   refused and names the byte).
//! * A record's bytes are read and checked again on every load.
//! * Timestamps strictly increase, so ironwal (which orders by timestamp)
//!   and walfs (which orders by position) agree on the order.

use crate::options::CorruptionPolicy;
use crate::storage::{Storage, StorageFile};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The checkpoint log's file name.
pub const LOG_FILE: &str = "checkpoints.log";
/// The latest checkpoint's id.
pub const HEAD_FILE: &str = "HEAD";
/// Compaction's temporary file (ironwal's name).
pub const COMPACT_TMP: &str = "checkpoints.log.tmp";

mod record;
pub use record::*;

/// One listed checkpoint.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The user's id.
    pub id: Vec<u8>,
    /// Its record's offset in the log.
    pub offset: u64,
    /// Its record's framed length.
    pub len: usize,
    /// When it was made (ns).
    pub timestamp: u64,
    /// Its offsets, kept to compute what pruning must keep.
    pub offsets: Vec<u64>,
}

/// The open checkpoint log. Not thread-safe by itself: [`super::ShardedWal`]
/// holds it under a lock.
pub struct CheckpointLog {
    storage: Arc<dyn Storage>,
    root: PathBuf,
    shards: u16,
    file: Option<Arc<dyn StorageFile>>,
    /// Where the next record goes.
    end: u64,
    /// Listed checkpoints by serial (creation order); the latest record of
    /// an id replaces its earlier ones.
    by_serial: BTreeMap<u64, Entry>,
    by_id: HashMap<Vec<u8>, u64>,
    next_serial: u64,
    last_timestamp: u64,
    /// Set when HEAD names a checkpoint whose record is damaged: the
    /// latest acknowledged checkpoint cannot be read.
    damaged_head: Option<(Vec<u8>, u64)>,
    /// Damage found at open: (start, end, why).
    damage: Vec<(u64, u64, String)>,
    /// A failed write or sync: refuse creates until reopened.
    poisoned: Option<String>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Ids printable in messages.
pub fn show_id(id: &[u8]) -> String {
    String::from_utf8_lossy(id).into_owned()
}

impl CheckpointLog {
    /// Opens (and, writable, repairs) the log in `root`. Every record must
    /// be for `shards` shards.
    pub fn open(
        storage: Arc<dyn Storage>,
        root: &Path,
        shards: u16,
        writable: bool,
        policy: CorruptionPolicy,
    ) -> Result<CheckpointLog> {
        let path = root.join(LOG_FILE);
        let tmp = root.join(COMPACT_TMP);
        if writable && storage.exists(&tmp) {
            // A compaction that never renamed: the old log is whole.
            storage.remove_file(&tmp)?;
        }
        let exists = storage.exists(&path);
        let bytes = if exists {
            storage.read_file(&path)?
        } else {
            Vec::new()
        };
        let scan = scan(&bytes);
        if let Some((_, _, r)) = scan
            .records
            .iter()
            .find(|(_, _, r)| r.offsets.len() != shards as usize)
        {
            return Err(Error::ShardCountMismatch {
                expected: shards,
                found: r.offsets.len() as u16,
            });
        }
        let head = if storage.exists(&root.join(HEAD_FILE)) {
            decode_head(&storage.read_file(&root.join(HEAD_FILE))?)
        } else {
            None
        };
        let mut log = CheckpointLog {
            storage: storage.clone(),
            root: root.to_path_buf(),
            shards,
            file: None,
            end: bytes.len() as u64,
            by_serial: BTreeMap::new(),
            by_id: HashMap::new(),
            next_serial: 1,
            last_timestamp: 0,
            damaged_head: None,
            damage: Vec::new(),
            poisoned: None,
        };
        for (offset, len, r) in scan.records {
            log.insert(Entry {
                id: r.id,
                offset,
                len,
                timestamp: r.timestamp,
                offsets: r.offsets,
            });
        }
        // HEAD naming an id the log does not list, with damage in the log:
        // the latest acknowledged checkpoint is damaged. Say so rather than
        // answer an older one as the latest.
        if let Some(h) = head.as_ref().filter(|h| !log.by_id.contains_key(*h)) {
            if let Some(&(start, _, _)) = scan.damage.last() {
                log.damaged_head = Some((h.clone(), start));
            }
        }
        // A torn tail is a create that never returned; but when HEAD names
        // a checkpoint the log lacks, the tail is that checkpoint, damaged.
        let torn_at = scan.torn_at.filter(|_| log.damaged_head.is_none());
        let mid_damage: Vec<_> = scan
            .damage
            .iter()
            .filter(|d| Some(d.0) != torn_at)
            .cloned()
            .collect();
        if let (Some(&(start, end, ref why)), CorruptionPolicy::Error) =
            (mid_damage.first(), policy)
        {
            return Err(Error::CheckpointCorrupted {
                offset: start,
                reason: format!(
                    "{why} ({} bytes up to byte {end}); open with CorruptionPolicy::Truncate to keep every intact checkpoint and skip these bytes",
                    end - start
                ),
            });
        }
        for (start, end, why) in &mid_damage {
            log::warn!(
                "{}: {why} in bytes {start}..{end}; every intact checkpoint before and after them stays listed",
                path.display()
            );
        }
        log.damage = mid_damage;
        if writable {
            let file = storage.open(&path, true)?;
            if !exists {
                storage.sync_dir(root)?;
            }
            if let Some(at) = torn_at {
                log::warn!(
                    "{}: cutting a torn record at byte {at} ({} bytes; a checkpoint whose create never returned)",
                    path.display(),
                    bytes.len() as u64 - at
                );
                file.set_len(at)?;
                file.sync_data()?;
                log.end = at;
            }
            log.file = Some(file);
            if log.damaged_head.is_none() {
                let latest = log.latest().map(|e| e.id.clone());
                if latest != head {
                    log.write_head(latest.as_deref())?;
                }
            }
        }
        Ok(log)
    }

    fn insert(&mut self, e: Entry) {
        if let Some(old) = self.by_id.remove(&e.id) {
            self.by_serial.remove(&old);
        }
        self.last_timestamp = self.last_timestamp.max(e.timestamp);
        let serial = self.next_serial;
        self.next_serial += 1;
        self.by_id.insert(e.id.clone(), serial);
        self.by_serial.insert(serial, e);
    }

    fn write_head(&self, id: Option<&[u8]>) -> Result<()> {
        let path = self.root.join(HEAD_FILE);
        match id {
            Some(id) => self.storage.write_atomic(&path, &encode_head(id))?,
            None if self.storage.exists(&path) => {
                self.storage.remove_file(&path)?;
                self.storage.sync_dir(&self.root)?;
            }
            None => {}
        }
        Ok(())
    }

    /// The newest listed checkpoint.
    pub fn latest(&self) -> Option<&Entry> {
        self.by_serial.values().next_back()
    }

    /// Listed checkpoints, oldest first, with their serial numbers.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.by_serial.iter().map(|(s, e)| (*s, e))
    }

    /// The listed checkpoint `id`, with its serial.
    pub fn find(&self, id: &[u8]) -> Option<(u64, &Entry)> {
        let s = *self.by_id.get(id)?;
        Some((s, &self.by_serial[&s]))
    }

    /// The listed checkpoint with serial `serial`.
    pub fn by_serial(&self, serial: u64) -> Option<&Entry> {
        self.by_serial.get(&serial)
    }

    /// How many checkpoints are listed.
    pub fn len(&self) -> usize {
        self.by_serial.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }

    /// Damage found at open and kept: (start, end, why).
    pub fn damage(&self) -> &[(u64, u64, String)] {
        &self.damage
    }

    /// Appends a checkpoint durably, then points HEAD at it.
    pub fn create(&mut self, id: &[u8], offsets: Vec<u64>) -> Result<()> {
        if id.is_empty() {
            return Err(Error::InvalidCheckpointId("an id cannot be empty".into()));
        }
        if id.len() > u16::MAX as usize {
            return Err(Error::InvalidCheckpointId(format!(
                "{} bytes (at most {})",
                id.len(),
                u16::MAX
            )));
        }
        if offsets.len() != self.shards as usize {
            return Err(Error::ShardCountMismatch {
                expected: self.shards,
                found: offsets.len() as u16,
            });
        }
        if let Some(why) = &self.poisoned {
            return Err(Error::Poisoned {
                stream: LOG_FILE.into(),
                cause: why.clone(),
            });
        }
        let Some(file) = self.file.clone() else {
            return Err(Error::ReadOnly);
        };
        let timestamp = now_ns().max(self.last_timestamp + 1);
        let rec = Record {
            id: id.to_vec(),
            timestamp,
            offsets,
        };
        let bytes = rec.encode();
        let written = file
            .write_all_at(&bytes, self.end)
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The kernel may have dropped what it could not write back: the
            // next record cannot be trusted to land after known bytes.
            self.poisoned = Some(e.to_string());
            return Err(e.into());
        }
        let offset = self.end;
        self.end += bytes.len() as u64;
        self.insert(Entry {
            id: rec.id,
            offset,
            len: bytes.len(),
            timestamp,
            offsets: rec.offsets,
        });
        self.damaged_head = None;
        self.write_head(Some(id))
    }

    /// Reads and checks checkpoint `id` from the file.
    pub fn load(&self, id: &[u8]) -> Result<Record> {
        let Some((_, e)) = self.find(id) else {
            if let Some((h, at)) = self.damaged_head.as_ref().filter(|(h, _)| h == id) {
                return Err(Error::CheckpointCorrupted {
                    offset: *at,
                    reason: format!(
                        "the record of checkpoint {:?} (named by HEAD) is damaged",
                        show_id(h)
                    ),
                });
            }
            return Err(Error::CheckpointNotFound(show_id(id)));
        };
        self.read_entry(e)
    }

    fn read_entry(&self, e: &Entry) -> Result<Record> {
        let path = self.root.join(LOG_FILE);
        let mut buf = vec![0u8; e.len];
        let f = self.storage.open(&path, false)?;
        f.read_exact_at(&mut buf, e.offset).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::CheckpointCorrupted {
                    offset: e.offset,
                    reason: "the file ends inside the record".into(),
                }
            } else {
                err.into()
            }
        })?;
        let (r, _) = Record::decode(&buf).map_err(|why| Error::CheckpointCorrupted {
            offset: e.offset,
            reason: why.unwrap_or_else(|| "a record cut short".into()),
        })?;
        if r.id != e.id {
            return Err(Error::CheckpointCorrupted {
                offset: e.offset,
                reason: format!(
                    "holds checkpoint {:?}, not {:?}",
                    show_id(&r.id),
                    show_id(&e.id)
                ),
            });
        }
        if r.offsets.len() != self.shards as usize {
            return Err(Error::ShardCountMismatch {
                expected: self.shards,
                found: r.offsets.len() as u16,
            });
        }
        Ok(r)
    }

    /// The latest checkpoint.
    pub fn load_latest(&self) -> Result<Record> {
        if let Some((h, _)) = &self.damaged_head {
            return self.load(&h.clone());
        }
        match self.latest() {
            Some(e) => self.read_entry(e),
            None => Err(Error::NoCheckpoints),
        }
    }

    /// Rewrites the log with its `keep` newest checkpoints (each read and
    /// checked first: a damaged one aborts with nothing changed).
    /// Returns (before, after, bytes reclaimed).
    pub fn compact(&mut self, keep: usize) -> Result<(usize, usize, u64)> {
        if self.file.is_none() {
            return Err(Error::ReadOnly);
        }
        let before = self.len();
        let kept: Vec<(u64, Entry)> = self
            .entries()
            .skip(before.saturating_sub(keep))
            .map(|(s, e)| (s, e.clone()))
            .collect();
        let mut bytes = Vec::new();
        let mut placed = Vec::with_capacity(kept.len());
        for (serial, e) in &kept {
            let r = self.read_entry(e)?;
            let b = r.encode();
            placed.push((*serial, bytes.len() as u64, b.len()));
            bytes.extend_from_slice(&b);
        }
        for (start, end, why) in &self.damage {
            log::warn!("compaction drops the damaged bytes {start}..{end} of {LOG_FILE} ({why})");
        }
        let old_len = self.end;
        let path = self.root.join(LOG_FILE);
        let tmp = self.root.join(COMPACT_TMP);
        let t = self.storage.open(&tmp, true)?;
        t.set_len(0)?;
        t.write_all_at(&bytes, 0)?;
        t.sync_data()?;
        drop(t);
        self.storage.rename(&tmp, &path)?;
        self.storage.sync_dir(&self.root)?;
        self.file = Some(self.storage.open(&path, true)?);
        self.end = bytes.len() as u64;
        self.damage.clear();
        self.poisoned = None;
        let keep_serials: std::collections::HashSet<u64> =
            placed.iter().map(|(s, _, _)| *s).collect();
        self.by_serial.retain(|s, _| keep_serials.contains(s));
        self.by_id.retain(|_, s| keep_serials.contains(s));
        for (serial, offset, len) in placed {
            let e = self.by_serial.get_mut(&serial).expect("kept");
            e.offset = offset;
            e.len = len;
        }
        if self.is_empty() {
            self.write_head(None)?;
        }
        Ok((before, self.len(), old_len.saturating_sub(self.end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_has_ironwals_size() {
        let r = Record {
            id: b"abc".to_vec(),
            timestamp: 1000,
            offsets: vec![100],
        };
        let b = r.encode();
        assert_eq!(b.len(), 36);
        assert_eq!(&b[..4], b"CKPT");
        assert_eq!(Record::decode(&b).unwrap(), (r, 36));
        assert_eq!(Record::decode(&b[..20]), Err(None));
    }

    #[test]
    fn scan_skips_damage_and_finds_a_torn_tail() {
        let rec = |id: &[u8]| {
            Record {
                id: id.to_vec(),
                timestamp: 1,
                offsets: vec![1, 2],
            }
            .encode()
        };
        let mut buf = rec(b"a");
        let b_at = buf.len();
        buf.extend(rec(b"b"));
        buf.extend(rec(b"c"));
        buf[b_at + 20] ^= 1;
        let t = rec(b"d");
        buf.extend_from_slice(&t[..t.len() - 3]);
        let s = scan(&buf);
        let ids: Vec<_> = s.records.iter().map(|(_, _, r)| r.id.clone()).collect();
        assert_eq!(ids, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(s.damage.len(), 2);
        assert_eq!(s.damage[0].0, b_at as u64);
        assert!(s.torn_at.is_some());
    }
}
