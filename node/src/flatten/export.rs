//! A flattened tree written back as one layer tar, **deterministically**: the same tree
//! gives the same bytes on every node, so the flat image's digests are the same
//! everywhere and a fleet can share it like any other image.
//!
//! # The format
//! - Entries in pre-order: a directory, then its children sorted by name bytes (so a
//!   parent always comes first). The root itself is not written: engines make it.
//!   Directory names end in `/`; nothing starts with `./`.
//! - ustar headers with fixed fields: zero-padded octal numbers, numeric owners only
//!   (empty user and group names), mode bits `0o7777`, mtime in seconds; no atime or
//!   ctime anywhere; device numbers only for devices.
//! - A PAX extended header (named `././@PaxHeader`, every field of its own header zero)
//!   only when an entry needs one: a name or link target that does not fit ustar, an
//!   owner or size past the octal fields, an mtime with nanoseconds or before 1970, or
//!   extended attributes (as `SCHILY.xattr.NAME`, sorted by name). Records come in a
//!   fixed order.
//! - Hardlink entries only within the image's own hardlink groups (`links.rs`): the
//!   first path of a group written is the file, each later one a hardlink to it. Every
//!   other path is written as what it is, even when the tree shares its inode with
//!   another: flattened trees share one object per distinct (content, metadata), and
//!   two identical files of an image are still two files (an engine that extracts
//!   into plain directories would otherwise let a write to one change the other).
//! - `security.selinux` is left out: a host labels files itself, so it would make the
//!   bytes depend on the host.
//! - Two zero blocks end the archive; no record padding.
//!
//! The tree is walked by descriptors (`O_NOFOLLOW`), like the flattener builds it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, Stat, fgetxattr, flistxattr, lgetxattr, llistxattr, major,
    minor, openat, readlinkat, statat,
};
use rustix::io::Errno;

use super::tree::{file_type, list, open_child_dir};
use super::ustar::{END, EntryHeader, header_bytes, padding};

/// The xattr a host's security module sets on its own.
const SELINUX_LABEL: &[u8] = b"security.selinux";
/// Bytes of file content between two progress calls.
const PROGRESS_BYTES: u64 = 1 << 20;

/// Extended attributes: (name, value), sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a tree could not be written as a tar.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the tree failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path in the tree.
        path: String,
        /// What the system said.
        source: io::Error,
    },
    /// Writing the tar failed.
    #[error("writing the layer failed: {0}")]
    Write(io::Error),
    /// The hardlink groups name a path that is not the same file as the group's first.
    #[error(
        "{path} is a hardlink of {first} in the image but not in the tree (trees are read-only; was it written to?)"
    )]
    NotLinked {
        /// The path in the tree.
        path: String,
        /// The first path of its group.
        first: String,
    },
    /// An entry has something no tar header can carry.
    #[error("{path}: {what} cannot be written in a layer tar")]
    Unrepresentable {
        /// The path in the tree.
        path: String,
        /// What.
        what: &'static str,
    },
    /// A file's size changed while it was read: the tree was written to.
    #[error("{path} changed while it was read (trees are read-only; was it written to?)")]
    Changed {
        /// The path in the tree.
        path: String,
    },
    /// The tree is deeper than the limit.
    #[error("{path} is deeper than {limit} components")]
    TooDeep {
        /// The path.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// The progress callback asked to stop.
    #[error("cancelled")]
    Cancelled,
}

/// What a tree's tar holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Entries written (PAX headers not counted).
    pub entries: u64,
    /// Regular files (their first path).
    pub files: u64,
    /// Bytes of regular file content.
    pub file_bytes: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hardlink entries (later paths of one of the image's hardlink groups).
    pub hardlinks: u64,
    /// Devices and FIFOs.
    pub specials: u64,
    /// Bytes of tar written.
    pub tar_bytes: u64,
}

