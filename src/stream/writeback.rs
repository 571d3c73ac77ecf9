//! Starting the writeback of what an append handed to the kernel, in
//! steps, so that the fdatasync sealing a full segment finds most of its
//! bytes already on their way; and never under the writer's lock.

use super::Writer;
use crate::storage::StorageFile;
use std::sync::Arc;

/// Every this many bytes handed to the kernel, their writeback to the
/// device is started (sync_file_range, without waiting), so that the
/// fdatasync sealing a full segment, or an asked-for sync, finds most of
/// its bytes already on their way instead of writing a whole segment while
/// an append waits. One MiB (a WRITE of `cat`): with 8 MiB steps the
/// seal still waited for the last step, 3.6-5 ms, against 0.12-0.25 ms
/// with 1 MiB steps (64 MiB written at 1.3 GB/s, a scratch program), and
/// a 256 MiB async bulk append took 0.17-0.21 s against 0.22-0.25 s
/// (six alternating runs each, by script).
pub(super) const WRITEBACK_STEP: u64 = 1 << 20;

/// A writeback start that is due: the bytes `from..from + len` of `file`,
/// handed to the kernel and not yet on their way to the device.
#[must_use = "a writeback due is started with `start`"]
pub(super) struct Writeback {
    file: Arc<dyn StorageFile>,
    from: u64,
    len: u64,
}

impl Writeback {
    /// Starts it (sync_file_range, without waiting). It needs no lock: the
    /// file stays open while `file` is held, and a start on bytes already
    /// written back, or of a segment sealed since, does nothing harmful.
    pub(super) fn start(self) {
        self.file.start_writeback(self.from, self.len);
    }
}

/// The writeback of the bytes handed to the kernel since the last start,
/// once they reach [`WRITEBACK_STEP`]. Called when nothing waits in the
/// buffer: all `w.len` bytes are the kernel's.
pub(super) fn writeback_due(w: &mut Writer) -> Option<Writeback> {
    debug_assert!(w.pending.is_empty());
    if w.len < w.written_back + WRITEBACK_STEP {
        return None;
    }
    let from = std::mem::replace(&mut w.written_back, w.len);
    w.file.clone().map(|file| Writeback {
        file,
        from,
        len: w.len - from,
    })
}
