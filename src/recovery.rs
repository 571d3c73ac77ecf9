//! Opening a stream: which segments it has, where its active segment's
//! valid data ends, and what to do with what follows.
//!
//! One classifier ([`classify`]) decides, for recovery, `verify` (before
//! and after an open), `repair`, the index of a sealed segment and the
//! bucket's checks alike, what each damaged stretch of a segment is:
//!
//! - **Below the synced mark**: walfs.synced records, after every fdatasync
//!   of the active segment returned, how far it reached (a sealed segment
//!   is synced whole). Bytes there were on disk before any crash that
//!   followed, so damage there is corruption: its bytes are kept, every
//!   intact frame around it stays readable, its ids answer with a
//!   corruption error, and appends continue after the real end. The Error
//!   policy refuses to open. An id, once acknowledged, never names a
//!   different entry.
//! - **At or past it**: what a crash leaves (a write lost whole or in part,
//!   in any order: its bytes read back as zeros), and whatever follows was
//!   written after it and never synced: a torn tail, cut by a writable
//!   open under both policies. Unless the damaged frame's own bytes show
//!   bit rot ([`crate::format::damage::rot_evidence`]: a byte no crash
//!   leaves), which is corruption as above.
//!
//! The mark is a lower bound: after a process crash it is exact (written
//! after each sync), after a power loss it may lag by up to a second (it
//! is synced once a second and at a clean close), and bit rot in that last
//! second that leaves only zeros is what remains ambiguous (README,
//! Reliability).

use crate::error::{Error, Location, Result};
use crate::format::{self, FrameHeader, SyncedMark, MAX_BATCH_BYTES};
use crate::index::{SparseIndex, Stretch};
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

/// How far a segment is known to be on disk: every byte below `len` was
/// synced, and the frames there end at id `end_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Bytes known synced (a frame boundary).
    pub len: u64,
    /// One past the last id below `len`.
    pub end_id: u64,
}

impl Synced {
    /// Nothing known: the whole segment may be what a crash left.
    pub fn nothing(start_id: u64) -> Synced {
        Synced {
            len: 0,
            end_id: start_id,
        }
    }

    /// A sealed segment: synced whole before the next one was started.
    pub fn sealed(len: u64, end_id: u64) -> Synced {
        Synced { len, end_id }
    }

    /// What walfs.synced says of the active segment starting at `start_id`
    /// whose file holds `file_len` bytes; nothing when it is about another
    /// segment or cannot be right.
    pub fn active(mark: Option<SyncedMark>, start_id: u64, file_len: u64, what: &str) -> Synced {
        match mark {
            Some(m) if m.segment == start_id && m.len <= file_len && m.end_id >= start_id => {
                Synced {
                    len: m.len,
                    end_id: m.end_id,
                }
            }
            Some(m) if m.segment == start_id && m.len > file_len => {
                log::error!(
                    "{what}: the segment holds {file_len} bytes but {} were synced (ids up to {}): bytes were lost after they were on disk (the file was cut by hand or by another program?); treating the whole segment as unsynced",
                    m.len,
                    m.end_id
                );
                Synced::nothing(start_id)
            }
            _ => Synced::nothing(start_id),
        }
    }
}

/// A segment as the classifier found it.
pub struct Classified {
    /// Index points of the valid frames, and the damaged stretches.
    pub index: SparseIndex,
    /// End of what is kept: valid frames and damaged stretches.
    pub valid_len: u64,
    /// One past the last id kept.
    pub end_id: u64,
    /// Valid frames.
    pub frames: u64,
    /// Entries of the valid frames.
    pub entries: u64,
    /// What a crash left past `valid_len`: a torn tail a writable open cuts.
    pub cut: Option<Fault>,
}

