//! Opening a stream: which segments it has, where its active segment's
//! valid data ends, and what to do with what follows.
//!
//! The decision rule: the first bad frame of the active segment at offset X
//! is a *torn tail* if no valid frame follows it (a crash mid-write); it is
//! always cut at X. If a valid frame does follow, the damage is *corruption*
//! in the middle: the Error policy refuses to open, the Truncate policy cuts
//! at X and logs exactly what it dropped.

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
    pub index: SparseIndex,
    pub valid_len: u64,
    pub end_id: u64,
    /// Bytes past `valid_len` that opening must cut (torn or dropped).
    pub cut: Option<Fault>,
}

/// Scans the active segment with crcs and applies the corruption policy.
pub fn recover_active(
    win: &mut Window,
    stream: &str,
    segment: &str,
    start_id: u64,
    policy: CorruptionPolicy,
) -> Result<Recovered> {
    let mut index = SparseIndex::new();
    let stop = scan_from(win, 0, start_id, Depth::Crc, |o, h| {
        index.note(h.start_id, o, h.payload_len())
    })?;
    let cut = match stop.fault {
        None => None,
        Some(fault) => {
            let follows = win.resync(fault.offset + 1, stop.end_id)?;
            let location = Location {
                stream: stream.to_owned(),
                segment: segment.to_owned(),
                offset: fault.offset,
            };
            match follows {
                None => {
                    log::warn!(
                        "{location}: torn tail ({}); cutting {} bytes, entries from id {} on were never acknowledged",
                        fault.reason,
                        win.limit() - stop.valid_len,
                        stop.end_id
                    );
                    Some(fault)
                }
                Some((resume, h)) => {
                    let reason = format!(
                        "{}; valid frames follow at byte {resume} (ids from {})",
                        fault.reason, h.start_id
                    );
                    if policy == CorruptionPolicy::Error {
                        return Err(Error::Corruption { location, reason });
                    }
                    log::error!(
                        "{location}: {reason}; corruption policy Truncate drops bytes {}..{} of {segment}, ids {} onwards",
                        stop.valid_len,
                        win.limit(),
                        stop.end_id
                    );
                    Some(Fault::new(fault.offset, reason))
                }
            }
        }
    };
    Ok(Recovered {
        index,
        valid_len: stop.valid_len,
        end_id: stop.end_id,
        cut,
    })
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
        if let Some(gap) = ids
            .iter()
            .find(|&&i| i > lo && i < hi && !out.segments.contains(&i))
        {
            return Err(Error::Damaged {
                stream: stream.to_owned(),
                reason: format!(
                    "segment {} is named by segments.idx but missing",
                    format::segment_name(*gap)
                ),
            });
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
