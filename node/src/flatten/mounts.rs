//! `shoal mount` and `shoal umount`: an image's flat tree as the only lower dir of an
//! overlay, with an upper and a work dir of the mount's own, so writes land in the
//! upper dir and the shared objects never change; two mounts of one image share the
//! tree and nothing else.
//!
//! # The mount table
//! `flat/mounts.json` lists every mount (target, image, pin, dirs), rewritten whole
//! and renamed into place on every change, so `umount` and a restarted node know what
//! is shoal's. A mount pins its image (`mount:<target>`) before the overlay is mounted
//! and unpins it only after the overlay is gone, so GC never removes a mounted image.
//! At start the node mounts again what the table lists but the system does not have
//! (a reboot); a target that no longer exists is left listed, for `umount` to clean.
//!
//! # How
//! With `mount -t overlay` and `umount` (util-linux): the crate has no unsafe code, and
//! these give the kernel's message on failure. Overlay options cannot carry `,` or `:`
//! in a path, so a data dir whose path holds them is refused. The upper dir takes the
//! tree root's owner and mode, since the overlay's root is the upper dir's root.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use shoal_protocol::RepoName;

use super::service::{Flat, FlatError, Reporter, lease, private_dir, summary_of};
use super::source;
use super::tree::remove_tree;
use super::wire::{MountRecord, MountSummary, MountTable};
use crate::node::Node;
use crate::store::images::{ImageKey, Pin};
use crate::store::unix_now;

/// Version of the mount table format.
const TABLE_VERSION: u32 = 1;

/// Why a mount or umount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The target cannot take a mount.
    #[error("{target}: {why}")]
    BadTarget {
        /// The target.
        target: String,
        /// Why.
        why: String,
    },
    /// The target has a shoal mount already.
    #[error("{target} already has a shoal mount (of {image}); shoal umount {target} first")]
    AlreadyMounted {
        /// The target.
        target: String,
        /// What is mounted there.
        image: String,
    },
    /// `umount` of a target with no shoal mount.
    #[error("{0} has no shoal mount (shoal mounts lists them)")]
    NotMounted(String),
    /// `mount` failed.
    #[error("mounting the overlay on {target} failed: {detail}")]
    Mount {
        /// The target.
        target: String,
        /// What mount said.
        detail: String,
    },
    /// `umount` failed.
    #[error("unmounting {target} failed: {detail}")]
    Umount {
        /// The target.
        target: String,
        /// What umount said.
        detail: String,
    },
    /// A path overlay options cannot carry.
    #[error(
        "overlay options cannot carry the path {0} (it holds ',', ':' or '\\'); use a data dir without them"
    )]
    Unmountable(String),
    /// The mount table is unreadable.
    #[error(
        "the mount table {path} is unreadable: {detail} (fix or remove it; it lists shoal's mounts)"
    )]
    Table {
        /// Its path.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A record names an image that does not parse (the table was edited).
    #[error("the mount table's record for {0} names no image shoal can parse")]
    BadRecord(String),
}

/// The mounts of a node.
#[derive(Debug)]
pub struct Mounts {
    /// `flat/mounts`: each mount's upper and work dirs.
    dir: PathBuf,
    /// `flat/mounts.json`.
    state: PathBuf,
    // A std Mutex: held across one mount or umount command and a small file write,
    // on a blocking thread, never across an await. It makes check-mount-record atomic.
    table: Mutex<MountTable>,
}

impl Mounts {
    /// Reads the table in `flat` (none yet: empty).
    pub(super) fn load(flat: &Path) -> Result<Mounts, FlatError> {
        let dir = flat.join("mounts");
        private_dir(&dir)?;
        let state = flat.join("mounts.json");
        let table = match std::fs::read(&state) {
            Ok(bytes) => {
                let table: MountTable =
                    serde_json::from_slice(&bytes).map_err(|e| MountError::Table {
                        path: state.display().to_string(),
                        detail: e.to_string(),
                    })?;
                if table.version != TABLE_VERSION {
                    return Err(MountError::Table {
                        path: state.display().to_string(),
                        detail: format!("format version {} (this shoal reads 1)", table.version),
                    }
                    .into());
                }
                table
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => MountTable {
                version: TABLE_VERSION,
                mounts: Vec::new(),
            },
            Err(e) => return Err(FlatError::io("read", &state)(e)),
        };
        Ok(Mounts {
            dir,
            state,
            table: Mutex::new(table),
        })
    }

    fn lock(&self) -> MutexGuard<'_, MountTable> {
        // Every change is written to the file before the table is changed in memory,
        // so a panic leaves the table as the file has it.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `table` to the state file, whole, through a temporary file.
    fn save(&self, table: &MountTable) -> Result<(), FlatError> {
        // Plain values: serialising cannot fail.
        let bytes = serde_json::to_vec_pretty(table).unwrap_or_default();
        let temp = self.state.with_extension("json.tmp");
        let write = || -> io::Result<()> {
            let mut file = std::fs::File::create(&temp)?;
            io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.state)
        };
        write().map_err(FlatError::io("write the mount table", &self.state))
    }

