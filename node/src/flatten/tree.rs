//! Race-free access to the tree being built: every path is walked from the root's
//! descriptor one component at a time with `openat(O_DIRECTORY | O_NOFOLLOW)`, so a
//! symlink anywhere on the way stops the walk instead of being followed, and every
//! change is made relative to the descriptor of the directory it happens in.
//!
//! The same care goes into removal: a subtree is removed by descriptors, never by
//! path, and each directory is made writable (0700) before it is emptied, so trees
//! holding mode-000 directories can be removed too.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, Stat, XattrFlags, flistxattr, fremovexattr, fsetxattr,
    lsetxattr, mkdirat, openat, statat, unlinkat,
};
use rustix::io::Errno;

use super::error::{Fail, IoContext};
use super::path::TreePath;

/// Mode of directories while the tree is built; their own modes are set at the end.
pub(crate) const BUILD_DIR_MODE: u32 = 0o700;
/// The xattr that a security module may put on every inode itself.
const SELINUX_LABEL: &[u8] = b"security.selinux";

/// Where a walk to a directory ended.
#[derive(Debug)]
pub(crate) enum Walk {
    /// The directory, open.
    Dir(OwnedFd),
    /// A component does not exist (and was not to be created).
    Missing,
    /// A component is a symlink.
    Symlink(TreePath),
    /// A component is something else that is not a directory.
    NotDir(TreePath),
}

/// The tree being built, held by its root directory's descriptor.
#[derive(Debug)]
pub(crate) struct Tree {
    root: OwnedFd,
}

impl Tree {
    /// Wraps the root directory.
    pub(crate) fn new(root: OwnedFd) -> Tree {
        Tree { root }
    }

    /// The root directory.
    pub(crate) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens the directory at `path` without following any symlink. With `create`,
    /// missing components are made (mode [`BUILD_DIR_MODE`]) and each made path is
    /// passed to it.
    pub(crate) fn open_dir(
        &self,
        path: &TreePath,
        mut create: Option<&mut dyn FnMut(&TreePath)>,
    ) -> Result<Walk, Fail> {
        let mut dir = self.root.try_clone().op("duplicate the root descriptor")?;
        let mut walked = TreePath::root();
        for name in path.components() {
            walked = walked.join(name);
            match open_child_dir(dir.as_fd(), name) {
                Ok(child) => dir = child,
                Err(Errno::NOENT) => {
                    let Some(made) = create.as_mut() else {
                        return Ok(Walk::Missing);
                    };
                    mkdirat(dir.as_fd(), name, Mode::from_raw_mode(BUILD_DIR_MODE))
                        .op("create a parent directory")?;
                    made(&walked);
                    dir = open_child_dir(dir.as_fd(), name).op("open a new directory")?;
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let is_link = lstat_at(dir.as_fd(), name)?
                        .is_some_and(|st| file_type(&st) == FileType::Symlink);
                    return Ok(if is_link {
                        Walk::Symlink(walked)
                    } else {
                        Walk::NotDir(walked)
                    });
                }
                Err(e) => return Err(Fail::Io("open a directory", e.into())),
            }
        }
        Ok(Walk::Dir(dir))
    }
}

/// Opens the directory `name` in `dir`, refusing a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The status of `name` in `dir` (not following a symlink), `None` if it is absent.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Stat>, Fail> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(Fail::Io("stat", e.into())),
    }
}

/// The file type in a status.
pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Removes `name` from `dir`: a directory with everything in it, anything else unlinked.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &[u8], st: &Stat) -> Result<(), Fail> {
    if file_type(st) == FileType::Directory {
        remove_tree(dir, name).op("remove a directory")
    } else {
        unlinkat(dir, name, AtFlags::empty()).op("remove an entry")
    }
}

/// Removes the directory `name` in `parent` and everything below it, by descriptors.
/// One descriptor is held per level, and the tree is never deeper than the depth limit.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let dir = open_child_dir(parent, name)?;
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(BUILD_DIR_MODE))?;
    for (child, kind) in list(dir.as_fd())? {
        let is_dir = match kind {
            FileType::Directory => true,
            FileType::Unknown => statat(&dir, &child[..], AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| file_type(&st) == FileType::Directory),
            _ => false,
        };
        if is_dir {
            remove_tree(dir.as_fd(), &child)?;
        } else {
            unlinkat(&dir, &child[..], AtFlags::empty())?;
        }
    }
    unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// The names in a directory (without `.` and `..`) and their types as the directory
/// reports them ([`FileType::Unknown`] where the filesystem does not say).
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut reader = Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), entry.file_type()));
        }
    }
    Ok(names)
}

/// Sets extended attributes on an open file or directory, first removing those it has
/// that `xattrs` does not (a directory that a layer re-declares takes its new set).
pub(crate) fn replace_xattrs(
    fd: BorrowedFd<'_>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), Fail> {
    let mut buf = vec![0u8; 64 << 10];
    let len = match flistxattr(fd, &mut buf[..]) {
        Ok(len) => len,
        Err(Errno::NOTSUP) => 0,
        Err(e) => return Err(Fail::Io("list extended attributes", e.into())),
    };
    for name in buf[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let keep = name == SELINUX_LABEL || xattrs.iter().any(|(n, _)| n == name);
        if !keep {
            fremovexattr(fd, name).op("remove an extended attribute")?;
        }
    }
    set_xattrs_fd(fd, xattrs)
}

/// Sets extended attributes on an open file or directory.
pub(crate) fn set_xattrs_fd(fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), Fail> {
    for (name, value) in xattrs {
        fsetxattr(fd, &name[..], value, XattrFlags::empty()).op("set an extended attribute")?;
    }
    Ok(())
}

/// Sets extended attributes on `name` in `dir` without opening it, for symlinks,
/// devices and FIFOs (opening a device or a FIFO has effects). The path goes through
/// `/proc/self/fd/N`, which names `dir` itself, and the `l` variant does not follow
/// `name`, so nothing but `dir/name` can be reached.
pub(crate) fn set_xattrs_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), Fail> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(OsStr::from_bytes(name));
    for (xname, value) in xattrs {
        lsetxattr(&path, &xname[..], value, XattrFlags::empty()).op("set an extended attribute")?;
    }
    Ok(())
}
