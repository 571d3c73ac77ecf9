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
/// walfs's own sidecar, ignored by ironwal: when ids were acknowledged.
/// Records of [unix time in ms u64][id u64][crc32 of the 16 bytes][0u32]:
/// by that time every id below `id` was acknowledged. Appended at most once
/// a second while appends arrive (never synced: a lost tail costs only
/// precision), so a time names an id to within a second.
pub const TIMES: &str = "walfs.times";
/// The size of a record of [`TIMES`].
pub const TIME_RECORD: usize = 24;

/// walfs's own sidecar, ignored by ironwal: how far the active segment is
/// known to be on disk. Written after an fdatasync of the segment returned
/// (never before), so whatever value of it survives a crash is at or below
/// what was synced. Two slots, written in turn, so that a torn write of one
/// leaves the other:
///
/// ```text
/// slot at 0 and at SYNCED_SLOT:
/// 0   4  magic "WSYN" (0x4E595357 LE)
/// 4   4  sequence number, u32 LE: the higher valid slot wins
/// 8   8  start id of the segment, u64 LE
/// 16  8  bytes of it synced, u64 LE (a frame boundary)
/// 24  8  one past the last id of the frames below it, u64 LE
/// 32  4  crc32 of bytes 0..32
/// ```
pub const SYNCED: &str = "walfs.synced";
/// Offset of the second slot of walfs.synced (and the size of each).
pub const SYNCED_SLOT: u64 = 64;
const SYNCED_MAGIC: u32 = 0x4E59_5357;
const SYNCED_RECORD: usize = 36;

/// What walfs.synced says: every byte of segment `segment` below `len` was
/// synced, and the frames there end at id `end_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedMark {
    /// Start id of the segment it is about.
    pub segment: u64,
    /// Bytes known durable.
    pub len: u64,
    /// One past the last id of the frames below `len`.
    pub end_id: u64,
}
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

/// Why walfs will not make a stream of this valid name, if it will not: a
/// name starting with a dot would be hidden from `ls` (an existing one,
/// made by ironwal, is still opened and shown).
pub fn refuse_new_stream_name(name: &str) -> Option<String> {
    name.starts_with('.').then(|| {
        format!(
            "a stream named {name:?} would be hidden from `ls` (it starts with a dot): choose a name without a leading dot"
        )
    })
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

/// A record of [`TIMES`].
pub fn time_record_encode(ms: u64, id: u64) -> [u8; TIME_RECORD] {
    let mut b = [0u8; TIME_RECORD];
    b[0..8].copy_from_slice(&ms.to_le_bytes());
    b[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Time records (of [`TIMES`], or a bucket's marks) are at least this far
/// apart: the ids of one were acknowledged within this of its time.
pub const TIME_EVERY_MS: u64 = 1000;

/// Milliseconds since the Unix epoch of `t` (0 before 1970): the time of
/// a time record.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The first id not acknowledged before `t_ms` by the time records `recs`
/// ((unix ms, first id), any order), of a log holding ids `first..next`:
/// every id below it was acknowledged before `t_ms`, to within
/// [`TIME_EVERY_MS`] (the ids of record k, up to the next record's id, were
/// acknowledged in [time k, time k + [`TIME_EVERY_MS`])). Ids older than
/// the records count as acknowledged at or after `t_ms`.
pub fn id_at_time(recs: &mut [(u64, u64)], t_ms: u64, first: u64, next: u64) -> u64 {
    recs.sort_by_key(|&(ms, id)| (id, ms));
    let at = match recs.iter().rposition(|&(ms, _)| ms <= t_ms) {
        None => first,
        Some(k) if recs[k].0.saturating_add(TIME_EVERY_MS) <= t_ms => {
            recs.get(k + 1).map_or(next, |r| r.1)
        }
        Some(k) => recs[k].1,
    };
    at.clamp(first, next.max(first))
}

/// The intact records of a times file as (unix ms, id); torn or damaged
/// slots are skipped.
pub fn time_records_decode(b: &[u8]) -> Vec<(u64, u64)> {
    b.chunks_exact(TIME_RECORD)
        .filter(|r| crc32fast::hash(&r[..16]).to_le_bytes() == r[16..20])
        .map(|r| {
            (
                u64::from_le_bytes(r[0..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(r[8..16].try_into().expect("8 bytes")),
            )
        })
        .collect()
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

/// One slot of walfs.synced.
pub fn synced_encode(seq: u32, m: SyncedMark) -> [u8; SYNCED_RECORD] {
    let mut b = [0u8; SYNCED_RECORD];
    b[0..4].copy_from_slice(&SYNCED_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&seq.to_le_bytes());
    b[8..16].copy_from_slice(&m.segment.to_le_bytes());
    b[16..24].copy_from_slice(&m.len.to_le_bytes());
    b[24..32].copy_from_slice(&m.end_id.to_le_bytes());
    let crc = crc32fast::hash(&b[..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The newest intact slot of a walfs.synced file, with its sequence
/// number; torn or damaged slots are ignored.
pub fn synced_decode(b: &[u8]) -> Option<(u32, SyncedMark)> {
    [0, SYNCED_SLOT as usize]
        .into_iter()
        .filter_map(|at| {
            let r = b.get(at..at + SYNCED_RECORD)?;
            let u32_at = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4 bytes"));
            let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
            (u32_at(0) == SYNCED_MAGIC && crc32fast::hash(&r[..32]) == u32_at(32)).then(|| {
                let m = SyncedMark {
                    segment: u64_at(8),
                    len: u64_at(16),
                    end_id: u64_at(24),
                };
                (u32_at(4), m)
            })
        })
        // Sequence numbers wrap: of two slots, the one just after the other
        // in wrapping order is the newer.
        .reduce(|a, b| {
            if b.0.wrapping_sub(a.0) as i32 > 0 {
                b
            } else {
                a
            }
        })
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
    fn synced_marks_survive_a_torn_slot() {
        let m = |len| SyncedMark {
            segment: 40,
            len,
            end_id: 40 + len / 10,
        };
        let mut b = vec![0u8; 2 * SYNCED_SLOT as usize];
        assert_eq!(synced_decode(&b), None);
        b[..SYNCED_RECORD].copy_from_slice(&synced_encode(7, m(100)));
        assert_eq!(synced_decode(&b), Some((7, m(100))));
        let at = SYNCED_SLOT as usize;
        b[at..at + SYNCED_RECORD].copy_from_slice(&synced_encode(8, m(200)));
        assert_eq!(synced_decode(&b), Some((8, m(200))), "the newer slot");
        b[at + 20] ^= 1;
        assert_eq!(
            synced_decode(&b),
            Some((7, m(100))),
            "a torn slot is ignored"
        );
        b[..SYNCED_RECORD].copy_from_slice(&synced_encode(u32::MAX, m(300)));
        b[at..at + SYNCED_RECORD].copy_from_slice(&synced_encode(0, m(400)));
        assert_eq!(
            synced_decode(&b),
            Some((0, m(400))),
            "sequence numbers wrap"
        );
        assert_eq!(synced_decode(&b[..10]), None);
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
