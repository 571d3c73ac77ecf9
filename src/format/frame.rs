//! Frame header, batch encoding, crc and LZ4, encoded and decoded side by
//! side. Every length read from disk is checked against the bytes actually
//! present and against [`MAX_BATCH_BYTES`] before anything is allocated.

use std::io::{Read, Write};
use std::ops::Range;
use std::sync::Arc;

/// The first four bytes of every frame ("LWAL" little-endian).
pub const MAGIC: u32 = 0x4C57_414C;

pub(super) const MAGIC_AT: usize = 0;
pub(super) const CRC_AT: usize = MAGIC_AT + 4;
pub(super) const START_ID_AT: usize = CRC_AT + 4;
pub(super) const COUNT_AT: usize = START_ID_AT + 8;
pub(super) const TYPE_AT: usize = COUNT_AT + 4;
pub(super) const DISK_SIZE_AT: usize = TYPE_AT + 1;
const RAW_SIZE_AT: usize = DISK_SIZE_AT + 4;
const PAD_AT: usize = RAW_SIZE_AT + 4;
/// Bytes of a frame header; the payload starts here.
pub const HEADER_SIZE: usize = PAD_AT + 3;

/// The largest uncompressed batch walfs writes or decodes (256 MiB). It is
/// the fixed bound on what one frame can make the process allocate.
pub const MAX_BATCH_BYTES: usize = 256 << 20;

/// The LZ4 frame format cannot expand data by more than this factor
/// (a block of literals-only sequences); decoding stops past it.
const LZ4_MAX_RATIO: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a frame's payload is stored.
pub enum FrameType {
    /// The batch as is.
    Raw = 0,
    /// The batch in the LZ4 frame format.
    Lz4 = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The fixed 32-byte header of a frame, decoded.
pub struct FrameHeader {
    /// crc32 of the covered header fields and the payload.
    pub crc: u32,
    /// The id of the first entry.
    pub start_id: u64,
    /// Entries in the batch.
    pub entry_count: u32,
    /// How the payload is stored.
    pub frame_type: FrameType,
    /// Payload bytes on disk.
    pub disk_size: u32,
    /// Batch bytes once decoded (not covered by the crc).
    pub uncompressed_size: u32,
}

/// Why 32 bytes are not a frame header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    Short(usize),
    /// Not the frame magic.
    Magic(u32),
    /// An unknown frame type.
    FrameType(u8),
    /// A frame of no entries.
    EmptyFrame,
    /// `disk_size` or `uncompressed_size` beyond the fixed bound.
    TooLarge(u64),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short(n) => {
                write!(f, "truncated frame header ({n} of {HEADER_SIZE} bytes)")
            }
            HeaderError::Magic(m) => write!(f, "bad frame magic {m:#010x}"),
            HeaderError::FrameType(t) => write!(f, "unknown frame type {t}"),
            HeaderError::EmptyFrame => write!(f, "frame with zero entries"),
            HeaderError::TooLarge(n) => write!(
                f,
                "frame length {n} exceeds the {MAX_BATCH_BYTES}-byte bound"
            ),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl FrameHeader {
    /// Parses a header. It checks what the header alone can tell; the
    /// payload length against the file and the crc are the caller's.
    pub fn decode(b: &[u8]) -> Result<FrameHeader, HeaderError> {
        if b.len() < HEADER_SIZE {
            return Err(HeaderError::Short(b.len()));
        }
        let magic = u32_at(b, MAGIC_AT);
        if magic != MAGIC {
            return Err(HeaderError::Magic(magic));
        }
        let frame_type = match b[TYPE_AT] {
            0 => FrameType::Raw,
            1 => FrameType::Lz4,
            t => return Err(HeaderError::FrameType(t)),
        };
        let h = FrameHeader {
            crc: u32_at(b, CRC_AT),
            start_id: u64_at(b, START_ID_AT),
            entry_count: u32_at(b, COUNT_AT),
            frame_type,
            disk_size: u32_at(b, DISK_SIZE_AT),
            uncompressed_size: u32_at(b, RAW_SIZE_AT),
        };
        if h.entry_count == 0 {
            return Err(HeaderError::EmptyFrame);
        }
        if h.disk_size as usize > MAX_BATCH_BYTES {
            return Err(HeaderError::TooLarge(h.disk_size as u64));
        }
        Ok(h)
    }

    /// The 32 bytes of this header.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[MAGIC_AT..CRC_AT].copy_from_slice(&MAGIC.to_le_bytes());
        b[CRC_AT..START_ID_AT].copy_from_slice(&self.crc.to_le_bytes());
        b[START_ID_AT..COUNT_AT].copy_from_slice(&self.start_id.to_le_bytes());
        b[COUNT_AT..TYPE_AT].copy_from_slice(&self.entry_count.to_le_bytes());
        b[TYPE_AT] = self.frame_type as u8;
        b[DISK_SIZE_AT..RAW_SIZE_AT].copy_from_slice(&self.disk_size.to_le_bytes());
        b[RAW_SIZE_AT..PAD_AT].copy_from_slice(&self.uncompressed_size.to_le_bytes());
        b
    }

