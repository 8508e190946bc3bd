//! Test kit for the flattener: layer tars written block by block (so a fixture can
//! hold what well-behaved writers refuse to write: `..` names, binary xattrs, whiteouts
//! in any order, missing end blocks), a temporary place with an objects directory, and
//! small readers of the result.

use std::fs;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};
use tempfile::TempDir;

use super::{FlattenError, FlattenLimits, FlattenReport, Objects, flatten};

/// One tar entry to write.
#[derive(Clone, Debug)]
pub(super) struct E {
    path: Vec<u8>,
    kind: EntryType,
    pub(super) data: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<Vec<u8>>,
    dev: (u32, u32),
    pax: Vec<(Vec<u8>, Vec<u8>)>,
}

impl E {
    fn new(path: &str, kind: EntryType) -> E {
        E {
            path: path.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            mode: if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            link: None,
            dev: (0, 0),
            pax: Vec::new(),
        }
    }

    /// A regular file.
    pub(super) fn file(path: &str, data: &[u8]) -> E {
        E {
            data: data.to_vec(),
            ..E::new(path, EntryType::Regular)
        }
    }

    /// A directory.
    pub(super) fn dir(path: &str) -> E {
        E::new(path, EntryType::Directory)
    }

    /// A symlink.
    pub(super) fn symlink(path: &str, target: &str) -> E {
        E {
            link: Some(target.as_bytes().to_vec()),
            ..E::new(path, EntryType::Symlink)
        }
    }

    /// A hardlink.
    pub(super) fn hardlink(path: &str, target: &str) -> E {
        E {
            link: Some(target.as_bytes().to_vec()),
            ..E::new(path, EntryType::Link)
        }
    }

    /// A device or FIFO.
    pub(super) fn node(path: &str, kind: EntryType, major: u32, minor: u32) -> E {
        E {
            dev: (major, minor),
            ..E::new(path, kind)
        }
    }

    pub(super) fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }

    pub(super) fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub(super) fn mtime(mut self, mtime: u64) -> E {
        self.mtime = mtime;
        self
    }

    pub(super) fn pax(mut self, key: &[u8], value: &[u8]) -> E {
        self.pax.push((key.to_vec(), value.to_vec()));
        self
    }
}

/// PAX records with correct length prefixes.
pub(super) fn pax_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Writes one header block and its data, names copied raw (so `..` stays).
pub(super) fn block(out: &mut Vec<u8>, kind: EntryType, name: &[u8], e: &E, data: &[u8]) {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(e.mode);
    header.set_uid(e.uid);
    header.set_gid(e.gid);
    header.set_mtime(e.mtime);
    header.set_size(data.len() as u64);
    let old = header.as_old_mut();
    let n = name.len().min(old.name.len());
    old.name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = &e.link {
        let n = link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    if matches!(kind, EntryType::Char | EntryType::Block) {
        header.set_device_major(e.dev.0).unwrap(); // ustar headers have the field
        header.set_device_minor(e.dev.1).unwrap();
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A layer tar holding `entries`, with its end-of-archive blocks.
pub(super) fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = tar_unterminated(entries);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The same without the end-of-archive blocks.
pub(super) fn tar_unterminated(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax = e.pax.clone();
        if e.path.len() > 100 {
            pax.push((b"path".to_vec(), e.path.clone()));
        }
        if !pax.is_empty() {
            block(
                &mut out,
                EntryType::XHeader,
                b"PaxHeader",
                e,
                &pax_records(&pax),
            );
        }
        block(&mut out, e.kind, &e.path, e, &e.data);
    }
    out
}

/// A temporary place with an objects directory.
pub(super) struct Fixture {
    pub(super) dir: TempDir,
    pub(super) objects: Objects,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("flatten-")
            .tempdir()
            .unwrap();
        let objects = Objects::open(&dir.path().join("objects")).unwrap();
        Fixture { dir, objects }
    }

    pub(super) fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Flattens `layers` into `name` with `limits`.
    pub(super) fn run_with(
        &self,
        name: &str,
        layers: &[Vec<u8>],
        limits: &FlattenLimits,
    ) -> Result<FlattenReport, FlattenError> {
        let readers = layers.iter().map(|l| Ok(&l[..]));
        flatten(readers, &self.objects, &self.out(name), limits)
    }

    /// Flattens with default limits, expecting success.
    pub(super) fn run(&self, name: &str, layers: &[Vec<u8>]) -> (PathBuf, FlattenReport) {
        let report = self
            .run_with(name, layers, &FlattenLimits::default())
            .unwrap_or_else(|e| panic!("flatten {name}: {e}"));
        (self.out(name), report)
    }

    /// Names in the fixture directory other than the objects directory.
    pub(super) fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "objects")
            .collect();
        names.sort();
        names
    }
}

pub(super) fn lmeta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(super) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

pub(super) fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(super) fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Every name in a tree, sorted, relative to it.
pub(super) fn names(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if lmeta(&path).is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
