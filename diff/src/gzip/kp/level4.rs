//! klauspost level 4: a short (4-byte) and a long (7-byte) hash table of one position
//! each; a short match gives way to a longer one found at the next position.

use super::fastgen::{History, hash4, hash7, load32, load64, match_len, rebase};
use super::tokens::Tokens;
use crate::gzip::token::MAX_DISTANCE;

const TABLE_BITS: u32 = 15;
const INPUT_MARGIN: i32 = 12 - 1;
const MIN_NON_LITERAL_BLOCK: usize = 1 + 1 + INPUT_MARGIN as usize;
const MAX_OFFSET: i32 = MAX_DISTANCE as i32;

pub(super) struct Level4 {
    h: History,
    table: Vec<i32>,
    long: Vec<i32>,
}

fn hs(u: u64) -> usize {
    hash4(u, TABLE_BITS)
}

fn hl(u: u64) -> usize {
    hash7(u, TABLE_BITS)
}

impl Level4 {
    pub fn new() -> Self {
        Level4 {
            h: History::new(),
            table: vec![0; 1 << TABLE_BITS],
            long: vec![0; 1 << TABLE_BITS],
        }
    }

    pub fn reset(&mut self) {
        self.h.reset();
    }

    pub fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        rebase(&mut self.h, &mut [&mut self.table, &mut self.long], &mut []);
        let start = self.h.add_block(src);
        if src.len() < MIN_NON_LITERAL_BLOCK {
            dst.toks.resize(src.len(), 0);
            return;
        }
        let src = std::mem::take(&mut self.h.hist);
        self.run(dst, &src, start as i32);
        self.h.hist = src;
    }

    fn run(&mut self, dst: &mut Tokens, src: &[u8], mut s: i32) {
        let cur = self.h.cur;
        let load = |at: i32| load32(src, at as usize);
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(src, s as usize);
        loop {
            let mut next_s = s;
            let mut t;
            loop {
                let (nhs, nhl) = (hs(cv), hl(cv));
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 6);
                if next_s > s_limit {
                    return self.remainder(dst, src, next_emit);
                }
                let s_cand = self.table[nhs];
                let l_cand = self.long[nhl];
                let next = load64(src, next_s as usize);
                self.table[nhs] = s + cur;
                self.long[nhl] = s + cur;
                t = l_cand - cur;
                if s - t < MAX_OFFSET && cv as u32 == load(t) {
                    break;
                }
                t = s_cand - cur;
                if s - t < MAX_OFFSET && cv as u32 == load(t) {
                    let l_cand = self.long[hl(next)];
                    let l_off = next_s - (l_cand - cur);
                    if l_off < MAX_OFFSET && load(l_cand - cur) == next as u32 {
                        let l1 = match_len(&src[(s + 4) as usize..], &src[(t + 4) as usize..]);
                        let l2 = match_len(
                            &src[(next_s + 4) as usize..],
                            &src[(next_s - l_off + 4) as usize..],
                        );
                        if l2 > l1 {
                            s = next_s;
                            t = l_cand - cur;
                        }
                    }
                    break;
                }
                cv = next;
            }
            let mut l = 4 + match_len(&src[(s + 4) as usize..], &src[(t + 4) as usize..]) as i32;
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
                if ((s + 8) as usize) < src.len() {
                    let cv = load64(src, s as usize);
                    self.table[hs(cv)] = s + cur;
                    self.long[hl(cv)] = s + cur;
                }
                return self.remainder(dst, src, next_emit);
            }
            let mut i = next_s;
            while i < s - 1 {
                let cv = load64(src, i as usize);
                let e = i + cur;
                self.long[hl(cv)] = e;
                self.long[hl(cv >> 8)] = e + 1;
                self.table[hs(cv >> 8)] = e + 1;
                i += 3;
            }
            let x = load64(src, (s - 1) as usize);
            let o = cur + s - 1;
            self.table[hs(x)] = o;
            self.long[hl(x)] = o;
            cv = x >> 8;
        }
    }

    fn remainder(&self, dst: &mut Tokens, src: &[u8], next_emit: i32) {
        if (next_emit as usize) < src.len() && dst.n() != 0 {
            dst.literals(&src[next_emit as usize..]);
        }
    }
}
