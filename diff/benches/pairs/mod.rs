//! Generated file pairs for the delta benchmark and the `delta` example: text-like
//! content, and versions of a file with edits of the kinds a rebuild or a new release
//! makes. Deterministic for a seed.

#![allow(dead_code)] // the bench and the example each use part of this

/// splitmix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// About `len` bytes of text-like content: lines of words from a vocabulary of 4096
/// made-up words, so it compresses about 3:1 as source code and logs do.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let vocabulary: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let n = 2 + rng.below(9);
            (0..n).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let words = 3 + rng.below(12);
        for w in 0..words {
            if w > 0 {
                out.push(b' ');
            }
            // Skewed: low indices far more often, as in natural text.
            let r = rng.below(64);
            out.extend_from_slice(&vocabulary[r * r]);
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

/// A new version of `base` with `edits` changes spread over it: a third small
/// replacements (1 to 64 bytes), a third insertions and a third deletions (up to
/// 4 KiB), then `append` new bytes at the end. Built in one pass, one copy.
pub fn edited(base: &[u8], edits: usize, append: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut at: Vec<usize> = (0..edits).map(|_| rng.below(base.len().max(1))).collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(base.len() + edits * 2048 + append);
    let mut pos = 0;
    for (i, &p) in at.iter().enumerate() {
        if p < pos {
            continue;
        }
        out.extend_from_slice(&base[pos..p]);
        pos = p;
        match i % 3 {
            0 => {
                let n = (1 + rng.below(64)).min(base.len() - pos);
                out.extend(rng.bytes(n));
                pos += n;
            }
            1 => {
                let n = 1 + rng.below(4096);
                out.extend(rng.bytes(n));
            }
            _ => pos += (1 + rng.below(4096)).min(base.len() - pos),
        }
    }
    out.extend_from_slice(&base[pos..]);
    out.extend(rng.bytes(append));
    out
}

/// A "rebuilt" version of a binary: one 4-byte change per 2 KiB on average (the
/// addresses and offsets a relink moves), 16 insertions and 8 deletions of 16 bytes to
/// 4 KiB (sections that grew, shrank and shifted what follows).
pub fn rebuilt(binary: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = binary.to_vec();
    if out.len() < 8192 {
        return out;
    }
    for _ in 0..out.len() / 2048 {
        let i = rng.below(out.len() - 4);
        let word = rng.next().to_le_bytes();
        out[i..i + 4].copy_from_slice(&word[..4]);
    }
    for _ in 0..16 {
        let i = rng.below(out.len());
        let n = 16 + rng.below(4080);
        out.splice(i..i, rng.bytes(n));
    }
    for _ in 0..8 {
        let i = rng.below(out.len() - 4096);
        let n = 16 + rng.below(4080);
        out.drain(i..i + n);
    }
    out
}
