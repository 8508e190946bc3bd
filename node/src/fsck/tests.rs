//! fsck over both engines: damage is found, dropped, and a clean store stays clean.

use shoal_protocol::recipe::{self, ChunkRef, Entry, EntryKind, Padding, Recipe};
use shoal_protocol::{Digest, PIECE_SIZE};

use super::*;
use crate::store::content::ContentStore;
use crate::store::engine::{Batch, Engine};
use crate::store::memory::MemoryEngine;
use crate::store::recipes::RecipeRecord;
use crate::store::rocks::RocksEngine;

/// A store whose engine a test can write to behind the store's rules, as a bad disk
/// or a bug would.
trait Raw: Send + Sync {
    fn store(&self) -> &dyn Store;
    fn raw(&self, batch: Batch);
}

impl<E: Engine> Raw for ContentStore<E> {
    fn store(&self) -> &dyn Store {
        self
    }
    fn raw(&self, batch: Batch) {
        self.engine().write(batch).unwrap();
    }
}

fn stores() -> Vec<(&'static str, Box<dyn Raw>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let rocks = ContentStore::new(RocksEngine::open(dir.path(), false).unwrap()).unwrap();
    vec![
        (
            "memory",
            Box::new(ContentStore::new(MemoryEngine::new()).unwrap()),
            None,
        ),
        ("rocksdb", Box::new(rocks), Some(dir)),
    ]
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    crate::store::noise(u64::from(seed), len)
}

fn check(store: &dyn Store) -> FsckReport {
    fsck(store, &mut |_| ControlFlow::Continue(())).unwrap()
}

fn chunk(seed: u8) -> (ChunkId, Vec<u8>) {
    let b = bytes(20_000 + usize::from(seed), seed);
    (ChunkId::of(&b), b)
}

/// Stores a complete recipe for `layer` of one file per chunk.
fn put_recipe(store: &dyn Store, layer: &Digest, chunks: &[(ChunkId, Vec<u8>)]) {
    let entries: Vec<Entry> = chunks
        .iter()
        .enumerate()
        .map(|(i, (id, b))| Entry {
            header: vec![0; 512],
            path: format!("f{i}"),
            kind: EntryKind::File,
            size: b.len() as u64,
            content: Some(*id),
            chunks: vec![ChunkRef {
                id: *id,
                len: b.len() as u32,
            }],
            padding: Padding::Zeros,
        })
        .collect();
    let tar_size = entries
        .iter()
        .map(|e| 512 + e.size + Entry::padding_len(e.size))
        .sum::<u64>()
        + 1024;
    let r = Recipe {
        diff_id: Digest::of(layer.as_bytes()),
        tar_size,
        entries,
        trailer: vec![0; 1024],
    };
    store.begin_recipe(layer).unwrap();
    let refs: Vec<(ChunkId, &[u8])> = chunks.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    store.add_chunks(layer, &refs).unwrap();
    store
        .complete_recipe(
            layer,
            &RecipeRecord {
                tar_size,
                encoded: recipe::encode(&r),
            },
        )
        .unwrap();
}

