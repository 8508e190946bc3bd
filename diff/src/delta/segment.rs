//! Cutting a large target into segments and finding, for each, the window of the base
//! to encode it against.
//!
//! Segments end on the target's content chunk boundaries (FastCDC with the store's
//! parameters, so a segment is a run of whole chunks the store knows): a segment ends
//! at the first boundary at or past [`Budget::segment`](super::Budget::segment) bytes.
//!
//! Windows are found by anchors: content-defined positions where a gear hash of the 64
//! bytes before them has its top bits zero (about one per KiB, never closer than 64
//! bytes). The base's anchors go in an index (hash → offset, at most [`MAX_ANCHORS`]
//! entries whatever the base's size: larger bases get sparser anchors; a hash seen at
//! two offsets is dropped). A segment's anchors that the index knows vote for their
//! base offsets, and the window goes where it covers the most votes, centred on them.
//! With no votes (dense edits, as in rebuilt binaries, leave few 64-byte runs intact)
//! the window sits at the segment's proportional place in the base.

use std::collections::HashMap;

use fastcdc::v2020::FastCDC;
use shoal_protocol::recipe::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};

/// Most anchors indexed for one base (about 16 bytes each in the index).
pub(crate) const MAX_ANCHORS: u64 = 1 << 19;
/// Bytes an anchor's hash covers (a 64-bit gear hash forgets older bytes).
const ANCHOR_SPAN: usize = 64;
/// Fewest bytes between two anchors, so that runs of one byte give no flood of them.
const ANCHOR_GAP: usize = 64;
/// An index entry for a hash seen at more than one offset.
const AMBIGUOUS: u64 = u64::MAX;

/// The gear table: 256 pseudo-random words (splitmix64 from a fixed seed).
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state: u64 = 0x5348_4f41_4c5f_4445; // "SHOAL_DE"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// Calls `f(hash, offset)` for each anchor of `data`, in order. An anchor has on
/// average one chance in 2^`bits` per byte.
fn anchors(data: &[u8], bits: u32, mut f: impl FnMut(u64, usize)) {
    let mask = !0u64 << (64 - bits);
    let mut hash = 0u64;
    let mut next = ANCHOR_SPAN;
    for (i, &b) in data.iter().enumerate() {
        hash = (hash << 1).wrapping_add(GEAR[b as usize]);
        if i + 1 >= next && hash & mask == 0 {
            f(hash, i + 1);
            next = i + 1 + ANCHOR_GAP;
        }
    }
}

/// One anchor per 2^bits bytes on average: per KiB, or sparser for a base so large
/// that it would have more than [`MAX_ANCHORS`].
fn anchor_bits(base_len: u64) -> u32 {
    let mut bits = 10;
    while base_len >> bits > MAX_ANCHORS {
        bits += 1;
    }
    bits
}

/// The base's anchors.
pub(crate) struct BaseIndex {
    bits: u32,
    at: HashMap<u64, u64>,
}

impl BaseIndex {
    pub(crate) fn new(base: &[u8]) -> Self {
        let bits = anchor_bits(base.len() as u64);
        let mut at = HashMap::new();
        anchors(base, bits, |hash, offset| {
            at.entry(hash)
                .and_modify(|o| *o = AMBIGUOUS)
                .or_insert(offset as u64);
        });
        BaseIndex { bits, at }
    }
}

/// A segment of the target and the window of the base it is encoded against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub target_start: usize,
    pub target_len: usize,
    pub base_start: usize,
    pub base_len: usize,
}

/// Cuts `target` into segments of about `segment` bytes along its chunk boundaries.
/// A last segment shorter than a quarter of `segment` joins the one before, so no
/// segment exceeds `2 * segment + CHUNK_MAX` bytes.
pub(crate) fn cut(target: &[u8], segment: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for chunk in FastCDC::new(target, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX) {
        let end = chunk.offset + chunk.length;
        if end - start >= segment {
            out.push((start, end - start));
            start = end;
        }
    }
    if start < target.len() {
        match out.last_mut() {
            Some(last) if target.len() - start < segment / 4 => last.1 = target.len() - last.0,
            _ => out.push((start, target.len() - start)),
        }
    }
    out
}

/// Plans every segment of `target`: where it is, and the window of `base` (at most
/// `window` bytes) it is encoded against.
pub(crate) fn plan(base: &[u8], target: &[u8], segment: usize, window: usize) -> Vec<Piece> {
    let segments = cut(target, segment);
    let window = window.min(base.len());
    let index = (window < base.len()).then(|| BaseIndex::new(base));
    segments
        .into_iter()
        .map(|(target_start, target_len)| {
            let base_start = match &index {
                None => 0,
                Some(index) => place(index, base.len(), target, target_start, target_len, window),
            };
            Piece {
                target_start,
                target_len,
                base_start,
                base_len: window,
            }
        })
        .collect()
}

