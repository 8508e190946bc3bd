//! Flat trees in tests: layer tars with every kind of entry (the harness's `Layer`
//! writes only files and directories) and with names no tar library would write, trees
//! described entry by entry (to compare shoal's with umoci's) and by the inodes they
//! share, the hardlinks of an exported layer, a guard that unmounts what a test
//! mounted even when it fails, and the tools that read an image (skopeo, umoci,
//! podman) run the way the tests need.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest as _, Sha256};

use crate::image::Layer;
use crate::process::{run, run_unchecked};

/// One entry of a [`RichLayer`].
#[derive(Clone, Debug)]
struct Entry {
    name: Vec<u8>,
    kind: u8,
    data: Vec<u8>,
    mode: u32,
    owner: (u64, u64),
    link: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A layer tar written header by header: files with modes, owners and xattrs,
/// directories, symlinks, hardlinks, whiteouts, opaque markers, and raw names.
#[derive(Clone, Debug, Default)]
pub struct RichLayer {
    entries: Vec<Entry>,
}

impl RichLayer {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, name: &[u8], kind: u8, data: &[u8], mode: u32, link: &str) -> Self {
        self.entries.push(Entry {
            name: name.to_vec(),
            kind,
            data: data.to_vec(),
            mode,
            owner: (0, 0),
            link: link.as_bytes().to_vec(),
            xattrs: Vec::new(),
        });
        self
    }

    /// A directory (0755).
    pub fn dir(self, path: &str) -> Self {
        self.push(path.as_bytes(), b'5', b"", 0o755, "")
    }

    /// A regular file (0644).
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.push(path.as_bytes(), b'0', data, 0o644, "")
    }

    /// A symlink.
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.push(path.as_bytes(), b'2', b"", 0o777, target)
    }

    /// A hardlink to `target` (a path in the image).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.push(path.as_bytes(), b'1', b"", 0o644, target)
    }

    /// A whiteout: deletes `dir/name` of lower layers.
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&path, b"")
    }

    /// An opaque marker: hides what lower layers put in `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// A regular file named by exactly these bytes (`../evil`, say).
    pub fn raw_file(self, name: &[u8], data: &[u8]) -> Self {
        self.push(name, b'0', data, 0o644, "")
    }

    fn last(&mut self) -> &mut Entry {
        // Builders call these right after adding an entry.
        self.entries
            .last_mut()
            .expect("mode/owner/xattr follow an entry")
    }

    /// Sets the last entry's mode.
    pub fn mode(mut self, mode: u32) -> Self {
        self.last().mode = mode;
        self
    }

    /// Sets the last entry's owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.last().owner = (uid, gid);
        self
    }

    /// Adds an extended attribute to the last entry (as a PAX `SCHILY.xattr.` record).
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.last().xattrs.push((name.to_owned(), value.to_vec()));
        self
    }

    /// The tar, with its end-of-archive blocks.
    pub fn tar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &self.entries {
            if !e.xattrs.is_empty() {
                let mut records = Vec::new();
                for (name, value) in &e.xattrs {
                    pax_record(&mut records, &format!("SCHILY.xattr.{name}"), value);
                }
                block(&mut out, b"PaxHeader", b'x', &records, 0o644, (0, 0), b"");
            }
            block(&mut out, &e.name, e.kind, &e.data, e.mode, e.owner, &e.link);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    /// As a harness [`Layer`].
    pub fn layer(&self) -> Layer {
        Layer::raw_tar(self.tar())
    }
}

/// Appends a PAX record, its length counting itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends one ustar header (name and link copied raw) and its padded data.
fn block(
    out: &mut Vec<u8>,
    name: &[u8],
    kind: u8,
    data: &[u8],
    mode: u32,
    owner: (u64, u64),
    link: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    let old = h.as_old_mut();
    old.name[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    old.linkname[..link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// Everything that makes an entry of a tree what it is, as one line: type, mode,
/// owner, size and sha256 of a file, a symlink's target, a device's numbers,
/// extended attributes (the host's `security.selinux` label aside), and the mtime of
/// what is not a directory (a directory's changes as its children are written).
pub fn describe_tree(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        let m = std::fs::symlink_metadata(&path)?;
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&path)?.display())
        } else if ft.is_file() {
            let bytes = std::fs::read(&path)?;
            format!(
                "file {} {}",
                bytes.len(),
                hex::encode(Sha256::digest(&bytes))
            )
        } else {
            format!("special {:o} {}", m.mode() & 0o170000, m.rdev())
        };
        let mtime = if ft.is_dir() {
            String::new()
        } else {
            format!(" mtime {}", m.mtime())
        };
        let line = format!(
            "{what} mode {:o} owner {}:{}{mtime} xattrs {:?}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            xattrs(&path)?
        );
        let rel = path.strip_prefix(root)?.display().to_string();
        out.insert(rel, line);
        if ft.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

/// The paths of a tree that share an inode, each group sorted, for what is not a
/// directory: an unpacked image's hardlinks.
pub fn inode_groups(root: &Path) -> anyhow::Result<BTreeSet<Vec<String>>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for rel in describe_tree(root)?.into_keys() {
        let m = std::fs::symlink_metadata(root.join(&rel))?;
        if !m.is_dir() && m.nlink() > 1 {
            by_inode.entry((m.dev(), m.ino())).or_default().push(rel);
        }
    }
    Ok(by_inode
        .into_values()
        .filter(|paths| paths.len() > 1)
        .map(|mut paths| {
            paths.sort();
            paths
        })
        .collect())
}

