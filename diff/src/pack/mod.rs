//! A layer's transfer plan ("pack"): everything a node that holds some layers of a
//! repository (the *bases*) needs to rebuild another layer's uncompressed tar (the
//! *target*) exactly, in as few bytes as possible. [`make`] runs on a peer that holds
//! the target and the bases; [`apply`] on the node that asked, which holds the bases.
//!
//! # Goals
//!
//! - The receiver rebuilds the target's recipe and every content chunk of the target
//!   its bases do not hold, each checked by BLAKE3; with the bases' chunks,
//!   [`recreate`](crate::recreate) then writes the tar and checks its diff_id.
//! - Few bytes: chunks the bases hold cost nothing; a changed file costs a binary
//!   delta against its previous version ([`delta`]); new content travels
//!   in one zstd stream, so that files compress against each other; the recipe is
//!   compressed against the bases' recipes, so unchanged tar headers cost next to
//!   nothing.
//! - Safe to apply from an untrusted peer: every length is checked against the bytes
//!   present and the receiver's [`Limits`] before anything is allocated, no input makes
//!   [`apply`] panic, and memory stays bounded (besides the pack and the recipes: one
//!   delta'd file and its base file, zstd's window of at most 128 MiB, one chunk).
//!
//! Non-goals: streaming the pack itself (it is made and applied whole; the node sends
//! it in pieces), recompression to gzip (the node's, from the carried
//! [`gzip::Profile`](crate::gzip::Profile)), and choosing the bases (the receiver names
//! the layers it holds).
//!
//! # What goes where
//!
//! 1. **Held chunks.** Every chunk a base's recipe names is *held*: the receiver has
//!    it, and the pack never carries it.
//! 2. **Deltas.** A target entry that is a regular file with content, with chunks not
//!    held, gets a delta against a base file if [`delta::worth_sending`] says the delta
//!    beats those chunks compressed alone at the literal level. The base file is the
//!    entry with the same path in the first base (in the order given) that has a
//!    regular file with content there; failing that (with
//!    [`Options::similar_names`]), the first base file whose path is the same once
//!    every run of digits is taken as one (`python3.11/x.py` ~ `python3.12/x.py`,
//!    `libssl.so.3.0.20` ~ `libssl.so.3.0.22`): a hash-map lookup per file, so cheap,
//!    and it catches renamed versioned directories and libraries. Files over
//!    [`Options::max_target`] get no delta.
//! 3. **Literal stream.** The *literal chunks* are the target's chunks, in recipe
//!    order, each distinct id once, that are neither held nor named by a delta'd
//!    entry. Their bytes, concatenated, are one zstd frame (long-distance matching,
//!    window covering the stream up to 128 MiB).
//! 4. **Recipe.** The target's recipe in its raw postcard form
//!    ([`recipe::to_raw`](shoal_protocol::recipe::to_raw)), compressed by zstd with the
//!    concatenation of the bases' raw recipes as a prefix dictionary (zstd's
//!    `--patch-from`). The raw form rather than the wire form
//!    ([`recipe::encode`](shoal_protocol::recipe::encode)): two compressed recipes
//!    differ from their first difference on, while two raw ones share every unchanged
//!    entry. Both sides derive the raw forms from the decoded recipes, so they agree
//!    whatever zstd wrote the wire forms; the header names each by BLAKE3 so a
//!    mismatch is a [`PackError::WrongBase`], not a garbled recipe.
//!
//! The literal chunks follow from the target recipe, the bases' recipes and the
//! delta table alone, so the pack lists no chunk ids: the receiver works them out.
//!
//! # Format, version 1
//!
//! All integers little-endian.
//!
//! | size | field |
//! | --- | --- |
//! | 4 | magic `SHPK` |
//! | 1 | version, 1 |
//! | 32 | target layer digest (sha256 of its blob) |
//! | 32 | target diff_id (sha256 of its tar) |
//! | 8 | target tar size |
//! | 2 | base count *n*, at most [`MAX_BASES`] |
//! | 64 × *n* | per base: layer digest (32), BLAKE3 of its raw recipe (32) |
//! | 1 | profile flag: 0 none, 1 present |
//! | 2 + *p* | if present: profile length *p* (at most [`MAX_PROFILE`]), profile bytes |
//! | 4 | recipe raw length (at most `recipe::MAX_DECODED`) |
//! | 4 | recipe frame length |
//! | … | recipe frame: one zstd frame, prefix = the bases' raw recipes in header order |
//! | 4 | delta count *d* |
//! | 18 × *d* | per delta: target entry (4), base index in the header (2), base entry (4), delta length (8) |
//! | … | the deltas ([`delta`] format), in table order |
//! | 8 | literal raw length |
//! | 8 | literal frame length |
//! | … | literal frame: one zstd frame, or nothing when the raw length is 0 |
//!
//! Nothing follows the literal frame. The header ([`read_header`]) is everything up
//! to the base list.
//!
//! [`apply`] checks, in this order: magic, version, base count and the tar size against
//! [`Limits`]; every section length against the bytes left, and nothing after the
//! literal frame; that each base the header names is given and its raw recipe hashes
//! as named ([`PackError::MissingBase`], [`PackError::WrongBase`]); the recipe frame
//! (exactly its raw length, at most [`Limits::max_recipe`]) and the recipe
//! ([`Recipe::validate`]), whose diff_id and size must be the header's; the delta table
//! (increasing target entries, indexes in range, both entries with content, each
//! delta's header naming the base entry's and the target entry's content ids and
//! size, sizes within [`Limits::max_file`]); the literal raw length against the sum of
//! the literal chunks' lengths. Then the deltas, each base file read from the chunk
//! source (chunks checked), the result checked by BLAKE3 and cut with
//! [`chunk_content`](crate::chunk_content) into exactly the entry's chunks; then the
//! literal stream, each chunk checked against its id as it completes.
//!
//! # Choices and figures
//!
//! Measured by `shoal-bench deltas` (README.md has the command and the table): for a
//! Debian root with four packages added (230 MB tar, 23.6 MB of new content) the pack
//! is 12.98 MB, the same as `zstd -19 --long=27 --patch-from` of the whole tar (383
//! bytes smaller), made in 16 s where zstd takes 119 s; for the same root with
//! libssl3, openssl and git updated to their next Debian builds it is 1.47 MB, 0.57 of
//! zstd's 2.60 MB, because bidiff beats zstd on rebuilt binaries. Applying takes 0.1 s.
//! Most of the first pack is new content, compressed alike by both: the literal
//! stream's level is the one choice that moves it (see [`Options::level`]).

