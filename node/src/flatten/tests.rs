//! Fixtures for the flattener, one per bug flatteners are known to have, each named for
//! it, plus the pure parts (names, PAX records, times). The hostile layers are in
//! `tests_hostile.rs`; the tar writer and helpers in `testkit.rs`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;

use super::meta::{Mtime, parse_pax_time};
use super::path::{NameKind, TreePath, classify};
use super::stream::parse_pax;
use super::testkit::{E, Fixture, block, exists, lmeta, names, pax_records, read, tar, xattr};
use super::{FlattenError, FlattenLimits, Problem};

#[test]
fn opaque_dir_then_recreated_files_in_same_layer() {
    let lower = tar(&[
        E::dir("d"),
        E::file("d/a", b"old a"),
        E::file("d/b", b"old b"),
        E::dir("d/sub"),
        E::file("d/sub/x", b"x"),
        E::file("other", b"kept"),
    ]);
    let marker = || E::file("d/.wh..wh..opq", b"");
    let files = || vec![E::file("d/a", b"new a"), E::file("d/sub/y", b"y")];
    let mut marker_first = vec![E::dir("d"), marker()];
    marker_first.extend(files());
    let mut marker_last = vec![E::dir("d")];
    marker_last.extend(files());
    marker_last.push(marker());
    let fx = Fixture::new();
    for (name, upper) in [("first", marker_first), ("last", marker_last)] {
        let (out, _) = fx.run(name, &[lower.clone(), tar(&upper)]);
        assert_eq!(
            names(&out),
            ["d", "d/a", "d/sub", "d/sub/y", "other"],
            "marker {name}"
        );
        assert_eq!(read(&out.join("d/a")), b"new a");
    }
}

#[test]
fn whiteout_dir_then_recreated_in_later_layer_loses_old_children() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::dir("d"),
        E::file("d/x", b"x"),
        E::dir("d/e"),
        E::file("d/e/y", b"y"),
    ]);
    let l1 = tar(&[E::file(".wh.d", b"")]);
    let l2 = tar(&[E::dir("d"), E::file("d/z", b"z")]);
    let (out, report) = fx.run("gone", &[l0.clone(), l1.clone()]);
    assert!(names(&out).is_empty());
    assert_eq!(report.whiteouts, 1);
    let (out, _) = fx.run("back", &[l0, l1, l2]);
    assert_eq!(names(&out), ["d", "d/z"]);
}

#[test]
fn hardlink_keeps_content_when_target_deleted_or_overwritten() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::file("t1", b"one"),
        E::hardlink("l1", "t1"),
        E::file("t2", b"two"),
        E::hardlink("./l2", "./t2"),
    ]);
    let (out, _) = fx.run("base", std::slice::from_ref(&l0));
    assert_eq!(lmeta(&out.join("l1")).ino(), lmeta(&out.join("t1")).ino());
    assert_eq!(lmeta(&out.join("l2")).ino(), lmeta(&out.join("t2")).ino());

    let l1 = tar(&[
        E::file(".wh.t1", b""),
        E::hardlink("l3", "t2"), // to a lower layer's file, before it is overwritten
        E::file("t2", b"changed"),
        E::symlink("sym", "t2"),
        E::hardlink("sym-link", "sym"), // a hardlink to a symlink is the symlink
    ]);
    let (out, _) = fx.run("later", &[l0, l1]);
    assert!(!exists(&out.join("t1")));
    assert_eq!(read(&out.join("l1")), b"one");
    assert_eq!(read(&out.join("t2")), b"changed");
    assert_eq!(read(&out.join("l2")), b"two");
    assert_ne!(lmeta(&out.join("l2")).ino(), lmeta(&out.join("t2")).ino());
    assert_eq!(lmeta(&out.join("l3")).ino(), lmeta(&out.join("l2")).ino());
    assert_eq!(
        lmeta(&out.join("sym-link")).ino(),
        lmeta(&out.join("sym")).ino()
    );
    assert!(lmeta(&out.join("sym-link")).file_type().is_symlink());
}

