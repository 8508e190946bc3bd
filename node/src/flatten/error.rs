//! Why a flatten failed. An image at fault ([`Problem`]: a hostile name, a malformed
//! header, a limit passed) is kept apart from local failure (a syscall that failed, the
//! caller's layer source), and every error that comes from an entry names the layer
//! (counted from 0, the bottom one) and the entry as the tar spells it.

use std::io;
use std::path::PathBuf;

/// A flatten that did not produce a tree. Nothing is left at the output path.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// The output path exists already.
    #[error("{0} already exists; flatten writes only to a path that does not")]
    OutExists(PathBuf),
    /// The output path has no file name to create.
    #[error("{0} is not a path flatten can create")]
    BadOut(PathBuf),
    /// An entry is malformed, hostile or past a limit: the image is at fault.
    #[error("layer {layer}, entry {entry}: {problem}")]
    Entry {
        /// The layer, counted from 0 (the bottom one).
        layer: usize,
        /// The entry's name as the tar spells it, or where in the stream it failed.
        entry: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A filesystem operation failed while an entry was applied: a local failure.
    #[error("layer {layer}, entry {entry}: {op} failed: {source}")]
    Apply {
        /// The layer, counted from 0.
        layer: usize,
        /// The entry's name as the tar spells it.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// Reading a layer's stream failed (the reader the caller gave returned an error).
    #[error("layer {layer}, entry {entry}: reading the layer failed: {source}")]
    Read {
        /// The layer, counted from 0.
        layer: usize,
        /// The entry being read.
        entry: String,
        /// What the reader said.
        source: io::Error,
    },
    /// The objects directory and the output are on different filesystems, so objects
    /// cannot be hardlinked into the tree.
    #[error(
        "objects in {objects} cannot be hardlinked into {out}: they are on different filesystems"
    )]
    CrossDevice {
        /// The objects directory.
        objects: PathBuf,
        /// The output path.
        out: PathBuf,
    },
    /// The caller's layer source failed before giving a reader.
    #[error("layer source failed: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// Setting up or finishing the output or the objects directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// What is wrong with an entry of an image.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The name climbs out of the root with `..`.
    #[error("the name leaves the root with `..`")]
    EscapesRoot,
    /// The name or a link target holds a NUL byte.
    #[error("the name holds a NUL byte")]
    NulByte,
    /// The name is empty (or only `/` and `.`) where the entry type needs a name.
    #[error("the name is empty after normalisation")]
    EmptyName,
    /// The name has more components than the limit allows.
    #[error("the name has more than {limit} components")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A component on the way to the entry is a symlink; flatten never goes through one.
    #[error("{at} is a symlink; entries are never written through one")]
    ThroughSymlink {
        /// The component's path.
        at: String,
    },
    /// A component on the way to the entry exists and is not a directory.
    #[error("{at} is not a directory")]
    NotADirectory {
        /// The component's path.
        at: String,
    },
    /// A whiteout names nothing, `.` or `..`.
    #[error("the whiteout names nothing it could delete")]
    BadWhiteout,
    /// A directory on the entry's path is named like a whiteout (`.wh.NAME`).
    #[error("a directory on its path is named like a whiteout (.wh.*), which no layer can hold")]
    WhiteoutDir,
    /// A hardlink or symlink entry has no target.
    #[error("the link has no target")]
    NoLinkTarget,
    /// A hardlink's target leaves the root.
    #[error("the hardlink target {target} leaves the root")]
    LinkEscapes {
        /// The target as the tar spells it.
        target: String,
    },
    /// A hardlink's target is not in the tree (yet).
    #[error("the hardlink target {target} does not exist")]
    LinkTargetMissing {
        /// The normalised target.
        target: String,
    },
    /// A hardlink's target is a directory.
    #[error("the hardlink target {target} is a directory")]
    LinkTargetDirectory {
        /// The normalised target.
        target: String,
    },
    /// A hardlink's target is reached through a symlink.
    #[error("the hardlink target {target} is reached through the symlink {at}")]
    LinkThroughSymlink {
        /// The normalised target.
        target: String,
        /// The symlink on the way.
        at: String,
    },
    /// The entry type is not one a layer may hold (GNU sparse files and volume headers
    /// included).
    #[error("entry type {kind:?} is not supported in a layer")]
    UnsupportedType {
        /// The type byte.
        kind: char,
    },
    /// A device entry without device numbers.
    #[error("the device has no major/minor numbers")]
    NoDeviceNumbers,
    /// A uid or gid that no inode can have.
    #[error("owner id {id} is out of range")]
    BadOwner {
        /// The id.
        id: u64,
    },
    /// A header field does not decode.
    #[error("the header field {field} is malformed")]
    BadField {
        /// Which field.
        field: &'static str,
    },
    /// The header block's checksum is wrong: not a tar, or a corrupt one.
    #[error("the header checksum does not match; this is not an intact tar")]
    BadChecksum,
    /// A PAX extended header does not parse.
    #[error("malformed PAX record: {detail}")]
    BadPax {
        /// What is wrong.
        detail: &'static str,
    },
    /// An extended attribute's name is empty or holds a NUL byte.
    #[error("the extended attribute name {name:?} is unusable")]
    BadXattr {
        /// The name, lossily.
        name: String,
    },
    /// The stream ends inside an entry.
    #[error("the tar is truncated: {expected} bytes announced, {got} present")]
    Truncated {
        /// Bytes the header announced (512 for a header block).
        expected: u64,
        /// Bytes present before the stream ended.
        got: u64,
    },
    /// The stream ends where a header should be, without the end-of-archive blocks.
    #[error("the tar ends without its end-of-archive blocks (truncated)")]
    MissingEnd,
    /// More entries than the limit, over all layers.
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// More tar bytes than the limit, over all layers.
    #[error("the layers hold more than {limit} tar bytes")]
    TarTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The extended headers (PAX records, GNU long names) of one entry pass the limit.
    #[error("the entry's extended headers pass {limit} bytes")]
    HeadersTooLarge {
        /// The limit.
        limit: u64,
    },
}

/// How internal steps fail; the layer loop adds the layer and the entry.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The image is at fault.
    Bad(Problem),
    /// A local filesystem operation failed.
    Io(&'static str, io::Error),
    /// The layer reader failed.
    Read(io::Error),
    /// Objects and tree are on different filesystems.
    CrossDevice,
}

impl From<Problem> for Fail {
    fn from(problem: Problem) -> Self {
        Fail::Bad(problem)
    }
}

/// Attaches an operation name to an I/O result.
pub(crate) trait IoContext<T> {
    /// Maps the error to [`Fail::Io`] with `op`.
    fn op(self, op: &'static str) -> Result<T, Fail>;
}

impl<T, E: Into<io::Error>> IoContext<T> for Result<T, E> {
    fn op(self, op: &'static str) -> Result<T, Fail> {
        self.map_err(|e| Fail::Io(op, e.into()))
    }
}
