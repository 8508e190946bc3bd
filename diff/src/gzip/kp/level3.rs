//! klauspost level 3: one table of 5-byte hashes (64 Ki buckets) holding the two
//! latest positions each, the longer of the two matches taken.

use super::fastgen::{History, Pair, hash5, load32, load64, match_len, rebase};
use super::tokens::Tokens;
use crate::gzip::token::MAX_DISTANCE;

const TABLE_BITS: u32 = 16;
const INPUT_MARGIN: i32 = 12 - 1;
const MIN_NON_LITERAL_BLOCK: usize = 1 + 1 + INPUT_MARGIN as usize;
const MAX_OFFSET: i32 = MAX_DISTANCE as i32;

pub(super) struct Level3 {
    h: History,
    table: Vec<Pair>,
}

fn h(u: u64) -> usize {
    hash5(u, TABLE_BITS)
}

impl Level3 {
    pub fn new() -> Self {
        Level3 {
            h: History::new(),
            table: vec![Pair::default(); 1 << TABLE_BITS],
        }
    }

    pub fn reset(&mut self) {
        self.h.reset();
    }

    pub fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        rebase(&mut self.h, &mut [], &mut [&mut self.table]);
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
        'outer: loop {
            let mut next_s = s;
            let mut candidate;
            loop {
                let next_hash = h(cv);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 7);
                if next_s > s_limit {
                    break 'outer;
                }
                let candidates = self.table[next_hash];
                let now = load64(src, next_s as usize);
                let min_offset = cur + s - (MAX_OFFSET - 4);
                self.table[next_hash] = Pair {
                    prev: candidates.cur,
                    cur: s + cur,
                };
                candidate = candidates.cur;
                if candidate < min_offset {
                    cv = now;
                    continue;
                }
                if cv as u32 == load(candidate - cur) {
                    if candidates.prev < min_offset || cv as u32 != load(candidates.prev - cur) {
                        break;
                    }
                    let t1 = (candidate - cur + 4) as usize;
                    let t2 = (candidates.prev - cur + 4) as usize;
                    let here = &src[(s + 4) as usize..];
                    if match_len(here, &src[t2..]) > match_len(here, &src[t1..]) {
                        candidate = candidates.prev;
                    }
                    break;
                }
                candidate = candidates.prev;
                if candidate > min_offset && cv as u32 == load(candidate - cur) {
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
                    t += l;
                    if ((t + 8) as usize) < src.len() && t > 0 {
                        self.table[h(load64(src, t as usize))].push(cur + t);
                    }
                    break 'outer;
                }
                let mut i = s - l + 2;
                while i < s - 5 {
                    self.table[h(load64(src, i as usize))].push(cur + i);
                    i += 6;
                }
                let mut x = load64(src, (s - 2) as usize);
                self.table[h(x)].push(cur + s - 2);
                x >>= 8;
                self.table[h(x)].push(cur + s - 1);
                x >>= 8;
                let curr_hash = h(x);
                let candidates = self.table[curr_hash];
                cv = x;
                self.table[curr_hash] = Pair {
                    prev: candidates.cur,
                    cur: s + cur,
                };
                candidate = candidates.cur;
                let min_offset = cur + s - (MAX_OFFSET - 4);
                if candidate > min_offset {
                    if cv as u32 == load(candidate - cur) {
                        continue;
                    }
                    candidate = candidates.prev;
                    if candidate > min_offset && cv as u32 == load(candidate - cur) {
                        continue;
                    }
                }
                cv = x >> 8;
                s += 1;
                break;
            }
        }
        if (next_emit as usize) < src.len() && dst.n() != 0 {
            dst.literals(&src[next_emit as usize..]);
        }
    }
}
