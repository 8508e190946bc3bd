//! Free space on the store's filesystem, checked before RocksDB is asked to write.
//!
//! RocksDB must never meet a full disk: Debian's librocksdb (7.8.3) is built with
//! assertions, and a write that fails with ENOSPC aborts the whole process
//! (`WritableFileWriter::AssertFalseAndGetStatusForPrevError`), taking every pull with
//! it. So the engine refuses a write with [`StoreError::DiskFull`] while it would leave
//! less than a reserve free. The reserve covers what RocksDB writes on its own after
//! accepting data: the write-ahead log (capped at 64 MiB) and memtable flushes into
//! blob files (32 MiB write buffers for content), plus a margin.

use std::path::{Path, PathBuf};

use super::StoreError;

/// Least reserve, whatever the filesystem's size.
const MIN_RESERVE: u64 = 160 << 20;
/// Most reserve, on large filesystems.
const MAX_RESERVE: u64 = 2 << 30;

/// The free-space check for one store directory.
#[derive(Debug)]
pub struct Space {
    dir: PathBuf,
    reserve: u64,
}

/// Bytes free for an unprivileged writer, and the filesystem's size.
fn stat(dir: &Path) -> Result<(u64, u64), StoreError> {
    let s = rustix::fs::statvfs(dir)
        .map_err(|e| StoreError::Db(format!("cannot read free space of {}: {e}", dir.display())))?;
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

impl Space {
    /// The check for the store in `dir`: a reserve of 5% of its filesystem, at least
    /// 160 MiB and at most 2 GiB.
    pub fn new(dir: &Path) -> Result<Self, StoreError> {
        let (_, total) = stat(dir)?;
        Ok(Space {
            dir: dir.to_owned(),
            reserve: (total / 20).clamp(MIN_RESERVE, MAX_RESERVE),
        })
    }

    /// Refuses a write of `incoming` bytes that would leave less than the reserve free.
    /// Content (pieces, chunks) must leave the whole reserve; small records (tags,
    /// image records, deletions) may use half of it, so that the node can still record
    /// what it serves, and GC can still delete, on a full disk.
    pub fn check(&self, incoming: u64, content: bool) -> Result<(), StoreError> {
        let (free, _) = stat(&self.dir)?;
        let keep = if content {
            self.reserve
        } else {
            self.reserve / 2
        };
        if free < keep.saturating_add(incoming) {
            return Err(StoreError::DiskFull {
                path: self.dir.display().to_string(),
                free,
                reserve: keep,
            });
        }
        Ok(())
    }
}
