//! The key-value engine under the content store: named tables, point reads, atomic
//! batches. It knows nothing of blobs or pieces; [`super::content`] holds those rules.

use std::ops::ControlFlow;

use bytes::Bytes;

use super::StoreError;

/// The tables the content store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Piece id → piece bytes. Large values: RocksDB keeps them in blob files.
    Pieces,
    /// Piece id → reference count and size.
    PieceRefs,
    /// Digest → complete blob record.
    Blobs,
    /// Digest → partial blob record.
    Partials,
    /// upstream, repository and tag → tag record.
    Tags,
    /// Store-wide records (totals).
    Meta,
    /// Chunk id → content chunk bytes (blob files, like pieces).
    Chunks,
    /// Chunk id → reference count and size.
    ChunkRefs,
    /// Layer digest and chunk id → nothing: the chunks a recipe (complete or being
    /// built) holds a reference to, once each.
    LayerChunks,
    /// Layer digest → complete recipe record.
    Recipes,
    /// Layer digest → nothing: a recipe being built.
    PartialRecipes,
    /// upstream, repository and manifest digest → image record (for GC).
    Images,
    /// Image key and pin name → pin.
    Pins,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 13] = [
        Table::Pieces,
        Table::PieceRefs,
        Table::Blobs,
        Table::Partials,
        Table::Tags,
        Table::Meta,
        Table::Chunks,
        Table::ChunkRefs,
        Table::LayerChunks,
        Table::Recipes,
        Table::PartialRecipes,
        Table::Images,
        Table::Pins,
    ];

    /// The table's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Table::Pieces => "pieces",
            Table::PieceRefs => "piece_refs",
            Table::Blobs => "blobs",
            Table::Partials => "partials",
            Table::Tags => "tags",
            Table::Meta => "meta",
            Table::Chunks => "chunks",
            Table::ChunkRefs => "chunk_refs",
            Table::LayerChunks => "layer_chunks",
            Table::Recipes => "recipes",
            Table::PartialRecipes => "partial_recipes",
            Table::Images => "images",
            Table::Pins => "pins",
        }
    }

    /// Whether values are large (stored in blob files, read without block checksums
    /// because callers check them by BLAKE3).
    pub fn holds_content(self) -> bool {
        matches!(self, Table::Pieces | Table::Chunks)
    }
}

/// Writes that land together or not at all.
#[derive(Default)]
pub struct Batch {
    /// (table, key, value); `None` deletes the key.
    pub ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Sets `key` in `table` to `value`.
    pub fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.ops.push((table, key.to_vec(), Some(value)));
    }

    /// Deletes `key` from `table`.
    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.ops.push((table, key.to_vec(), None));
    }
}

/// A key-value engine with tables and atomic batches.
pub trait Engine: Send + Sync + 'static {
    /// The value of `key` in `table`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The value of `key` in `table` as shared bytes: what the serve path hands to the
    /// socket. An engine that can lend its own buffer without copying does so.
    fn get_bytes(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.get(table, key)?.map(Bytes::from))
    }

    /// Applies every write in `batch` atomically.
    fn write(&self, batch: Batch) -> Result<(), StoreError>;

    /// Every key in `table`, in order.
    fn keys(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Every key in `table` that starts with `prefix`, in order.
    fn keys_with_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Gives back the space of deleted content (RocksDB compacts; memory has nothing
    /// to do).
    fn compact(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Calls `f` with a [`Snapshot`] of every table taken now. Takes no lock that
    /// writers wait on: writes go on while `f` runs, and do not show in the snapshot.
    fn with_snapshot(
        &self,
        f: &mut dyn FnMut(&dyn Snapshot) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// What a [`Snapshot::scan`] calls with each key and value; breaking stops the scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// Every table as it was at one moment (what a consistency check needs: a count and
/// the records it counts, read at the same instant).
pub trait Snapshot {
    /// Calls `f` with each key and value of `table` in key order, until it breaks.
    fn scan(&self, table: Table, f: &mut Visit<'_>) -> Result<(), StoreError>;
}
