//! id → frame: a sparse index of one segment.
//!
//! It keeps the first frame of every `SPARSE_BYTES` stretch of the segment,
//! so a lookup is a binary search plus a walk over at most that many bytes
//! of headers (one read), and its memory is bounded by the segment's size
//! divided by `SPARSE_BYTES`, whatever the frame sizes.

/// Distance in segment bytes between two index points.
pub const SPARSE_BYTES: u64 = 4096;

#[derive(Debug, Default, Clone)]
pub struct SparseIndex {
    /// (start id, byte offset) of indexed frames, both ascending.
    points: Vec<(u64, u64)>,
}

impl SparseIndex {
    pub fn new() -> SparseIndex {
        SparseIndex::default()
    }

    /// Records a frame; frames must be noted in file order.
    pub fn note(&mut self, start_id: u64, offset: u64) {
        match self.points.last() {
            Some(&(_, last)) if offset < last + SPARSE_BYTES => {}
            _ => self.points.push((start_id, offset)),
        }
    }

    /// Records a frame as a point whatever its distance from the last one
    /// (where valid data resumes after damage: walks must not cross it).
    pub fn note_forced(&mut self, start_id: u64, offset: u64) {
        if self.points.last().is_none_or(|&(_, last)| offset > last) {
            self.points.push((start_id, offset));
        }
    }

    /// The indexed frame at or before `id`: where a walk for `id` starts.
    pub fn floor(&self, id: u64) -> Option<(u64, u64)> {
        let i = self.points.partition_point(|&(start, _)| start <= id);
        i.checked_sub(1).map(|i| self.points[i])
    }

    /// The first indexed frame after offset `offset`, if any: where a walk
    /// from `offset` can stop reading.
    pub fn next_offset_after(&self, offset: u64) -> Option<u64> {
        let i = self.points.partition_point(|&(_, o)| o <= offset);
        self.points.get(i).map(|&(_, o)| o)
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

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
        // 1000 frames of 100 bytes, ids 10 apart.
        for i in 0..1000u64 {
            ix.note(i * 10, i * 100);
        }
        assert!(ix.len() <= (1000 * 100 / SPARSE_BYTES as usize) + 1);
        assert_eq!(ix.floor(0), Some((0, 0)));
        let (start, off) = ix.floor(5555).unwrap();
        assert!(start <= 5555 && 5555 - start < SPARSE_BYTES / 100 * 10 + 10);
        assert_eq!(off, start * 10);
        assert_eq!(SparseIndex::new().floor(3), None);
        assert_eq!(ix.next_offset_after(0), Some(4100));
    }
}