mod apply;
mod error;
mod format;
mod literal;
mod make;

use std::collections::HashSet;

use shoal_protocol::recipe::{ChunkId, ChunkRef, Entry, MAX_DECODED, Recipe};

use crate::delta::{self, Budget};

pub use apply::apply;
pub use error::PackError;
pub use format::{Header, MAGIC, MAX_BASES, MAX_PROFILE, VERSION, read_header};
pub use literal::WINDOW_LOG_MAX;
pub use make::{make, shape};

/// A layer both sides hold: what the pack is made against and applied with.
#[derive(Clone, Copy, Debug)]
pub struct Base<'a> {
    /// The base layer's blob digest.
    pub layer: shoal_protocol::Digest,
    /// Its decoded recipe.
    pub recipe: &'a Recipe,
    /// Its recipe in wire form ([`recipe::encode`](shoal_protocol::recipe::encode)).
    /// Not read by this version: the pack works from the raw form of
    /// [`recipe`](Self::recipe), which is the same on every node whatever zstd wrote
    /// the wire form.
    pub encoded: &'a [u8],
}

/// Chunk bytes by id, from the caller's store. It may return `None`; bytes it returns
/// are checked against the id (and the length the recipe gives) before use.
pub trait ChunkSource {
    /// The bytes of chunk `id`, if held.
    fn chunk(&self, id: &ChunkId) -> Option<Vec<u8>>;
}

