//! Round trips: `recreate(build(tar)) == tar` byte for byte, for tars written by the
//! `tar` crate and by GNU tar in each of its formats, and whatever the slices the tar
//! is pushed in.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use shoal_protocol::recipe::{CHUNK_MAX, CHUNK_MIN, EntryKind, Padding};

#[test]
fn files_of_sizes_around_block_and_chunk_boundaries_round_trip() {
    let files: Vec<(String, Vec<u8>)> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("sizes/file-{n}"), random(n, i as u64)))
        .collect();
    let tar = tar_of(&files);
    let built = assert_round_trip(&tar);
    assert_agrees_with_tar_crate(&tar, &built.recipe);
    for (e, (_, content)) in built.recipe.entries.iter().zip(&files) {
        assert_eq!(e.size, content.len() as u64);
        assert_eq!(e.padding, Padding::Zeros);
        let lens: Vec<u32> = e.chunks.iter().map(|c| c.len).collect();
        // Every chunk but the last is within FastCDC's bounds.
        if let Some((_, init)) = lens.split_last() {
            assert!(init.iter().all(|&l| (CHUNK_MIN..=CHUNK_MAX).contains(&l)));
        }
    }
    // Each file alone gives the same chunks as inside the layer: chunking is per file.
    for (e, (path, content)) in built.recipe.entries.iter().zip(&files) {
        let alone = build(&tar_of(&[(path.clone(), content.clone())])).unwrap();
        assert_eq!(alone.recipe.entries[0].chunks, e.chunks);
    }
}

#[test]
fn slices_of_every_size_give_the_same_recipe() {
    let mut files: Vec<(String, Vec<u8>)> = [0usize, 700, 16_384, 300_000, 1_500_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("f{i}"), random(n, 100 + i as u64)))
        .collect();
    files.push(("zeros".into(), vec![0; 600_000]));
    let tar = tar_of(&files);
    let whole = assert_round_trip(&tar);
    let mut sizes: Vec<usize> = (0..=20)
        .flat_map(|k| [(1usize << k) - 1, 1 << k, (1 << k) + 1])
        .filter(|&n| (1..=1 << 20).contains(&n))
        .collect();
    sizes.extend([3, 5, 7, 13, 100, 4093, 65_521, 262_139]);
    sizes.sort_unstable();
    sizes.dedup();
    for &size in &sizes {
        let sliced = build_sliced(&tar, &[size]).unwrap();
        assert_eq!(sliced.recipe, whole.recipe, "slices of {size}");
        assert_eq!(sliced.emitted, whole.emitted, "slices of {size}");
    }
    // Slices of varying sizes, from one byte to a megabyte.
    let mixed = build_sliced(&tar, &[1, 1 << 20, 511, 2, 262_145, 9, 70_000]).unwrap();
    assert_eq!(mixed.recipe, whole.recipe);
}

#[test]
fn a_small_tar_of_every_kind_of_header_gives_one_recipe_for_every_slice_size() {
    let global = pax_record("comment", "commit 0123abcd");
    let records = pax_record("path", &"p".repeat(300)) + &pax_record("mtime", "1.5");
    let long = "l".repeat(200) + "\0";
    let content = random(3000, 7);
    let mut tar = [
        &header(
            tar::EntryType::XGlobalHeader,
            "pax_global_header",
            global.len() as u64,
        )[..],
        &padded(global.as_bytes()),
        &header(
            tar::EntryType::XHeader,
            "PaxHeaders/p",
            records.len() as u64,
        ),
        &padded(records.as_bytes()),
        &header(tar::EntryType::Regular, "p", 1000),
        &padded(&content[..1000]),
        &header(
            tar::EntryType::GNULongName,
            "././@LongLink",
            long.len() as u64,
        ),
        &padded(long.as_bytes()),
        &header(tar::EntryType::Regular, "l", 2000),
        &padded(&content[1000..]),
        &header(tar::EntryType::Directory, "d/", 0),
    ]
    .concat();
    tar.extend([0; 1024]);
    let whole = assert_round_trip(&tar);
    assert_eq!(whole.recipe.entries.len(), 4);
    for size in 1..=tar.len() {
        let sliced = build_sliced(&tar, &[size]).unwrap();
        assert_eq!(sliced.recipe, whole.recipe, "slices of {size}");
    }
}

