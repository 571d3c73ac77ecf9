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

/// A damaged stretch of a segment: bytes that hold no readable frame,
/// between valid frames (or the end of what is known synced). Its ids
/// answer with a corruption error; readers step over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stretch {
    /// Byte offset where the damage starts (a frame boundary).
    pub offset: u64,
    /// Byte offset where valid frames resume.
    pub end: u64,
    /// The first id it should hold.
    pub start_id: u64,
    /// One past the last id it should hold.
    pub end_id: u64,
    /// Entry bytes of the segment before it.
    pub payload_before: u64,
    /// Entry bytes it stands for in the mount's `log` (reads of them fail):
    /// the damaged frame's own count when its header can be trusted,
    /// else the stretch's length on disk; 0 when it holds no id.
    pub payload: u64,
    /// What is wrong, for the error that names it.
    pub reason: String,
}

impl Stretch {
    /// Whether `id` is one of its ids.
    pub fn holds(&self, id: u64) -> bool {
        id >= self.start_id && id < self.end_id
    }
}

#[derive(Debug, Default, Clone)]
/// The index of one segment.
pub struct SparseIndex {
    /// Ascending in every field.
    points: Vec<Point>,
    /// Entry bytes of every frame noted.
    payload: u64,
    /// Damaged stretches, in file order.
    damage: Vec<Stretch>,
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

    /// Records a damaged stretch after the frames noted so far; the next
    /// frame noted (at `s.end`, id `s.end_id`) becomes a point, so that no
    /// walk crosses the damage.
    pub fn skip_damage(&mut self, mut s: Stretch) {
        s.payload_before = self.payload;
        self.payload += s.payload;
        let point = Point {
            start_id: s.end_id,
            offset: s.end,
            payload_before: self.payload,
        };
        self.damage.push(s);
        if self.points.last().is_none_or(|p| point.offset > p.offset) {
            self.points.push(point);
        }
    }

    /// The damaged stretches, in file order.
    pub fn damage(&self) -> &[Stretch] {
        &self.damage
    }

    /// The damaged stretch holding `id`, or starting at byte `offset`.
    pub fn stretch_of(&self, id: u64, offset: Option<u64>) -> Option<&Stretch> {
        self.damage
            .iter()
            .find(|s| s.holds(id) || Some(s.offset) == offset)
    }

    /// The damaged stretch whose entry bytes hold entry byte `payload`.
    pub fn stretch_at_payload(&self, payload: u64) -> Option<&Stretch> {
        self.damage
            .iter()
            .find(|s| payload >= s.payload_before && payload < s.payload_before + s.payload)
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

    #[test]
    fn damage_is_a_point_and_counts_its_bytes() {
        let mut ix = SparseIndex::new();
        ix.note(0, 0, 10);
        ix.note(1, 50, 10);
        ix.skip_damage(Stretch {
            offset: 100,
            end: 180,
            start_id: 2,
            end_id: 4,
            payload_before: 0,
            payload: 80,
            reason: "crc mismatch".into(),
        });
        ix.note(4, 180, 10);
        assert_eq!(ix.payload(), 110);
        let s = ix.stretch_of(3, None).unwrap();
        assert_eq!((s.payload_before, s.end), (20, 180));
        assert_eq!(ix.stretch_of(9, Some(100)).unwrap().start_id, 2);
        assert!(ix.stretch_of(4, None).is_none());
        assert_eq!(
            ix.floor(4).unwrap().offset,
            180,
            "a walk to id 4 starts past the damage"
        );
        assert_eq!(ix.floor(3).unwrap().offset, 0);
        assert_eq!(ix.floor_payload(100).unwrap().offset, 180);
        assert_eq!(ix.stretch_at_payload(99).unwrap().start_id, 2);
        assert!(ix.stretch_at_payload(100).is_none());
    }
}
