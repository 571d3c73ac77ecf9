//! The mount applies the retention policy (`--retain-bytes`,
//! `--retain-age`) once a second: for each stream, the sharded log's
//! checkpoint floor is kept, `log` learns its layout before anything goes
//! (its offsets never move while mounted), then the engine frees what the
//! policy and the bucket allow ([`Wal::apply_retention`]).

use super::files::{before_truncation, checkpoint_floor};
use super::view::View;
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
    log::info!("retention: {policy}, checked every second");
    std::thread::Builder::new()
        .name("walfs-retention".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for stream in wal.streams() {
                    apply(&view, &wal, &stream);
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
