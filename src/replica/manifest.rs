//! The manifest: the one object that says what the bucket holds, and the
//! fence. Data objects are immutable and named after the epoch of the
//! writer that made them, so two writers never write the same key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest's key under the prefix.
pub const MANIFEST: &str = "manifest.json";
/// What `format` holds, so a stray JSON object is never taken for one.
pub const FORMAT: &str = "walfs-manifest";
/// The layout version this code writes and reads.
pub const VERSION: u32 = 1;
/// Parts of an active segment are merged, four of one level into one of
/// the next, so a segment never has more than 3 per level.
pub const MERGE_FAN_IN: usize = 4;
/// The largest manifest walfs reads (16 MiB): a segment takes 300 to 400
/// bytes of it, so it describes some 40,000 segments (2.5 TiB of 64 MiB
/// segments). A larger one is refused before it is read: the bucket is
/// less trusted than the disk, and a follower reads it every poll.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The bucket's table of contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// Advanced by every writer that takes the prefix.
    pub epoch: u64,
    /// Who wrote it (host and pid), for people.
    pub writer: String,
    /// Milliseconds since the Unix epoch of the write, for people and lag.
    pub updated_ms: u64,
    /// The holder's lease, in ms: it writes the manifest at least every
    /// third of this, and a standby takes the prefix once the manifest has
    /// stayed the same object for this long by the standby's own clock
    /// (no wall clocks compared). 0: no lease (a holder started with
    /// `--lease off`, or a manifest older than leases): nobody takes the
    /// prefix from it without `--takeover`.
    #[serde(default)]
    pub lease_ms: u64,
    /// The holder stopped cleanly and let the prefix go: anyone may take it
    /// at once.
    #[serde(default, skip_serializing_if = "is_false")]
    pub released: bool,
    /// Per stream, in name order.
    pub streams: BTreeMap<String, StreamManifest>,
    /// Files at the data directory's root that belong to the log, by name
    /// (one of [`ROOT_FILES`]: a sharded log's checkpoints), one object each.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, ObjectRef>,
    /// Objects no longer referenced (parts merged into a larger one), kept
    /// for [`RETIRED_GRACE`] so that a follower reading by an older
    /// manifest still finds them; a later round deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An object the log no longer references, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retired {
    /// Its key, relative to the prefix.
    pub key: String,
    /// Milliseconds since the Unix epoch when it was retired.
    pub since_ms: u64,
}

/// How long a retired object stays in the bucket: longer than a follower's
/// poll (1 s by default) and a read by the manifest before it.
pub const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The root files shipped with the streams: a sharded log's shard count,
/// checkpoint log and HEAD.
pub const ROOT_FILES: [&str; 3] = [
    crate::sharded::SHARDS_FILE,
    crate::sharded::checkpoints::LOG_FILE,
    crate::sharded::checkpoints::HEAD_FILE,
];

/// The key of a root file's object: its name, the writer's epoch and its
/// crc, so that a new version never overwrites the one a manifest names.
pub fn file_key(name: &str, epoch: u64, crc: u32) -> String {
    format!("files/{name}.e{epoch}.{crc:08x}.file")
}

/// One stream in the bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamManifest {
    /// One past the last id in the bucket.
    pub next_id: u64,
    /// Ids below this were removed from the bucket on purpose (`walfs
    /// truncate s3://...`): a writer never ships them again.
    #[serde(default)]
    pub floor: u64,
    /// Segments in id order; history truncated locally stays here.
    pub segments: Vec<SegmentManifest>,
}

/// One segment in the bucket: its bytes are its objects, concatenated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentManifest {
    /// Its first id (its file name).
    pub start_id: u64,
    /// One past its last id in the bucket.
    pub end_id: u64,
    /// Bytes in the bucket (whole frames).
    pub len: u64,
    /// Sealed: one object, byte-identical to the local file.
    pub sealed: bool,
    /// Entry bytes its frames hold (the segment's share of `log`).
    #[serde(default)]
    pub payload: u64,
    /// Objects covering `0..len`, in order, without gaps.
    pub objects: Vec<ObjectRef>,
    /// When its ids were shipped: (unix ms, first id) marks in id order,
    /// one per round that shipped ids of it and at least
    /// [`crate::format::TIME_EVERY_MS`] after the one before (its first
    /// always at its first id). A sealed segment with more than
    /// [`SEALED_MARKS`] keeps only its first here, and all of them in
    /// `times_object`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "marks")]
    pub times: Vec<(u64, u64)>,
    /// A sealed segment's marks, as records of walfs.times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times_object: Option<ObjectRef>,
}