    /// Header plus payload bytes.
    pub fn frame_len(&self) -> u64 {
        HEADER_SIZE as u64 + self.disk_size as u64
    }

    /// One past the last id of the frame.
    pub fn end_id(&self) -> u64 {
        self.start_id.saturating_add(self.entry_count as u64)
    }

    /// Entry bytes the frame holds, without their length prefixes (for LZ4
    /// frames as the header claims; decoding checks it).
    pub fn payload_len(&self) -> u64 {
        let raw = match self.frame_type {
            FrameType::Raw => self.disk_size,
            FrameType::Lz4 => self.uncompressed_size,
        };
        (raw as u64).saturating_sub(4 * self.entry_count as u64)
    }

    /// Whether the frame holds `id`.
    pub fn contains(&self, id: u64) -> bool {
        id >= self.start_id && id < self.end_id()
    }

    /// The crc this header should carry for `payload`.
    pub fn expected_crc(&self, payload: &[u8]) -> u32 {
        let mut h = self.crc_hasher();
        h.update(payload);
        h.finalize()
    }

    /// A hasher over the header fields the crc covers, for a payload fed to
    /// it piece by piece; `finalize` gives the crc this header should carry.
    pub fn crc_hasher(&self) -> crc32fast::Hasher {
        crc_prefix(
            self.start_id,
            self.entry_count,
            self.frame_type,
            self.disk_size,
        )
    }
}

pub(super) fn crc_prefix(
    start_id: u64,
    count: u32,
    ft: FrameType,
    disk_size: u32,
) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(&start_id.to_le_bytes());
    h.update(&count.to_le_bytes());
    h.update(&[ft as u8]);
    h.update(&disk_size.to_le_bytes());
    h
}

/// A frame encoded up to its id: the payload is final, its crc computed,
/// and only the start id (known under the stream lock) is left to fill in.
pub struct EncodedFrame {
    /// Header bytes followed by the payload.
    pub bytes: Vec<u8>,
    /// Entries in the frame.
    pub entry_count: u32,
    /// Entry bytes, without length prefixes.
    pub payload: u64,
    frame_type: FrameType,
    payload_crc: crc32fast::Hasher,
}

impl EncodedFrame {
    /// Stamps the start id and the crc into the header. Cheap: the payload's
    /// crc was computed before and is combined here.
    pub fn seal(&mut self, start_id: u64) {
        let disk_size = (self.bytes.len() - HEADER_SIZE) as u32;
        let mut crc = crc_prefix(start_id, self.entry_count, self.frame_type, disk_size);
        crc.combine(&self.payload_crc);
        self.bytes[CRC_AT..START_ID_AT].copy_from_slice(&crc.finalize().to_le_bytes());
        self.bytes[START_ID_AT..COUNT_AT].copy_from_slice(&start_id.to_le_bytes());
    }

    /// Bytes of the whole frame.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the frame has no bytes.
    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }
}

