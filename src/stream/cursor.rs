//! Where the last read of a stream's entry bytes (`log`) stopped, and the
//! frame it stopped in, kept for the next read.

use crate::format::{DecodedFrame, FrameHeader};
use crate::segment::Segment;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What all cursors keep now (at most half the block cache: see
/// [`Kept::new`]).
static KEPT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Where a read of entry bytes stopped: inside the frame at `off`, whose
/// entries start at entry byte `before` of the segment, decoded in
/// `frame` when the cursor keeps it.
pub struct Cursor {
    pub seg: u64,
    pub pos: u64,
    pub off: u64,
    pub h: FrameHeader,
    pub before: u64,
    pub frame: Option<Kept>,
}

impl Cursor {
    /// Whether a read of `seg` from its entry byte `from` goes on from here.
    pub fn resumes(&self, seg: &Segment, from: u64) -> bool {
        self.seg == seg.start_id && self.pos == from
    }
}

/// A frame a cursor keeps for the next read, so that a scan (`cat log`,
/// `tail -f log`) reads each frame once without putting its frames in the
/// block cache: there they would evict what `entries/` readers use, and
/// hold their read buffers, so that each read needed fresh memory (a
/// quarter of the daemon's CPU on a first `cat log`, in page faults).
pub struct Kept {
    frame: Arc<DecodedFrame>,
    /// Where its bytes are counted.
    counter: &'static AtomicU64,
}

impl Kept {
    /// Keeps `frame` if all cursors together stay within `cap` bytes
    /// (half the block cache: a mount told to spend little memory on
    /// decoded frames spends little here too; 32 MiB by default); gives it
    /// back otherwise, for the block cache or the one-frame slot.
    pub fn new(frame: Arc<DecodedFrame>, cap: u64) -> Result<Kept, Arc<DecodedFrame>> {
        Kept::counted(frame, &KEPT_BYTES, cap)
    }

    /// As [`Kept::new`], counted in `counter` up to `cap`.
    fn counted(
        frame: Arc<DecodedFrame>,
        counter: &'static AtomicU64,
        cap: u64,
    ) -> Result<Kept, Arc<DecodedFrame>> {
        if reserve(counter, frame.weight(), cap) {
            Ok(Kept { frame, counter })
        } else {
            Err(frame)
        }
    }

    pub fn frame(&self) -> Arc<DecodedFrame> {
        self.frame.clone()
    }

    /// Whether it is the frame starting at `start_id`.
    pub fn holds(&self, start_id: u64) -> bool {
        self.frame.start_id == start_id
    }
}

/// Adds `w` to `kept` unless that passes `cap`; whether it did.
fn reserve(kept: &AtomicU64, w: u64, cap: u64) -> bool {
    kept.fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
        (k + w <= cap).then_some(k + w)
    })
    .is_ok()
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(self.frame.weight(), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_keep_frames_up_to_their_bound_only() {
        let kept = AtomicU64::new(0);
        assert!(reserve(&kept, 10, 25));
        assert!(reserve(&kept, 15, 25));
        // The bound reached: nothing more, not even a byte.
        assert!(!reserve(&kept, 1, 25));
        assert_eq!(kept.load(Ordering::Acquire), 25);
        kept.fetch_sub(10, Ordering::AcqRel);
        assert!(reserve(&kept, 10, 25));
    }

    fn frame(start_id: u64) -> Arc<DecodedFrame> {
        let entries: Vec<&[u8]> = vec![b"abc", b"de"];
        let mut f = crate::format::encode_frame(&entries, None).unwrap();
        f.seal(start_id);
        let (h, p) = f.bytes.split_at(crate::format::HEADER_SIZE);
        let h = FrameHeader::decode(h).unwrap();
        Arc::new(crate::format::decode_batch(&h, p).unwrap())
    }

    #[test]
    fn kept_frames_count_until_dropped_and_never_pass_the_bound() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let w = frame(7).weight();
        let a = Kept::counted(frame(7), &COUNTER, 2 * w).unwrap();
        assert!(a.holds(7) && !a.holds(8));
        let b = Kept::counted(frame(9), &COUNTER, 2 * w).unwrap();
        assert_eq!(COUNTER.load(Ordering::Acquire), 2 * w);
        // Full: the frame is given back, to go to the block cache.
        let c = Kept::counted(frame(11), &COUNTER, 2 * w);
        assert!(c.is_err_and(|f| f.start_id == 11));
        drop(a);
        assert_eq!(COUNTER.load(Ordering::Acquire), w);
        let c = Kept::counted(frame(11), &COUNTER, 2 * w).unwrap();
        drop((b, c));
        assert_eq!(COUNTER.load(Ordering::Acquire), 0);
    }
}
