//! Retention by policy: sealed segments are freed, oldest first, while a
//! stream holds more than `retain_bytes` or their last write is older than
//! `retain_age` ([`WalOptions`](crate::WalOptions)). Never the active
//! segment, never ids the bucket does not hold yet (when the log ships),
//! never ids below the caller's floor (a sharded log's checkpoints).
//! The mount applies it every second; a library user calls
//! [`Wal::apply_retention`] when it suits (after appends, on a timer).

use crate::error::Result;
use crate::wal::Wal;
use std::time::{Duration, SystemTime};

/// What retention frees of one stream, or would but for a floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Sealed segments freed (or to free).
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The first id kept: every id below it goes.
    pub first_kept: u64,
    /// Which limit asked: `"over retain_bytes"` or `"older than retain_age"`.
    pub reason: &'static str,
    /// The policy wanted to free more, but ids from this one on are held:
    /// (the id, and why).
    pub held: Option<(u64, String)>,
}

impl Wal {
    /// What the retention policy would free of `stream` now: None when it
    /// frees nothing and nothing is held. `floor`: ids at and past it are
    /// kept whatever the policy (`u64::MAX` for none).
    pub fn retention_plan(&self, stream: &str, floor: u64) -> Option<Retention> {
        let opts = self.options();
        if opts.retain_bytes.is_none() && opts.retain_age.is_none() {
            return None;
        }
        let segs = self.segments(stream);
        let mut left: u64 = segs.iter().map(|s| s.len).sum();
        let now = SystemTime::now();
        // Not yet in the bucket: kept (the bucket would miss them).
        let shipped = self.replicated_id(stream);
        let mut plan = Retention {
            segments: 0,
            bytes: 0,
            first_kept: segs.first()?.start_id,
            reason: "",
            held: None,
        };
        for pair in segs.windows(2) {
            let (seg, next) = (&pair[0], &pair[1]);
            if !seg.sealed {
                break;
            }
            let reason = if opts.retain_bytes.is_some_and(|b| left > b) {
                "over retain_bytes"
            } else if opts.retain_age.is_some_and(|age| {
                self.storage()
                    .modified(&seg.path)
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|d| d > age)
            }) {
                "older than retain_age"
            } else {
                break;
            };
            // Freeing `seg` removes the ids below `next.start_id`.
            let held = match shipped {
                Some(s) if next.start_id > s => {
                    Some(format!("ids from {s} on are not in the bucket yet"))
                }
                _ if next.start_id > floor => {
                    Some(format!("ids from {floor} on are named by a checkpoint"))
                }
                _ => None,
            };
            if let Some(why) = held {
                plan.held = Some((seg.start_id, why));
                break;
            }
            left -= seg.len;
            plan.segments += 1;
            plan.bytes += seg.len;
            plan.first_kept = next.start_id;
            plan.reason = reason;
        }
        (plan.segments > 0 || plan.held.is_some()).then_some(plan)
    }

    /// Applies the retention policy to `stream` (see [`Wal::retention_plan`]):
    /// frees what it may, as `truncate` does (to the archive, when one is
    /// set), and logs one line for each action and each new hold.
    pub fn apply_retention(&self, stream: &str, floor: u64) -> Result<Option<Retention>> {
        let Some(plan) = self.retention_plan(stream, floor) else {
            return Ok(None);
        };
        if plan.segments > 0 {
            let freed = self.truncate(stream, plan.first_kept)?;
            if freed > 0 {
                let m = crate::metrics::global();
                m.retention_segments.inc_by(plan.segments as u64);
                m.retention_bytes.inc_by(plan.bytes);
                log::info!(
                    "stream {stream}: retention freed {} ({} bytes), ids below {} ({})",
                    count(plan.segments, "segment"),
                    plan.bytes,
                    plan.first_kept,
                    plan.reason,
                );
            }
        }
        if let Some((at, why)) = &plan.held {
            if self.note_held(stream, *at) {
                log::warn!(
                    "stream {stream}: retention keeps the segment starting at id {at} and later ones: {why}"
                );
            }
        }
        Ok(Some(plan))
    }

    /// The policy in force, for `stat` (None without one): the local one,
    /// and the bucket's when the log ships.
    pub fn retention_text(&self) -> Option<String> {
        let o = self.options();
        let mut t = policy(o.retain_bytes, o.retain_age);
        if let Some(r) = &o.replicate {
            if let Some(b) = policy(r.retain_bytes, r.retain_age) {
                t = Some(match t {
                    Some(local) => format!("{local}; bucket: {b}"),
                    None => format!("bucket: {b}"),
                });
            }
        }
        t
    }
}

fn policy(bytes: Option<u64>, age: Option<Duration>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(b) = bytes {
        parts.push(format!("bytes <= {b}"));
    }
    if let Some(a) = age {
        parts.push(format!("age <= {}", humantime::format_duration(round(a))));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
