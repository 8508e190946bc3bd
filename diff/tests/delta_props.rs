//! `apply(base, make(base, target)) == target`: over random pairs, over versions with
//! edits of every kind, over a table of sizes around the limits where the encoder
//! changes its mind (zstd window logs, segment thresholds, chunk and frame sizes), and
//! for every method, segmented or not.

mod common;
#[path = "../benches/pairs/mod.rs"]
mod pairs;

use common::random;
use proptest::prelude::*;
use shoal_diff::delta::{
    self, Budget, DeltaError, HEADER_LEN, MAX_FRAME, Method, apply, apply_into, apply_limited,
    make, read_header, worth_sending,
};
use shoal_protocol::recipe::ChunkId;

/// Makes the delta, checks its header, applies it three ways, and returns it.
fn round_trip(base: &[u8], target: &[u8], budget: &Budget) -> delta::Delta {
    let d = make(base, target, budget).expect("makes");
    let h = *d.header();
    assert_eq!(read_header(d.as_bytes()).expect("reads its header"), h);
    assert_eq!(h.base, ChunkId::of(base));
    assert_eq!(h.target, ChunkId::of(target));
    assert_eq!(h.target_len, target.len() as u64);
    assert!(d.len() >= HEADER_LEN);
    let got = apply(base, d.as_bytes()).unwrap_or_else(|e| panic!("{:?} delta: {e}", h.method));
    assert!(got == target, "{:?} delta gives other bytes", h.method);
    let limited =
        apply_limited(base, d.as_bytes(), target.len() as u64).expect("within its own length");
    assert!(limited == target);
    let mut streamed = Vec::new();
    let n = apply_into(base, d.as_bytes(), target.len() as u64, &mut streamed).expect("streams");
    assert_eq!(n, target.len() as u64);
    assert!(streamed == target);
    d
}

/// A budget that segments anything over 1 MiB in 256 KiB segments (384 KiB windows),
/// so small inputs reach the segmented paths.
fn small_segments() -> Budget {
    Budget {
        segment_above: 1 << 20,
        segment: 256 << 10,
        ..Budget::default()
    }
}

/// Edits of one kind applied to `base`.
#[derive(Clone, Debug)]
enum Edit {
    Replace { at: usize, bytes: Vec<u8> },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Append(Vec<u8>),
    Prepend(Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = || proptest::collection::vec(any::<u8>(), 1..3000);
    prop_oneof![
        (any::<usize>(), bytes()).prop_map(|(at, bytes)| Edit::Replace { at, bytes }),
        (any::<usize>(), bytes()).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 1usize..5000).prop_map(|(at, len)| Edit::Delete { at, len }),
        bytes().prop_map(Edit::Append),
        bytes().prop_map(Edit::Prepend),
    ]
}

