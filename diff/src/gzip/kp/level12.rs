//! klauspost levels 1 and 2: one hash table of 5-byte hashes (32 Ki entries at level
//! 1, 128 Ki at level 2), probing two positions a step, skipping faster the longer
//! nothing matched.

use super::fastgen::{History, hash5, load32, load64, match_len, rebase};
use super::tokens::Tokens;
use crate::gzip::token::MAX_DISTANCE;

const INPUT_MARGIN: i32 = 12 - 1;
const MIN_NON_LITERAL_BLOCK: usize = 1 + 1 + INPUT_MARGIN as usize;
const MAX_OFFSET: i32 = MAX_DISTANCE as i32;

/// Level 1 or 2, by `bits`: 15 or 17.
pub(super) struct Level12 {
    h: History,
    table: Vec<i32>,
    bits: u32,
}

impl Level12 {
    pub fn new(level: u8) -> Self {
        let bits = if level == 1 { 15 } else { 17 };
        Level12 {
            h: History::new(),
            table: vec![0; 1 << bits],
            bits,
        }
    }

    pub fn reset(&mut self) {
        self.h.reset();
    }

    pub fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        rebase(&mut self.h, &mut [&mut self.table], &mut []);
        let start = self.h.add_block(src);
        if src.len() < MIN_NON_LITERAL_BLOCK {
            dst.toks.resize(src.len(), 0);
            return;
        }
        let src = std::mem::take(&mut self.h.hist);
        if self.bits == 15 {
            self.encode1(dst, &src, start as i32);
        } else {
            self.encode2(dst, &src, start as i32);
        }
        self.h.hist = src;
    }

    fn encode1(&mut self, dst: &mut Tokens, src: &[u8], mut s: i32) {
        let (cur, bits) = (self.h.cur, self.bits);
        let h = |u: u64| hash5(u, bits);
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s as usize);
        'outer: loop {
            let mut next_s;
            let mut candidate;
            loop {
                let next_hash = h(cv);
                candidate = self.table[next_hash];
                next_s = s + 2 + ((s - next_emit) >> 5);
                if next_s > s_limit {
                    break 'outer;
                }
                let mut now = load64(src, next_s as usize);
                self.table[next_hash] = s + cur;
                let next_hash = h(now);
                let offset = s - (candidate - cur);
                if offset < MAX_OFFSET && cv as u32 == load32(src, (candidate - cur) as usize) {
                    self.table[next_hash] = next_s + cur;
                    break;
                }
                cv = now;
                s = next_s;
                next_s += 1;
                candidate = self.table[next_hash];
                now >>= 8;
                self.table[next_hash] = s + cur;
                let offset = s - (candidate - cur);
                if offset < MAX_OFFSET && cv as u32 == load32(src, (candidate - cur) as usize) {
                    // Go stores the next position under the same (unshifted) hash.
                    self.table[next_hash] = next_s + cur;
                    break;
                }
                cv = now;
                s = next_s;
            }
            loop {
                let mut t = candidate - cur;
                let mut l =
                    4 + match_len(&src[(s + 4) as usize..], &src[(t + 4) as usize..]) as i32;
                while t > 0 && s > next_emit && src[(t - 1) as usize] == src[(s - 1) as usize] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                if next_emit < s {
                    dst.literals(&src[next_emit as usize..s as usize]);
                }
                dst.long_match(l as usize, (s - t) as usize);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    if ((s + l + 8) as usize) < src.len() {
                        self.table[h(load64(src, s as usize))] = s + cur;
                    }
                    break 'outer;
                }
                let mut x = load64(src, (s - 2) as usize);
                let o = cur + s - 2;
                self.table[h(x)] = o;
                x >>= 16;
                let curr_hash = h(x);
                candidate = self.table[curr_hash];
                self.table[curr_hash] = o + 2;
                let offset = s - (candidate - cur);
                if offset > MAX_OFFSET || x as u32 != load32(src, (candidate - cur) as usize) {
                    cv = x >> 8;
                    s += 1;
                    break;
                }
            }
        }
        if (next_emit as usize) < src.len() && dst.n() != 0 {
            dst.literals(&src[next_emit as usize..]);
        }
    }

    fn encode2(&mut self, dst: &mut Tokens, src: &[u8], mut s: i32) {
        let (cur, bits) = (self.h.cur, self.bits);
        let h = |u: u64| hash5(u, bits);
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s as usize);
        'outer: loop {
            let mut next_s = s;
            let mut candidate;
            loop {
                let next_hash = h(cv);
                s = next_s;
                next_s = s + 2 + ((s - next_emit) >> 5);
                if next_s > s_limit {
                    break 'outer;
                }
                candidate = self.table[next_hash];
                let mut now = load64(src, next_s as usize);
                self.table[next_hash] = s + cur;
                let next_hash = h(now);
                let offset = s - (candidate - cur);
                if offset < MAX_OFFSET && cv as u32 == load32(src, (candidate - cur) as usize) {
                    self.table[next_hash] = next_s + cur;
                    break;
                }
                cv = now;
                s = next_s;
                next_s += 1;
                candidate = self.table[next_hash];
                now >>= 8;
                self.table[next_hash] = s + cur;
                let offset = s - (candidate - cur);
                if offset < MAX_OFFSET && cv as u32 == load32(src, (candidate - cur) as usize) {
                    break;
                }
                cv = now;
            }
            loop {
                let mut t = candidate - cur;
                let mut l =
                    4 + match_len(&src[(s + 4) as usize..], &src[(t + 4) as usize..]) as i32;
                while t > 0 && s > next_emit && src[(t - 1) as usize] == src[(s - 1) as usize] {
                    s -= 1;
                    t -= 1;
                    l += 1;
                }
                if next_emit < s {
                    dst.literals(&src[next_emit as usize..s as usize]);
                }
                dst.long_match(l as usize, (s - t) as usize);
                s += l;
                next_emit = s;
                if next_s >= s {
                    s = next_s + 1;
                }
                if s >= s_limit {
                    if ((s + l + 8) as usize) < src.len() {
                        self.table[h(load64(src, s as usize))] = s + cur;
                    }
                    break 'outer;
                }
                let mut i = s - l + 2;
                while i < s - 5 {
                    let mut x = load64(src, i as usize);
                    self.table[h(x)] = cur + i;
                    x >>= 16;
                    self.table[h(x)] = cur + i + 2;
                    x >>= 16;
                    self.table[h(x)] = cur + i + 4;
                    i += 7;
                }
                let x = load64(src, (s - 2) as usize);
                let o = cur + s - 2;
                self.table[h(x)] = o;
                self.table[h(x >> 8)] = o + 1;
                let curr_hash = h(x >> 16);
                candidate = self.table[curr_hash];
                self.table[curr_hash] = o + 2;
                let offset = s - (candidate - cur);
                if offset > MAX_OFFSET
                    || (x >> 16) as u32 != load32(src, (candidate - cur) as usize)
                {
                    cv = x >> 24;
                    s += 1;
                    break;
                }
            }
        }
        if (next_emit as usize) < src.len() && dst.n() != 0 {
            dst.literals(&src[next_emit as usize..]);
        }
    }
}
