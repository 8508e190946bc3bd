//! Blocks as Go's standard library writes them (`compress/flate`'s
//! `huffmanBitWriter`, Go 1.19): how it picks stored, fixed or dynamic encoding for a
//! block and how it sizes each choice. Unlike klauspost's writer, every block gets its
//! own tables and ends with its own end-of-block code.

use crate::gzip::bits::BitWriter;
use crate::gzip::huffman::{
    self, Code, Codegen, Node, bit_length, fixed_distance_codes, fixed_literal_codes,
};
use crate::gzip::token::{
    DIST_CODES, DIST_EXTRA, EOB, LENGTH_EXTRA, LIT_CODES, MATCH, dist_code, length_code, xdistance,
    xlength,
};

/// Largest stored block.
pub(super) const MAX_STORED: usize = 65535;

/// The block writer's state: the output bits and the tables of the current block.
pub(super) struct Writer {
    pub bits: BitWriter,
    lit_freq: [u32; LIT_CODES],
    dist_freq: [u32; DIST_CODES],
    lit: [Code; LIT_CODES],
    dist: [Code; DIST_CODES],
    codegen: Codegen,
    fixed_lit: [Code; LIT_CODES],
    fixed_dist: [Code; DIST_CODES],
    /// The distance code of literal-only blocks: one code of one bit for symbol 0.
    huff_dist: [Code; DIST_CODES],
    scratch: Vec<Node>,
}

impl Writer {
    pub fn new() -> Self {
        let mut huff_dist = [Code::default(); DIST_CODES];
        let mut freq = [0u32; DIST_CODES];
        freq[0] = 1;
        huffman::generate(&freq, 15, &mut huff_dist, &mut Vec::new());
        Writer {
            bits: BitWriter::default(),
            lit_freq: [0; LIT_CODES],
            dist_freq: [0; DIST_CODES],
            lit: [Code::default(); LIT_CODES],
            dist: [Code::default(); DIST_CODES],
            codegen: Codegen::default(),
            fixed_lit: fixed_literal_codes(),
            fixed_dist: fixed_distance_codes(),
            huff_dist,
            scratch: Vec::with_capacity(LIT_CODES + 1),
        }
    }