impl<S: std::hash::BuildHasher> ChunkSource for std::collections::HashMap<ChunkId, Vec<u8>, S> {
    fn chunk(&self, id: &ChunkId) -> Option<Vec<u8>> {
        self.get(id).cloned()
    }
}

/// Where [`apply`] hands each chunk it rebuilds (checked against its id); an error
/// stops the apply and is returned as it is.
pub type Sink<'a> = dyn FnMut(ChunkRef, &[u8]) -> Result<(), PackError> + 'a;

/// How a pack is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// How much each delta may cost to make (method, level, memory); see [`Budget`].
    /// Default [`Budget::default`].
    pub budget: Budget,
    /// zstd level of the literal stream, 1 to 19 (others are clamped), and of the
    /// estimate each delta is weighed against. Default 19: on the 23.6 MB of new
    /// content of the Debian pair in the module docs, levels 3, 9, 15, 17 and 19 give
    /// 13.91, 13.50, 13.41, 13.12 and 12.85 MB, and only 19 matches
    /// `zstd -19 --patch-from`; it compresses at about 1.5 MB/s (16 s there, level 9
    /// about 1 s). A pack is made once per layer pair and cached, so the bytes win up
    /// to the size where the wait does not: see `large_above`.
    pub level: i32,
    /// Literal streams longer than this are compressed at `large_level` instead (when
    /// it is lower than `level`). Default 32 MiB: about 20 s at level 19.
    pub large_above: u64,
    /// Level for literal streams over `large_above`. Default 9: 5% larger than 19 on
    /// the pair above, at about 25 MB/s.
    pub large_level: i32,
    /// zstd level of the recipe, compressed against the bases' recipes. Default 19:
    /// on the Debian update pair (a 5.9 MB raw recipe against its base's), 19.5 KB
    /// against 27.1 KB at level 9 and 34.5 KB at level 3, for about 2 s.
    pub recipe_level: i32,
    /// Largest file (target or base) a delta is made for: both are held in memory
    /// while it is made, and a receiver refuses files over its [`Limits::max_file`].
    /// Default [`delta::MAX_TARGET`] (1 GiB), the receiver's default limit.
    pub max_target: u64,
    /// Whether a file with no same-path base file is delta'd against a base file
    /// whose path differs only in its digits (see the module docs). Default true.
    pub similar_names: bool,
    /// Largest window the literal stream is compressed with, as a log: the maker holds
    /// that many bytes of it, and matches reach no further back. Default and most
    /// [`WINDOW_LOG_MAX`] (128 MiB); a node making packs while it serves uses less.
    pub literal_window_log: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: Budget::default(),
            level: 19,
            large_above: 32 << 20,
            large_level: 9,
            recipe_level: 19,
            max_target: delta::MAX_TARGET,
            similar_names: true,
            literal_window_log: WINDOW_LOG_MAX,
        }
    }
}

impl Options {
    /// The level the literal stream of `len` bytes is compressed at.
    fn literal_level(&self, len: u64) -> i32 {
        let level = if len > self.large_above {
            self.level.min(self.large_level)
        } else {
            self.level
        };
        level.clamp(1, 19)
    }
}

/// What [`apply`] accepts from a pack. The defaults accept every pack [`make`] writes
/// with default [`Options`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest target recipe, in bytes of its raw form. Default and most:
    /// `recipe::MAX_DECODED` (512 MiB).
    pub max_recipe: u64,
    /// Largest file a delta may rebuild, and largest base file read for one: both are
    /// held in memory while the delta applies. Default [`delta::MAX_TARGET`] (1 GiB).
    pub max_file: u64,
    /// Largest target tar. Default: no limit (the pack is applied a chunk at a time).
    pub max_tar: u64,
    /// Largest zstd window the literal stream may use, as a log (the decoder holds
    /// that many bytes). Default and what [`make`] writes at most: [`WINDOW_LOG_MAX`]
    /// (128 MiB).
    pub window_log_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recipe: MAX_DECODED as u64,
            max_file: delta::MAX_TARGET,
            max_tar: u64::MAX,
            window_log_max: WINDOW_LOG_MAX,
        }
    }
}

