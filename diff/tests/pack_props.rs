//! Packs rebuild their target: for layers that are identical, that add, change, delete
//! or rename files, with empty files, links and directories, large files changed in
//! the middle, no bases or several, and over random layers. Every case goes through
//! `common::layers::round_trip`: the sink gets exactly the chunks the bases lack, once
//! each, and with the bases' chunks they rebuild the target's tar (diff_id checked).

mod common;
#[path = "../benches/pairs/mod.rs"]
mod pairs;

use common::layers::{Item, Layer, file, round_trip};
use common::random;
use proptest::prelude::*;
use shoal_diff::pack::{self, Options};

/// A small root: directories, config text, binaries, links and an empty file.
fn root(version: u32) -> Vec<Item> {
    vec![
        Item::Dir("etc/".into()),
        file(
            "etc/os-release",
            format!("VERSION={version}\n").into_bytes(),
        ),
        file("etc/hosts", b"127.0.0.1 localhost\n".to_vec()),
        file("etc/empty", Vec::new()),
        Item::Dir("usr/bin/".into()),
        file("usr/bin/sh", random(90_000, 1)),
        file("usr/bin/tool", random(150_000, 2)),
        Item::Symlink("usr/bin/sh2".into(), "sh".into()),
        Item::Hardlink("usr/bin/tool2".into(), "usr/bin/tool".into()),
        Item::Dir("usr/share/doc/".into()),
        file("usr/share/doc/README", pairs::text(40_000, 1)),
    ]
}

fn replace(items: &mut [Item], path: &str, content: Vec<u8>) {
    for item in items {
        if let Item::File(p, c) = item
            && p == path
        {
            *c = content;
            return;
        }
    }
    panic!("no file {path}");
}

#[test]
fn an_identical_layer_costs_only_its_recipe() {
    let v1 = Layer::new(&root(1));
    let same = Layer::new(&root(1));
    let (pack, s) = round_trip(&same, &[&v1], &Options::default());
    assert_eq!(
        (s.delta_files, s.literal_chunks, s.literal_bytes),
        (0, 0, 0)
    );
    assert_eq!(s.reused_bytes, v1.recipe.content_bytes());
    // The recipe compresses to a few bytes against its own copy.
    assert!(s.recipe_bytes < 100, "recipe of {} bytes", s.recipe_bytes);
    assert!(pack.len() < 300, "pack of {} bytes", pack.len());
}

#[test]
fn added_files_go_in_the_literal_stream() {
    let v1 = Layer::new(&root(1));
    let mut items = root(1);
    items.push(file("usr/bin/new", random(70_000, 9)));
    items.push(file("etc/new.conf", b"a = 1\n".repeat(100)));
    let v2 = Layer::new(&items);
    let (_, s) = round_trip(&v2, &[&v1], &Options::default());
    assert_eq!(s.delta_files, 0);
    assert_eq!(s.literal_raw, 70_000 + 600);
    assert_eq!(s.reused_bytes, v1.recipe.content_bytes());
}

#[test]
fn changed_files_go_as_deltas() {
    let v1 = Layer::new(&root(1));
    let mut items = root(2);
    replace(
        &mut items,
        "usr/bin/tool",
        pairs::rebuilt(&random(150_000, 2), 5),
    );
    replace(
        &mut items,
        "usr/share/doc/README",
        pairs::edited(&pairs::text(40_000, 1), 4, 100, 5),
    );
    let v2 = Layer::new(&items);
    let (_, s) = round_trip(&v2, &[&v1], &Options::default());
    // The rebuilt binary and the edited README go as deltas; os-release is too small
    // for a delta (its 74-byte header) to beat its bytes.
    assert_eq!(s.delta_files, 2, "{s:?}");
    assert!(s.delta_bytes * 2 < s.delta_raw, "{s:?}");
    assert_eq!(s.literal_chunks, 1, "{s:?}");
}

