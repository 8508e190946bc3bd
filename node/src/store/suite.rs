//! One suite for every engine: the store's rules must hold whatever is underneath.

use shoal_protocol::{Digest, PIECE_SIZE, RepoName};

use super::content::ContentStore;
use super::memory::MemoryEngine;
use super::rocks::RocksEngine;
use super::{Store, StoreError, TagRecord, read_piece};

/// A store over each engine, named, with the directory that must outlive it.
pub(super) fn stores() -> Vec<(&'static str, Box<dyn Store>, Option<tempfile::TempDir>)> {
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

/// Bytes that do not repeat within a blob (so that its pieces differ).
pub(super) fn blob(len: usize, seed: u8) -> Vec<u8> {
    super::noise(u64::from(seed), len)
}

#[test]
fn put_then_read_back_every_size_around_piece_boundaries() {
    let p = PIECE_SIZE as usize;
    for (name, store, _dir) in stores() {
        for (seed, len) in [0, 1, p - 1, p, p + 1, 2 * p + 7].into_iter().enumerate() {
            let bytes = blob(len, seed as u8);
            let d = Digest::of(&bytes);
            let rec = store.put_blob(&d, &bytes, None).unwrap();
            assert_eq!(rec.size, len as u64, "{name}");
            let mut back = Vec::new();
            for id in &store.blob(&d).unwrap().unwrap().pieces {
                back.extend(read_piece(store.as_ref(), id).unwrap());
            }
            assert_eq!(back, bytes, "{name} len {len}");
        }
        let t = store.totals().unwrap();
        assert_eq!(t.blobs, 6, "{name}");
        assert_eq!(t.partial_blobs, 0, "{name}");
    }
}

#[test]
fn shared_pieces_survive_removal_of_one_blob() {
    for (name, store, _dir) in stores() {
        // Two blobs whose first piece is the same bytes.
        let head = blob(PIECE_SIZE as usize, 1);
        let a = [head.clone(), b"tail a".to_vec()].concat();
        let b = [head, b"tail b".to_vec()].concat();
        let (da, db) = (Digest::of(&a), Digest::of(&b));
        store.put_blob(&da, &a, None).unwrap();
        store.put_blob(&db, &b, None).unwrap();
        assert_eq!(store.totals().unwrap().pieces, 3, "{name}");
        assert!(store.remove_blob(&da).unwrap());
        assert!(!store.remove_blob(&da).unwrap());
        let rec = store.blob(&db).unwrap().unwrap();
        for id in &rec.pieces {
            read_piece(store.as_ref(), id).unwrap();
        }
        let t = store.totals().unwrap();
        assert_eq!(
            (t.blobs, t.pieces, t.blob_bytes),
            (1, 2, b.len() as u64),
            "{name}"
        );
        store.remove_blob(&db).unwrap();
        assert_eq!(store.totals().unwrap(), Default::default(), "{name}");
    }
}

#[test]
fn a_blob_with_a_repeated_piece_is_counted_twice_and_released_twice() {
    for (name, store, _dir) in stores() {
        let bytes = vec![0u8; 3 * PIECE_SIZE as usize];
        let d = Digest::of(&bytes);
        store.put_blob(&d, &bytes, None).unwrap();
        assert_eq!(store.totals().unwrap().pieces, 1, "{name}");
        store.remove_blob(&d).unwrap();
        assert_eq!(store.totals().unwrap(), Default::default(), "{name}");
    }
}

#[test]
fn partials_resume_in_order_and_discard_cleanly() {
    for (name, store, _dir) in stores() {
        let d = Digest::of(b"whatever");
        let piece = blob(PIECE_SIZE as usize, 3);
        store.append_piece(&d, 0, &piece).unwrap();
        let err = store.append_piece(&d, 5, &piece).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{name}");
        store.append_piece(&d, 1, b"short").unwrap();
        // After a short piece nothing more may follow.
        assert!(store.append_piece(&d, 2, b"more").is_err(), "{name}");
        let p = store.partial(&d).unwrap().unwrap();
        assert_eq!(p.bytes, PIECE_SIZE + 5, "{name}");
        assert_eq!(store.partials().unwrap(), vec![d], "{name}");
        // Completing with the wrong size is refused and changes nothing.
        assert!(store.complete(&d, 1, None).is_err(), "{name}");
        store.discard_partial(&d).unwrap();
        assert_eq!(store.totals().unwrap(), Default::default(), "{name}");
        assert!(store.partial(&d).unwrap().is_none(), "{name}");
    }
}

#[test]
fn completing_an_already_complete_blob_releases_the_second_copy() {
    for (name, store, _dir) in stores() {
        let bytes = blob(100, 9);
        let d = Digest::of(&bytes);
        store.append_piece(&d, 0, &bytes).unwrap();
        store.complete(&d, 100, Some("x/y")).unwrap();
        store.append_piece(&d, 0, &bytes).unwrap();
        let rec = store.complete(&d, 100, None).unwrap();
        assert_eq!(rec.media_type.as_deref(), Some("x/y"), "{name}");
        let t = store.totals().unwrap();
        assert_eq!((t.blobs, t.pieces, t.partial_blobs), (1, 1, 0), "{name}");
    }
}

#[test]
fn tags_are_kept_per_upstream() {
    for (name, store, _dir) in stores() {
        let repo = RepoName::parse("app").unwrap();
        let rec = TagRecord {
            digest: Digest::of(b"m"),
            media_type: "t".into(),
            resolved_at: 1,
        };
        store.set_tag("a:5000", &repo, "v1", &rec).unwrap();
        assert_eq!(
            store.tag("a:5000", &repo, "v1").unwrap(),
            Some(rec),
            "{name}"
        );
        assert_eq!(store.tag("b:5000", &repo, "v1").unwrap(), None, "{name}");
    }
}

#[test]
fn damaged_piece_is_never_returned() {
    use super::engine::{Batch, Engine as _, Table};
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::new(RocksEngine::open(dir.path(), false).unwrap()).unwrap();
    let bytes = blob(5000, 4);
    let d = Digest::of(&bytes);
    let rec = store.put_blob(&d, &bytes, None).unwrap();
    // Damage the piece's bytes behind the store's rules, as a bad disk would.
    let mut batch = Batch::default();
    batch.put(Table::Pieces, &rec.pieces[0].0, blob(5000, 5));
    store.engine().write(batch).unwrap();
    let err = read_piece(&store, &rec.pieces[0]).unwrap_err();
    assert!(matches!(err, super::PieceReadError::Damaged(_)), "{err}");
}

#[test]
fn reopened_rocksdb_store_keeps_blobs_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = blob(3 * PIECE_SIZE as usize + 11, 7);
    let d = Digest::of(&bytes);
    {
        let store = ContentStore::new(RocksEngine::open(dir.path(), false).unwrap()).unwrap();
        store.put_blob(&d, &bytes, None).unwrap();
        store
            .append_piece(&Digest::of(b"p"), 0, &bytes[..PIECE_SIZE as usize])
            .unwrap();
    }
    let store = ContentStore::new(RocksEngine::open(dir.path(), false).unwrap()).unwrap();
    let t = store.totals().unwrap();
    assert_eq!(
        (t.blobs, t.blob_bytes, t.partial_blobs),
        (1, bytes.len() as u64, 1)
    );
    // The partial shares its piece with the complete blob.
    assert_eq!(t.pieces, 4);
    let locked = RocksEngine::open(dir.path(), false).err().unwrap();
    assert!(matches!(locked, StoreError::Locked { .. }), "{locked}");
}