/// Marks in the manifest's JSON: one string of "MS:ID" pairs, space
/// separated (a pretty-printed array would take three lines a mark, in a
/// manifest written every round).
mod marks {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(u64, u64)], s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = v.iter().map(|(ms, id)| format!("{ms}:{id}")).collect();
        s.serialize_str(&text.join(" "))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, u64)>, D::Error> {
        let text = String::deserialize(d)?;
        text.split_ascii_whitespace()
            .map(|m| {
                let (ms, id) = m.split_once(':')?;
                Some((ms.parse().ok()?, id.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                serde::de::Error::custom(format!("time marks {text:?} are not MS:ID pairs"))
            })
    }
}

/// The most marks a sealed segment keeps in the manifest (more go to an
/// object of their own).
pub const SEALED_MARKS: usize = 8;
/// The most marks the active segment keeps: past it every other one goes
/// (a segment shipped in over this many seconds with appends in each; the
/// object made when it is sealed keeps what the manifest kept).
pub const ACTIVE_MARKS: usize = 512;
/// The largest times object read (marks of one segment).
pub const MAX_TIMES_OBJECT: u64 = 4 << 20;

/// One immutable object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRef {
    /// Its key, relative to the prefix.
    pub key: String,
    /// Its first byte's offset in the segment.
    pub offset: u64,
    /// Its size.
    pub len: u64,
    /// crc32 (IEEE, as crc32fast) of its bytes.
    pub crc32: u32,
    /// Merge level of an active segment's part (0 for a fresh one).
    #[serde(default)]
    pub level: u32,
}

impl ObjectRef {
    /// Whether `body` is this object as the manifest describes it (length
    /// and crc32); the error says what differs.
    pub fn check(&self, body: &[u8]) -> Result<(), String> {
        let crc = crc32fast::hash(body);
        if body.len() as u64 == self.len && crc == self.crc32 {
            return Ok(());
        }
        Err(format!(
            "object {} does not match the manifest ({} bytes, crc32 {crc:#010x}; the manifest says {} bytes, {:#010x})",
            self.key,
            body.len(),
            self.len,
            self.crc32
        ))
    }
}

impl SegmentManifest {
    /// A segment starting at `start_id` with nothing shipped yet.
    pub fn empty(start_id: u64) -> SegmentManifest {
        SegmentManifest {
            start_id,
            end_id: start_id,
            len: 0,
            sealed: false,
            payload: 0,
            objects: Vec::new(),
            times: Vec::new(),
            times_object: None,
        }
    }

    /// Marks ids `from..self.end_id`, shipped by a round at `now_ms`: a
    /// mark at the segment's first id always, later ones at least
    /// [`crate::format::TIME_EVERY_MS`] apart; past [`ACTIVE_MARKS`], every
    /// other one after the first goes.
    pub fn mark_shipped(&mut self, from: u64, now_ms: u64) {
        if self.end_id <= from {
            return;
        }
        let due = match self.times.last() {
            None => true,
            Some(&(ms, _)) => now_ms >= ms.saturating_add(crate::format::TIME_EVERY_MS),
        };
        if due {
            self.times.push((now_ms, from.max(self.start_id)));
        }
        if self.times.len() > ACTIVE_MARKS {
            let mut i = 0;
            self.times.retain(|_| {
                i += 1;
                i == 1 || i % 2 == 0
            });
        }
    }

    /// The keys of its objects, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects
            .iter()
            .chain(&self.times_object)
            .map(|o| o.key.clone())
            .collect()
    }
}

