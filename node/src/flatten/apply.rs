//! Applying layers, entry by entry, with the OCI rules (image-spec `layer.md`).
//!
//! # Whiteouts within a layer
//! A whiteout, opaque or not, applies only to what *lower* layers put in the tree, and
//! an opaque marker applies before the other entries of its layer in that directory,
//! wherever it stands in the tar. A tar is a stream, so the layer cannot be read twice;
//! instead every path a layer writes (and each ancestor of it) is remembered, and a
//! whiteout or opaque marker removes only what this layer did not write: a path the
//! layer did not touch goes whole; a directory it did touch is kept and the same rule
//! is applied to its children. Seen from the result, that is the same as applying the
//! markers first.
//!
//! # Replacing
//! An entry over an existing path removes what is there first, except that a directory
//! over a directory keeps the children and takes the new metadata. A hardlink is made
//! under a temporary name before the old path is cleared, so an entry can never remove
//! its own target.
//!
//! # Directories last
//! Directories are built with mode 0700 and take their own modes and mtimes at the end,
//! deepest first, after every child is written; a mode-000 directory is thus still
//! writable while the tree is built, and no write disturbs an mtime already set. A
//! directory no entry describes (a missing parent) takes mode 0755 and mtime 0, so a
//! tree depends only on its image, never on when it was built.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Mode, chmodat, chownat, fchmod, fchown, futimens, linkat, makedev, mkdirat,
    mknodat, renameat, symlinkat, unlinkat, utimensat,
};
use rustix::fs::{Gid, Uid};
use rustix::io::Errno;
use tar::EntryType;

use super::error::{Fail, FlattenError, IoContext, Problem};
use super::links::Identities;
use super::meta::{Meta, Mtime};
use super::objects::{Linked, Objects};
use super::path::{NameKind, TreePath, classify};
use super::stream::{RawEntry, StreamLimits, TarStream};
use super::tree::{
    self, BUILD_DIR_MODE, Tree, Walk, lstat_at, open_child_dir, remove_at, replace_xattrs,
    set_xattrs_at,
};
use super::{FlattenLimits, FlattenReport};

/// Mode of a directory no entry describes (one made as a missing parent).
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Mtime of such a directory: the epoch, not the time of the build, so that trees of
/// one image are the same on every node (an export of them is the same bytes).
const IMPLICIT_DIR_MTIME: Mtime = Mtime { secs: 0, nanos: 0 };

/// What a directory takes at the end.
#[derive(Clone, Copy, Debug)]
struct DirFinal {
    mode: u32,
    /// `None` for a directory no entry describes ([`IMPLICIT_DIR_MTIME`]).
    mtime: Option<Mtime>,
}

/// Paths written by the layer being applied (and their ancestors).
type Touched = HashSet<Vec<u8>>;

/// What a new entry puts over an existing path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Over {
    /// A directory: an existing directory stays, with its children.
    Directory,
    /// Anything else: whatever exists goes.
    NonDirectory,
}

/// A node made by name rather than through a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    /// A symlink: it has no mode of its own to set.
    Symlink,
    /// A device or FIFO.
    Special,
}

/// Builds one tree from layers applied in order.
pub(crate) struct Flattener<'a> {
    tree: Tree,
    objects: &'a Objects,
    limits: &'a FlattenLimits,
    out: &'a Path,
    report: FlattenReport,
    /// Every directory in the tree, by path, with what it takes at the end.
    dirs: BTreeMap<Vec<u8>, DirFinal>,
    /// Which paths the image hardlinks together (see `links.rs`).
    ids: Identities,
    /// Numbers temporary hardlink names.
    temps: u64,
    /// The directory the last entry was written in: tars list a directory's entries
    /// together, so this saves walking from the root for most of them. Dropped on every
    /// removal, the only way a directory it names could go.
    last_parent: Option<(TreePath, OwnedFd)>,
}

