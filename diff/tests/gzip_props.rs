//! Properties of gzip recompression over generated inputs:
//!
//! - zlib's own streams, at every level, re-create exactly from their profile
//!   (feature `zlib`);
//! - every encoder here writes a valid stream of its input, whose profile re-creates
//!   it (the Go encoders cannot be compared with Go at test time; `gzip_real.rs`
//!   does that with fixtures);
//! - profiles survive their wire form, and no input makes `profile` or
//!   `Profile::decode` panic.

#[path = "gzip_fixtures/corpus.rs"]
mod corpus;

use std::io::Read;

use proptest::prelude::*;
use shoal_diff::gzip::{self, DecodeError, Encoder, PGZIP_BLOCK, Profile};

fn gunzip(gz: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut out)?;
    Ok(out)
}

/// Inputs of every kind the encoders treat differently: random (stored and
/// literal-only blocks), text, zero-heavy, two letters (two-symbol codes), one byte
/// repeated (one-symbol codes), and mixtures at any length.
fn content() -> impl Strategy<Value = Vec<u8>> {
    content_up_to(150_000)
}

fn content_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![0usize..300, 300usize..max / 2, max / 2..max];
    (0u8..6, any::<u64>(), len).prop_map(|(kind, seed, len)| match kind {
        0 => corpus::random(seed, len),
        1 => corpus::text(seed, len),
        2 => corpus::sparse(seed, len),
        3 => corpus::two_letters(seed, len),
        4 => vec![seed as u8; len],
        _ => corpus::tar(seed, len),
    })
}

/// Content for `encoder`: the hash-chain levels (7 to 9) search long chains and run
/// slowly in an unoptimised test build, so they get less of it.
fn content_for(encoder: Encoder) -> impl Strategy<Value = Vec<u8>> {
    content_up_to(if encoder.level() >= 7 {
        40_000
    } else {
        150_000
    })
}

