//! File names and the two small metadata files of a stream directory.
//!
//! ```text
//! <stream>/segments.idx   start id of every segment, u64 LE each, ascending
//! <stream>/head.state     [version u8 = 1][name_len u8][active segment file name]
//! <stream>/NNNNNNNNNNNNNNNNNNNN.wal   a segment, named by its first id (20 digits)
//! ```

/// The file listing the start id of every segment.
pub const SEGMENTS_IDX: &str = "segments.idx";
/// The file naming the active segment.
pub const HEAD_STATE: &str = "head.state";
const HEAD_STATE_VERSION: u8 = 1;
/// A stream directory renamed to `<name>#deleted` is being deleted; `#` is
/// outside the stream-name alphabet, so it never collides with a stream.
pub const DELETE_MARKER_SUFFIX: &str = "#deleted";
const SEGMENT_EXT: &str = ".wal";
/// walfs's own sidecar, ignored by ironwal: for every segment walfs sealed,
/// its length and its entry bytes, so the size of the mount's `log` needs no
/// scan. A hint: trusted only while the segment still has that length.
pub const PAYLOADS: &str = "walfs.payloads";
/// [start id u64][segment length u64][entry bytes u64][crc32 of the 24 bytes].
pub const PAYLOAD_RECORD: usize = 28;
const SEGMENT_DIGITS: usize = 20;

/// The file name of the segment starting at `start_id`.
pub fn segment_name(start_id: u64) -> String {
    format!("{start_id:0SEGMENT_DIGITS$}{SEGMENT_EXT}")
}

/// The start id of a segment file name, in canonical form only (exactly 20
/// digits): `12.wal` or `+0000000000000000001.wal` are not segments.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` can be a stream (its directory's name).
pub fn validate_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The bytes of segments.idx for these start ids.
pub fn segments_idx_encode(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// None when the file is not a whole number of ascending ids.
pub fn segments_idx_decode(b: &[u8]) -> Option<Vec<u64>> {
    if b.len() % 8 != 0 {
        return None;
    }
    let ids: Vec<u64> = b
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunk of 8")))
        .collect();
    ids.windows(2).all(|w| w[0] < w[1]).then_some(ids)
}

/// The bytes of head.state naming the active segment.
pub fn head_state_encode(active_start_id: u64) -> Vec<u8> {
    let name = segment_name(active_start_id);
    let mut b = vec![HEAD_STATE_VERSION, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b
}

/// The active segment's start id named by head.state, if it is well formed.
pub fn head_state_decode(b: &[u8]) -> Option<u64> {
    let (&version, rest) = b.split_first()?;
    let (&len, name) = rest.split_first()?;
    if version != HEAD_STATE_VERSION || name.len() != len as usize {
        return None;
    }
    parse_segment_name(std::str::from_utf8(name).ok()?)
}

/// One record of walfs.payloads.
pub fn payload_record_encode(start: u64, len: u64, payload: u64) -> [u8; PAYLOAD_RECORD] {
    let mut b = [0u8; PAYLOAD_RECORD];
    b[0..8].copy_from_slice(&start.to_le_bytes());
    b[8..16].copy_from_slice(&len.to_le_bytes());
    b[16..24].copy_from_slice(&payload.to_le_bytes());
    let crc = crc32fast::hash(&b[..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The intact records of a payloads file as (start, length, entry bytes);
/// torn or damaged slots are skipped.
pub fn payload_records_decode(b: &[u8]) -> Vec<(u64, u64, u64)> {
    b.chunks_exact(PAYLOAD_RECORD)
        .filter(|r| crc32fast::hash(&r[..24]).to_le_bytes() == r[24..28])
        .map(|r| {
            let u = |at: usize| u64::from_le_bytes(r[at..at + 8].try_into().expect("8 bytes"));
            (u(0), u(8), u(16))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_are_canonical() {
        assert_eq!(segment_name(4096), "00000000000000004096.wal");
        assert_eq!(parse_segment_name("00000000000000004096.wal"), Some(4096));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "4096.wal",
            "+0000000000000004096.wal",
            "00000000000000004096.wa",
            "0000000000000000409a.wal",
            "99999999999999999999.wal",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("orders-2024.v1_x"));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a#deleted",
            &"x".repeat(256),
        ] {
            assert!(!validate_stream_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn payload_records_skip_damage() {
        let mut b = payload_record_encode(0, 100, 60).to_vec();
        b.extend_from_slice(&payload_record_encode(5, 200, 120)[..10]); // torn
        b.resize(2 * PAYLOAD_RECORD, 0);
        b.extend_from_slice(&payload_record_encode(9, 300, 180));
        assert_eq!(
            payload_records_decode(&b),
            vec![(0, 100, 60), (9, 300, 180)]
        );
    }

    #[test]
    fn metadata_round_trips() {
        let b = head_state_encode(4096);
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 24);
        assert_eq!(head_state_decode(&b), Some(4096));
        assert_eq!(head_state_decode(&b[..10]), None);
        assert_eq!(
            segments_idx_decode(&segments_idx_encode(&[0, 10, 20])),
            Some(vec![0, 10, 20])
        );
        assert_eq!(segments_idx_decode(&[0; 7]), None);
        assert_eq!(segments_idx_decode(&segments_idx_encode(&[10, 0])), None);
    }
}
