//! The RocksDB engine: the only module that touches RocksDB.
//!
//! One column family per table. Pieces (up to 1 MiB each) live in BlobDB blob files so
//! that compaction moves keys, not megabytes; they are stored uncompressed, since layer
//! blobs are compressed already. Writes go through the write-ahead log, so a killed
//! process loses nothing it was told was written; `sync_writes` also survives power loss.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBPinnableSlice, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions,
};

use super::StoreError;
use super::engine::{Batch, Engine, Snapshot, Table, Visit};
use super::space::Space;

/// Cap on write-ahead log files (see [`RocksEngine::open`]).
const MAX_WAL_BYTES: u64 = 64 << 20;

/// Memtable size of the content tables.
const CONTENT_WRITE_BUFFER_BYTES: usize = 32 << 20;

/// Size of BlobDB files holding pieces and chunks.
const BLOB_FILE_BYTES: u64 = 64 << 20;

/// RocksDB behind the [`Engine`] interface.
pub struct RocksEngine {
    db: Arc<DB>,
    sync_writes: bool,
    space: Space,
}

impl RocksEngine {
    /// Opens (or creates) the database in `dir`. With `sync_writes`, every batch is
    /// fsynced before it counts as written.
    pub fn open(dir: &Path, sync_writes: bool) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Db(format!(
                "cannot create store directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_keep_log_file_num(4);
        // Reads map the files instead of copying them into RocksDB's buffers: one
        // copy less per piece served (serving went from 0.89x to 1.00x of the origin
        // in shoal-bench serve). A file damaged under the mapping faults rather than
        // returning an error; see ARCHITECTURE.md.
        db_opts.set_allow_mmap_reads(true);
        // Every piece passes through the write-ahead log, and a log file is kept until
        // every table with writes in it has flushed. Small tables (tags, images) fill
        // their memtables rarely, so without a cap old logs, each holding whole pieces,
        // piled up: 4x the store's size on disk in `shoal-bench gc`. Past the cap
        // RocksDB flushes the tables that hold the oldest log.
        db_opts.set_max_total_wal_size(MAX_WAL_BYTES);
        let cfs = Table::ALL.map(|t| ColumnFamilyDescriptor::new(t.name(), table_options(t)));
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs).map_err(|e| open_error(dir, e))?;
        Ok(RocksEngine {
            db: Arc::new(db),
            sync_writes,
            space: Space::new(dir)?,
        })
    }

    fn cf(&self, table: Table) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(table.name())
            .ok_or_else(|| StoreError::Db(format!("column family {} is missing", table.name())))
    }
}

fn table_options(table: Table) -> Options {
    let mut o = Options::default();
    if table.holds_content() {
        o.set_enable_blob_files(true);
        o.set_min_blob_size(4096);
        o.set_enable_blob_gc(true);
        // Blob files are deleted once no key refers to any value in them; smaller files
        // give space back sooner when GC removes images (default 256 MiB).
        o.set_blob_file_size(BLOB_FILE_BYTES);
        // Content passes through memtables on its way to blob files: smaller buffers
        // keep what a flush writes at once within the free-space reserve (space.rs).
        o.set_write_buffer_size(CONTENT_WRITE_BUFFER_BYTES);
        o.set_blob_compression_type(rocksdb::DBCompressionType::None);
    }
    o
}

/// Reads of pieces skip RocksDB's block checksums: every piece is checked against its
/// BLAKE3 id when read (`store::read_piece`), which catches what they would, and they
/// cost a quarter of the serve path (Debian's build computes them in software).
fn read_options(table: Table) -> ReadOptions {
    let mut ro = ReadOptions::default();
    if table.holds_content() {
        ro.set_verify_checksums(false);
    }
    ro
}

type MaybePinned<'a> = Option<DBPinnableSlice<'a>>;

self_cell::self_cell!(
    /// A value pinned in RocksDB's memory, kept alive with the database it borrows from.
    struct Pinned {
        owner: Arc<DB>,
        #[covariant]
        dependent: MaybePinned,
    }
);

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        self.borrow_dependent().as_deref().unwrap_or_default()
    }
}

