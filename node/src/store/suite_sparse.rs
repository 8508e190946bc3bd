//! The suite for partial blobs that hold pieces out of order ([`Store::put_piece`]), over
//! every engine: pieces land in any order, join the prefix when the gap closes, are
//! counted once per use, and all go when the partial does.

use std::collections::BTreeSet;

use proptest::prelude::*;
use shoal_protocol::{Digest, PIECE_SIZE, PieceId, PieceLayout};

use super::suite::{blob, stores};
use super::{PartialBlob, Store, StoreError, Totals, read_piece};

const P: usize = PIECE_SIZE as usize;

/// Piece `index` of `bytes`, as the layout cuts it.
fn piece(bytes: &[u8], index: u64) -> &[u8] {
    let r = PieceLayout::new(bytes.len() as u64).range(index);
    &bytes[r.start as usize..r.end as usize]
}

/// Puts piece `index` of `bytes` as a peer's piece would arrive.
fn put(store: &dyn Store, d: &Digest, bytes: &[u8], index: u64) -> Result<PieceId, StoreError> {
    store.put_piece(d, bytes.len() as u64, index, piece(bytes, index))
}

/// The message of the conflict `r` must be.
fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::Conflict(why)) => why,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn partial(store: &dyn Store, d: &Digest) -> PartialBlob {
    store.partial(d).unwrap().expect("a partial")
}

fn later(p: &PartialBlob) -> Vec<u64> {
    p.later.keys().copied().collect()
}

/// The bytes of `ids`, each checked against its id.
fn read_all<'a>(store: &dyn Store, ids: impl IntoIterator<Item = &'a PieceId>) -> Vec<u8> {
    ids.into_iter()
        .flat_map(|id| read_piece(store, id).unwrap())
        .collect()
}

#[test]
fn pieces_put_out_of_order_join_the_prefix_when_the_gap_closes() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(4 * P + 10, 1);
        let d = Digest::of(&bytes);
        put(store, &d, &bytes, 2).unwrap();
        put(store, &d, &bytes, 3).unwrap();
        let p = partial(store, &d);
        assert_eq!(
            (p.bytes, p.pieces.len(), later(&p)),
            (0, 0, vec![2, 3]),
            "{name}"
        );
        assert_eq!(p.size, Some(bytes.len() as u64), "{name}");
        assert!(p.piece_at(0).is_none() && p.piece_at(2).is_some(), "{name}");

        put(store, &d, &bytes, 0).unwrap();
        let p = partial(store, &d);
        assert_eq!(
            (p.bytes, p.pieces.len(), later(&p)),
            (PIECE_SIZE, 1, vec![2, 3]),
            "{name}"
        );

        // Piece 1 closes the gap: 2 and 3 follow it into the prefix.
        put(store, &d, &bytes, 1).unwrap();
        let p = partial(store, &d);
        assert_eq!(
            (p.bytes, p.pieces.len(), later(&p)),
            (4 * PIECE_SIZE, 4, vec![]),
            "{name}"
        );
        assert_eq!(read_all(store, &p.pieces), bytes[..4 * P], "{name}");
        let t = store.totals().unwrap();
        assert_eq!(
            (t.pieces, t.piece_bytes, t.partial_blobs),
            (4, 4 * PIECE_SIZE, 1),
            "{name}"
        );

        put(store, &d, &bytes, 4).unwrap();
        let rec = store.complete(&d, bytes.len() as u64, None).unwrap();
        assert_eq!(read_all(store, &rec.pieces), bytes, "{name}");
        let t = store.totals().unwrap();
        assert_eq!(
            (t.blobs, t.pieces, t.piece_bytes, t.partial_blobs),
            (1, 5, bytes.len() as u64, 0),
            "{name}"
        );
    }
}

#[test]
fn the_short_last_piece_may_come_first() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(2 * P + 7, 2);
        let d = Digest::of(&bytes);
        put(store, &d, &bytes, 2).unwrap();
        let p = partial(store, &d);
        assert_eq!((p.bytes, later(&p)), (0, vec![2]), "{name}");
        assert!(p.open(), "{name}: the prefix is empty, so open");
        assert_eq!(store.totals().unwrap().piece_bytes, 7, "{name}");
        put(store, &d, &bytes, 0).unwrap();
        put(store, &d, &bytes, 1).unwrap();
        let p = partial(store, &d);
        assert_eq!((p.bytes, p.pieces.len()), (bytes.len() as u64, 3), "{name}");
        assert!(!p.open() && p.later.is_empty(), "{name}");
        let rec = store.complete(&d, bytes.len() as u64, None).unwrap();
        assert_eq!(read_all(store, &rec.pieces), bytes, "{name}");
    }
}

