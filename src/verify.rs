//! `verify`: every frame of every segment checked and decoded, every fault
//! reported with stream, segment, byte offset and reason. It only reads,
//! and needs no lock: it can run beside a live writer.

use crate::error::{Error, Location, Result};
use crate::format;
use crate::recovery::{plan_layout, scan_from, Depth};
use crate::segment::{ReadHandle, Window};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What kind of fault `verify` found.
pub enum FaultKind {
    /// Damage at the end of the active segment with nothing valid after it:
    /// a crash mid-write. The next open cuts it; nothing acknowledged is lost.
    TornTail,
    /// Damage followed by valid data, or in a sealed segment.
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
    /// Whether no fault was found.
    pub fn is_sound(&self) -> bool {
        self.faults.is_empty()
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
            let (mut off, mut expected) = (0u64, start);
            let last = i + 1 == segments.len();
            loop {
                let mut entries = 0u64;
                let mut frames = 0u64;
                let base = done;
                let stop = scan_from(&mut win, off, expected, Depth::Decode, |o, h| {
                    entries += h.entry_count as u64;
                    frames += 1;
                    if frames % 4096 == 0 {
                        progress(base + o, total);
                    }
                })?;
                report.entries += entries;
                report.frames += frames;
                let Some(fault) = stop.fault else {
                    expected = stop.end_id;
                    break;
                };
                let resume = win.resync(fault.offset + 1, stop.end_id)?;
                let kind = if last && resume.is_none() {
                    FaultKind::TornTail
                } else {
                    FaultKind::Corruption
                };
                let reason = match resume {
                    Some((o, h)) => format!(
                        "{}; valid frames resume at byte {o} (id {})",
                        fault.reason, h.start_id
                    ),
                    None => format!(
                        "{}; {} bytes to the end of the segment are unreadable",
                        fault.reason,
                        len - fault.offset
                    ),
                };
                report.faults.push(VerifyFault {
                    kind,
                    location: at(fault.offset),
                    reason,
                });
                match resume {
                    Some((o, h)) => {
                        off = o;
                        expected = h.start_id;
                    }
                    None => {
                        expected = stop.end_id;
                        break;
                    }
                }
            }
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