/// Where a window of `window` bytes (less than `base_len`) should start for the
/// segment `target[start .. start + len]`.
fn place(
    index: &BaseIndex,
    base_len: usize,
    target: &[u8],
    start: usize,
    len: usize,
    window: usize,
) -> usize {
    let mut votes: Vec<u64> = Vec::new();
    anchors(
        &target[start..start + len],
        index.bits,
        |hash, _| match index.at.get(&hash) {
            Some(&at) if at != AMBIGUOUS => votes.push(at),
            _ => {}
        },
    );
    let centre = if votes.is_empty() {
        // The segment's middle, scaled to the base.
        let middle = (start + len / 2) as u128;
        (middle * base_len as u128 / target.len().max(1) as u128) as usize
    } else {
        votes.sort_unstable();
        // The run of votes spanning less than a window with the most votes in it.
        let (mut best, mut best_count, mut lo) = ((0, 0), 0, 0);
        for hi in 0..votes.len() {
            while votes[hi] - votes[lo] >= window as u64 {
                lo += 1;
            }
            if hi - lo + 1 > best_count {
                best_count = hi - lo + 1;
                best = (lo, hi);
            }
        }
        ((votes[best.0] + votes[best.1]) / 2) as usize
    };
    centre.saturating_sub(window / 2).min(base_len - window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn anchors_are_content_defined_and_spaced() {
        let data = random(1 << 20, 1);
        let mut at = Vec::new();
        anchors(&data, 10, |h, o| at.push((h, o)));
        // About one per KiB.
        assert!((700..1400).contains(&at.len()), "{} anchors", at.len());
        assert!(at.windows(2).all(|w| w[1].1 - w[0].1 >= ANCHOR_GAP));
        // The same content shifted has the same anchors, shifted.
        let mut shifted = random(1000, 2);
        shifted.extend_from_slice(&data);
        let mut again = Vec::new();
        anchors(&shifted, 10, |h, o| again.push((h, o.wrapping_sub(1000))));
        let tail: Vec<_> = again
            .iter()
            .filter(|a| (4096..1 << 20).contains(&a.1))
            .collect();
        assert!(tail.iter().all(|a| at.contains(a)));
        assert!(tail.len() + 10 > at.len());
        // Zeros have no flood of anchors.
        let mut n = 0;
        anchors(&vec![0; 1 << 20], 10, |_, _| n += 1);
        assert!(n <= (1 << 20) / ANCHOR_GAP);
    }

    #[test]
    fn segments_end_on_chunk_boundaries_and_cover_the_target() {
        let target = random(10 << 20, 3);
        let ends: Vec<usize> = FastCDC::new(&target, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
            .map(|c| c.offset + c.length)
            .collect();
        let segments = cut(&target, 1 << 20);
        let mut pos = 0;
        for &(start, len) in &segments {
            assert_eq!(start, pos);
            assert!(len >= 1 << 20 || start + len == target.len());
            assert!(len < (2 << 20) + CHUNK_MAX as usize);
            pos += len;
            assert!(ends.contains(&pos));
        }
        assert_eq!(pos, target.len());
        assert_eq!(cut(&[], 1 << 20), vec![]);
        assert_eq!(cut(&[1; 10], 1 << 20), vec![(0, 10)]);
    }

    #[test]
    fn windows_follow_moved_content() {
        // The target is the base's second half then its first: each segment's window
        // must be where its content is in the base.
        let base = random(8 << 20, 4);
        let mut target = base[4 << 20..].to_vec();
        target.extend_from_slice(&base[..4 << 20]);
        let pieces = plan(&base, &target, 1 << 20, 2 << 20);
        assert!(pieces.len() >= 6);
        for p in pieces {
            // Where the segment's content is in the base: one run, or two for the
            // segment that straddles the swap (the window holds the larger).
            let end = p.target_start + p.target_len;
            let split = (4 << 20usize).clamp(p.target_start, end);
            let (first, second) = (split - p.target_start, end - split);
            let (from, len) = if first >= second {
                (p.target_start + (4 << 20), first)
            } else {
                (split - (4 << 20), second)
            };
            assert!(
                p.base_start <= from && from + len <= p.base_start + p.base_len,
                "{p:?} misses its content at {from}+{len}"
            );
        }
    }

    #[test]
    fn the_index_is_bounded_whatever_the_base() {
        assert_eq!(anchor_bits(0), 10);
        assert_eq!(anchor_bits(512 << 20), 10);
        assert_eq!(anchor_bits((512 << 20) + 1024), 11);
        for len in [1u64 << 30, 1 << 34, 1 << 40, u64::MAX] {
            let bits = anchor_bits(len);
            assert!(len >> bits <= MAX_ANCHORS && bits < 64, "{len}: {bits}");
        }
        let index = BaseIndex::new(&random(4 << 20, 5));
        assert!((3000..6000).contains(&index.at.len()), "{}", index.at.len());
    }
}