mod recipes {
    use shoal_protocol::Digest;
    use shoal_protocol::recipe::ChunkId;

    use super::{blob, stores};
    use crate::store::StoreError;
    use crate::store::recipes::RecipeRecord;

    fn chunks(seeds: &[u8]) -> Vec<(ChunkId, Vec<u8>)> {
        seeds
            .iter()
            .map(|s| {
                let b = blob(20_000 + usize::from(*s), *s);
                (ChunkId::of(&b), b)
            })
            .collect()
    }

    fn add(store: &dyn crate::store::Store, layer: &Digest, c: &[(ChunkId, Vec<u8>)]) -> usize {
        let refs: Vec<(ChunkId, &[u8])> = c.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        store.add_chunks(layer, &refs).unwrap()
    }

    #[test]
    fn two_layers_share_chunks_and_each_releases_only_its_own() {
        for (name, store, _dir) in stores() {
            let (a, b) = (Digest::of(b"layer a"), Digest::of(b"layer b"));
            let record = RecipeRecord {
                tar_size: 100,
                encoded: vec![1, 2, 3],
            };
            store.begin_recipe(&a).unwrap();
            assert_eq!(add(store.as_ref(), &a, &chunks(&[1, 2, 2, 3])), 3, "{name}");
            // The same chunk again in a later call is not counted twice.
            assert_eq!(add(store.as_ref(), &a, &chunks(&[3])), 0, "{name}");
            store.complete_recipe(&a, &record).unwrap();
            store.begin_recipe(&b).unwrap();
            assert_eq!(
                add(store.as_ref(), &b, &chunks(&[2, 3, 4])),
                1,
                "only chunk 4 is new: {name}"
            );
            store.complete_recipe(&b, &record).unwrap();
            let t = store.totals().unwrap();
            assert_eq!(
                (t.chunks, t.recipes, t.recipe_tar_bytes, t.partial_recipes),
                (4, 2, 200, 0),
                "{name}"
            );
            assert_eq!(store.recipe(&a).unwrap(), Some(record.clone()), "{name}");

            assert!(store.remove_recipe(&a).unwrap());
            let t = store.totals().unwrap();
            assert_eq!((t.chunks, t.recipes), (3, 1), "chunk 1 went with a: {name}");
            for (id, bytes) in chunks(&[2, 3, 4]) {
                assert_eq!(
                    store.chunk(&id).unwrap().as_deref(),
                    Some(bytes.as_slice()),
                    "{name}"
                );
            }
            assert_eq!(store.chunk_users(&chunks(&[1])[0].0).unwrap(), 0, "{name}");
            assert_eq!(store.chunk_users(&chunks(&[2])[0].0).unwrap(), 1, "{name}");
            store.remove_recipe(&b).unwrap();
            assert_eq!(store.totals().unwrap(), Default::default(), "{name}");
        }
    }

