//! Hostile deltas: truncated, flipped, lying about lengths, segment tables that do not
//! add up, bsdiff streams that seek or read out of bounds, zstd frames that give more
//! than declared, and a wrong base. Each is a typed error, never a panic and never a
//! wrong target.

mod common;
#[path = "../benches/pairs/mod.rs"]
mod pairs;

use common::random;
use proptest::prelude::*;
use shoal_diff::delta::{
    Budget, DeltaError, HEADER_LEN, MAX_FRAME, MAX_TARGET, Method, apply, apply_limited, make,
};
use shoal_protocol::recipe::ChunkId;

/// A delta's header, written by hand from the format's table.
fn header(method: u8, base: &[u8], target: &[u8], len: u64) -> Vec<u8> {
    let mut out = vec![1, method];
    out.extend_from_slice(&ChunkId::of(base).0);
    out.extend_from_slice(&ChunkId::of(target).0);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// One segment table entry.
fn entry(method: u8, base_start: u64, base_len: u64, target_len: u64, body_len: u64) -> Vec<u8> {
    let mut out = vec![method];
    for v in [base_start, base_len, target_len, body_len] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A bsdiff stream in bipatch's format from (add, copy, seek) controls.
fn bsdiff_stream(controls: &[(&[u8], &[u8], i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xB1DFu32.to_le_bytes());
    out.extend_from_slice(&0x1000u32.to_le_bytes());
    for (add, copy, seek) in controls {
        varint(add.len() as u64, &mut out);
        out.extend_from_slice(add);
        varint(copy.len() as u64, &mut out);
        out.extend_from_slice(copy);
        varint(((seek << 1) ^ (seek >> 63)) as u64, &mut out);
    }
    out
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(bytes, 3).unwrap()
}

/// A base, a target and a delta between them.
type Case = (Vec<u8>, Vec<u8>, Vec<u8>);

/// A pair and its delta for each method.
fn deltas() -> Vec<Case> {
    let binary = random(1 << 20, 1);
    let rebuilt = pairs::rebuilt(&binary, 2);
    let text = pairs::text(1_500_000, 3);
    let edited = pairs::edited(&text, 10, 500, 4);
    let segmented = Budget {
        segment_above: 1 << 20,
        segment: 256 << 10,
        ..Budget::default()
    };
    let mut out = Vec::new();
    for (base, target, budget, method) in [
        (&[][..], &rebuilt[..], Budget::default(), Method::Literal),
        (
            &binary[..],
            &random(1000, 5)[..],
            Budget::default(),
            Method::Zstd,
        ),
        (&binary[..], &rebuilt[..], Budget::default(), Method::Bsdiff),
        (&text[..], &edited[..], segmented, Method::Segmented),
    ] {
        let d = make(base, target, &budget).unwrap();
        assert_eq!(d.header().method, method);
        out.push((base.to_vec(), target.to_vec(), d.into_bytes()));
    }
    out
}

/// The delta is refused as bad, or (for a change that happens not to matter) gives the
/// target exactly.
fn refused_or_exact(base: &[u8], target: &[u8], delta: &[u8]) -> Option<DeltaError> {
    match apply(base, delta) {
        Ok(got) => {
            assert!(got == target, "a damaged delta gave a wrong target");
            None
        }
        Err(e) => Some(e),
    }
}

#[test]
fn a_delta_cut_anywhere_is_refused() {
    for (base, target, delta) in deltas() {
        let step = (delta.len() / 3000).max(1);
        for cut in (0..delta.len()).step_by(step).chain(0..HEADER_LEN + 50) {
            let cut = cut.min(delta.len() - 1);
            let err = refused_or_exact(&base, &target, &delta[..cut])
                .unwrap_or_else(|| panic!("a delta cut at {cut} of {} was taken", delta.len()));
            assert!(err.is_bad_delta(), "cut at {cut}: {err}");
            if cut < HEADER_LEN {
                assert!(
                    matches!(err, DeltaError::Truncated { .. }),
                    "cut at {cut}: {err}"
                );
            }
        }
    }
}

#[test]
fn every_flipped_header_byte_is_the_right_error() {
    for (base, target, delta) in deltas() {
        for at in 0..HEADER_LEN {
            for mask in [0x01u8, 0x80] {
                let mut bad = delta.clone();
                bad[at] ^= mask;
                let Some(err) = refused_or_exact(&base, &target, &bad) else {
                    // A Literal frame read as Zstd (or a Zstd frame that used nothing of
                    // its prefix read as Literal) still gives the target, which is checked.
                    assert_eq!(at, 1, "flipped header byte {at} was taken");
                    continue;
                };
                let ok = match at {
                    0 => matches!(err, DeltaError::Version(_)),
                    // Another method's decoder on this body, or no method at all.
                    1 => err.is_bad_delta(),
                    2..34 => matches!(err, DeltaError::WrongBase { .. }),
                    34..66 => matches!(err, DeltaError::TargetMismatch { .. }),
                    _ => matches!(
                        err,
                        DeltaError::TooLarge { .. }
                            | DeltaError::Inconsistent(_)
                            | DeltaError::Corrupt(_)
                    ),
                };
                assert!(ok, "byte {at} ^ {mask:#x}: {err:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any byte of any body changed: refused as bad, or the exact target.
    #[test]
    fn flipped_body_bytes_are_refused_or_harmless(which in 0usize..4, at in any::<usize>(), mask in 1u8..) {
        let all = deltas_cached();
        let (base, target, delta) = &all[which];
        let mut bad = delta.clone();
        let at = HEADER_LEN + at % (delta.len() - HEADER_LEN);
        bad[at] ^= mask;
        if let Some(err) = refused_or_exact(base, target, &bad) {
            prop_assert!(err.is_bad_delta(), "{}", err);
        }
    }

    /// A good header and any body: no panic, and no target that is not the target.
    #[test]
    fn random_bodies_are_refused(method in 0u8..5, len in 0u64..100_000, body in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let base = random(5000, 1);
        let target = random(len as usize, 2);
        let mut delta = header(method, &base, &target, len);
        delta.extend_from_slice(&body);
        prop_assert!(refused_or_exact(&base, &target, &delta).is_some() || len == 0);
    }
}

fn deltas_cached() -> &'static [Case] {
    static DELTAS: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    DELTAS.get_or_init(deltas)
}

#[test]
fn a_huge_declared_length_is_refused_before_anything_is_allocated() {
    let base = random(1000, 1);
    for method in 0..4u8 {
        let mut delta = header(method, &base, &[], u64::MAX);
        delta.extend_from_slice(&zstd(&[]));
        let err = apply(&base, &delta).unwrap_err();
        assert!(
            matches!(
                err,
                DeltaError::TooLarge {
                    len: u64::MAX,
                    limit: MAX_TARGET
                }
            ),
            "{err}"
        );
        assert!(!err.is_bad_delta() && !err.is_wrong_base());
        let err = apply_limited(&base, &delta[..HEADER_LEN + 3], 10).unwrap_err();
        assert!(matches!(err, DeltaError::TooLarge { .. }), "{err}");
    }
    // With no limit of the caller's, a frame is still at most MAX_FRAME...
    let mut delta = header(1, &base, &[], MAX_FRAME + 1);
    delta.extend_from_slice(&zstd(&[]));
    let err = apply_limited(&base, &delta, u64::MAX).unwrap_err();
    assert!(matches!(err, DeltaError::Inconsistent(_)), "{err}");
    // ...and a frame that gives fewer bytes than declared is corrupt.
    let mut delta = header(0, &base, &[], MAX_FRAME);
    delta.extend_from_slice(&zstd(b"short"));
    let err = apply_limited(&base, &delta, u64::MAX).unwrap_err();
    assert!(matches!(err, DeltaError::Corrupt(_)), "{err}");
}

#[test]
fn frames_that_give_more_than_declared_or_carry_extra_bytes_are_refused() {
    let base = random(1000, 1);
    // 100 MiB of zeros in a few KiB: refused when the 10 bytes declared are full.
    let bomb = zstd(&vec![0; 100 << 20]);
    assert!(bomb.len() < 10_000);
    let mut delta = header(0, &base, &[0; 10], 10);
    delta.extend_from_slice(&bomb);
    assert!(matches!(apply(&base, &delta), Err(DeltaError::Corrupt(_))));
    // A second frame after the first.
    let mut delta = header(0, &base, b"hello", 5);
    delta.extend_from_slice(&zstd(b"hello"));
    assert_eq!(apply(&base, &delta).unwrap(), b"hello");
    delta.extend_from_slice(&zstd(b""));
    assert!(matches!(apply(&base, &delta), Err(DeltaError::Corrupt(_))));
}

#[test]
fn segment_tables_that_do_not_add_up_are_refused() {
    let base = random(4096, 1);
    let target = random(100, 2);
    let body = zstd(&target);
    let n = body.len() as u64;
    let segmented = |table: &[Vec<u8>], count: u32, bodies: &[u8]| {
        let mut d = header(3, &base, &target, 100);
        d.extend_from_slice(&count.to_le_bytes());
        for e in table {
            d.extend_from_slice(e);
        }
        d.extend_from_slice(bodies);
        apply(&base, &d)
    };
    // The well-formed one, as a reference.
    assert_eq!(
        segmented(&[entry(0, 0, 0, 100, n)], 1, &body).unwrap(),
        target
    );
    let inconsistent =
        |r: Result<Vec<u8>, DeltaError>| matches!(r, Err(DeltaError::Inconsistent(_)));
    // A count the bytes cannot hold: refused before a table is allocated.
    assert!(matches!(
        segmented(&[], u32::MAX, &[]),
        Err(DeltaError::Truncated { .. })
    ));
    // Windows outside the base, or overflowing.
    assert!(inconsistent(segmented(
        &[entry(0, 4000, 97, 100, n)],
        1,
        &body
    )));
    assert!(inconsistent(segmented(
        &[entry(0, u64::MAX, 2, 100, n)],
        1,
        &body
    )));
    // Empty or oversized segments; sums that are not the header's.
    assert!(inconsistent(segmented(
        &[entry(0, 0, 0, 0, 0), entry(0, 0, 0, 100, n)],
        2,
        &body
    )));
    assert!(inconsistent(segmented(
        &[entry(0, 0, 0, MAX_FRAME + 1, n)],
        1,
        &body
    )));
    assert!(inconsistent(segmented(&[entry(0, 0, 0, 99, n)], 1, &body)));
    assert!(inconsistent(segmented(
        &[entry(0, 0, 0, u64::MAX, n), entry(0, 0, 0, 101, 0)],
        2,
        &body
    )));
    // Bodies that do not fill the delta exactly.
    assert!(inconsistent(segmented(
        &[entry(0, 0, 0, 100, n + 1)],
        1,
        &body
    )));
    assert!(inconsistent(segmented(
        &[entry(0, 0, 0, 100, n - 1)],
        1,
        &body
    )));
    assert!(inconsistent(segmented(
        &[entry(0, 0, 0, 100, u64::MAX)],
        1,
        &body
    )));
    // A segment within a segment, or no method at all.
    assert!(matches!(
        segmented(&[entry(3, 0, 0, 100, n)], 1, &body),
        Err(DeltaError::Method(3))
    ));
    assert!(matches!(
        segmented(&[entry(200, 0, 0, 100, n)], 1, &body),
        Err(DeltaError::Method(200))
    ));
    // A good table over the wrong base.
    let mut d = header(3, &random(4096, 9), &target, 100);
    d.extend_from_slice(&1u32.to_le_bytes());
    d.extend_from_slice(&entry(0, 0, 0, 100, n));
    d.extend_from_slice(&body);
    assert!(matches!(
        apply(&base, &d),
        Err(DeltaError::WrongBase { .. })
    ));
}

#[test]
fn bsdiff_streams_that_reach_out_of_bounds_are_refused() {
    let base = random(1000, 1);
    let target = random(100, 2);
    let delta = |stream: &[u8]| {
        let mut d = header(2, &base, &target, 100);
        d.extend_from_slice(&zstd(stream));
        apply(&base, &d)
    };
    let corrupt = |r: Result<Vec<u8>, DeltaError>| matches!(r, Err(DeltaError::Corrupt(_)));
    // The honest stream: all new bytes.
    assert_eq!(delta(&bsdiff_stream(&[(&[], &target, 0)])).unwrap(), target);
    // Adding past the end of the base.
    let seek_end = bsdiff_stream(&[(&[], &[], 990), (&[0; 100], &[], 0)]);
    assert!(corrupt(delta(&seek_end)));
    // Seeking before its start, or by i64::MIN.
    assert!(corrupt(delta(&bsdiff_stream(&[
        (&[], &[], -1),
        (&[0; 100], &[], 0)
    ]))));
    assert!(corrupt(delta(&bsdiff_stream(&[
        (&[], &[], i64::MIN),
        (&[0; 100], &[], 0)
    ]))));
    // A copy longer than the stream, declared with a huge varint.
    let mut huge = bsdiff_stream(&[]);
    varint(0, &mut huge);
    varint(u64::MAX, &mut huge);
    huge.extend_from_slice(&[7; 50]);
    assert!(corrupt(delta(&huge)));
    // More bytes than declared, fewer than declared, a bad magic, an unterminated varint.
    assert!(corrupt(delta(&bsdiff_stream(&[(&[], &random(101, 2), 0)]))));
    assert!(corrupt(delta(&bsdiff_stream(&[(&[], &target[..99], 0)]))));
    assert!(corrupt(delta(&[0; 8])));
    let mut unterminated = bsdiff_stream(&[]);
    unterminated.extend_from_slice(&[0xff; 20]);
    assert!(corrupt(delta(&unterminated)));
    // Endless empty controls: a stream over the bound for 100 bytes is refused unread.
    let empty: Vec<(&[u8], &[u8], i64)> = vec![(&[], &[], 0); 1 << 20];
    assert!(corrupt(delta(&bsdiff_stream(&empty))));
}

#[test]
fn every_method_checks_its_base() {
    for (base, _, delta) in deltas() {
        let mut other = base.clone();
        other.push(0);
        let err = apply(&other, &delta).unwrap_err();
        assert!(err.is_wrong_base(), "{err}");
    }
}
