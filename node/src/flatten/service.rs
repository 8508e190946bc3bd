//! The node's side of flattening, second half: `data_dir/flat/`, which holds the objects
//! every tree shares, one tree per image manifest (built once, reused by every mount
//! and export of it), the export cache and the mounts; and the operations behind
//! `shoal flatten` and `shoal export --flat` (mounts are in `mounts.rs`).
//!
//! ```text
//! flat/objects/ab/abcd…        read-only files, one per distinct content + metadata
//! flat/trees/<manifest hex>/   an image's flat tree (files hardlinked to objects)
//! flat/exports/<manifest hex>/ layer.tar.gz, config.json, manifest.json, export.json
//! flat/mounts/<id>/upper|work  each mount's own overlay upper and work dirs
//! flat/mounts.json             the mount table
//! ```
//!
//! Trees and exports appear whole or not at all (built beside their final name and
//! renamed into place); what a crash leaves half built (`*.partial-*`, object temp
//! files) is removed when the node starts. Builds of trees and exports run one at a
//! time: they are disk-bound, and two requests for one image must build it once. Every
//! blob an operation reads is leased for as long as it runs, so GC cannot take it; what
//! GC has let go is pruned from here in turn (`prune.rs`).

use std::cell::RefCell;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use shoal_protocol::Digest;

use super::archive::{self, ArchiveParts, ConfigError};
use super::export::ExportError;
use super::mounts::{MountError, Mounts};
use super::source::{self, SourceError, SourceImage};
use super::tree::{open_child_dir, remove_tree};
use super::wire::{ExportSummary, FlatProgress, FlattenSummary};
use super::{FlattenError, FlattenLimits, FlattenReport, Objects, flatten};
use crate::gc::leases::Lease;
use crate::node::Node;
use crate::store::StoreError;

/// How often progress is sent.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Mode of the flat directories: trees hold setuid files and objects.
const PRIVATE_DIR: u32 = 0o700;

/// Why a flat operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FlatError {
    /// The image or one of its parts is not usable from the store.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Applying the layers failed; `layer` names the layer's digest when the error
    /// came from one. (The caller names the image.)
    #[error("{source}{layer}")]
    Flatten {
        /// `" (layer N is sha256:…)"`, or empty.
        layer: String,
        /// What failed.
        source: FlattenError,
    },
    /// `--out` is on another filesystem than the node's data dir.
    #[error(
        "{out} is not on the filesystem of the node's data dir ({flat}): a flattened tree's files are hardlinks to the node's objects, so --out must be on that filesystem"
    )]
    CrossDevice {
        /// The output asked for.
        out: String,
        /// The node's flat directory.
        flat: String,
    },
    /// An output or target the node will not write to.
    #[error("{path}: {why}")]
    BadPath {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
    /// Writing the flat layer failed. (The caller names the image.)
    #[error("writing the flat layer: {source}")]
    Export {
        /// What failed.
        source: ExportError,
    },
    /// The source config does not make a flat config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A mount or umount failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file in the flat directory could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: String,
        /// What the system said.
        source: io::Error,
    },
    /// The client went away.
    #[error("cancelled: the client went away")]
    Cancelled,
}

impl FlatError {
    /// An I/O error on `path`.
    pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FlatError {
        let path = path.display().to_string();
        move |source| FlatError::Io { op, path, source }
    }
}

/// Progress of one operation, sent at most every [`PROGRESS_EVERY`].
pub struct Reporter<'a> {
    send: &'a mut dyn FnMut(&FlatProgress) -> ControlFlow<()>,
    now: FlatProgress,
    last: Option<Instant>,
    cancelled: bool,
}

impl<'a> Reporter<'a> {
    /// Reports through `send`; a `Break` from it cancels the operation.
    pub fn new(send: &'a mut dyn FnMut(&FlatProgress) -> ControlFlow<()>) -> Self {
        Reporter {
            send,
            now: FlatProgress::default(),
            last: None,
            cancelled: false,
        }
    }

