//! The entry point of the core: [`flatten`] builds the tree in `OUT.partial-…` beside
//! the output, applies every layer into it and renames it into place, or removes it on
//! any error; and the bounds and the report that go with it.
//!
//! The core (this file, `apply.rs`, `stream.rs`, `tree.rs`, `objects.rs`, `meta.rs`,
//! `path.rs`, `links.rs`, `wire.rs` and `error.rs`) uses nothing of the node outside
//! them: the `flatten` fuzz target (`fuzz/fuzz_targets/flatten.rs`) compiles these
//! files on their own, so that fuzzing needs neither RocksDB nor libp2p.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags, RenameFlags, fstat, mkdirat, openat, renameat_with};
use rustix::io::Errno;

use super::apply::Flattener;
use super::links::LinkGroups;
use super::tree::{BUILD_DIR_MODE, open_child_dir, remove_tree};
use super::{FlattenError, Objects};

/// Bounds on what the layers of one flatten may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlattenLimits {
    /// Most tar entries over all layers [default: 4,000,000].
    pub max_entries: u64,
    /// Most tar bytes over all layers [default: 64 GiB, as for ingest].
    pub max_tar_bytes: u64,
    /// Most bytes of extended headers (PAX records, GNU long names and links) for one
    /// entry [default: 1 MiB].
    pub max_header_bytes: u64,
    /// Most components in an entry's path; also bounds the descriptors held while a
    /// tree is removed [default: 256].
    pub max_depth: usize,
}

impl Default for FlattenLimits {
    fn default() -> Self {
        FlattenLimits {
            max_entries: 4_000_000,
            max_tar_bytes: 64 << 30,
            max_header_bytes: 1 << 20,
            max_depth: 256,
        }
    }
}

/// What a flatten did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlattenReport {
    /// Layers applied.
    pub layers: usize,
    /// Tar entries read (every kind, whiteouts included).
    pub entries: u64,
    /// Tar bytes read.
    pub tar_bytes: u64,
    /// Regular file entries applied (a file overwritten by a later layer counts twice).
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
    /// AUFS metadata entries (`.wh..wh.*` other than the opaque marker) skipped.
    pub skipped: u64,
    /// Overlay-private xattrs (`trusted.overlay.*`, `user.overlay.*`) left out.
    pub xattrs_dropped: u64,
    /// Objects written by this flatten.
    pub objects_new: u64,
    /// Bytes of content in them.
    pub object_bytes_new: u64,
    /// Files linked to an object that was already there.
    pub objects_reused: u64,
    /// The image's hardlink groups: the paths of each file the image holds under
    /// several names (not those that merely share an object), see `links.rs`.
    pub link_groups: LinkGroups,
}

/// Applies `layers` (each an uncompressed layer tar stream, bottom layer first) into a
/// new directory `out`, which must not exist yet. On error nothing is left at `out`,
/// and nothing outside it changes except new objects in `objects`.
pub fn flatten<I, R>(
    layers: I,
    objects: &Objects,
    out: &Path,
    limits: &FlattenLimits,
) -> Result<FlattenReport, FlattenError>
where
    I: IntoIterator<Item = Result<R, FlattenError>>,
    R: Read,
{
    let name = out
        .file_name()
        .ok_or_else(|| FlattenError::BadOut(out.to_owned()))?;
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if out.symlink_metadata().is_ok() {
        return Err(FlattenError::OutExists(out.to_owned()));
    }
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |e: Errno| FlattenError::Io {
            op,
            path,
            source: e.into(),
        }
    };
    let parent_fd = openat(
        rustix::fs::CWD,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open the output's parent", parent))?;
    let parent_dev = fstat(&parent_fd).map_err(io("stat", parent))?.st_dev;
    let objects_dev = fstat(objects.fd())
        .map_err(io("stat", objects.path()))?
        .st_dev;
    if parent_dev != objects_dev {
        return Err(FlattenError::CrossDevice {
            objects: objects.path().to_owned(),
            out: out.to_owned(),
        });
    }
    let (partial, root) = make_partial(&parent_fd, name.as_bytes(), out)?;
    let built = build(layers, objects, root, out, limits).and_then(|report| {
        match renameat_with(
            &parent_fd,
            &partial[..],
            &parent_fd,
            name,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(report),
            Err(Errno::EXIST | Errno::NOTEMPTY) => Err(FlattenError::OutExists(out.to_owned())),
            Err(e) => Err(io("rename the finished tree to", out)(e)),
        }
    });
    if built.is_err() {
        // Best effort: the error being returned says more than a failed cleanup would.
        let _ = remove_tree(parent_fd.as_fd(), &partial);
    }
    built
}

/// Applies every layer into the open root and sets the directories' modes and mtimes.
fn build<I, R>(
    layers: I,
    objects: &Objects,
    root: OwnedFd,
    out: &Path,
    limits: &FlattenLimits,
) -> Result<FlattenReport, FlattenError>
where
    I: IntoIterator<Item = Result<R, FlattenError>>,
    R: Read,
{
    let mut flattener = Flattener::new(root, objects, limits, out);
    for (index, layer) in layers.into_iter().enumerate() {
        let mut reader = layer?;
        flattener.apply_layer(index, &mut reader)?;
    }
    flattener.finish()
}

/// Makes the empty `NAME.partial-XXXX` directory beside the output and opens it.
fn make_partial(
    parent: &OwnedFd,
    name: &[u8],
    out: &Path,
) -> Result<(Vec<u8>, OwnedFd), FlattenError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = blake3::hash(format!("{}-{nanos}-{n}", std::process::id()).as_bytes());
        let mut partial = name.to_vec();
        partial.extend_from_slice(b".partial-");
        partial.extend_from_slice(&tag.to_hex().as_bytes()[..8]);
        match mkdirat(parent, &partial[..], Mode::from_raw_mode(BUILD_DIR_MODE)) {
            Ok(()) => {}
            Err(Errno::EXIST) => continue,
            Err(e) => {
                return Err(FlattenError::Io {
                    op: "create the build directory beside",
                    path: PathBuf::from(out),
                    source: e.into(),
                });
            }
        }
        return match open_child_dir(parent.as_fd(), &partial) {
            Ok(root) => Ok((partial, root)),
            Err(e) => {
                let _ = remove_tree(parent.as_fd(), &partial);
                Err(FlattenError::Io {
                    op: "open the build directory beside",
                    path: PathBuf::from(out),
                    source: e.into(),
                })
            }
        };
    }
}
