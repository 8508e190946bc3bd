//! klauspost levels 7 to 9 (its `deflateLazy`): hash chains over a 64 KiB window with
//! lazy matching, a check for a longer match ending where the chosen one ends, and a
//! skip over long runs without matches. Level 9 (chain over 100) weighs a match by the
//! bits its literals would take under a code of the window's byte histogram.

use super::tokens::Tokens;
use super::writer::Writer;
use crate::gzip::huffman::{self, Code, Node};
use crate::gzip::token::{DIST_EXTRA, LENGTH_EXTRA, MAX_MATCH, dist_code, length_code};

const WINDOW: usize = 1 << 15;
const WINDOW_MASK: usize = WINDOW - 1;
const MIN_LEN: usize = 4;
const HASH_BITS: u32 = 17;
const MAX_HASH_OFFSET: i64 = 1 << 28;
const MAX_BLOCK_TOKENS: usize = 1 << 15;
/// A block start that has left the window (Go's `math.MaxInt32`).
const GONE: usize = i32::MAX as usize;

fn hash4(b: &[u8]) -> usize {
    let u = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    (u.wrapping_mul(2654435761) >> (32 - HASH_BITS)) as usize
}

/// Bytes `a` and `b` have in common from the start (`a` no longer than `b`).
fn match_len(a: &[u8], b: &[u8]) -> usize {
    super::fastgen::match_len(a, b)
}

/// klauspost's `offsetCode` of a distance (not less one, as the level-9 cost estimate
/// passes it): 32768 wraps to code 14.
fn offset_code_of(d: u32) -> usize {
    if d < 256 {
        dist_code(d)
    } else {
        dist_code(u32::from((d >> 7) as u8)) + 14
    }
}

pub(super) struct Lazy {
    lazy: usize,
    nice: usize,
    chain: usize,
    window: Vec<u8>,
    window_end: usize,
    block_start: usize,
    index: usize,
    length: usize,
    offset: usize,
    max_insert_index: i64,
    chain_head: i64,
    hash_offset: i64,
    /// Literals since the last match (wraps at 64 Ki, as Go's `uint16`).
    ii: u16,
    byte_available: bool,
    hash_head: Vec<u32>,
    hash_prev: Vec<u32>,
    tokens: Tokens,
    /// Level 9's literal cost code.
    lit: Vec<Code>,
    scratch: Vec<Node>,
}

impl Lazy {
    pub fn new(level: i8) -> Self {
        let (lazy, nice, chain) = match level {
            7 => (12, 16, 24),
            8 => (30, 40, 64),
            _ => (258, 258, 1024),
        };
        Lazy {
            lazy,
            nice,
            chain,
            window: vec![0; 2 * WINDOW],
            window_end: 0,
            block_start: 0,
            index: 0,
            length: MIN_LEN - 1,
            offset: 0,
            max_insert_index: 0,
            chain_head: -1,
            hash_offset: 1,
            ii: 0,
            byte_available: false,
            hash_head: vec![0; 1 << HASH_BITS],
            hash_prev: vec![0; WINDOW],
            tokens: Tokens::new(),
            lit: vec![Code::default(); 256],
            scratch: Vec::new(),
        }
    }

    /// Go's `reset` then `fillWindow(dict)`: the last 32 KiB of `dict` fill the window
    /// and the hash chains; the first block's start stays at 0, before them.
    pub fn reset(&mut self, dict: &[u8]) {
        self.hash_head.fill(0);
        self.hash_prev.fill(0);
        self.chain_head = -1;
        self.hash_offset = 1;
        self.index = 0;
        self.window_end = 0;
        self.block_start = 0;
        self.byte_available = false;
        self.tokens.reset();
        self.length = MIN_LEN - 1;
        self.offset = 0;
        self.ii = 0;
        self.max_insert_index = 0;
        let dict = &dict[dict.len().saturating_sub(WINDOW)..];
        self.window[..dict.len()].copy_from_slice(dict);
        for di in 0..(dict.len() + 1).saturating_sub(MIN_LEN) {
            self.insert(di);
        }
        self.window_end = dict.len();
        self.index = dict.len();
    }