#[test]
fn a_layer_of_more_than_ten_thousand_files_round_trips() {
    let files: Vec<(String, Vec<u8>)> = (0..10_050)
        .map(|i| {
            let len = (i * 37) % 3000;
            (
                format!("usr/share/doc/pkg-{}/file-{i}", i % 97),
                random(len, i as u64),
            )
        })
        .collect();
    let tar = tar_of(&files);
    let built = assert_round_trip(&tar);
    assert_eq!(built.recipe.entries.len(), 10_050);
    assert_agrees_with_tar_crate(&tar, &built.recipe);
}

#[test]
fn non_zero_padding_is_kept_verbatim() {
    let tar = tar_of(&[("a".into(), random(1000, 1)), ("b".into(), random(10, 2))]);
    let mut odd = tar.clone();
    // The padding of "a" runs from 512 + 1000 to the next block.
    odd[1512..1536].fill(0xab);
    let built = assert_round_trip(&odd);
    assert_eq!(
        built.recipe.entries[0].padding,
        Padding::Raw(vec![0xab; 24])
    );
    assert_eq!(built.recipe.entries[1].padding, Padding::Zeros);
}

#[test]
fn a_tar_without_end_blocks_round_trips() {
    let tar = tar_of(&[
        ("a".into(), random(1000, 1)),
        ("b".into(), random(70_000, 2)),
    ]);
    assert!(tar.ends_with(&[0; 1024]));
    let cut = &tar[..tar.len() - 1024];
    let built = assert_round_trip(cut);
    assert!(built.recipe.trailer.is_empty());
    assert_eq!(built.recipe.entries.len(), 2);
    // A writer that stopped after one zero block.
    let one = &tar[..tar.len() - 512];
    assert_eq!(assert_round_trip(one).recipe.trailer, vec![0; 512]);
    // Slack after the end blocks (GNU tar's 10 KiB records) is trailer too.
    let mut slack = tar.clone();
    slack.extend(vec![0; 8192]);
    slack.extend(b"not a tar, kept verbatim");
    assert_eq!(
        assert_round_trip(&slack).recipe.trailer.len(),
        1024 + 8192 + 24
    );
    // An empty tar, and nothing at all.
    assert!(assert_round_trip(&[0; 1024]).recipe.entries.is_empty());
    assert!(assert_round_trip(&[]).recipe.entries.is_empty());
}

/// Runs a command, failing the test with its stderr if it fails.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree with what every tar format can hold: files of the table's sizes, empty
/// files, directories, a hard link, symlinks, devices, a FIFO and a path of 150
/// characters (ustar splits it into prefix and name).
fn common_tree(root: &Path) {
    let dir = root.join("common");
    std::fs::create_dir_all(dir.join("sub/empty-dir")).unwrap();
    for (i, &n) in SIZES.iter().enumerate() {
        std::fs::write(dir.join(format!("sub/size-{n}")), random(n, 500 + i as u64)).unwrap();
    }
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::fs::write(dir.join("zeros"), vec![0u8; 700_000]).unwrap();
    std::fs::hard_link(dir.join("sub/size-513"), dir.join("hardlink")).unwrap();
    std::os::unix::fs::symlink("sub/size-1", dir.join("symlink")).unwrap();
    let deep = dir.join(format!("{}/{}", "p".repeat(90), "n".repeat(59)));
    std::fs::create_dir_all(deep.parent().unwrap()).unwrap();
    std::fs::write(&deep, b"150 characters").unwrap();
    run(Command::new("mknod")
        .arg(dir.join("null"))
        .args(["c", "1", "3"]));
    run(Command::new("mknod")
        .arg(dir.join("loop"))
        .args(["b", "7", "0"]));
    run(Command::new("mkfifo").arg(dir.join("fifo")));
}