    /// Mounts again what the table lists and the system lacks (after a reboot).
    pub(super) fn restore(&self) {
        let table = self.lock();
        for m in &table.mounts {
            if is_mounted(m) {
                continue;
            }
            let dirs = [&m.target, &m.lower, &m.upper, &m.work];
            if dirs.iter().any(|d| !Path::new(d).is_dir()) {
                tracing::warn!(target = %m.target, image = %m.image, "a shoal mount is listed but its target or dirs are gone; `shoal umount {}` cleans it up", m.target);
                continue;
            }
            match overlay_mount(m) {
                Ok(()) => {
                    tracing::info!(target = %m.target, image = %m.image, "shoal mount restored")
                }
                Err(e) => tracing::warn!(target = %m.target, "cannot restore a shoal mount: {e}"),
            }
        }
    }

    /// Every mount, with whether it is mounted now.
    pub fn list(&self) -> Vec<MountRecord> {
        let table = self.lock();
        table
            .mounts
            .iter()
            .map(|m| MountRecord {
                mounted: is_mounted(m),
                ..m.clone()
            })
            .collect()
    }
}

impl Flat {
    /// Every mount, with whether it is mounted now.
    pub fn list_mounts(&self) -> Vec<MountRecord> {
        self.mounts.list()
    }

    /// `shoal mount IMAGE TARGET`.
    pub fn mount(
        &self,
        node: &Node,
        image: &str,
        platform: Option<&str>,
        target: &Path,
        reporter: &mut Reporter<'_>,
    ) -> Result<MountSummary, FlatError> {
        let started = Instant::now();
        let target = self.check_target(target)?;
        let shown = target.display().to_string();
        let src = source::load(node.store.as_ref(), &node.config, image, platform)?;
        let _leases = lease(node, &src);
        let _using = self.using();
        let found = self.ensure_tree(node, &src, reporter)?;
        let tree = found.path;
        let mut tree_summary = summary_of(&src, &tree, found.built.is_none());
        if let Some(report) = &found.built {
            tree_summary.record(report);
        }
        let mut table = self.mounts.lock();
        if let Some(m) = table.mounts.iter().find(|m| m.target == shown) {
            return Err(MountError::AlreadyMounted {
                target: shown,
                image: m.image.clone(),
            }
            .into());
        }
        let base = self
            .mounts
            .dir
            .join(&blake3::hash(shown.as_bytes()).to_hex()[..16]);
        let record = MountRecord {
            target: shown.clone(),
            image: image.to_owned(),
            upstream: src.key.upstream.clone(),
            repo: src.key.repo.to_string(),
            digest: src.key.digest.to_string(),
            pin: format!("mount:{shown}"),
            manifest: src.manifest.to_string(),
            platform: src.platform.clone(),
            lower: tree.display().to_string(),
            upper: base.join("upper").display().to_string(),
            work: base.join("work").display().to_string(),
            created: unix_now(),
            mounted: true,
        };
        for path in [&record.lower, &record.upper, &record.work] {
            if path.contains([',', ':', '\\']) {
                return Err(MountError::Unmountable(path.clone()).into());
            }
        }
        self.fresh_dirs(&base, &tree)?;
        let pin = Pin {
            created: record.created,
            expires: None,
        };
        node.store.set_pin(&src.key, &record.pin, &pin)?;
        let mounted = overlay_mount(&record)
            .map_err(FlatError::from)
            .and_then(|()| {
                let mut next = table.clone();
                next.mounts.push(record.clone());
                match self.save(&next) {
                    Ok(()) => Ok(next),
                    Err(e) => {
                        let _ = overlay_umount(&record.target);
                        Err(e)
                    }
                }
            });
        match mounted {
            Ok(next) => *table = next,
            Err(e) => {
                // Undo in reverse; the error being returned matters more than these.
                let _ = node.store.remove_pin(&src.key, &record.pin);
                let _ = self.remove_base(&base);
                return Err(e);
            }
        }
        tracing::info!(target = %shown, image, manifest = %src.manifest, "shoal mount");
        tree_summary.seconds = started.elapsed().as_secs_f64();
        Ok(MountSummary {
            mount: record,
            tree: tree_summary,
        })
    }

