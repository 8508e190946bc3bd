//! Pieces: fixed-size runs of a blob's exact bytes, addressed by BLAKE3.
//!
//! A blob of `n` bytes is cut at every multiple of [`PIECE_SIZE`]; the last piece may be
//! shorter, and an empty blob has no pieces. Fixed boundaries make a byte range map to
//! pieces by arithmetic alone, which is what range requests and swarming need. (The
//! content-defined chunks of layer recipes are a different thing, cut inside the
//! uncompressed tar.) Every piece is checked against its id before it is stored or
//! passed on, whoever sent it.

use std::fmt;
use std::ops::Range;

/// Bytes in every piece but the last of a blob: 1 MiB, large enough that per-piece
/// bookkeeping is negligible, small enough that a swarm of peers can split a layer.
pub const PIECE_SIZE: u64 = 1 << 20;

/// The BLAKE3 hash of a piece's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceId(pub [u8; 32]);

impl PieceId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        PieceId(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `bytes` are the piece this id names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; timing does not matter here, but it
        // is the hash type's own equality.
        blake3::hash(bytes) == blake3::Hash::from_bytes(self.0)
    }
}

impl fmt::Display for PieceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PieceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PieceId({})", &hex::encode(self.0)[..16])
    }
}

/// How a blob of a given size is cut into pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceLayout {
    size: u64,
}

impl PieceLayout {
    /// The layout of a blob of `size` bytes.
    pub fn new(size: u64) -> Self {
        PieceLayout { size }
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many pieces the blob has.
    pub fn count(&self) -> u64 {
        self.size.div_ceil(PIECE_SIZE)
    }

    /// The byte range of piece `index` within the blob (empty past the end).
    pub fn range(&self, index: u64) -> Range<u64> {
        let start = index.saturating_mul(PIECE_SIZE).min(self.size);
        let end = start.saturating_add(PIECE_SIZE).min(self.size);
        start..end
    }

    /// The piece that holds byte `offset` (which must be below the size).
    pub fn index_of(&self, offset: u64) -> u64 {
        offset / PIECE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_around_piece_boundaries() {
        for (size, count) in [
            (0, 0),
            (1, 1),
            (PIECE_SIZE - 1, 1),
            (PIECE_SIZE, 1),
            (PIECE_SIZE + 1, 2),
            (3 * PIECE_SIZE, 3),
        ] {
            assert_eq!(PieceLayout::new(size).count(), count, "size {size}");
        }
    }

    proptest! {
        #[test]
        fn pieces_tile_the_blob(size in 0u64..(5 * PIECE_SIZE)) {
            let layout = PieceLayout::new(size);
            let mut next = 0;
            for i in 0..layout.count() {
                let r = layout.range(i);
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty());
                prop_assert!(r.end - r.start <= PIECE_SIZE);
                prop_assert_eq!(layout.index_of(r.start), i);
                next = r.end;
            }
            prop_assert_eq!(next, size);
        }
    }

    #[test]
    fn id_matches_only_its_bytes() {
        let id = PieceId::of(b"hello");
        assert!(id.matches(b"hello"));
        assert!(!id.matches(b"hellp"));
    }
}
