//! The objects directory: every regular file of every flattened tree is one read-only,
//! content-addressed inode here, hardlinked into each tree that holds it. A second
//! version of an image therefore costs only the files it changed.
//!
//! # Keys
//! Hardlinks share the inode, so an object is its content *and* its inode metadata
//! (mode, owner, mtime, xattrs): the key is BLAKE3 over a domain tag, the content's
//! BLAKE3 and size, and the canonical metadata encoding of [`Meta::encode`]. Objects
//! live at `ab/abcdef…` (the key in hex, fanned out by its first byte).
//!
//! # Writing
//! An object is written to a temporary file in the objects directory, given its
//! metadata through its descriptor (owner, then mode, since a chown clears setuid; then
//! xattrs, since a chown clears `security.capability`; then times), and published with
//! `linkat`, so it appears whole or not at all. A file of at most [`SMALL_FILE`] bytes
//! is hashed in memory and only written if its object is new.
//!
//! # Link limits
//! Filesystems cap an inode's links (65000 on ext4), which a popular empty file reaches
//! soon. When the object's inode is full the next one is used, `ab/KEY.1`, `ab/KEY.2`,
//! and so on, each a copy with the same content and metadata.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, fchmod, fchown, futimens, linkat, mkdirat, openat};
use rustix::fs::{Gid, Uid};
use rustix::io::Errno;

use super::error::{Fail, FlattenError, IoContext};
use super::meta::Meta;
use super::stream::TarStream;
use super::tree::set_xattrs_fd;

/// Files up to this size are hashed in memory before anything is written.
const SMALL_FILE: u64 = 256 << 10;
/// Copies of one object made when earlier ones hit the link limit.
const MAX_GENERATIONS: u32 = 1000;
/// Domain tag of the object key.
const KEY_DOMAIN: &[u8] = b"shoal flatten object v1\0";
/// Mode of the objects directory and its fan-out directories: objects keep their
/// image's modes (setuid binaries included), so only the owner may reach them by path.
const PRIVATE_DIR: u32 = 0o700;

/// A directory of read-only, content-addressed files shared by flattened trees. It must
/// be on the same filesystem as the trees.
#[derive(Debug)]
pub struct Objects {
    path: PathBuf,
    fd: OwnedFd,
    /// Numbers temporary names.
    temps: AtomicU64,
}

/// Whether a file's object was written for it or already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Linked {
    /// Written now.
    New,
    /// Reused.
    Reused,
}

/// A file's content, hashed and held until its object is known.
pub(crate) struct Staged<'o> {
    hash: blake3::Hash,
    size: u64,
    body: Body<'o>,
}

/// Where staged content is.
enum Body<'o> {
    /// Small content, in memory.
    Memory(Vec<u8>),
    /// Larger content, in a temporary file in the objects directory.
    Temp(TempFile<'o>),
}

/// A temporary file in the objects directory, removed when dropped.
struct TempFile<'o> {
    objects: &'o Objects,
    name: String,
    file: File,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        // A leftover temp file wastes space but harms nothing; there is no one to tell.
        let _ = rustix::fs::unlinkat(&self.objects.fd, self.name.as_str(), AtFlags::empty());
    }
}