#[test]
fn whiteout_then_symlink_of_same_name() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::file("x", b"x"),
        E::dir("y"),
        E::file("y/old", b"old"),
        E::file("z", b"z"),
    ]);
    // In a later layer.
    let l1 = tar(&[E::file(".wh.x", b"")]);
    let l2 = tar(&[E::symlink("x", "target")]);
    let (out, _) = fx.run("later", &[l0.clone(), l1, l2]);
    assert!(lmeta(&out.join("x")).file_type().is_symlink());
    assert_eq!(fs::read_link(out.join("x")).unwrap(), Path::new("target"));

    // In the same layer, in both orders: the whiteout hides only lower layers.
    for (name, upper) in [
        (
            "whiteout-first",
            vec![E::file(".wh.y", b""), E::file("y", b"new")],
        ),
        (
            "whiteout-last",
            vec![E::file("y", b"new"), E::file(".wh.y", b"")],
        ),
    ] {
        let (out, _) = fx.run(name, &[l0.clone(), tar(&upper)]);
        assert_eq!(read(&out.join("y")), b"new", "{name}");
    }
    let upper = tar(&[E::symlink("z", "t"), E::file(".wh.z", b"")]);
    let (out, _) = fx.run("symlink-then-whiteout", &[l0, upper]);
    assert_eq!(fs::read_link(out.join("z")).unwrap(), Path::new("t"));
}

#[test]
fn file_replaced_by_dir_and_dir_replaced_by_file() {
    let fx = Fixture::new();
    let l0 = tar(&[E::file("f", b"file"), E::dir("d"), E::file("d/c", b"child")]);
    let l1 = tar(&[
        E::dir("f"),
        E::file("f/inner", b"in"),
        E::file("d", b"now a file"),
    ]);
    let (out, _) = fx.run("swap", &[l0, l1]);
    assert!(lmeta(&out.join("f")).is_dir());
    assert_eq!(read(&out.join("f/inner")), b"in");
    assert!(lmeta(&out.join("d")).is_file());
    assert_eq!(read(&out.join("d")), b"now a file");
    assert_eq!(names(&out), ["d", "f", "f/inner"]);
}

#[test]
fn opaque_marker_is_not_a_whiteout_of_dot_opq() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::dir("d"),
        E::file("d/.opq", b"o"),
        E::file("d/keep", b"k"),
    ]);
    let l1 = tar(&[E::file("d/.wh..opq", b"")]);
    let (out, _) = fx.run("opq", &[l0, l1]);
    assert_eq!(names(&out), ["d", "d/keep"]);
    assert_eq!(
        classify(&TreePath::parse(b"d/.wh..wh..opq", 8).unwrap()).unwrap(),
        NameKind::Opaque
    );
    assert_eq!(
        classify(&TreePath::parse(b"d/.wh..opq", 8).unwrap()).unwrap(),
        NameKind::Whiteout(b".opq")
    );
    assert_eq!(
        classify(&TreePath::parse(b".wh..wh.plnk", 8).unwrap()).unwrap(),
        NameKind::AufsMeta
    );
    assert_eq!(
        classify(&TreePath::parse(b".wh..wh.plnk/1.2", 8).unwrap()).unwrap(),
        NameKind::AufsMeta
    );
    // Found by the flatten fuzz target: a whiteout's name as a directory on the path
    // was made as a directory, and a whiteout stood in the tree.
    for path in [&b"a/.wh./b"[..], b".wh.x/y", b"a/.wh.b/.wh.c"] {
        assert!(
            matches!(
                classify(&TreePath::parse(path, 8).unwrap()),
                Err(crate::flatten::Problem::WhiteoutDir)
            ),
            "{}",
            String::from_utf8_lossy(path)
        );
    }
}