/// Walks a segment from its first frame and classifies every damaged
/// stretch (see the module's documentation). Reports; changes nothing.
pub fn classify(
    win: &mut Window,
    start_id: u64,
    synced: Synced,
    depth: Depth,
    mut each: impl FnMut(u64, &FrameHeader),
) -> io::Result<Classified> {
    let mut ix = SparseIndex::new();
    let (mut off, mut expected) = (0u64, start_id);
    let (mut frames, mut entries) = (0u64, 0u64);
    loop {
        let stop = scan_from(win, off, expected, depth, |o, h| {
            ix.note(h.start_id, o, h.payload_len());
            entries += h.entry_count as u64;
            each(o, h)
        })?;
        frames += stop.frames;
        let done = |ix, cut| Classified {
            index: ix,
            valid_len: stop.valid_len,
            end_id: stop.end_id,
            frames,
            entries,
            cut,
        };
        let Some(fault) = stop.fault else {
            return Ok(done(ix, None));
        };
        let at = fault.offset;
        let stretch = if at < synced.len {
            // Synced bytes: corruption. Valid frames resume before the
            // synced end, or at it.
            let resume = win.resync(at + 1, stop.end_id, synced.end_id, synced.len)?;
            let (end, end_id) =
                resume.map_or((synced.len, synced.end_id), |(o, h)| (o, h.start_id));
            // A mark that disagrees with the frames below it names no ids.
            let end_id = end_id.max(stop.end_id);
            let reason = format!(
                "{}; the bytes were synced before (byte {} and below are known on disk), so this is corruption, not a torn write: {}",
                fault.reason,
                synced.len,
                unreadable(stop.end_id, end_id, resume.map(|r| r.0))
            );
            let payload = stretch_payload(win, at, stop.end_id, end, end_id)?;
            Stretch {
                offset: at,
                end,
                start_id: stop.end_id,
                end_id,
                payload_before: 0,
                payload,
                reason,
            }
        } else {
            match rot_past_the_mark(win, at, stop.end_id)? {
                Some((end, end_id, evidence, resumes)) => Stretch {
                    offset: at,
                    end,
                    start_id: stop.end_id,
                    end_id,
                    payload_before: 0,
                    payload: stretch_payload(win, at, stop.end_id, end, end_id)?,
                    reason: format!(
                        "{}; {evidence}: bit rot, not a lost write, so this is corruption: {}",
                        fault.reason,
                        unreadable(stop.end_id, end_id, resumes.then_some(end))
                    ),
                },
                None => {
                    let why = format!(
                        "{}; past the last byte known synced ({}): what a crash leaves",
                        fault.reason, synced.len
                    );
                    return Ok(done(ix, Some(Fault::new(at, why))));
                }
            }
        };
        off = stretch.end;
        expected = stretch.end_id;
        ix.skip_damage(stretch);
    }
}

fn unreadable(from: u64, to: u64, resume: Option<u64>) -> String {
    let ids = match to.saturating_sub(from) {
        0 => "no id is lost".to_string(),
        1 => format!("id {from} is unreadable"),
        _ => format!("ids {from}..{to} are unreadable"),
    };
    match resume {
        Some(at) => format!("{ids}; valid frames follow at byte {at} (ids from {to})"),
        None => ids,
    }
}

/// Damage at `at`, past the synced mark, that a crash cannot have left: the
/// damaged stretch, up to where valid frames resume (or, at the end of the
/// segment, its last frame as its header says), shows bit rot. Returns
/// where the stretch ends, its end id, the evidence, and whether valid
/// frames follow it.
fn rot_past_the_mark(
    win: &mut Window,
    at: u64,
    expected: u64,
) -> io::Result<Option<(u64, u64, String, bool)>> {
    let resume = win.resync(at + 1, expected, u64::MAX, win.limit())?;
    let (end, end_id, resumes) = match resume {
        Some((o, h)) => (o, Some(h.start_id), true),
        None => match win.header(at) {
            Ok(h) if h.start_id == expected => (at + h.frame_len(), None, false),
            _ => return Ok(None),
        },
    };
    if end - at > (format::HEADER_SIZE + MAX_BATCH_BYTES) as u64 {
        return Ok(None);
    }
    let bytes = win.bytes(at, (end - at) as usize)?;
    let Some(evidence) = format::damage::rot_evidence(bytes, expected, end_id) else {
        return Ok(None);
    };
    let end_id = match end_id {
        Some(id) => id,
        None => win.header(at).map(|h| h.end_id()).unwrap_or(expected),
    };
    Ok(Some((end, end_id, evidence, resumes)))
}