fn digests(ds: &[&Digest]) -> Vec<String> {
    let mut v: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_sound_store_is_clean_and_every_piece_and_chunk_is_hashed() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let big = bytes(2 * PIECE_SIZE as usize + 100, 1);
        let small = bytes(3000, 2);
        store.put_blob(&Digest::of(&big), &big, None).unwrap();
        store.put_blob(&Digest::of(&small), &small, None).unwrap();
        let fetching = Digest::of(b"being fetched");
        store
            .append_piece(&fetching, 0, &bytes(PIECE_SIZE as usize, 3))
            .unwrap();
        put_recipe(store, &Digest::of(b"layer"), &[chunk(1), chunk(2)]);
        let building = Digest::of(b"building");
        store.begin_recipe(&building).unwrap();
        let (id, b) = chunk(3);
        store.add_chunks(&building, &[(id, &b)]).unwrap();

        let mut last = Progress::default();
        let report = fsck(store, &mut |p| {
            last = *p;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(report.clean, "{name}: {report:?}");
        let t = store.totals().unwrap();
        assert_eq!(report.pieces_checked, 5, "{name}");
        assert_eq!(report.chunks_checked, 3, "{name}");
        assert_eq!(
            report.bytes_checked,
            t.piece_bytes + t.chunk_bytes,
            "{name}"
        );
        assert_eq!(
            (
                report.blobs_checked,
                report.partials_checked,
                report.recipes_checked
            ),
            (2, 1, 1),
            "{name}"
        );
        assert_eq!(last.phase, Phase::Repair, "{name}");
        assert_eq!(last.bytes_total, last.bytes_checked, "{name}");
    }
}

#[test]
fn a_damaged_piece_drops_every_blob_and_partial_using_it_at_once() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        // a, b and the partial c share their first piece; d shares nothing.
        let head = bytes(PIECE_SIZE as usize, 4);
        let a = [head.clone(), b"tail a".to_vec()].concat();
        let b = [head.clone(), b"tail b".to_vec()].concat();
        let d = bytes(5000, 5);
        let (da, db, dd) = (Digest::of(&a), Digest::of(&b), Digest::of(&d));
        let dc = Digest::of(b"c");
        let rec = store.put_blob(&da, &a, None).unwrap();
        store.put_blob(&db, &b, None).unwrap();
        store.put_blob(&dd, &d, None).unwrap();
        store.append_piece(&dc, 0, &head).unwrap();
        let mut batch = Batch::default();
        batch.put(
            Table::Pieces,
            &rec.pieces[0].0,
            bytes(PIECE_SIZE as usize, 6),
        );
        raw.raw(batch);

        let report = check(store);
        assert!(!report.clean, "{name}");
        assert_eq!(
            report.damaged_pieces,
            vec![rec.pieces[0].to_string()],
            "{name}"
        );
        assert_eq!(sorted(report.blobs_dropped), digests(&[&da, &db]), "{name}");
        assert_eq!(report.partials_dropped, vec![dc.to_string()], "{name}");
        assert!(report.problems.is_empty(), "{name}: {:?}", report.problems);
        // The damaged bytes went with their last user: a fetch stores them afresh.
        assert!(store.piece(&rec.pieces[0]).unwrap().is_none(), "{name}");
        assert!(store.blob(&dd).unwrap().is_some(), "d stays: {name}");
        let t = store.totals().unwrap();
        assert_eq!((t.blobs, t.pieces, t.partial_blobs), (1, 1, 0), "{name}");
        store.put_blob(&da, &a, None).unwrap();
        let again = store.blob(&da).unwrap().unwrap();
        crate::store::read_piece(store, &again.pieces[0]).unwrap();
        assert!(check(store).clean, "{name}");
    }
}

#[test]
fn a_missing_piece_drops_its_blob_and_a_sound_blob_stays() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let x = bytes(PIECE_SIZE as usize + 10, 7);
        let y = bytes(10, 8);
        let rec = store.put_blob(&Digest::of(&x), &x, None).unwrap();
        store.put_blob(&Digest::of(&y), &y, None).unwrap();
        let mut batch = Batch::default();
        batch.delete(Table::Pieces, &rec.pieces[1].0);
        raw.raw(batch);

        let report = check(store);
        assert_eq!(
            report.missing_pieces,
            vec![rec.pieces[1].to_string()],
            "{name}"
        );
        assert!(report.damaged_pieces.is_empty(), "{name}");
        assert_eq!(
            report.blobs_dropped,
            vec![Digest::of(&x).to_string()],
            "{name}"
        );
        assert!(store.blob(&Digest::of(&y)).unwrap().is_some(), "{name}");
        assert!(check(store).clean, "{name}");
    }
}

#[test]
fn a_damaged_chunk_drops_every_recipe_using_it() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let (l1, l2, l3) = (Digest::of(b"l1"), Digest::of(b"l2"), Digest::of(b"l3"));
        put_recipe(store, &l1, &[chunk(1), chunk(2)]);
        put_recipe(store, &l2, &[chunk(2), chunk(3)]);
        put_recipe(store, &l3, &[chunk(4)]);
        let mut batch = Batch::default();
        batch.put(Table::Chunks, &chunk(2).0.0, b"not the chunk".to_vec());
        raw.raw(batch);

        let report = check(store);
        assert_eq!(
            report.damaged_chunks,
            vec![chunk(2).0.to_string()],
            "{name}"
        );
        assert_eq!(
            sorted(report.recipes_dropped),
            digests(&[&l1, &l2]),
            "{name}"
        );
        assert!(report.problems.is_empty(), "{name}: {:?}", report.problems);
        assert!(store.recipe(&l3).unwrap().is_some(), "{name}");
        let t = store.totals().unwrap();
        assert_eq!((t.recipes, t.chunks), (1, 1), "{name}");
        assert!(store.chunk(&chunk(2).0).unwrap().is_none(), "{name}");
        assert!(check(store).clean, "{name}");
    }
}

