//! `walfs verify` and `walfs truncate` on a bucket.

use super::manifest::{self, Manifest};
use super::store::{Bucket, Fault};
use super::ReplicaOptions;
use crate::error::{Error, Location, Result};
use crate::format::frame::{decode_batch, FrameHeader, HEADER_SIZE};
use crate::verify::{FaultKind, VerifyFault, VerifyReport};

fn open(opts: &ReplicaOptions) -> Result<(Bucket, Manifest, object_store::UpdateVersion)> {
    super::open_log(opts)
}

/// Checks every object of the log at `opts.url` against the manifest
/// (length, crc32) and every frame's header, crc and ids; each fault names
/// the object and the byte offset in the segment.
pub fn verify_bucket(
    opts: &ReplicaOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let (bucket, m, _) = open(opts)?;
    let total: u64 = m
        .streams
        .values()
        .flat_map(|s| &s.segments)
        .map(|g| g.len)
        .sum();
    let mut r = VerifyReport::default();
    let mut done = 0;
    for (name, sm) in &m.streams {
        r.streams += 1;
        let mut expect_start: Option<u64> = None;
        for g in &sm.segments {
            r.segments += 1;
            let fault = |offset: u64, kind: FaultKind, reason: String| VerifyFault {
                kind,
                location: Location {
                    stream: name.clone(),
                    segment: crate::format::segment_name(g.start_id),
                    offset,
                },
                reason,
            };
            if let Some(e) = expect_start.filter(|e| *e != g.start_id) {
                r.faults.push(fault(
                    0,
                    FaultKind::Layout,
                    format!("ids {e}..{} are in no segment", g.start_id),
                ));
            }
            expect_start = Some(g.end_id);
            // Built from the bodies as they arrive (checked, in order): its
            // size is what the bucket sent, never what the manifest claims.
            let mut seg: Vec<u8> = Vec::new();
            let mut bad = false;
            bucket
                .get_all(&g.objects, |i, body| {
                    let o = &g.objects[i];
                    match body {
                        Ok(b) if !bad => seg.extend_from_slice(&b),
                        Ok(_) => {}
                        Err(e) => {
                            r.faults.push(fault(o.offset, FaultKind::Corruption, e));
                            bad = true;
                        }
                    }
                    done += o.len;
                    progress(done, total);
                    Ok(())
                })
                .map_err(Error::Replication)?;
            r.bytes += g.len;
            if g.times_object.is_some() {
                if let Err(e) = super::times::segment_marks(&bucket, g) {
                    r.faults
                        .push(fault(0, FaultKind::Corruption, e.to_string()));
                }
            }
            if bad {
                continue;
            }
            let mut at = 0usize;
            let mut id = g.start_id;
            while at < seg.len() {
                let key = g
                    .objects
                    .iter()
                    .find(|o| o.offset <= at as u64 && (at as u64) < o.offset + o.len)
                    .map_or("?", |o| o.key.as_str());
                let h = match seg
                    .get(at..at + HEADER_SIZE)
                    .ok_or_else(|| "a truncated frame header".to_string())
                    .and_then(|b| FrameHeader::decode(b).map_err(|e| e.to_string()))
                {
                    Ok(h) if at + h.frame_len() as usize <= seg.len() => h,
                    Ok(_) => {
                        r.faults.push(fault(
                            at as u64,
                            FaultKind::Corruption,
                            format!("object {key}: a frame runs past the segment's end"),
                        ));
                        break;
                    }
                    Err(e) => {
                        r.faults.push(fault(
                            at as u64,
                            FaultKind::Corruption,
                            format!("object {key}: {e}"),
                        ));
                        break;
                    }
                };
                if h.start_id != id {
                    r.faults.push(fault(
                        at as u64,
                        FaultKind::Corruption,
                        format!(
                            "object {key}: the frame starts at id {}, expected {id}",
                            h.start_id
                        ),
                    ));
                }
                let p = &seg[at + HEADER_SIZE..at + h.frame_len() as usize];
                match decode_batch(&h, p) {
                    Ok(d) => {
                        r.frames += 1;
                        r.entries += d.len() as u64;
                    }
                    Err(e) => r.faults.push(fault(
                        at as u64,
                        FaultKind::Corruption,
                        format!("object {key}: {e}"),
                    )),
                }
                id = h.end_id();
                at += h.frame_len() as usize;
            }
            if id != g.end_id {
                r.faults.push(fault(
                    g.len,
                    FaultKind::Corruption,
                    format!(
                        "the segment's frames end at id {id}, the manifest says {}",
                        g.end_id
                    ),
                ));
            }
        }
        if expect_start.is_some_and(|e| e != sm.next_id) {
            r.faults.push(VerifyFault {
                kind: FaultKind::Layout,
                location: Location {
                    stream: name.clone(),
                    segment: String::new(),
                    offset: 0,
                },
                reason: format!(
                    "the manifest's next_id {} does not follow its last segment",
                    sm.next_id
                ),
            });
        }
    }
    // A sharded log's checkpoint files: each object against the manifest,
    // and the checkpoint log record by record.
    for (name, o) in &m.files {
        let fault = |offset: u64, reason: String| VerifyFault {
            kind: FaultKind::Corruption,
            location: Location {
                stream: String::new(),
                segment: name.clone(),
                offset,
            },
            reason,
        };
        bucket
            .get_all(std::slice::from_ref(o), |_, body| {
                match &body {
                    Err(e) => r.faults.push(fault(0, e.clone())),
                    Ok(b) if name == crate::sharded::checkpoints::LOG_FILE => {
                        for (start, _, why) in crate::sharded::checkpoints::scan(b).damage {
                            r.faults
                                .push(fault(start, format!("object {}: {why}", o.key)));
                        }
                    }
                    Ok(_) => {}
                }
                r.bytes += o.len;
                Ok(())
            })
            .map_err(Error::Replication)?;
    }
    Ok(r)
}