#[test]
fn mode_000_files_and_dirs() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::dir("locked").mode(0),
        E::file("locked/f", b"secret").mode(0),
        E::dir("locked/inner").mode(0),
        E::file("locked/inner/g", b"deeper").mode(0),
        E::file("z", b"zzz").mode(0),
    ]);
    let l1 = tar(&[E::file("locked/later", b"added").mode(0)]);
    let (out, _) = fx.run("locked", &[l0.clone(), l1]);
    for name in [
        "locked",
        "locked/f",
        "locked/inner",
        "locked/inner/g",
        "locked/later",
        "z",
    ] {
        assert_eq!(lmeta(&out.join(name)).mode() & 0o7777, 0, "{name}");
    }
    assert_eq!(read(&out.join("locked/inner/g")), b"deeper");
    assert_eq!(read(&out.join("locked/later")), b"added");

    let mut broken = tar(&[E::file("big", &[7u8; 4096])]);
    broken.truncate(512 + 1000);
    let err = fx
        .run_with("broken", &[l0, broken], &FlattenLimits::default())
        .unwrap_err();
    assert!(matches!(err, FlattenError::Entry { layer: 1, .. }), "{err}");
    assert_eq!(fx.leftovers(), ["locked"]);
}

#[test]
fn setuid_setgid_sticky_and_owners_preserved() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::file("suid", b"s").mode(0o4755).owner(1000, 1000),
        E::file("sgid", b"g").mode(0o2711).owner(0, 0),
        E::dir("tmp").mode(0o1777),
        E::dir("shared").mode(0o2775).owner(1000, 1000),
        E::file("shared/f", b"f").owner(1000, 0),
        E::symlink("link", "suid").owner(1000, 1000),
        E::file("pax-owner", b"p")
            .owner(1, 1)
            .pax(b"uid", b"70000")
            .pax(b"gid", b"70001"),
    ]);
    let (out, _) = fx.run("bits", &[l0]);
    let check = |name: &str, mode: u32, uid: u32, gid: u32| {
        let meta = lmeta(&out.join(name));
        assert_eq!(meta.mode() & 0o7777, mode, "{name} mode");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{name} owner");
    };
    check("suid", 0o4755, 1000, 1000);
    check("sgid", 0o2711, 0, 0);
    check("tmp", 0o1777, 0, 0);
    check("shared", 0o2775, 1000, 1000);
    check("shared/f", 0o644, 1000, 0);
    check("pax-owner", 0o644, 70000, 70001);
    let link = lmeta(&out.join("link"));
    assert_eq!((link.uid(), link.gid()), (1000, 1000));
}

/// `security.capability` as vfs_cap_data revision 2 with the effective flag and
/// CAP_DAC_OVERRIDE, CAP_FOWNER and CAP_NET_BIND_SERVICE permitted; its first byte is
/// `\n`, which a line-splitting PAX parser loses.
pub(super) const CAPABILITY: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic: VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x0a, 0x04, 0x00, 0x00, // permitted (low word)
    0x00, 0x00, 0x00, 0x00, // inheritable (low word)
    0x00, 0x00, 0x00, 0x00, // permitted (high word)
    0x00, 0x00, 0x00, 0x00, // inheritable (high word)
];

#[test]
fn xattrs_and_security_capability_preserved() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::file("bin", b"\x7fELF")
            .mode(0o755)
            .pax(b"SCHILY.xattr.security.capability", &CAPABILITY)
            .pax(b"SCHILY.xattr.user.foo", b"bar\nbaz"),
        E::dir("d").pax(b"SCHILY.xattr.user.dir", b"1"),
        E::symlink("s", "bin").pax(b"SCHILY.xattr.trusted.note", b"on a link"),
        E::file("o", b"").pax(b"SCHILY.xattr.user.overlay.opaque", b"y"),
    ]);
    let (out, report) = fx.run("xattrs", &[l0]);
    assert_eq!(
        xattr(&out.join("bin"), "security.capability").unwrap(),
        CAPABILITY
    );
    assert_eq!(xattr(&out.join("bin"), "user.foo").unwrap(), b"bar\nbaz");
    assert_eq!(xattr(&out.join("d"), "user.dir").unwrap(), b"1");
    assert_eq!(xattr(&out.join("s"), "trusted.note").unwrap(), b"on a link");
    assert_eq!(xattr(&out.join("o"), "user.overlay.opaque"), None);
    assert_eq!(report.xattrs_dropped, 1);

    // A directory re-declared by a later layer takes its new set of xattrs.
    let l1 = tar(&[E::dir("d").pax(b"SCHILY.xattr.user.new", b"2")]);
    let l0 = tar(&[E::dir("d").pax(b"SCHILY.xattr.user.dir", b"1")]);
    let (out, _) = fx.run("redeclared", &[l0, l1]);
    assert_eq!(xattr(&out.join("d"), "user.dir"), None);
    assert_eq!(xattr(&out.join("d"), "user.new").unwrap(), b"2");
}