/// Where a pack's bytes went, and what the receiver already held. [`make`] and
/// [`apply`] give the same summary for the same pack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the whole pack.
    pub pack_bytes: u64,
    /// Bytes of the compressed recipe.
    pub recipe_bytes: u64,
    /// Files sent as deltas.
    pub delta_files: u64,
    /// Bytes of those deltas (their table entries not counted).
    pub delta_bytes: u64,
    /// Target bytes the deltas rebuild (the files' sizes).
    pub delta_raw: u64,
    /// Chunks in the literal stream.
    pub literal_chunks: u64,
    /// Their bytes before compression.
    pub literal_raw: u64,
    /// Bytes of the compressed literal stream.
    pub literal_bytes: u64,
    /// Distinct chunks of the target the bases hold.
    pub reused_chunks: u64,
    /// Their bytes: content the receiver already held.
    pub reused_bytes: u64,
}

/// What [`apply`] rebuilt.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The target's recipe, validated, with the header's diff_id and size.
    pub recipe: Recipe,
    /// The gzip profile the pack carries, as sent (the node decodes it with
    /// [`gzip::Profile::decode`](crate::gzip::Profile::decode)).
    pub profile: Option<Vec<u8>>,
    /// Where the pack's bytes went.
    pub summary: Summary,
}

/// The chunks the bases' recipes name: what the receiver holds.
fn held_chunks<'a>(recipes: impl Iterator<Item = &'a Recipe>) -> HashSet<ChunkId> {
    recipes.flat_map(|r| r.chunk_ids()).collect()
}

/// A literal chunk and the entry it was found in (for errors).
#[derive(Clone, Copy, Debug)]
struct Literal {
    chunk: ChunkRef,
    entry: usize,
}

/// The literal chunks (rule 3 in the module docs): the target's chunks in recipe order,
/// each distinct id once, neither held nor named by an entry in `delta_entries`.
fn literal_chunks(
    target: &Recipe,
    held: &HashSet<ChunkId>,
    delta_entries: impl Iterator<Item = usize>,
) -> Vec<Literal> {
    let mut skip: HashSet<ChunkId> = delta_entries
        .filter_map(|i| target.entries.get(i))
        .flat_map(|e| e.chunks.iter().map(|c| c.id))
        .collect();
    let mut out = Vec::new();
    for (entry, e) in target.entries.iter().enumerate() {
        for c in &e.chunks {
            if !held.contains(&c.id) && skip.insert(c.id) {
                out.push(Literal { chunk: *c, entry });
            }
        }
    }
    out
}

/// The distinct chunks of the target that are held, and their bytes.
fn reused(target: &Recipe, held: &HashSet<ChunkId>) -> (u64, u64) {
    let mut seen = HashSet::new();
    let (mut chunks, mut bytes) = (0, 0);
    for c in target.entries.iter().flat_map(|e| &e.chunks) {
        if held.contains(&c.id) && seen.insert(c.id) {
            chunks += 1;
            bytes += u64::from(c.len);
        }
    }
    (chunks, bytes)
}

/// The content of `entry`, its chunks read from `chunks` and each checked.
fn read_file(entry: &Entry, chunks: &dyn ChunkSource) -> Result<Vec<u8>, PackError> {
    // The recipe was validated: its chunk lengths add up to its size.
    let mut out = Vec::with_capacity(entry.size as usize);
    for c in &entry.chunks {
        out.extend_from_slice(&read_chunk(c, &entry.path, chunks)?);
    }
    Ok(out)
}

/// One chunk from `chunks`, checked against its length and id.
fn read_chunk(c: &ChunkRef, path: &str, chunks: &dyn ChunkSource) -> Result<Vec<u8>, PackError> {
    let bytes = chunks.chunk(&c.id).ok_or_else(|| PackError::MissingChunk {
        id: c.id,
        path: path.to_owned(),
    })?;
    if bytes.len() != c.len as usize || !c.id.matches(&bytes) {
        return Err(PackError::ChunkMismatch {
            id: c.id,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}
