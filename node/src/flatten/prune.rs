//! Pruning `data_dir/flat`: what GC let go of the store goes from here too.
//!
//! - A tree (with its links file) or an export is kept while the store holds an image
//!   record that is, or points at, its manifest, or while a mount uses it. GC removes
//!   image records (never a pinned one, so never a mounted one); the next prune
//!   removes their trees.
//! - An object is kept while anything else links it: a tree or a `shoal flatten --out`
//!   directory. One whose link count is 1 is held only by the objects directory, and
//!   goes; deleting an `--out` directory is thus all it takes to give its files back.
//!   (A mount's writes are copies in its upper dir, never links to objects.)
//!
//! A prune holds [`Flat::in_use`] exclusively: operations that link objects or read
//! trees hold it shared, so an object is never removed between being written and
//! being linked, nor a tree while an export reads it. The node prunes at start and
//! every hour (`node.rs`); `POST /_shoal/flat/prune` prunes now.

use std::collections::HashSet;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, statat, unlinkat};
use shoal_protocol::Digest;

use super::service::{Flat, FlatError, LINKS_SUFFIX};
use super::tree::{file_type, list, remove_tree};
use super::wire::PruneSummary;
use crate::store::Store;

impl Flat {
    /// Removes trees and exports of images the store no longer holds and objects
    /// nothing links.
    pub fn prune(&self, store: &dyn Store) -> Result<PruneSummary, FlatError> {
        // Guards no data: a panic elsewhere leaves nothing inconsistent here.
        let _exclusive = self.in_use.write().unwrap_or_else(|e| e.into_inner());
        let _building = self.builds();
        let mut live: HashSet<Digest> = HashSet::new();
        for (key, record) in store.images()? {
            live.insert(key.digest);
            live.extend(record.refs);
        }
        let mounted: HashSet<String> = self.mounts.list().into_iter().map(|m| m.manifest).collect();
        let keep = |name: &str| {
            let hex = name.strip_suffix(LINKS_SUFFIX).unwrap_or(name);
            match format!("sha256:{hex}").parse::<Digest>() {
                Ok(d) => live.contains(&d) || mounted.contains(&d.to_string()),
                // Not a tree, a links file or an export: leave it alone.
                Err(_) => true,
            }
        };
        let mut summary = PruneSummary {
            trees: remove_unkept(&self.dir.join("trees"), &keep)?,
            exports: remove_unkept(&self.dir.join("exports"), &keep)?,
            ..PruneSummary::default()
        };
        let objects = self.objects.path();
        let io = |op| FlatError::io(op, objects);
        for (fanout, kind) in list(self.objects.fd()).map_err(io("list"))? {
            if kind != FileType::Directory && kind != FileType::Unknown {
                continue;
            }
            let Ok(dir) = rustix::fs::openat(
                self.objects.fd(),
                &fanout[..],
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            for (name, _) in list(dir.as_fd()).map_err(io("list"))? {
                let st = statat(&dir, &name[..], AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io("stat an object in")(e.into()))?;
                if file_type(&st) != FileType::RegularFile || st.st_nlink != 1 {
                    continue;
                }
                unlinkat(&dir, &name[..], AtFlags::empty())
                    .map_err(|e| io("remove an object from")(e.into()))?;
                summary.objects += 1;
                summary.object_bytes += st.st_size as u64;
            }
        }
        if summary != PruneSummary::default() {
            tracing::info!(
                trees = summary.trees,
                exports = summary.exports,
                objects = summary.objects,
                object_bytes = summary.object_bytes,
                "flat directory pruned"
            );
        }
        Ok(summary)
    }
}

/// Removes what `keep` does not keep in `dir` (directories and files); returns how many
/// directories went.
fn remove_unkept(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<u64, FlatError> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FlatError::io("open", dir)(e.into()))?;
    let mut removed = 0;
    for (name, kind) in list(fd.as_fd()).map_err(FlatError::io("list", dir))? {
        let Ok(text) = std::str::from_utf8(&name) else {
            continue;
        };
        if keep(text) {
            continue;
        }
        let is_dir = match kind {
            FileType::Directory => true,
            FileType::Unknown => statat(&fd, &name[..], AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| file_type(&st) == FileType::Directory),
            _ => false,
        };
        if !is_dir {
            match unlinkat(&fd, &name[..], AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(FlatError::io("remove", &dir.join(text))(e.into())),
            }
            continue;
        }
        match remove_tree(fd.as_fd(), &name) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FlatError::io("remove", &dir.join(text))(e)),
        }
    }
    Ok(removed)
}
