//! Layer recipes: what re-creates a layer's uncompressed tar exactly from content
//! chunks stored once across all layers and images.
//!
//! A recipe lists the tar's entries in order. Each entry keeps its header blocks
//! verbatim (PAX and GNU long-name records included), names its content as a run of
//! BLAKE3-addressed chunks cut by FastCDC, and says how the content is padded to the next
//! 512-byte block. What follows the last entry (end-of-archive blocks, slack) is kept
//! verbatim. Concatenating header, chunk bytes and padding per entry, then the trailer,
//! gives the tar byte for byte; its sha256 is the layer's diff_id.
//!
//! Recipes come from peers as well as from the local ingest, so [`decode`] treats its
//! input as hostile: every size is bounded and every total is checked before a recipe
//! is returned.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Tar block size.
pub const BLOCK: u64 = 512;
/// Smallest content chunk FastCDC cuts (except a file's last).
pub const CHUNK_MIN: u32 = 16 * 1024;
/// Average content chunk.
pub const CHUNK_AVG: u32 = 64 * 1024;
/// Largest content chunk.
pub const CHUNK_MAX: u32 = 256 * 1024;

/// Largest encoded recipe accepted.
pub const MAX_ENCODED: usize = 64 << 20;
/// Largest recipe after decompression.
pub const MAX_DECODED: usize = 512 << 20;
/// Most entries in one layer.
pub const MAX_ENTRIES: usize = 4_000_000;
/// Largest header run of one entry (PAX records with many xattrs stay far below).
pub const MAX_HEADER: usize = 1 << 20;
/// Longest path kept for an entry.
pub const MAX_PATH: usize = 64 * 1024;

/// The BLAKE3 hash of a content chunk (or of a whole file's content).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkId(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `bytes` are the chunk this id names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        blake3::hash(bytes) == blake3::Hash::from_bytes(self.0)
    }
}

impl std::fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkId({})", &hex::encode(self.0)[..16])
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A chunk of an entry's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Its id.
    pub id: ChunkId,
    /// Its length in bytes (1..=[`CHUNK_MAX`]).
    pub len: u32,
}

/// What kind of tar entry (from the header's type flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Regular file (`0`, NUL, or contiguous `7`).
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Hard link.
    Hardlink,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// FIFO.
    Fifo,
    /// Any other type flag, kept as it is.
    Other(u8),
}

/// How an entry's content is padded to the next block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Padding {
    /// Zeros, as every ordinary writer pads.
    Zeros,
    /// These exact bytes (a writer that padded with something else).
    Raw(Vec<u8>),
}

/// One tar entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Every header block of the entry, verbatim: PAX and GNU long-name records, then
    /// the header itself. A multiple of 512 bytes.
    pub header: Vec<u8>,
    /// The entry's path as a reader sees it (after PAX `path` and GNU long names).
    pub path: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Bytes of content following the header.
    pub size: u64,
    /// BLAKE3 of the whole content, for entries with content.
    pub content: Option<ChunkId>,
    /// The content as chunks, in order; their lengths add up to `size`.
    pub chunks: Vec<ChunkRef>,
    /// The padding after the content.
    pub padding: Padding,
}

impl Entry {
    /// Padding bytes after `size` bytes of content.
    pub fn padding_len(size: u64) -> u64 {
        (BLOCK - size % BLOCK) % BLOCK
    }
}

/// A layer's recipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// sha256 of the uncompressed tar (the image config's diff_id).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// The entries, in order.
    pub entries: Vec<Entry>,
    /// Bytes after the last entry, verbatim.
    pub trailer: Vec<u8>,
}

/// Why a recipe is refused.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// Larger than the limits allow.
    #[error("recipe is too large: {0}")]
    TooLarge(String),
    /// Not a recipe of a version this shoal reads.
    #[error("recipe version {0} is not supported (this shoal reads version {VERSION})")]
    Version(u8),
    /// Corrupt encoding.
    #[error("recipe does not decode: {0}")]
    Encoding(String),
    /// Decodes, but its sizes or shape do not add up.
    #[error("recipe is inconsistent: {0}")]
    Inconsistent(String),
}