    /// `shoal umount TARGET`: unmounts, removes the mount's dirs and its pin, forgets it.
    pub fn umount(&self, node: &Node, target: &Path) -> Result<MountRecord, FlatError> {
        let shown = std::fs::canonicalize(target)
            .unwrap_or_else(|_| target.to_owned())
            .display()
            .to_string();
        let mut table = self.mounts.lock();
        let Some(index) = table.mounts.iter().position(|m| m.target == shown) else {
            return Err(MountError::NotMounted(shown).into());
        };
        let record = table.mounts[index].clone();
        if is_mounted(&record) {
            overlay_umount(&record.target)?;
        }
        let key = ImageKey {
            upstream: record.upstream.clone(),
            repo: RepoName::parse(&record.repo)
                .map_err(|_| MountError::BadRecord(shown.clone()))?,
            digest: record
                .digest
                .parse()
                .map_err(|_| MountError::BadRecord(shown.clone()))?,
        };
        if let Some(base) = Path::new(&record.upper).parent() {
            self.remove_base(base)?;
        }
        node.store.remove_pin(&key, &record.pin)?;
        let mut next = table.clone();
        next.mounts.remove(index);
        self.save(&next)?;
        *table = next;
        tracing::info!(target = %shown, image = %record.image, "shoal umount");
        Ok(MountRecord {
            mounted: false,
            ..record
        })
    }

    fn save(&self, table: &MountTable) -> Result<(), FlatError> {
        self.mounts.save(table)
    }

    /// The target, resolved: an existing directory outside the node's data.
    fn check_target(&self, target: &Path) -> Result<PathBuf, FlatError> {
        let bad = |why: &str| MountError::BadTarget {
            target: target.display().to_string(),
            why: why.to_owned(),
        };
        if !target.is_absolute() {
            return Err(bad("the target must be an absolute path").into());
        }
        let resolved = std::fs::canonicalize(target)
            .map_err(|e| bad(&format!("cannot resolve it ({e}); the target must exist")))?;
        if !resolved.is_dir() {
            return Err(bad("the target is not a directory").into());
        }
        if resolved.starts_with(&self.dir) || self.dir.starts_with(&resolved) {
            return Err(bad("the target is (or holds) the node's flat directory").into());
        }
        Ok(resolved)
    }

    /// Makes `base/upper` (owner and mode of the tree's root) and `base/work`, empty.
    fn fresh_dirs(&self, base: &Path, tree: &Path) -> Result<(), FlatError> {
        if base.exists() {
            self.remove_base(base)?;
        }
        private_dir(base)?;
        let root = std::fs::metadata(tree).map_err(FlatError::io("stat", tree))?;
        let upper = base.join("upper");
        std::fs::create_dir(&upper).map_err(FlatError::io("create", &upper))?;
        std::os::unix::fs::chown(&upper, Some(root.uid()), Some(root.gid()))
            .map_err(FlatError::io("set the owner of", &upper))?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(root.mode() & 0o7777);
        std::fs::set_permissions(&upper, mode).map_err(FlatError::io("set the mode of", &upper))?;
        let work = base.join("work");
        std::fs::create_dir(&work).map_err(FlatError::io("create", &work))?;
        Ok(())
    }

    /// Removes a mount's dirs (by descriptors: the upper dir holds what containers
    /// wrote, symlinks included).
    fn remove_base(&self, base: &Path) -> Result<(), FlatError> {
        let Some(name) = base.file_name() else {
            return Ok(());
        };
        let parent = std::fs::File::open(&self.mounts.dir)
            .map_err(FlatError::io("open", &self.mounts.dir))?;
        match remove_tree(std::os::fd::AsFd::as_fd(&parent), name.as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FlatError::io("remove", base)(e)),
        }
    }
}

/// Mounts the overlay `m` describes.
fn overlay_mount(m: &MountRecord) -> Result<(), MountError> {
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        m.lower, m.upper, m.work
    );
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&m.target)
        .output()
        .map_err(|e| MountError::Mount {
            target: m.target.clone(),
            detail: format!("cannot run mount: {e}"),
        })?;
    if !out.status.success() {
        return Err(MountError::Mount {
            target: m.target.clone(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Unmounts `target`.
fn overlay_umount(target: &str) -> Result<(), MountError> {
    let out = Command::new("umount")
        .arg(target)
        .output()
        .map_err(|e| MountError::Umount {
            target: target.to_owned(),
            detail: format!("cannot run umount: {e}"),
        })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(MountError::Umount {
            target: target.to_owned(),
            detail: format!("{said} (stop what uses it, then try again)"),
        });
    }
    Ok(())
}

/// Whether the overlay of `m` is mounted at its target now: an overlay at the target
/// whose upper dir is the mount's, in `/proc/self/mountinfo`.
fn is_mounted(m: &MountRecord) -> bool {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    let upper = format!("upperdir={}", m.upper);
    info.split(|&b| b == b'\n').any(|line| {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == b"-") else {
            return false;
        };
        let point = fields.get(4).map(|f| unescape(f));
        let fstype = fields.get(dash + 1);
        let options = fields.get(dash + 3).map(|f| unescape(f));
        point.as_deref() == Some(m.target.as_bytes())
            && fstype == Some(&&b"overlay"[..])
            && options.is_some_and(|o| o.split(|&b| b == b',').any(|opt| opt == upper.as_bytes()))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape(br"/x\134y"), br"/x\y");
        assert_eq!(unescape(br"/trailing\04"), br"/trailing\04");
        assert_eq!(unescape(b"/plain"), b"/plain");
    }
}
