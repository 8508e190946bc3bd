//! Huffman codes built the way Go's `compress/flate` builds them, shared by the
//! standard library's encoder and klauspost's (they agree on every step).
//!
//! Deflate only fixes the code lengths' limit; which optimal length-limited code an
//! encoder picks is its own choice, and the stream records it. Go's choice:
//!
//! - Symbols with zero frequency get no code. One or two used symbols get a code of
//!   one bit each, in symbol order — a single used symbol thus gets a one-bit code
//!   on its own (the "degenerate" tree other tools refuse).
//! - Otherwise symbols are sorted by (frequency, symbol), the number of codes of each
//!   length comes from Go's level-by-level chain algorithm (`bit_counts`), the most
//!   frequent symbols take the shortest lengths, and within one length codes are
//!   handed out in symbol order (canonical, RFC 1951 §3.2.2).
//!
//! Also here: the fixed codes, the run-length "codegen" encoding of a dynamic block's
//! code lengths and writing a dynamic block's header, which both encoders share.

use super::bits::BitWriter;
use super::token::{
    DIST_BASE, DIST_CODES, DIST_EXTRA, LENGTH_BASE, LENGTH_EXTRA, LIT_CODES, MATCH, dist_code,
    length_code, xdistance, xlength,
};

/// A code: its bits already reversed for LSB-first output, and its length (0: none).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Code {
    pub bits: u16,
    pub len: u8,
}

/// Longest code the tables hold.
const MAX_BITS_LIMIT: usize = 16;
/// Frequency above any real one, marking "nothing left".
const NONE: i64 = i64::MAX;

/// Go's `generate`: fills `codes[..freq.len()]` with the code of each symbol.
///
/// `scratch` holds at least `freq.len() + 1` nodes; it is kept by the caller to avoid
/// an allocation per block.
pub(crate) fn generate(freq: &[u32], max_bits: u32, codes: &mut [Code], scratch: &mut Vec<Node>) {
    scratch.clear();
    for (i, &f) in freq.iter().enumerate() {
        if f != 0 {
            scratch.push(Node {
                sym: i as u16,
                freq: f,
            });
        } else {
            codes[i] = Code::default();
        }
    }
    if scratch.len() <= 2 {
        for (i, n) in scratch.iter().enumerate() {
            codes[n.sym as usize] = Code {
                bits: i as u16,
                len: 1,
            };
        }
        return;
    }
    // (frequency, symbol) is a total order, so any sort gives Go's order.
    scratch.sort_unstable_by_key(|n| (n.freq, n.sym));
    let counts = bit_counts(scratch, max_bits);
    assign(&counts, scratch, codes);
}

/// A used symbol and its frequency.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    sym: u16,
    freq: u32,
}

#[derive(Clone, Copy, Default)]
struct Level {
    last_freq: i64,
    next_char_freq: i64,
    next_pair_freq: i64,
    needed: i32,
}

/// How many symbols get each code length (`result[len]`, `len` in `1..=max`), and the
/// largest length used. `list` is sorted by frequency and holds at least 3 symbols.
///
/// This is Go's algorithm: each level keeps the chain it is building, takes either the
/// next leaf or a pair from the level below, whichever is lighter, and borrows from
/// lower levels as it goes. Ties go to the pair.
fn bit_counts(list: &[Node], max_bits: u32) -> ([i32; MAX_BITS_LIMIT + 1], usize) {
    let n = list.len();
    let max_bits = (max_bits as usize).min(n - 1);
    let freq_at = |i: usize| -> i64 { if i < n { i64::from(list[i].freq) } else { NONE } };
    let mut levels = [Level::default(); MAX_BITS_LIMIT + 2];
    // leaf_counts[l][j]: leaves left of the level-j ancestor of level l's rightmost node.
    let mut leaf_counts = [[0i32; MAX_BITS_LIMIT + 1]; MAX_BITS_LIMIT + 1];
    for level in 1..=max_bits {
        levels[level] = Level {
            last_freq: freq_at(1),
            next_char_freq: freq_at(2),
            next_pair_freq: if level == 1 {
                NONE
            } else {
                freq_at(0) + freq_at(1)
            },
            needed: 0,
        };
        leaf_counts[level][level] = 2;
    }
    levels[max_bits].needed = 2 * n as i32 - 4;

    let mut level = max_bits;
    while level < MAX_BITS_LIMIT {
        let l = levels[level];
        if l.next_pair_freq == NONE && l.next_char_freq == NONE {
            levels[level].needed = 0;
            levels[level + 1].next_pair_freq = NONE;
            level += 1;
            continue;
        }
        let prev_freq = l.last_freq;
        if l.next_char_freq < l.next_pair_freq {
            let count = leaf_counts[level][level] + 1;
            levels[level].last_freq = l.next_char_freq;
            leaf_counts[level][level] = count;
            levels[level].next_char_freq = freq_at(count as usize);
        } else {
            levels[level].last_freq = l.next_pair_freq;
            let save = leaf_counts[level][level];
            leaf_counts[level] = leaf_counts[level - 1];
            leaf_counts[level][level] = save;
            levels[level - 1].needed = 2;
        }
        levels[level].needed -= 1;
        if levels[level].needed == 0 {
            if level == max_bits {
                break;
            }
            levels[level + 1].next_pair_freq = prev_freq + levels[level].last_freq;
            level += 1;
        } else {
            while levels[level - 1].needed > 0 {
                level -= 1;
            }
        }
    }
    debug_assert_eq!(leaf_counts[max_bits][max_bits], n as i32);

    let mut out = [0i32; MAX_BITS_LIMIT + 1];
    let counts = &leaf_counts[max_bits];
    for (bits, level) in (1..).zip((1..=max_bits).rev()) {
        out[bits] = counts[level] - counts[level - 1];
    }
    (out, max_bits)
}