    pub fn full(&self) -> bool {
        self.window_end == self.window.len()
    }

    /// Go's `fillDeflate`.
    pub fn fill(&mut self, b: &[u8]) -> usize {
        if self.index >= 2 * WINDOW - (MIN_LEN + MAX_MATCH) {
            self.window.copy_within(WINDOW..2 * WINDOW, 0);
            self.index -= WINDOW;
            self.window_end -= WINDOW;
            if self.block_start >= WINDOW {
                self.block_start -= WINDOW;
            } else {
                self.block_start = GONE;
            }
            self.hash_offset += WINDOW as i64;
            if self.hash_offset > MAX_HASH_OFFSET {
                let delta = self.hash_offset - 1;
                self.hash_offset -= delta;
                self.chain_head -= delta;
                for v in self.hash_prev.iter_mut().chain(self.hash_head.iter_mut()) {
                    *v = if i64::from(*v) > delta {
                        (i64::from(*v) - delta) as u32
                    } else {
                        0
                    };
                }
            }
        }
        let n = b.len().min(self.window.len() - self.window_end);
        self.window[self.window_end..self.window_end + n].copy_from_slice(&b[..n]);
        self.window_end += n;
        n
    }

    fn insert(&mut self, at: usize) {
        let h = hash4(&self.window[at..]);
        self.hash_prev[at & WINDOW_MASK] = self.hash_head[h];
        self.hash_head[h] = (at as i64 + self.hash_offset) as u32;
    }

    /// Inserts `at` and makes its chain's head the one to search.
    fn insert_head(&mut self, at: usize) {
        let h = hash4(&self.window[at..]);
        let ch = self.hash_head[h];
        self.chain_head = i64::from(ch);
        self.hash_prev[at & WINDOW_MASK] = ch;
        self.hash_head[h] = (at as i64 + self.hash_offset) as u32;
    }

    fn write_block(&mut self, w: &mut Writer, index: usize, sync: bool) {
        if index > 0 {
            let input = (self.block_start <= index).then(|| &self.window[self.block_start..index]);
            self.block_start = index;
            w.block_dynamic(&mut self.tokens, false, input, sync);
        }
        self.tokens.reset();
    }

    fn find_match(&self, pos: usize, prev_head: i64, lookahead: usize) -> Option<(usize, usize)> {
        let min_look = MAX_MATCH.min(lookahead);
        let win = &self.window[..pos + min_look];
        let nice = self.nice.min(win.len() - pos);
        let mut tries = self.chain;
        let mut length = MIN_LEN - 1;
        let mut w_end = win[pos + length];
        let w_pos = &win[pos..];
        let min_index = pos.saturating_sub(WINDOW) as i64;
        let weigh = self.chain >= 100;
        let mut gain = 0i64;
        let mut found = None;
        let mut i = prev_head;
        while tries > 0 {
            let iu = i as usize;
            if w_end == win[iu + length] {
                let n = match_len(&win[iu..iu + min_look], w_pos);
                let better = n > length && {
                    if weigh {
                        let literal_bits: i64 = w_pos[..n]
                            .iter()
                            .map(|&b| i64::from(self.lit[b as usize].len))
                            .sum();
                        let new_gain = literal_bits
                            - i64::from(DIST_EXTRA[offset_code_of((pos - iu) as u32)])
                            - 6
                            - i64::from(LENGTH_EXTRA[length_code((n - 3) as u32)]);
                        let better = new_gain > gain;
                        if better {
                            gain = new_gain;
                        }
                        better
                    } else {
                        true
                    }
                };
                if better {
                    length = n;
                    found = Some((n, pos - iu));
                    if n >= nice {
                        break;
                    }
                    w_end = win[pos + n];
                }
            }
            if i <= min_index {
                break;
            }
            i = i64::from(self.hash_prev[iu & WINDOW_MASK]) - self.hash_offset;
            if i < min_index {
                break;
            }
            tries -= 1;
        }
        found
    }

