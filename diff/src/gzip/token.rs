//! Literal/match tokens and the RFC 1951 tables that map lengths and distances to
//! codes and extra bits.
//!
//! A token is a `u32`: a literal byte (`0..=255`), the end-of-block marker (`256`),
//! or a match with [`MATCH`] set, the length less 3 in bits 16..24 and the distance
//! less 1 in bits 0..15.

/// Set on match tokens.
pub(crate) const MATCH: u32 = 1 << 31;
/// The end-of-block symbol, as a token and as a literal/length symbol.
pub(crate) const EOB: u32 = 256;
/// Literal/length symbols a writer may use (`0..=285`).
pub(crate) const LIT_CODES: usize = 286;
/// Distance symbols a writer may use.
pub(crate) const DIST_CODES: usize = 30;
/// Shortest and longest match.
pub(crate) const MIN_MATCH: usize = 3;
pub(crate) const MAX_MATCH: usize = 258;
/// Farthest a match may reach back.
pub(crate) const MAX_DISTANCE: usize = 1 << 15;

/// A match token for `length` (3..=258) bytes `distance` (1..=32768) back.
#[inline]
pub(crate) fn matched(length: usize, distance: usize) -> u32 {
    debug_assert!((MIN_MATCH..=MAX_MATCH).contains(&length));
    debug_assert!((1..=MAX_DISTANCE).contains(&distance));
    MATCH | (((length - MIN_MATCH) as u32) << 16) | (distance - 1) as u32
}

/// The length less 3 of a match token.
#[inline]
pub(crate) fn xlength(t: u32) -> u32 {
    (t >> 16) & 0xff
}

/// The distance less 1 of a match token.
#[inline]
pub(crate) fn xdistance(t: u32) -> u32 {
    t & 0x7fff
}

/// Extra bits of length codes `0..29` (symbols 257..285).
pub(crate) const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// First length less 3 of each length code.
pub(crate) const LENGTH_BASE: [u8; 29] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128,
    160, 192, 224, 255,
];
/// Extra bits of distance codes.
pub(crate) const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// First distance less 1 of each distance code.
pub(crate) const DIST_BASE: [u16; 30] = [
    0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
    2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576,
];

const fn length_codes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut code = 0;
    let mut x = 0;
    while x < 256 {
        while code + 1 < 29 && LENGTH_BASE[code + 1] as usize <= x {
            code += 1;
        }
        t[x] = code as u8;
        x += 1;
    }
    t
}

const fn dist_codes() -> [u8; 512] {
    // Entries 0..256 map a distance less 1 below 256; entries 256..512 map
    // (distance less 1) >> 7 for the rest.
    let mut t = [0u8; 512];
    let mut code = 0;
    let mut d = 0;
    while d < 256 {
        while code + 1 < 30 && DIST_BASE[code + 1] as usize <= d {
            code += 1;
        }
        t[d] = code as u8;
        d += 1;
    }
    let mut code = 0;
    let mut hi = 0;
    while hi < 256 {
        let d = hi << 7;
        while code + 1 < 30 && DIST_BASE[code + 1] as usize <= d {
            code += 1;
        }
        t[256 + hi] = code as u8;
        hi += 1;
    }
    t
}

static LENGTH_CODE: [u8; 256] = length_codes();
static DIST_CODE: [u8; 512] = dist_codes();

/// The length code (`0..29`, symbol less 257) of a length less 3.
#[inline]
pub(crate) fn length_code(xlength: u32) -> usize {
    LENGTH_CODE[xlength as usize & 0xff] as usize
}

/// The distance code of a distance less 1 (below 32768).
#[inline]
pub(crate) fn dist_code(xdistance: u32) -> usize {
    if xdistance < 256 {
        DIST_CODE[xdistance as usize] as usize
    } else {
        DIST_CODE[256 + ((xdistance as usize >> 7) & 0xff)] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_rfc1951() {
        assert_eq!(length_code(0), 0);
        assert_eq!(length_code(7), 7);
        assert_eq!(length_code(8), 8);
        assert_eq!(length_code(9), 8);
        assert_eq!(length_code(254), 27);
        assert_eq!(length_code(255), 28);
        assert_eq!(dist_code(0), 0);
        assert_eq!(dist_code(4), 4);
        assert_eq!(dist_code(5), 4);
        assert_eq!(dist_code(255), 15);
        assert_eq!(dist_code(256), 16);
        assert_eq!(dist_code(24576), 29);
        assert_eq!(dist_code(32767), 29);
        for x in 0..32768u32 {
            let c = dist_code(x);
            assert!(u32::from(DIST_BASE[c]) <= x);
            assert!(x < u32::from(DIST_BASE[c]) + (1 << DIST_EXTRA[c]));
        }
    }
}
