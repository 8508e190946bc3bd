//! Hostile packs and wrong bases: truncated at every byte, flipped bytes, lying
//! lengths and counts, tables pointing anywhere, literal streams of other bytes, bases
//! missing, different, or with other chunk bytes, and limits. Each is a typed error,
//! never a panic, and never a chunk that does not match its id.

mod common;

use std::collections::HashMap;

use common::layers::{Layer, apply, file, make, store_of};
use common::pack_fixture;
use common::random;
use shoal_diff::pack::{self, Base, Limits, MAX_BASES, MAX_PROFILE, Options, PackError};
use shoal_protocol::recipe::{ChunkId, MAX_DECODED};

/// A pack cut into the fields of the format's table, to be edited and put back.
#[derive(Clone, Debug)]
struct Parts {
    /// Magic, version, target, diff_id, tar size.
    fixed: Vec<u8>,
    bases: Vec<[u8; 64]>,
    profile: Option<Vec<u8>>,
    recipe_raw: u32,
    recipe: Vec<u8>,
    /// Target entry, base, base entry, and the delta.
    deltas: Vec<(u32, u16, u32, Vec<u8>)>,
    literal_raw: u64,
    literal: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl Parts {
    /// Reads a good pack by the table in the module docs.
    fn of(p: &[u8]) -> Parts {
        let fixed = p[..77].to_vec();
        let n = u16_at(p, 77) as usize;
        let mut at = 79;
        let bases = (0..n)
            .map(|i| p[at + 64 * i..at + 64 * (i + 1)].try_into().unwrap())
            .collect();
        at += 64 * n;
        let profile = if p[at] == 1 {
            let len = u16_at(p, at + 1) as usize;
            at += 3 + len;
            Some(p[at - len..at].to_vec())
        } else {
            at += 1;
            None
        };
        let recipe_raw = u32_at(p, at);
        let len = u32_at(p, at + 4) as usize;
        let recipe = p[at + 8..at + 8 + len].to_vec();
        at += 8 + len;
        let count = u32_at(p, at) as usize;
        at += 4;
        let table: Vec<_> = (0..count)
            .map(|i| {
                let t = at + 18 * i;
                (
                    u32_at(p, t),
                    u16_at(p, t + 4),
                    u32_at(p, t + 6),
                    u64_at(p, t + 10) as usize,
                )
            })
            .collect();
        at += 18 * count;
        let mut deltas = Vec::new();
        for (e, b, be, len) in table {
            deltas.push((e, b, be, p[at..at + len].to_vec()));
            at += len;
        }
        let literal_raw = u64_at(p, at);
        let len = u64_at(p, at + 8) as usize;
        let literal = p[at + 16..at + 16 + len].to_vec();
        assert_eq!(at + 16 + len, p.len(), "the table reads the whole pack");
        Parts {
            fixed,
            bases,
            profile,
            recipe_raw,
            recipe,
            deltas,
            literal_raw,
            literal,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.fixed.clone();
        out.extend_from_slice(&(self.bases.len() as u16).to_le_bytes());
        for b in &self.bases {
            out.extend_from_slice(b);
        }
        match &self.profile {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&(p.len() as u16).to_le_bytes());
                out.extend_from_slice(p);
            }
        }
        out.extend_from_slice(&self.recipe_raw.to_le_bytes());
        out.extend_from_slice(&(self.recipe.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.recipe);
        out.extend_from_slice(&(self.deltas.len() as u32).to_le_bytes());
        for (e, b, be, d) in &self.deltas {
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
            out.extend_from_slice(&be.to_le_bytes());
            out.extend_from_slice(&(d.len() as u64).to_le_bytes());
        }
        for (_, _, _, d) in &self.deltas {
            out.extend_from_slice(d);
        }
        out.extend_from_slice(&self.literal_raw.to_le_bytes());
        out.extend_from_slice(&(self.literal.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.literal);
        out
    }
}

/// A base and a target with a delta'd file, a new file, and changed headers.
fn case() -> (Layer, Layer) {
    let bin = random(60_000, 1);
    let mut rebuilt = bin.clone();
    for i in (100..rebuilt.len()).step_by(5000) {
        rebuilt[i] ^= 1;
    }
    let v1 = Layer::new(&[
        file("etc/a", b"alpha\n".to_vec()),
        file("bin/x", bin),
        file("etc/empty", Vec::new()),
    ]);
    let v2 = Layer::new(&[
        file("etc/a", b"alpha\nbeta\n".to_vec()),
        file("bin/x", rebuilt),
        file("bin/new", random(20_000, 2)),
    ]);
    (v1, v2)
}

/// The case's pack, checked to hold a delta and a literal stream.
fn good() -> (Layer, Layer, Vec<u8>) {
    let (v1, v2) = case();
    let (p, s) = make(&v2, &[&v1], &Options::default());
    assert_eq!(s.delta_files, 1, "{s:?}");
    assert!(s.literal_chunks >= 1, "{s:?}");
    (v1, v2, p)
}

/// Applies a hostile pack: it must not panic, and if it is accepted, what it gives
/// must still be the target (checked by re-creating the tar: a flipped byte can land
/// where only the diff_id tells).
fn hostile(pack: &[u8], bases: &[&Layer], target: &Layer) -> Result<(), PackError> {
    let (applied, received) = apply(pack, bases)?;
    let mut store = store_of(bases);
    store.extend(received);
    let mut tar = Vec::new();
    if shoal_diff::recreate(&applied.recipe, |id| store.get(id), &mut tar).is_ok() {
        assert!(
            tar == target.tar,
            "a pack gave a tar with the right diff_id but other bytes"
        );
    }
    Ok(())
}

#[test]
fn every_truncation_is_an_error() {
    let (v1, v2, p) = good();
    for cut in 0..p.len() {
        let r = hostile(&p[..cut], &[&v1], &v2);
        let e = r.expect_err(&format!("a pack cut at {cut} of {}", p.len()));
        assert!(e.is_bad_pack(), "cut at {cut}: {e}");
    }
    let mut longer = p.clone();
    longer.push(0);
    assert!(matches!(
        hostile(&longer, &[&v1], &v2),
        Err(PackError::Inconsistent(_))
    ));
}

#[test]
fn flipped_bytes_never_give_wrong_chunks() {
    let (v1, v2, p) = good();
    // Every byte of the header and tables, a sample of the frames.
    let step = |i: usize| if i < 400 { 1 } else { 37 };
    let mut i = 0;
    while i < p.len() {
        for bit in [0x01, 0x80] {
            let mut f = p.clone();
            f[i] ^= bit;
            let _ = hostile(&f, &[&v1], &v2);
        }
        i += step(i);
    }
}

#[test]
fn a_missing_or_different_base_is_a_wrong_base() {
    let (v1, v2, p) = good();
    let e = apply(&p, &[]).unwrap_err();
    assert!(matches!(e, PackError::MissingBase { layer } if layer == v1.digest));
    assert!(e.is_wrong_base() && !e.is_bad_pack());
    // Another layer under the base's digest.
    let mut other = Layer::new(&[file("etc/a", b"other\n".to_vec())]);
    other.digest = v1.digest;
    let e = apply(&p, &[&other]).unwrap_err();
    assert!(matches!(e, PackError::WrongBase { .. }), "{e}");
    assert!(e.is_wrong_base());
    // Extra layers given are ignored.
    let unrelated = Layer::new(&[file("x", random(5000, 3))]);
    hostile(&p, &[&unrelated, &v1], &v2).expect("applies with an extra base");
}

#[test]
fn base_chunks_that_are_missing_or_differ_are_local_errors() {
    let (v1, _, p) = good();
    let bases = [v1.base()];
    let bin = &v1.recipe.entries[1];
    let mut store = v1.store.clone();
    store.remove(&bin.chunks[0].id);
    let e = pack::apply(&p, &bases, &store, &mut |_, _| Ok(()), &Limits::default()).unwrap_err();
    assert!(matches!(e, PackError::MissingChunk { .. }), "{e}");
    assert!(!e.is_bad_pack());
    let mut store = v1.store.clone();
    store.get_mut(&bin.chunks[0].id).unwrap()[0] ^= 1;
    let e = pack::apply(&p, &bases, &store, &mut |_, _| Ok(()), &Limits::default()).unwrap_err();
    assert!(matches!(e, PackError::ChunkMismatch { .. }), "{e}");
}

#[test]
fn a_sink_error_passes_through() {
    let (v1, _, p) = good();
    let e = pack::apply(
        &p,
        &[v1.base()],
        &v1.store,
        &mut |_, _| Err(PackError::Sink("disk full".into())),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, PackError::Sink(_)), "{e}");
    assert_eq!(e.to_string(), "the chunk sink failed: disk full");
}

#[test]
fn bad_magic_version_and_counts_are_refused() {
    let (v1, v2, p) = good();
    let parts = Parts::of(&p);
    assert_eq!(
        parts.bytes(),
        p,
        "the test's reading of the format is the format"
    );
    let edit = |f: &dyn Fn(&mut Parts)| {
        let mut q = parts.clone();
        f(&mut q);
        hostile(&q.bytes(), &[&v1], &v2).unwrap_err()
    };
    assert!(matches!(edit(&|q| q.fixed[0] = b'X'), PackError::Magic(_)));
    assert!(matches!(edit(&|q| q.fixed[4] = 2), PackError::Version(2)));
    let e = edit(&|q| q.bases = vec![[0; 64]; MAX_BASES + 1]);
    assert!(matches!(e, PackError::Inconsistent(_)), "{e}");
    let e = edit(&|q| q.profile = Some(vec![0; MAX_PROFILE + 1]));
    assert!(matches!(e, PackError::Inconsistent(_)), "{e}");
    let e = edit(&|q| q.recipe_raw = MAX_DECODED as u32 + 1);
    assert!(matches!(e, PackError::TooLarge { .. }), "{e}");
    let e = edit(&|q| q.recipe_raw -= 1);
    assert!(matches!(e, PackError::Corrupt { .. }), "{e}");
    let e = edit(&|q| q.literal_raw += 1);
    assert!(matches!(e, PackError::Inconsistent(_)), "{e}");
    // A diff_id in the header other than the recipe's.
    let e = edit(&|q| q.fixed[40] ^= 1);
    assert!(matches!(e, PackError::Inconsistent(_)), "{e}");
}

#[test]
fn lengths_past_the_end_are_truncations_not_allocations() {
    let (v1, v2, p) = good();
    let parts = Parts::of(&p);
    let base_end = 79 + 64 * parts.bases.len();
    let profile_len = parts.profile.as_ref().map_or(1, |p| 3 + p.len());
    let recipe_at = base_end + profile_len;
    let table_at = recipe_at + 8 + parts.recipe.len();
    let cases: [(usize, &[u8]); 3] = [
        // The recipe frame's length.
        (recipe_at + 4, &u32::MAX.to_le_bytes()),
        // The delta count.
        (table_at, &u32::MAX.to_le_bytes()),
        // The first delta's length.
        (table_at + 4 + 10, &u64::MAX.to_le_bytes()),
    ];
    for (at, value) in cases {
        let mut q = p.clone();
        q[at..at + value.len()].copy_from_slice(value);
        let e = hostile(&q, &[&v1], &v2).unwrap_err();
        assert!(matches!(e, PackError::Truncated { .. }), "at {at}: {e}");
    }
    // The literal frame's length, last field before the frame.
    let at = p.len() - parts.literal.len() - 8;
    let mut q = p.clone();
    q[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        hostile(&q, &[&v1], &v2),
        Err(PackError::Truncated { .. })
    ));
}