/// Hands out canonical codes: the last (most frequent) symbols of `list` get the
/// shortest lengths, and codes of one length go in symbol order.
fn assign(counts: &([i32; MAX_BITS_LIMIT + 1], usize), list: &mut [Node], codes: &mut [Code]) {
    let (counts, max_bits) = counts;
    let mut code: u16 = 0;
    let mut end = list.len();
    for (len, &count) in counts.iter().enumerate().take(max_bits + 1) {
        code <<= 1;
        if len == 0 || count == 0 {
            continue;
        }
        let chunk = &mut list[end - count as usize..end];
        chunk.sort_unstable_by_key(|n| n.sym);
        for n in chunk.iter() {
            codes[n.sym as usize] = Code {
                bits: reverse(code, len as u32),
                len: len as u8,
            };
            code = code.wrapping_add(1);
        }
        end -= count as usize;
    }
}

/// The low `len` bits of `code`, reversed.
pub(crate) fn reverse(code: u16, len: u32) -> u16 {
    code.reverse_bits() >> (16 - len)
}

/// Bits a block would take with `codes` for symbols counted in `freq`.
pub(crate) fn bit_length(codes: &[Code], freq: &[u32]) -> i64 {
    freq.iter()
        .zip(codes)
        .filter(|(f, _)| **f != 0)
        .map(|(&f, c)| i64::from(f) * i64::from(c.len))
        .sum()
}

/// The fixed literal/length code of RFC 1951 §3.2.6, for all 286 symbols.
pub(crate) fn fixed_literal_codes() -> [Code; LIT_CODES] {
    let mut codes = [Code::default(); LIT_CODES];
    for (ch, c) in codes.iter_mut().enumerate() {
        let (bits, len) = match ch {
            0..=143 => (ch + 48, 8),
            144..=255 => (ch + 400 - 144, 9),
            256..=279 => (ch - 256, 7),
            _ => (ch + 192 - 280, 8),
        };
        *c = Code {
            bits: reverse(bits as u16, len),
            len: len as u8,
        };
    }
    codes
}

/// The fixed distance code: five bits each.
pub(crate) fn fixed_distance_codes() -> [Code; DIST_CODES] {
    let mut codes = [Code::default(); DIST_CODES];
    for (i, c) in codes.iter_mut().enumerate() {
        *c = Code {
            bits: reverse(i as u16, 5),
            len: 5,
        };
    }
    codes
}

/// Order in which a dynamic header lists the code length code's lengths.
pub(crate) const CODEGEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// The run-length encoded code lengths of a dynamic block (RFC 1951 §3.2.7), as Go
/// makes them, and the frequency of each of the 19 code length symbols.
#[derive(Default)]
pub(crate) struct Codegen {
    /// Symbols, each of 16, 17 and 18 followed by its repeat count field.
    pub seq: Vec<u8>,
    pub freq: [u32; 19],
    /// The code length code built from `freq` (maximum 7 bits).
    pub codes: [Code; 19],
    scratch: Vec<Node>,
}

impl Codegen {
    /// Encodes the lengths of `lit[..num_lit]` then `dist[..num_dist]` and builds
    /// the code length code.
    pub fn build(&mut self, lit: &[Code], num_lit: usize, dist: &[Code], num_dist: usize) {
        self.freq = [0; 19];
        self.seq.clear();
        let lens = lit[..num_lit]
            .iter()
            .chain(&dist[..num_dist])
            .map(|c| c.len);
        let mut lens = lens.peekable();
        while let Some(size) = lens.next() {
            let mut count = 1usize;
            while lens.peek() == Some(&size) {
                lens.next();
                count += 1;
            }
            if size != 0 {
                self.seq.push(size);
                self.freq[size as usize] += 1;
                count -= 1;
                while count >= 3 {
                    let n = count.min(6);
                    self.seq.extend_from_slice(&[16, (n - 3) as u8]);
                    self.freq[16] += 1;
                    count -= n;
                }
            } else {
                while count >= 11 {
                    let n = count.min(138);
                    self.seq.extend_from_slice(&[18, (n - 11) as u8]);
                    self.freq[18] += 1;
                    count -= n;
                }
                if count >= 3 {
                    self.seq.extend_from_slice(&[17, (count - 3) as u8]);
                    self.freq[17] += 1;
                    count = 0;
                }
            }
            for _ in 0..count {
                self.seq.push(size);
                self.freq[size as usize] += 1;
            }
        }
        generate(&self.freq, 7, &mut self.codes, &mut self.scratch);
    }

