//! Why a tar has no recipe, and why a recipe did not re-create its tar.
//!
//! Layer tars come from the origin, and recipes from peers: both are untrusted, so
//! each error says what was wrong and where (entry index, path, byte offset in the
//! tar), and nothing in this crate panics on their bytes.

use shoal_protocol::Digest;
use shoal_protocol::recipe::{ChunkId, RecipeError};

/// Which part of an entry a tar ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The entry's content.
    Content,
    /// The padding that follows the content up to the next 512-byte block.
    Padding,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Content => "content",
            Part::Padding => "padding",
        })
    }
}

/// Why a layer tar cannot be described by a recipe. `entry` counts the entries before
/// it (a PAX global header is an entry); `offset` is a byte offset in the tar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// The tar ends inside an entry's header blocks (a block or a PAX/GNU record cut short).
    #[error(
        "tar is truncated: it ends inside the header of entry {entry}, which starts at byte {offset}"
    )]
    TruncatedHeader {
        /// Index of the entry.
        entry: usize,
        /// Offset of the entry's first header block.
        offset: u64,
    },
    /// The tar ends inside an entry's content or padding, with no end-of-archive blocks in what came.
    #[error(
        "tar is truncated: entry {entry} ({path}) at byte {offset} lacks {missing} bytes of {part}"
    )]
    Truncated {
        /// Index of the entry.
        entry: usize,
        /// Its path.
        path: String,
        /// Offset of its first header block.
        offset: u64,
        /// Where the tar ended.
        part: Part,
        /// Bytes of that part that never came.
        missing: u64,
    },
    /// An entry's header claims more content than the tar holds: the tar's end-of-archive blocks lie inside that content.
    #[error(
        "entry {entry} ({path}) at byte {offset} says it has {size} bytes of content, which runs past the end of the archive at byte {end}"
    )]
    SizePastEnd {
        /// Index of the entry.
        entry: usize,
        /// Its path.
        path: String,
        /// Offset of its first header block.
        offset: u64,
        /// The content size its header (or PAX `size`) gives.
        size: u64,
        /// Length of the tar.
        end: u64,
    },
    /// A header block whose checksum field does not match its bytes (or is not a number): a corrupt tar, or not a tar.
    #[error(
        "header block at byte {offset} (entry {entry}) has checksum {stored:?}, its bytes sum to {computed}"
    )]
    BadChecksum {
        /// Index of the entry.
        entry: usize,
        /// Offset of the block.
        offset: u64,
        /// The checksum field as written.
        stored: String,
        /// The sum of the block's bytes.
        computed: u64,
    },
    /// A header block whose size field is neither octal nor GNU base-256, or is negative.
    #[error("header block at byte {offset} (entry {entry}) has a size field that is not a size")]
    BadSize {
        /// Index of the entry.
        entry: usize,
        /// Offset of the block.
        offset: u64,
    },
    /// A PAX extended header (`x` or `g`) whose records do not parse.
    #[error("PAX header at byte {offset} (entry {entry}) does not parse: {reason}")]
    BadPax {
        /// Index of the entry.
        entry: usize,
        /// Offset of the PAX header block.
        offset: u64,
        /// What is wrong with its records.
        reason: String,
    },
    /// PAX or GNU long-name records that no entry header follows (the archive ends after them).
    #[error(
        "entry {entry} at byte {offset} has PAX or GNU long-name records but no header after them"
    )]
    MissingHeader {
        /// Index of the entry.
        entry: usize,
        /// Offset of its first record.
        offset: u64,
    },
    /// One zero block followed by a header: Go's reader refuses it, GNU tar reads on, others stop, so no answer is safe.
    #[error("a lone zero block at byte {offset} is followed by more headers")]
    LoneZeroBlock {
        /// Offset of the zero block.
        offset: u64,
    },
    /// An entry's header blocks (PAX and GNU records included) exceed the header limit.
    #[error(
        "entry {entry} at byte {offset} has {len} bytes of header blocks, more than the {limit} allowed"
    )]
    HeaderTooLarge {
        /// Index of the entry.
        entry: usize,
        /// Offset of its first header block.
        offset: u64,
        /// Length its header run would reach.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// An entry's path exceeds the path limit.
    #[error(
        "entry {entry} at byte {offset} has a path of {len} bytes, more than the {limit} allowed"
    )]
    PathTooLong {
        /// Index of the entry.
        entry: usize,
        /// Offset of its first header block.
        offset: u64,
        /// Length of the path.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The tar has more entries than the entry limit.
    #[error("the tar has more than {limit} entries (entry at byte {offset})")]
    TooManyEntries {
        /// Offset of the first entry past the limit.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// More bytes follow the end-of-archive blocks than the trailer limit.
    #[error("more than {limit} bytes follow the end of the archive at byte {offset}")]
    TrailerTooLarge {
        /// Offset of the end-of-archive blocks.
        offset: u64,
        /// The limit.
        limit: usize,
    },
}

/// Why [`recreate`](crate::recreate) did not write a recipe's tar.
#[derive(Debug, thiserror::Error)]
pub enum RecreateError {
    /// The recipe's sizes or shape do not add up.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// A chunk the recipe names is not to be had.
    #[error("chunk {index} ({id}) of entry {entry} ({path}) is missing")]
    MissingChunk {
        /// Index of the entry.
        entry: usize,
        /// Its path.
        path: String,
        /// Index of the chunk in the entry.
        index: usize,
        /// The chunk's id.
        id: ChunkId,
    },
    /// A chunk came with a length other than the recipe's.
    #[error("chunk {index} ({id}) of entry {entry} ({path}) has {got} bytes, not {expected}")]
    ChunkLength {
        /// Index of the entry.
        entry: usize,
        /// Its path.
        path: String,
        /// Index of the chunk in the entry.
        index: usize,
        /// The chunk's id.
        id: ChunkId,
        /// Length the recipe gives.
        expected: u32,
        /// Length that came.
        got: usize,
    },
    /// A chunk's bytes do not hash to its id.
    #[error("chunk {index} ({id}) of entry {entry} ({path}) does not match its id")]
    ChunkMismatch {
        /// Index of the entry.
        entry: usize,
        /// Its path.
        path: String,
        /// Index of the chunk in the entry.
        index: usize,
        /// The chunk's id.
        id: ChunkId,
    },
    /// The output refused the bytes.
    #[error("writing the tar failed: {0}")]
    Write(#[source] std::io::Error),
    /// Every chunk matched, but the tar written does not hash to the recipe's diff_id (a wrong recipe).
    #[error("the re-created tar is {got}, the recipe says {expected}")]
    DiffId {
        /// The recipe's diff_id.
        expected: Digest,
        /// The digest of what was written.
        got: Digest,
    },
}