impl Manifest {
    /// An empty manifest at `epoch`.
    pub fn empty(epoch: u64) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            epoch,
            writer: String::new(),
            updated_ms: 0,
            lease_ms: 0,
            released: false,
            streams: BTreeMap::new(),
            files: BTreeMap::new(),
            retired: Vec::new(),
        }
    }

    /// Parses and checks a manifest's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a walfs manifest: {e}"))?;
        if m.format != FORMAT {
            return Err(format!("not a walfs manifest (format {:?})", m.format));
        }
        if m.version != VERSION {
            return Err(format!(
                "manifest version {} is not supported (this walfs reads {VERSION})",
                m.version
            ));
        }
        let mut keys = std::collections::HashSet::new();
        for (name, s) in &m.streams {
            if !crate::format::validate_stream_name(name) {
                return Err(format!("manifest names an invalid stream {name:?}"));
            }
            check_stream(name, s, &mut keys).map_err(|e| {
                format!("manifest: stream {name}: {e} (not a manifest walfs wrote: refusing to read it)")
            })?;
        }
        for (name, o) in &m.files {
            if !ROOT_FILES.contains(&name.as_str()) || !valid_key(&o.key) || o.offset != 0 {
                return Err(format!("manifest names an unknown root file {name:?}"));
            }
        }
        // A retired object is deleted later: it must not be one in use.
        for r in &m.retired {
            if !valid_key(&r.key) || !keys.insert(r.key.as_str()) {
                return Err(format!(
                    "manifest: retired object {:?} is in use or named twice (not a manifest walfs wrote: refusing to read it)",
                    r.key
                ));
            }
        }
        if m.files
            .values()
            .any(|o| m.retired.iter().any(|r| r.key == o.key))
        {
            return Err("manifest: a root file's object is retired".into());
        }
        Ok(m)
    }

    /// The manifest's bytes (pretty JSON: people read it).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Every key the manifest references (retired ones too: they stay
    /// until their grace is over).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.streams
            .values()
            .flat_map(|s| s.segments.iter())
            .flat_map(|g| g.objects.iter().chain(&g.times_object))
            .chain(self.files.values())
            .map(|o| o.key.as_str())
            .chain(self.retired.iter().map(|r| r.key.as_str()))
    }

    /// Retires `keys` now, and takes out of the list (returning them) the
    /// retired objects whose grace is over: to delete once this manifest
    /// is written.
    pub fn retire(&mut self, keys: Vec<String>, now_ms: u64) -> Vec<String> {
        let grace = RETIRED_GRACE.as_millis() as u64;
        let (expired, kept): (Vec<Retired>, Vec<Retired>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| now_ms.saturating_sub(r.since_ms) >= grace);
        self.retired = kept;
        self.retired.extend(keys.into_iter().map(|key| Retired {
            key,
            since_ms: now_ms,
        }));
        expired.into_iter().map(|r| r.key).collect()
    }
}

/// What every stream of a manifest walfs wrote holds to: segments in id
/// order, each starting where the one before ended, the stream's end where
/// the last one ends; each segment's objects cover its bytes without a gap,
/// under the stream's own name, each named once in the manifest; no more
/// ids than its bytes can hold (an entry takes 4 bytes at least).
fn check_stream<'a>(
    name: &str,
    s: &'a StreamManifest,
    keys: &mut std::collections::HashSet<&'a str>,
) -> Result<(), String> {
    let own = format!("{name}/");
    let mut prev: Option<&SegmentManifest> = None;
    for seg in &s.segments {
        let at_start = seg.start_id;
        if let Some(p) = prev {
            if seg.start_id <= p.start_id {
                return Err(format!(
                    "segment {at_start} is listed after segment {}",
                    p.start_id
                ));
            }
            if seg.start_id != p.end_id {
                return Err(format!(
                    "segment {} ends at id {} but the next starts at id {at_start}",
                    p.start_id, p.end_id
                ));
            }
        } else if s.floor > seg.start_id {
            return Err(format!(
                "its floor {} is past its first segment {at_start}",
                s.floor
            ));
        }
        if seg.end_id < seg.start_id || (seg.end_id - seg.start_id) > seg.len / 4 {
            return Err(format!(
                "segment {at_start} claims ids {at_start}..{} in {} bytes",
                seg.end_id, seg.len
            ));
        }
        if seg.payload > seg.len {
            return Err(format!(
                "segment {at_start} claims {} entry bytes in {} bytes",
                seg.payload, seg.len
            ));
        }
        if seg.sealed && seg.objects.len() != 1 {
            return Err(format!(
                "sealed segment {at_start} has {} objects (one is its file)",
                seg.objects.len()
            ));
        }
        let mut at = 0u64;
        for o in &seg.objects {
            if o.offset != at || !valid_key(&o.key) || !o.key.starts_with(&own) {
                return Err(format!(
                    "segment {at_start} has a gap or a key outside the stream ({:?}) at byte {at}",
                    o.key
                ));
            }
            if !keys.insert(o.key.as_str()) {
                return Err(format!("object {} is named twice", o.key));
            }
            at = at
                .checked_add(o.len)
                .ok_or_else(|| format!("segment {at_start}'s objects overflow"))?;
        }
        if at != seg.len {
            return Err(format!(
                "segment {at_start}'s objects hold {at} bytes, not the {} it claims",
                seg.len
            ));
        }
        check_times(seg, &own, keys)?;
        prev = Some(seg);
    }
    let end = prev.map_or(s.floor, |p| p.end_id);
    if s.next_id != end {
        return Err(format!(
            "its next id {} is not where its segments end ({end})",
            s.next_id
        ));
    }
    Ok(())
}

