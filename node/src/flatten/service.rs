//! The node's side of flattening, second half: `data_dir/flat/`, which holds the objects
//! every tree shares, one tree per image manifest (built once, reused by every mount
//! and export of it), the export cache and the mounts; and the operations behind
//! `shoal flatten` and `shoal export --flat` (mounts are in `mounts.rs`).
//!
//! ```text
//! flat/objects/ab/abcd…        read-only files, one per distinct content + metadata
//! flat/trees/<manifest hex>/   an image's flat tree (files hardlinked to objects)
//! flat/trees/<hex>.links.json  its hardlink groups (`links.rs`), which the tree
//!                              cannot tell apart from files sharing an object
//! flat/exports/<manifest hex>/ layer.tar.gz, config.json, manifest.json, export.json
//! flat/mounts/<id>/upper|work  each mount's own overlay upper and work dirs
//! flat/mounts.json             the mount table
//! ```
//!
//! Trees and exports appear whole or not at all (built beside their final name and
//! renamed into place, a tree's links file written before the tree is); what a crash
//! leaves half built (`*.partial-*`, object temp files) is removed when the node
//! starts. A tree without its links file, or an export of an older
//! [`EXPORT_VERSION`], was made by an older shoal and is made again. Builds of trees
//! and exports run one at a time: they are disk-bound, and two requests for one image
//! must build it once. Every blob an operation reads is leased for as long as it runs,
//! so GC cannot take it; what GC has let go is pruned from here in turn (`prune.rs`).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use shoal_protocol::Digest;

use super::archive::{self, ArchiveParts, ConfigError};
use super::export::ExportError;
use super::links::{self, LinkGroups};
use super::mounts::{MountError, Mounts};
use super::source::{self, SourceError, SourceImage};
use super::tree::{open_child_dir, remove_tree};
use super::wire::{EXPORT_VERSION, ExportSummary, FlatProgress, FlattenSummary};
use super::{FlattenError, FlattenLimits, FlattenReport, Objects, flatten};
use crate::gc::leases::Lease;
use crate::node::Node;
use crate::store::StoreError;

/// How often progress is sent.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// What a tree's links file adds to the tree's name.
pub(super) const LINKS_SUFFIX: &str = ".links.json";
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

/// An image's tree in `flat/trees`.
#[derive(Debug)]
pub(super) struct TreeRef {
    /// Where it is.
    pub(super) path: PathBuf,
    /// The image's hardlink groups.
    pub(super) links: LinkGroups,
    /// What the flatten did, if the tree was built now.
    pub(super) built: Option<FlattenReport>,
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

    /// The hardlink groups kept beside the tree at `tree`.
    fn links_path(tree: &Path) -> PathBuf {
        let mut name = tree.as_os_str().to_owned();
        name.push(LINKS_SUFFIX);
        PathBuf::from(name)
    }

