//! The mount applies the retention policy (`--retain-bytes`,
//! `--retain-age`) once a second: for each stream, the sharded log's
//! checkpoint floor is kept, `log` learns its layout before anything goes
//! (its offsets never move while mounted), then the engine frees what the
//! policy and the bucket allow ([`Wal::apply_retention`]). The bucket's
//! (`--bucket-retain-bytes`, `--bucket-retain-age`) every
//! `--bucket-retain-interval` ([`apply_bucket_retention`]).

use super::files::{before_truncation, checkpoint_floor};
use super::view::View;
use crate::replica::check::apply_bucket_retention;
use crate::Wal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the policy is checked.
const EVERY: Duration = Duration::from_secs(1);

/// Starts the retention thread, if the log has a policy; it ends when
/// `stop` is set.
pub(super) fn spawn(
    view: Arc<View>,
    wal: Wal,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(policy) = wal.retention_text() else {
        return Ok(None);
    };
    let bucket_every = wal
        .options()
        .replicate
        .as_ref()
        .filter(|r| r.retain_bytes.is_some() || r.retain_age.is_some())
        .map(|r| r.retain_interval);
    match bucket_every {
        Some(d) => log::info!(
            "retention: {policy} (the disk checked every second, the bucket every {})",
            humantime::format_duration(d)
        ),
        None => log::info!("retention: {policy} (the disk checked every second)"),
    }
    let bucket_every = bucket_every.unwrap_or(Duration::MAX);
    std::thread::Builder::new()
        .name("walfs-retention".into())
        .spawn(move || {
            let mut bucket_at = std::time::Instant::now();
            while !stop.load(Ordering::Acquire) {
                for stream in wal.streams() {
                    apply(&view, &wal, &stream);
                }
                if bucket_at.elapsed() >= bucket_every {
                    apply_bucket(&wal);
                    bucket_at = std::time::Instant::now();
                }
                let mut slept = Duration::ZERO;
                while slept < EVERY && !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                    slept += Duration::from_millis(50);
                }
            }
        })
        .map(Some)
}

fn apply(view: &View, wal: &Wal, stream: &str) {
    let floor = checkpoint_floor(view, stream).map_or(u64::MAX, |(f, _)| f);
    let Some(plan) = wal.retention_plan(stream, floor) else {
        return;
    };
    if plan.segments > 0 {
        if let Err(e) = before_truncation(view, stream) {
            log::warn!(
                "stream {stream}: retention waits: the layout of its log is unknown (errno {e})"
            );
            return;
        }
    }
    if let Err(e) = wal.apply_retention(stream, floor) {
        log::warn!("stream {stream}: retention failed: {e}");
    }
}

fn apply_bucket(wal: &Wal) {
    let Some(r) = &wal.options().replicate else {
        return;
    };
    if r.retain_bytes.is_none() && r.retain_age.is_none() {
        return;
    }
    match apply_bucket_retention(r, r.retain_bytes, r.retain_age) {
        Ok(done) => {
            for (stream, n, first) in done {
                crate::metrics::global()
                    .retention_bucket_segments
                    .inc_by(n as u64);
                log::info!(
                    "stream {stream}: bucket retention removed {n} segment{} from {}, ids below {first}",
                    if n == 1 { "" } else { "s" },
                    r.url
                );
            }
        }
        Err(e) => log::warn!("bucket retention on {} waits: {e}", r.url),
    }
}