fn edited(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut t = base.to_vec();
    for e in edits {
        let at = |at: usize, t: &Vec<u8>| if t.is_empty() { 0 } else { at % t.len() };
        match e {
            Edit::Replace { at: a, bytes } => {
                let a = at(*a, &t);
                let end = (a + bytes.len()).min(t.len());
                t.splice(a..end, bytes.iter().copied());
            }
            Edit::Insert { at: a, bytes } => {
                let a = at(*a, &t);
                t.splice(a..a, bytes.iter().copied());
            }
            Edit::Delete { at: a, len } => {
                let a = at(*a, &t);
                let end = (a + len).min(t.len());
                t.drain(a..end);
            }
            Edit::Append(bytes) => t.extend_from_slice(bytes),
            Edit::Prepend(bytes) => {
                t.splice(0..0, bytes.iter().copied());
            }
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Unrelated pairs of any small sizes, empty ones included.
    #[test]
    fn random_pairs_round_trip(
        base in proptest::collection::vec(any::<u8>(), 0..5000),
        target in proptest::collection::vec(any::<u8>(), 0..5000),
    ) {
        round_trip(&base, &target, &Budget::default());
    }

    /// A version of a base with a few edits of any kind: a round trip, and a delta much
    /// smaller than the target once there is something to share.
    #[test]
    fn edited_versions_round_trip_and_are_small(
        len in 0usize..300_000,
        seed in any::<u64>(),
        edits in proptest::collection::vec(edit(), 0..6),
    ) {
        let base = pairs::text(len, seed);
        let target = edited(&base, &edits);
        let d = round_trip(&base, &target, &Budget::default());
        let changed: usize = edits.iter().map(|e| match e {
            Edit::Replace { bytes, .. } | Edit::Insert { bytes, .. } | Edit::Append(bytes) | Edit::Prepend(bytes) => bytes.len(),
            Edit::Delete { .. } => 0,
        }).sum();
        if len >= 100_000 {
            prop_assert!(
                d.len() < changed + 2000 + target.len() / 50,
                "{:?} delta of {} bytes for {changed} changed bytes in {}", d.header().method, d.len(), target.len()
            );
        }
    }

    /// Segmented deltas (small segments) of edited versions, with bsdiff allowed in
    /// the segments or not.
    #[test]
    fn segmented_versions_round_trip(
        len in 900_000usize..2_500_000,
        seed in any::<u64>(),
        edits in proptest::collection::vec(edit(), 0..8),
        bsdiff in any::<bool>(),
    ) {
        let base = pairs::text(len, seed);
        let target = edited(&base, &edits);
        let budget = Budget { bsdiff_max: if bsdiff { 1 << 20 } else { 0 }, ..small_segments() };
        let d = round_trip(&base, &target, &budget);
        if base.len() + target.len() > 1 << 20 && !target.is_empty() {
            prop_assert_eq!(d.header().method, Method::Segmented);
        }
    }
}

#[test]
fn empty_and_identical_files() {
    let data = random(100_000, 1);
    for (base, target) in [
        (&[][..], &[][..]),
        (&[][..], &data[..]),
        (&data[..], &[][..]),
        (&data[..], &data[..]),
        (&data[..1], &data[..1]),
        (&data[..1], &data[1..2]),
    ] {
        let d = round_trip(base, target, &Budget::default());
        if base.is_empty() || target.is_empty() {
            assert_eq!(d.header().method, Method::Literal);
        }
    }
    let same = round_trip(&data, &data, &Budget::default());
    assert!(
        same.len() < HEADER_LEN + 100,
        "identical files: {} bytes",
        same.len()
    );
    // Empty target of a large base: not segmented, a Literal of nothing.
    let d = round_trip(
        &data,
        &[],
        &Budget {
            segment_above: 0,
            ..Budget::default()
        },
    );
    assert_eq!(d.header().method, Method::Literal);
}

/// Sizes where the encoder's choices change: around powers of two (the zstd window
/// log), the chunk sizes segments are cut on, a segment's size and the threshold for
/// segmenting (small-segment budget: 256 KiB segments above 1 MiB).
#[test]
fn a_table_of_edge_sizes() {
    let sizes = [
        1usize,
        2,
        63,
        64,
        65,
        1023,
        1024,
        1025,
        (16 << 10) - 1,
        16 << 10,
        (16 << 10) + 1,
        (256 << 10) - 1,
        256 << 10,
        (256 << 10) + 1,
        (320 << 10) + 7,
        (512 << 10) - 1,
        512 << 10,
        (512 << 10) + 1,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
    ];
    let data = pairs::text((2 << 20) + 4, 7);
    for &n in &sizes {
        // Same length, one edit; base + target lands just under, at and over 1 MiB
        // for n around 512 KiB.
        let base = &data[..n];
        let mut target = base.to_vec();
        target[n / 2] ^= 0x55;
        for budget in [Budget::default(), small_segments()] {
            round_trip(base, &target, &budget);
            // Target one byte longer and one shorter than the base.
            round_trip(base, &data[1..n + 1], &budget);
            round_trip(base, &data[..n - 1], &budget);
            round_trip(&data[n..2 * n], base, &budget);
        }
    }
    // Exactly at and one over the default segmenting threshold (MAX_FRAME).
    let half = (MAX_FRAME / 2) as usize;
    let big = pairs::text(half + 1, 8);
    let target = pairs::edited(&big[..half], 8, 16 << 10, 9);
    let budget = Budget::default();
    let at = round_trip(&big[..half], &target[..half], &budget);
    assert_ne!(at.header().method, Method::Segmented);
    let over = round_trip(&big, &target[..half], &budget);
    assert_eq!(over.header().method, Method::Segmented);
}

#[test]
fn every_method_is_chosen_where_it_should_be() {
    let budget = Budget::default();
    // bidiff wins on a small rebuilt binary.
    let binary = random(1 << 20, 2);
    let rebuilt = pairs::rebuilt(&binary, 3);
    assert_eq!(
        round_trip(&binary, &rebuilt, &budget).header().method,
        Method::Bsdiff
    );
    // Over bsdiff_max, zstd with the prefix.
    let small = Budget {
        bsdiff_max: 1 << 20,
        ..budget.clone()
    };
    assert_eq!(
        round_trip(&binary, &rebuilt, &small).header().method,
        Method::Zstd
    );
    // So too when the memory budget does not hold bidiff's suffix array.
    let tight = Budget {
        memory: 4 << 20,
        ..budget.clone()
    };
    assert_eq!(
        round_trip(&binary, &rebuilt, &tight).header().method,
        Method::Zstd
    );
    // Unrelated files are not handed to bidiff (slowest there, and no gain).
    let other = random(1 << 20, 4);
    assert_eq!(
        round_trip(&binary, &other, &budget).header().method,
        Method::Zstd
    );
    // No base: Literal.
    assert_eq!(
        round_trip(&[], &rebuilt, &budget).header().method,
        Method::Literal
    );
}

#[test]
fn making_is_deterministic() {
    let base = pairs::text(3 << 20, 1);
    let target = pairs::edited(&base, 20, 1000, 2);
    for budget in [Budget::default(), small_segments()] {
        assert_eq!(
            make(&base, &target, &budget).unwrap(),
            make(&base, &target, &budget).unwrap()
        );
    }
}

#[test]
fn segments_find_content_that_moved_far() {
    // The target is the base's halves swapped, then edited: every segment's content is
    // far from its own offset in the base, and must still be found.
    let base = pairs::text(4 << 20, 11);
    let mut swapped = base[2 << 20..].to_vec();
    swapped.extend_from_slice(&base[..2 << 20]);
    let target = pairs::edited(&swapped, 16, 0, 12);
    let d = round_trip(&base, &target, &small_segments());
    assert_eq!(d.header().method, Method::Segmented);
    assert!(d.len() < 64 << 10, "{} bytes", d.len());
}

/// zstd ignores the part of its prefix that its input overlaps in memory: the same
/// slice as base and target gave a delta as large as the file.
#[test]
fn regression_a_target_sharing_memory_with_its_base_still_finds_it() {
    let data = random(300_000, 5);
    // Base, target, and how many of the target's bytes the base lacks.
    for (base, target, new) in [
        (&data[..], &data[..], 0),
        (&data[..], &data[50_000..250_000], 0),
        (&data[..200_000], &data[100_000..], 100_000),
    ] {
        let d = round_trip(base, target, &Budget::default());
        assert!(d.len() < new + HEADER_LEN + 200, "{} bytes", d.len());
    }
}

#[test]
fn the_base_must_be_the_one_named() {
    let base = random(10_000, 1);
    let target = pairs::edited(&base, 3, 10, 2);
    let d = make(&base, &target, &Budget::default()).unwrap();
    let other = random(10_000, 3);
    let err = apply(&other, d.as_bytes()).unwrap_err();
    assert!(matches!(err, DeltaError::WrongBase { .. }), "{err}");
    assert!(err.is_wrong_base() && !err.is_bad_delta());
}

#[test]
fn the_rule_for_sending() {
    // Under three quarters of the missing chunks' compressed size, and only then.
    assert!(worth_sending(0, 1));
    assert!(worth_sending(74, 100));
    assert!(!worth_sending(75, 100));
    assert!(!worth_sending(100, 100));
    assert!(!worth_sending(0, 0));
    assert!(!worth_sending(u64::MAX, u64::MAX));
    assert!(worth_sending(u64::MAX / 2, u64::MAX));
}

/// A segmented delta whose segments mix methods (as a peer's encoder may): a Literal
/// segment between zstd-with-prefix segments, and thousands of one-byte segments.
/// No state of one frame's decoding leaks into the next.
#[test]
fn segments_of_mixed_methods_and_sizes_decode() {
    let base = pairs::text(1_500_000, 21);
    let target = pairs::edited(&base, 6, 0, 22);
    let d = make(&base, &target, &small_segments()).unwrap();
    assert_eq!(d.header().method, Method::Segmented);
    let bytes = d.as_bytes();
    let count = u32::from_le_bytes(bytes[HEADER_LEN..HEADER_LEN + 4].try_into().unwrap()) as usize;
    let table = &bytes[HEADER_LEN + 4..HEADER_LEN + 4 + 33 * count];
    let mut bodies = &bytes[HEADER_LEN + 4 + 33 * count..];
    // (table entry, body, target bytes) per segment.
    let mut segments = Vec::new();
    let mut at = 0usize;
    for e in table.chunks(33) {
        let len = u64::from_le_bytes(e[17..25].try_into().unwrap()) as usize;
        let body_len = u64::from_le_bytes(e[25..33].try_into().unwrap()) as usize;
        segments.push((
            e.to_vec(),
            bodies[..body_len].to_vec(),
            target[at..at + len].to_vec(),
        ));
        bodies = &bodies[body_len..];
        at += len;
    }
    assert!(segments.len() >= 3);
    let literal = |bytes: &[u8]| {
        let mut e = vec![0];
        for v in [0, 0, bytes.len() as u64] {
            e.extend_from_slice(&v.to_le_bytes());
        }
        let body = zstd::bulk::compress(bytes, 1).unwrap();
        e.extend_from_slice(&(body.len() as u64).to_le_bytes());
        (e, body, bytes.to_vec())
    };
    segments.insert(1, literal(b"a literal segment between two prefixed ones"));
    for i in 0..5000u32 {
        segments.insert(2, literal(&[i as u8]));
    }
    let new_target: Vec<u8> = segments.iter().flat_map(|s| s.2.clone()).collect();
    let mut delta = vec![1, 3];
    delta.extend_from_slice(&ChunkId::of(&base).0);
    delta.extend_from_slice(&ChunkId::of(&new_target).0);
    delta.extend_from_slice(&(new_target.len() as u64).to_le_bytes());
    delta.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    for s in &segments {
        delta.extend_from_slice(&s.0);
    }
    for s in &segments {
        delta.extend_from_slice(&s.1);
    }
    assert!(apply(&base, &delta).unwrap() == new_target);
}