    fn stage(&mut self, stage: &str, layers: u64, bytes_total: u64) {
        self.now = FlatProgress {
            stage: stage.to_owned(),
            layer: 0,
            layers,
            bytes_done: 0,
            bytes_total,
        };
        self.send_now();
    }

    fn layer(&mut self, layer: u64) {
        self.now.layer = layer;
        self.send_now();
    }

    fn send_now(&mut self) {
        self.last = Some(Instant::now());
        if (self.send)(&self.now).is_break() {
            self.cancelled = true;
        }
    }

    /// Sets the bytes done; `Break` once the client has gone.
    fn done(&mut self, bytes: u64) -> ControlFlow<()> {
        self.now.bytes_done = bytes;
        if self.last.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            self.send_now();
        }
        if self.cancelled {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// A layer's tar, counted into the progress as the flattener reads it.
struct Counted<'r, 'm, 'a> {
    inner: Box<dyn Read + Send>,
    reporter: &'r RefCell<&'m mut Reporter<'a>>,
}

impl Read for Counted<'_, '_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut reporter = self.reporter.borrow_mut();
        let done = reporter.now.bytes_done + n as u64;
        if reporter.done(done).is_break() {
            return Err(io::Error::other("cancelled: the client went away"));
        }
        Ok(n)
    }
}

/// The flat directory of a node.
#[derive(Debug)]
pub struct Flat {
    /// `data_dir/flat`, absolute.
    pub(super) dir: PathBuf,
    pub(super) objects: Objects,
    /// Held while a tree or an export is built.
    builds: Mutex<()>,
    /// Held (shared) by every operation that links objects or reads trees, and
    /// (exclusively) by a prune, which removes what nothing links.
    pub(super) in_use: RwLock<()>,
    /// The mount table.
    pub(super) mounts: Mounts,
    /// Numbers build directories.
    partials: AtomicU64,
}

impl Flat {
    /// Opens (creating) `data_dir/flat`, removes what a crash left half built, and
    /// mounts again what the mount table lists but is not mounted (after a reboot).
    pub fn open(data_dir: &Path) -> Result<Flat, FlatError> {
        let data_dir = std::fs::canonicalize(data_dir).map_err(FlatError::io("open", data_dir))?;
        let dir = data_dir.join("flat");
        for d in [dir.clone(), dir.join("trees"), dir.join("exports")] {
            private_dir(&d)?;
        }
        let objects = Objects::open(&dir.join("objects")).map_err(|e| FlatError::Io {
            op: "open the objects directory",
            path: dir.join("objects").display().to_string(),
            source: io::Error::other(e.to_string()),
        })?;
        remove_leftovers(&dir.join("trees"), |n| n.contains(".partial-"))?;
        remove_leftovers(&dir.join("exports"), |n| n.contains(".partial-"))?;
        remove_leftovers(objects.path(), |n| n.starts_with("tmp-"))?;
        let mounts = Mounts::load(&dir)?;
        let flat = Flat {
            dir,
            objects,
            builds: Mutex::new(()),
            in_use: RwLock::new(()),
            mounts,
            partials: AtomicU64::new(0),
        };
        flat.mounts.restore();
        Ok(flat)
    }

    /// The tree of image manifest `manifest`.
    pub fn tree_path(&self, manifest: &Digest) -> PathBuf {
        self.dir.join("trees").join(manifest.hex())
    }

    fn export_path(&self, manifest: &Digest) -> PathBuf {
        self.dir.join("exports").join(manifest.hex())
    }