/// Encodes a batch as one frame (start id left at 0 until [`EncodedFrame::seal`]).
/// `lz4_min`: Some(n) compresses batches of at least n bytes when that shrinks them.
pub fn encode_frame(entries: &[&[u8]], lz4_min: Option<usize>) -> Result<EncodedFrame, u64> {
    let raw_len: u64 = entries.iter().map(|e| 4 + e.len() as u64).sum();
    if raw_len > MAX_BATCH_BYTES as u64 || entries.iter().any(|e| e.len() > u32::MAX as usize) {
        return Err(raw_len);
    }
    let raw_len = raw_len as usize;
    let mut bytes = crate::bufpool::take_empty(HEADER_SIZE + raw_len);
    bytes.resize(HEADER_SIZE, 0);
    for e in entries {
        bytes.extend_from_slice(&(e.len() as u32).to_le_bytes());
        bytes.extend_from_slice(e);
    }
    let mut frame_type = FrameType::Raw;
    if let Some(min) = lz4_min {
        if raw_len >= min {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(raw_len / 2 + 64));
            // Writing into a Vec cannot fail.
            enc.write_all(&bytes[HEADER_SIZE..])
                .expect("lz4 into memory");
            let packed = enc.finish().expect("lz4 into memory");
            if packed.len() < raw_len {
                bytes.truncate(HEADER_SIZE);
                bytes.extend_from_slice(&packed);
                frame_type = FrameType::Lz4;
            }
        }
    }
    let header = FrameHeader {
        crc: 0,
        start_id: 0,
        entry_count: entries.len() as u32,
        frame_type,
        disk_size: (bytes.len() - HEADER_SIZE) as u32,
        uncompressed_size: raw_len as u32,
    };
    bytes[..HEADER_SIZE].copy_from_slice(&header.encode());
    let mut payload_crc = crc32fast::Hasher::new();
    payload_crc.update(&bytes[HEADER_SIZE..]);
    Ok(EncodedFrame {
        bytes,
        entry_count: entries.len() as u32,
        payload: (raw_len - 4 * entries.len()) as u64,
        frame_type,
        payload_crc,
    })
}

/// A decoded batch: the uncompressed payload and where each entry sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    /// The id of the first entry.
    pub start_id: u64,
    data: Held,
    spans: Vec<Range<u32>>,
}

/// A frame's payload: its own buffer, or its part of a read buffer that
/// it keeps alive (a raw frame read whole is not copied again).
#[derive(Debug, Clone)]
struct Held {
    buf: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl Held {
    fn owned(v: Vec<u8>) -> Held {
        Held {
            len: v.len(),
            buf: Arc::new(v),
            start: 0,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        crate::bufpool::give_unshared(&mut self.buf);
    }
}

impl std::ops::Deref for Held {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        **self == **other
    }
}

impl Eq for Held {}

impl DecodedFrame {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// One past the last id held.
    pub fn end_id(&self) -> u64 {
        self.start_id + self.spans.len() as u64
    }

    /// The bytes of entry `id`, if this frame holds it.
    pub fn entry(&self, id: u64) -> Option<&[u8]> {
        let i = id.checked_sub(self.start_id)?;
        let span = self.spans.get(usize::try_from(i).ok()?)?;
        Some(&self.data[span.start as usize..span.end as usize])
    }

    /// Entries in id order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .map(|s| &self.data[s.start as usize..s.end as usize])
    }

