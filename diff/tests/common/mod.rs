//! Helpers shared by the integration tests: random content, tars made by hand or with
//! the `tar` crate, and the round-trip check every test stands on.

#![allow(dead_code)] // each test binary uses its own part of these helpers

pub mod layers;
pub mod pack_fixture;

use std::collections::HashMap;

use shoal_diff::{RecipeBuilder, TarError, chunk_content, recreate};
use shoal_protocol::Digest;
use shoal_protocol::recipe::{self, ChunkId, ChunkRef, EntryKind, Recipe};

/// `len` pseudo-random bytes, the same for the same seed.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A recipe with the chunks its builder emitted, in order.
pub struct Built {
    pub recipe: Recipe,
    pub emitted: Vec<ChunkRef>,
    pub store: HashMap<ChunkId, Vec<u8>>,
}

/// Builds the recipe of `tar` pushed in slices whose sizes `next` gives (cycled).
pub fn build_sliced(tar: &[u8], sizes: &[usize]) -> Result<Built, TarError> {
    let mut builder = RecipeBuilder::new();
    let mut emitted = Vec::new();
    let mut store = HashMap::new();
    let mut sink = |c: ChunkRef, bytes: &[u8]| {
        assert_eq!(c.len as usize, bytes.len());
        assert!(c.id.matches(bytes));
        emitted.push(c);
        store.insert(c.id, bytes.to_vec());
    };
    let mut rest = tar;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        builder.push(&rest[..n], &mut sink)?;
        rest = &rest[n..];
        i += 1;
    }
    let recipe = builder.finish()?;
    Ok(Built {
        recipe,
        emitted,
        store,
    })
}

/// Builds the recipe of `tar` pushed whole.
pub fn build(tar: &[u8]) -> Result<Built, TarError> {
    build_sliced(tar, &[usize::MAX])
}

/// Re-creates the tar from a recipe and a chunk store.
pub fn recreated(recipe: &Recipe, store: &HashMap<ChunkId, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = recreate(recipe, |id| store.get(id), &mut out).expect("re-creates");
    assert_eq!(n, out.len() as u64);
    out
}

/// The checks every good tar must pass: the recipe validates and survives the wire,
/// its diff_id and size are the tar's, re-creating it gives the tar byte for byte, and
/// each file's chunks are what FastCDC cuts from its whole content. Returns the built
/// recipe.
pub fn assert_round_trip(tar: &[u8]) -> Built {
    let built = build(tar).unwrap_or_else(|e| panic!("recipe of a good tar: {e}"));
    let r = &built.recipe;
    r.validate().expect("validates");
    assert_eq!(r.diff_id, Digest::of(tar));
    assert_eq!(r.tar_size, tar.len() as u64);
    assert_eq!(
        built.emitted,
        r.entries
            .iter()
            .flat_map(|e| e.chunks.iter().copied())
            .collect::<Vec<_>>()
    );
    assert_eq!(recipe::decode(&recipe::encode(r)).expect("decodes"), *r);
    let again = recreated(r, &built.store);
    assert!(again == tar, "re-created tar differs from the original");
    // Content as the entries say it lies in the tar: FastCDC over each whole file.
    let mut at = 0usize;
    for e in &r.entries {
        at += e.header.len();
        let content = &tar[at..at + e.size as usize];
        assert_eq!(
            chunk_content(content),
            (e.content, e.chunks.clone()),
            "{}",
            e.path
        );
        at += e.size as usize + recipe::Entry::padding_len(e.size) as usize;
    }
    assert_eq!(&tar[at..], &r.trailer[..]);
    built
}

/// Checks the recipe's entries against what the `tar` crate reads from the same tar:
/// the same entries (PAX global headers included), paths and file contents. Only for
/// tars where the two readers agree (no GNU sparse files, no header-only entry with a
/// non-zero size).
pub fn assert_agrees_with_tar_crate(tar: &[u8], recipe: &Recipe) {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar);
    let mut seen = 0;
    for (i, entry) in archive.entries().expect("tar crate reads").enumerate() {
        let mut entry = entry.expect("tar crate reads the entry");
        let ours = &recipe.entries[i];
        assert_eq!(
            String::from_utf8_lossy(&entry.path_bytes()),
            ours.path,
            "entry {i}"
        );
        if ours.kind == EntryKind::File {
            let mut content = Vec::new();
            entry.read_to_end(&mut content).expect("reads content");
            assert_eq!(content.len() as u64, ours.size, "{}", ours.path);
            assert_eq!(
                ours.content,
                (!content.is_empty()).then(|| ChunkId::of(&content))
            );
        }
        seen += 1;
    }
    assert_eq!(seen, recipe.entries.len());
}

/// Recomputes a header block's checksum after it was edited by hand.
pub fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block[..512].iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A header block made with the `tar` crate.
pub fn header(kind: tar::EntryType, path: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path).expect("short path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    *h.as_bytes()
}

/// `len` bytes of content padded to a block with zeros.
pub fn padded(content: &[u8]) -> Vec<u8> {
    let mut out = content.to_vec();
    out.resize(content.len().div_ceil(512) * 512, 0);
    out
}

/// A PAX record `"<len> <key>=<value>\n"`.
pub fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut n = body.len() + 1;
    while body.len() + n.to_string().len() != n {
        n = body.len() + n.to_string().len();
    }
    format!("{n}{body}")
}

/// A tar of `files` (path, content) written with the `tar` crate's GNU headers.
pub fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, &content[..]).expect("appends");
    }
    b.into_inner().expect("finishes")
}

/// The sizes around block and chunk boundaries that every test table uses.
pub const SIZES: &[usize] = &[
    0,
    1,
    511,
    512,
    513,
    16 * 1024 - 1,
    16 * 1024,
    16 * 1024 + 1,
    64 * 1024,
    256 * 1024 - 1,
    256 * 1024,
    256 * 1024 + 1,
    3 * 1024 * 1024 + 7,
];