#[test]
fn devices_fifo_and_mtimes_after_children() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::dir("dev").mtime(1_500_000_000),
        E::node("dev/null", EntryType::Char, 1, 3).mode(0o666),
        E::node("dev/loop0", EntryType::Block, 7, 0).mode(0o660),
        E::node("pipe", EntryType::Fifo, 0, 0)
            .mode(0o620)
            .mtime(1_400_000_000),
        E::file("precise", b"p").pax(b"mtime", b"1600000000.25"),
        E::file("dev/later-in-layer", b"l"),
    ]);
    let l1 = tar(&[E::file("dev/later-layer", b"l")]);
    let (out, _) = fx.run("devs", &[l0, l1]);
    let null = lmeta(&out.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (
            rustix::fs::major(null.rdev()),
            rustix::fs::minor(null.rdev())
        ),
        (1, 3)
    );
    assert_eq!(null.mode() & 0o7777, 0o666);
    let disk = lmeta(&out.join("dev/loop0"));
    assert!(disk.file_type().is_block_device());
    assert_eq!(rustix::fs::major(disk.rdev()), 7);
    let pipe = lmeta(&out.join("pipe"));
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o620);
    assert_eq!(pipe.mtime(), 1_400_000_000);
    let precise = lmeta(&out.join("precise"));
    assert_eq!(
        (precise.mtime(), precise.mtime_nsec()),
        (1_600_000_000, 250_000_000)
    );
    assert_eq!(lmeta(&out.join("dev")).mtime(), 1_500_000_000);
    assert_eq!(lmeta(&out.join("dev/later-layer")).mtime(), 1_700_000_000);
}

#[test]
fn root_entry_sets_the_tree_root() {
    let fx = Fixture::new();
    let l0 = tar(&[
        E::dir("./")
            .mode(0o750)
            .owner(1000, 1000)
            .mtime(1_234_567_890),
        E::file("f", b"f"),
    ]);
    let (out, _) = fx.run("root", &[l0]);
    let root = lmeta(&out);
    assert_eq!(root.mode() & 0o7777, 0o750);
    assert_eq!((root.uid(), root.gid()), (1000, 1000));
    assert_eq!(root.mtime(), 1_234_567_890);
    let (plain, _) = fx.run("plain", &[tar(&[E::file("f", b"f")])]);
    assert_eq!(lmeta(&plain).mode() & 0o7777, 0o755);
}

#[test]
fn sharing_between_versions_reuses_unchanged_objects() {
    let fx = Fixture::new();
    let big = vec![42u8; 300 << 10];
    let v1 = tar(&[
        E::dir("etc"),
        E::file("etc/a", b"alpha"),
        E::file("etc/b", b"beta"),
        E::file("big", &big).mode(0o600),
        E::symlink("link", "etc/a"),
    ]);
    let v2 = tar(&[
        E::dir("etc"),
        E::file("etc/a", b"alpha"),
        E::file("etc/b", b"beta, changed"),
        E::file("big", &big).mode(0o600),
        E::symlink("link", "etc/a"),
    ]);
    let (one, first) = fx.run("v1", &[v1]);
    let (two, second) = fx.run("v2", &[v2]);
    assert_eq!((first.objects_new, first.objects_reused), (3, 0));
    assert_eq!((second.objects_new, second.objects_reused), (1, 2));
    assert_eq!(second.object_bytes_new, 13);
    for same in ["etc/a", "big"] {
        assert_eq!(
            lmeta(&one.join(same)).ino(),
            lmeta(&two.join(same)).ino(),
            "{same}"
        );
        assert_eq!(
            lmeta(&one.join(same)).nlink(),
            3,
            "{same}: object and two trees"
        );
    }
    assert_ne!(
        lmeta(&one.join("etc/b")).ino(),
        lmeta(&two.join("etc/b")).ino()
    );

    // Objects are private, keep the file's own mode, and no temporary file is left.
    let objects = fx.objects.path();
    assert_eq!(lmeta(objects).mode() & 0o7777, 0o700);
    let mut count = 0;
    for fanout in fs::read_dir(objects).unwrap() {
        let fanout = fanout.unwrap().path();
        assert!(
            lmeta(&fanout).is_dir(),
            "{} is not a fan-out dir",
            fanout.display()
        );
        assert_eq!(lmeta(&fanout).mode() & 0o7777, 0o700);
        for object in fs::read_dir(&fanout).unwrap() {
            let meta = lmeta(&object.unwrap().path());
            assert!(meta.is_file());
            assert!(meta.mode() & 0o7777 == 0o644 || meta.mode() & 0o7777 == 0o600);
            count += 1;
        }
    }
    assert_eq!(count, 4);

    // The same bytes with another mtime are another inode.
    let v3 = tar(&[E::file("etc/a", b"alpha").mtime(1)]);
    let (three, third) = fx.run("v3", &[v3]);
    assert_eq!((third.objects_new, third.objects_reused), (1, 0));
    assert_ne!(
        lmeta(&three.join("etc/a")).ino(),
        lmeta(&one.join("etc/a")).ino()
    );
}

