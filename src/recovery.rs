//! Opening a stream: which segments it has, where its active segment's
//! valid data ends, and what to do with what follows.
//!
//! The decision rule: damage in the active segment at offset X is a *torn
//! tail* if no valid frame follows it, or if it holds a zero-filled sector
//! (writes a crash lost read back as zeros, and whatever follows them was
//! written after them and never synced); a writable open cuts it at X. If a valid frame does follow, the damage is
//! *corruption*: the Error policy refuses to open; the Truncate policy keeps
//! its bytes, serves every intact frame around it (the damaged ids answer
//! with a corruption error) and appends after the last valid frame. An id,
//! once acknowledged, never names a different entry.

use crate::error::{Error, Location, Result};
use crate::format::{self, FrameHeader};
use crate::index::SparseIndex;
use crate::options::CorruptionPolicy;
use crate::segment::{Fault, ReadError, Window};
use crate::storage::Storage;
use std::io;
use std::path::Path;

/// How much of each frame a scan checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Headers, bounds and every payload's crc (recovery, indexing).
    Crc,
    /// Plus decoding every batch (verify).
    Decode,
}

/// Where a scan stopped.
#[derive(Debug)]
pub struct ScanStop {
    /// End of the last good frame.
    pub valid_len: u64,
    /// One past the last id of the good frames.
    pub end_id: u64,
    /// Good frames scanned.
    pub frames: u64,
    /// Why it stopped before the limit, if it did.
    pub fault: Option<Fault>,
}

/// Walks frames from `off`, expecting ids to start at `expected` and run
/// densely, calling `each(offset, header)` for every good frame.
pub fn scan_from(
    win: &mut Window,
    mut off: u64,
    mut expected: u64,
    depth: Depth,
    mut each: impl FnMut(u64, &FrameHeader),
) -> io::Result<ScanStop> {
    let mut frames = 0;
    let fault = loop {
        if off >= win.limit() {
            break None;
        }
        let h = match win.header(off) {
            Ok(h) => h,
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Bad(f)) => break Some(f),
        };
        if h.start_id != expected {
            break Some(Fault::new(
                off,
                format!(
                    "frame starts at id {} where id {expected} was expected",
                    h.start_id
                ),
            ));
        }
        let bad = match depth {
            Depth::Crc => (!win.crc_ok(off, &h)?).then(|| Fault::new(off, "crc mismatch")),
            Depth::Decode => match win.frame(off, &h) {
                Ok(_) => None,
                Err(ReadError::Io(e)) => return Err(e),
                Err(ReadError::Bad(f)) => Some(f),
            },
        };
        if let Some(f) = bad {
            break Some(f);
        }
        each(off, &h);
        frames += 1;
        expected = h.end_id();
        off += h.frame_len();
    };
    Ok(ScanStop {
        valid_len: off,
        end_id: expected,
        frames,
        fault,
    })
}

/// Builds the sparse index of a segment, stepping over damaged stretches so
/// that the frames after them stay reachable. Frames are crc-checked: a
/// header whose counts were damaged must not claim the ids of the frames
/// after it (one sequential pass, once per sealed segment).
pub fn build_index(win: &mut Window, start_id: u64) -> io::Result<SparseIndex> {
    let mut ix = SparseIndex::new();
    let (mut off, mut expected) = (0, start_id);
    loop {
        let stop = scan_from(win, off, expected, Depth::Crc, |o, h| {
            ix.note(h.start_id, o, h.payload_len())
        })?;
        let Some(fault) = stop.fault else { break };
        log::warn!("damaged frame at byte {}: {}", fault.offset, fault.reason);
        match win.resync(fault.offset + 1, stop.end_id)? {
            Some((o, h)) => {
                ix.point_at(h.start_id, o);
                off = o;
                expected = h.start_id;
            }
            None => break,
        }
    }
    Ok(ix)
}

