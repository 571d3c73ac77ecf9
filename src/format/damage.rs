//! Bit rot or a lost write? What the bytes of one damaged frame can say.
//!
//! A crash loses writes, whole or in part, and a byte a crash lost reads
//! back as zero: a segment only ever grows into fresh bytes (walfs never
//! rewrites a byte of a segment it has synced). So after a crash every byte
//! of a damaged frame is either what was written or zero. A byte that is
//! neither can only be bit rot (or a hand). The bytes whose value a frame
//! fixes (its magic, ids and lengths, once the frame's place is known) are
//! checked directly; a payload byte is found through the crc
//! ([`super::crc::locate_byte_error`]) when it is the one damaged byte and
//! differs by a single bit. Anything else stays unexplained, which the
//! caller takes for what a crash leaves.

use super::crc::locate_byte_error;
use super::frame::{
    crc_prefix, FrameType, COUNT_AT, CRC_AT, DISK_SIZE_AT, HEADER_SIZE, MAGIC, MAGIC_AT,
    START_ID_AT, TYPE_AT,
};

/// Bytes of the crc's message before the payload: start id, count, type,
/// disk size.
const PREFIX: usize = 8 + 4 + 1 + 4;
/// Where the type byte sits in the crc's message.
const TYPE_IN_MESSAGE: usize = 12;

/// Evidence of bit rot in `b`, the bytes of a damaged stretch that starts
/// with a frame holding ids from `start_id`: up to the next valid frame,
/// whose first id is `ids_until`, or to the end of the segment (None). The
/// stretch is one frame, or the first of several (a crash can lose several
/// writes); the evidence is a byte a crash cannot have left, described.
/// None when the damage may be a crash's, or cannot be located.
pub fn rot_evidence(b: &[u8], start_id: u64, ids_until: Option<u64>) -> Option<String> {
    if b.len() < HEADER_SIZE {
        return None;
    }
    // Bytes whose value every frame here fixes: a crash left each of them
    // as it was or zero.
    let fixed: [(usize, &[u8], &str); 2] = [
        (MAGIC_AT, &MAGIC.to_le_bytes(), "magic"),
        (START_ID_AT, &start_id.to_le_bytes(), "start id"),
    ];
    if let Some(e) = changed(b, &fixed) {
        return Some(e);
    }
    let frame_type = match b[TYPE_AT] {
        0 => FrameType::Raw,
        1 => FrameType::Lz4,
        t => return Some(format!("frame type byte {t:#04x}")),
    };
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let (count, disk) = (u32_at(COUNT_AT), u32_at(DISK_SIZE_AT));
    // What the frame may be: one frame up to the next valid one, or the
    // frame its header describes (the first of several). Zeroing bytes of
    // a little-endian length only makes it smaller: a length beyond the
    // stretch is no crash's.
    let mut shapes: Vec<(u32, u32)> = Vec::with_capacity(2);
    if let Some(end) = ids_until {
        let (ids, room) = (end.saturating_sub(start_id), (b.len() - HEADER_SIZE) as u64);
        if count as u64 > ids {
            return Some(format!(
                "the entry count {count} is more than the {ids} ids before the next valid frame"
            ));
        }
        if disk as u64 > room {
            return Some(format!(
                "the payload length {disk} runs past the next valid frame ({room} bytes away)"
            ));
        }
        if let (Ok(ids), Ok(room)) = (u32::try_from(ids), u32::try_from(room)) {
            shapes.push((ids, room));
        }
    }
    if count >= 1 && HEADER_SIZE + disk as usize <= b.len() && !shapes.contains(&(count, disk)) {
        shapes.push((count, disk));
    }
    let stored = u32_at(CRC_AT);
    for (n, len) in shapes {
        let payload = &b[HEADER_SIZE..HEADER_SIZE + len as usize];
        let mut h = crc_prefix(start_id, n, frame_type, len);
        h.update(payload);
        let syndrome = h.finalize() ^ stored;
        if syndrome == 0 {
            // This is the frame: its count and length fields, where they
            // say otherwise, were changed.
            let shape: [(usize, &[u8], &str); 2] = [
                (COUNT_AT, &n.to_le_bytes(), "entry count"),
                (DISK_SIZE_AT, &len.to_le_bytes(), "payload length"),
            ];
            return changed(b, &shape);
        }
        if (n, len) != (count, disk) {
            // The header disagrees with this shape and the crc too: more
            // than one change, which cannot be located.
            continue;
        }
        // One flipped bit in the stored crc itself.
        if syndrome.count_ones() == 1 {
            let lane = syndrome.trailing_zeros() as usize / 8;
            if b[CRC_AT + lane] != 0 {
                return Some(format!(
                    "one bit of the stored crc (byte {}) is flipped",
                    CRC_AT + lane
                ));
            }
        }
        // One flipped bit in the type byte or the payload.
        let located = locate_byte_error(PREFIX + len as usize, TYPE_IN_MESSAGE, syndrome);
        let at = match located {
            Some((TYPE_IN_MESSAGE, x)) => Some((TYPE_AT, x)),
            Some((j, x)) if j >= PREFIX => Some((HEADER_SIZE + j - PREFIX, x)),
            _ => None,
        };
        if let Some((at, x)) = at.filter(|&(at, x)| x.count_ones() == 1 && b[at] != 0) {
            return Some(format!(
                "one bit of byte {at} of the frame is flipped ({:#04x}, {:#04x} belongs)",
                b[at],
                b[at] ^ x
            ));
        }
    }
    None
}