/// Writes the tree at `root` as a layer tar to `out`, with hardlink entries within
/// `links` (the image's hardlink groups, as the flatten that built the tree reported
/// them) and nowhere else. `progress` is called with the tar bytes written so far,
/// after each entry and every MiB of a large file; breaking it stops the export.
/// `max_depth` bounds the walk (trees are built within it).
pub fn write_tree_tar(
    root: &Path,
    links: &[Vec<PathBuf>],
    out: &mut dyn Write,
    max_depth: usize,
    progress: &mut dyn FnMut(u64) -> ControlFlow<()>,
) -> Result<TarStats, ExportError> {
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ExportError::Io {
        op: "open the tree",
        path: root.display().to_string(),
        source: e.into(),
    })?;
    let mut walk = Walk {
        out,
        max_depth,
        progress,
        stats: TarStats::default(),
        groups: links
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                g.iter()
                    .map(move |p| (p.as_os_str().as_bytes().to_vec(), i))
            })
            .collect(),
        firsts: HashMap::new(),
        buf: vec![0u8; 256 << 10],
        last_progress: 0,
    };
    walk.dir(dir.as_fd(), &[], 0)?;
    walk.put(&END)?;
    Ok(walk.stats)
}

/// State of one export walk.
struct Walk<'a> {
    out: &'a mut dyn Write,
    max_depth: usize,
    progress: &'a mut dyn FnMut(u64) -> ControlFlow<()>,
    stats: TarStats,
    /// The hardlink group of each path that is in one.
    groups: HashMap<Vec<u8>, usize>,
    /// The first path written of each group, and its inode.
    firsts: HashMap<usize, (Vec<u8>, (u64, u64))>,
    buf: Vec<u8>,
    last_progress: u64,
}

impl Walk<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.out.write_all(bytes).map_err(ExportError::Write)?;
        self.stats.tar_bytes += bytes.len() as u64;
        Ok(())
    }

    fn tell(&mut self) -> Result<(), ExportError> {
        self.last_progress = self.stats.tar_bytes;
        match (self.progress)(self.stats.tar_bytes) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(ExportError::Cancelled),
        }
    }

    /// Writes the children of the directory `dir`, whose path is `prefix` (empty for
    /// the root, else ending in `/`).
    fn dir(&mut self, dir: BorrowedFd<'_>, prefix: &[u8], depth: usize) -> Result<(), ExportError> {
        let shown = |name: &[u8]| String::from_utf8_lossy(&[prefix, name].concat()).into_owned();
        let mut names = list(dir).map_err(|source| ExportError::Io {
            op: "list",
            path: shown(b""),
            source,
        })?;
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, _) in names {
            let path = [prefix, &name[..]].concat();
            if depth + 1 > self.max_depth {
                return Err(ExportError::TooDeep {
                    path: shown(&name),
                    limit: self.max_depth,
                });
            }
            let io = |op: &'static str| {
                let path = shown(&name);
                move |e: Errno| ExportError::Io {
                    op,
                    path,
                    source: e.into(),
                }
            };
            let st = statat(dir, &name[..], AtFlags::SYMLINK_NOFOLLOW).map_err(io("stat"))?;
            let kind = file_type(&st);
            if kind == FileType::Directory {
                let child = open_child_dir(dir, &name).map_err(io("open"))?;
                let xattrs = xattrs_fd(child.as_fd()).map_err(io("read the xattrs of"))?;
                let mut dir_path = path.clone();
                dir_path.push(b'/');
                self.entry(&st, &dir_path, b'5', 0, &[], &xattrs)?;
                self.stats.dirs += 1;
                self.dir(child.as_fd(), &dir_path, depth + 1)?;
                continue;
            }
            if let Some(&group) = self.groups.get(&path) {
                let inode = (st.st_dev, st.st_ino);
                if let Some((first, first_inode)) = self.firsts.get(&group).cloned() {
                    if first_inode != inode {
                        return Err(ExportError::NotLinked {
                            path: shown(&name),
                            first: String::from_utf8_lossy(&first).into_owned(),
                        });
                    }
                    self.entry(&st, &path, b'1', 0, &first, &[])?;
                    self.stats.hardlinks += 1;
                    continue;
                }
                self.firsts.insert(group, (path.clone(), inode));
            }
            match kind {
                FileType::RegularFile => self.file(dir, &name, &path, &st)?,
                FileType::Symlink => {
                    let target = readlinkat(dir, &name[..], Vec::new()).map_err(io("read"))?;
                    let xattrs = xattrs_at(dir, &name).map_err(io("read the xattrs of"))?;
                    self.entry(&st, &path, b'2', 0, target.as_bytes(), &xattrs)?;
                    self.stats.symlinks += 1;
                }
                FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                    let code = match kind {
                        FileType::CharacterDevice => b'3',
                        FileType::BlockDevice => b'4',
                        _ => b'6',
                    };
                    let xattrs = xattrs_at(dir, &name).map_err(io("read the xattrs of"))?;
                    self.entry(&st, &path, code, 0, &[], &xattrs)?;
                    self.stats.specials += 1;
                }
                _ => {
                    return Err(ExportError::Unrepresentable {
                        path: shown(&name),
                        what: "a socket",
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes one entry's header(s).
    fn entry(
        &mut self,
        st: &Stat,
        path: &[u8],
        kind: u8,
        size: u64,
        link: &[u8],
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), ExportError> {
        let dev = if matches!(kind, b'3' | b'4') {
            (u64::from(major(st.st_rdev)), u64::from(minor(st.st_rdev)))
        } else {
            (0, 0)
        };
        let header = EntryHeader {
            path,
            kind,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            link,
            dev,
            xattrs,
        };
        let bytes = header_bytes(&header).map_err(|what| ExportError::Unrepresentable {
            path: String::from_utf8_lossy(path).into_owned(),
            what,
        })?;
        self.put(&bytes)?;
        self.stats.entries += 1;
        self.tell()
    }

    /// Writes a regular file: header, content, padding.
    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        st: &Stat,
    ) -> Result<(), ExportError> {
        let shown = || String::from_utf8_lossy(path).into_owned();
        let fd: OwnedFd = openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ExportError::Io {
            op: "open",
            path: shown(),
            source: e.into(),
        })?;
        let xattrs = xattrs_fd(fd.as_fd()).map_err(|e| ExportError::Io {
            op: "read the xattrs of",
            path: shown(),
            source: e.into(),
        })?;
        let size = st.st_size as u64;
        self.entry(st, path, b'0', size, &[], &xattrs)?;
        let mut file = File::from(fd);
        let mut left = size;
        let mut buf = std::mem::take(&mut self.buf);
        let copied = (|| {
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = file
                    .read(&mut buf[..want])
                    .map_err(|source| ExportError::Io {
                        op: "read",
                        path: shown(),
                        source,
                    })?;
                if n == 0 {
                    return Err(ExportError::Changed { path: shown() });
                }
                self.put(&buf[..n])?;
                left -= n as u64;
                if self.stats.tar_bytes - self.last_progress >= PROGRESS_BYTES {
                    self.tell()?;
                }
            }
            Ok(())
        })();
        self.buf = buf;
        copied?;
        self.put(padding(size))?;
        self.stats.files += 1;
        self.stats.file_bytes += size;
        Ok(())
    }
}

