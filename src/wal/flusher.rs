//! Async mode's flush thread: it hands buffered appends to the kernel
//! every [`FLUSH_INTERVAL`], and at once when woken for a large frame
//! (write-behind, see `Stream::append`).

use super::Core;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long an Async-mode append may wait in memory before a background
/// flush hands it to the kernel.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// The running flush thread; [`Flusher::stop`] ends it.
pub(super) struct Flusher {
    thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl Flusher {
    /// Starts the thread and tells the streams where to wake it.
    pub(super) fn spawn(core: Arc<Core>) -> Flusher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ctx = core.ctx.clone();
        let thread = std::thread::Builder::new()
            .name("walfs-flush".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(FLUSH_INTERVAL);
                    core.flush_all();
                }
            })
            .expect("spawn the flush thread");
        let _ = ctx.flusher.set(thread.thread().clone());
        Flusher { thread, stop }
    }

    /// Ends the thread after its current flush.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

impl Core {
    fn flush_all(&self) {
        for s in self.all_streams() {
            if let Err(e) = s.flush(&self.ctx) {
                log::error!("stream {}: background flush failed: {e}", s.name);
            }
        }
    }
}
