//! klauspost's token buffer: the tokens of one block with their histograms kept as
//! they are added, and its entropy estimate of a fresh table's cost, which decides
//! whether a block reuses the previous block's table.

use crate::gzip::token::{self, DIST_CODES, DIST_EXTRA, EOB, LENGTH_EXTRA, MAX_MATCH, MIN_MATCH};

/// Tokens and their histograms. `extra[0]` counts end-of-block markers and
/// `extra[1 + c]` length code `c`, so `lit ++ extra` is the literal/length histogram.
pub(crate) struct Tokens {
    pub toks: Vec<u32>,
    pub lit: [u16; 256],
    pub extra: [u16; 32],
    pub dist: [u16; 32],
}

impl Tokens {
    pub fn new() -> Self {
        Tokens {
            toks: Vec::with_capacity(65536),
            lit: [0; 256],
            extra: [0; 32],
            dist: [0; 32],
        }
    }

    pub fn n(&self) -> usize {
        self.toks.len()
    }

    pub fn reset(&mut self) {
        if self.toks.is_empty() {
            return;
        }
        self.toks.clear();
        self.lit = [0; 256];
        self.extra = [0; 32];
        self.dist = [0; 32];
    }

    #[inline]
    pub fn literal(&mut self, b: u8) {
        self.toks.push(u32::from(b));
        self.lit[b as usize] += 1;
    }

    pub fn literals(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.literal(b);
        }
    }

    /// A match of any length (longer ones are cut into pieces of at most 258, never
    /// leaving a piece shorter than 3), `distance` bytes back.
    pub fn long_match(&mut self, mut length: usize, distance: usize) {
        let dc = token::dist_code((distance - 1) as u32);
        while length > 0 {
            let mut l = length;
            if l > MAX_MATCH {
                l = if l > MAX_MATCH + MIN_MATCH {
                    MAX_MATCH
                } else {
                    MAX_MATCH - MIN_MATCH
                };
            }
            length -= l;
            let t = token::matched(l, distance);
            self.extra[1 + token::length_code(token::xlength(t))] += 1;
            self.dist[dc] += 1;
            self.toks.push(t);
        }
    }

    pub fn eob(&mut self) {
        self.toks.push(EOB);
        self.extra[0] += 1;
    }

    /// klauspost's `EstimatedBits`: the Shannon cost of the block's symbols (each at
    /// least 1 and at most 15 bits, with a fast float32 log2) plus extra bits. The
    /// float32 arithmetic is Go's on amd64, where no multiply-add is fused.
    pub fn estimated_bits(&self) -> i64 {
        let mut shannon = 0f32;
        let mut bits = 0i64;
        let mut matches = 0i64;
        let total = self.toks.len();
        if total > 0 {
            let inv = 1.0f32 / total as f32;
            for &v in &self.lit {
                if v > 0 {
                    let n = f32::from(v);
                    shannon += at_least_one(-fast_log2(n * inv)) * n;
                }
            }
            shannon += 15.0;
            for (i, &v) in self.extra[1..30].iter().enumerate() {
                if v > 0 {
                    let n = f32::from(v);
                    shannon += at_least_one(-fast_log2(n * inv)) * n;
                    bits += i64::from(length_extra(i)) * i64::from(v);
                    matches += i64::from(v);
                }
            }
        }
        if matches > 0 {
            let inv = 1.0f32 / matches as f32;
            for (i, &v) in self.dist[..DIST_CODES].iter().enumerate() {
                if v > 0 {
                    let n = f32::from(v);
                    shannon += at_least_one(-fast_log2(n * inv)) * n;
                    bits += i64::from(DIST_EXTRA[i]) * i64::from(v);
                }
            }
        }
        shannon as i64 + bits
    }
}

/// Extra bits of length code `i`, 0 past the table as in klauspost's 32-entry one.
fn length_extra(i: usize) -> u8 {
    LENGTH_EXTRA.get(i).copied().unwrap_or(0)
}

fn at_least_one(v: f32) -> f32 {
    v.clamp(1.0, 15.0)
}

/// klauspost's `mFastLog2`: the exponent plus a quadratic fit of the mantissa. The
/// constants are Go's, written as Go rounds them (to the nearest float32).
#[allow(clippy::excessive_precision)]
fn fast_log2(val: f32) -> f32 {
    let mut ux = val.to_bits() as i32;
    let mut log2 = (((ux >> 23) & 255) - 128) as f32;
    ux &= -0x7f80_0001;
    ux += 127 << 23;
    let uval = f32::from_bits(ux as u32);
    log2 += ((-0.34484843f32) * uval + 2.02466578f32) * uval - 0.67487759f32;
    log2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_log2_is_close() {
        for v in [0.001f32, 0.1, 0.5, 0.75, 1.0] {
            assert!((fast_log2(v) - v.log2()).abs() < 0.01, "{v}");
        }
    }
}
