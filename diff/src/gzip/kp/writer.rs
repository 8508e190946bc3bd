//! Blocks as klauspost/compress 1.15.12 writes them (its `huffmanBitWriter`).
//!
//! Unlike Go's standard library, this writer may keep a dynamic table open across
//! blocks: a block that is not flushed leaves its table "open" (no end-of-block code
//! yet, every symbol listed in the header so later blocks can use it), and the next
//! block reuses it when an estimate says a fresh table would not pay for its header.
//! Literal-only blocks may likewise reuse the previous literal-only table.

use super::tokens::Tokens;
use crate::gzip::bits::BitWriter;
use crate::gzip::huffman::{
    self, Code, Codegen, Node, bit_length, fixed_distance_codes, fixed_literal_codes, write_tokens,
};
use crate::gzip::token::{DIST_CODES, DIST_EXTRA, EOB, LENGTH_EXTRA, LIT_CODES};

/// Largest stored block.
pub(super) const MAX_STORED: usize = 65535;
/// Blocks of fewer tokens may be written with the fixed code.
const MAX_PREDEFINED_TOKENS: usize = 250;
/// Its guess of a literal-only block's header, in bits.
const GUESS_HEADER_BITS: i64 = 70 * 8;

pub(super) struct Writer {
    pub bits: BitWriter,
    /// `lit ++ extra` of the current block: 256 literals, end of block, 31 lengths.
    lit_freq: [u32; 288],
    dist_freq: [u32; 32],
    lit: [Code; LIT_CODES],
    tmp_lit: [Code; LIT_CODES],
    dist: [Code; DIST_CODES],
    codegen: Codegen,
    fixed_lit: [Code; LIT_CODES],
    fixed_dist: [Code; DIST_CODES],
    huff_dist: [Code; DIST_CODES],
    /// Header bits of the open table; 0 when no table is open (and no end-of-block
    /// code is owed).
    last_header: i64,
    /// The open table is a literal-only one.
    last_huffman: bool,
    /// A fresh table's estimate is raised by itself shifted right by this.
    penalty_shift: u32,
    scratch: Vec<Node>,
}

impl Writer {
    pub fn new(penalty_shift: u32) -> Self {
        let mut huff_dist = [Code::default(); DIST_CODES];
        let mut freq = [0u32; DIST_CODES];
        freq[0] = 1;
        huffman::generate(&freq, 15, &mut huff_dist, &mut Vec::new());
        Writer {
            bits: BitWriter::default(),
            lit_freq: [0; 288],
            dist_freq: [0; 32],
            lit: [Code::default(); LIT_CODES],
            tmp_lit: [Code::default(); LIT_CODES],
            dist: [Code::default(); DIST_CODES],
            codegen: Codegen::default(),
            fixed_lit: fixed_literal_codes(),
            fixed_dist: fixed_distance_codes(),
            huff_dist,
            last_header: 0,
            last_huffman: false,
            penalty_shift,
            scratch: Vec::with_capacity(LIT_CODES + 1),
        }
    }

    /// Starts a new stream after a flush: no table is open. (Go keeps the old tables'
    /// codes too, but they are used only while a table is open.)
    pub fn reset(&mut self) {
        debug_assert_eq!(self.last_header, 0);
        self.last_header = 0;
        self.last_huffman = false;
    }

    /// Writes the end-of-block code the open table owes, if any.
    fn close_table(&mut self) {
        if self.last_header > 0 {
            let c = self.lit[EOB as usize];
            self.bits.bits(u32::from(c.bits), u32::from(c.len));
            self.last_header = 0;
        }
    }

    /// Ends the open table and pads to a byte.
    pub fn flush(&mut self) {
        self.close_table();
        self.bits.align();
    }

    /// A stored block header; an empty final one is written as an empty fixed block
    /// instead (10 bits, not 5 bytes).
    pub fn stored_header(&mut self, len: usize, last: bool) {
        self.close_table();
        if len == 0 && last {
            self.fixed_header(true);
            self.bits.bits(0, 7);
            self.flush();
            return;
        }
        self.bits.bits(u32::from(last), 3);
        self.flush();
        self.bits.bits(len as u32, 16);
        self.bits.bits(!(len as u16) as u32, 16);
    }

    fn stored(&mut self, input: &[u8], last: bool) {
        self.stored_header(input.len(), last);
        self.bits.bytes(input);
    }

    /// A stored block of `input` (at most [`MAX_STORED`] bytes).
    pub fn stored_block(&mut self, input: &[u8]) {
        self.stored(input, false);
    }

