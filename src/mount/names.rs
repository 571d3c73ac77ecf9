//! Parsing of names the kernel sends: strict, canonical, never panicking.

/// A decimal id in canonical form: no sign, no leading zero (except "0"),
/// at most 20 digits, fits in u64. `+42`, `042`, `-1`, `4 2` are not ids.
pub fn parse_id(name: &[u8]) -> Option<u64> {
    if name.is_empty() || name.len() > 20 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if name.len() > 1 && name[0] == b'0' {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids_only() {
        assert_eq!(parse_id(b"0"), Some(0));
        assert_eq!(parse_id(b"42"), Some(42));
        assert_eq!(parse_id(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"+42",
            b"042",
            b"00",
            b"-1",
            b"4 2",
            b"18446744073709551616",
            b"abc",
            b"\xff",
            &[b'1'; 255],
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
