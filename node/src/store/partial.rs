//! A blob being fetched: the pieces stored so far, which need not be in order.
//!
//! An origin sends a blob from a byte offset on, so a fetch from it fills a *prefix* of
//! whole pieces, and a prefix is what a `Range` request resumes from. Peers send pieces
//! in any order (several at once, rarest first), and a node serves what it holds to
//! other peers before its own copy is whole. So a partial keeps both: the prefix, and
//! the pieces held *beyond* it, by index. A piece that closes the gap after the prefix
//! joins it, with every held piece that then follows, so the prefix is always as long
//! as the pieces held allow.
//!
//! # Invariants
//! [`PartialBlob::check`] holds of every record the store writes, and the store's codec
//! refuses a record where it does not:
//! - the prefix's pieces are full but possibly the last, and `bytes` is their length;
//! - every index held beyond the prefix is past the prefix and not the index right
//!   after it (a piece there would have joined the prefix);
//! - pieces beyond the prefix are held only when the blob's size is known (a peer's
//!   piece always comes with it); then every index is within that size's
//!   [`PieceLayout`] and the prefix fits it.
//!
//! The rules for placing a piece ([`PartialBlob::place`]) are pure;
//! [`super::content::ContentStore`] wraps them with reference counts and totals, one
//! atomic batch per call.

use std::collections::BTreeMap;

use shoal_protocol::{PIECE_SIZE, PieceId, PieceLayout};

/// A blob being fetched: a prefix of pieces in order, and pieces held beyond it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialBlob {
    /// Bytes of the prefix.
    pub bytes: u64,
    /// The prefix: pieces 0, 1, … in order, all full but possibly the last.
    pub pieces: Vec<PieceId>,
    /// Pieces held beyond the prefix, by index. Never holds the index right after the
    /// prefix.
    pub later: BTreeMap<u64, PieceId>,
    /// The blob's size, known once a piece was put with it
    /// ([`super::Store::put_piece`]); unknown for a partial only ever appended to in
    /// order ([`super::Store::append_piece`]).
    pub size: Option<u64>,
}

/// What placing a piece did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// The piece is a new use: its reference count goes up.
    Stored,
    /// The partial already held these bytes at that index: nothing to store.
    Held,
}

/// Why a piece does not fit a partial blob. Every one is a bug in the caller (which has
/// checked the bytes against the piece id it asked for) or two writers at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Misfit {
    /// The piece was put for a blob of another size than the partial's pieces were.
    #[error("put for a blob of {put} bytes, but the partial's pieces were put for {held}")]
    SizeChanged {
        /// The size the partial holds pieces for.
        held: u64,
        /// The size given now.
        put: u64,
    },
    /// The pieces appended so far do not fit the size given now.
    #[error("the partial's first {pieces} pieces ({bytes} bytes) do not fit a blob of {size}")]
    PrefixMisfit {
        /// Pieces in the prefix.
        pieces: u64,
        /// Their bytes.
        bytes: u64,
        /// The size given.
        size: u64,
    },
    /// The index is past the blob's last piece.
    #[error("the blob has only {count} pieces")]
    OutOfRange {
        /// How many pieces the blob has.
        count: u64,
    },
    /// The bytes are not the length the blob's layout gives the piece.
    #[error("{len} bytes where the blob's layout has {expected}")]
    WrongLength {
        /// Bytes given.
        len: u64,
        /// Bytes the piece has.
        expected: u64,
    },
    /// An in-order append past the end of the prefix.
    #[error("appended after a prefix of {prefix} pieces (an append may not leave a gap)")]
    Gap {
        /// Pieces in the prefix.
        prefix: u64,
    },
    /// An append after a short piece, which ended the blob.
    #[error("appended after a short piece, which ends the blob")]
    AfterShort,
    /// The partial holds other bytes at that index.
    #[error("the partial holds piece {held} there")]
    Differs {
        /// What the partial holds at the index.
        held: PieceId,
    },
}

impl PartialBlob {
    /// Whether the prefix may grow (every piece in it is full). A partial whose prefix
    /// is closed holds every byte of its blob.
    pub fn open(&self) -> bool {
        self.bytes == self.pieces.len() as u64 * PIECE_SIZE
    }

    /// The id of the piece held at `index`, in the prefix or beyond it.
    pub fn piece_at(&self, index: u64) -> Option<PieceId> {
        match usize::try_from(index).ok().and_then(|i| self.pieces.get(i)) {
            Some(id) => Some(*id),
            None => self.later.get(&index).copied(),
        }
    }