    /// Appends to `out` the frame's entry bytes (its entries concatenated)
    /// from entry byte `skip` on, until `out` holds `max` bytes; returns
    /// whether it did. Entry `i` sits after `i + 1` length prefixes, so
    /// the first one wanted is found by bisection, not by a walk.
    pub fn gather(&self, skip: u64, out: &mut Vec<u8>, max: usize) -> bool {
        if self.spans.is_empty() {
            return out.len() >= max;
        }
        let data: &[u8] = &self.data;
        let before = |i: usize| u64::from(self.spans[i].start) - 4 * (i as u64 + 1);
        // The last entry starting at or before `skip`.
        let (mut lo, mut hi) = (0, self.spans.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if before(mid) <= skip {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        // Where the first entry is cut (its bytes before `skip`).
        let mut cut = usize::try_from(skip - before(lo)).unwrap_or(usize::MAX);
        out.reserve(max.saturating_sub(out.len()).min(data.len()));
        for s in &self.spans[lo..] {
            let (start, end) = (s.start as usize, s.end as usize);
            let e = &data[start.saturating_add(cut).min(end)..end];
            cut = 0;
            let room = max.saturating_sub(out.len());
            if e.len() >= room {
                out.extend_from_slice(&e[..room]);
                return true;
            }
            out.extend_from_slice(e);
        }
        false
    }

    /// The buffer holding the payload (tests check what is shared).
    #[cfg(test)]
    pub(crate) fn held_buffer(&self) -> &Arc<Vec<u8>> {
        &self.data.buf
    }

    /// Bytes held, for cache accounting (a shared read buffer counts
    /// whole: the frame keeps all of it alive).
    pub fn weight(&self) -> u64 {
        (self.data.buf.len() + self.spans.len() * 8 + 64) as u64
    }
}

/// Checks the crc of `payload` against `h` and decodes it. The caller has
/// already ensured `payload.len() == h.disk_size`.
pub fn decode_batch(h: &FrameHeader, payload: &[u8]) -> Result<DecodedFrame, String> {
    debug_assert_eq!(payload.len(), h.disk_size as usize);
    let crc = h.expected_crc(payload);
    if crc != h.crc {
        return Err(format!(
            "crc mismatch: header says {:#010x}, payload has {crc:#010x}",
            h.crc
        ));
    }
    let data = match h.frame_type {
        FrameType::Raw => payload.to_vec(),
        FrameType::Lz4 => lz4_decode(payload)?,
    };
    let spans = split_entries(&data, h.entry_count)?;
    Ok(DecodedFrame {
        start_id: h.start_id,
        data: Held::owned(data),
        spans,
    })
}

/// As [`decode_batch`] for the payload at `range` of `buf`; a raw frame
/// keeps its part of `buf` instead of a copy. `crc_checked_before`: this
/// raw frame's crc was checked earlier while open, and its bytes cannot
/// have changed since (a sealed segment): only its structure is checked.
pub fn decode_shared(
    h: &FrameHeader,
    buf: &Arc<Vec<u8>>,
    range: Range<usize>,
    crc_checked_before: bool,
) -> Result<DecodedFrame, String> {
    if h.frame_type != FrameType::Raw {
        return decode_batch(h, &buf[range]);
    }
    let spans = if crc_checked_before {
        split_entries(&buf[range.clone()], h.entry_count)?
    } else {
        raw_spans(h, &buf[range.clone()])?
    };
    Ok(DecodedFrame {
        start_id: h.start_id,
        data: Held {
            buf: buf.clone(),
            start: range.start,
            len: range.len(),
        },
        spans,
    })
}

/// Checks a raw frame's crc and splits its payload into entries in place.
pub fn raw_spans(h: &FrameHeader, payload: &[u8]) -> Result<Vec<Range<u32>>, String> {
    debug_assert_eq!(h.frame_type, FrameType::Raw);
    let crc = h.expected_crc(payload);
    if crc != h.crc {
        return Err(format!(
            "crc mismatch: header says {:#010x}, payload has {crc:#010x}",
            h.crc
        ));
    }
    split_entries(payload, h.entry_count)
}

/// Decodes an LZ4 frame without trusting any length it or the header
/// claims: output stops at the format's maximum ratio and at the fixed bound.
fn lz4_decode(payload: &[u8]) -> Result<Vec<u8>, String> {
    let limit = payload
        .len()
        .saturating_mul(LZ4_MAX_RATIO)
        .saturating_add(64)
        .min(MAX_BATCH_BYTES);
    let mut out = Vec::with_capacity(payload.len().saturating_mul(2).min(limit));
    let dec = lz4_flex::frame::FrameDecoder::new(payload);
    let n = dec
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("lz4 payload does not decode: {e}"))?;
    if n > limit {
        return Err(format!("lz4 payload expands past {limit} bytes"));
    }
    Ok(out)
}

fn split_entries(data: &[u8], count: u32) -> Result<Vec<Range<u32>>, String> {
    // Every entry takes at least 4 bytes, which bounds the allocation.
    let mut spans = Vec::with_capacity((count as usize).min(data.len() / 4));
    let mut at = 0usize;
    while at < data.len() {
        if spans.len() == count as usize {
            return Err(format!(
                "payload holds more than the {count} entries the header says"
            ));
        }
        let Some(len_bytes) = data.get(at..at + 4) else {
            return Err(format!("entry length cut off at payload byte {at}"));
        };
        let len = u32_at(len_bytes, 0) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                format!("entry of {len} bytes at payload byte {at} runs past the payload")
            })?;
        spans.push(start as u32..end as u32);
        at = end;
    }
    if spans.len() != count as usize {
        return Err(format!(
            "payload holds {} entries, header says {count}",
            spans.len()
        ));
    }
    Ok(spans)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