fn open_error(dir: &Path, e: rocksdb::Error) -> StoreError {
    let detail = e.into_string();
    if detail.contains("lock") || detail.contains("LOCK") {
        StoreError::Locked {
            path: dir.display().to_string(),
            detail,
        }
    } else {
        StoreError::Db(format!("cannot open store at {}: {detail}", dir.display()))
    }
}

fn db_error(e: rocksdb::Error) -> StoreError {
    StoreError::Db(e.into_string())
}

impl Engine for RocksEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf_opt(self.cf(table)?, key, &read_options(table))
            .map_err(db_error)
    }

    fn get_bytes(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        // The value stays in RocksDB's pinned buffer and is handed out as `Bytes`
        // without the copy `get` makes: a megabyte less copied per piece served.
        let name = table.name();
        let pinned = Pinned::try_new(Arc::clone(&self.db), |db| {
            let cf = db
                .cf_handle(name)
                .ok_or_else(|| StoreError::Db(format!("column family {name} is missing")))?;
            db.get_pinned_cf_opt(cf, key, &read_options(table))
                .map_err(db_error)
        })?;
        if pinned.borrow_dependent().is_none() {
            return Ok(None);
        }
        Ok(Some(Bytes::from_owner(pinned)))
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let (mut bytes, mut content) = (0u64, false);
        for (table, key, value) in &batch.ops {
            bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
            content |= table.holds_content() && value.is_some();
        }
        self.space.check(bytes, content)?;
        let mut wb = WriteBatch::default();
        for (table, key, value) in &batch.ops {
            let cf = self.cf(*table)?;
            match value {
                Some(v) => wb.put_cf(cf, key, v),
                None => wb.delete_cf(cf, key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync_writes);
        self.db.write_opt(wb, &wo).map_err(db_error)
    }

    fn keys_with_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(self.cf(table)?, mode) {
            let (k, _) = kv.map_err(db_error)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_vec());
        }
        Ok(out)
    }

    fn keys(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        self.db
            .iterator_cf(self.cf(table)?, IteratorMode::Start)
            .map(|kv| kv.map(|(k, _)| k.to_vec()).map_err(db_error))
            .collect()
    }

    fn compact(&self) -> Result<(), StoreError> {
        // Deleted keys leave tombstones, and deleted pieces stay in their blob files
        // until compaction drops the last reference to them: compact the tables a GC
        // run changes, so that the disk follows the store's usage.
        for table in [
            Table::PieceRefs,
            Table::Pieces,
            Table::Blobs,
            Table::Partials,
            Table::ChunkRefs,
            Table::Chunks,
            Table::LayerChunks,
            Table::Recipes,
        ] {
            // Force the bottommost level too: that is where the references to
            // deleted values live, and dropping them is what frees blob files.
            let mut opts = rocksdb::CompactOptions::default();
            opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            self.db
                .compact_range_cf_opt(self.cf(table)?, None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }

    fn with_snapshot(
        &self,
        f: &mut dyn FnMut(&dyn Snapshot) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // A RocksDB snapshot: a sequence number that reads are pinned to. Writers go on;
        // files the snapshot still sees are kept until it is released.
        let snapshot = self.db.snapshot();
        f(&RocksSnapshot {
            engine: self,
            snapshot: &snapshot,
        })
    }
}

struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    snapshot: &'a rocksdb::Snapshot<'a>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn scan(&self, table: Table, f: &mut Visit<'_>) -> Result<(), StoreError> {
        let mut ro = read_options(table);
        // A whole-table scan would evict what the serve path keeps in the block cache.
        ro.fill_cache(false);
        let mut it = self
            .snapshot
            .raw_iterator_cf_opt(self.engine.cf(table)?, ro);
        it.seek_to_first();
        // The raw iterator lends its key and value: nothing is copied per entry.
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if f(k, v).is_break() {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(db_error)
    }
}

/// Where the database lives inside a node's data directory.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("store")
}