#[test]
fn wrong_reference_counts_are_reported_and_corrected() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let x = bytes(PIECE_SIZE as usize + 10, 9);
        let rec = store.put_blob(&Digest::of(&x), &x, None).unwrap();
        put_recipe(store, &Digest::of(b"l1"), &[chunk(1)]);
        put_recipe(store, &Digest::of(b"l2"), &[chunk(1)]);
        let mut batch = Batch::default();
        let size = x.len() as u64 - PIECE_SIZE;
        batch.put(
            Table::PieceRefs,
            &rec.pieces[1].0,
            crate::store::codec::encode_piece_ref(5, size).to_vec(),
        );
        let chunk_size = chunk(1).1.len() as u64;
        batch.put(
            Table::ChunkRefs,
            &chunk(1).0.0,
            crate::store::codec::encode_piece_ref(1, chunk_size).to_vec(),
        );
        raw.raw(batch);

        let report = check(store);
        assert!(!report.clean, "{name}");
        let kinds: Vec<(&str, bool)> = report
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.fixed))
            .collect();
        assert_eq!(
            kinds,
            [("piece_refs", true), ("chunk_refs", true)],
            "{name}"
        );
        assert!(report.blobs_dropped.is_empty(), "{name}");
        assert_eq!(store.chunk_users(&chunk(1).0).unwrap(), 2, "{name}");
        assert!(check(store).clean, "{name}");
        // Both recipes and then the blob release cleanly: the counts are right.
        assert!(store.remove_recipe(&Digest::of(b"l1")).unwrap());
        assert!(store.remove_recipe(&Digest::of(b"l2")).unwrap());
        assert!(store.remove_blob(&Digest::of(&x)).unwrap());
        assert_eq!(store.totals().unwrap(), Totals::default(), "{name}");
    }
}

#[test]
fn what_is_not_safe_to_change_is_reported_only() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let stray = bytes(6000, 10);
        let mut batch = Batch::default();
        // Bytes nobody counts, and a recipe whose layer holds no reference to its chunk.
        batch.put(Table::Pieces, &PieceId::of(&stray).0, stray.clone());
        raw.raw(batch);
        let layer = Digest::of(b"l");
        put_recipe(store, &layer, &[chunk(1)]);
        let mut key = layer.as_bytes().to_vec();
        key.extend_from_slice(&chunk(1).0.0);
        let mut batch = Batch::default();
        batch.delete(Table::LayerChunks, &key);
        raw.raw(batch);

        let report = check(store);
        let kinds: Vec<(&str, bool)> = report
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.fixed))
            .collect();
        assert_eq!(
            kinds,
            [
                ("uncounted_piece", false),
                ("chunk_refs", true),
                ("recipe", true)
            ],
            "{name}: {:?}",
            report.problems
        );
        // The count of the chunk went to zero with its last (lost) user: its bytes
        // are gone, and the recipe that named it was dropped to be rebuilt.
        assert_eq!(report.recipes_dropped, vec![layer.to_string()], "{name}");
        assert!(store.chunk(&chunk(1).0).unwrap().is_none(), "{name}");
        let again = check(store);
        assert_eq!(again.problems.len(), 1, "{name}: {:?}", again.problems);
        assert_eq!(again.problems[0].kind, "uncounted_piece", "{name}");
    }
}

#[test]
fn counts_are_left_alone_when_a_record_that_may_use_them_is_unreadable() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let x = bytes(4000, 13);
        let dx = Digest::of(&x);
        let rec = store.put_blob(&dx, &x, None).unwrap();
        let mut batch = Batch::default();
        batch.put(Table::Blobs, dx.as_bytes(), b"garbage".to_vec());
        raw.raw(batch);

        let report = check(store);
        let kinds: Vec<(&str, bool)> = report
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.fixed))
            .collect();
        assert_eq!(
            kinds,
            [
                ("unreadable_record", false),
                ("piece_refs", false),
                ("totals", false)
            ],
            "{name}: {:?}",
            report.problems
        );
        assert!(store.piece(&rec.pieces[0]).unwrap().is_some(), "{name}");
    }
}

