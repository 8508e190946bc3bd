//! The `flatten` fuzz target's seeds, run through its harness (`fuzzing.rs`): the hostile
//! cases of `tests_hostile.rs` with their symlinks pointing at the harness's sentinel,
//! and ordinary layers of every entry kind. With `SHOAL_FUZZ_CORPUS=DIR` set, the test
//! also writes them to `DIR` as the seed corpus (`fuzz/corpus/flatten/`):
//!
//! ```sh
//! SHOAL_FUZZ_CORPUS=$PWD/fuzz/corpus/flatten cargo test -p shoal-node flatten::tests_fuzz
//! ```

use tar::EntryType;

use super::fuzzing::{self, Input, SENTINEL};
use super::testkit::{E, tar};
use super::tests::CAPABILITY;
use super::tests_hostile::cases;
use super::{FlattenError, FlattenLimits, Problem};

/// A seed: its layers, whether the tight limits apply, and what flattening it gives.
struct Seed {
    name: String,
    layers: Vec<Vec<u8>>,
    tight: bool,
    expect: Expect,
}

enum Expect {
    /// A tree.
    Tree,
    /// An entry error with a problem this accepts.
    Problem(fn(&Problem) -> bool),
}

fn seed(name: &str, layers: Vec<Vec<u8>>, expect: Expect) -> Seed {
    Seed {
        name: name.to_owned(),
        layers,
        tight: false,
        expect,
    }
}

/// A layer with one entry of every kind, and metadata on each.
fn every_kind() -> Vec<u8> {
    tar(&[
        E::dir("./").mode(0o750).owner(1000, 1000),
        E::dir("etc").mtime(1_500_000_000),
        E::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        E::file("bin", b"\x7fELF")
            .mode(0o4755)
            .pax(b"SCHILY.xattr.security.capability", &CAPABILITY)
            .pax(b"SCHILY.xattr.user.note", b"a\nb"),
        E::symlink("sh", "bin").pax(b"SCHILY.xattr.trusted.t", b"1"),
        E::hardlink("bin2", "bin"),
        E::dir("dev"),
        E::node("dev/null", EntryType::Char, 1, 3).mode(0o666),
        E::node("dev/loop0", EntryType::Block, 7, 0),
        E::node("pipe", EntryType::Fifo, 0, 0),
        E::file("precise", b"p")
            .pax(b"mtime", b"1600000000.25")
            .pax(b"uid", b"70000"),
        E::file("o", b"").pax(b"SCHILY.xattr.user.overlay.opaque", b"y"),
        E::dir("locked").mode(0),
        E::file("locked/f", b"x").mode(0),
    ])
}

/// Three layers that replace, white out and link across layers.
fn three_layers() -> Vec<Vec<u8>> {
    vec![
        tar(&[
            E::dir("d"),
            E::file("d/a", b"old a"),
            E::dir("d/sub"),
            E::file("d/sub/x", b"x"),
            E::file("t", b"two"),
            E::hardlink("l", "t"),
            E::file("f", b"file"),
            E::dir("g"),
        ]),
        tar(&[
            E::dir("d"),
            E::file("d/a", b"new a"),
            E::file("d/.wh..wh..opq", b""),
            E::file(".wh.f", b""),
            E::dir("f"),
            E::file("g", b"was a dir"),
            E::hardlink("l2", "t"),
            E::file("t", b"changed"),
            E::file(".wh..wh.plnk", b""),
        ]),
        tar(&[
            E::file("f/.wh.nothing", b""),
            E::file(".wh.d", b""),
            E::symlink("d", "g"),
            E::hardlink("sym-link", "d"),
            E::file("long/".repeat(30).trim_end_matches('/'), b"deep and long"),
        ]),
    ]
}

