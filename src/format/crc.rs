//! The algebra of the frames' crc32 (IEEE, reflected, as crc32fast), used to
//! tell bit rot from a lost write: where a single damaged byte must be for
//! a frame's stored crc to hold, and what it should be.
//!
//! The crc is affine in the message: for two messages of the same length,
//! `crc(m ^ e) = crc(m) ^ L(e)`, where `L` runs the shift register from zero.
//! An error of value `x` at byte `j` of an `n`-byte message gives
//! `L(e) = F^(n-1-j)(T[x])`, with `T` the byte table and `F` the register's
//! step over one zero byte. `F` is invertible (the top byte of `T[i]` is
//! different for every `i`), so the syndrome can be walked back one byte at
//! a time until it is a table entry: one pass, no allocation.

const POLY: u32 = 0xEDB8_8320;

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = i as u32;
        let mut k = 0;
        while k < 8 {
            r = if r & 1 != 0 { (r >> 1) ^ POLY } else { r >> 1 };
            k += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
}

const T: [u32; 256] = table();

/// `TOP[b]` is the byte whose table entry has top byte `b`.
const fn top() -> [u8; 256] {
    let mut inv = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        inv[(T[i] >> 24) as usize] = i as u8;
        i += 1;
    }
    inv
}

const TOP: [u8; 256] = top();

/// The register's step back over one zero byte (the inverse of
/// `r -> (r >> 8) ^ T[r & 0xff]`).
fn unstep(r: u32) -> u32 {
    let i = TOP[(r >> 24) as usize];
    ((r ^ T[i as usize]) << 8) | i as u32
}

/// Where one damaged byte explains `syndrome` (the crc computed over an
/// `n`-byte message, xor the crc it should have): `(j, x)` such that the
/// message is right once byte `j` is xored with `x`. Positions below
/// `from` are not considered. None if no single byte does.
pub fn locate_byte_error(n: usize, from: usize, syndrome: u32) -> Option<(usize, u8)> {
    let mut u = syndrome;
    // u = F^-d(syndrome) for the byte d places before the end.
    for d in 0..n.saturating_sub(from) {
        let x = TOP[(u >> 24) as usize];
        if x != 0 && T[x as usize] == u {
            return Some((n - 1 - d, x));
        }
        u = unstep(u);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_single_byte_error_is_located() {
        let msg: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        let good = crc32fast::hash(&msg);
        for j in [0usize, 1, 17, 150, 298, 299] {
            for x in [1u8, 0x40, 0x80, 0xff, 0x5a] {
                let mut bad = msg.clone();
                bad[j] ^= x;
                let s = crc32fast::hash(&bad) ^ good;
                assert_eq!(locate_byte_error(bad.len(), 0, s), Some((j, x)), "{j} {x}");
                if j >= 10 {
                    assert_eq!(locate_byte_error(bad.len(), 10, s), Some((j, x)));
                } else {
                    assert_eq!(locate_byte_error(bad.len(), 10, s), None);
                }
            }
        }
        assert_eq!(locate_byte_error(msg.len(), 0, 0), None);
    }

    #[test]
    fn two_damaged_bytes_are_rarely_taken_for_one() {
        let msg: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 11) as u8).collect();
        let good = crc32fast::hash(&msg);
        let mut aliased = 0;
        let mut cases = 0;
        for k in 0..2000usize {
            let (a, b) = ((k * 37) % 4096, (k * 53 + 1000) % 4096);
            if a == b || msg[a] == 0 || msg[b] == 0 {
                continue;
            }
            cases += 1;
            let mut bad = msg.clone();
            bad[a] = 0;
            bad[b] = 0;
            let s = crc32fast::hash(&bad) ^ good;
            if locate_byte_error(bad.len(), 0, s).is_some() {
                aliased += 1;
            }
        }
        assert!(cases > 1900);
        // About n * 255 / 2^32 per case: 4096 bytes give 2.4e-4.
        assert!(aliased <= 2, "{aliased} of 2000");
    }
}