/// Removes from the bucket the segments of `stream` that hold only ids
/// below the segment of `before` (never the last one): the manifest first,
/// conditionally on the version read, then the objects. The epoch stays:
/// a writer shipping to the prefix sees its next manifest write refused,
/// reads the manifest, finds its own epoch and adopts the truncation
/// (never shipping those ids again). Returns the segments removed.
pub fn truncate_bucket(opts: &ReplicaOptions, stream: &str, before: u64) -> Result<usize> {
    let (bucket, m, version) = open(opts)?;
    let url = bucket.url.clone();
    let Some(sm) = m.streams.get(stream) else {
        return Err(Error::NoSuchStream(stream.to_owned()));
    };
    let keep_from = sm
        .segments
        .iter()
        .rposition(|g| g.start_id <= before)
        .unwrap_or(0)
        .min(sm.segments.len().saturating_sub(1));
    if keep_from == 0 {
        return Ok(0);
    }
    let mut next = m.clone();
    next.updated_ms = manifest::now_ms();
    let gone: Vec<String> = {
        let s = next.streams.get_mut(stream).expect("present");
        let gone = s
            .segments
            .drain(..keep_from)
            .flat_map(|g| g.keys())
            .collect();
        if let Some(first) = s.segments.first() {
            s.floor = s.floor.max(first.start_id);
        }
        gone
    };
    bucket
        .put_manifest(next.encode(), Some(version))
        .map_err(|f| match f {
            Fault::Conflict => Error::Replication(format!(
                "{url} changed while truncating (a writer shipped a round): nothing removed; run it again"
            )),
            f => Error::Replication(format!("{url}: {f}")),
        })?;
    if let Err(f) = bucket.delete_all(gone) {
        log::warn!(
            "{url}: removing the truncated objects failed ({f}); the next writer removes them"
        );
    }
    Ok(keep_from)
}

/// Applies a retention policy to the bucket: for each stream, the oldest
/// segments go (never the last) while the stream holds more than
/// `max_bytes` there, or while its objects were last written longer ago
/// than `max_age`, with [`truncate_bucket`] (a conditional manifest write;
/// a writer shipping meanwhile adopts it). Returns (stream, segments
/// removed, the first id kept) for each stream truncated.
pub fn apply_bucket_retention(
    opts: &ReplicaOptions,
    max_bytes: Option<u64>,
    max_age: Option<std::time::Duration>,
) -> Result<Vec<(String, usize, u64)>> {
    if max_bytes.is_none() && max_age.is_none() {
        return Ok(Vec::new());
    }
    let (bucket, m, _) = open(opts)?;
    let written: std::collections::HashMap<String, std::time::SystemTime> = match max_age {
        Some(_) => bucket
            .list_modified()
            .map_err(|f| Error::Replication(format!("{}: {f}", bucket.url)))?
            .into_iter()
            .collect(),
        None => Default::default(),
    };
    let now = std::time::SystemTime::now();
    let mut done = Vec::new();
    for (name, sm) in &m.streams {
        let mut left: u64 = sm.segments.iter().map(|g| g.len).sum();
        let mut before = None;
        for pair in sm.segments.windows(2) {
            let (g, next) = (&pair[0], &pair[1]);
            let old = max_age.is_some_and(|age| {
                g.objects
                    .iter()
                    .filter_map(|o| written.get(&o.key))
                    .max()
                    .and_then(|t| now.duration_since(*t).ok())
                    .is_some_and(|d| d > age)
            });
            if !(max_bytes.is_some_and(|b| left > b) || old) {
                break;
            }
            left -= g.len;
            before = Some(next.start_id);
        }
        if let Some(before) = before {
            let n = truncate_bucket(opts, name, before)?;
            if n > 0 {
                done.push((name.clone(), n, before));
            }
        }
    }
    Ok(done)
}