    /// A stored block's header: BTYPE 00, then LEN and NLEN on a byte boundary.
    pub fn stored_header(&mut self, len: usize, last: bool) {
        self.bits.bits(u32::from(last), 3);
        self.bits.align();
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

    /// Counts the tokens' symbols and builds both codes from them; returns how many
    /// literal/length and distance codes the header must list.
    fn index(&mut self, tokens: &[u32]) -> (usize, usize) {
        self.lit_freq = [0; LIT_CODES];
        self.dist_freq = [0; DIST_CODES];
        for &t in tokens {
            if t & MATCH == 0 {
                self.lit_freq[t as usize] += 1;
            } else {
                self.lit_freq[257 + length_code(xlength(t))] += 1;
                self.dist_freq[dist_code(xdistance(t))] += 1;
            }
        }
        let mut num_lit = LIT_CODES;
        while self.lit_freq[num_lit - 1] == 0 {
            num_lit -= 1;
        }
        let mut num_dist = DIST_CODES;
        while num_dist > 0 && self.dist_freq[num_dist - 1] == 0 {
            num_dist -= 1;
        }
        if num_dist == 0 {
            // A dynamic header needs one distance code even when no match uses it.
            self.dist_freq[0] = 1;
            num_dist = 1;
        }
        huffman::generate(&self.lit_freq, 15, &mut self.lit, &mut self.scratch);
        huffman::generate(&self.dist_freq, 15, &mut self.dist, &mut self.scratch);
        (num_lit, num_dist)
    }

    fn dynamic_bits(&self, dist: &[Code], extra: i64) -> i64 {
        self.codegen.header_bits()
            + bit_length(&self.lit, &self.lit_freq)
            + bit_length(dist, &self.dist_freq)
            + extra
    }

    /// `writeBlock`: the smallest of fixed, dynamic and (when `input` is the block's
    /// bytes) stored. `tokens` gets the end-of-block marker.
    pub fn block(&mut self, tokens: &mut Vec<u32>, last: bool, input: Option<&[u8]>) {
        tokens.push(EOB);
        let (num_lit, num_dist) = self.index(tokens);
        let storable = input.filter(|i| i.len() <= MAX_STORED);
        let mut extra = 0i64;
        if storable.is_some() {
            for code in 257 + 8..num_lit {
                extra += i64::from(self.lit_freq[code]) * i64::from(LENGTH_EXTRA[code - 257]);
            }
            for (&n, &e) in self.dist_freq[..num_dist].iter().zip(&DIST_EXTRA).skip(4) {
                extra += i64::from(n) * i64::from(e);
            }
        }
        let fixed = 3
            + bit_length(&self.fixed_lit, &self.lit_freq)
            + bit_length(&self.fixed_dist, &self.dist_freq)
            + extra;
        self.codegen.build(&self.lit, num_lit, &self.dist, num_dist);
        let dynamic = self.dynamic_bits(&self.dist, extra);
        let (size, use_dynamic) = if dynamic < fixed {
            (dynamic, true)
        } else {
            (fixed, false)
        };
        if let Some(input) = storable
            && ((input.len() as i64 + 5) * 8) < size
        {
            self.stored(input, last);
            return;
        }
        if use_dynamic {
            self.codegen
                .write_header(&mut self.bits, num_lit, num_dist, last);
            let (lit, dist) = (self.lit, self.dist);
            self.tokens(tokens, &lit, &dist);
        } else {
            self.bits.bits(if last { 3 } else { 2 }, 3);
            let (lit, dist) = (self.fixed_lit, self.fixed_dist);
            self.tokens(tokens, &lit, &dist);
        }
    }

    /// `writeBlockDynamic`: a dynamic block, or stored when that is not 1/16 larger.
    pub fn block_dynamic(&mut self, tokens: &mut Vec<u32>, last: bool, input: &[u8]) {
        tokens.push(EOB);
        let (num_lit, num_dist) = self.index(tokens);
        self.codegen.build(&self.lit, num_lit, &self.dist, num_dist);
        let size = self.dynamic_bits(&self.dist, 0);
        if input.len() <= MAX_STORED && ((input.len() as i64 + 5) * 8) < size + (size >> 4) {
            self.stored(input, last);
            return;
        }
        self.codegen
            .write_header(&mut self.bits, num_lit, num_dist, last);
        let (lit, dist) = (self.lit, self.dist);
        self.tokens(tokens, &lit, &dist);
    }

    /// `writeBlockHuff`: `input` as literals under its own code, or stored when that
    /// is not 1/16 larger.
    pub fn block_huff(&mut self, last: bool, input: &[u8]) {
        self.lit_freq = [0; LIT_CODES];
        for &b in input {
            self.lit_freq[b as usize] += 1;
        }
        self.lit_freq[EOB as usize] = 1;
        // Go leaves the other distance counts of the last block in place; only the
        // first matters, the literal-only distance code has no other symbol.
        self.dist_freq[0] = 1;
        huffman::generate(&self.lit_freq, 15, &mut self.lit, &mut self.scratch);
        let huff_dist = self.huff_dist;
        self.codegen.build(&self.lit, 257, &huff_dist, 1);
        let size = self.dynamic_bits(&huff_dist, 0);
        if input.len() <= MAX_STORED && ((input.len() as i64 + 5) * 8) < size + (size >> 4) {
            self.stored(input, last);
            return;
        }
        self.codegen.write_header(&mut self.bits, 257, 1, last);
        for &b in input {
            let c = self.lit[b as usize];
            self.bits.bits(u32::from(c.bits), u32::from(c.len));
        }
        let c = self.lit[EOB as usize];
        self.bits.bits(u32::from(c.bits), u32::from(c.len));
    }

    fn tokens(&mut self, tokens: &[u32], lit: &[Code; LIT_CODES], dist: &[Code; DIST_CODES]) {
        huffman::write_tokens(&mut self.bits, tokens, lit, dist);
    }
}