/// A layer as the `tar` crate writes it in GNU format: long names and long link names.
fn gnu_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let long = format!("{}/file", "n".repeat(120));
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(4);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, &long, &b"data"[..])
        .expect("write a long name");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(EntryType::Link);
    link.set_mode(0o644);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(1_700_000_000);
    link.set_size(0);
    builder
        .append_link(&mut link, "short", &long)
        .expect("write a long link");
    builder.into_inner().expect("finish the tar")
}

fn seeds() -> Vec<Seed> {
    let mut seeds = vec![
        seed("every-kind", vec![every_kind()], Expect::Tree),
        seed("three-layers", three_layers(), Expect::Tree),
        seed("gnu-long-names", vec![gnu_layer()], Expect::Tree),
        seed(
            "whiteout-through-symlink",
            vec![
                tar(&[E::symlink("link", &format!("../{SENTINEL}"))]),
                tar(&[
                    E::file("link/.wh.f", b""),
                    E::file("link/.wh..wh..opq", b""),
                ]),
            ],
            Expect::Tree,
        ),
        Seed {
            tight: true,
            ..seed(
                "too-deep",
                vec![tar(&[E::file("1/2/3/4/5/6/7", b"x")])],
                Expect::Problem(|p| matches!(p, Problem::TooDeep { limit: 6 })),
            )
        },
    ];
    for case in cases(&format!("../{SENTINEL}")) {
        let (c, d, t) = (case.limits, FlattenLimits::default(), fuzzing::limits(true));
        let tight = c != d;
        // Each case lowers one limit: the tight limits must lower it the same way.
        assert!(
            !tight
                || (c.max_entries == d.max_entries || c.max_entries == t.max_entries)
                    && (c.max_tar_bytes == d.max_tar_bytes || c.max_tar_bytes == t.max_tar_bytes)
                    && (c.max_header_bytes == d.max_header_bytes
                        || c.max_header_bytes == t.max_header_bytes),
            "{}: limits the harness cannot give",
            case.name
        );
        seeds.push(Seed {
            tight,
            ..seed(
                &format!("hostile-{}", case.name),
                case.layers,
                Expect::Problem(case.problem),
            )
        });
    }
    seeds
}

#[test]
fn fuzz_seeds_pass_the_harness_with_their_outcome() {
    let corpus = std::env::var_os("SHOAL_FUZZ_CORPUS").map(std::path::PathBuf::from);
    for seed in seeds() {
        let data = fuzzing::join(&seed.layers, seed.tight);
        let input = fuzzing::split(&data).expect("a seed is not empty");
        let layers: Vec<&[u8]> = seed.layers.iter().map(Vec::as_slice).collect();
        assert_eq!(
            input,
            Input {
                layers,
                tight: seed.tight
            },
            "{}: split(join)",
            seed.name
        );
        let result = fuzzing::check(&data).expect("a seed is not empty");
        match (&seed.expect, &result) {
            (Expect::Tree, Ok(_)) => {}
            (Expect::Problem(accepts), Err(FlattenError::Entry { problem, .. }))
                if accepts(problem) => {}
            (_, result) => panic!("{}: unexpected {result:?}", seed.name),
        }
        if let Some(dir) = &corpus {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("seed-{}", seed.name)), &data).unwrap();
        }
    }
}

#[test]
fn fuzz_inputs_split_whatever_their_length() {
    assert_eq!(fuzzing::split(b""), None);
    let one = fuzzing::split(&[0x81, 1, 2]).unwrap();
    assert_eq!((one.layers, one.tight), (vec![&[1u8, 2][..]], true));
    // Two layers, the length cut short: the first is empty, the second the rest.
    const EMPTY: &[u8] = &[];
    let cut = fuzzing::split(&[1, 9]).unwrap();
    assert_eq!(cut.layers, [EMPTY, EMPTY]);
    // Three layers whose lengths pass the end: the bytes go to the first.
    let over = fuzzing::split(&[2, 0xff, 0xff, 1, 0, 7, 8]).unwrap();
    assert_eq!(over.layers, [&[7u8, 8][..], EMPTY, EMPTY]);
    assert!(!over.tight);
}