/// The header Go's writers put before a stream at `level`.
fn go_header(encoder: Encoder) -> Vec<u8> {
    let xfl = match encoder.level() {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    let mtime: u32 = match encoder {
        Encoder::Pgzip { .. } => 0x886e_0900,
        _ => 0,
    };
    let mut h = vec![0x1f, 0x8b, 8, 0];
    h.extend_from_slice(&mtime.to_le_bytes());
    h.extend_from_slice(&[xfl, 255]);
    h
}

fn go_encoders() -> impl Strategy<Value = Encoder> {
    prop_oneof![
        (-2i8..=9).prop_map(|level| Encoder::GoStdlib { level }),
        (-2i8..=9).prop_map(|level| Encoder::Klauspost { level }),
        (-2i8..=9).prop_map(|level| Encoder::Pgzip {
            level,
            block_size: PGZIP_BLOCK
        }),
    ]
}

fn recompress(profile: &Profile, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    gzip::recompress(profile, content, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[cfg(feature = "zlib")]
    #[test]
    fn zlib_streams_recreate_exactly(level in 1u32..=9, content in content_up_to(60_000)) {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(&content).unwrap();
        let gz = e.finish().unwrap();
        let profile = gzip::profile(&gz).unwrap();
        prop_assert!(recompress(&profile, &content) == gz, "{}", profile.encoder());
    }

    #[test]
    fn go_encoders_write_valid_streams_that_profile_back(
        (encoder, content) in go_encoders().prop_flat_map(|e| (Just(e), content_for(e))),
    ) {
        let profile = Profile::new(&go_header(encoder), encoder).unwrap();
        let gz = recompress(&profile, &content);
        prop_assert!(gunzip(&gz).unwrap() == content);
        let found = gzip::profile(&gz).unwrap();
        prop_assert!(recompress(&found, &content) == gz, "{encoder} found as {}", found.encoder());
        prop_assert!(gzip::recreates(&found, &content[..], &gz[..]).unwrap());
    }

    #[test]
    fn pgzip_blocks_of_any_size_decode(
        (encoder, content) in (-2i8..=9, 16385u32..40_000)
            .prop_map(|(level, block_size)| Encoder::Pgzip { level, block_size })
            .prop_flat_map(|e| (Just(e), content_for(e))),
    ) {
        let profile = Profile::new(&go_header(encoder), encoder).unwrap();
        prop_assert!(gunzip(&recompress(&profile, &content)).unwrap() == content);
    }

    #[test]
    fn profiles_survive_their_wire_form(
        encoder in go_encoders(),
        name in proptest::option::of("[a-z.]{1,40}"),
    ) {
        let mut header = go_header(encoder);
        if let Some(name) = &name {
            header[3] = 8;
            header.extend_from_slice(name.as_bytes());
            header.push(0);
        }
        let profile = Profile::new(&header, encoder).unwrap();
        let wire = profile.encode();
        prop_assert_eq!(Profile::decode(&wire).unwrap(), profile.clone());
        for cut in 0..wire.len() {
            prop_assert_eq!(Profile::decode(&wire[..cut]), Err(DecodeError::Truncated));
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Profile::decode(&bytes);
    }

    #[test]
    fn profile_never_panics(
        tail in proptest::collection::vec(any::<u8>(), 0..2000),
        content in content(),
        cut in any::<prop::sample::Index>(),
    ) {
        // Garbage behind a gzip header, and a valid stream cut anywhere.
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        gz.extend_from_slice(&tail);
        let _ = gzip::profile(&gz);
        let encoder = Encoder::GoStdlib { level: 6 };
        let gz = recompress(&Profile::new(&go_header(encoder), encoder).unwrap(), &content);
        let _ = gzip::profile(&gz[..cut.index(gz.len() + 1)]);
    }
}

#[test]
fn decode_rejects_what_it_cannot_run() {
    let go = Encoder::GoStdlib { level: 6 };
    let mut wire = Profile::new(&go_header(go), go).unwrap().encode();
    assert_eq!(wire.len(), 19);
    wire[0] = 2;
    assert_eq!(Profile::decode(&wire), Err(DecodeError::Version(2)));
    wire[0] = 1;
    wire[1] = 9;
    assert_eq!(Profile::decode(&wire), Err(DecodeError::UnknownEncoder(9)));
    wire[1] = 1;
    wire[2] = 10;
    let bad = Encoder::GoStdlib { level: 10 };
    assert_eq!(Profile::decode(&wire), Err(DecodeError::Unsupported(bad)));
    wire[2] = 6;
    wire[3] = 1;
    assert_eq!(Profile::decode(&wire), Err(DecodeError::BlockSize(1)));
    wire[3] = 0;
    wire.push(0);
    assert_eq!(Profile::decode(&wire), Err(DecodeError::Trailing(1)));
    wire.pop();
    wire[9] = 0;
    assert!(matches!(
        Profile::decode(&wire),
        Err(DecodeError::Header(_))
    ));

    let tiny = Encoder::Pgzip {
        level: -1,
        block_size: 16384,
    };
    let huge = Encoder::Pgzip {
        level: -1,
        block_size: (64 << 20) + 1,
    };
    let other_level = Encoder::Pgzip {
        level: 10,
        block_size: PGZIP_BLOCK,
    };
    for e in [tiny, huge, other_level] {
        assert_eq!(
            Profile::new(&go_header(e), e),
            Err(DecodeError::Unsupported(e))
        );
    }
}

#[test]
fn empty_content_round_trips_under_every_encoder() {
    for level in -2..=9 {
        let e = Encoder::GoStdlib { level };
        let gz = recompress(&Profile::new(&go_header(e), e).unwrap(), &[]);
        assert_eq!(gunzip(&gz).unwrap(), b"");
    }
    let e = Encoder::Pgzip {
        level: -1,
        block_size: PGZIP_BLOCK,
    };
    let gz = recompress(&Profile::new(&go_header(e), e).unwrap(), &[]);
    // pgzip's empty stream: an empty flushed block, then the final empty fixed block.
    assert_eq!(&gz[10..gz.len() - 8], [0, 0, 0, 0xff, 0xff, 3, 0]);
}

#[test]
fn recreates_rejects_any_other_blob() {
    let content = corpus::tar(9, 200_000);
    let e = Encoder::GoStdlib { level: -1 };
    let profile = Profile::new(&go_header(e), e).unwrap();
    let gz = recompress(&profile, &content);
    assert!(gzip::recreates(&profile, &content[..], &gz[..]).unwrap());
    let mut flipped = gz.clone();
    flipped[gz.len() / 2] ^= 1;
    assert!(!gzip::recreates(&profile, &content[..], &flipped[..]).unwrap());
    assert!(!gzip::recreates(&profile, &content[..], &gz[..gz.len() - 1]).unwrap());
    let mut longer = gz.clone();
    longer.extend_from_slice(&gz);
    assert!(!gzip::recreates(&profile, &content[..], &longer[..]).unwrap());
    assert!(!gzip::recreates(&profile, &content[..1000], &gz[..]).unwrap());
}

#[test]
fn profile_needs_only_the_ends_of_a_blob() {
    let content = corpus::tar(10, 6_000_000);
    let e = Encoder::Pgzip {
        level: -1,
        block_size: PGZIP_BLOCK,
    };
    let gz = recompress(&Profile::new(&go_header(e), e).unwrap(), &content);
    let tail = &gz[gz.len() - 16..];
    for cut in [gz.len() / 2, gz.len() / 8] {
        let found = gzip::profile_parts(&gz[..cut], tail).unwrap();
        assert_eq!(found.encoder(), e, "cut at {cut}");
    }
    assert!(gzip::profile_parts(&gz[..10], tail).is_err());
}
