//! Why a pack was not made or not applied.
//!
//! Packs come from peers, so [`PackError`] keeps three kinds of failure apart, as
//! [`PackError::is_bad_pack`] and [`PackError::is_wrong_base`] tell: the pack's bytes
//! are wrong (mark the peer that sent it), the bases given are not the ones it was made
//! against (ask again naming the bases held, or fetch the chunks), or something local
//! failed: the chunk store, a limit, the sink.

use shoal_protocol::Digest;
use shoal_protocol::recipe::{ChunkId, RecipeError};

use super::format::VERSION;
use crate::delta::{DeltaError, MakeError};

/// Why [`make`](super::make) or [`apply`](super::apply) stopped.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The pack does not start with the pack magic.
    #[error("not a pack: it starts with {0:02x?}, not the pack magic")]
    Magic([u8; 4]),
    /// The version byte is not one this shoal reads.
    #[error("pack version {0} is not supported (this shoal reads version {VERSION})")]
    Version(u8),
    /// The pack ends before a part it declares is complete.
    #[error("pack is truncated: {what} needs {need} bytes, {have} remain")]
    Truncated {
        /// The part that was cut short.
        what: &'static str,
        /// Bytes that part needs.
        need: u64,
        /// Bytes that were left.
        have: u64,
    },
    /// The pack's fields do not add up: counts, indexes, lengths, ids, trailing bytes.
    #[error("pack is inconsistent: {0}")]
    Inconsistent(String),
    /// A zstd frame of the pack (its recipe or literal stream) does not decode.
    #[error("pack's {what} does not decode: {detail}")]
    Corrupt {
        /// The section.
        what: &'static str,
        /// What zstd or the decoder said.
        detail: String,
    },
    /// The target's recipe decodes from the pack but is refused (bounds, shape).
    #[error("pack's recipe is refused: {0}")]
    Recipe(#[source] RecipeError),
    /// A delta of the pack does not apply to its base file.
    #[error("delta for entry {entry} ({path}) fails: {source}")]
    Delta {
        /// Index of the target entry.
        entry: usize,
        /// Its path.
        path: String,
        /// Why.
        source: DeltaError,
    },
    /// A file rebuilt from a delta is not cut into the chunks its recipe entry names.
    #[error("entry {entry} ({path}) rebuilt from its delta does not cut into its recipe's chunks")]
    FileMismatch {
        /// Index of the target entry.
        entry: usize,
        /// Its path.
        path: String,
    },
    /// A chunk of the literal stream does not hash to the id the rule gives it.
    #[error("chunk {index} of the literal stream is not {id}")]
    LiteralMismatch {
        /// Its place in the literal stream.
        index: usize,
        /// The id it should have.
        id: ChunkId,
    },
    /// The pack names a base the caller does not hold (or did not pass).
    #[error("pack was made against base layer {layer}, which was not given")]
    MissingBase {
        /// The base layer's digest.
        layer: Digest,
    },
    /// A base given has another recipe than the one the pack was made against.
    #[error(
        "pack was made against recipe {expected} of base layer {layer}, the recipe given is {got}"
    )]
    WrongBase {
        /// The base layer's digest.
        layer: Digest,
        /// BLAKE3 of the base's raw recipe the pack names.
        expected: ChunkId,
        /// BLAKE3 of the raw recipe given.
        got: ChunkId,
    },
    /// The chunk source lacks a chunk this side needs (a base's, or on make the target's).
    #[error("chunk {id} of {path} is missing from the chunk source")]
    MissingChunk {
        /// The chunk.
        id: ChunkId,
        /// The entry it belongs to.
        path: String,
    },
    /// The chunk source returned bytes that do not match the chunk's id or length.
    #[error("chunk source returned other bytes for chunk {id} of {path}")]
    ChunkMismatch {
        /// The chunk.
        id: ChunkId,
        /// The entry it belongs to.
        path: String,
    },
    /// A length in the pack, or a file to make a delta of, is over a limit of the caller's.
    #[error("{what} of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// zstd or the delta encoder failed while making a pack (a local failure).
    #[error("making the pack failed: {0}")]
    Make(#[from] MakeError),
    /// The sink refused a chunk; its error, passed through.
    #[error("the chunk sink failed: {0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl PackError {
    /// Whether the pack's own bytes are wrong: whoever sent it sent bad data.
    pub fn is_bad_pack(&self) -> bool {
        match self {
            PackError::Delta { source, .. } => source.is_bad_delta(),
            PackError::Magic(_)
            | PackError::Version(_)
            | PackError::Truncated { .. }
            | PackError::Inconsistent(_)
            | PackError::Corrupt { .. }
            | PackError::Recipe(_)
            | PackError::FileMismatch { .. }
            | PackError::LiteralMismatch { .. } => true,
            PackError::MissingBase { .. }
            | PackError::WrongBase { .. }
            | PackError::MissingChunk { .. }
            | PackError::ChunkMismatch { .. }
            | PackError::TooLarge { .. }
            | PackError::Make(_)
            | PackError::Sink(_) => false,
        }
    }

    /// Whether the bases given are not the pack's (the pack itself may be fine).
    pub fn is_wrong_base(&self) -> bool {
        matches!(
            self,
            PackError::MissingBase { .. } | PackError::WrongBase { .. }
        )
    }
}