#[test]
fn a_drop_decides_on_the_store_as_it_is_under_the_lock() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let x = bytes(4000, 11);
        let dx = Digest::of(&x);
        let rec = store.put_blob(&dx, &x, None).unwrap();
        let id = rec.pieces[0];
        // Stored sound again since a scan found it damaged: nothing is dropped.
        let dropped = store.drop_piece_users(&id, &[dx]).unwrap();
        assert!(dropped.sound, "{name}");
        assert!(store.blob(&dx).unwrap().is_some(), "{name}");
        // Damaged, with a user the caller did not name: it is left and reported.
        let mut batch = Batch::default();
        batch.put(Table::Pieces, &id.0, b"rot".to_vec());
        raw.raw(batch);
        let dropped = store.drop_piece_users(&id, &[]).unwrap();
        assert_eq!(
            (dropped.complete.len(), dropped.users_left),
            (0, 1),
            "{name}"
        );
        let dropped = store.drop_piece_users(&id, &[dx, dx]).unwrap();
        assert_eq!(
            dropped.complete,
            vec![dx],
            "named twice, dropped once: {name}"
        );
        assert_eq!(store.totals().unwrap(), Totals::default(), "{name}");
    }
}

#[test]
fn a_cancelled_check_changes_nothing() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        let x = bytes(4000, 12);
        let rec = store.put_blob(&Digest::of(&x), &x, None).unwrap();
        let mut batch = Batch::default();
        batch.put(Table::Pieces, &rec.pieces[0].0, b"rot".to_vec());
        raw.raw(batch);
        let err = fsck(store, &mut |_| ControlFlow::Break(())).unwrap_err();
        assert!(matches!(err, FsckError::Cancelled), "{name}");
        assert!(store.blob(&Digest::of(&x)).unwrap().is_some(), "{name}");
    }
}

#[test]
fn pieces_a_partial_holds_beyond_its_prefix_are_counted_and_checked() {
    for (name, raw, _dir) in stores() {
        let store = raw.store();
        // The partial holds piece 0, then, beyond a gap, a piece it shares with the
        // complete blob b (at two indices) and one of its own.
        let p = PIECE_SIZE as usize;
        let shared = bytes(p, 10);
        let b = [shared.clone(), b"tail".to_vec()].concat();
        store.put_blob(&Digest::of(&b), &b, None).unwrap();
        let (partial, size) = (Digest::of(b"sparse"), 6 * PIECE_SIZE);
        store.put_piece(&partial, size, 0, &bytes(p, 11)).unwrap();
        store.put_piece(&partial, size, 2, &shared).unwrap();
        store.put_piece(&partial, size, 3, &shared).unwrap();
        let own = store.put_piece(&partial, size, 5, &bytes(p, 12)).unwrap();
        // Counted as users: no count is off.
        let report = check(store);
        assert!(report.clean, "{name}: {report:?}");
        assert_eq!(report.pieces_checked, 4, "{name}");

        // A piece beyond the prefix is damaged: the partial goes, b stays.
        let mut batch = Batch::default();
        batch.put(Table::Pieces, &own.0, bytes(p, 13));
        raw.raw(batch);
        let report = check(store);
        assert_eq!(report.damaged_pieces, vec![own.to_string()], "{name}");
        assert_eq!(report.partials_dropped, vec![partial.to_string()], "{name}");
        assert!(report.blobs_dropped.is_empty(), "{name}");
        assert!(report.problems.is_empty(), "{name}: {:?}", report.problems);
        assert!(store.piece(&own).unwrap().is_none(), "{name}");
        let t = store.totals().unwrap();
        assert_eq!((t.blobs, t.pieces, t.partial_blobs), (1, 2, 0), "{name}");
        assert!(check(store).clean, "{name}");

        // A shared piece beyond the prefix goes missing: every user of it goes.
        store.put_piece(&partial, size, 2, &shared).unwrap();
        let mut batch = Batch::default();
        batch.delete(Table::Pieces, &PieceId::of(&shared).0);
        raw.raw(batch);
        let report = check(store);
        assert_eq!(report.partials_dropped, vec![partial.to_string()], "{name}");
        assert_eq!(
            report.blobs_dropped,
            vec![Digest::of(&b).to_string()],
            "{name}"
        );
        assert_eq!(store.totals().unwrap(), Totals::default(), "{name}");
    }
}
