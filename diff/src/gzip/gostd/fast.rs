//! Go's level 1 (`compress/flate`'s `deflateFast`): a Snappy-style single-probe hash
//! table over 64 KiB blocks, matching into the previous block too.

use crate::gzip::token::{self, MAX_DISTANCE, MAX_MATCH};

const TABLE_BITS: u32 = 14;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const INPUT_MARGIN: usize = 16 - 1;
const MIN_NON_LITERAL_BLOCK: usize = 1 + 1 + INPUT_MARGIN;
const MAX_STORE_BLOCK: i32 = 65535;
const BUFFER_RESET: i32 = i32::MAX - MAX_STORE_BLOCK * 2;

#[derive(Clone, Copy, Default)]
struct Entry {
    val: u32,
    offset: i32,
}

pub(super) struct Fast {
    table: Vec<Entry>,
    prev: Vec<u8>,
    cur: i32,
}

fn load32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn load64(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(x)
}

fn hash(u: u32) -> usize {
    (u.wrapping_mul(0x1e35a7bd) >> (32 - TABLE_BITS)) as usize
}

impl Fast {
    pub fn new() -> Self {
        Fast {
            table: vec![Entry::default(); TABLE_SIZE],
            prev: Vec::with_capacity(MAX_STORE_BLOCK as usize),
            cur: MAX_STORE_BLOCK,
        }
    }

    /// Appends the tokens of `src` (one block, at most 64 KiB) to `dst`.
    pub fn encode(&mut self, dst: &mut Vec<u32>, src: &[u8]) {
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
        if src.len() < MIN_NON_LITERAL_BLOCK {
            self.cur += MAX_STORE_BLOCK;
            self.prev.clear();
            dst.extend(src.iter().map(|&b| u32::from(b)));
            return;
        }
        let s_limit = (src.len() - INPUT_MARGIN) as i32;
        let mut next_emit = 0i32;
        let mut s = 0i32;
        let mut cv = load32(src, 0);
        let mut next_hash = hash(cv);
        'outer: loop {
            let mut skip = 32i32;
            let mut next_s = s;
            let mut candidate;
            loop {
                s = next_s;
                let step = skip >> 5;
                next_s = s + step;
                skip += step;
                if next_s > s_limit {
                    break 'outer;
                }
                candidate = self.table[next_hash];
                let now = load32(src, next_s as usize);
                self.table[next_hash] = Entry {
                    offset: s + self.cur,
                    val: cv,
                };
                next_hash = hash(now);
                let offset = s - (candidate.offset - self.cur);
                if offset > MAX_DISTANCE as i32 || cv != candidate.val {
                    cv = now;
                    continue;
                }
                break;
            }
            dst.extend(
                src[next_emit as usize..s as usize]
                    .iter()
                    .map(|&b| u32::from(b)),
            );
            loop {
                s += 4;
                let t = candidate.offset - self.cur + 4;
                let l = self.match_len(s, t, src);
                dst.push(token::matched((l + 4) as usize, (s - t) as usize));
                s += l;
                next_emit = s;
                if s >= s_limit {
                    break 'outer;
                }
                let x = load64(src, (s - 1) as usize);
                let prev_hash = hash(x as u32);
                self.table[prev_hash] = Entry {
                    offset: self.cur + s - 1,
                    val: x as u32,
                };
                let x = x >> 8;
                let curr_hash = hash(x as u32);
                candidate = self.table[curr_hash];
                self.table[curr_hash] = Entry {
                    offset: self.cur + s,
                    val: x as u32,
                };
                let offset = s - (candidate.offset - self.cur);
                if offset > MAX_DISTANCE as i32 || x as u32 != candidate.val {
                    cv = (x >> 8) as u32;
                    next_hash = hash(cv);
                    s += 1;
                    break;
                }
            }
        }
        if (next_emit as usize) < src.len() {
            dst.extend(src[next_emit as usize..].iter().map(|&b| u32::from(b)));
        }
        self.cur += src.len() as i32;
        self.prev.clear();
        self.prev.extend_from_slice(src);
    }

    /// Length of the match at `s` against `t` (before `src` when negative: in the
    /// previous block, continuing into `src`), at most [`MAX_MATCH`] - 4.
    fn match_len(&self, s: i32, t: i32, src: &[u8]) -> i32 {
        let s = s as usize;
        let s1 = (s + MAX_MATCH - 4).min(src.len());
        let a = &src[s..s1];
        if t >= 0 {
            let b = &src[t as usize..];
            return common(a, b) as i32;
        }
        let tp = self.prev.len() as i32 + t;
        if tp < 0 {
            return 0;
        }
        let b = &self.prev[tp as usize..];
        let n = common(a, b);
        if n < b.len().min(a.len()) || s + n == s1 {
            return n as i32;
        }
        (n + common(&src[s + n..s1], src)) as i32
    }

    /// Forgets the previous block (after a block written without matching).
    pub fn reset(&mut self) {
        self.prev.clear();
        self.cur += MAX_DISTANCE as i32;
        if self.cur >= BUFFER_RESET {
            self.shift_offsets();
        }
    }

    fn shift_offsets(&mut self) {
        if self.prev.is_empty() {
            self.table.fill(Entry::default());
            self.cur = MAX_DISTANCE as i32 + 1;
            return;
        }
        for e in self.table.iter_mut() {
            e.offset = (e.offset - self.cur + MAX_DISTANCE as i32 + 1).max(0);
        }
        self.cur = MAX_DISTANCE as i32 + 1;
    }
}

/// Bytes `a` and `b` have in common from the start.
fn common(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
