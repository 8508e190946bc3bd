//! Go's hash-chain matcher for levels 2 to 9 (`compress/flate`'s `deflate`): greedy
//! with skipped hashing at levels 2 and 3, lazy from level 4 on.

use super::writer::Writer;
use crate::gzip::token::{self, MAX_MATCH};

const WINDOW: usize = 1 << 15;
const WINDOW_MASK: usize = WINDOW - 1;
/// The shortest match this matcher emits.
const MIN_LEN: usize = 4;
const HASH_BITS: u32 = 17;
const HASH_SIZE: usize = 1 << HASH_BITS;
const MAX_HASH_OFFSET: i64 = 1 << 24;
const MAX_BLOCK_TOKENS: usize = 1 << 14;
const SKIP_NEVER: usize = i32::MAX as usize;
/// Go's `math.MaxInt32` for a block start that has left the window.
const GONE: usize = i32::MAX as usize;

/// One level's tuning: `(good, lazy, nice, chain, fast_skip_hashing)`.
fn params(level: u8) -> (usize, usize, usize, usize, usize) {
    match level {
        2 => (4, 0, 16, 8, 5),
        3 => (4, 0, 32, 32, 6),
        4 => (4, 4, 16, 16, SKIP_NEVER),
        5 => (8, 16, 32, 32, SKIP_NEVER),
        6 => (8, 16, 128, 128, SKIP_NEVER),
        7 => (8, 32, 128, 256, SKIP_NEVER),
        8 => (32, 128, 258, 1024, SKIP_NEVER),
        _ => (32, 258, 258, 4096, SKIP_NEVER),
    }
}

pub(super) struct Lazy {
    good: usize,
    lazy: usize,
    nice: usize,
    chain: usize,
    skip: usize,
    window: Vec<u8>,
    window_end: usize,
    index: usize,
    block_start: usize,
    byte_available: bool,
    hash_head: Vec<u32>,
    hash_prev: Vec<u32>,
    hash_offset: i64,
    chain_head: i64,
    length: usize,
    offset: usize,
    max_insert_index: usize,
    tokens: Vec<u32>,
}

fn hash4(b: &[u8]) -> usize {
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (v.wrapping_mul(0x1e35a7bd) >> (32 - HASH_BITS)) as usize
}

fn match_len(a: &[u8], b: &[u8], max: usize) -> usize {
    a[..max]
        .iter()
        .zip(&b[..max])
        .position(|(x, y)| x != y)
        .unwrap_or(max)
}

impl Lazy {
    pub fn new(level: u8) -> Self {
        let (good, lazy, nice, chain, skip) = params(level);
        Lazy {
            good,
            lazy,
            nice,
            chain,
            skip,
            window: vec![0; 2 * WINDOW],
            window_end: 0,
            index: 0,
            block_start: 0,
            byte_available: false,
            hash_head: vec![0; HASH_SIZE],
            hash_prev: vec![0; WINDOW],
            hash_offset: 1,
            chain_head: -1,
            length: MIN_LEN - 1,
            offset: 0,
            max_insert_index: 0,
            tokens: Vec::with_capacity(MAX_BLOCK_TOKENS + 1),
        }
    }

    /// Copies as much of `b` into the window as fits, sliding it first when the
    /// matcher has reached its second half. Returns the bytes taken.
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

    fn write_block(&mut self, w: &mut Writer, index: usize) {
        if index > 0 {
            let input = (self.block_start <= index).then(|| &self.window[self.block_start..index]);
            w.block(&mut self.tokens, false, input);
            self.block_start = index;
        }
        self.tokens.clear();
    }