    /// The hardlink groups of the tree at `tree`, if the tree is there with a links
    /// file this shoal reads.
    fn tree_links(tree: &Path) -> Option<LinkGroups> {
        if !tree.is_dir() {
            return None;
        }
        links::decode(&std::fs::read(Self::links_path(tree)).ok()?)
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

    /// The tree of `src`, built now if it is not there yet (or has no links file).
    pub(super) fn ensure_tree(
        &self,
        node: &Node,
        src: &SourceImage,
        reporter: &mut Reporter<'_>,
    ) -> Result<TreeRef, FlatError> {
        let path = self.tree_path(&src.manifest);
        let found = |links| TreeRef {
            path: path.clone(),
            links,
            built: None,
        };
        if let Some(links) = Self::tree_links(&path) {
            return Ok(found(links));
        }
        let _building = self.builds();
        if let Some(links) = Self::tree_links(&path) {
            return Ok(found(links));
        }
        let partial = self.partial(&path);
        let report = self.build(node, src, &partial, reporter)?;
        let placed = self.place_tree(src, &partial, &path, &report.link_groups);
        if placed.is_err() {
            // Best effort: a leftover is removed at the next start anyway.
            let _ = remove_path(&partial);
        }
        placed?;
        tracing::info!(image = %src.image, manifest = %src.manifest, files = report.files, objects_new = report.objects_new, link_groups = report.link_groups.len(), "flat tree built");
        Ok(TreeRef {
            path,
            links: report.link_groups.clone(),
            built: Some(report),
        })
    }

    /// Moves the tree just built at `partial` to `path`, its links file first. A tree
    /// already at `path` has no links file (an older shoal built it) and is replaced,
    /// unless a mount uses it as its lower dir: then it stays (the new tree has the
    /// same files; only the links were missing) and only the links file is written.
    fn place_tree(
        &self,
        src: &SourceImage,
        partial: &Path,
        path: &Path,
        groups: &[Vec<PathBuf>],
    ) -> Result<(), FlatError> {
        let links_path = Self::links_path(path);
        let manifest = src.manifest.to_string();
        let stale = path.symlink_metadata().is_ok();
        let mounted = stale && self.mounts.list().iter().any(|m| m.manifest == manifest);
        if stale && !mounted {
            remove_path(&links_path).map_err(FlatError::io("remove", &links_path))?;
            remove_path(path).map_err(FlatError::io("remove the older tree", path))?;
            tracing::info!(image = %src.image, manifest = %src.manifest, "a tree without hardlink groups (built by an older shoal) is built again");
        }
        let links_partial = self.partial(&links_path);
        std::fs::write(&links_partial, links::encode(groups))
            .map_err(FlatError::io("write", &links_partial))?;
        std::fs::rename(&links_partial, &links_path)
            .map_err(FlatError::io("rename into place", &links_path))?;
        if mounted {
            tracing::info!(image = %src.image, manifest = %src.manifest, "a mounted tree without hardlink groups (built by an older shoal) is kept; its groups are written beside it");
            return remove_path(partial).map_err(FlatError::io("remove", partial));
        }
        std::fs::rename(partial, path).map_err(FlatError::io("rename into place", path))
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
                let tree = self.ensure_tree(node, &src, reporter)?;
                let mut tree_summary = summary_of(&src, &tree.path, tree.built.is_none());
                if let Some(report) = &tree.built {
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

    /// Writes the export cache entry of `src` from its tree, replacing one an older
    /// shoal wrote.
    fn write_export(
        &self,
        src: &SourceImage,
        tree: &TreeRef,
        dir: &Path,
        reporter: &mut Reporter<'_>,
    ) -> Result<ExportSummary, FlatError> {
        if dir.symlink_metadata().is_ok() {
            // Moved aside first: a download may have the layer open, and keeps reading it.
            let old = self.partial(dir);
            std::fs::rename(dir, &old).map_err(FlatError::io("move aside", dir))?;
            remove_path(&old).map_err(FlatError::io("remove", &old))?;
            tracing::info!(image = %src.image, manifest = %src.manifest, "an export written by an older shoal is written again");
        }
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
                archive::write_layer(&tree.path, &tree.links, &mut out, max_depth, &mut |bytes| {
                    reporter.done(bytes)
                })
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
                version: EXPORT_VERSION,
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

/// A blob of a flat image in the export cache, found by its digest.
#[derive(Debug)]
pub enum Exported {
    /// The flat image's manifest.
    Manifest(Vec<u8>),
    /// Its config.
    Config(Vec<u8>),
    /// Its layer (gzip), in the cache at `path`.
    Layer {
        /// The blob's file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// The file in an export's directory naming the repositories (`host/repository`, one
/// per line) whose flat pulls it answered: the mirror finds an export's blobs only
/// through a repository it was served for, so a repository's access check covers them.
const SERVED_FOR: &str = "served-for";

impl Flat {
    /// Records that the export of source manifest `source` answers pulls of `repo`
    /// (`host/repository`).
    pub fn serve_for(&self, source: &Digest, repo: &str) -> io::Result<()> {
        let path = self.export_path(source).join(SERVED_FOR);
        let held = std::fs::read_to_string(&path).unwrap_or_default();
        if held.lines().any(|l| l == repo) {
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(format!("{repo}\n").as_bytes())
    }

    /// The manifest, config or layer of digest `digest` of an export served for `repo`
    /// (`host/repository`). The manifest and config are checked against the digest;
    /// the layer was hashed as it was written and renamed into place whole.
    pub fn exported(&self, digest: &Digest, repo: &str) -> Option<Exported> {
        let wanted = digest.to_string();
        let entries = std::fs::read_dir(self.dir.join("exports")).ok()?;
        for entry in entries.flatten() {
            let dir = entry.path();
            if dir.to_string_lossy().contains(".partial-") {
                continue;
            }
            let Some(summary) = read_summary(&dir) else {
                continue;
            };
            let hit = [&summary.manifest, &summary.config, &summary.layer].contains(&&wanted);
            let served = || {
                std::fs::read_to_string(dir.join(SERVED_FOR))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == repo)
            };
            if !hit || !served() {
                continue;
            }
            let small = |name: &str| {
                std::fs::read(dir.join(name))
                    .ok()
                    .filter(|bytes| Digest::of(bytes) == *digest)
            };
            return if summary.manifest == wanted {
                small("manifest.json").map(Exported::Manifest)
            } else if summary.config == wanted {
                small("config.json").map(Exported::Config)
            } else {
                Some(Exported::Layer {
                    path: dir.join("layer.tar.gz"),
                    size: summary.layer_size,
                })
            };
        }
        None
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

/// The cached summary of a finished export, if there is one of this shoal's
/// [`EXPORT_VERSION`].
fn read_summary(dir: &Path) -> Option<ExportSummary> {
    let bytes = std::fs::read(dir.join("export.json")).ok()?;
    serde_json::from_slice(&bytes)
        .ok()
        .filter(|s: &ExportSummary| s.version == EXPORT_VERSION)
}

/// Removes what is at `path`: a directory by descriptors (see `tree.rs`), anything
/// else unlinked. Nothing there is fine.
fn remove_path(path: &Path) -> io::Result<()> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (parent, name.as_bytes()),
        _ => return Err(io::ErrorKind::InvalidInput.into()),
    };
    let dir = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let removed = match open_child_dir(dir.as_fd(), name) {
        Ok(_) => remove_tree(dir.as_fd(), name),
        Err(_) => {
            rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()).map_err(Into::into)
        }
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
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