/// The hardlink entries of a layer tar: (path, target).
pub fn tar_hardlinks(tar: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(tar).entries()? {
        let entry = entry?;
        if entry.header().entry_type() == tar::EntryType::Link {
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            out.push((path, target));
        }
    }
    Ok(out)
}

/// The layer tar (gunzipped) of digest `layer` (`sha256:…`) in the OCI archive
/// `archive`, as `shoal export --flat` writes one.
pub fn archive_layer_tar(archive: &[u8], layer: &str) -> anyhow::Result<Vec<u8>> {
    let member = format!("blobs/sha256/{}", layer.trim_start_matches("sha256:"));
    for entry in tar::Archive::new(archive).entries()? {
        let entry = entry?;
        if entry.path()?.to_str() == Some(member.as_str()) {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(entry).read_to_end(&mut tar)?;
            return Ok(tar);
        }
    }
    anyhow::bail!("no {member} in the archive")
}

/// The extended attributes of `path` (not followed), sorted, `security.selinux` aside.
pub fn xattrs(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut names = vec![0u8; 64 << 10];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => return Err(e).with_context(|| format!("list xattrs of {}", path.display())),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name == b"security.selinux" {
            continue;
        }
        let mut value = vec![0u8; 64 << 10];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..])
            .with_context(|| format!("read xattrs of {}", path.display()))?;
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            hex::encode(&value[..len]),
        ));
    }
    out.sort();
    Ok(out)
}

/// Unmounts its target lazily when dropped, whether or not the test unmounted it.
#[derive(Debug)]
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        // Not mounted (already unmounted by the test) is fine: nothing to report.
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Whether an overlay is mounted at `target` (from `/proc/self/mountinfo`).
pub fn overlay_mounted_at(target: &Path) -> anyhow::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let target = target.display().to_string();
    Ok(info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|i| fields.get(i + 1));
        fields.get(4) == Some(&target.as_str()) && fstype == Some(&"overlay")
    }))
}

/// `skopeo copy docker://IMAGE oci:LAYOUT:TAG` straight from a plain-HTTP registry,
/// then `umoci unpack` of it: the reference unpacking. Returns the rootfs.
pub fn umoci_unpack(image: &str, work: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(work)?;
    let layout = work.join("umoci-layout");
    let bundle = work.join("umoci-bundle");
    run(
        Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:{tag}", layout.display())),
        Duration::from_secs(120),
    )?;
    run(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle),
        Duration::from_secs(120),
    )?;
    Ok(bundle.join("rootfs"))
}

/// A podman with its own vfs storage under `work`.
pub struct Podman {
    root: PathBuf,
    /// Short: podman refuses a runroot path over 50 characters.
    runroot: tempfile::TempDir,
}

impl Podman {
    /// A podman storing under `work/podman-storage`.
    pub fn new(work: &Path) -> anyhow::Result<Self> {
        Ok(Podman {
            root: work.join("podman-storage"),
            runroot: tempfile::Builder::new()
                .prefix("shoal-pr")
                .tempdir_in("/tmp")?,
        })
    }

    /// `podman ARGS`, within `limit`, whatever its status.
    pub fn run(&self, args: &[&str], limit: Duration) -> anyhow::Result<std::process::Output> {
        let mut cmd = Command::new("podman");
        cmd.arg("--storage-driver=vfs")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(self.runroot.path())
            .args(args);
        run_unchecked(&mut cmd, limit)
    }

    /// `podman image inspect NAME` (its first element).
    pub fn inspect(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        let out = self.run(&["image", "inspect", name], Duration::from_secs(60))?;
        anyhow::ensure!(
            out.status.success(),
            "podman image inspect {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(all[0].clone())
    }
}
