//! Hostile input: truncated tars, lying sizes, bad checksums, bad PAX records, limits,
//! garbage, and recipes or chunks that do not match. Each is a typed error saying
//! where, never a panic.

mod common;

use common::*;
use proptest::prelude::*;
use shoal_diff::{Limits, Part, RecipeBuilder, RecreateError, TarError, recreate};
use shoal_protocol::recipe::{ChunkId, MAX_HEADER, MAX_PATH, RecipeError};
use tar::EntryType;

fn small_tar() -> Vec<u8> {
    tar_of(&[
        ("a".into(), random(1000, 1)),
        ("b".into(), Vec::new()),
        ("c".into(), random(40_000, 2)),
    ])
}

#[test]
fn a_tar_cut_anywhere_is_a_truncation_or_a_shorter_tar() {
    let tar = small_tar();
    // Entries start at 0, 1536 and 2048; "c"'s padding ends at 2560 + 40_448.
    let boundaries = [0usize, 1536, 2048, 2560 + 40_448];
    for cut in 0..=tar.len() {
        let prefix = &tar[..cut];
        match build(prefix) {
            Ok(built) => {
                assert!(
                    boundaries.contains(&cut) || cut >= boundaries[3],
                    "a tar cut at {cut} was taken whole"
                );
                assert_eq!(recreated(&built.recipe, &built.store), prefix);
            }
            Err(TarError::TruncatedHeader { entry, offset }) => {
                assert_eq!(offset as usize, boundaries[entry]);
                assert!(cut > offset as usize && cut < offset as usize + 512);
            }
            Err(TarError::Truncated {
                entry,
                path,
                part,
                missing,
                ..
            }) => {
                let (name, size, content_start) =
                    [("a", 1000, 512), ("b", 0, 2048), ("c", 40_000, 2560)][entry];
                assert_eq!(path, name);
                match part {
                    Part::Content => assert_eq!(missing as usize, content_start + size - cut),
                    Part::Padding => assert!(cut >= content_start + size),
                }
            }
            Err(e) => panic!("a tar cut at {cut}: {e}"),
        }
    }
}

#[test]
fn a_size_that_runs_past_the_end_blocks_is_a_lying_header() {
    let mut tar = small_tar();
    // Make "c" claim more than the tar holds.
    let c = 2048;
    tar[c + 124..c + 136].copy_from_slice(b"00000400000\0");
    fix_checksum(&mut tar[c..c + 512]);
    let err = build(&tar).err().expect("refused");
    assert_eq!(
        err,
        TarError::SizePastEnd {
            entry: 2,
            path: "c".into(),
            offset: c as u64,
            size: 0o400000,
            end: tar.len() as u64,
        }
    );
    // However the tar is sliced.
    for slices in [&[1usize][..], &[7, 1000, 3], &[513]] {
        assert_eq!(build_sliced(&tar, slices).err().as_ref(), Some(&err));
    }
    // Without end blocks the same lie reads as a truncated tar.
    let cut = &tar[..2560 + 40_448];
    assert!(matches!(
        build(cut),
        Err(TarError::Truncated {
            entry: 2,
            part: Part::Content,
            ..
        })
    ));
}

#[test]
fn a_bad_checksum_names_the_block() {
    let mut tar = small_tar();
    tar[1536] ^= 1; // the name of "b"
    let err = build(&tar).err().expect("refused");
    assert!(
        matches!(
            err,
            TarError::BadChecksum {
                entry: 1,
                offset: 1536,
                ..
            }
        ),
        "{err}"
    );
    let mut tar = small_tar();
    tar[1536 + 148..1536 + 156].copy_from_slice(b"zzzzzzz\0");
    assert!(matches!(
        build(&tar),
        Err(TarError::BadChecksum { entry: 1, .. })
    ));
}

#[test]
fn a_size_field_that_is_not_a_number_is_refused() {
    let mut tar = small_tar();
    tar[124..136].copy_from_slice(b"0000001x000\0");
    fix_checksum(&mut tar[..512]);
    assert_eq!(
        build(&tar).err(),
        Some(TarError::BadSize {
            entry: 0,
            offset: 0
        })
    );
    // Negative base-256.
    tar[124..136].fill(0xff);
    fix_checksum(&mut tar[..512]);
    assert!(matches!(build(&tar), Err(TarError::BadSize { .. })));
}

#[test]
fn bad_pax_records_are_refused() {
    for records in ["30 path=short\n", "5 a=b\n", "7 size=-3\n", "9 novalue\n"] {
        let mut t = [
            &header(EntryType::XHeader, "x", records.len() as u64)[..],
            &padded(records.as_bytes()),
            &header(EntryType::Regular, "f", 0),
        ]
        .concat();
        t.extend([0; 1024]);
        let err = build(&t).err().expect("refused");
        assert!(
            matches!(
                err,
                TarError::BadPax {
                    entry: 0,
                    offset: 0,
                    ..
                }
            ),
            "{records:?}: {err}"
        );
    }
}