#[test]
fn delta_tables_pointing_anywhere_are_refused() {
    let (v1, v2, p) = good();
    let parts = Parts::of(&p);
    let edit = |f: &dyn Fn(&mut Parts)| {
        let mut q = parts.clone();
        f(&mut q);
        hostile(&q.bytes(), &[&v1], &v2).unwrap_err()
    };
    for e in [
        edit(&|q| q.deltas[0].0 = 1000),
        edit(&|q| q.deltas[0].1 = 1),
        edit(&|q| q.deltas[0].2 = 1000),
        // Entry 0 (etc/a) is not the delta's target; entry 2 (etc/empty) of the base has
        // no content.
        edit(&|q| q.deltas[0].0 = 0),
        edit(&|q| q.deltas[0].2 = 2),
        edit(&|q| {
            let d = q.deltas[0].clone();
            q.deltas.push(d);
        }),
    ] {
        assert!(matches!(e, PackError::Inconsistent(_)), "{e}");
    }
    // A delta whose body is cut: its header still reads, its frame does not.
    let e = edit(&|q| {
        let n = q.deltas[0].3.len();
        q.deltas[0].3.truncate(n - 3);
    });
    assert!(matches!(e, PackError::Delta { .. }), "{e}");
    assert!(e.is_bad_pack());
    // No deltas at all: the delta'd file's chunks would have to be in the literal
    // stream, which is then too short.
    let e = edit(&|q| q.deltas.clear());
    assert!(matches!(e, PackError::Inconsistent(_)), "{e}");
}