    fn find_match(&self, pos: usize, prev_head: i64, lookahead: usize) -> Option<(usize, usize)> {
        let min_look = MAX_MATCH.min(lookahead);
        let win = &self.window[..pos + min_look];
        let nice = self.nice.min(win.len() - pos);
        let mut tries = self.chain;
        let mut length = MIN_LEN - 1;
        if length >= self.good {
            tries >>= 2;
        }
        let mut w_end = win[pos + length];
        let w_pos = &win[pos..];
        let min_index = pos as i64 - WINDOW as i64;
        let mut found = None;
        let mut i = prev_head;
        while tries > 0 {
            let iu = i as usize;
            if w_end == win[iu + length] {
                let n = match_len(&win[iu..], w_pos, min_look);
                if n > length && (n > MIN_LEN || pos - iu <= 4096) {
                    length = n;
                    found = Some((n, pos - iu));
                    if n >= nice {
                        break;
                    }
                    w_end = win[pos + n];
                }
            }
            if i == min_index {
                break;
            }
            i = i64::from(self.hash_prev[iu & WINDOW_MASK]) - self.hash_offset;
            if i < min_index || i < 0 {
                break;
            }
            tries -= 1;
        }
        found
    }

    fn insert(&mut self, at: usize) -> i64 {
        let h = hash4(&self.window[at..at + 4]);
        let head = self.hash_head[h];
        self.hash_prev[at & WINDOW_MASK] = head;
        self.hash_head[h] = (at as i64 + self.hash_offset) as u32;
        i64::from(head)
    }

    /// Go's `deflate`: matches what the window holds, keeping [`MIN_LEN`] +
    /// [`MAX_MATCH`] bytes of lookahead unless `sync` asks for everything.
    pub fn step(&mut self, w: &mut Writer, sync: bool) {
        if self.window_end - self.index < MIN_LEN + MAX_MATCH && !sync {
            return;
        }
        self.max_insert_index = self.window_end.saturating_sub(MIN_LEN - 1);
        let skip_never = self.skip == SKIP_NEVER;
        loop {
            let lookahead = self.window_end - self.index;
            if lookahead < MIN_LEN + MAX_MATCH {
                if !sync {
                    break;
                }
                if lookahead == 0 {
                    if self.byte_available {
                        self.tokens.push(u32::from(self.window[self.index - 1]));
                        self.byte_available = false;
                    }
                    if !self.tokens.is_empty() {
                        self.write_block(w, self.index);
                    }
                    break;
                }
            }
            if self.index < self.max_insert_index {
                self.chain_head = self.insert(self.index);
            }
            let prev_length = self.length;
            let prev_offset = self.offset;
            self.length = MIN_LEN - 1;
            self.offset = 0;
            let min_index = self.index.saturating_sub(WINDOW) as i64;

            let head = self.chain_head - self.hash_offset;
            let search = if skip_never {
                lookahead > prev_length && prev_length < self.lazy
            } else {
                lookahead > MIN_LEN - 1
            };
            if head >= min_index
                && search
                && let Some((l, o)) = self.find_match(self.index, head, lookahead)
            {
                self.length = l;
                self.offset = o;
            }
            let emit_match = if skip_never {
                prev_length >= MIN_LEN && self.length <= prev_length
            } else {
                self.length >= MIN_LEN
            };
            if emit_match {
                if skip_never {
                    self.tokens.push(token::matched(prev_length, prev_offset));
                } else {
                    self.tokens.push(token::matched(self.length, self.offset));
                }
                if self.length <= self.skip {
                    let new_index = if skip_never {
                        self.index + prev_length - 1
                    } else {
                        self.index + self.length
                    };
                    let mut index = self.index + 1;
                    while index < new_index {
                        if index < self.max_insert_index {
                            self.insert(index);
                        }
                        index += 1;
                    }
                    self.index = index;
                    if skip_never {
                        self.byte_available = false;
                        self.length = MIN_LEN - 1;
                    }
                } else {
                    self.index += self.length;
                }
                if self.tokens.len() == MAX_BLOCK_TOKENS {
                    self.write_block(w, self.index);
                }
            } else {
                if !skip_never || self.byte_available {
                    let i = if skip_never {
                        self.index - 1
                    } else {
                        self.index
                    };
                    self.tokens.push(u32::from(self.window[i]));
                    if self.tokens.len() == MAX_BLOCK_TOKENS {
                        self.write_block(w, i + 1);
                    }
                }
                self.index += 1;
                if skip_never {
                    self.byte_available = true;
                }
            }
        }
    }
}