#[test]
fn putting_a_held_piece_again_changes_nothing() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(3 * P, 3);
        let d = Digest::of(&bytes);
        let first = put(store, &d, &bytes, 2).unwrap();
        put(store, &d, &bytes, 0).unwrap();
        let (p, t) = (partial(store, &d), store.totals().unwrap());
        // Beyond the prefix, and in it.
        assert_eq!(put(store, &d, &bytes, 2).unwrap(), first, "{name}");
        put(store, &d, &bytes, 0).unwrap();
        assert_eq!(partial(store, &d), p, "{name}");
        assert_eq!(store.totals().unwrap(), t, "{name}");
        // Counted once each: one discard releases them all.
        store.discard_partial(&d).unwrap();
        assert_eq!(store.totals().unwrap(), Totals::default(), "{name}");
        assert!(store.piece(&first).unwrap().is_none(), "{name}");
    }
}

#[test]
fn other_bytes_at_a_held_index_are_a_conflict() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(3 * P, 4);
        let d = Digest::of(&bytes);
        put(store, &d, &bytes, 1).unwrap();
        put(store, &d, &bytes, 0).unwrap();
        put(store, &d, &bytes, 2).unwrap();
        let (p, t) = (partial(store, &d), store.totals().unwrap());
        let other = blob(P, 5);
        for index in [0, 2] {
            let why = conflict(store.put_piece(&d, 3 * PIECE_SIZE, index, &other));
            assert!(
                why.contains(&format!("piece {index} of {d}")),
                "{name}: {why}"
            );
        }
        assert_eq!(partial(store, &d), p, "{name}");
        assert_eq!(store.totals().unwrap(), t, "{name}");
        assert!(
            store.piece(&PieceId::of(&other)).unwrap().is_none(),
            "{name}"
        );
    }
}

#[test]
fn wrong_lengths_indices_and_sizes_are_refused_and_store_nothing() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let size = 2 * PIECE_SIZE + 1;
        let d = Digest::of(b"blob");
        let full = blob(P, 6);
        let refused = [
            (0, &full[..P - 1]),
            (2, &full[..2]),
            (2, &full[..]),
            (3, &full[..1]),
            (u64::MAX, &full[..1]),
        ];
        for (index, bytes) in refused {
            let why = conflict(store.put_piece(&d, size, index, bytes));
            assert!(
                why.contains(&format!("piece {index} of {d} put")),
                "{name}: {why}"
            );
            assert!(store.partial(&d).unwrap().is_none(), "{name}");
        }
        assert!(matches!(
            store.put_piece(&d, 0, 0, b""),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.totals().unwrap(), Totals::default(), "{name}");

        // Once a piece is in, the size is the partial's.
        store.put_piece(&d, size, 1, &full).unwrap();
        let why = conflict(store.put_piece(&d, size + 1, 0, &full));
        assert!(why.contains("put for a blob of"), "{name}: {why}");
        assert_eq!(partial(store, &d).size, Some(size), "{name}");
        // An in-order append must fit the layout too.
        conflict(store.append_piece(&d, 0, &full[..10]));
    }
}

#[test]
fn complete_is_refused_while_a_gap_remains() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(3 * P + 1, 7);
        let (d, size) = (Digest::of(&bytes), bytes.len() as u64);
        for index in [0, 2, 3] {
            put(store, &d, &bytes, index).unwrap();
        }
        let why = conflict(store.complete(&d, size, None));
        assert!(why.contains("gap"), "{name}: {why}");
        assert!(store.blob(&d).unwrap().is_none(), "{name}");
        put(store, &d, &bytes, 1).unwrap();
        // Whole now, but only as the size it was put with.
        conflict(store.complete(&d, 3 * PIECE_SIZE, None));
        let rec = store.complete(&d, size, Some("x/y")).unwrap();
        assert_eq!(read_all(store, &rec.pieces), bytes, "{name}");
        let t = store.totals().unwrap();
        assert_eq!(
            (t.blobs, t.blob_bytes, t.partial_blobs),
            (1, size, 0),
            "{name}"
        );
    }
}