/// The wire version [`encode`] writes.
pub const VERSION: u8 = 1;

impl Recipe {
    /// Checks that the recipe's sizes and shape add up, so that re-creating it cannot
    /// run past its bounds.
    pub fn validate(&self) -> Result<(), RecipeError> {
        let bad = |s: String| Err(RecipeError::Inconsistent(s));
        if self.entries.len() > MAX_ENTRIES {
            return Err(RecipeError::TooLarge(format!(
                "{} entries",
                self.entries.len()
            )));
        }
        let mut total: u64 = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if e.header.is_empty()
                || e.header.len() % BLOCK as usize != 0
                || e.header.len() > MAX_HEADER
            {
                return bad(format!(
                    "entry {i} has a header of {} bytes",
                    e.header.len()
                ));
            }
            if e.path.len() > MAX_PATH {
                return bad(format!("entry {i} has a path of {} bytes", e.path.len()));
            }
            let mut sum: u64 = 0;
            for c in &e.chunks {
                if c.len == 0 || c.len > CHUNK_MAX {
                    return bad(format!("entry {i} has a chunk of {} bytes", c.len));
                }
                sum += u64::from(c.len);
            }
            if sum != e.size {
                return bad(format!(
                    "entry {i} ({}) has chunks of {sum} bytes for {} bytes of content",
                    e.path, e.size
                ));
            }
            if (e.size > 0) != e.content.is_some() {
                return bad(format!(
                    "entry {i} ({}) has content of {} bytes and content hash {:?}",
                    e.path, e.size, e.content
                ));
            }
            let pad = Entry::padding_len(e.size);
            if let Padding::Raw(bytes) = &e.padding
                && bytes.len() as u64 != pad
            {
                return bad(format!(
                    "entry {i} has {} padding bytes, not {pad}",
                    bytes.len()
                ));
            }
            total = total
                .checked_add(e.header.len() as u64)
                .and_then(|t| t.checked_add(e.size))
                .and_then(|t| t.checked_add(pad))
                .ok_or_else(|| RecipeError::Inconsistent("sizes overflow".into()))?;
        }
        total = total
            .checked_add(self.trailer.len() as u64)
            .ok_or_else(|| RecipeError::Inconsistent("sizes overflow".into()))?;
        if total != self.tar_size {
            return bad(format!(
                "entries add up to {total} bytes, the recipe says {}",
                self.tar_size
            ));
        }
        Ok(())
    }

    /// Distinct chunks the recipe names.
    pub fn chunk_ids(&self) -> std::collections::BTreeSet<ChunkId> {
        self.entries
            .iter()
            .flat_map(|e| e.chunks.iter().map(|c| c.id))
            .collect()
    }

    /// Bytes of content (the sum of entry sizes).
    pub fn content_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Encodes a recipe: a version byte, then the zstd-compressed postcard form. Headers
/// dominate a recipe's size and compress about tenfold.
pub fn encode(recipe: &Recipe) -> Vec<u8> {
    let raw = to_raw(recipe);
    let mut out = vec![VERSION];
    // zstd cannot fail writing to memory at a valid level.
    out.extend(zstd::bulk::compress(&raw, 3).expect("zstd compresses to memory"));
    out
}

/// The recipe's postcard form: what [`encode`] compresses, and what a layer's pack
/// compresses against its bases' recipes (`shoal_diff::pack`). The same recipe gives
/// the same bytes on every node of this version, whatever its zstd.
pub fn to_raw(recipe: &Recipe) -> Vec<u8> {
    // postcard cannot fail on these types (no maps with non-string keys, no unsized
    // sequences).
    postcard::to_stdvec(recipe).expect("postcard encodes plain structs")
}