    /// Go's `deflateLazy`.
    pub fn step(&mut self, w: &mut Writer, sync: bool) {
        if self.window_end - self.index < MIN_LEN + MAX_MATCH && !sync {
            return;
        }
        if self.window_end != self.index && self.chain > 100 {
            let mut freq = [0u16; 256];
            for &b in &self.window[self.index..self.window_end] {
                freq[b as usize] = freq[b as usize].wrapping_add(1);
            }
            let freq = freq.map(u32::from);
            huffman::generate(&freq, 15, &mut self.lit, &mut self.scratch);
        }
        self.max_insert_index = self.window_end as i64 - (MIN_LEN as i64 - 1);
        loop {
            let lookahead = self.window_end - self.index;
            if lookahead < MIN_LEN + MAX_MATCH {
                if !sync {
                    return;
                }
                if lookahead == 0 {
                    if self.byte_available {
                        self.tokens.literal(self.window[self.index - 1]);
                        self.byte_available = false;
                    }
                    if self.tokens.n() > 0 {
                        self.write_block(w, self.index, sync);
                    }
                    return;
                }
            }
            if (self.index as i64) < self.max_insert_index {
                self.insert_head(self.index);
            }
            let mut prev_length = self.length;
            let mut prev_offset = self.offset;
            self.length = MIN_LEN - 1;
            self.offset = 0;
            let min_index = self.index.saturating_sub(WINDOW) as i64;
            let head = self.chain_head - self.hash_offset;
            if head >= min_index
                && lookahead > prev_length
                && prev_length < self.lazy
                && let Some((l, o)) = self.find_match(self.index, head, lookahead)
            {
                self.length = l;
                self.offset = o;
            }

            if prev_length >= MIN_LEN && self.length <= prev_length {
                // A longer match ending where the previous one ends, starting two
                // bytes before where its hash says.
                let prev_index = self.index - 1;
                if ((prev_index + prev_length + 2) as i64) < self.max_insert_index {
                    let end = prev_index + lookahead.min(MAX_MATCH);
                    let idx = prev_index + prev_length - 2;
                    let h = hash4(&self.window[idx..]);
                    let ch2 =
                        i64::from(self.hash_head[h]) - self.hash_offset - prev_length as i64 + 2;
                    if ch2 > min_index {
                        let ch2 = ch2 as usize;
                        let l = match_len(&self.window[prev_index..end], &self.window[ch2..]);
                        if l > prev_length {
                            prev_length = l;
                            prev_offset = prev_index - ch2;
                        }
                    }
                }
                self.tokens.long_match(prev_length, prev_offset);
                let new_index = self.index + prev_length - 1;
                let end = (new_index as i64).min(self.max_insert_index) + MIN_LEN as i64 - 1;
                let start = ((self.index + 1) as i64).min(self.max_insert_index);
                for di in start..end - MIN_LEN as i64 + 1 {
                    self.insert(di as usize);
                }
                self.index = new_index;
                self.byte_available = false;
                self.length = MIN_LEN - 1;
                if self.tokens.n() == MAX_BLOCK_TOKENS {
                    self.write_block(w, self.index, sync);
                }
                self.ii = 0;
            } else {
                if self.length >= MIN_LEN {
                    self.ii = 0;
                }
                if self.byte_available {
                    self.ii = self.ii.wrapping_add(1);
                    self.tokens.literal(self.window[self.index - 1]);
                    if self.tokens.n() == MAX_BLOCK_TOKENS {
                        self.write_block(w, self.index, sync);
                    }
                    self.index += 1;
                    let over = i64::from(self.ii) - self.chain as i64;
                    if over > 0 {
                        let n = 1 + (over >> 6);
                        for _ in 0..n {
                            if self.index >= self.window_end - 1 {
                                break;
                            }
                            self.tokens.literal(self.window[self.index - 1]);
                            if self.tokens.n() == MAX_BLOCK_TOKENS {
                                self.write_block(w, self.index, sync);
                            }
                            if (self.index as i64) < self.max_insert_index {
                                self.insert_head(self.index);
                            }
                            self.index += 1;
                        }
                        self.tokens.literal(self.window[self.index - 1]);
                        self.byte_available = false;
                        if self.tokens.n() == MAX_BLOCK_TOKENS {
                            self.write_block(w, self.index, sync);
                        }
                    }
                } else {
                    self.index += 1;
                    self.byte_available = true;
                }
            }
        }
    }
}