    /// How many code length code lengths the header lists (at least 4).
    pub fn count(&self) -> usize {
        let mut n = 19;
        while n > 4 && self.freq[CODEGEN_ORDER[n - 1]] == 0 {
            n -= 1;
        }
        n
    }

    /// Bits of a dynamic header carrying this encoding.
    pub fn header_bits(&self) -> i64 {
        3 + 5
            + 5
            + 4
            + 3 * self.count() as i64
            + bit_length(&self.codes, &self.freq)
            + i64::from(self.freq[16]) * 2
            + i64::from(self.freq[17]) * 3
            + i64::from(self.freq[18]) * 7
    }

    /// Writes a dynamic block header (BFINAL per `last`) for `num_lit` literal/length
    /// and `num_dist` distance codes.
    pub fn write_header(&self, w: &mut BitWriter, num_lit: usize, num_dist: usize, last: bool) {
        w.bits(if last { 5 } else { 4 }, 3);
        w.bits((num_lit - 257) as u32, 5);
        w.bits((num_dist - 1) as u32, 5);
        let count = self.count();
        w.bits((count - 4) as u32, 4);
        for &sym in &CODEGEN_ORDER[..count] {
            w.bits(u32::from(self.codes[sym].len), 3);
        }
        let mut i = 0;
        while i < self.seq.len() {
            let sym = self.seq[i];
            let c = self.codes[sym as usize];
            w.bits(u32::from(c.bits), u32::from(c.len));
            i += 1;
            let extra = match sym {
                16 => 2,
                17 => 3,
                18 => 7,
                _ => continue,
            };
            w.bits(u32::from(self.seq[i]), extra);
            i += 1;
        }
    }
}

/// Writes tokens (literals, matches and end-of-block markers) with the given codes.
pub(crate) fn write_tokens(w: &mut BitWriter, tokens: &[u32], lit: &[Code], dist: &[Code]) {
    for &t in tokens {
        if t & MATCH == 0 {
            let c = lit[t as usize];
            w.bits(u32::from(c.bits), u32::from(c.len));
            continue;
        }
        let xl = xlength(t);
        let lc = length_code(xl);
        let c = lit[257 + lc];
        w.bits(u32::from(c.bits), u32::from(c.len));
        let extra = u32::from(LENGTH_EXTRA[lc]);
        if extra > 0 {
            w.bits(xl - u32::from(LENGTH_BASE[lc]), extra);
        }
        let xd = xdistance(t);
        let dc = dist_code(xd);
        let c = dist[dc];
        w.bits(u32::from(c.bits), u32::from(c.len));
        let extra = u32::from(DIST_EXTRA[dc]);
        if extra > 0 {
            w.bits(xd - u32::from(DIST_BASE[dc]), extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(freq: &[u32], max_bits: u32) -> Vec<u8> {
        let mut codes = vec![Code::default(); freq.len()];
        generate(freq, max_bits, &mut codes, &mut Vec::new());
        codes.iter().map(|c| c.len).collect()
    }

    #[test]
    fn one_or_two_symbols_get_one_bit() {
        assert_eq!(lengths(&[0, 5, 0], 15), [0, 1, 0]);
        assert_eq!(lengths(&[3, 0, 9], 15), [1, 0, 1]);
    }

    #[test]
    fn lengths_are_limited_and_complete() {
        // Fibonacci frequencies make the deepest unlimited tree.
        let mut freq = vec![1u32, 1];
        while freq.len() < 30 {
            let n = freq[freq.len() - 1] + freq[freq.len() - 2];
            freq.push(n);
        }
        for max in [7, 9, 15] {
            let lens = lengths(&freq, max);
            assert!(lens.iter().all(|&l| l >= 1 && u32::from(l) <= max));
            let kraft: f64 = lens.iter().map(|&l| 0.5f64.powi(l.into())).sum();
            assert!((kraft - 1.0).abs() < 1e-9, "{max}: {kraft}");
        }
    }

    #[test]
    fn codes_are_canonical() {
        let freq = [10, 1, 1, 5, 0, 3];
        let mut codes = vec![Code::default(); freq.len()];
        generate(&freq, 15, &mut codes, &mut Vec::new());
        // Lengths 1, 4, 4, 2, -, 3: codes 0, 1110, 1111, 10, 110 (reversed for output).
        let expect = [
            (0b0, 1),
            (0b1110, 4),
            (0b1111, 4),
            (0b10, 2),
            (0, 0),
            (0b110, 3),
        ];
        for (c, (bits, len)) in codes.iter().zip(expect) {
            assert_eq!(c.len, len);
            if len > 0 {
                assert_eq!(c.bits, reverse(bits, u32::from(len)));
            }
        }
    }
}
