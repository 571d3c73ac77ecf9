//! Unit tests of `frame.rs`.
use super::*;

fn sealed(entries: &[&[u8]], lz4: Option<usize>, start: u64) -> Vec<u8> {
    let mut f = encode_frame(entries, lz4).unwrap();
    f.seal(start);
    f.bytes
}

/// What the mutation run found unchecked: the frames' own accessors,
/// the header's size bound at exactly the bound, the messages.
#[test]
fn accessors_bounds_and_messages() {
    let mut f = encode_frame(&[b"a", b"bc"], None).unwrap();
    assert!(!f.is_empty());
    f.seal(40);
    assert_eq!(f.len(), f.bytes.len() as u64);
    let h = FrameHeader::decode(&f.bytes).unwrap();
    let d = decode_batch(&h, &f.bytes[HEADER_SIZE..]).unwrap();
    assert_eq!((d.len(), d.is_empty(), d.end_id()), (2, false, 42));
    let same = decode_batch(&h, &f.bytes[HEADER_SIZE..]).unwrap();
    assert_eq!(d, same);
    let g = sealed(&[b"a", b"bd"], None, 40);
    let other = decode_batch(&FrameHeader::decode(&g).unwrap(), &g[HEADER_SIZE..]).unwrap();
    assert_ne!(d, other);

    let mut big = h;
    big.disk_size = MAX_BATCH_BYTES as u32;
    assert!(FrameHeader::decode(&big.encode()).is_ok());
    big.disk_size += 1;
    let e = FrameHeader::decode(&big.encode()).unwrap_err();
    assert_eq!(e, HeaderError::TooLarge(MAX_BATCH_BYTES as u64 + 1));
    assert!(e.to_string().contains("exceeds"), "{e}");
    let mut bad = f.bytes.clone();
    bad[0] ^= 1;
    let e = FrameHeader::decode(&bad).unwrap_err();
    assert!(e.to_string().starts_with("bad frame magic"), "{e}");
}

/// A batch of exactly the bound is taken and reads back, also as LZ4
/// (which then decodes to exactly its limit); one byte more is not.
#[test]
fn a_batch_of_exactly_the_bound() {
    assert!(encode_frame(&[], None).unwrap().is_empty());
    let e = vec![0u8; MAX_BATCH_BYTES - 4];
    for lz4 in [None, Some(1)] {
        let b = sealed(&[&e], lz4, 0);
        let h = FrameHeader::decode(&b).unwrap();
        assert_eq!(h.frame_type == FrameType::Lz4, lz4.is_some());
        let d = decode_batch(&h, &b[HEADER_SIZE..]).unwrap();
        assert_eq!(d.entry(0).map(<[u8]>::len), Some(e.len()));
    }
    let over = vec![0u8; MAX_BATCH_BYTES - 3];
    assert!(encode_frame(&[&over], None).is_err());
}

#[test]
fn layout_offsets() {
    assert_eq!(HEADER_SIZE, 32);
    assert_eq!(RAW_SIZE_AT, 25);
}

#[test]
fn raw_round_trip() {
    let b = sealed(&[b"a", b"", b"hello"], None, 7);
    let h = FrameHeader::decode(&b).unwrap();
    assert_eq!(
        (h.start_id, h.entry_count, h.frame_type),
        (7, 3, FrameType::Raw)
    );
    assert_eq!(h.disk_size as usize, b.len() - HEADER_SIZE);
    let d = decode_batch(&h, &b[HEADER_SIZE..]).unwrap();
    assert_eq!(
        d.entries().collect::<Vec<_>>(),
        vec![&b"a"[..], b"", b"hello"]
    );
    assert_eq!(d.entry(9), Some(&b"hello"[..]));
    assert_eq!(d.entry(10), None);
    assert_eq!(d.entry(6), None);
}

#[test]
fn crc_matches_the_documented_coverage() {
    let b = sealed(&[b"xyz"], None, 42);
    let mut h = crc32fast::Hasher::new();
    h.update(&42u64.to_le_bytes());
    h.update(&1u32.to_le_bytes());
    h.update(&[0]);
    h.update(&7u32.to_le_bytes());
    h.update(&b[HEADER_SIZE..]);
    assert_eq!(u32_at(&b, CRC_AT), h.finalize());
}

