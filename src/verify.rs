//! `verify`: every frame of every segment checked and decoded, every fault
//! reported with stream, segment, byte offset and reason. It only reads,
//! and needs no lock: it can run beside a live writer.

use crate::error::{Error, Location, Result};
use crate::format;
use crate::recovery::{classify, plan_layout, Depth, Synced};
use crate::segment::{ReadHandle, Window};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What kind of fault `verify` found.
pub enum FaultKind {
    /// What a crash leaves at the end of the active segment: bytes past the
    /// last synced point that are not whole frames (and whatever follows
    /// them). The next writable open cuts it; nothing acknowledged is lost,
    /// and the log is sound.
    TornTail,
    /// Damage in bytes that were synced (or that show bit rot): kept, its
    /// ids unreadable.
    Corruption,
    /// A missing segment or unreadable metadata.
    Layout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// One fault `verify` found.
pub struct VerifyFault {
    /// Its kind.
    pub kind: FaultKind,
    /// Where it is.
    pub location: Location,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for VerifyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            FaultKind::TornTail => "torn tail",
            FaultKind::Corruption => "corruption",
            FaultKind::Layout => "layout",
        };
        write!(f, "{}: {kind}: {}", self.location, self.reason)
    }
}

#[derive(Debug, Default, Clone)]
/// What `verify` checked and found.
pub struct VerifyReport {
    /// Streams checked.
    pub streams: usize,
    /// Segments checked.
    pub segments: usize,
    /// Frames checked.
    pub frames: u64,
    /// Entries checked.
    pub entries: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Every fault, in order.
    pub faults: Vec<VerifyFault>,
}

impl VerifyReport {
    /// Whether no entry is damaged or lost: every fault found, if any, is a
    /// torn tail (what a crash leaves, which a writable open cuts).
    pub fn is_sound(&self) -> bool {
        self.faults.iter().all(|f| f.kind == FaultKind::TornTail)
    }
}

/// Checks the log at `root`. `progress(done, total)` is called as bytes are
/// checked.
pub fn verify(
    storage: &dyn Storage,
    root: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut names: Vec<String> = storage
        .read_dir(root)?
        .into_iter()
        .filter(|e| e.is_dir)
        .filter_map(|e| e.name)
        .filter(|n| format::validate_stream_name(n))
        .collect();
    names.sort();
    let mut plans = Vec::new();
    let mut total = 0u64;
    for name in &names {
        let dir = root.join(name);
        match plan_layout(storage, &dir, name) {
            Ok(layout) => {
                for &m in &layout.missing {
                    report.faults.push(VerifyFault {
                        kind: FaultKind::Layout,
                        location: Location {
                            stream: name.clone(),
                            segment: format::segment_name(m),
                            offset: 0,
                        },
                        reason: "named by segments.idx but missing: its entries are lost".into(),
                    });
                }
                for &s in &layout.segments {
                    total += storage
                        .file_len(&dir.join(format::segment_name(s)))
                        .unwrap_or(0);
                }
                plans.push((name, dir, layout.segments, layout.missing));
            }
            Err(e) => report.faults.push(VerifyFault {
                kind: FaultKind::Layout,
                location: Location {
                    stream: name.clone(),
                    segment: String::new(),
                    offset: 0,
                },
                reason: match e {
                    Error::Damaged { reason, .. } => reason,
                    other => other.to_string(),
                },
            }),
        }
    }
    report.streams = names.len();
    let mut done = 0u64;
    for (name, dir, segments, missing) in plans {
        for (i, &start) in segments.iter().enumerate() {
            if missing.contains(&start) {
                continue;
            }
            let seg_name = format::segment_name(start);
            let at = |offset| Location {
                stream: name.clone(),
                segment: seg_name.clone(),
                offset,
            };
            // The mark before the length: beside a live writer, the length
            // read after it is at least what it says was synced.
            let mark = crate::recovery::read_synced(storage, &dir);
            let file = match storage.open(&dir.join(&seg_name), false) {
                Ok(f) => f,
                // The active segment named by segments.idx, not yet created.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && i + 1 == segments.len() => {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            let len = file.len()?;
            report.segments += 1;
            report.bytes += len;
            let mut win = Window::new(Arc::new(ReadHandle::File(file)), len, 1 << 20);
            let last = i + 1 == segments.len();
            // The same classifier as recovery: a torn tail here is exactly
            // what a writable open cuts, and corruption what it keeps.
            let synced = match segments.get(i + 1) {
                Some(&next) => Synced::sealed(len, next),
                None => Synced::active(mark, start, len, &format!("{name}/{seg_name}")),
            };
            let base = done;
            let mut frames = 0u64;
            let c = classify(&mut win, start, synced, Depth::Decode, |o, _| {
                frames += 1;
                if frames % 4096 == 0 {
                    progress(base + o, total);
                }
            })?;
            report.entries += c.entries;
            report.frames += c.frames;
            for d in c.index.damage() {
                report.faults.push(VerifyFault {
                    kind: FaultKind::Corruption,
                    location: at(d.offset),
                    reason: d.reason.clone(),
                });
            }
            if let Some(cut) = &c.cut {
                debug_assert!(last, "a sealed segment is synced whole");
                report.faults.push(VerifyFault {
                    kind: FaultKind::TornTail,
                    location: at(cut.offset),
                    reason: format!(
                        "{}; {} bytes from here to the end were never synced (entries from id {} on): a writable open cuts them",
                        cut.reason,
                        len - cut.offset,
                        c.end_id
                    ),
                });
            }
            let expected = c.end_id;
            if let Some(&next) = segments.get(i + 1) {
                if expected != next && !report.faults.iter().any(|f| f.location.segment == seg_name)
                {
                    report.faults.push(VerifyFault {
                        kind: FaultKind::Corruption,
                        location: at(len),
                        reason: format!("segment ends at id {expected} but the next segment starts at id {next}"),
                    });
                }
            }
            done += len;
            progress(done, total);
        }
    }
    Ok(report)
}