/// Names too long for ustar: over 100 and over 255 characters, a long symlink target,
/// a hard link to a long name, and a name that is not ASCII (PAX writes it as a record).
fn long_tree(root: &Path) {
    let dir = root.join("long");
    let over_100 = dir.join("x".repeat(120));
    let over_255 = dir.join(format!(
        "{}/{}/{}",
        "a".repeat(200),
        "b".repeat(200),
        "c".repeat(100)
    ));
    std::fs::create_dir_all(over_255.parent().unwrap()).unwrap();
    std::fs::write(&over_100, random(5000, 1)).unwrap();
    std::fs::write(&over_255, random(300_000, 2)).unwrap();
    std::os::unix::fs::symlink(&over_255, dir.join("long-target")).unwrap();
    std::fs::hard_link(&over_255, dir.join("y".repeat(150))).unwrap();
    std::fs::write(dir.join("café-ünïcødé"), b"pax path").unwrap();
}

/// Runs GNU tar over `what` in `root` and returns the tar.
fn gnu_tar(root: &Path, args: &[&str], what: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .args(args)
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(root)
        .args(what)
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn kinds(recipe: &shoal_protocol::recipe::Recipe) -> Vec<EntryKind> {
    recipe.entries.iter().map(|e| e.kind).collect()
}

#[test]
fn gnu_tar_formats_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    common_tree(tmp.path());
    long_tree(tmp.path());
    for (format, what) in [
        ("--format=gnu", &["common", "long"][..]),
        ("--format=posix", &["common", "long"][..]),
        ("--format=ustar", &["common"][..]),
    ] {
        let tar = gnu_tar(tmp.path(), &[format], what);
        let built = assert_round_trip(&tar);
        assert_agrees_with_tar_crate(&tar, &built.recipe);
        let r = &built.recipe;
        let k = kinds(r);
        for kind in [
            EntryKind::File,
            EntryKind::Dir,
            EntryKind::Symlink,
            EntryKind::Hardlink,
            EntryKind::Char,
            EntryKind::Block,
            EntryKind::Fifo,
        ] {
            assert!(k.contains(&kind), "{format}: no {kind:?} in {k:?}");
        }
        // GNU tar pads to 10 KiB records: the trailer holds the end blocks and slack.
        assert_eq!(tar.len() % 10_240, 0);
        assert!(r.trailer.len() >= 1024, "{format}");
        let deep = format!("common/{}/{}", "p".repeat(90), "n".repeat(59));
        assert!(r.entries.iter().any(|e| e.path == deep), "{format}");
        if format != "--format=ustar" {
            let long = format!(
                "long/{}/{}/{}",
                "a".repeat(200),
                "b".repeat(200),
                "c".repeat(100)
            );
            let e = r
                .entries
                .iter()
                .find(|e| e.path == long)
                .expect("long name");
            assert_eq!(e.size, 300_000);
            assert!(
                e.header.len() > 512,
                "{format}: the long name is in extra blocks"
            );
            assert!(r.entries.iter().any(|e| e.path == "long/café-ünïcødé"));
        }
    }
}

#[test]
fn gnu_tar_sparse_files_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sparse");
    std::fs::create_dir(&dir).unwrap();
    // Twelve data runs separated by holes: more than an old GNU sparse header's four,
    // so GNU tar writes extension blocks.
    let file = std::fs::File::create(dir.join("holes")).unwrap();
    for i in 0..12u64 {
        std::os::unix::fs::FileExt::write_at(&file, &random(3000, i), i * 1_000_000).unwrap();
    }
    file.set_len(13_000_000).unwrap();
    std::fs::write(dir.join("plain"), random(1000, 99)).unwrap();
    for format in ["--format=gnu", "--format=posix"] {
        let tar = gnu_tar(tmp.path(), &[format, "--sparse"], &["sparse"]);
        let built = assert_round_trip(&tar);
        let holes = built
            .recipe
            .entries
            .iter()
            .find(|e| e.path.ends_with("holes"))
            .expect("the sparse file");
        assert_eq!(holes.path, "sparse/holes", "{format}");
        // Only the data runs travel (and, for PAX 1.0, the map before them).
        assert!(holes.size < 1_000_000, "{format}: {} bytes", holes.size);
        if format == "--format=gnu" {
            assert_eq!(holes.kind, EntryKind::Other(b'S'));
            assert_eq!(holes.header.len(), 2 * 512, "one extension block");
        }
    }
}