/// The outcome of recovering an active segment.
pub struct Recovered {
    /// The active segment's index, for its valid frames.
    pub index: SparseIndex,
    /// End of the last valid frame: where appends continue.
    pub valid_len: u64,
    /// One past the last id of the valid frames.
    pub end_id: u64,
    /// A torn tail past `valid_len` that a writable open cuts.
    pub cut: Option<Fault>,
    /// Damaged stretches followed by valid frames: kept, their ids answer
    /// with a corruption error.
    pub damage: Vec<Fault>,
}

/// Scans the active segment with crcs, stepping over damage that valid
/// frames follow (corruption: kept, and refused under the Error policy)
/// up to the end of the last valid frame; what lies past it is a torn tail.
/// Reports what it finds; it changes nothing (the caller cuts, if writable).
pub fn recover_active(
    win: &mut Window,
    stream: &str,
    segment: &str,
    start_id: u64,
    policy: CorruptionPolicy,
) -> Result<Recovered> {
    let location = |offset| Location {
        stream: stream.to_owned(),
        segment: segment.to_owned(),
        offset,
    };
    let mut index = SparseIndex::new();
    let mut damage = Vec::new();
    let (mut off, mut expected) = (0, start_id);
    let (valid_len, end_id, cut) = loop {
        let stop = scan_from(win, off, expected, Depth::Crc, |o, h| {
            index.note(h.start_id, o, h.payload_len())
        })?;
        let Some(fault) = stop.fault else {
            break (stop.valid_len, stop.end_id, None);
        };
        let Some((resume, h)) = win.resync(fault.offset + 1, stop.end_id)? else {
            break (stop.valid_len, stop.end_id, Some(fault));
        };
        if has_zero_sector(win, fault.offset, resume)? {
            // Writes that never reached the disk read back as zeros: frames
            // after such a hole were written after it and synced with it,
            // so none of them was acknowledged as durable.
            let why = format!(
                "{}; a zero-filled sector follows (writes lost in a crash), so the frames after it were never synced",
                fault.reason
            );
            break (
                stop.valid_len,
                stop.end_id,
                Some(Fault::new(fault.offset, why)),
            );
        }
        let reason = format!(
            "{}; valid frames follow at byte {resume} (ids from {}), so this is corruption, not a torn write: ids {}..{} are unreadable",
            fault.reason, h.start_id, stop.end_id, h.start_id
        );
        if policy == CorruptionPolicy::Error {
            return Err(Error::Corruption {
                location: location(fault.offset),
                reason,
            });
        }
        damage.push(Fault::new(fault.offset, reason));
        index.point_at(h.start_id, resume);
        off = resume;
        expected = h.start_id;
    };
    for d in &damage {
        log::error!(
            "{}: {}; its bytes are kept and every intact entry stays readable (`walfs verify` lists the damage)",
            location(d.offset),
            d.reason
        );
    }
    Ok(Recovered {
        index,
        valid_len,
        end_id,
        cut,
        damage,
    })
}

/// What a crash leaves where writes were lost: whole sectors that read as
/// zeros. Bit rot flips bits; it does not zero a sector.
const SECTOR: u64 = 512;

/// Whether the damaged stretch `[from, to)`, which starts at a frame
/// boundary, shows the mark of lost writes: zeros from its first byte to the
/// end of that sector (the sector holding the last synced frame was written
/// again and lost, reading back as old contents then zeros), or a whole
/// aligned sector of zeros. Neither comes from flipped bits: every byte of
/// the frame magic is non-zero with at least two bits set.
fn has_zero_sector(win: &mut Window, from: u64, to: u64) -> io::Result<bool> {
    let boundary = (from / SECTOR + 1) * SECTOR;
    if boundary <= to
        && win
            .bytes(from, (boundary - from) as usize)?
            .iter()
            .all(|&b| b == 0)
    {
        return Ok(true);
    }
    let mut at = from.div_ceil(SECTOR) * SECTOR;
    while at + SECTOR <= to {
        if win.bytes(at, SECTOR as usize)?.iter().all(|&b| b == 0) {
            return Ok(true);
        }
        at += SECTOR;
    }
    Ok(false)
}