#[test]
fn discard_releases_the_prefix_and_every_piece_beyond_it() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(5 * P + 3, 8);
        let d = Digest::of(&bytes);
        let ids: Vec<PieceId> = [0, 1, 3, 5]
            .into_iter()
            .map(|i| put(store, &d, &bytes, i).unwrap())
            .collect();
        let p = partial(store, &d);
        assert_eq!((p.pieces.len(), later(&p)), (2, vec![3, 5]), "{name}");
        assert_eq!(p.piece_count(), 4, "{name}");
        assert_eq!(p.piece_ids().copied().collect::<Vec<_>>(), ids, "{name}");
        store.discard_partial(&d).unwrap();
        assert!(store.partial(&d).unwrap().is_none(), "{name}");
        assert!(store.partials().unwrap().is_empty(), "{name}");
        assert_eq!(store.totals().unwrap(), Totals::default(), "{name}");
        for id in &ids {
            assert!(store.piece(id).unwrap().is_none(), "{name}: {id}");
        }
    }
}

#[test]
fn a_piece_shared_by_two_partials_and_a_blob_is_counted_per_use() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let shared = blob(P, 9);
        let x = PieceId::of(&shared);
        // a holds the shared piece at 1 and 3 (beyond its prefix), b at 0 (its
        // prefix), and the complete blob c as its first piece.
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let size = 5 * PIECE_SIZE;
        for index in [1, 3] {
            store.put_piece(&a, size, index, &shared).unwrap();
        }
        store.put_piece(&b, size, 0, &shared).unwrap();
        let c_bytes = [shared.clone(), b"tail".to_vec()].concat();
        let c = Digest::of(&c_bytes);
        store.put_blob(&c, &c_bytes, None).unwrap();
        let t = store.totals().unwrap();
        assert_eq!(
            (t.pieces, t.piece_bytes, t.partial_blobs),
            (2, PIECE_SIZE + 4, 2),
            "{name}: the shared piece is stored once"
        );
        assert_eq!(partial(store, &a).piece_at(3), Some(x), "{name}");

        store.discard_partial(&a).unwrap();
        assert_eq!(store.totals().unwrap().pieces, 2, "{name}");
        read_piece(store, &x).unwrap();
        assert!(store.remove_blob(&c).unwrap());
        read_piece(store, &x).unwrap();
        assert_eq!(partial(store, &b).piece_at(0), Some(x), "{name}");
        store.discard_partial(&b).unwrap();
        assert!(store.piece(&x).unwrap().is_none(), "{name}");
        assert_eq!(store.totals().unwrap(), Totals::default(), "{name}");
    }
}

#[test]
fn an_origin_append_runs_through_pieces_peers_supplied() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(4 * P + 2, 10);
        let (d, size) = (Digest::of(&bytes), bytes.len() as u64);
        put(store, &d, &bytes, 2).unwrap();
        put(store, &d, &bytes, 3).unwrap();
        let t = store.totals().unwrap();
        // The origin's stream, in order: 0 and 1 are new, 2 and 3 held already.
        for index in 0..4 {
            store.append_piece(&d, index, piece(&bytes, index)).unwrap();
        }
        let p = partial(store, &d);
        assert_eq!((p.pieces.len(), p.bytes), (4, 4 * PIECE_SIZE), "{name}");
        assert_eq!(store.totals().unwrap().pieces, t.pieces + 2, "{name}");
        // Other bytes where a peer's piece is held: a conflict.
        conflict(store.append_piece(&d, 3, piece(&bytes, 0)));
        // No gap from an append.
        let why = conflict(store.append_piece(&d, 6, b"x"));
        assert!(why.contains("gap"), "{name}: {why}");
        store.append_piece(&d, 4, piece(&bytes, 4)).unwrap();
        let rec = store.complete(&d, size, None).unwrap();
        assert_eq!(read_all(store, &rec.pieces), bytes, "{name}");
    }
}

#[test]
fn an_appended_partial_takes_the_size_of_its_first_put_if_it_fits() {
    for (name, store, _dir) in stores() {
        let store = store.as_ref();
        let bytes = blob(3 * P, 11);
        let d = Digest::of(&bytes);
        store.append_piece(&d, 0, piece(&bytes, 0)).unwrap();
        assert_eq!(partial(store, &d).size, None, "{name}");
        // One full piece cannot begin a blob of half a piece.
        conflict(store.put_piece(&d, PIECE_SIZE / 2, 0, &bytes[..P / 2]));
        put(store, &d, &bytes, 2).unwrap();
        let p = partial(store, &d);
        assert_eq!(
            (p.size, later(&p)),
            (Some(3 * PIECE_SIZE), vec![2]),
            "{name}"
        );
        store.append_piece(&d, 1, piece(&bytes, 1)).unwrap();
        let rec = store.complete(&d, bytes.len() as u64, None).unwrap();
        assert_eq!(read_all(store, &rec.pieces), bytes, "{name}");
    }
}

