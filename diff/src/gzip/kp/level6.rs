//! klauspost level 6: level 5's two tables (the long one keeping two positions per
//! bucket), plus a check of the last match's distance and denser indexing.

use super::fastgen::{History, Pair, hash4, hash7, load32, load64, match_len, rebase};
use super::tokens::Tokens;
use crate::gzip::token::{MAX_DISTANCE, MAX_MATCH};

const TABLE_BITS: u32 = 15;
const INPUT_MARGIN: i32 = 12 - 1;
const MIN_NON_LITERAL_BLOCK: usize = 1 + 1 + INPUT_MARGIN as usize;
const MAX_OFFSET: i32 = MAX_DISTANCE as i32;

pub(super) struct Level6 {
    h: History,
    table: Vec<i32>,
    long: Vec<Pair>,
}

fn hs(u: u64) -> usize {
    hash4(u, TABLE_BITS)
}

fn hl(u: u64) -> usize {
    hash7(u, TABLE_BITS)
}

/// Match length at `s` against `t`, at most 258 - 4 (Go's `matchlen`).
fn matchlen(src: &[u8], s: i32, t: i32) -> i32 {
    let s1 = (s as usize + MAX_MATCH - 4).min(src.len());
    match_len(&src[s as usize..s1], &src[t as usize..]) as i32
}

/// Unbounded match length at `s` against `t` (Go's `matchlenLong`).
fn matchlen_long(src: &[u8], s: i32, t: i32) -> i32 {
    match_len(&src[s as usize..], &src[t as usize..]) as i32
}

impl Level6 {
    pub fn new() -> Self {
        Level6 {
            h: History::new(),
            table: vec![0; 1 << TABLE_BITS],
            long: vec![Pair::default(); 1 << TABLE_BITS],
        }
    }

    pub fn reset(&mut self) {
        self.h.reset();
    }

    pub fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        rebase(&mut self.h, &mut [&mut self.table], &mut [&mut self.long]);
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
        let mut repeat: i32 = 1;
        loop {
            let mut next_s = s;
            let mut l: i32 = 0;
            let mut t: i32;
            loop {
                let (nhs, nhl) = (hs(cv), hl(cv));
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 7);
                if next_s > s_limit {
                    return self.remainder(dst, src, next_emit);
                }
                let s_cand = self.table[nhs];
                let l_cand = self.long[nhl];
                let next = load64(src, next_s as usize);
                self.table[nhs] = s + cur;
                self.long[nhl].push(s + cur);
                let (nhs, nhl) = (hs(next), hl(next));

                t = l_cand.cur - cur;
                if s - t < MAX_OFFSET {
                    if cv as u32 == load(t) {
                        self.table[nhs] = next_s + cur;
                        self.long[nhl].push(next_s + cur);
                        let t2 = l_cand.prev - cur;
                        if s - t2 < MAX_OFFSET && cv as u32 == load(t2) {
                            l = matchlen(src, s + 4, t + 4) + 4;
                            let ml1 = matchlen(src, s + 4, t2 + 4) + 4;
                            if ml1 > l {
                                t = t2;
                                l = ml1;
                            }
                        }
                        break;
                    }
                    t = l_cand.prev - cur;
                    if s - t < MAX_OFFSET && cv as u32 == load(t) {
                        self.table[nhs] = next_s + cur;
                        self.long[nhl].push(next_s + cur);
                        break;
                    }
                }

                t = s_cand - cur;
                if s - t < MAX_OFFSET && cv as u32 == load(t) {
                    l = matchlen(src, s + 4, t + 4) + 4;
                    let l_cand = self.long[nhl];
                    self.table[nhs] = next_s + cur;
                    self.long[nhl].push(next_s + cur);

                    // The distance of the last match, one byte on.
                    let t2 = s - repeat + 1;
                    if load(t2) == (cv >> 8) as u32 {
                        let ml = matchlen(src, s + 5, t2 + 4) + 4;
                        if ml > l {
                            t = t2;
                            l = ml;
                            s += 1;
                            break;
                        }
                    }
                    let t2 = l_cand.cur - cur;
                    if next_s - t2 < MAX_OFFSET {
                        if load(t2) == next as u32 {
                            let ml = matchlen(src, next_s + 4, t2 + 4) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                            }
                        }
                        let t2 = l_cand.prev - cur;
                        if next_s - t2 < MAX_OFFSET && load(t2) == next as u32 {
                            let ml = matchlen(src, next_s + 4, t2 + 4) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                            }
                        }
                    }
                    break;
                }
                cv = next;
            }

            if l == 0 {
                l = matchlen_long(src, s + 4, t + 4) + 4;
            } else if l == MAX_MATCH as i32 {
                l += matchlen_long(src, s + l, t + l);
            }

            // Longer matches ending where this one does, starting two bytes in.
            let s_at = s + l;
            if s_at < s_limit {
                let e_long = self.long[hl(load64(src, s_at as usize))];
                let s2 = s + 2;
                let t2 = e_long.cur - cur - l + 2;
                let off = s2 - t2;
                if off < MAX_OFFSET {
                    if off > 0 && t2 >= 0 {
                        let l2 = matchlen_long(src, s2, t2);
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                    let t2 = e_long.prev - cur - l + 2;
                    let off = s2 - t2;
                    if off > 0 && off < MAX_OFFSET && t2 >= 0 {
                        let l2 = matchlen_long(src, s2, t2);
                        if l2 > l {
                            t = t2;
                            l = l2;
                            s = s2;
                        }
                    }
                }
            }

            while t > 0 && s > next_emit && src[(t - 1) as usize] == src[(s - 1) as usize] {
                s -= 1;
                t -= 1;
                l += 1;
            }
            if next_emit < s {
                dst.literals(&src[next_emit as usize..s as usize]);
            }
            dst.long_match(l as usize, (s - t) as usize);
            repeat = s - t;
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }
            if s >= s_limit {
                let mut i = next_s + 1;
                while i < src.len() as i32 - 8 {
                    let cv = load64(src, i as usize);
                    self.table[hs(cv)] = i + cur;
                    self.long[hl(cv)].push(i + cur);
                    i += 2;
                }
                return self.remainder(dst, src, next_emit);
            }
            let mut i = next_s + 1;
            while i < s - 1 {
                let cv = load64(src, i as usize);
                let e = i + cur;
                self.table[hs(cv)] = e;
                self.long[hl(cv)].push(e);
                self.long[hl(cv >> 8)].push(e + 1);
                i += 2;
            }
            cv = load64(src, s as usize);
        }
    }

    fn remainder(&self, dst: &mut Tokens, src: &[u8], next_emit: i32) {
        if (next_emit as usize) < src.len() && dst.n() != 0 {
            dst.literals(&src[next_emit as usize..]);
        }
    }
}
