//! The content store: blobs kept as their exact bytes in BLAKE3-addressed pieces, plus
//! what the node knows of tags, images and pins.
//!
//! [`content::ContentStore`] keeps the store's rules (piece reference counts, partial
//! and complete blobs, totals) over a small key-value [`engine::Engine`]. Only
//! [`rocks`] touches RocksDB; [`memory`] is the same engine in memory for tests, and
//! one suite (`suite.rs`) runs against both. Every method that changes the store is
//! one atomic write, so a kill at any moment leaves a store that opens and is
//! consistent: a blob is either complete (all its pieces present, its sha256 checked
//! by the caller before [`Store::complete`]) or a resumable partial, never half of each.
//! A partial holds a prefix of pieces in order and may hold pieces beyond it, in any
//! order, as peers send them ([`partial`]).
//!
//! The store does not verify sha256 digests itself: it cannot know what a partial blob
//! will turn into. It does keep piece reference counts, so that removing one blob never
//! removes a piece another blob still uses.

use std::ops::ControlFlow;

use bytes::Bytes;
use shoal_protocol::{Digest, PIECE_SIZE, PieceId, RepoName};

pub mod check;
pub mod codec;
pub mod content;
pub mod engine;
pub mod images;
pub mod memory;
pub mod partial;
pub mod recipes;
pub mod rocks;
pub mod space;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod suite_sparse;

pub use partial::PartialBlob;

/// A blob the store holds completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRecord {
    /// Size in bytes.
    pub size: u64,
    /// Its pieces in order (see [`shoal_protocol::PieceLayout`]).
    pub pieces: Vec<PieceId>,
    /// For manifests: the media type to serve it with.
    pub media_type: Option<String>,
}

/// What a tag resolved to when the node last asked the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRecord {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// When it was resolved, in seconds since the Unix epoch.
    pub resolved_at: u64,
}

/// Running totals over the store, kept in the same writes that change it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Complete blobs (layers, configs and manifests).
    pub blobs: u64,
    /// Their bytes, as engines see them.
    pub blob_bytes: u64,
    /// Distinct pieces stored.
    pub pieces: u64,
    /// Bytes of distinct pieces stored.
    pub piece_bytes: u64,
    /// Blobs fetched in part and resumable.
    pub partial_blobs: u64,
    /// Distinct content chunks stored.
    pub chunks: u64,
    /// Their bytes: the content the store really holds.
    pub chunk_bytes: u64,
    /// Complete layer recipes.
    pub recipes: u64,
    /// Uncompressed tar bytes the recipes re-create.
    pub recipe_tar_bytes: u64,
    /// Recipes being built (or left by a killed ingest, dropped at start).
    pub partial_recipes: u64,
}

/// Why a store operation failed. Local failures only: bad data from the origin or a
/// peer is the caller's to detect before anything reaches the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O error, full disk, corruption RocksDB detected).
    #[error("store database error: {0}")]
    Db(String),
    /// The store's filesystem is (nearly) full: the write was refused before RocksDB
    /// could fail on it.
    #[error(
        "the store's disk is full: {free} bytes free on the filesystem of {path}, and {reserve} are kept in reserve; free space there, or set a smaller [gc] budget so that garbage collection keeps the store within it"
    )]
    DiskFull {
        /// The store's directory.
        path: String,
        /// Bytes free.
        free: u64,
        /// Bytes kept free.
        reserve: u64,
    },
    /// The database is used by another process.
    #[error("store at {path} is in use by another shoal process (or was left locked): {detail}")]
    Locked {
        /// The store's directory.
        path: String,
        /// What RocksDB said.
        detail: String,
    },
    /// A stored record does not decode: the store was damaged or written by a newer shoal.
    #[error("store record {key} is unreadable: {why}")]
    BadRecord {
        /// Which record.
        key: String,
        /// Why.
        why: String,
    },
    /// The call does not fit the store's state (a piece appended out of order, a blob
    /// completed with the wrong size). A bug in the caller, or two writers at once.
    #[error("store conflict: {0}")]
    Conflict(String),
}