#[test]
fn lz4_round_trip_and_fallback() {
    let big = vec![b'z'; 5000];
    let b = sealed(&[&big, &big], Some(1024), 0);
    let h = FrameHeader::decode(&b).unwrap();
    assert_eq!(h.frame_type, FrameType::Lz4);
    assert_eq!(h.uncompressed_size, 10008);
    let d = decode_batch(&h, &b[HEADER_SIZE..]).unwrap();
    assert_eq!(d.entry(1).unwrap(), &big[..]);
    // Below the threshold: raw.
    let b = sealed(&[&big[..100]], Some(1024), 0);
    assert_eq!(FrameHeader::decode(&b).unwrap().frame_type, FrameType::Raw);
}

#[test]
fn every_bit_flip_in_a_frame_is_caught() {
    let b = sealed(&[b"one", b"two"], None, 3);
    for i in 0..b.len() {
        for bit in 0..8 {
            let mut c = b.clone();
            c[i] ^= 1 << bit;
            let ok = FrameHeader::decode(&c).ok().and_then(|h| {
                let p = c.get(HEADER_SIZE..HEADER_SIZE + h.disk_size as usize)?;
                decode_batch(&h, p).ok()
            });
            // uncompressed_size and padding are not covered by the crc.
            if (RAW_SIZE_AT..HEADER_SIZE).contains(&i) {
                continue;
            }
            assert!(ok.is_none(), "flip of bit {bit} in byte {i} went unnoticed");
        }
    }
}

#[test]
fn lying_lengths_are_refused_without_allocating() {
    let mut b = sealed(&[b"abcd"], None, 0);
    // Entry length claims 4 GiB.
    b[HEADER_SIZE..HEADER_SIZE + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut h = FrameHeader::decode(&b).unwrap();
    h.crc = h.expected_crc(&b[HEADER_SIZE..]);
    assert!(decode_batch(&h, &b[HEADER_SIZE..]).is_err());
    // Header claims a huge payload.
    let mut hb = h.encode();
    hb[DISK_SIZE_AT..RAW_SIZE_AT].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        FrameHeader::decode(&hb),
        Err(HeaderError::TooLarge(_))
    ));
}

#[test]
fn lz4_bomb_is_bounded() {
    // 200 MiB of zeros compress to well under 1 MiB; the ratio guard or
    // the fixed bound stops the decoder, whichever comes first.
    let zeros = vec![0u8; 300 << 20];
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(&zeros).unwrap();
    let packed = enc.finish().unwrap();
    drop(zeros);
    assert!(lz4_decode(&packed).is_err());
}

/// `gather` serves exactly the entry bytes from any byte on, up to any
/// bound, as walking the entries one by one does (empty entries included,
/// for raw and lz4 frames alike).
#[test]
fn gather_serves_every_span_of_entry_bytes() {
    let entries: [&[u8]; 6] = [b"ab", b"", b"cde", b"f", b"", b"ghij"];
    let all: Vec<u8> = entries.concat();
    for lz4 in [None, Some(0)] {
        let b = sealed(&entries, lz4, 3);
        let h = FrameHeader::decode(&b).unwrap();
        let d = decode_batch(&h, &b[HEADER_SIZE..]).unwrap();
        for skip in 0..=all.len() + 2 {
            for max in 0..=all.len() + 2 {
                for prefix in [0usize, 2] {
                    let mut out = vec![b'_'; prefix];
                    let full = d.gather(skip as u64, &mut out, prefix + max);
                    let want = &all[skip.min(all.len())..];
                    let want = &want[..want.len().min(max)];
                    assert_eq!(&out[prefix..], want, "skip {skip} max {max} lz4 {lz4:?}");
                    assert_eq!(full, out.len() >= prefix + max, "skip {skip} max {max}");
                }
            }
        }
    }
}
