//! The only code that knows the bytes of the on-disk format (ironwal 0.6).
//!
//! A segment is a sequence of frames; a frame is one atomic batch:
//!
//! ```text
//! offset size field
//! 0      4    magic 0x4C57414C, u32 LE
//! 4      4    crc32 (IEEE) of: start_id, entry_count, frame_type, disk_size,
//!             then the payload (uncompressed_size is not covered)
//! 8      8    start_id, u64 LE: id of the first entry
//! 16     4    entry_count, u32 LE
//! 20     1    frame_type: 0 raw, 1 LZ4 frame format
//! 21     4    disk_size, u32 LE: payload bytes on disk
//! 25     4    uncompressed_size, u32 LE
//! 29     3    zero padding
//! 32     ...  payload
//! ```
//!
//! The uncompressed payload is, for each entry, `[len u32 LE][bytes]`.

pub mod crc;
pub mod damage;
pub mod frame;
pub mod names;

pub use frame::{
    decode_batch, decode_shared, encode_frame, DecodedFrame, EncodedFrame, FrameHeader, FrameType,
    HeaderError, HEADER_SIZE, MAGIC, MAX_BATCH_BYTES,
};
pub use names::{
    head_state_decode, head_state_encode, id_at_time, parse_segment_name, payload_record_encode,
    payload_records_decode, refuse_new_stream_name, segment_name, segments_idx_decode,
    segments_idx_encode, synced_decode, synced_encode, time_record_encode, time_records_decode,
    unix_ms, validate_stream_name, SyncedMark, DELETE_MARKER_SUFFIX, HEAD_STATE, PAYLOADS,
    PAYLOAD_RECORD, SEGMENTS_IDX, SYNCED, SYNCED_SLOT, TIMES, TIME_EVERY_MS, TIME_RECORD,
};