    /// Every piece held, as (index, id), in index order.
    pub fn held(&self) -> impl Iterator<Item = (u64, PieceId)> + '_ {
        let prefix = self.pieces.iter().enumerate();
        prefix
            .map(|(i, id)| (i as u64, *id))
            .chain(self.later.iter().map(|(i, id)| (*i, *id)))
    }

    /// The ids of every piece held, prefix first, each use once (an id held at two
    /// indices comes twice, as it is counted twice).
    pub fn piece_ids(&self) -> impl Iterator<Item = &PieceId> + '_ {
        self.pieces.iter().chain(self.later.values())
    }

    /// How many pieces are held, prefix and beyond.
    pub fn piece_count(&self) -> u64 {
        (self.pieces.len() + self.later.len()) as u64
    }

    /// Whether the partial holds exactly a whole blob of `size` bytes, in order.
    pub fn covers(&self, size: u64) -> bool {
        self.later.is_empty() && self.bytes == size && self.size.is_none_or(|s| s == size)
    }

    /// Places piece `index`, `len` bytes with id `id`. With `size`, the piece is put
    /// for a blob of that many bytes, at any index its layout has; without, it is
    /// appended in order: `index` may not pass the prefix. Either way, if the partial
    /// knows its size the piece must fit that size's layout, and an index already held
    /// must hold the same id. A piece right after the prefix joins it, followed by
    /// every held piece that then follows. On error the partial is unchanged.
    pub fn place(
        &mut self,
        index: u64,
        id: PieceId,
        len: u64,
        size: Option<u64>,
    ) -> Result<Placed, Misfit> {
        let prefix = self.pieces.len() as u64;
        match (size, self.size) {
            (Some(put), Some(held)) if put != held => {
                return Err(Misfit::SizeChanged { held, put });
            }
            (Some(put), None) if !self.prefix_fits(put) => {
                return Err(Misfit::PrefixMisfit {
                    pieces: prefix,
                    bytes: self.bytes,
                    size: put,
                });
            }
            (None, _) if index > prefix => return Err(Misfit::Gap { prefix }),
            _ => {}
        }
        let layout = size.or(self.size).map(PieceLayout::new);
        if let Some(layout) = layout {
            let count = layout.count();
            if index >= count {
                return Err(Misfit::OutOfRange { count });
            }
            let range = layout.range(index);
            let expected = range.end - range.start;
            if len != expected {
                return Err(Misfit::WrongLength { len, expected });
            }
        }
        if let Some(held) = self.piece_at(index) {
            if held != id {
                return Err(Misfit::Differs { held });
            }
            self.size = size.or(self.size);
            return Ok(Placed::Held);
        }
        if index == prefix && !self.open() {
            return Err(Misfit::AfterShort);
        }
        self.size = size.or(self.size);
        if index > prefix {
            // Only with a size: an append past the prefix was refused above.
            self.later.insert(index, id);
            return Ok(Placed::Stored);
        }
        self.pieces.push(id);
        self.bytes += len;
        if let Some(layout) = layout {
            while let Some(next) = self.later.remove(&(self.pieces.len() as u64)) {
                let range = layout.range(self.pieces.len() as u64);
                self.pieces.push(next);
                self.bytes += range.end - range.start;
            }
        }
        Ok(Placed::Stored)
    }

    /// Whether the prefix is the start of a blob of `size` bytes: no more pieces than
    /// it has, all full but a last that ends the blob.
    fn prefix_fits(&self, size: u64) -> bool {
        let n = self.pieces.len() as u64;
        n <= PieceLayout::new(size).count() && self.bytes == n.saturating_mul(PIECE_SIZE).min(size)
    }

    /// Checks the invariants (module docs): why the record cannot be a partial blob
    /// the store wrote, if it cannot.
    pub fn check(&self) -> Result<(), &'static str> {
        let n = self.pieces.len() as u64;
        let (low, high) = (
            n.saturating_sub(1).saturating_mul(PIECE_SIZE),
            n.saturating_mul(PIECE_SIZE),
        );
        if self.bytes < low || self.bytes > high {
            return Err("the prefix's length does not fit its pieces");
        }
        if self.later.keys().next().is_some_and(|&first| first <= n) {
            return Err("a piece beyond the prefix has an index the prefix reaches");
        }
        match self.size {
            None if !self.later.is_empty() => {
                Err("pieces beyond the prefix of a blob of unknown size")
            }
            None => Ok(()),
            Some(size) if !self.prefix_fits(size) => Err("the prefix does not fit the size"),
            Some(size) => {
                let count = PieceLayout::new(size).count();
                match self.later.keys().next_back() {
                    Some(&last) if last >= count => Err("a piece beyond the blob's last"),
                    _ => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: u64 = PIECE_SIZE;

    fn id(i: u64) -> PieceId {
        PieceId::of(&i.to_le_bytes())
    }

    fn len(size: u64, index: u64) -> u64 {
        let r = PieceLayout::new(size).range(index);
        r.end - r.start
    }

    #[test]
    fn a_piece_closing_the_gap_pulls_the_held_run_into_the_prefix() {
        let size = 4 * P + 10;
        let mut p = PartialBlob::default();
        for i in [2, 4, 1] {
            assert_eq!(
                p.place(i, id(i), len(size, i), Some(size)),
                Ok(Placed::Stored)
            );
        }
        assert_eq!((p.pieces.len(), p.later.len()), (0, 3));
        p.place(0, id(0), P, Some(size)).unwrap();
        assert_eq!(p.pieces, vec![id(0), id(1), id(2)]);
        assert_eq!(p.bytes, 3 * P);
        assert_eq!(p.later.keys().copied().collect::<Vec<_>>(), vec![4]);
        p.place(3, id(3), P, Some(size)).unwrap();
        assert!(p.covers(size) && !p.covers(4 * P));
        assert_eq!(p.piece_count(), 5);
        p.check().unwrap();
    }

    #[test]
    fn misfits_leave_the_partial_unchanged() {
        let size = 2 * P + 1;
        let mut p = PartialBlob::default();
        p.place(1, id(1), P, Some(size)).unwrap();
        let before = p.clone();
        let cases = [
            (1, id(9), P, Some(size), Misfit::Differs { held: id(1) }),
            (3, id(3), 1, Some(size), Misfit::OutOfRange { count: 3 }),
            (
                2,
                id(2),
                2,
                Some(size),
                Misfit::WrongLength {
                    len: 2,
                    expected: 1,
                },
            ),
            (
                0,
                id(0),
                P,
                Some(size + 1),
                Misfit::SizeChanged {
                    held: size,
                    put: size + 1,
                },
            ),
            (2, id(2), 1, None, Misfit::Gap { prefix: 0 }),
        ];
        for (index, piece, n, s, want) in cases {
            assert_eq!(p.place(index, piece, n, s), Err(want));
            assert_eq!(p, before);
        }
    }

    #[test]
    fn an_appended_prefix_takes_a_size_only_if_it_fits() {
        let mut p = PartialBlob::default();
        p.place(0, id(0), P, None).unwrap();
        p.place(1, id(1), 5, None).unwrap();
        assert_eq!(p.place(2, id(2), 5, None), Err(Misfit::AfterShort));
        // Two pieces, the second short: only a blob of P + 5 bytes starts like that.
        let misfit = p.place(0, id(0), P, Some(2 * P));
        assert!(
            matches!(misfit, Err(Misfit::PrefixMisfit { .. })),
            "{misfit:?}"
        );
        assert_eq!(p.size, None);
        assert_eq!(p.place(0, id(0), P, Some(P + 5)), Ok(Placed::Held));
        assert_eq!(p.size, Some(P + 5));
        p.check().unwrap();
    }

    #[test]
    fn check_refuses_what_the_rules_never_write() {
        let bad = [
            PartialBlob {
                bytes: 3,
                ..PartialBlob::default()
            },
            PartialBlob {
                later: BTreeMap::from([(2, id(2))]),
                ..PartialBlob::default()
            },
            PartialBlob {
                later: BTreeMap::from([(0, id(0))]),
                size: Some(3 * P),
                ..PartialBlob::default()
            },
            PartialBlob {
                later: BTreeMap::from([(3, id(3))]),
                size: Some(3 * P),
                ..PartialBlob::default()
            },
            PartialBlob {
                bytes: P,
                pieces: vec![id(0)],
                size: Some(10),
                ..PartialBlob::default()
            },
        ];
        for p in bad {
            assert!(p.check().is_err(), "{p:?}");
        }
    }

    proptest! {
        /// Pieces put in any order, some twice: the partial is always what the pieces
        /// so far imply, and whole once all are in.
        #[test]
        fn any_order_builds_the_partial_the_pieces_imply(
            size in 1u64..(8 * P),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..24),
        ) {
            let count = PieceLayout::new(size).count();
            let mut p = PartialBlob::default();
            let mut have = std::collections::BTreeSet::new();
            let all = order.iter().map(|i| i.index(count as usize) as u64).chain(0..count);
            for i in all {
                let placed = p.place(i, id(i), len(size, i), Some(size)).unwrap();
                prop_assert_eq!(placed == Placed::Stored, have.insert(i));
                p.check().unwrap();
                let run = (0..).take_while(|i| have.contains(i)).count() as u64;
                prop_assert_eq!(p.pieces.len() as u64, run);
                prop_assert_eq!(p.bytes, (run * P).min(size));
                prop_assert_eq!(p.piece_count(), have.len() as u64);
                for j in 0..count {
                    prop_assert_eq!(p.piece_at(j), have.contains(&j).then(|| id(j)));
                }
            }
            prop_assert!(p.covers(size));
        }
    }
}
