//! Names the kernel or a directory listing can send: the parsers never
//! panic and accept only canonical forms.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(id) = walfs::mount::names::parse_id(data) {
        assert_eq!(id.to_string().as_bytes(), data, "non-canonical id accepted");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(start) = walfs::format::parse_segment_name(s) {
            assert_eq!(walfs::format::segment_name(start), s);
        }
        let _ = walfs::format::validate_stream_name(s);
        let _ = walfs::format::head_state_decode(data);
    }
    let _ = walfs::format::segments_idx_decode(data);
    if let Ok(h) = walfs::format::FrameHeader::decode(data) {
        if let Some(payload) = data.get(32..32 + h.disk_size as usize) {
            let _ = walfs::format::decode_batch(&h, payload);
        }
    }
});
