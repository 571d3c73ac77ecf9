//! What the layers above ask of the engine to ship it or stand by: a
//! narrow interface (the engine imports nothing of them).

use super::{Core, Wal};
use crate::error::Result;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Wal {
    /// Whether the log is a standby's copy (appends refused).
    pub fn is_standby(&self) -> bool {
        self.inner.standby.load(Ordering::Acquire)
    }

    /// A standby's apply: `bytes`, whole frames of another writer, at byte
    /// `off` of the segment starting at `segment` of `stream` (made if
    /// missing). See [`Stream::apply_frames`].
    pub(crate) fn apply_frames(
        &self,
        stream: &str,
        segment: u64,
        off: u64,
        bytes: &[u8],
    ) -> Result<u64> {
        let s = self.stream_or_create(stream)?;
        s.apply_frames(&self.inner.ctx, segment, off, bytes)
    }

    /// A standby's apply: when the primary shipped the ids applied (see
    /// [`Stream::record_marks`](crate::stream::Stream::record_marks)).
    pub(crate) fn record_marks(&self, stream: &str, marks: &[(u64, u64)]) {
        if let Some(s) = self.stream(stream) {
            s.record_marks(&self.inner.ctx, marks);
        }
    }

    /// Where a standby's next apply to `stream` continues: (active
    /// segment, its length, next id); None if there is no such stream.
    pub(crate) fn position(&self, stream: &str) -> Option<(u64, u64, u64)> {
        self.stream(stream).map(|s| s.position())
    }

    /// What `stat` shows of a standby's replication.
    pub(crate) fn set_standby_info(
        &self,
        f: impl Fn(u64) -> crate::shipping::ReplicaInfo + Send + Sync + 'static,
    ) {
        let _ = self.inner.standby_info.set(Box::new(f));
    }

    /// The engine state a replicator ships from.
    pub(crate) fn core(&self) -> Arc<Core> {
        self.inner.core.clone()
    }

    /// Attaches what ships the log (once: a second is refused).
    pub(crate) fn attach_shipping(&self, s: Box<dyn crate::shipping::Shipping>) -> bool {
        self.inner.shipping.set(s).is_ok()
    }

    /// A standby becomes the writer: `shipping` (which holds the prefix
    /// already) ships from now on, and appends are taken.
    pub(crate) fn promote(&self, shipping: Box<dyn crate::shipping::Shipping>) {
        if !self.attach_shipping(shipping) {
            log::error!("promoted twice: the first replicator stays");
        }
        self.inner.standby.store(false, Ordering::Release);
    }
}
