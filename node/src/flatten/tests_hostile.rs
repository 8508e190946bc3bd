//! Hostile layers: names that climb out, writes and hardlinks through symlinks, limits,
//! truncation. Each must fail with an error naming the entry, leave nothing at the
//! output path (nor a partial tree beside it), and leave a directory outside the tree
//! exactly as it was.

use std::fs;
use std::path::Path;

use tar::EntryType;

use super::testkit::{E, Fixture, exists, lmeta, names, tar, tar_unterminated};
use super::{FlattenError, FlattenLimits, Problem};

/// A directory outside the tree, with one file in it, to check nothing touches it.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = tempfile::Builder::new()
            .prefix("outside-")
            .tempdir()
            .unwrap();
        fs::write(dir.path().join("f"), b"outside").unwrap();
        Outside { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn assert_untouched(&self) {
        assert_eq!(names(self.dir.path()), ["f"]);
        assert_eq!(fs::read(self.dir.path().join("f")).unwrap(), b"outside");
        assert_eq!(lmeta(&self.dir.path().join("f")).len(), 7);
    }
}

/// One hostile case: its layers, the limits, the entry its error must name, and a check
/// of the problem.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) layers: Vec<Vec<u8>>,
    pub(super) limits: FlattenLimits,
    pub(super) entry: &'static str,
    pub(super) problem: fn(&Problem) -> bool,
}

fn case(
    name: &'static str,
    layers: Vec<Vec<u8>>,
    entry: &'static str,
    problem: fn(&Problem) -> bool,
) -> Case {
    Case {
        name,
        layers,
        limits: FlattenLimits::default(),
        entry,
        problem,
    }
}

/// The hostile cases; `o` is where their symlinks point outside the tree.
pub(super) fn cases(o: &str) -> Vec<Case> {
    let mut truncated_data = tar(&[E::file("ok", b"fine"), E::file("cut", &[1u8; 2000])]);
    truncated_data.truncate(512 * 3 + 700);
    let mut truncated_header = tar(&[E::file("ok", b"fine"), E::file("next", b"x")]);
    truncated_header.truncate(512 * 2 + 100);
    let mut bad_checksum = tar(&[E::file("ok", b"fine"), E::file("flipped", b"x")]);
    bad_checksum[1024 + 10] ^= 0x55;
    vec![
        case(
            "dotdot",
            vec![tar(&[E::file("../evil", b"x")])],
            "../evil",
            |p| matches!(p, Problem::EscapesRoot),
        ),
        case(
            "dotdot-inside",
            vec![tar(&[E::file("a/../../evil", b"x")])],
            "a/../../evil",
            |p| matches!(p, Problem::EscapesRoot),
        ),
        case(
            "write-through-absolute-symlink",
            vec![
                tar(&[E::symlink("link", o)]),
                tar(&[E::file("link/pwned", b"x")]),
            ],
            "link/pwned",
            |p| matches!(p, Problem::ThroughSymlink { at } if at == "link"),
        ),
        case(
            "dir-through-absolute-symlink",
            vec![tar(&[E::symlink("link", o), E::dir("link/sub")])],
            "link/sub",
            |p| matches!(p, Problem::ThroughSymlink { .. }),
        ),
        case(
            "write-through-symlink-to-dotdot",
            vec![tar(&[
                E::dir("a"),
                E::symlink("a/up", ".."),
                E::file("a/up/x", b"x"),
            ])],
            "a/up/x",
            |p| matches!(p, Problem::ThroughSymlink { at } if at == "a/up"),
        ),
        case(
            "write-through-relative-symlink-inside",
            vec![tar(&[
                E::dir("real"),
                E::symlink("alias", "real"),
                E::file("alias/f", b"x"),
            ])],
            "alias/f",
            |p| matches!(p, Problem::ThroughSymlink { .. }),
        ),
        case(
            "hardlink-to-etc-passwd",
            vec![tar(&[E::hardlink("passwd", "../../etc/passwd")])],
            "passwd",
            |p| matches!(p, Problem::LinkEscapes { .. }),
        ),
        case(
            "hardlink-through-symlink",
            vec![tar(&[E::symlink("s", o)]), tar(&[E::hardlink("h", "s/f")])],
            "h",
            |p| matches!(p, Problem::LinkThroughSymlink { at, .. } if at == "s"),
        ),
        case(
            "hardlink-to-directory",
            vec![tar(&[E::dir("d"), E::hardlink("h", "d")])],
            "h",
            |p| matches!(p, Problem::LinkTargetDirectory { .. }),
        ),
        case(
            "hardlink-to-missing",
            vec![tar(&[E::hardlink("h", "nothing")])],
            "h",
            |p| matches!(p, Problem::LinkTargetMissing { .. }),
        ),
        case(
            "file-under-a-file",
            vec![tar(&[E::file("f", b"x"), E::file("f/g", b"y")])],
            "f/g",
            |p| matches!(p, Problem::NotADirectory { .. }),
        ),
        case(
            "nul-in-pax-path",
            vec![tar(&[E::file("x", b"x").pax(b"path", b"a\0b")])],
            "a\0b",
            |p| matches!(p, Problem::NulByte),
        ),
        case("truncated-in-data", vec![truncated_data], "cut", |p| {
            matches!(p, Problem::Truncated { expected: 2000, .. })
        }),
        case(
            "truncated-in-header",
            vec![truncated_header],
            "after ok",
            |p| {
                matches!(
                    p,
                    Problem::Truncated {
                        expected: 512,
                        got: 100
                    }
                )
            },
        ),
        case(
            "no-end-of-archive",
            vec![
                tar(&[E::file("a", b"a")]),
                tar_unterminated(&[E::file("ok", b"fine")]),
            ],
            "after ok",
            |p| matches!(p, Problem::MissingEnd),
        ),
        case("bad-checksum", vec![bad_checksum], "after ok", |p| {
            matches!(p, Problem::BadChecksum)
        }),
        case(
            "unsupported-entry-type",
            vec![tar(&[E::node("weird", EntryType::new(b'V'), 0, 0)])],
            "weird",
            |p| matches!(p, Problem::UnsupportedType { kind: 'V' }),
        ),
        case(
            "gnu-sparse",
            vec![tar(&[E::node("sparse", EntryType::GNUSparse, 0, 0)])],
            "sparse",
            |p| matches!(p, Problem::UnsupportedType { kind: 'S' }),
        ),
        case(
            "pax-sparse",
            vec![tar(&[
                E::file("sparse", b"map").pax(b"GNU.sparse.major", b"1")
            ])],
            "sparse",
            |p| matches!(p, Problem::UnsupportedType { kind: 'S' }),
        ),
        case(
            "root-as-a-file",
            vec![tar(&[E::file("./", b"x")])],
            "./",
            |p| matches!(p, Problem::EmptyName),
        ),
        case(
            "empty-whiteout",
            vec![tar(&[E::file("d/.wh.", b"")])],
            "d/.wh.",
            |p| matches!(p, Problem::BadWhiteout),
        ),
        case(
            "whiteout-named-directory",
            vec![tar(&[E::dir("d"), E::file("d/.wh./f", b"x")])],
            "d/.wh./f",
            |p| matches!(p, Problem::WhiteoutDir),
        ),
        case(
            "owner-out-of-range",
            vec![tar(&[E::file("x", b"").pax(b"uid", b"4294967295")])],
            "x",
            |p| matches!(p, Problem::BadOwner { id: 4294967295 }),
        ),
        Case {
            limits: FlattenLimits {
                max_tar_bytes: 8192,
                ..FlattenLimits::default()
            },
            ..case(
                "tar-over-limit",
                vec![
                    tar(&[E::file("small", b"s")]),
                    tar(&[E::file("huge", &[0u8; 10_000])]),
                ],
                "huge",
                |p| matches!(p, Problem::TarTooLarge { limit: 8192 }),
            )
        },
        Case {
            limits: FlattenLimits {
                max_entries: 3,
                ..FlattenLimits::default()
            },
            ..case(
                "entries-over-limit",
                vec![
                    tar(&[E::file("1", b""), E::file("2", b"")]),
                    tar(&[E::file("3", b""), E::file("4", b"")]),
                ],
                "4",
                |p| matches!(p, Problem::TooManyEntries { limit: 3 }),
            )
        },
        Case {
            limits: FlattenLimits {
                max_header_bytes: 2048,
                ..FlattenLimits::default()
            },
            ..case(
                "pax-header-over-limit",
                vec![tar(&[E::file("x", b"").pax(b"comment", &[b'c'; 4000])])],
                "at the start of the layer",
                |p| matches!(p, Problem::HeadersTooLarge { limit: 2048 }),
            )
        },
    ]
}