    #[test]
    fn a_partial_recipe_is_released_when_discarded_or_restarted() {
        for (name, store, _dir) in stores() {
            let layer = Digest::of(b"layer");
            assert!(matches!(
                store.add_chunks(&layer, &[]),
                Err(StoreError::Conflict(_))
            ));
            store.begin_recipe(&layer).unwrap();
            add(store.as_ref(), &layer, &chunks(&[5, 6]));
            assert_eq!(store.partial_recipes().unwrap(), vec![layer], "{name}");
            // Restarting drops what the first attempt took.
            store.begin_recipe(&layer).unwrap();
            let t = store.totals().unwrap();
            assert_eq!((t.chunks, t.partial_recipes), (0, 1), "{name}");
            add(store.as_ref(), &layer, &chunks(&[7]));
            store.discard_partial_recipe(&layer).unwrap();
            assert_eq!(store.totals().unwrap(), Default::default(), "{name}");
            assert!(store.partial_recipes().unwrap().is_empty(), "{name}");
        }
    }
}

#[test]
fn images_are_touched_pinned_and_removed_with_their_tags() {
    use super::images::{ImageKey, Pin};
    for (name, store, _dir) in stores() {
        let key = ImageKey {
            upstream: "127.0.0.1:5000".into(),
            repo: RepoName::parse("app").unwrap(),
            digest: Digest::of(b"m1"),
        };
        let refs = [Digest::of(b"config"), Digest::of(b"layer")];
        store
            .touch_image(
                &key,
                "application/vnd.oci.image.manifest.v1+json",
                &refs,
                100,
            )
            .unwrap();
        store.touch_image(&key, "ignored", &[], 200).unwrap();
        let record = store.image(&key).unwrap().unwrap();
        assert_eq!(
            (record.first_seen, record.last_used, record.refs.as_slice()),
            (100, 200, &refs[..]),
            "{name}"
        );
        let tag = TagRecord {
            digest: key.digest,
            media_type: "x".into(),
            resolved_at: 1,
        };
        store.set_tag(&key.upstream, &key.repo, "v1", &tag).unwrap();
        let other = TagRecord {
            digest: Digest::of(b"m2"),
            ..tag.clone()
        };
        store
            .set_tag(&key.upstream, &key.repo, "v2", &other)
            .unwrap();
        assert_eq!(store.tags().unwrap().len(), 2, "{name}");

        // Used since the caller looked: not removed.
        assert!(!store.remove_image(&key, Some(150)).unwrap(), "{name}");
        let pin = Pin {
            created: 1,
            expires: None,
        };
        store.set_pin(&key, "operator", &pin).unwrap();
        assert_eq!(
            store.pins().unwrap(),
            vec![(key.clone(), "operator".into(), pin)]
        );
        assert!(!store.remove_image(&key, None).unwrap(), "{name}: pinned");
        assert!(store.remove_pin(&key, "operator").unwrap());
        assert!(!store.remove_pin(&key, "operator").unwrap());
        assert!(store.remove_image(&key, Some(200)).unwrap(), "{name}");
        assert_eq!(store.image(&key).unwrap(), None);
        let tags = store.tags().unwrap();
        assert_eq!(
            tags.len(),
            1,
            "{name}: only the tag of the removed image goes"
        );
        assert_eq!(tags[0].2, "v2");
    }
}