#[test]
fn a_delta_that_rebuilds_other_content_is_refused() {
    // A delta from the base file to other content, relabelled by hand as the target's:
    // its header's ids are the recipe's, its result is not.
    let (v1, v2, p) = good();
    let mut parts = Parts::of(&p);
    let base = &v1.store;
    let base_file: Vec<u8> = v1.recipe.entries[1]
        .chunks
        .iter()
        .flat_map(|c| base[&c.id].clone())
        .collect();
    let target_entry = &v2.recipe.entries[1];
    let mut other = base_file.clone();
    other.truncate(target_entry.size as usize);
    other.resize(target_entry.size as usize, 7);
    let mut d = shoal_diff::delta::make(&base_file, &other, &Default::default())
        .unwrap()
        .into_bytes();
    d[34..66].copy_from_slice(&target_entry.content.unwrap().0);
    parts.deltas[0].3 = d;
    let e = hostile(&parts.bytes(), &[&v1], &v2).unwrap_err();
    assert!(
        matches!(
            e,
            PackError::Delta {
                source: shoal_diff::delta::DeltaError::TargetMismatch { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_literal_stream_of_other_bytes_is_refused() {
    let (v1, v2, p) = good();
    let mut parts = Parts::of(&p);
    let other = random(parts.literal_raw as usize, 99);
    parts.literal = zstd::bulk::compress(&other, 3).unwrap();
    let e = hostile(&parts.bytes(), &[&v1], &v2).unwrap_err();
    assert!(
        matches!(e, PackError::LiteralMismatch { index: 0, .. }),
        "{e}"
    );
    // A stream with bytes after its frame.
    let mut parts = Parts::of(&p);
    parts.literal.push(0);
    let e = hostile(&parts.bytes(), &[&v1], &v2).unwrap_err();
    assert!(matches!(e, PackError::Corrupt { .. }), "{e}");
}

#[test]
fn limits_refuse_before_decoding() {
    let (v1, _, p) = good();
    let try_with = |limits: Limits| {
        pack::apply(&p, &[v1.base()], &v1.store, &mut |_, _| Ok(()), &limits).unwrap_err()
    };
    for limits in [
        Limits {
            max_tar: 1000,
            ..Limits::default()
        },
        Limits {
            max_recipe: 10,
            ..Limits::default()
        },
        Limits {
            max_file: 1000,
            ..Limits::default()
        },
        Limits {
            window_log_max: 10,
            ..Limits::default()
        },
    ] {
        let e = try_with(limits.clone());
        assert!(matches!(e, PackError::TooLarge { .. }), "{limits:?}: {e}");
        assert!(!e.is_bad_pack());
    }
}

#[test]
fn make_refuses_a_source_without_the_target_s_chunks() {
    let (v1, v2) = case();
    let bases = [v1.base()];
    let opts = Options::default();
    let made = |source: &HashMap<ChunkId, Vec<u8>>| {
        pack::make(
            v2.digest,
            &v2.recipe,
            &v2.encoded,
            &bases,
            None,
            source,
            &opts,
        )
    };
    let e = made(&v1.store).unwrap_err();
    assert!(matches!(e, PackError::MissingChunk { .. }), "{e}");
    let mut wrong = store_of(&[&v1, &v2]);
    for bytes in wrong.values_mut() {
        bytes[0] ^= 1;
    }
    let e = made(&wrong).unwrap_err();
    assert!(matches!(e, PackError::ChunkMismatch { .. }), "{e}");
}

#[test]
fn the_fixture_packs_apply_to_the_fixed_base() {
    let base = pack_fixture::base();
    let bases: [Base; 1] = [base.base()];
    for t in pack_fixture::targets() {
        let mut source = base.chunks.clone();
        source.extend(t.chunks.clone());
        let (p, s) = pack::make(
            t.layer,
            &t.recipe,
            &t.encoded,
            &bases,
            None,
            &source,
            &Options::default(),
        )
        .unwrap();
        let applied = pack::apply(
            &p,
            &bases,
            &base.chunks,
            &mut |_, _| Ok(()),
            &Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(applied.summary, s);
        assert_eq!(applied.recipe, t.recipe);
        if let Some(dir) = std::env::var_os("SHOAL_FUZZ_CORPUS") {
            std::fs::write(
                std::path::Path::new(&dir).join(format!("seed-{}", t.name)),
                &p,
            )
            .unwrap();
        }
    }
}