#[test]
fn records_with_no_header_after_them_are_refused() {
    let records = pax_record("path", "p");
    let run = [
        &header(EntryType::XHeader, "x", records.len() as u64)[..],
        &padded(records.as_bytes()),
    ]
    .concat();
    let missing = TarError::MissingHeader {
        entry: 0,
        offset: 0,
    };
    assert_eq!(build(&run).err(), Some(missing.clone()));
    let mut ended = run.clone();
    ended.extend([0; 1024]);
    assert_eq!(build(&ended).err(), Some(missing));
    // Cut inside the records: truncated.
    assert!(matches!(
        build(&run[..700]),
        Err(TarError::TruncatedHeader {
            entry: 0,
            offset: 0
        })
    ));
}

#[test]
fn limits_are_enforced_before_anything_large_is_held() {
    // A PAX header that claims more than a header run may hold: refused on its block.
    let x = header(EntryType::XHeader, "x", MAX_HEADER as u64);
    let err = build(&x).err().expect("refused");
    assert!(
        matches!(
            err,
            TarError::HeaderTooLarge {
                entry: 0,
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    // A GNU long name longer than a path may be.
    let name = "n".repeat(MAX_PATH + 1);
    let t = [
        &header(EntryType::GNULongName, "././@LongLink", name.len() as u64)[..],
        &padded(name.as_bytes()),
        &header(EntryType::Regular, "f", 0),
    ]
    .concat();
    let err = build(&t).err().expect("refused");
    assert!(
        matches!(err, TarError::PathTooLong { entry: 0, len, .. } if len == MAX_PATH + 1),
        "{err}"
    );
    // Too many entries, and too much after the end.
    let limits = Limits {
        max_entries: 2,
        max_trailer: 4096,
        ..Limits::default()
    };
    let mut b = RecipeBuilder::with_limits(limits.clone());
    let err = b.push(&small_tar(), &mut |_, _| {}).expect_err("refused");
    assert_eq!(
        err,
        TarError::TooManyEntries {
            offset: 2048,
            limit: 2
        }
    );
    // The builder is spent: it keeps answering with the first error.
    assert_eq!(b.push(b"more", &mut |_, _| {}).err(), Some(err.clone()));
    assert_eq!(b.finish().err(), Some(err));
    let mut big_trailer = tar_of(&[("a".into(), vec![1])]);
    big_trailer.extend([0; 4096]);
    let mut b = RecipeBuilder::with_limits(limits);
    assert_eq!(
        b.push(&big_trailer, &mut |_, _| {}).err(),
        Some(TarError::TrailerTooLarge {
            offset: 1024,
            limit: 4096
        })
    );
}

#[test]
fn recreate_refuses_missing_and_wrong_chunks_and_wrong_recipes() {
    let tar = small_tar();
    let built = build(&tar).unwrap();
    let r = &built.recipe;
    let store = &built.store;
    let c = r.entries[2].chunks[0];
    let mut sink = Vec::new();
    let err = recreate(r, |id| (*id != c.id).then(|| store[id].clone()), &mut sink).unwrap_err();
    assert!(
        matches!(&err, RecreateError::MissingChunk { entry: 2, path, index: 0, id } if path == "c" && *id == c.id),
        "{err}"
    );
    let short = |id: &ChunkId| store.get(id).map(|b| b[..b.len() - 1].to_vec());
    assert!(matches!(
        recreate(r, short, &mut Vec::new()),
        Err(RecreateError::ChunkLength { entry: 0, .. })
    ));
    let flipped = |id: &ChunkId| {
        store.get(id).map(|b| {
            let mut b = b.clone();
            b[0] ^= 1;
            b
        })
    };
    assert!(matches!(
        recreate(r, flipped, &mut Vec::new()),
        Err(RecreateError::ChunkMismatch {
            entry: 0,
            index: 0,
            ..
        })
    ));
    // A recipe whose sizes do not add up is refused before anything is written.
    let mut bad = r.clone();
    bad.tar_size += 1;
    let mut out = Vec::new();
    assert!(matches!(
        recreate(&bad, |id| store.get(id), &mut out),
        Err(RecreateError::Recipe(RecipeError::Inconsistent(_)))
    ));
    assert!(out.is_empty());
    // A recipe that adds up but names other header bytes: caught by the diff_id.
    let mut forged = r.clone();
    forged.entries[0].header[0] = b'z';
    assert!(matches!(
        recreate(&forged, |id| store.get(id), &mut Vec::new()),
        Err(RecreateError::DiffId { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn garbage_is_an_error_or_a_tar_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(built) = build(&bytes) {
            prop_assert_eq!(recreated(&built.recipe, &built.store), bytes);
        }
    }

    #[test]
    fn damaged_tars_are_errors_or_round_trip(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        slice in 1usize..5000,
    ) {
        let mut tar = small_tar();
        for (at, byte) in edits {
            let i = at.index(tar.len());
            tar[i] = byte;
        }
        if do_cut {
            tar.truncate(cut.index(tar.len()));
        }
        let whole = build(&tar);
        let sliced = build_sliced(&tar, &[slice]);
        match (whole, sliced) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a.recipe, &b.recipe);
                prop_assert_eq!(recreated(&a.recipe, &a.store), tar);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "whole {:?} but sliced {:?}", a.err(), b.err()),
        }
    }
}
