//! When ids were shipped, as the manifest's marks say (see
//! [`SegmentManifest::times`]): what `walfs restore --to-time` and
//! `walfs cat s3://... --since/--until TIME` ask.

use super::manifest::{SegmentManifest, StreamManifest};
use super::store::Bucket;
use crate::error::{Error, Result};
use crate::format;

/// All of a segment's marks: its inline ones, or its times object's
/// (checked against the manifest, and each record against its crc).
pub fn segment_marks(bucket: &Bucket, g: &SegmentManifest) -> Result<Vec<(u64, u64)>> {
    let Some(o) = &g.times_object else {
        return Ok(g.times.clone());
    };
    let body = bucket
        .get_range(&o.key, 0..o.len)
        .map_err(|f| Error::Replication(format!("{}: {f}", o.key)))?;
    o.check(&body).map_err(Error::Replication)?;
    let marks = format::time_records_decode(&body);
    if marks.len() as u64 * format::TIME_RECORD as u64 != o.len
        || marks
            .iter()
            .any(|&(_, id)| id < g.start_id || id > g.end_id)
    {
        return Err(Error::Replication(format!(
            "object {}: not the time marks of segment {} (ids {}..{})",
            o.key, g.start_id, g.start_id, g.end_id
        )));
    }
    Ok(marks)
}

/// The first id of `sm` not shipped before `t_ms`, to within a round or a
/// second (as [`format::id_at_time`]): the marks of the segment the time
/// falls in are read (one GET when they are in an object). Segments
/// without marks (shipped by a walfs that did not write them) are skipped;
/// an error when no segment has any.
pub fn id_at_time(bucket: &Bucket, stream: &str, sm: &StreamManifest, t_ms: u64) -> Result<u64> {
    let first = sm.segments.first().map_or(sm.next_id, |g| g.start_id);
    let marked: Vec<&SegmentManifest> =
        sm.segments.iter().filter(|g| !g.times.is_empty()).collect();
    if marked.is_empty() && sm.next_id > first {
        return Err(Error::Config(format!(
            "stream {stream} in the bucket holds no times of its ids (shipped by an older walfs): use ids (--to-id, --from, --until ID)"
        )));
    }
    // The last segment whose first mark is at or before t, and the first
    // mark of the one after it (where its ids end).
    let k = marked.partition_point(|g| g.times[0].0 <= t_ms);
    let Some(g) = k.checked_sub(1).map(|k| marked[k]) else {
        return Ok(first);
    };
    let mut marks = segment_marks(bucket, g)?;
    let next = match marked.get(k) {
        Some(n) => {
            marks.push(n.times[0]);
            n.times[0].1
        }
        None => sm.next_id,
    };
    Ok(format::id_at_time(&mut marks, t_ms, first, next.max(first)))
}

pub use crate::format::unix_ms;
