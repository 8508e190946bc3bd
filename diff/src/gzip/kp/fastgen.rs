//! The history shared by klauspost's fast levels (its `fastGen`): blocks appended to
//! one buffer, positions in hash tables kept as offsets from `cur` so the buffer can
//! slide without rewriting the tables.

use crate::gzip::token::MAX_DISTANCE;

/// Largest block a fast level encodes at once.
pub(super) const MAX_BLOCK: usize = 65535;
/// Room kept for history: five blocks.
const ALLOC_HISTORY: usize = MAX_BLOCK * 5;
/// Offsets are rebased before `cur` passes this.
pub(super) const BUFFER_RESET: i32 = i32::MAX - ALLOC_HISTORY as i32 - MAX_BLOCK as i32 - 1;

pub(super) struct History {
    pub hist: Vec<u8>,
    pub cur: i32,
}

impl History {
    pub fn new() -> Self {
        History {
            hist: Vec::with_capacity(ALLOC_HISTORY),
            cur: MAX_BLOCK as i32,
        }
    }

    /// Appends `src`, first sliding the buffer down to its last 32 KiB if it would
    /// not fit. Returns where `src` starts in the buffer.
    pub fn add_block(&mut self, src: &[u8]) -> usize {
        if self.hist.len() + src.len() > ALLOC_HISTORY {
            let offset = self.hist.len() - MAX_DISTANCE;
            self.hist.copy_within(offset.., 0);
            self.hist.truncate(MAX_DISTANCE);
            self.cur += offset as i32;
        }
        let s = self.hist.len();
        self.hist.extend_from_slice(src);
        s
    }

    /// Forgets the history: every stored position falls out of reach.
    pub fn reset(&mut self) {
        if self.cur <= BUFFER_RESET {
            self.cur += (MAX_DISTANCE + self.hist.len()) as i32;
        }
        self.hist.clear();
    }
}

#[inline]
pub(super) fn load32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline]
pub(super) fn load64(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(x)
}

/// Hash of the low 4 bytes of `u` to `bits` bits.
#[inline]
pub(super) fn hash4(u: u64, bits: u32) -> usize {
    ((u as u32).wrapping_mul(2654435761) >> (32 - bits)) as usize
}

/// Hash of the low 5 bytes of `u` to `bits` bits.
#[inline]
pub(super) fn hash5(u: u64, bits: u32) -> usize {
    ((u << 24).wrapping_mul(889523592379) >> (64 - bits)) as usize
}

/// Hash of the low 7 bytes of `u` to `bits` bits.
#[inline]
pub(super) fn hash7(u: u64, bits: u32) -> usize {
    ((u << 8).wrapping_mul(58295818150454627) >> (64 - bits)) as usize
}

/// Bytes `a` and `b` have in common from the start (`a` the shorter).
#[inline]
pub(super) fn match_len(a: &[u8], b: &[u8]) -> usize {
    let mut n = 0;
    let (mut a, mut b) = (a, b);
    while a.len() >= 8 {
        let x = load64(a, 0) ^ load64(b, 0);
        if x != 0 {
            return n + (x.trailing_zeros() / 8) as usize;
        }
        n += 8;
        a = &a[8..];
        b = &b[8..];
    }
    n + a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A hash bucket holding the two latest positions.
#[derive(Clone, Copy, Default)]
pub(super) struct Pair {
    pub cur: i32,
    pub prev: i32,
}

impl Pair {
    #[inline]
    pub fn push(&mut self, offset: i32) {
        self.prev = self.cur;
        self.cur = offset;
    }
}

/// Before `cur` can overflow: rebases the tables' offsets (`cur` becomes 32 KiB),
/// dropping positions already out of reach, or clears them when there is no history.
/// `singles` and `pairs` are every table the level keeps.
pub(super) fn rebase(h: &mut History, singles: &mut [&mut [i32]], pairs: &mut [&mut [Pair]]) {
    while h.cur >= BUFFER_RESET {
        let max = MAX_DISTANCE as i32;
        if h.hist.is_empty() {
            for t in singles.iter_mut() {
                t.fill(0);
            }
            for t in pairs.iter_mut() {
                t.fill(Pair::default());
            }
            h.cur = max;
            break;
        }
        let cur = h.cur;
        let min_off = cur + h.hist.len() as i32 - max;
        let shift = |v: i32| if v <= min_off { 0 } else { v - cur + max };
        for t in singles.iter_mut() {
            for v in t.iter_mut() {
                *v = shift(*v);
            }
        }
        for t in pairs.iter_mut() {
            for p in t.iter_mut() {
                *p = Pair {
                    cur: shift(p.cur),
                    prev: shift(p.prev),
                };
            }
        }
        h.cur = max;
    }
}