/// The segments of a stream directory, as found and as they should be.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Start ids of the stream's segments, ascending; the last is active.
    pub segments: Vec<u64>,
    /// The last segment is named by segments.idx but has no file yet.
    pub create_active: bool,
    /// segments.idx must be rewritten to `segments`.
    pub rewrite_idx: bool,
    /// head.state must be rewritten.
    pub rewrite_head: bool,
    /// Segment files below the first retained one (an interrupted
    /// truncation); ignored, removed by the next truncate.
    pub strays: Vec<u64>,
    /// Segments that segments.idx names between two present ones but whose
    /// files are gone: lost data, listed in `segments` so that their ids
    /// stay theirs. The stream serves the rest and refuses writes.
    pub missing: Vec<u64>,
}

impl Layout {
    /// Why the stream is damaged, if it is.
    pub fn damage(&self) -> Option<String> {
        let first = self.missing.first()?;
        Some(format!(
            "segment {} is named by segments.idx but missing{}; its entries are lost (restore the file from a backup to read them, e.g. from a copy of the mount's segments/)",
            format::segment_name(*first),
            match self.missing.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        ))
    }
}

/// Works out a stream's segments from its directory. The segment files are
/// the truth; segments.idx says where the stream starts (a truncation
/// rewrites it before deleting files) and may name one segment not yet
/// created (ironwal appends to it before creating the file).
pub fn plan_layout(storage: &dyn Storage, dir: &Path, stream: &str) -> Result<Layout> {
    let mut files: Vec<u64> = storage
        .read_dir(dir)?
        .into_iter()
        .filter(|e| !e.is_dir)
        .filter_map(|e| e.name.as_deref().and_then(format::parse_segment_name))
        .collect();
    files.sort_unstable();
    let idx = match storage.read_file(&dir.join(format::SEGMENTS_IDX)) {
        Ok(b) => {
            let ids = format::segments_idx_decode(&b);
            if ids.is_none() {
                log::warn!("{stream}: segments.idx is malformed ({} bytes); rebuilding it from the segment files", b.len());
            }
            ids
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let head = match storage.read_file(&dir.join(format::HEAD_STATE)) {
        Ok(b) => format::head_state_decode(&b),
        Err(_) => None,
    };
    let mut out = Layout::default();
    match idx.as_deref() {
        Some([first, ..]) => {
            let first = *first;
            out.strays = files.iter().copied().filter(|&f| f < first).collect();
            out.segments = files.iter().copied().filter(|&f| f >= first).collect();
            let last_idx = *idx.as_ref().and_then(|v| v.last()).expect("nonempty");
            if out.segments.last().is_none_or(|&l| last_idx > l) {
                out.segments.push(last_idx);
                out.create_active = true;
            }
        }
        _ => {
            out.segments = files;
            if out.segments.is_empty() {
                out.segments.push(0);
                out.create_active = true;
            }
        }
    }
    if let Some(ids) = &idx {
        // A segment named by the index but missing between two present
        // ones is lost data, not an interrupted operation.
        let lo = out.segments[0];
        let hi = *out.segments.last().expect("nonempty");
        out.missing = ids
            .iter()
            .copied()
            .filter(|&i| i > lo && i < hi && !out.segments.contains(&i))
            .collect();
        if !out.missing.is_empty() {
            out.segments.extend_from_slice(&out.missing);
            out.segments.sort_unstable();
            log::error!(
                "stream {stream}: {}; the stream serves the rest and refuses writes",
                out.damage().expect("missing")
            );
        }
    }
    out.rewrite_idx = idx.as_deref() != Some(&out.segments[..]);
    out.rewrite_head = head != out.segments.last().copied();
    if !out.strays.is_empty() {
        log::warn!(
            "{stream}: ignoring {} segment file(s) below the first retained segment (left by an interrupted truncation)",
            out.strays.len()
        );
    }
    Ok(out)
}