#[test]
fn deleted_files_cost_nothing_but_the_recipe() {
    let v1 = Layer::new(&root(1));
    let mut items = root(1);
    items.retain(|i| !matches!(i, Item::File(p, _) if p == "usr/bin/sh" || p == "etc/hosts"));
    let v2 = Layer::new(&items);
    let (_, s) = round_trip(&v2, &[&v1], &Options::default());
    assert_eq!((s.delta_files, s.literal_chunks), (0, 0));
}

#[test]
fn a_large_file_changed_in_the_middle_sends_a_small_delta() {
    let big = random(3 << 20, 7);
    let mut changed = big.clone();
    changed[(3 << 20) / 2..(3 << 20) / 2 + 100].fill(0);
    let v1 = Layer::new(&[file("data/big.bin", big)]);
    let v2 = Layer::new(&[file("data/big.bin", changed)]);
    let (_, s) = round_trip(&v2, &[&v1], &Options::default());
    assert_eq!(s.delta_files, 1);
    assert_eq!(s.delta_raw, 3 << 20);
    assert!(s.delta_bytes < 2_000, "{s:?}");
    // All but the one or two chunks around the change were held.
    assert!(s.reused_bytes > 2 << 20, "{s:?}");
}

#[test]
fn without_bases_the_pack_is_the_recipe_and_the_literal_stream() {
    let v1 = Layer::new(&root(1));
    let (pack, s) = round_trip(&v1, &[], &Options::default());
    assert_eq!((s.delta_files, s.reused_chunks, s.reused_bytes), (0, 0, 0));
    assert_eq!(s.literal_raw, v1.recipe.content_bytes());
    assert!(pack::read_header(&pack).unwrap().bases.is_empty());
}

#[test]
fn several_bases_each_contribute() {
    let etc = Layer::new(&root(1)[..4]);
    let usr = Layer::new(&root(1)[4..]);
    let mut items = root(1);
    replace(
        &mut items,
        "usr/bin/sh",
        pairs::rebuilt(&random(90_000, 1), 3),
    );
    let v2 = Layer::new(&items);
    let (_, s) = round_trip(&v2, &[&etc, &usr], &Options::default());
    assert_eq!(s.delta_files, 1, "{s:?}");
    assert_eq!(s.literal_chunks, 0, "{s:?}");
    // Given in the other order, the pack names them in that order.
    round_trip(&v2, &[&usr, &etc], &Options::default());
}

#[test]
fn the_first_base_with_the_path_is_the_delta_base() {
    let old = random(100_000, 4);
    let v1 = Layer::new(&[file("bin/x", old.clone())]);
    let v2 = Layer::new(&[file("bin/x", pairs::rebuilt(&old, 1))]);
    let v3 = Layer::new(&[file("bin/x", pairs::rebuilt(&old, 2))]);
    let (pack, s) = round_trip(&v3, &[&v2, &v1], &Options::default());
    assert_eq!(s.delta_files, 1);
    // The delta's header names the first base's file.
    let base_id = v2.recipe.entries[0].content.unwrap();
    assert!(
        pack.windows(32).any(|w| w == base_id.0),
        "the delta is against the first base's bin/x"
    );
}

#[test]
fn a_renamed_version_is_delta_d_against_its_similar_name() {
    let lib = random(120_000, 6);
    let v1 = Layer::new(&[file("usr/lib/libfoo.so.1.2.3", lib.clone())]);
    let v2 = Layer::new(&[file("usr/lib/libfoo.so.1.2.4", pairs::rebuilt(&lib, 6))]);
    let (_, similar) = round_trip(&v2, &[&v1], &Options::default());
    assert_eq!(similar.delta_files, 1);
    let off = Options {
        similar_names: false,
        ..Options::default()
    };
    let (_, plain) = round_trip(&v2, &[&v1], &off);
    assert_eq!(plain.delta_files, 0);
    assert!(
        similar.pack_bytes * 2 < plain.pack_bytes,
        "{similar:?} {plain:?}"
    );
}

