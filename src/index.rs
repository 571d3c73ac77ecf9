//! id → frame: a sparse index of one segment.
//!
//! It keeps the first frame of every `SPARSE_BYTES` stretch of the segment,
//! so a lookup is a binary search plus a walk over at most that many bytes
//! of headers (one read), and its memory is bounded by the segment's size
//! divided by `SPARSE_BYTES`, whatever the frame sizes. Each point also
//! carries the entry bytes ("payload") before it, which maps byte offsets
//! of the concatenated entries (the mount's `log` file) to frames.

/// Distance in segment bytes between two index points.
pub const SPARSE_BYTES: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// One indexed frame.
pub struct Point {
    /// The id of its first entry.
    pub start_id: u64,
    /// Byte offset of the frame in the segment.
    pub offset: u64,
    /// Entry bytes (without length prefixes) of the segment before it.
    pub payload_before: u64,
}

#[derive(Debug, Default, Clone)]
/// The index of one segment.
pub struct SparseIndex {
    /// Ascending in every field.
    points: Vec<Point>,
    /// Entry bytes of every frame noted.
    payload: u64,
}

impl SparseIndex {
    /// An empty index.
    pub fn new() -> SparseIndex {
        SparseIndex::default()
    }

    /// Records a frame holding `payload` entry bytes; frames must be noted
    /// in file order.
    pub fn note(&mut self, start_id: u64, offset: u64, payload: u64) {
        match self.points.last() {
            Some(p) if offset < p.offset + SPARSE_BYTES => {}
            _ => self.points.push(Point {
                start_id,
                offset,
                payload_before: self.payload,
            }),
        }
        self.payload += payload;
    }

    /// Makes the next frame, about to be noted, a point whatever its
    /// distance from the last one (where valid data resumes after damage:
    /// walks must not cross the damage).
    pub fn point_at(&mut self, start_id: u64, offset: u64) {
        if self.points.last().is_none_or(|p| offset > p.offset) {
            self.points.push(Point {
                start_id,
                offset,
                payload_before: self.payload,
            });
        }
    }

    /// The indexed frame at or before `id`: where a walk for `id` starts.
    pub fn floor(&self, id: u64) -> Option<Point> {
        let i = self.points.partition_point(|p| p.start_id <= id);
        i.checked_sub(1).map(|i| self.points[i])
    }

    /// The indexed frame at or before entry byte `payload`.
    pub fn floor_payload(&self, payload: u64) -> Option<Point> {
        let i = self.points.partition_point(|p| p.payload_before <= payload);
        i.checked_sub(1).map(|i| self.points[i])
    }

    /// Entry bytes of all frames noted.
    pub fn payload(&self) -> u64 {
        self.payload
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point is held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_sparsity() {
        let mut ix = SparseIndex::new();
        // 1000 frames of 100 bytes holding 60 entry bytes, ids 10 apart.
        for i in 0..1000u64 {
            ix.note(i * 10, i * 100, 60);
        }
        assert!(ix.len() <= (1000 * 100 / SPARSE_BYTES as usize) + 1);
        assert_eq!(ix.floor(0).unwrap().offset, 0);
        let p = ix.floor(5555).unwrap();
        assert!(p.start_id <= 5555 && 5555 - p.start_id < SPARSE_BYTES / 100 * 10 + 10);
        assert_eq!(p.offset, p.start_id * 10);
        assert_eq!(p.payload_before, p.start_id * 6);
        assert_eq!(SparseIndex::new().floor(3), None);
        assert_eq!(ix.payload(), 60_000);
        let q = ix.floor_payload(30_000).unwrap();
        assert!(q.payload_before <= 30_000 && 30_000 - q.payload_before < SPARSE_BYTES);
    }
}