impl Objects {
    /// Opens the objects directory, creating it if missing, and makes it private (0700).
    pub fn open(dir: &Path) -> Result<Objects, FlattenError> {
        let io = |op| {
            move |source| FlattenError::Io {
                op,
                path: dir.to_owned(),
                source,
            }
        };
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create the objects directory")(e)),
        }
        let fd = openat(
            rustix::fs::CWD,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open the objects directory")(e.into()))?;
        fchmod(&fd, Mode::from_raw_mode(PRIVATE_DIR))
            .map_err(|e| io("make the objects directory private")(e.into()))?;
        Ok(Objects {
            path: dir.to_owned(),
            fd,
            temps: AtomicU64::new(0),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads the current entry's `size` bytes of content from `stream` and hashes them.
    pub(crate) fn stage(&self, stream: &mut TarStream<'_>, size: u64) -> Result<Staged<'_>, Fail> {
        let mut hasher = blake3::Hasher::new();
        if size <= SMALL_FILE {
            // Bounded by SMALL_FILE, so it fits a usize.
            let mut data = vec![0u8; size as usize];
            let mut got = 0;
            while got < data.len() {
                got += stream.read_data(&mut data[got..])?;
            }
            hasher.update(&data);
            return Ok(Staged {
                hash: hasher.finalize(),
                size,
                body: Body::Memory(data),
            });
        }
        let mut temp = self.temp_file()?;
        let mut buf = vec![0u8; 128 << 10];
        loop {
            let n = stream.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            temp.file.write_all(&buf[..n]).op("write an object")?;
        }
        Ok(Staged {
            hash: hasher.finalize(),
            size,
            body: Body::Temp(temp),
        })
    }

    /// Hardlinks the object for `staged` content with `meta` as `name` in `dir`,
    /// writing the object first if it is new.
    pub(crate) fn link(
        &self,
        staged: &Staged<'_>,
        meta: &Meta,
        dir: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<Linked, Fail> {
        let key = object_key(staged, meta);
        for generation in 0..MAX_GENERATIONS {
            let rel = object_path(&key, generation);
            match linkat(&self.fd, rel.as_str(), dir, name, AtFlags::empty()) {
                Ok(()) => return Ok(Linked::Reused),
                Err(Errno::NOENT) => {
                    let created = self.publish(staged, meta, &rel)?;
                    match linkat(&self.fd, rel.as_str(), dir, name, AtFlags::empty()) {
                        Ok(()) if created => return Ok(Linked::New),
                        Ok(()) => return Ok(Linked::Reused),
                        Err(Errno::MLINK) => continue,
                        Err(e) => return Err(link_error(e)),
                    }
                }
                Err(Errno::MLINK) => continue,
                Err(e) => return Err(link_error(e)),
            }
        }
        Err(Fail::Io("link an object", Errno::MLINK.into()))
    }

    /// Writes the object `rel` from staged content; `false` if another writer got
    /// there first (the content is the same, so that one is used).
    fn publish(&self, staged: &Staged<'_>, meta: &Meta, rel: &str) -> Result<bool, Fail> {
        let fanout = &rel[..2];
        match mkdirat(&self.fd, fanout, Mode::from_raw_mode(PRIVATE_DIR)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Fail::Io("create an objects subdirectory", e.into())),
        }
        let fresh;
        let temp = match &staged.body {
            Body::Temp(temp) => temp,
            Body::Memory(data) => {
                let mut temp = self.temp_file()?;
                temp.file.write_all(data).op("write an object")?;
                fresh = temp;
                &fresh
            }
        };
        let fd = temp.file.as_fd();
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .op("set an object's owner")?;
        fchmod(fd, Mode::from_raw_mode(meta.mode)).op("set an object's mode")?;
        set_xattrs_fd(fd, &meta.xattrs)?;
        futimens(fd, &meta.mtime.timestamps()).op("set an object's times")?;
        match linkat(
            &self.fd,
            temp.name.as_str(),
            &self.fd,
            rel,
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(Fail::Io("publish an object", e.into())),
        }
    }

    /// Creates a new temporary file in the objects directory.
    fn temp_file(&self) -> Result<TempFile<'_>, Fail> {
        loop {
            let n = self.temps.fetch_add(1, Ordering::Relaxed);
            let name = format!("tmp-{}-{n}", std::process::id());
            match openat(
                &self.fd,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        objects: self,
                        name,
                        file: File::from(fd),
                    });
                }
                // Left by an earlier process with the same pid: take the next number.
                Err(Errno::EXIST) => {}
                Err(e) => return Err(Fail::Io("create an object", e.into())),
            }
        }
    }
}

impl Staged<'_> {
    /// Bytes of content.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

/// Maps a failed link of an object into a tree.
fn link_error(e: Errno) -> Fail {
    if e == Errno::XDEV {
        Fail::CrossDevice
    } else {
        Fail::Io("link an object into the tree", e.into())
    }
}

/// The object key: BLAKE3 over the domain, the content hash and size, and the metadata.
fn object_key(staged: &Staged<'_>, meta: &Meta) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(KEY_DOMAIN);
    hasher.update(staged.hash.as_bytes());
    hasher.update(&staged.size.to_le_bytes());
    hasher.update(&meta.encode());
    hasher.finalize().to_hex().to_string()
}

/// Where an object lives in the objects directory.
pub(crate) fn object_path(key: &str, generation: u32) -> String {
    match generation {
        0 => format!("{}/{key}", &key[..2]),
        n => format!("{}/{key}.{n}", &key[..2]),
    }
}