#[test]
fn duplicate_content_is_sent_once() {
    let blob = random(80_000, 8);
    let v1 = Layer::new(&[file("a", random(1000, 1))]);
    let v2 = Layer::new(&[
        file("a", random(1000, 1)),
        file("b", blob.clone()),
        file("c", blob.clone()),
        file("d", blob),
    ]);
    let (_, s) = round_trip(&v2, &[&v1], &Options::default());
    assert_eq!(s.literal_raw, 80_000);
}

#[test]
fn a_chunk_shared_by_a_delta_d_file_and_a_new_file_is_sent_once() {
    let old = random(300_000, 10);
    let new = pairs::rebuilt(&old, 10);
    let v1 = Layer::new(&[file("bin/x", old)]);
    // "copy" holds the rebuilt file's content: its chunks come with the delta.
    let v2 = Layer::new(&[file("bin/x", new.clone()), file("bin/copy", new)]);
    let (_, s) = round_trip(&v2, &[&v1], &Options::default());
    assert_eq!((s.delta_files, s.literal_chunks), (1, 0), "{s:?}");
}

#[test]
fn a_copy_of_a_delta_d_file_is_not_delta_d_again() {
    // Regression: two paths with the same binary (git's /usr/bin/git and
    // /usr/lib/git-core/git) each got the same delta.
    let old = random(200_000, 11);
    let new = pairs::rebuilt(&old, 11);
    let v1 = Layer::new(&[file("bin/x", old.clone()), file("lib/x", old)]);
    let v2 = Layer::new(&[file("bin/x", new.clone()), file("lib/x", new)]);
    let (_, s) = round_trip(&v2, &[&v1], &Options::default());
    assert_eq!((s.delta_files, s.literal_chunks), (1, 0), "{s:?}");
}

#[test]
fn sizes_around_chunk_boundaries_round_trip() {
    for &size in common::SIZES {
        let old = random(size, size as u64);
        let mut new = old.clone();
        if let Some(b) = new.get_mut(size / 2) {
            *b ^= 1;
        }
        let v1 = Layer::new(&[file("f", old)]);
        let v2 = Layer::new(&[file("f", new), file("g", random(size, 1 + size as u64))]);
        round_trip(&v2, &[&v1], &Options::default());
    }
}

/// What a random layer is made from: files drawn from a small pool of contents, each
/// kept, edited, replaced or dropped in the next version.
#[derive(Clone, Debug)]
enum Change {
    Keep,
    Edit(u64),
    Replace(u64),
    Drop,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => Just(Change::Keep),
        2 => any::<u64>().prop_map(Change::Edit),
        1 => any::<u64>().prop_map(Change::Replace),
        1 => Just(Change::Drop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_versions_round_trip(
        files in proptest::collection::vec((0usize..120_000, any::<u64>(), change()), 0..8),
        added in proptest::collection::vec((0usize..50_000, any::<u64>()), 0..3),
        with_base in any::<bool>(),
    ) {
        let mut old = vec![Item::Dir("d/".into())];
        let mut new = old.clone();
        for (i, (size, seed, change)) in files.iter().enumerate() {
            let path = format!("d/f{i}");
            let content = random(*size, *seed);
            match change {
                Change::Keep => new.push(file(&path, content.clone())),
                Change::Edit(s) => new.push(file(&path, pairs::rebuilt(&content, *s))),
                Change::Replace(s) => new.push(file(&path, random(*size, *s))),
                Change::Drop => {}
            }
            old.push(file(&path, content));
        }
        for (i, (size, seed)) in added.iter().enumerate() {
            new.push(file(&format!("d/new{i}"), random(*size, *seed)));
        }
        new.push(Item::Symlink("d/link".into(), "f0".into()));
        let v1 = Layer::new(&old);
        let v2 = Layer::new(&new);
        let bases: Vec<&Layer> = if with_base { vec![&v1] } else { vec![] };
        round_trip(&v2, &bases, &Options::default());
    }
}