    fn fixed_header(&mut self, last: bool) {
        self.close_table();
        self.bits.bits(if last { 3 } else { 2 }, 3);
    }

    /// Whether every symbol the tokens use has a code in the open table.
    fn can_reuse(&self, t: &Tokens) -> bool {
        let dist_ok = t.dist[..DIST_CODES]
            .iter()
            .zip(&self.dist)
            .all(|(&n, c)| n == 0 || c.len != 0);
        let extra_ok = t.extra[..LIT_CODES - 256]
            .iter()
            .zip(&self.lit[256..])
            .all(|(&n, c)| n == 0 || c.len != 0);
        let lit_ok = t
            .lit
            .iter()
            .zip(&self.lit)
            .all(|(&n, c)| n == 0 || c.len != 0);
        dist_ok && extra_ok && lit_ok
    }

    /// Copies the histograms; returns how many codes a header lists: all 286 and 30
    /// for a table left open (so later blocks can reuse it), else the used ones.
    fn index(&mut self, t: &Tokens, open: bool) -> (usize, usize) {
        for (f, &n) in self.lit_freq.iter_mut().zip(t.lit.iter().chain(&t.extra)) {
            *f = u32::from(n);
        }
        for (f, &n) in self.dist_freq.iter_mut().zip(&t.dist) {
            *f = u32::from(n);
        }
        if t.n() == 0 {
            return (0, 0);
        }
        if open {
            return (LIT_CODES, DIST_CODES);
        }
        let mut num_lit = self.lit_freq.len();
        while self.lit_freq[num_lit - 1] == 0 {
            num_lit -= 1;
        }
        let mut num_dist = self.dist_freq.len();
        while num_dist > 0 && self.dist_freq[num_dist - 1] == 0 {
            num_dist -= 1;
        }
        if num_dist == 0 {
            self.dist_freq[0] = 1;
            num_dist = 1;
        }
        (num_lit, num_dist)
    }

    fn extra_bits(&self) -> i64 {
        let lengths: i64 = self.lit_freq[257..LIT_CODES]
            .iter()
            .zip(LENGTH_EXTRA)
            .map(|(&n, e)| i64::from(n) * i64::from(e))
            .sum();
        let dists: i64 = self.dist_freq[..DIST_CODES]
            .iter()
            .zip(DIST_EXTRA)
            .map(|(&n, e)| i64::from(n) * i64::from(e))
            .sum();
        lengths + dists
    }

    fn fixed_size(&self, extra: i64) -> i64 {
        3 + bit_length(&self.fixed_lit, &self.lit_freq)
            + bit_length(&self.fixed_dist, &self.dist_freq)
            + extra
    }

    fn write_fixed(&mut self, t: &mut Tokens, last: bool, sync: bool) {
        self.fixed_header(last);
        if !sync {
            t.eob();
        }
        let (lit, dist) = (self.fixed_lit, self.fixed_dist);
        write_tokens(&mut self.bits, &t.toks, &lit, &dist);
    }