/// The first byte of `b` at one of `known`'s places that is neither the
/// value it must have nor zero, described.
fn changed(b: &[u8], known: &[(usize, &[u8], &str)]) -> Option<String> {
    for &(at, want, field) in known {
        for (i, &w) in want.iter().enumerate() {
            let got = b[at + i];
            if got != w && got != 0 {
                return Some(format!(
                    "byte {} of the header ({field}) is {got:#04x} where {w:#04x} belongs",
                    at + i
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode_frame;

    /// A stretch shorter than a header holds no evidence (and is never
    /// read past its end).
    #[test]
    fn a_short_stretch_has_no_evidence() {
        for n in 0..HEADER_SIZE {
            assert_eq!(rot_evidence(&frame(3)[..n], 3, None), None);
        }
        // A frame cut inside its payload (a torn tail) holds none either.
        let f = frame(3);
        for n in HEADER_SIZE..f.len() {
            assert_eq!(rot_evidence(&f[..n], 3, None), None, "cut at {n}");
        }
        // A header alone is read: a flipped bit of its magic is rot.
        let mut h = frame(3)[..HEADER_SIZE].to_vec();
        h[1] ^= 0x10;
        assert!(rot_evidence(&h, 3, None).is_some());
    }

    /// A stored crc byte of one set bit, zeroed: a crash's zeroing as much
    /// as a flipped bit, so no evidence (the byte checked is the crc's own,
    /// not one of the magic's before it).
    #[test]
    fn a_crc_byte_zeroed_is_no_evidence() {
        let mut found = 0;
        for start in 0..2000u64 {
            let f = frame(start);
            for lane in 1..4 {
                if f[CRC_AT + lane].count_ones() == 1 {
                    let mut z = f.clone();
                    z[CRC_AT + lane] = 0;
                    assert_eq!(
                        rot_evidence(&z, start, None),
                        None,
                        "start {start}, lane {lane}"
                    );
                    found += 1;
                }
            }
        }
        assert!(found > 10, "{found} cases");
    }

    /// A stored crc that matches the frame but for one bit of its length
    /// field locates the error in that field, which the shapes handle: it
    /// is not reported as a flipped byte elsewhere (here the header's raw
    /// size, non-zero in a frame of 16 MiB).
    #[test]
    fn an_error_located_in_the_length_field_names_no_other_byte() {
        let e = vec![0u8; 16 << 20];
        let mut f = encode_frame(&[&e], Some(1)).unwrap();
        f.seal(9);
        let mut b = f.bytes;
        let h = crate::format::FrameHeader::decode(&b).unwrap();
        assert_eq!(h.frame_type, FrameType::Lz4);
        assert_ne!(b[28], 0);
        let mut c = crc_prefix(9, h.entry_count, h.frame_type, h.disk_size ^ 1);
        c.update(&b[HEADER_SIZE..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&c.finalize().to_le_bytes());
        let said = rot_evidence(&b, 9, None);
        assert!(
            said.as_deref().is_none_or(|m| !m.contains("byte 28")),
            "{said:?}"
        );
    }

    fn frame(start: u64) -> Vec<u8> {
        let e: Vec<&[u8]> = vec![b"entry one, some text", b"\x01\x00\x02"];
        let mut f = encode_frame(&e, None).unwrap();
        f.seal(start);
        f.bytes
    }

    #[test]
    fn a_flipped_bit_is_rot_wherever_it_leaves_a_non_zero_byte() {
        let good = frame(40);
        assert_eq!(
            rot_evidence(&good, 40, Some(42)),
            None,
            "nothing to explain"
        );
        let mut found = 0;
        for at in 0..good.len() {
            // uncompressed size and padding: outside the crc, unused.
            if (25..32).contains(&at) {
                continue;
            }
            for bit in 0..8 {
                let mut b = good.clone();
                b[at] ^= 1 << bit;
                let r = rot_evidence(&b, 40, Some(42));
                // The last frame of a segment: its own header says where it ends.
                let tail = rot_evidence(&b, 40, None);
                if b[at] != 0 {
                    assert!(r.is_some(), "byte {at} bit {bit}");
                    found += 1;
                    if !(16..25).contains(&at) {
                        // (A flipped count or length of the last frame
                        // moves its end: not always located.)
                        assert!(tail.is_some(), "tail: byte {at} bit {bit}");
                    }
                } else {
                    assert_eq!(r, None, "byte {at} bit {bit}: a lost byte looks the same");
                    assert_eq!(tail, None, "tail: byte {at} bit {bit}");
                }
            }
        }
        assert!(found > 8 * good.len() / 2);
    }

    #[test]
    fn a_stretch_of_several_frames_a_crash_damaged_is_not_rot() {
        // Three frames of 1, 2 and 1 entries, the stretch up to a fourth;
        // a crash lost bytes of the first and of the second.
        let mut f = Vec::new();
        let mut id = 10;
        for n in [1usize, 2, 1] {
            let e: Vec<&[u8]> = vec![b"payload bytes of some length"; n];
            let mut fr = encode_frame(&e, None).unwrap();
            fr.seal(id);
            id += n as u64;
            f.extend_from_slice(&fr.bytes);
        }
        for (a, c) in [(40usize, 70usize), (34, 100), (5, 90), (45, 130)] {
            let mut b = f.clone();
            b[a] = 0;
            b[c..c + 3].fill(0);
            assert_eq!(rot_evidence(&b, 10, Some(14)), None, "{a} {c}");
        }
        // A flipped bit in the first frame's payload is still rot.
        let mut b = f.clone();
        b[40] ^= 0x10;
        b[100..103].fill(0);
        assert!(rot_evidence(&b, 10, Some(14)).is_some());
    }

    #[test]
    fn what_a_crash_leaves_is_never_taken_for_rot() {
        let good = frame(7);
        // Every run of zeroed bytes (a lost piece of a write).
        for from in 0..good.len() {
            for len in 1..=good.len() - from {
                let mut b = good.clone();
                b[from..from + len].fill(0);
                assert_eq!(rot_evidence(&b, 7, Some(9)), None, "{from}+{len}");
                assert_eq!(rot_evidence(&b, 7, None), None, "tail {from}+{len}");
            }
        }
        // Two lost pieces.
        for a in (0..good.len()).step_by(3) {
            for c in (a + 2..good.len()).step_by(5) {
                let mut b = good.clone();
                b[a] = 0;
                b[c..(c + 4).min(good.len())].fill(0);
                assert_eq!(rot_evidence(&b, 7, Some(9)), None, "{a} {c}");
            }
        }
    }
}