/// The store's interface. Implementations are safe to share between threads; their
/// methods block on disk I/O, so async callers run them on the blocking pool.
pub trait Store: recipes::RecipeStore + images::ImageStore + Send + Sync + 'static {
    /// The complete blob `digest`, if held.
    fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, StoreError>;

    /// The bytes of piece `id`, if held, as stored (callers verify them with
    /// [`PieceId::matches`] before use; see [`read_piece`]).
    fn piece(&self, id: &PieceId) -> Result<Option<Bytes>, StoreError>;

    /// The partial blob `digest`, if a fetch of it was begun and not finished.
    fn partial(&self, digest: &Digest) -> Result<Option<PartialBlob>, StoreError>;

    /// Digests of every partial blob.
    fn partials(&self) -> Result<Vec<Digest>, StoreError>;

    /// Stores `bytes` as piece number `index` of partial blob `digest`, in order (the
    /// origin's path), creating the partial at index 0. `index` must be the length of
    /// the partial's prefix, and the prefix open (no short piece yet); pieces held
    /// beyond it that then follow join the prefix. An index the partial already holds
    /// is accepted only with the same bytes, and changes nothing: an in-order fetch
    /// runs on through pieces peers supplied. If the partial knows its blob's size
    /// (from [`Store::put_piece`]) the piece must fit its layout. Returns the piece's id.
    fn append_piece(
        &self,
        digest: &Digest,
        index: u64,
        bytes: &[u8],
    ) -> Result<PieceId, StoreError>;

    /// Stores `bytes` as piece number `index` of partial blob `digest`, a blob of `size`
    /// bytes, in any order, creating the partial if needed: a piece right after the
    /// prefix joins it (with every held piece that then follows), any other is held
    /// beyond it. `index` must be below the layout's piece count
    /// ([`shoal_protocol::PieceLayout`]) and `bytes` exactly that piece's length; the
    /// size must be the one the partial's pieces were put with (and fit what was
    /// appended). An index already held is a no-op with the same bytes and a conflict
    /// with others. The caller has checked the bytes against the piece id it asked for,
    /// so every refusal here is a caller bug. Returns the piece's id.
    fn put_piece(
        &self,
        digest: &Digest,
        size: u64,
        index: u64,
        bytes: &[u8],
    ) -> Result<PieceId, StoreError>;

    /// Turns partial blob `digest` into a complete blob of `size` bytes. The caller has
    /// checked its sha256. Refused while the partial has a gap (pieces held beyond its
    /// prefix) or its prefix is not exactly `size` bytes. A blob already complete is
    /// left as it is, and the partial's pieces released.
    fn complete(
        &self,
        digest: &Digest,
        size: u64,
        media_type: Option<&str>,
    ) -> Result<BlobRecord, StoreError>;

    /// Drops partial blob `digest` (prefix and pieces beyond it) and the pieces only it
    /// used.
    fn discard_partial(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Drops complete blob `digest` and the pieces only it used. Returns whether it was held.
    fn remove_blob(&self, digest: &Digest) -> Result<bool, StoreError>;

    /// Records what `repo:tag` at `upstream` resolved to.
    fn set_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &str,
        record: &TagRecord,
    ) -> Result<(), StoreError>;

    /// What `repo:tag` at `upstream` last resolved to.
    fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &str,
    ) -> Result<Option<TagRecord>, StoreError>;

    /// Totals over the store.
    fn totals(&self) -> Result<Totals, StoreError>;

    /// Calls `f` with what `tables` hold (tags excepted), table after table, all as they
    /// were at one moment, until `f` breaks. Takes no lock that writers wait on. For
    /// checks of the whole store ([`crate::fsck`]).
    fn scan(
        &self,
        tables: &[engine::Table],
        f: &mut dyn FnMut(check::Scanned<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// If piece `id` is still missing or damaged when read again under the writer lock,
    /// drops in one atomic batch every user of it: the blobs among `blobs` whose record
    /// still names it, and every partial blob that does. Dropping them together takes
    /// bad bytes out with their last reference, so that a fetch of any of them stores
    /// the piece afresh instead of referencing the bad copy.
    fn drop_piece_users(
        &self,
        id: &PieceId,
        blobs: &[Digest],
    ) -> Result<check::Dropped, StoreError>;

    /// Adds `delta` to the reference count of piece or chunk `id`: the correction of a
    /// count a consistent scan found off by `-delta` from its users. Every store change
    /// moves a count and its users together, so the correction holds whatever was
    /// written since the scan. Refused if `id` has no count; a count brought to zero
    /// drops the bytes, as a last release does.
    fn correct_refs(
        &self,
        kind: content::Counted,
        id: &[u8; 32],
        delta: i64,
    ) -> Result<(), StoreError>;

    /// Gives deleted content's space back to the disk (after a GC run).
    fn compact(&self) -> Result<(), StoreError>;

    /// Stores a small blob held whole in memory (a manifest or config) whose sha256 the
    /// caller has checked. A crash midway leaves a partial, which the next call replaces.
    fn put_blob(
        &self,
        digest: &Digest,
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<BlobRecord, StoreError> {
        if let Some(done) = self.blob(digest)? {
            return Ok(done);
        }
        self.discard_partial(digest)?;
        for (index, piece) in bytes.chunks(PIECE_SIZE as usize).enumerate() {
            self.append_piece(digest, index as u64, piece)?;
        }
        self.complete(digest, bytes.len() as u64, media_type)
    }
}

/// Why a piece could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PieceReadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A piece a record names is not in the store.
    #[error("piece {0} is missing from the store")]
    Missing(PieceId),
    /// The stored bytes do not hash to the piece's id: damage on disk.
    #[error("piece {0} is damaged on disk (its BLAKE3 hash does not match)")]
    Damaged(PieceId),
}

/// Reads piece `id` and checks it against its id, so that damage on disk is never
/// served. (BLAKE3 runs at several GiB/s; the check costs little beside the read.)
pub fn read_piece(store: &dyn Store, id: &PieceId) -> Result<Bytes, PieceReadError> {
    let bytes = store.piece(id)?.ok_or(PieceReadError::Missing(*id))?;
    if !id.matches(&bytes) {
        return Err(PieceReadError::Damaged(*id));
    }
    Ok(bytes)
}

/// Test content: bytes that do not repeat within a blob (so that its pieces differ)
/// and differ per `seed`.
#[cfg(test)]
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Seconds since the Unix epoch, for records that say when something happened.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
