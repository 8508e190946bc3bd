//! A fixed small base layer and a few targets made from it, shared by the pack tests
//! and the `pack` fuzz target (which includes this file by path): the fuzz target
//! applies untrusted packs against [`base`], and its seeds are packs of [`targets`].
//! It uses only `shoal_diff`, `shoal_protocol`, `blake3` and `tar`.

use std::collections::HashMap;

use shoal_diff::pack::Base;
use shoal_protocol::Digest;
use shoal_protocol::recipe::{self, ChunkId, Recipe};

/// A layer: its digest (of the tar, standing in for the blob's), recipe, wire form of
/// the recipe, and chunks.
pub struct Fixture {
    pub name: &'static str,
    pub tar: Vec<u8>,
    pub layer: Digest,
    pub recipe: Recipe,
    pub encoded: Vec<u8>,
    pub chunks: HashMap<ChunkId, Vec<u8>>,
}

impl Fixture {
    /// The layer as a base of a pack.
    pub fn base(&self) -> Base<'_> {
        Base {
            layer: self.layer,
            recipe: &self.recipe,
            encoded: &self.encoded,
        }
    }
}

/// `len` pseudo-random bytes, the same for the same seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .update(b"pack fixture")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A config file's text.
fn text(lines: usize, version: u32) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("key{i} = value {} of version {version}\n", i * 7))
        .collect::<String>()
        .into_bytes()
}

/// `bytes` with a byte changed every `every` bytes from `from` on.
fn edited(bytes: &[u8], from: usize, every: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for i in (from..out.len()).step_by(every) {
        out[i] ^= 0x5a;
    }
    out
}

/// A tar of directories, files and a symlink, with the `tar` crate's GNU headers.
fn tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_mtime(1_700_000_000);
    dir.set_size(0);
    for path in ["bin/", "etc/", "lib/"] {
        b.append_data(&mut dir.clone(), path, &[][..])
            .expect("appends");
    }
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, &content[..]).expect("appends");
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mtime(1_700_000_000);
    b.append_link(&mut link, "lib/libx.so", "libx.so.1.0")
        .expect("appends");
    b.into_inner().expect("finishes")
}

fn fixture(name: &'static str, tar: Vec<u8>) -> Fixture {
    let mut chunks = HashMap::new();
    let recipe = shoal_diff::build(&tar, &mut |c, bytes| {
        chunks.insert(c.id, bytes.to_vec());
    })
    .expect("a fixture tar has a recipe");
    Fixture {
        name,
        layer: Digest::of(&tar),
        encoded: recipe::encode(&recipe),
        tar,
        recipe,
        chunks,
    }
}

/// The base's files: a config, a 40 KiB binary, a 20 KiB library, an empty file.
fn base_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("etc/tool.conf", text(12, 1)),
        ("bin/tool", noise(40 << 10, 1)),
        ("lib/libx.so.1.0", noise(20 << 10, 2)),
        ("etc/empty", Vec::new()),
    ]
}

/// The fixed base layer.
pub fn base() -> Fixture {
    fixture("base", tar(&base_files()))
}

/// Targets against [`base`]: the same layer, a rebuilt binary (delta), a new version
/// of the library under another name (a delta by similar name), a file added and one
/// removed (literal), and an unrelated layer.
pub fn targets() -> Vec<Fixture> {
    let files = base_files();
    let mut rebuilt = files.clone();
    rebuilt[1].1 = edited(&files[1].1, 1000, 4096);
    rebuilt[0].1 = text(12, 2);
    let mut renamed = files.clone();
    renamed[2] = ("lib/libx.so.1.1", edited(&files[2].1, 10, 3000));
    let mut added = files.clone();
    added.remove(3);
    added.push(("bin/new", noise(30 << 10, 3)));
    added.push(("etc/new.conf", text(40, 3)));
    let other = vec![("etc/other", text(5, 9)), ("bin/other", noise(5000, 9))];
    vec![
        fixture("same", tar(&files)),
        fixture("rebuilt", tar(&rebuilt)),
        fixture("renamed", tar(&renamed)),
        fixture("added", tar(&added)),
        fixture("other", tar(&other)),
    ]
}