#[test]
fn a_partial_written_before_pieces_came_out_of_order_still_reads_and_grows() {
    use super::content::ContentStore;
    use super::engine::{Batch, Engine as _, Table};
    use super::rocks::RocksEngine;
    let dir = tempfile::tempdir().unwrap();
    let bytes = blob(3 * P, 12);
    let d = Digest::of(&bytes);
    {
        let store = ContentStore::new(RocksEngine::open(dir.path(), false).unwrap()).unwrap();
        let id = store.append_piece(&d, 0, piece(&bytes, 0)).unwrap();
        // The record as the previous shoal wrote it: version 1, a prefix only.
        let mut v1 = vec![1];
        v1.extend_from_slice(&PIECE_SIZE.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&id.0);
        let mut batch = Batch::default();
        batch.put(Table::Partials, d.as_bytes(), v1);
        store.engine().write(batch).unwrap();
    }
    let store = ContentStore::new(RocksEngine::open(dir.path(), false).unwrap()).unwrap();
    let p = partial(&store, &d);
    assert_eq!((p.bytes, p.pieces.len(), p.size), (PIECE_SIZE, 1, None));
    put(&store, &d, &bytes, 2).unwrap();
    drop(store);
    // Reopened: the pieces beyond the prefix and the size were kept.
    let store = ContentStore::new(RocksEngine::open(dir.path(), false).unwrap()).unwrap();
    let p = partial(&store, &d);
    assert_eq!((later(&p), p.size), (vec![2], Some(3 * PIECE_SIZE)));
    assert_eq!(store.totals().unwrap().partial_blobs, 1);
    put(&store, &d, &bytes, 1).unwrap();
    let rec = store.complete(&d, bytes.len() as u64, None).unwrap();
    assert_eq!(read_all(&store, &rec.pieces), bytes);
}

/// A blob's size, and the order its pieces are put in: each index at least once, some
/// again.
fn puts() -> impl Strategy<Value = (u64, Vec<u64>)> {
    (1..5 * PIECE_SIZE).prop_flat_map(|size| {
        let count = PieceLayout::new(size).count();
        proptest::collection::vec(0..count, 0..6).prop_flat_map(move |again| {
            let all: Vec<u64> = (0..count).chain(again).collect();
            Just(all)
                .prop_shuffle()
                .prop_map(move |order| (size, order))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Pieces of a random blob in a random order, some twice: after each put the
    /// partial is exactly what the pieces so far imply, the totals count each piece
    /// once, and at the end the blob completes with its exact bytes.
    #[test]
    fn any_order_of_puts_yields_the_blob(
        (size, order) in puts(),
        seed in any::<u8>(),
    ) {
        for (name, store, _dir) in stores() {
            let store = store.as_ref();
            let bytes = blob(size as usize, seed);
            let d = Digest::of(&bytes);
            let layout = PieceLayout::new(size);
            let id = |i: u64| PieceId::of(piece(&bytes, i));
            let mut held = BTreeSet::new();
            for &index in &order {
                prop_assert_eq!(put(store, &d, &bytes, index).unwrap(), id(index));
                held.insert(index);
                let run = (0..).take_while(|i| held.contains(i)).count() as u64;
                let expected = PartialBlob {
                    bytes: layout.range(run).start,
                    pieces: (0..run).map(id).collect(),
                    later: held.iter().filter(|&&i| i > run).map(|&i| (i, id(i))).collect(),
                    size: Some(size),
                };
                prop_assert_eq!(&partial(store, &d), &expected, "{}", name);
                let t = store.totals().unwrap();
                let piece_bytes: u64 = held.iter().map(|&i| piece(&bytes, i).len() as u64).sum();
                prop_assert_eq!(
                    (t.pieces, t.piece_bytes, t.partial_blobs),
                    (held.len() as u64, piece_bytes, 1),
                    "{}", name
                );
            }
            let rec = store.complete(&d, size, None).unwrap();
            prop_assert_eq!(read_all(store, &rec.pieces), bytes, "{}", name);
            let t = store.totals().unwrap();
            prop_assert_eq!((t.blobs, t.blob_bytes, t.partial_blobs), (1, size, 0), "{}", name);
        }
    }
}