/// Entry bytes a damaged stretch stands for in the mount's `log`: the
/// frame's own count when the stretch is one frame whose header agrees
/// with its place, else its length on disk; nothing when it holds no id.
fn stretch_payload(
    win: &mut Window,
    at: u64,
    start: u64,
    end: u64,
    end_id: u64,
) -> io::Result<u64> {
    if end_id == start {
        return Ok(0);
    }
    let one_frame = match win.header(at) {
        Ok(h) => (h.start_id == start && h.end_id() == end_id && at + h.frame_len() == end)
            .then(|| h.payload_len())
            .filter(|&p| p <= MAX_BATCH_BYTES as u64),
        Err(ReadError::Io(e)) => return Err(e),
        Err(ReadError::Bad(_)) => None,
    };
    Ok(one_frame.unwrap_or(end - at))
}

/// Builds the sparse index of a sealed segment (synced whole, ids up to
/// `end_id`), stepping over damaged stretches so that the frames after
/// them stay reachable. Frames are crc-checked: a header whose counts were
/// damaged must not claim the ids of the frames after it (one sequential
/// pass, once per sealed segment).
pub fn build_index(win: &mut Window, start_id: u64, end_id: u64) -> io::Result<SparseIndex> {
    let synced = Synced::sealed(win.limit(), end_id);
    let c = classify(win, start_id, synced, Depth::Crc, |_, _| {})?;
    for d in c.index.damage() {
        log::warn!("damaged frame at byte {}: {}", d.offset, d.reason);
    }
    Ok(c.index)
}

/// The outcome of recovering an active segment.
pub struct Recovered {
    /// The active segment's index, for its valid frames and its damage.
    pub index: SparseIndex,
    /// End of the last valid frame: where appends continue.
    pub valid_len: u64,
    /// One past the last id kept.
    pub end_id: u64,
    /// A torn tail past `valid_len` that a writable open cuts.
    pub cut: Option<Fault>,
}

/// Recovers the active segment: classifies it (see the module's
/// documentation) and refuses, under the Error policy, to open one with
/// corruption. Reports what it finds; it changes nothing (the caller cuts,
/// if writable).
pub fn recover_active(
    win: &mut Window,
    stream: &str,
    segment: &str,
    start_id: u64,
    synced: Synced,
    policy: CorruptionPolicy,
) -> Result<Recovered> {
    let location = |offset| Location {
        stream: stream.to_owned(),
        segment: segment.to_owned(),
        offset,
    };
    let c = classify(win, start_id, synced, Depth::Crc, |_, _| {})?;
    if let (Some(d), CorruptionPolicy::Error) = (c.index.damage().first(), policy) {
        return Err(Error::Corruption {
            location: location(d.offset),
            reason: d.reason.clone(),
        });
    }
    for d in c.index.damage() {
        log::error!(
            "{}: {}; its bytes are kept and every intact entry stays readable (`walfs verify` lists the damage)",
            location(d.offset),
            d.reason
        );
    }
    Ok(Recovered {
        index: c.index,
        valid_len: c.valid_len,
        end_id: c.end_id,
        cut: c.cut,
    })
}

/// What walfs.synced in `dir` says, if it is there and intact.
pub fn read_synced(storage: &dyn Storage, dir: &Path) -> Option<SyncedMark> {
    storage
        .read_file(&dir.join(format::SYNCED))
        .ok()
        .and_then(|b| format::synced_decode(&b))
        .map(|(_, m)| m)
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
