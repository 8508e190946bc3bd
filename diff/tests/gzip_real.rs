//! Round trips against gzip streams the real encoders wrote: blobs pushed by podman
//! and docker, every other level of Go's standard library, klauspost and pgzip,
//! Python's zlib, and the default encoders at sizes around their block boundaries. How each was made is in
//! `gzip_fixtures/README.md`; their content is generated here from a seed.

#[path = "gzip_fixtures/corpus.rs"]
mod corpus;

use std::io::Read;

use shoal_diff::gzip::{self, Encoder, PGZIP_BLOCK, Profile, ProfileError};

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The fixture decodes to `content`, its profile names `expect` (when given), and the
/// profile re-creates it exactly.
fn round_trip(name: &str, gz: &[u8], content: &[u8], expect: Option<Encoder>) {
    assert!(
        gunzip(gz) == content,
        "{name}: fixture content differs from the corpus"
    );
    let profile = gzip::profile(gz).unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(expect) = expect {
        assert_eq!(profile.encoder(), expect, "{name}");
    }
    let mut out = Vec::new();
    let n = gzip::recompress(&profile, content, &mut out).unwrap();
    assert_eq!(n as usize, out.len());
    if out != gz {
        let at = out.iter().zip(gz).position(|(a, b)| a != b);
        panic!(
            "{name}: re-created {} bytes, fixture has {}, first difference at {at:?}",
            out.len(),
            gz.len()
        );
    }
    assert!(gzip::recreates(&profile, content, gz).unwrap(), "{name}");
    assert_eq!(Profile::decode(&profile.encode()).unwrap(), profile);
}

const PGZIP_DEFAULT: Encoder = Encoder::Pgzip {
    level: -1,
    block_size: PGZIP_BLOCK,
};

#[test]
fn podman_push_is_pgzip_at_its_default_level() {
    let gz = include_bytes!("gzip_fixtures/podman-big.gz");
    round_trip(
        "podman-big",
        gz,
        &corpus::tar(1, 1_300_000),
        Some(PGZIP_DEFAULT),
    );
}

#[test]
fn docker_push_is_go_compress_gzip_at_its_default_level() {
    let gz = include_bytes!("gzip_fixtures/docker-small.gz");
    let expect = Encoder::GoStdlib { level: -1 };
    round_trip("docker-small", gz, &corpus::tar(2, 300_000), Some(expect));
}

#[test]
fn go_huffman_only() {
    let gz = include_bytes!("gzip_fixtures/gohuff-text.gz");
    let expect = Encoder::GoStdlib { level: -2 };
    round_trip("gohuff", gz, &corpus::text(3, 8000), Some(expect));
}

/// Every other level of each library: `levels.bin` holds records of encoder (1 Go,
/// 2 klauspost, 3 pgzip), level, content (0 or 1), gzip length (`u32`) and stream.
#[test]
fn every_level_of_each_library() {
    let contents = [corpus::tar(4, 40_000), corpus::sparse(7, 1_064_961)];
    let mut b: &[u8] = include_bytes!("gzip_fixtures/levels.bin");
    let mut seen = 0;
    while !b.is_empty() {
        let level = b[1] as i8;
        let expect = match b[0] {
            1 => Encoder::GoStdlib { level },
            2 => Encoder::Klauspost { level },
            _ => Encoder::Pgzip {
                level,
                block_size: PGZIP_BLOCK,
            },
        };
        let content = &contents[usize::from(b[2])];
        let len = u32::from_le_bytes(b[3..7].try_into().unwrap()) as usize;
        let gz = &b[7..7 + len];
        // klauspost's level 5 is also its default, -1, which is tried first.
        let expect = match expect {
            Encoder::Klauspost { level: 5 } => Encoder::Klauspost { level: -1 },
            e => e,
        };
        round_trip(&expect.to_string(), gz, content, Some(expect));
        b = &b[7 + len..];
        seen += 1;
    }
    assert_eq!(seen, 18);
}

#[cfg(feature = "zlib")]
#[test]
fn python_gzip_is_zlib() {
    let gz = include_bytes!("gzip_fixtures/python6-small.gz");
    let expect = Encoder::Zlib { level: 6 };
    round_trip("python6", gz, &corpus::tar(2, 300_000), Some(expect));
}

#[cfg(not(feature = "zlib"))]
#[test]
fn python_gzip_needs_the_zlib_feature() {
    let gz = include_bytes!("gzip_fixtures/python6-small.gz");
    assert!(matches!(
        gzip::profile(gz),
        Err(ProfileError::Unknown { .. })
    ));
}

#[test]
fn gnu_gzip_gets_no_profile() {
    let gz = include_bytes!("gzip_fixtures/gnu6-small.gz");
    assert!(gunzip(gz) == corpus::tar(2, 300_000));
    assert!(matches!(
        gzip::profile(gz),
        Err(ProfileError::Unknown { .. })
    ));
}

/// Records of a `sizes-*.bin` fixture: content length and gzip stream.
fn records(mut b: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        out.push((n, &b[8..8 + len]));
        b = &b[8 + len..];
    }
    out
}

fn sizes(name: &str, fixture: &[u8], expect: Encoder) {
    let content = corpus::sparse(7, 1_064_961);
    let records = records(fixture);
    assert_eq!(records.len(), 13, "{name}");
    for (n, gz) in records {
        // Tiny inputs can come out the same under several encoders or levels; any
        // of them re-creates the stream, so the encoder is only checked past 64 KiB.
        let expect = (n > 65536).then_some(expect);
        round_trip(&format!("{name} at {n} bytes"), gz, &content[..n], expect);
    }
}

#[test]
fn go_standard_library_at_block_boundaries() {
    let expect = Encoder::GoStdlib { level: -1 };
    sizes("std", include_bytes!("gzip_fixtures/sizes-std.bin"), expect);
}

#[test]
fn pgzip_at_block_boundaries() {
    sizes(
        "pgzip",
        include_bytes!("gzip_fixtures/sizes-pgzip.bin"),
        PGZIP_DEFAULT,
    );
}