/// A segment's marks name its own ids in order, and its times object is
/// its own, of whole records, named once.
fn check_times<'a>(
    seg: &'a SegmentManifest,
    own: &str,
    keys: &mut std::collections::HashSet<&'a str>,
) -> Result<(), String> {
    let at_start = seg.start_id;
    let mut prev = seg.start_id;
    for &(_, id) in &seg.times {
        if id < prev || id > seg.end_id {
            return Err(format!(
                "segment {at_start} has a time mark of id {id} outside its ids {at_start}..{} or out of order",
                seg.end_id
            ));
        }
        prev = id;
    }
    if seg.times.len() > ACTIVE_MARKS {
        return Err(format!(
            "segment {at_start} has {} time marks (at most {ACTIVE_MARKS})",
            seg.times.len()
        ));
    }
    if let Some(o) = &seg.times_object {
        if !seg.sealed
            || o.offset != 0
            || !valid_key(&o.key)
            || !o.key.starts_with(own)
            || o.len % crate::format::TIME_RECORD as u64 != 0
            || o.len > MAX_TIMES_OBJECT
        {
            return Err(format!(
                "segment {at_start} names an invalid times object {:?} ({} bytes)",
                o.key, o.len
            ));
        }
        if !keys.insert(o.key.as_str()) {
            return Err(format!("object {} is named twice", o.key));
        }
    }
    Ok(())
}

/// A key stays inside the prefix: no absolute path, no `..`.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The key of a sealed segment's object.
pub fn sealed_key(stream: &str, start_id: u64, epoch: u64) -> String {
    format!(
        "{stream}/{}.e{epoch}.wal",
        crate::format::segment_name(start_id).trim_end_matches(".wal")
    )
}

/// The key of a sealed segment's time marks.
pub fn times_key(stream: &str, start_id: u64, epoch: u64) -> String {
    format!(
        "{stream}/{}.e{epoch}.times",
        crate::format::segment_name(start_id).trim_end_matches(".wal")
    )
}

/// The key of bytes `from..to` of an active segment.
pub fn part_key(stream: &str, start_id: u64, epoch: u64, from: u64, to: u64) -> String {
    format!(
        "{stream}/{}.e{epoch}.{from:020}-{to:020}.part",
        crate::format::segment_name(start_id).trim_end_matches(".wal")
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Entry bytes of the whole frames in `bytes` (a segment, or a part of
/// one that starts and ends at frame boundaries).
pub fn payload_of(bytes: &[u8]) -> u64 {
    use crate::format::frame::{FrameHeader, HEADER_SIZE};
    let mut at = 0usize;
    let mut total = 0;
    while at + HEADER_SIZE <= bytes.len() {
        let Ok(h) = FrameHeader::decode(&bytes[at..at + HEADER_SIZE]) else {
            break;
        };
        total += h.payload_len();
        at += h.frame_len() as usize;
    }
    total
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