    /// `writeBlockDynamic`: the tokens `t` of `input` under the open table, a fresh
    /// dynamic table, the fixed code or stored, by klauspost's estimates. Unless `sync`
    /// or `last`, a fresh table is left open.
    pub fn block_dynamic(&mut self, t: &mut Tokens, last: bool, input: Option<&[u8]>, sync: bool) {
        let sync = sync || last;
        if sync {
            t.eob();
        }
        if (self.last_huffman || last) && self.last_header > 0 {
            self.close_table();
            self.last_huffman = false;
        }
        if self.last_header > 0 && !self.can_reuse(t) {
            self.close_table();
        }
        let (num_lit, num_dist) = self.index(t, !sync);
        // Without the block's bytes (a window that slid past them) it cannot be stored.
        let input = input.filter(|i| i.len() <= MAX_STORED);
        let storable = input.is_some();
        let stored_size = input.map_or(0, |i| (i.len() as i64 + 5) * 8);
        let extra = if storable || self.last_header > 0 {
            self.extra_bits()
        } else {
            0
        };

        if self.last_header > 0 {
            let mut fresh = self.last_header + t.estimated_bits();
            fresh += i64::from(self.lit[EOB as usize].len) + (fresh >> self.penalty_shift);
            let reuse = bit_length(&self.lit, &self.lit_freq)
                + bit_length(&self.dist, &self.dist_freq)
                + extra;
            let size = if fresh < reuse {
                self.close_table();
                fresh
            } else {
                reuse
            };
            if t.n() < MAX_PREDEFINED_TOKENS && self.fixed_size(extra) + 7 < size {
                if storable && stored_size <= size {
                    self.stored(input.unwrap_or_default(), last);
                } else {
                    self.write_fixed(t, last, sync);
                }
                return;
            }
            if storable && stored_size <= size {
                self.stored(input.unwrap_or_default(), last);
                return;
            }
        }

        if self.last_header == 0 {
            self.lit_freq[EOB as usize] = 1;
            huffman::generate(
                &self.lit_freq[..LIT_CODES],
                15,
                &mut self.lit,
                &mut self.scratch,
            );
            huffman::generate(
                &self.dist_freq[..DIST_CODES],
                15,
                &mut self.dist,
                &mut self.scratch,
            );
            self.codegen.build(&self.lit, num_lit, &self.dist, num_dist);
            let size = self.codegen.header_bits()
                + bit_length(&self.lit, &self.lit_freq)
                + bit_length(&self.dist, &self.dist_freq)
                + extra;
            if t.n() < MAX_PREDEFINED_TOKENS {
                let fixed = self.fixed_size(extra);
                if fixed <= size {
                    if storable && stored_size <= fixed {
                        self.stored(input.unwrap_or_default(), last);
                    } else {
                        self.write_fixed(t, last, sync);
                    }
                    return;
                }
            }
            if storable && stored_size <= size {
                self.stored(input.unwrap_or_default(), last);
                return;
            }
            self.codegen
                .write_header(&mut self.bits, num_lit, num_dist, last);
            if !sync {
                self.last_header = self.codegen.header_bits();
            }
            self.last_huffman = false;
        }
        if sync {
            self.last_header = 0;
        }
        let (lit, dist) = (self.lit, self.dist);
        write_tokens(&mut self.bits, &t.toks, &lit, &dist);
    }

    /// `writeBlockHuff`: `input` as literals, under the open table when it has codes
    /// for them and a fresh one would not pay, or under a fresh literal-only table,
    /// or stored when its byte histogram looks flat or the estimate says so.
    pub fn block_huff(&mut self, last: bool, input: &[u8], sync: bool) {
        self.lit_freq = [0; 288];
        for &b in input {
            self.lit_freq[b as usize] += 1;
        }
        let storable = input.len() <= MAX_STORED;
        let stored_size = (input.len() as i64 + 5) * 8;
        if storable && input.len() > 1024 {
            let avg = input.len() as f64 / 256.0;
            let max = (input.len() * 2) as f64;
            let mut abs = 0f64;
            for &v in &self.lit_freq[..256] {
                let diff = f64::from(v) - avg;
                abs += diff * diff;
                if abs > max {
                    break;
                }
            }
            if abs < max {
                self.stored(input, last);
                return;
            }
        }
        self.lit_freq[EOB as usize] = 1;
        huffman::generate(
            &self.lit_freq[..257],
            15,
            &mut self.tmp_lit,
            &mut self.scratch,
        );
        let mut est = bit_length(&self.tmp_lit, &self.lit_freq[..257]);
        est += self.last_header;
        if self.last_header == 0 {
            est += GUESS_HEADER_BITS;
        }
        est += est >> self.penalty_shift;
        if storable && stored_size <= est {
            self.stored(input, last);
            return;
        }
        if self.last_header > 0 {
            let reuse = reuse_bits(&self.lit, &self.lit_freq[..256]);
            if est < reuse {
                self.close_table();
            }
        }
        if self.last_header == 0 {
            std::mem::swap(&mut self.lit, &mut self.tmp_lit);
            let huff_dist = self.huff_dist;
            self.codegen.build(&self.lit, 257, &huff_dist, 1);
            self.codegen.write_header(&mut self.bits, 257, 1, last);
            self.last_huffman = true;
            self.last_header = self.codegen.header_bits();
        }
        for &b in input {
            let c = self.lit[b as usize];
            self.bits.bits(u32::from(c.bits), u32::from(c.len));
        }
        if last || sync {
            let c = self.lit[EOB as usize];
            self.bits.bits(u32::from(c.bits), u32::from(c.len));
            self.last_header = 0;
            self.last_huffman = false;
        }
    }
}

/// Bits of `freq` under `codes`, or "too many" when a used symbol has no code.
fn reuse_bits(codes: &[Code], freq: &[u32]) -> i64 {
    let mut total = 0;
    for (&f, c) in freq.iter().zip(codes) {
        if f != 0 {
            if c.len == 0 {
                return i64::from(i32::MAX);
            }
            total += i64::from(f) * i64::from(c.len);
        }
    }
    total
}
