//! What `shoal flatten`, `mount`, `umount`, `mounts` and `export --flat` send between
//! node and CLI (job progress and reports, as JSON), what a prune reports, the mount
//! table's state file, and the hardlink groups kept beside a tree.
//! Kept apart from the domain types ([`super::FlattenReport`], [`super::TarStats`]) so
//! that these formats change only on purpose; new fields get `#[serde(default)]`.

use serde::{Deserialize, Serialize};

use super::FlattenReport;

/// How far a flatten, mount or export is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatProgress {
    /// `layers` while layers are applied, `layer blob` while an export writes its layer.
    pub stage: String,
    /// The layer being applied, counted from 1 (0 before the first).
    pub layer: u64,
    /// Layers in the image.
    pub layers: u64,
    /// Bytes done in this stage (tar bytes read, or written for an export).
    pub bytes_done: u64,
    /// Bytes the stage is expected to take (for layers without a recipe yet, their
    /// compressed size stands in); 0 if unknown.
    pub bytes_total: u64,
}

/// What one flatten did, as `shoal flatten` reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlattenSummary {
    /// The image as asked for.
    pub image: String,
    /// The image manifest flattened (the platform's, for an index).
    pub manifest: String,
    /// The platform chosen from an index, if any.
    pub platform: Option<String>,
    /// Where the tree is.
    pub path: String,
    /// Whether an existing tree was used and nothing was applied (mount, export).
    pub reused: bool,
    /// Layers applied.
    pub layers: u64,
    /// Tar entries read.
    pub entries: u64,
    /// Tar bytes read.
    pub tar_bytes: u64,
    /// Regular file entries applied.
    pub files: u64,
    /// Bytes of regular file content applied.
    pub file_bytes: u64,
    /// Directory entries applied.
    pub dirs: u64,
    /// Symlinks made.
    pub symlinks: u64,
    /// Hardlink entries applied.
    pub hardlinks: u64,
    /// Devices and FIFOs made.
    pub specials: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Objects written.
    pub objects_new: u64,
    /// Bytes of content in them.
    pub object_bytes_new: u64,
    /// Files linked to an object that was already there.
    pub objects_reused: u64,
    /// Seconds it took.
    pub seconds: f64,
}

impl FlattenSummary {
    /// Copies a flatten's figures in.
    pub fn record(&mut self, r: &FlattenReport) {
        self.layers = r.layers as u64;
        self.entries = r.entries;
        self.tar_bytes = r.tar_bytes;
        self.files = r.files;
        self.file_bytes = r.file_bytes;
        self.dirs = r.dirs;
        self.symlinks = r.symlinks;
        self.hardlinks = r.hardlinks;
        self.specials = r.specials;
        self.whiteouts = r.whiteouts;
        self.objects_new = r.objects_new;
        self.object_bytes_new = r.object_bytes_new;
        self.objects_reused = r.objects_reused;
    }
}

/// A flat mount: one line of the mount table, and the answer of `mount`/`umount`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Where the overlay is mounted (absolute, symlinks resolved).
    pub target: String,
    /// The image as asked for.
    pub image: String,
    /// The pinned image's upstream registry (`host[:port]`).
    pub upstream: String,
    /// Its repository.
    pub repo: String,
    /// The manifest digest the pin is on (an index, for a multi-platform image).
    pub digest: String,
    /// The pin's name: `mount:<target>`.
    pub pin: String,
    /// The image manifest whose tree is the lower dir.
    pub manifest: String,
    /// The platform chosen from an index, if any.
    pub platform: Option<String>,
    /// The overlay's lower dir (the flat tree, shared by every mount of the image).
    pub lower: String,
    /// The overlay's upper dir (this mount's writes).
    pub upper: String,
    /// The overlay's work dir.
    pub work: String,
    /// When it was mounted (seconds since the epoch).
    pub created: u64,
    /// Whether the overlay is mounted at `target` now (filled in when listed).
    #[serde(default)]
    pub mounted: bool,
}

/// The mount table's state file (`flat/mounts.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountTable {
    /// Format version: 1.
    pub version: u32,
    /// The mounts.
    pub mounts: Vec<MountRecord>,
}

/// What `shoal mount` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MountSummary {
    /// The mount.
    pub mount: MountRecord,
    /// The tree under it: built now, or reused.
    pub tree: FlattenSummary,
}

/// What `shoal export --flat` made on the node (the archive itself is fetched next).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportSummary {
    /// The image as asked for.
    pub image: String,
    /// The source image manifest (the platform's, for an index).
    pub source_manifest: String,
    /// The name the archive gives the image (`registry/repository:tag`), if any.
    pub name: Option<String>,
    /// The flat image's manifest digest.
    pub manifest: String,
    /// Its config digest.
    pub config: String,
    /// Its one layer's digest (gzip).
    pub layer: String,
    /// The layer's compressed size.
    pub layer_size: u64,
    /// The layer's diff_id (sha256 of its tar).
    pub diff_id: String,
    /// The layer's tar size.
    pub tar_bytes: u64,
    /// Entries in the tar.
    pub entries: u64,
    /// Regular files in it (hardlinks not counted).
    pub files: u64,
    /// Hardlink entries.
    pub hardlinks: u64,
    /// Bytes of the archive.
    pub archive_size: u64,
    /// Whether the layer was already made by an earlier export.
    pub reused: bool,
    /// The flat layer's format ([`EXPORT_VERSION`] for one this shoal wrote; an
    /// export of another is written again).
    #[serde(default)]
    pub version: u32,
    /// The tree it was made from.
    pub tree: FlattenSummary,
    /// Seconds it took.
    pub seconds: f64,
}

/// Version of the flat layer an export writes: 1 since hardlink entries are only the
/// image's own (before, identical files came out hardlinked too).
pub const EXPORT_VERSION: u32 = 1;

/// What a prune of the flat directory removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneSummary {
    /// Trees of images the store no longer holds.
    pub trees: u64,
    /// Exports of such images.
    pub exports: u64,
    /// Objects nothing linked any more.
    pub objects: u64,
    /// Bytes of content in them.
    pub object_bytes: u64,
}

/// Version of [`LinksFile`] this shoal writes and reads.
pub const LINKS_VERSION: u32 = 1;

/// A tree's hardlink groups (`flat/trees/<hex>.links.json`): the paths of each file
/// the image holds under several names. A tree without one (or with another version)
/// was built by an older shoal and is built again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinksFile {
    /// Format version: [`LINKS_VERSION`].
    pub version: u32,
    /// The groups, each in the order an export writes its paths.
    pub groups: Vec<Vec<WirePath>>,
}

/// A path in a tree: a string when it is UTF-8, else its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WirePath {
    /// A UTF-8 path.
    Text(String),
    /// Any other path, byte by byte.
    Bytes(Vec<u8>),
}

impl WirePath {
    /// The path of these bytes.
    pub fn from_bytes(bytes: &[u8]) -> WirePath {
        match std::str::from_utf8(bytes) {
            Ok(text) => WirePath::Text(text.to_owned()),
            Err(_) => WirePath::Bytes(bytes.to_vec()),
        }
    }

    /// Its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            WirePath::Text(text) => text.into_bytes(),
            WirePath::Bytes(bytes) => bytes,
        }
    }
}