#[test]
fn gnu_long_names_and_pax_paths() {
    let fx = Fixture::new();
    let long = format!("{}/file", "d".repeat(150));
    let mut layer = Vec::new();
    // A GNU long name entry, then the entry it names.
    let mut gnu = E::file("././@LongLink", b"");
    gnu.data = format!("{long}\0").into_bytes();
    block(
        &mut layer,
        EntryType::GNULongName,
        b"././@LongLink",
        &gnu,
        &gnu.data,
    );
    block(
        &mut layer,
        EntryType::Regular,
        b"truncated-name",
        &E::file("x", b""),
        b"",
    );
    layer.extend(tar(&[E::file(&format!("{long}2"), b"via pax")]));
    let (out, _) = fx.run("long", &[layer]);
    assert!(lmeta(&out.join(&long)).is_file());
    assert_eq!(read(&out.join(format!("{long}2"))), b"via pax");
}

#[test]
fn names_are_normalised_lexically() {
    let parse = |raw: &[u8]| TreePath::parse(raw, 8).map(|p| p.display());
    assert_eq!(parse(b"./etc/passwd").unwrap(), "etc/passwd");
    assert_eq!(parse(b"/usr//bin/").unwrap(), "usr/bin");
    assert_eq!(parse(b"a/../b").unwrap(), "b");
    assert_eq!(parse(b"./").unwrap(), "/");
    assert!(matches!(parse(b"../x"), Err(Problem::EscapesRoot)));
    assert!(matches!(parse(b"a/../../x"), Err(Problem::EscapesRoot)));
    assert!(matches!(parse(b"a\0b"), Err(Problem::NulByte)));
    assert!(matches!(
        parse(b"1/2/3/4/5/6/7/8/9"),
        Err(Problem::TooDeep { limit: 8 })
    ));
}

#[test]
fn pax_records_parse_by_length_and_times_by_fraction() {
    let records = pax_records(&[
        (
            b"SCHILY.xattr.user.x".to_vec(),
            b"a\nb=c\n9 path=x\n".to_vec(),
        ),
        (b"path".to_vec(), b"real".to_vec()),
    ]);
    let pax = parse_pax(&records).unwrap();
    assert_eq!(pax.path.as_deref(), Some(&b"real"[..]));
    assert_eq!(
        pax.xattrs,
        [(b"user.x".to_vec(), b"a\nb=c\n9 path=x\n".to_vec())]
    );
    assert!(parse_pax(b"99 path=x\n").is_err());
    assert!(parse_pax(b"5 a=b").is_err());
    assert_eq!(
        parse_pax_time(b"12.5"),
        Some(Mtime {
            secs: 12,
            nanos: 500_000_000
        })
    );
    assert_eq!(
        parse_pax_time(b"-1.25"),
        Some(Mtime {
            secs: -2,
            nanos: 750_000_000
        })
    );
    assert_eq!(parse_pax_time(b"7"), Some(Mtime { secs: 7, nanos: 0 }));
    assert_eq!(parse_pax_time(b"x"), None);
}
