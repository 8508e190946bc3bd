//! The image's own hardlinks, told apart from files that merely share an object: which
//! paths the flattener groups, and that an export links those and nothing else.

use std::io::Read;
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::export::write_tree_tar;
use super::links::{self, walk_order};
use super::testkit::{E, Fixture, lmeta, read, tar};

/// One entry of an exported tar: (path, type, link target, content).
type Exported = (String, EntryType, String, Vec<u8>);

/// Exports the tree with `groups` and reads the tar back, entry by entry.
fn exported(root: &Path, groups: &[Vec<PathBuf>]) -> Vec<Exported> {
    let mut bytes = Vec::new();
    write_tree_tar(root, groups, &mut bytes, 256, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let mut out = Vec::new();
    for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let kind = entry.header().entry_type();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap())
            .unwrap_or_default();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((path, kind, link, data));
    }
    out
}

/// The hardlink entries of an export: (path, target).
fn hardlinks(entries: &[Exported]) -> Vec<(&str, &str)> {
    entries
        .iter()
        .filter(|e| e.1 == EntryType::Link)
        .map(|e| (e.0.as_str(), e.2.as_str()))
        .collect()
}

/// The entry at `path`.
fn at<'a>(entries: &'a [Exported], path: &str) -> &'a Exported {
    entries
        .iter()
        .find(|e| e.0 == path)
        .unwrap_or_else(|| panic!("{path} not exported"))
}

fn group(paths: &[&str]) -> Vec<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

#[test]
fn identical_files_export_as_two_files_and_a_real_hardlink_as_a_link() {
    let fx = Fixture::new();
    let (tree, report) = fx.run(
        "tree",
        &[tar(&[
            E::file("a", b"same bytes"),
            E::file("b", b"same bytes"),
            E::file("c", b"linked"),
            E::hardlink("d", "c"),
        ])],
    );
    // In the tree, both pairs share an inode: a and b through their one object.
    assert_eq!(lmeta(&tree.join("a")).ino(), lmeta(&tree.join("b")).ino());
    assert_eq!(lmeta(&tree.join("c")).ino(), lmeta(&tree.join("d")).ino());
    assert_eq!(report.link_groups, [group(&["c", "d"])]);

    let entries = exported(&tree, &report.link_groups);
    assert_eq!(hardlinks(&entries), [("d", "c")]);
    for path in ["a", "b"] {
        let entry = at(&entries, path);
        assert_eq!(entry.1, EntryType::Regular, "{path}");
        assert_eq!(entry.3, b"same bytes", "{path}");
    }
    assert_eq!(at(&entries, "c").3, b"linked");
}

#[test]
fn a_hardlink_whose_target_is_overwritten_exports_as_two_files() {
    let fx = Fixture::new();
    let lower = tar(&[
        E::file("t", b"one"),
        E::hardlink("l", "t"),
        E::file("gone", b"deleted later"),
        E::hardlink("stays", "gone"),
    ]);
    let upper = tar(&[E::file("t", b"two"), E::file(".wh.gone", b"")]);
    let (tree, report) = fx.run("tree", &[lower, upper]);
    assert_eq!(read(&tree.join("l")), b"one");
    assert_eq!(read(&tree.join("t")), b"two");
    assert!(report.link_groups.is_empty(), "{:?}", report.link_groups);

    let entries = exported(&tree, &report.link_groups);
    assert!(hardlinks(&entries).is_empty());
    assert_eq!(at(&entries, "l").3, b"one");
    assert_eq!(at(&entries, "t").3, b"two");
    assert_eq!(at(&entries, "stays").3, b"deleted later");
    assert_eq!(at(&entries, "stays").1, EntryType::Regular);
}

#[test]
fn a_hardlink_over_an_identical_file_joins_its_target() {
    // b is its own file with a's bytes (one object, one inode), until a later layer
    // makes it a hardlink of a: then it is one file of the image with a.
    let fx = Fixture::new();
    let lower = tar(&[E::file("a", b"x"), E::file("b", b"x"), E::file("c", b"x")]);
    let upper = tar(&[E::hardlink("b", "a"), E::hardlink("e", "b")]);
    let (tree, report) = fx.run("tree", &[lower, upper]);
    assert_eq!(report.link_groups, [group(&["a", "b", "e"])]);
    let entries = exported(&tree, &report.link_groups);
    assert_eq!(hardlinks(&entries), [("b", "a"), ("e", "a")]);
    assert_eq!(at(&entries, "c").1, EntryType::Regular);
}

#[test]
fn links_follow_removals_of_their_directories() {
    let fx = Fixture::new();
    let lower = tar(&[
        E::dir("d"),
        E::file("d/t", b"in d"),
        E::hardlink("x", "d/t"),
        E::dir("e"),
        E::file("e/t", b"in e"),
    ]);
    // d goes with its link partner; the link named e replaces the directory e that
    // holds its own target.
    let upper = tar(&[E::file(".wh.d", b""), E::hardlink("e", "e/t")]);
    let (tree, report) = fx.run("tree", &[lower, upper]);
    assert_eq!(read(&tree.join("x")), b"in d");
    assert_eq!(read(&tree.join("e")), b"in e");
    assert!(report.link_groups.is_empty(), "{:?}", report.link_groups);
    assert!(hardlinks(&exported(&tree, &report.link_groups)).is_empty());
}

#[test]
fn a_group_is_written_in_walk_order_so_its_file_comes_first() {
    // `.` sorts before `/`, but the export writes all of `a/` before `a.b`.
    let fx = Fixture::new();
    let (tree, report) = fx.run(
        "tree",
        &[tar(&[
            E::file("a.b", b"data"),
            E::dir("a"),
            E::hardlink("a/b", "a.b"),
            E::symlink("s", "a.b"),
            E::hardlink("r", "s"),
        ])],
    );
    assert_eq!(
        report.link_groups,
        [group(&["a/b", "a.b"]), group(&["r", "s"])]
    );
    let entries = exported(&tree, &report.link_groups);
    assert_eq!(at(&entries, "a/b").1, EntryType::Regular);
    // A hardlink to a symlink is the symlink: the first path written is one.
    assert_eq!(at(&entries, "r").1, EntryType::Symlink);
    assert_eq!(hardlinks(&entries), [("a.b", "a/b"), ("s", "r")]);
    assert!(walk_order(b"a/b", b"a.b").is_lt());
    assert!(walk_order(b"a", b"a/b").is_lt());
}

#[test]
fn a_tree_written_to_against_its_groups_is_refused() {
    let fx = Fixture::new();
    let (tree, report) = fx.run("tree", &[tar(&[E::file("a", b"1"), E::file("b", b"2")])]);
    let mut out = Vec::new();
    let err = write_tree_tar(&tree, &[group(&["a", "b"])], &mut out, 256, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(err.to_string().contains("b is a hardlink of a"), "{err}");
    assert!(report.link_groups.is_empty());
}

#[test]
fn the_links_file_round_trips_any_path_and_refuses_other_versions() {
    use std::os::unix::ffi::OsStrExt;
    let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"dir/\xff\xfename"));
    let groups = vec![group(&["usr/bin/a", "usr/bin/b"]), vec![odd, "z".into()]];
    let bytes = links::encode(&groups);
    assert_eq!(links::decode(&bytes), Some(groups));
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("\"usr/bin/a\""), "{text}");
    let other = text.replace("\"version\": 1", "\"version\": 2");
    assert_ne!(other, text);
    assert_eq!(links::decode(other.as_bytes()), None);
    assert_eq!(links::decode(b"not json"), None);
}