/// Keeps what an export writes of a list of xattrs: sorted, the host's label left out.
fn keep_xattrs(
    names: &[u8],
    mut get: impl FnMut(&[u8]) -> Result<Vec<u8>, Errno>,
) -> Result<Xattrs, Errno> {
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name == SELINUX_LABEL {
            continue;
        }
        match get(name) {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed between the listing and the read: the tree is read-only, but an
            // xattr a host adds and drops on its own is no part of the image.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a list of xattr names into a buffer sized for the largest list Linux allows.
fn listed(list: impl FnOnce(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 64 << 10];
    match list(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(Errno::NOTSUP) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The xattrs of an open file or directory.
fn xattrs_fd(fd: BorrowedFd<'_>) -> Result<Xattrs, Errno> {
    let names = listed(|buf| flistxattr(fd, buf))?;
    keep_xattrs(&names, |name| {
        let mut value = vec![0u8; 64 << 10];
        let n = fgetxattr(fd, name, &mut value[..])?;
        value.truncate(n);
        Ok(value)
    })
}

/// The xattrs of `name` in `dir` (a symlink, device or FIFO, which are not opened),
/// through `/proc/self/fd/N/NAME` and the calls that do not follow `name`.
fn xattrs_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Xattrs, Errno> {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(OsStr::from_bytes(name));
    let names = listed(|buf| llistxattr(&path, buf))?;
    keep_xattrs(&names, |xname| {
        let mut value = vec![0u8; 64 << 10];
        let n = lgetxattr(&path, xname, &mut value[..])?;
        value.truncate(n);
        Ok(value)
    })
}