#[test]
fn hostile_layers_fail_cleanly_naming_the_entry() {
    let outside = Outside::new();
    for case in cases(outside.path()) {
        let fx = Fixture::new();
        let err = fx
            .run_with(case.name, &case.layers, &case.limits)
            .expect_err(case.name);
        let FlattenError::Entry {
            entry,
            problem,
            layer,
        } = &err
        else {
            panic!("{}: not an entry error: {err}", case.name);
        };
        assert_eq!(entry, case.entry, "{}: {err}", case.name);
        assert_eq!(*layer, case.layers.len() - 1, "{}: {err}", case.name);
        assert!((case.problem)(problem), "{}: {err}", case.name);
        assert!(err.to_string().contains(case.entry), "{}: {err}", case.name);
        assert!(!exists(&fx.out(case.name)), "{}: output left", case.name);
        assert!(
            fx.leftovers().is_empty(),
            "{}: left {:?}",
            case.name,
            fx.leftovers()
        );
        outside.assert_untouched();
    }
}

#[test]
fn whiteout_through_symlink_deletes_nothing_outside() {
    let outside = Outside::new();
    let fx = Fixture::new();
    let l0 = tar(&[E::symlink("link", outside.path())]);
    let l1 = tar(&[
        E::file("link/.wh.f", b""),
        E::file("link/.wh..wh..opq", b""),
    ]);
    let (out, _) = fx.run("whiteout", &[l0, l1]);
    assert!(lmeta(&out.join("link")).file_type().is_symlink());
    outside.assert_untouched();
}

#[test]
fn existing_output_is_refused_and_left_alone() {
    let fx = Fixture::new();
    let out = fx.out("taken");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("mine"), b"keep").unwrap();
    let err = fx
        .run_with(
            "taken",
            &[tar(&[E::file("x", b"x")])],
            &FlattenLimits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, FlattenError::OutExists(_)), "{err}");
    assert_eq!(fs::read(out.join("mine")).unwrap(), b"keep");
    assert_eq!(fx.leftovers(), ["taken"]);
}

#[test]
fn failing_layer_source_cleans_up() {
    let fx = Fixture::new();
    let first = tar(&[E::dir("locked").mode(0), E::file("locked/f", b"x").mode(0)]);
    let layers: Vec<Result<&[u8], FlattenError>> = vec![
        Ok(&first[..]),
        Err(FlattenError::Source("the store lost a piece".into())),
    ];
    let err = super::flatten(
        layers,
        &fx.objects,
        &fx.out("src"),
        &FlattenLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, FlattenError::Source(_)), "{err}");
    assert!(fx.leftovers().is_empty());
    assert!(!exists(Path::new(&fx.out("src"))));
}