impl<'a> Flattener<'a> {
    /// Starts on an empty root directory.
    pub(crate) fn new(
        root: OwnedFd,
        objects: &'a Objects,
        limits: &'a FlattenLimits,
        out: &'a Path,
    ) -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(
            Vec::new(),
            DirFinal {
                mode: IMPLICIT_DIR_MODE,
                mtime: None,
            },
        );
        Flattener {
            tree: Tree::new(root),
            objects,
            limits,
            out,
            report: FlattenReport::default(),
            dirs,
            ids: Identities::default(),
            temps: 0,
            last_parent: None,
        }
    }

    /// Applies one layer's tar stream.
    pub(crate) fn apply_layer(
        &mut self,
        layer: usize,
        reader: &mut dyn Read,
    ) -> Result<(), FlattenError> {
        let limits = StreamLimits {
            max_total: self.limits.max_tar_bytes,
            max_header_bytes: self.limits.max_header_bytes,
        };
        let mut stream = TarStream::new(reader, self.report.tar_bytes, limits);
        let mut touched = Touched::new();
        let mut last: Option<String> = None;
        loop {
            let entry = match stream.next_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(fail) => {
                    let at = match &last {
                        Some(name) => format!("after {name}"),
                        None => "at the start of the layer".to_owned(),
                    };
                    return Err(self.wrap(layer, at, fail));
                }
            };
            let name = String::from_utf8_lossy(&entry.path).into_owned();
            self.report.entries += 1;
            let applied = if self.report.entries > self.limits.max_entries {
                Err(Problem::TooManyEntries {
                    limit: self.limits.max_entries,
                }
                .into())
            } else {
                self.apply_entry(&mut stream, &entry, &mut touched)
            };
            self.report.tar_bytes = stream.total();
            applied.map_err(|fail| self.wrap(layer, name.clone(), fail))?;
            last = Some(name);
        }
        self.report.tar_bytes = stream.total();
        self.report.layers += 1;
        Ok(())
    }

    /// Sets every directory's mode and mtime, deepest first, and returns the report.
    pub(crate) fn finish(mut self) -> Result<FlattenReport, FlattenError> {
        self.report.link_groups = std::mem::take(&mut self.ids).groups();
        let mut dirs: Vec<(TreePath, DirFinal)> = self
            .dirs
            .into_iter()
            .map(|(path, fin)| (TreePath::from_normalised(path), fin))
            .collect();
        dirs.sort_by_key(|(path, _)| Reverse(path.depth()));
        for (path, fin) in dirs {
            let io = |op: &'static str, source: std::io::Error| FlattenError::Io {
                op,
                path: path.display().into(),
                source,
            };
            let fd = match self.tree.open_dir(&path, None) {
                Ok(Walk::Dir(fd)) => fd,
                // Not reached: every removal forgets the directories it removed.
                Ok(_) => continue,
                Err(Fail::Io(op, source)) => return Err(io(op, source)),
                // `open_dir` without `create` fails only with `Fail::Io`.
                Err(other) => return Err(io("open", std::io::Error::other(format!("{other:?}")))),
            };
            fchmod(&fd, Mode::from_raw_mode(fin.mode))
                .map_err(|e| io("set the mode of", e.into()))?;
            let mtime = fin.mtime.unwrap_or(IMPLICIT_DIR_MTIME);
            futimens(&fd, &mtime.timestamps()).map_err(|e| io("set the mtime of", e.into()))?;
        }
        Ok(self.report)
    }

    /// Adds the layer and the entry to an internal failure.
    fn wrap(&self, layer: usize, entry: String, fail: Fail) -> FlattenError {
        match fail {
            Fail::Bad(problem) => FlattenError::Entry {
                layer,
                entry,
                problem,
            },
            Fail::Io(op, source) => FlattenError::Apply {
                layer,
                entry,
                op,
                source,
            },
            Fail::Read(source) => FlattenError::Read {
                layer,
                entry,
                source,
            },
            Fail::CrossDevice => FlattenError::CrossDevice {
                objects: self.objects.path().to_owned(),
                out: self.out.to_owned(),
            },
        }
    }

    fn apply_entry(
        &mut self,
        stream: &mut TarStream<'_>,
        entry: &RawEntry,
        touched: &mut Touched,
    ) -> Result<(), Fail> {
        let path = TreePath::parse(&entry.path, self.limits.max_depth)?;
        match classify(&path)? {
            NameKind::Plain => {}
            NameKind::Opaque => {
                self.report.whiteouts += 1;
                let dir = path
                    .split_last()
                    .map(|(parent, _)| parent)
                    .unwrap_or_default();
                return match self.tree.open_dir(&dir, None)? {
                    Walk::Dir(fd) => self.prune_children(fd, &dir, touched),
                    // Nothing below a missing directory or a non-directory to hide.
                    _ => Ok(()),
                };
            }
            NameKind::Whiteout(name) => {
                self.report.whiteouts += 1;
                let dir = path
                    .split_last()
                    .map(|(parent, _)| parent)
                    .unwrap_or_default();
                return match self.tree.open_dir(&dir, None)? {
                    Walk::Dir(fd) => self.prune_in(fd.as_fd(), &dir.join(name), name, touched),
                    // A path through a symlink or a missing directory names nothing in
                    // the tree: there is nothing to delete, and nothing is followed.
                    _ => Ok(()),
                };
            }
            NameKind::AufsMeta => {
                self.report.skipped += 1;
                return Ok(());
            }
        }
        match entry.kind {
            EntryType::Directory => self.directory(&path, entry)?,
            EntryType::Regular => self.regular(stream, &path, entry)?,
            EntryType::Symlink => self.symlink(&path, entry)?,
            EntryType::Link => self.hardlink(&path, entry)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => self.special(&path, entry)?,
            other => {
                return Err(Problem::UnsupportedType {
                    kind: char::from(other.as_byte()),
                }
                .into());
            }
        }
        for written in path.self_and_ancestors() {
            if !touched.insert(written.to_vec()) {
                break;
            }
        }
        Ok(())
    }

    fn meta(&mut self, entry: &RawEntry) -> Result<Meta, Fail> {
        Ok(Meta::of(entry, &mut self.report.xattrs_dropped)?)
    }

    fn directory(&mut self, path: &TreePath, entry: &RawEntry) -> Result<(), Fail> {
        let meta = self.meta(entry)?;
        let fd = match path.split_last() {
            None => self
                .tree
                .root()
                .try_clone_to_owned()
                .op("duplicate the root descriptor")?,
            Some((_, name)) => {
                let parent = self.parent_for_write(path)?;
                let kept = self.clear(parent.as_fd(), path, name, Over::Directory)?;
                if !kept {
                    mkdirat(&parent, name, Mode::from_raw_mode(BUILD_DIR_MODE))
                        .op("create a directory")?;
                }
                open_child_dir(parent.as_fd(), name).op("open a directory")?
            }
        };
        fchown(
            &fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .op("set a directory's owner")?;
        replace_xattrs(fd.as_fd(), &meta.xattrs)?;
        self.dirs.insert(
            path.as_bytes().to_vec(),
            DirFinal {
                mode: meta.mode,
                mtime: Some(meta.mtime),
            },
        );
        self.report.dirs += 1;
        Ok(())
    }

    fn regular(
        &mut self,
        stream: &mut TarStream<'_>,
        path: &TreePath,
        entry: &RawEntry,
    ) -> Result<(), Fail> {
        let meta = self.meta(entry)?;
        let (_, name) = path.split_last().ok_or(Problem::EmptyName)?;
        let staged = self.objects.stage(stream, entry.size)?;
        let parent = self.parent_for_write(path)?;
        self.clear(parent.as_fd(), path, name, Over::NonDirectory)?;
        match self.objects.link(&staged, &meta, parent.as_fd(), name)? {
            Linked::New => {
                self.report.objects_new += 1;
                self.report.object_bytes_new += staged.size();
            }
            Linked::Reused => self.report.objects_reused += 1,
        }
        self.report.files += 1;
        self.report.file_bytes += staged.size();
        Ok(())
    }

    fn symlink(&mut self, path: &TreePath, entry: &RawEntry) -> Result<(), Fail> {
        let meta = self.meta(entry)?;
        let (_, name) = path.split_last().ok_or(Problem::EmptyName)?;
        let target = entry.link.as_deref().unwrap_or_default();
        if target.is_empty() {
            return Err(Problem::NoLinkTarget.into());
        }
        if target.contains(&0) {
            return Err(Problem::NulByte.into());
        }
        let parent = self.parent_for_write(path)?;
        self.clear(parent.as_fd(), path, name, Over::NonDirectory)?;
        symlinkat(target, &parent, name).op("create a symlink")?;
        self.finish_node(parent.as_fd(), name, &meta, Node::Symlink)?;
        self.report.symlinks += 1;
        Ok(())
    }

    fn special(&mut self, path: &TreePath, entry: &RawEntry) -> Result<(), Fail> {
        let meta = self.meta(entry)?;
        let (_, name) = path.split_last().ok_or(Problem::EmptyName)?;
        let (kind, dev) = match entry.kind {
            EntryType::Fifo => (FileType::Fifo, 0),
            kind => {
                let number = |n: std::io::Result<Option<u32>>| match n {
                    Ok(Some(n)) => Ok(n),
                    Ok(None) => Err(Problem::NoDeviceNumbers),
                    Err(_) => Err(Problem::BadField {
                        field: "device number",
                    }),
                };
                let major = number(entry.header.device_major())?;
                let minor = number(entry.header.device_minor())?;
                let kind = if kind == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (kind, makedev(major, minor))
            }
        };
        let parent = self.parent_for_write(path)?;
        self.clear(parent.as_fd(), path, name, Over::NonDirectory)?;
        mknodat(&parent, name, kind, Mode::from_raw_mode(0o600), dev)
            .op("create a device or FIFO")?;
        self.finish_node(parent.as_fd(), name, &meta, Node::Special)?;
        self.report.specials += 1;
        Ok(())
    }

    /// Owner, mode (not for symlinks), xattrs and times of a node just made by name.
    fn finish_node(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        node: Node,
    ) -> Result<(), Fail> {
        chownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .op("set an owner")?;
        if node == Node::Special {
            // Follows a symlink in `name`, but `name` is the node just made here.
            chmodat(dir, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .op("set a mode")?;
        }
        set_xattrs_at(dir, name, &meta.xattrs)?;
        utimensat(
            dir,
            name,
            &meta.mtime.timestamps(),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .op("set times")?;
        Ok(())
    }

    fn hardlink(&mut self, path: &TreePath, entry: &RawEntry) -> Result<(), Fail> {
        let (_, name) = path.split_last().ok_or(Problem::EmptyName)?;
        let raw = entry.link.as_deref().unwrap_or_default();
        if raw.is_empty() {
            return Err(Problem::NoLinkTarget.into());
        }
        let target =
            TreePath::parse(raw, self.limits.max_depth).map_err(|problem| match problem {
                Problem::EscapesRoot => Problem::LinkEscapes {
                    target: String::from_utf8_lossy(raw).into_owned(),
                },
                other => other,
            })?;
        let shown = target.display();
        let Some((target_dir, target_name)) = target.split_last() else {
            return Err(Problem::LinkTargetDirectory { target: shown }.into());
        };
        let target_fd = match self.tree.open_dir(&target_dir, None)? {
            Walk::Dir(fd) => fd,
            Walk::Symlink(at) => {
                return Err(Problem::LinkThroughSymlink {
                    target: shown,
                    at: at.display(),
                }
                .into());
            }
            Walk::Missing | Walk::NotDir(_) => {
                return Err(Problem::LinkTargetMissing { target: shown }.into());
            }
        };
        let Some(target_st) = lstat_at(target_fd.as_fd(), target_name)? else {
            return Err(Problem::LinkTargetMissing { target: shown }.into());
        };
        if tree::file_type(&target_st) == FileType::Directory {
            return Err(Problem::LinkTargetDirectory { target: shown }.into());
        }
        let parent = self.parent_for_write(path)?;
        // Taken before `path` is cleared, which may remove the target (a link over one
        // of its own ancestors) and with it the target's record.
        let id = self.ids.of(target.as_bytes());
        let existing = lstat_at(parent.as_fd(), name)?;
        if existing.is_some_and(|st| (st.st_dev, st.st_ino) == (target_st.st_dev, target_st.st_ino))
        {
            // The same inode already (the path itself, an earlier link, or an
            // identical file sharing the object): only the identity changes.
            self.ids.set(path.as_bytes(), id);
            self.report.hardlinks += 1;
            return Ok(());
        }
        let temp = self.temp_link(target_fd.as_fd(), target_name, parent.as_fd())?;
        let moved = self
            .clear(parent.as_fd(), path, name, Over::NonDirectory)
            .and_then(|_| renameat(&parent, temp.as_str(), &parent, name).op("rename a hardlink"));
        if moved.is_err() {
            // Best effort: the whole tree is removed on error anyway.
            let _ = unlinkat(&parent, temp.as_str(), AtFlags::empty());
        }
        moved?;
        self.ids.set(path.as_bytes(), id);
        self.report.hardlinks += 1;
        Ok(())
    }

    /// Links `target` in `target_dir` under a fresh temporary name in `dir`.
    fn temp_link(
        &mut self,
        target_dir: BorrowedFd<'_>,
        target: &[u8],
        dir: BorrowedFd<'_>,
    ) -> Result<String, Fail> {
        loop {
            self.temps += 1;
            let temp = format!(".shoal-link-{}", self.temps);
            match linkat(target_dir, target, dir, temp.as_str(), AtFlags::empty()) {
                Ok(()) => return Ok(temp),
                Err(Errno::EXIST) => {}
                Err(e) => return Err(Fail::Io("create a hardlink", e.into())),
            }
        }
    }

    /// Opens the parent of `path` for writing, making missing directories.
    fn parent_for_write(&mut self, path: &TreePath) -> Result<OwnedFd, Fail> {
        let (parent, _) = path.split_last().ok_or(Problem::EmptyName)?;
        match &self.last_parent {
            Some((cached, fd)) if *cached == parent => {
                return fd.try_clone().op("duplicate a directory descriptor");
            }
            _ => {}
        }
        let dirs = &mut self.dirs;
        let mut made = |made: &TreePath| {
            dirs.insert(
                made.as_bytes().to_vec(),
                DirFinal {
                    mode: IMPLICIT_DIR_MODE,
                    mtime: None,
                },
            );
        };
        match self.tree.open_dir(&parent, Some(&mut made))? {
            Walk::Dir(fd) => {
                let copy = fd.try_clone().op("duplicate a directory descriptor")?;
                self.last_parent = Some((parent, copy));
                Ok(fd)
            }
            Walk::Symlink(at) => Err(Problem::ThroughSymlink { at: at.display() }.into()),
            Walk::NotDir(at) => Err(Problem::NotADirectory { at: at.display() }.into()),
            Walk::Missing => Err(Fail::Io(
                "create a parent directory",
                std::io::ErrorKind::NotFound.into(),
            )),
        }
    }

    /// Clears `name` in `dir` for a new entry; an existing directory stays when the new
    /// entry is a directory too (the return value says whether one did).
    fn clear(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &TreePath,
        name: &[u8],
        new: Over,
    ) -> Result<bool, Fail> {
        let Some(st) = lstat_at(dir, name)? else {
            return Ok(false);
        };
        if new == Over::Directory && tree::file_type(&st) == FileType::Directory {
            return Ok(true);
        }
        remove_at(dir, name, &st)?;
        self.forget(path);
        Ok(false)
    }

    /// Removes `name` in `dir` (at `path`) unless this layer wrote it; if it did and it
    /// is a directory, does the same for its children.
    fn prune_in(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &TreePath,
        name: &[u8],
        touched: &Touched,
    ) -> Result<(), Fail> {
        let Some(st) = lstat_at(dir, name)? else {
            return Ok(());
        };
        if !touched.contains(path.as_bytes()) {
            remove_at(dir, name, &st)?;
            self.forget(path);
            return Ok(());
        }
        if tree::file_type(&st) == FileType::Directory {
            let fd = open_child_dir(dir, name).op("open a directory")?;
            self.prune_children(fd, path, touched)?;
        }
        Ok(())
    }

    /// [`Self::prune_in`] for every child of the directory `fd` at `path`.
    fn prune_children(
        &mut self,
        fd: OwnedFd,
        path: &TreePath,
        touched: &Touched,
    ) -> Result<(), Fail> {
        for (child, _) in tree::list(fd.as_fd()).op("list a directory")? {
            self.prune_in(fd.as_fd(), &path.join(&child), &child, touched)?;
        }
        Ok(())
    }

    /// Forgets the directories and identities at and below a removed path.
    fn forget(&mut self, path: &TreePath) {
        self.last_parent = None;
        self.ids.forget(path.as_bytes());
        let key = path.as_bytes();
        self.dirs.remove(key);
        let lo = [key, b"/"].concat();
        let hi = [key, b"0"].concat();
        let below: Vec<Vec<u8>> = self.dirs.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.dirs.remove(&k);
        }
    }
}