/// Decodes and validates a recipe from untrusted bytes.
pub fn decode(bytes: &[u8]) -> Result<Recipe, RecipeError> {
    if bytes.len() > MAX_ENCODED {
        return Err(RecipeError::TooLarge(format!(
            "{} encoded bytes",
            bytes.len()
        )));
    }
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| RecipeError::Encoding("empty".into()))?;
    if version != VERSION {
        return Err(RecipeError::Version(version));
    }
    let raw = zstd::bulk::decompress(body, MAX_DECODED)
        .map_err(|e| RecipeError::Encoding(format!("zstd: {e}")))?;
    from_raw(&raw)
}

/// Decodes and validates a recipe from its untrusted postcard form ([`to_raw`]), which
/// must be at most [`MAX_DECODED`] bytes with nothing after the recipe.
pub fn from_raw(raw: &[u8]) -> Result<Recipe, RecipeError> {
    if raw.len() > MAX_DECODED {
        return Err(RecipeError::TooLarge(format!(
            "{} decoded bytes",
            raw.len()
        )));
    }
    let (recipe, rest): (Recipe, _) =
        postcard::take_from_bytes(raw).map_err(|e| RecipeError::Encoding(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RecipeError::Encoding(format!(
            "{} bytes follow the recipe",
            rest.len()
        )));
    }
    recipe.validate()?;
    Ok(recipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &str, size: u64) -> Entry {
        let mut chunks = Vec::new();
        let mut left = size;
        while left > 0 {
            let len = left.min(u64::from(CHUNK_MAX)) as u32;
            chunks.push(ChunkRef {
                id: ChunkId::of(&len.to_le_bytes()),
                len,
            });
            left -= u64::from(len);
        }
        Entry {
            header: vec![0; 512],
            path: path.into(),
            kind: EntryKind::File,
            size,
            content: (size > 0).then(|| ChunkId::of(path.as_bytes())),
            chunks,
            padding: Padding::Zeros,
        }
    }

    fn recipe(entries: Vec<Entry>) -> Recipe {
        let tar_size = entries
            .iter()
            .map(|e| e.header.len() as u64 + e.size + Entry::padding_len(e.size))
            .sum::<u64>()
            + 1024;
        Recipe {
            diff_id: Digest::of(b"tar"),
            tar_size,
            entries,
            trailer: vec![0; 1024],
        }
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(sizes in proptest::collection::vec(0u64..600_000, 0..20)) {
            let r = recipe(sizes.iter().enumerate().map(|(i, s)| entry(&format!("f{i}"), *s)).collect());
            prop_assert_eq!(decode(&encode(&r)).unwrap(), r.clone());
            prop_assert_eq!(from_raw(&to_raw(&r)).unwrap(), r);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let mut v = vec![VERSION];
            v.extend(&bytes);
            let _ = decode(&v);
        }
    }

    #[test]
    fn inconsistent_recipes_are_refused() {
        let good = recipe(vec![entry("a", 1000)]);
        good.validate().unwrap();
        let mut r = good.clone();
        r.tar_size += 1;
        assert!(matches!(r.validate(), Err(RecipeError::Inconsistent(_))));
        let mut r = good.clone();
        r.entries[0].chunks[0].len -= 1;
        assert!(r.validate().is_err());
        let mut r = good.clone();
        r.entries[0].header = vec![0; 100];
        assert!(r.validate().is_err());
        let mut r = good.clone();
        r.entries[0].padding = Padding::Raw(vec![1; 3]);
        assert!(r.validate().is_err());
        let mut r = good;
        r.entries[0].content = None;
        assert!(r.validate().is_err());
        // A bomb: tiny on the wire, huge decompressed.
        let mut bomb = vec![VERSION];
        bomb.extend(zstd::bulk::compress(&vec![0u8; MAX_DECODED + 1], 19).unwrap());
        assert!(decode(&bomb).is_err());
        assert!(matches!(decode(&[9, 1, 2]), Err(RecipeError::Version(9))));
        // The raw form takes nothing after the recipe.
        let mut raw = to_raw(&recipe(vec![entry("a", 1000)]));
        raw.push(0);
        assert!(matches!(from_raw(&raw), Err(RecipeError::Encoding(_))));
    }
}
