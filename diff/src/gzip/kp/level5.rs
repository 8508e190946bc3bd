//! klauspost level 5, the default (what `pgzip.NewWriter` and `DefaultCompression`
//! use): a short (4-byte) hash table and a long (7-byte) one holding two candidates
//! per bucket, the longer match of the candidates taken, then a search for a longer
//! match ending where this one ends, then backward extension.

use super::fastgen::{History, Pair, hash4, hash7, load32, load64, match_len, rebase};
use super::tokens::Tokens;
use crate::gzip::token::{MAX_DISTANCE, MAX_MATCH};

const TABLE_BITS: u32 = 15;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const INPUT_MARGIN: i32 = 12 - 1;
const MIN_NON_LITERAL_BLOCK: usize = 1 + 1 + INPUT_MARGIN as usize;
const MAX_OFFSET: i32 = MAX_DISTANCE as i32;

pub(super) struct Level5 {
    h: History,
    table: Vec<i32>,
    long: Vec<Pair>,
}

impl Level5 {
    pub fn new() -> Self {
        Level5 {
            h: History::new(),
            table: vec![0; TABLE_SIZE],
            long: vec![Pair::default(); TABLE_SIZE],
        }
    }

    pub fn reset(&mut self) {
        self.h.reset();
    }

    #[inline]
    fn put_long(&mut self, h: usize, offset: i32) {
        self.long[h].push(offset);
    }

    /// Appends the tokens of `src` (at most 64 KiB) to `dst`, matching into history.
    pub fn encode(&mut self, dst: &mut Tokens, src: &[u8]) {
        rebase(&mut self.h, &mut [&mut self.table], &mut [&mut self.long]);
        let start = self.h.add_block(src);
        if src.len() < MIN_NON_LITERAL_BLOCK {
            // The caller stores or Huffman-codes such a block; Go only sets the count.
            dst.toks.resize(src.len(), 0);
            return;
        }
        let cur = self.h.cur;
        let src = std::mem::take(&mut self.h.hist);
        let mut s = start as i32;
        let mut next_emit = s;
        let s_limit = src.len() as i32 - INPUT_MARGIN;
        let mut cv = load64(&src, s as usize);
        'outer: loop {
            let mut next_s = s;
            let mut l: i32 = 0;
            let mut t: i32;
            loop {
                let next_hash_s = hash4(cv, TABLE_BITS);
                let next_hash_l = hash7(cv, TABLE_BITS);
                s = next_s;
                next_s = s + 1 + ((s - next_emit) >> 6);
                if next_s > s_limit {
                    break 'outer;
                }
                let s_cand = self.table[next_hash_s];
                let l_cand = self.long[next_hash_l];
                let next = load64(&src, next_s as usize);
                let entry = s + cur;
                self.table[next_hash_s] = entry;
                self.put_long(next_hash_l, entry);
                let next_hash_s = hash4(next, TABLE_BITS);
                let next_hash_l = hash7(next, TABLE_BITS);

                t = l_cand.cur - cur;
                if s - t < MAX_OFFSET {
                    if cv as u32 == load32(&src, t as usize) {
                        self.table[next_hash_s] = next_s + cur;
                        self.put_long(next_hash_l, next_s + cur);
                        let t2 = l_cand.prev - cur;
                        if s - t2 < MAX_OFFSET && cv as u32 == load32(&src, t2 as usize) {
                            l = self.matchlen(s + 4, t + 4, &src) + 4;
                            let ml1 = self.matchlen(s + 4, t2 + 4, &src) + 4;
                            if ml1 > l {
                                t = t2;
                                l = ml1;
                            }
                        }
                        break;
                    }
                    t = l_cand.prev - cur;
                    if s - t < MAX_OFFSET && cv as u32 == load32(&src, t as usize) {
                        self.table[next_hash_s] = next_s + cur;
                        self.put_long(next_hash_l, next_s + cur);
                        break;
                    }
                }

                t = s_cand - cur;
                if s - t < MAX_OFFSET && cv as u32 == load32(&src, t as usize) {
                    l = self.matchlen(s + 4, t + 4, &src) + 4;
                    let l_cand = self.long[next_hash_l];
                    self.table[next_hash_s] = next_s + cur;
                    self.put_long(next_hash_l, next_s + cur);
                    let t2 = l_cand.cur - cur;
                    if next_s - t2 < MAX_OFFSET {
                        if load32(&src, t2 as usize) == next as u32 {
                            let ml = self.matchlen(next_s + 4, t2 + 4, &src) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                break;
                            }
                        }
                        let t2 = l_cand.prev - cur;
                        if next_s - t2 < MAX_OFFSET && load32(&src, t2 as usize) == next as u32 {
                            let ml = self.matchlen(next_s + 4, t2 + 4, &src) + 4;
                            if ml > l {
                                t = t2;
                                s = next_s;
                                l = ml;
                                break;
                            }
                        }
                    }
                    break;
                }
                cv = next;
            }

            if l == 0 {
                l = match_len(&src[(s + 4) as usize..], &src[(t + 4) as usize..]) as i32 + 4;
            } else if l == MAX_MATCH as i32 {
                l += match_len(&src[(s + l) as usize..], &src[(t + l) as usize..]) as i32;
            }

            // A longer match that ends where this one does, starting two bytes in.
            let s_at = s + l;
            if l < 30 && s_at < s_limit {
                const SKIP_BEGINNING: i32 = 2;
                let e_long = self.long[hash7(load64(&src, s_at as usize), TABLE_BITS)].cur;
                let t2 = e_long - cur - l + SKIP_BEGINNING;
                let s2 = s + SKIP_BEGINNING;
                let off = s2 - t2;
                if t2 >= 0 && off < MAX_OFFSET && off > 0 {
                    let l2 = match_len(&src[s2 as usize..], &src[t2 as usize..]) as i32;
                    if l2 > l {
                        t = t2;
                        l = l2;
                        s = s2;
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
            s += l;
            next_emit = s;
            if next_s >= s {
                s = next_s + 1;
            }
            if s >= s_limit {
                break 'outer;
            }

            // Index every third position inside the match.
            let mut i = s - l + 1;
            if i < s - 1 {
                let mut cv = load64(&src, i as usize);
                let e = i + cur;
                self.table[hash4(cv, TABLE_BITS)] = e;
                self.put_long(hash7(cv, TABLE_BITS), e);
                cv >>= 8;
                self.put_long(hash7(cv, TABLE_BITS), e + 1);
                cv >>= 8;
                self.table[hash4(cv, TABLE_BITS)] = e + 2;
                i += 4;
                while i < s - 1 {
                    let cv = load64(&src, i as usize);
                    let e = i + cur;
                    self.put_long(hash7(cv, TABLE_BITS), e);
                    self.table[hash4(cv >> 8, TABLE_BITS)] = e + 1;
                    i += 3;
                }
            }

            let x = load64(&src, (s - 1) as usize);
            let o = cur + s - 1;
            self.table[hash4(x, TABLE_BITS)] = o;
            self.put_long(hash7(x, TABLE_BITS), o);
            cv = x >> 8;
        }
        if (next_emit as usize) < src.len() && dst.n() != 0 {
            dst.literals(&src[next_emit as usize..]);
        }
        self.h.hist = src;
    }

    /// Match length at `s` against `t`, at most 258 - 4 (Go's `matchlen`).
    fn matchlen(&self, s: i32, t: i32, src: &[u8]) -> i32 {
        let s1 = (s as usize + MAX_MATCH - 4).min(src.len());
        match_len(&src[s as usize..s1], &src[t as usize..]) as i32
    }
}