    /// A fresh name beside `path` to build it under.
    fn partial(&self, path: &Path) -> PathBuf {
        let n = self.partials.fetch_add(1, Ordering::Relaxed);
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".partial-{}-{n}", std::process::id()));
        PathBuf::from(name)
    }

    pub(super) fn builds(&self) -> std::sync::MutexGuard<'_, ()> {
        // Guards no data: a panic in another build leaves nothing inconsistent here.
        self.builds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a prune from running while an operation links objects or reads a tree.
    pub(super) fn using(&self) -> RwLockReadGuard<'_, ()> {
        // Guards no data, as above.
        self.in_use.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the layers of `src` into `out` (which must not exist).
    fn build(
        &self,
        node: &Node,
        src: &SourceImage,
        out: &Path,
        reporter: &mut Reporter<'_>,
    ) -> Result<FlattenReport, FlatError> {
        let total = src
            .layers
            .iter()
            .map(|l| l.tar_size.unwrap_or(l.size))
            .sum();
        reporter.stage("layers", src.layers.len() as u64, total);
        let limits = FlattenLimits {
            max_tar_bytes: node.config.ingest.max_tar_size,
            ..FlattenLimits::default()
        };
        let shared = RefCell::new(reporter);
        let layers = src.layers.iter().enumerate().map(|(i, layer)| {
            shared.borrow_mut().layer(i as u64 + 1);
            source::open_layer(&node.store, layer)
                .map(|inner| Counted {
                    inner,
                    reporter: &shared,
                })
                .map_err(|e| FlattenError::Source(Box::new(e)))
        });
        let result = flatten(layers, &self.objects, out, &limits);
        let cancelled = shared.borrow().cancelled;
        result.map_err(|e| match e {
            _ if cancelled => FlatError::Cancelled,
            FlattenError::CrossDevice { out, .. } => FlatError::CrossDevice {
                out: out.display().to_string(),
                flat: self.dir.display().to_string(),
            },
            e => {
                let layer = layer_of(&e)
                    .and_then(|i| src.layers.get(i).map(|l| (i, l.digest)))
                    .map_or_else(String::new, |(i, d)| format!(" (layer {i} is {d})"));
                FlatError::Flatten { layer, source: e }
            }
        })
    }

    /// The tree of `src`, built now if it is not there yet; the report if it was built.
    pub(super) fn ensure_tree(
        &self,
        node: &Node,
        src: &SourceImage,
        reporter: &mut Reporter<'_>,
    ) -> Result<(PathBuf, Option<FlattenReport>), FlatError> {
        let path = self.tree_path(&src.manifest);
        if path.is_dir() {
            return Ok((path, None));
        }
        let _building = self.builds();
        if path.is_dir() {
            return Ok((path, None));
        }
        let report = self.build(node, src, &path, reporter)?;
        tracing::info!(image = %src.image, manifest = %src.manifest, files = report.files, objects_new = report.objects_new, "flat tree built");
        Ok((path, Some(report)))
    }

    /// `shoal flatten IMAGE --out DIR`: applies the image's layers straight into `out`
    /// (absolute, not existing, on the data dir's filesystem), its files hardlinked to
    /// the node's objects.
    pub fn flatten_to(
        &self,
        node: &Node,
        image: &str,
        platform: Option<&str>,
        out: &Path,
        reporter: &mut Reporter<'_>,
    ) -> Result<FlattenSummary, FlatError> {
        let started = Instant::now();
        let bad = |why: &str| FlatError::BadPath {
            path: out.display().to_string(),
            why: why.to_owned(),
        };
        if !out.is_absolute() {
            return Err(bad("--out must be an absolute path"));
        }
        if out.starts_with(&self.dir) {
            return Err(bad("--out is inside the node's flat directory"));
        }
        let src = source::load(node.store.as_ref(), &node.config, image, platform)?;
        let _leases = lease(node, &src);
        let _using = self.using();
        let report = self.build(node, &src, out, reporter)?;
        let mut summary = summary_of(&src, out, false);
        summary.record(&report);
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// `shoal export --flat`: builds (or reuses) the image's tree and its flat layer,
    /// config and manifest in the export cache. The archive is then streamed by
    /// [`Flat::archive`].
    pub fn export(
        &self,
        node: &Node,
        image: &str,
        platform: Option<&str>,
        reporter: &mut Reporter<'_>,
    ) -> Result<ExportSummary, FlatError> {
        let started = Instant::now();
        let src = source::load(node.store.as_ref(), &node.config, image, platform)?;
        let _leases = lease(node, &src);
        let _using = self.using();
        let dir = self.export_path(&src.manifest);
        let (mut summary, tree_summary) = match read_summary(&dir) {
            Some(s) => (
                ExportSummary { reused: true, ..s },
                summary_of(&src, &self.tree_path(&src.manifest), true),
            ),
            None => {
                let (tree, built) = self.ensure_tree(node, &src, reporter)?;
                let mut tree_summary = summary_of(&src, &tree, built.is_none());
                if let Some(report) = &built {
                    tree_summary.record(report);
                }
                let _building = self.builds();
                let summary = match read_summary(&dir) {
                    Some(s) => ExportSummary { reused: true, ..s },
                    None => self.write_export(&src, &tree, &dir, reporter)?,
                };
                (summary, tree_summary)
            }
        };
        let parts = self.archive_parts(&src.manifest)?;
        summary.image = image.to_owned();
        summary.name = src.name.clone();
        summary.archive_size = archive::archive_size(&parts, src.name.as_deref());
        summary.tree = tree_summary;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Writes the export cache entry of `src` from its tree.
    fn write_export(
        &self,
        src: &SourceImage,
        tree: &Path,
        dir: &Path,
        reporter: &mut Reporter<'_>,
    ) -> Result<ExportSummary, FlatError> {
        let partial = self.partial(dir);
        let result = (|| {
            private_dir(&partial)?;
            let layer_path = partial.join("layer.tar.gz");
            let file =
                std::fs::File::create(&layer_path).map_err(FlatError::io("create", &layer_path))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            reporter.stage("layer blob", src.layers.len() as u64, 0);
            let max_depth = FlattenLimits::default().max_depth;
            let layer =
                archive::write_layer(tree, &mut out, max_depth, &mut |bytes| reporter.done(bytes))
                    .map_err(|source| match source {
                        ExportError::Cancelled => FlatError::Cancelled,
                        source => FlatError::Export { source },
                    })?;
            let file = out
                .into_inner()
                .map_err(|e| FlatError::io("write", &layer_path)(e.into_error()))?;
            file.sync_all()
                .map_err(FlatError::io("sync", &layer_path))?;
            let config = archive::flat_config(&src.config, &layer.diff_id, &src.manifest)?;
            let manifest = archive::flat_manifest(&config, &layer);
            let summary = ExportSummary {
                source_manifest: src.manifest.to_string(),
                manifest: Digest::of(&manifest).to_string(),
                config: Digest::of(&config).to_string(),
                layer: layer.digest.to_string(),
                layer_size: layer.size,
                diff_id: layer.diff_id.to_string(),
                tar_bytes: layer.stats.tar_bytes,
                entries: layer.stats.entries,
                files: layer.stats.files,
                hardlinks: layer.stats.hardlinks,
                ..ExportSummary::default()
            };
            // The summary is only JSON of plain values: it serialises.
            let record = serde_json::to_vec_pretty(&summary).unwrap_or_default();
            for (name, bytes) in [
                ("config.json", &config),
                ("manifest.json", &manifest),
                ("export.json", &record),
            ] {
                let path = partial.join(name);
                std::fs::write(&path, bytes).map_err(FlatError::io("write", &path))?;
            }
            std::fs::rename(&partial, dir).map_err(FlatError::io("rename into place", dir))?;
            tracing::info!(image = %src.image, layer = %layer.digest, size = layer.size, "flat layer exported");
            Ok(summary)
        })();
        if result.is_err() {
            // Best effort: a leftover is removed at the next start anyway.
            let _ = std::fs::remove_dir_all(&partial);
        }
        result
    }

    /// The parts of the exported image of source manifest `manifest`, as the export
    /// cache holds them.
    pub fn archive_parts(&self, manifest: &Digest) -> Result<ArchiveParts, FlatError> {
        let dir = self.export_path(manifest);
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(FlatError::io("read", &path))
        };
        let config = read("config.json")?;
        let manifest_bytes = read("manifest.json")?;
        let damaged = |why: &str| FlatError::Io {
            op: "use the export",
            path: dir.display().to_string(),
            source: io::Error::other(why.to_owned()),
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&manifest_bytes).map_err(|_| damaged("manifest.json"))?;
        let layer = &doc["layers"][0];
        let digest: Digest = layer["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| damaged("no layer digest"))?;
        let size = layer["size"]
            .as_u64()
            .ok_or_else(|| damaged("no layer size"))?;
        Ok(ArchiveParts {
            config,
            manifest: manifest_bytes,
            layer: digest,
            layer_size: size,
        })
    }

    /// The export of `manifest` as an archive: its parts and the open layer blob.
    pub fn archive(&self, manifest: &Digest) -> Result<(ArchiveParts, std::fs::File), FlatError> {
        let parts = self.archive_parts(manifest)?;
        let path = self.export_path(manifest).join("layer.tar.gz");
        let file = std::fs::File::open(&path).map_err(FlatError::io("open", &path))?;
        Ok((parts, file))
    }
}

/// Leases on every blob `src` reads, held while the operation runs.
pub(super) fn lease(node: &Node, src: &SourceImage) -> Vec<Lease> {
    src.digests()
        .into_iter()
        .map(|d| node.blobs.leases().take(d))
        .collect()
}

/// A summary naming the image and the tree, figures left at zero.
pub(super) fn summary_of(src: &SourceImage, path: &Path, reused: bool) -> FlattenSummary {
    FlattenSummary {
        image: src.image.clone(),
        manifest: src.manifest.to_string(),
        platform: src.platform.clone(),
        path: path.display().to_string(),
        reused,
        ..FlattenSummary::default()
    }
}

/// The layer (counted from 0) a flatten error came from, if any.
fn layer_of(e: &FlattenError) -> Option<usize> {
    match e {
        FlattenError::Entry { layer, .. }
        | FlattenError::Apply { layer, .. }
        | FlattenError::Read { layer, .. } => Some(*layer),
        _ => None,
    }
}

/// The cached summary of a finished export, if there is one.
fn read_summary(dir: &Path) -> Option<ExportSummary> {
    let bytes = std::fs::read(dir.join("export.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Creates `dir` if missing and makes it private.
pub(super) fn private_dir(dir: &Path) -> Result<(), FlatError> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(FlatError::io("create", dir)(e)),
    }
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FlatError::io("open", dir)(e.into()))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(PRIVATE_DIR))
        .map_err(|e| FlatError::io("make private", dir)(e.into()))
}

/// Removes the entries of `dir` whose names `matches` (trees by descriptors).
fn remove_leftovers(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<(), FlatError> {
    let entries = std::fs::read_dir(dir).map_err(FlatError::io("list", dir))?;
    let dir_fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FlatError::io("open", dir)(e.into()))?;
    for entry in entries {
        let entry = entry.map_err(FlatError::io("list", dir))?;
        let name = entry.file_name();
        let Some(text) = name.to_str() else { continue };
        if !matches(text) {
            continue;
        }
        let path = entry.path();
        let removed = if open_child_dir(dir_fd.as_fd(), text.as_bytes()).is_ok() {
            remove_tree(dir_fd.as_fd(), text.as_bytes())
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a leftover of an interrupted build")
            }
            Err(e) => tracing::warn!(path = %path.display(), "cannot remove a leftover: {e}"),
        }
    }
    Ok(())
}
