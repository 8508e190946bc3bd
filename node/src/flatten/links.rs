//! Which paths of an image are hardlinks of one another *in the image*.
//!
//! A tree cannot say: every regular file is a link to the object of its content and
//! metadata, so two files an image holds apart share an inode when they happen to be
//! identical. An export that turned every shared inode into hardlink entries would link
//! them, and an engine that extracts layers into plain directories (vfs, the native
//! snapshotter) would then let a write through one path change the other. So the
//! flattener keeps each path's *identity* as the layers are applied:
//! - a regular file, symlink, device or FIFO entry gives its path a fresh identity;
//! - a hardlink entry gives its path the identity its target has at that point;
//! - removing or replacing a path changes no other path's identity, so a hardlink
//!   whose target a later layer deletes or overwrites keeps the old one.
//!
//! The paths that share an identity with another at the end are the image's hardlink
//! groups; `export.rs` writes hardlink entries within those groups and nowhere else.
//! Only paths that took part in a hardlink entry are recorded (every other path's
//! identity is its own), so the cost follows the image's hardlinks, not its files.
//!
//! The groups of a node's tree are kept beside it (`trees/<hex>.links.json`, see
//! `service.rs`), since the tree itself cannot give them back.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::wire::{LINKS_VERSION, LinksFile, WirePath};

/// Paths of one tree, each group the paths of one file of the image.
pub type LinkGroups = Vec<Vec<PathBuf>>;

/// The identities of the paths that took part in a hardlink entry.
#[derive(Debug, Default)]
pub(crate) struct Identities {
    /// Last identity handed out.
    last: u64,
    /// Identity by path. Invariant: every key is a non-directory that exists in the
    /// tree (every removal calls [`Identities::forget`]).
    ids: BTreeMap<Vec<u8>, u64>,
}

impl Identities {
    /// The identity of the existing path `path`, recording it if it had none yet.
    pub(crate) fn of(&mut self, path: &[u8]) -> u64 {
        if let Some(&id) = self.ids.get(path) {
            return id;
        }
        self.last += 1;
        self.ids.insert(path.to_vec(), self.last);
        self.last
    }

    /// Gives `path` (just linked) the identity `id`.
    pub(crate) fn set(&mut self, path: &[u8], id: u64) {
        self.ids.insert(path.to_vec(), id);
    }

    /// Forgets `path` and everything below it: they were removed.
    pub(crate) fn forget(&mut self, path: &[u8]) {
        self.ids.remove(path);
        // Paths below `path` sort between `path/` and `path0` (`0` follows `/`).
        let lo = [path, b"/"].concat();
        let hi = [path, b"0"].concat();
        let below: Vec<Vec<u8>> = self.ids.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.ids.remove(&k);
        }
    }

    /// The groups of two or more paths with one identity, each in [`walk_order`], the
    /// groups in the order of their first paths.
    pub(crate) fn groups(self) -> LinkGroups {
        let mut by_id: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for (path, id) in self.ids {
            by_id.entry(id).or_default().push(path);
        }
        let mut groups: Vec<Vec<Vec<u8>>> = by_id
            .into_values()
            .filter(|paths| paths.len() > 1)
            .map(|mut paths| {
                paths.sort_by(|a, b| walk_order(a, b));
                paths
            })
            .collect();
        groups.sort_by(|a, b| walk_order(&a[0], &b[0]));
        groups
            .into_iter()
            .map(|paths| paths.into_iter().map(path_of).collect())
            .collect()
    }
}

/// The order an export writes paths in (pre-order, children sorted by name bytes):
/// component by component, so a directory's whole subtree comes before its next
/// sibling (`a/b` before `a.b`, though `.` sorts before `/`).
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&bytes))
}

/// The groups as the sidecar file holds them.
pub(crate) fn encode(groups: &[Vec<PathBuf>]) -> Vec<u8> {
    let file = LinksFile {
        version: LINKS_VERSION,
        groups: groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|p| WirePath::from_bytes(p.as_os_str().as_bytes()))
                    .collect()
            })
            .collect(),
    };
    // Only strings and byte arrays: it serialises.
    serde_json::to_vec_pretty(&file).unwrap_or_default()
}

/// The groups a sidecar file holds; `None` if it is not one this version reads.
pub(crate) fn decode(bytes: &[u8]) -> Option<LinkGroups> {
    let file: LinksFile = serde_json::from_slice(bytes).ok()?;
    if file.version != LINKS_VERSION {
        return None;
    }
    Some(
        file.groups
            .into_iter()
            .map(|g| g.into_iter().map(|p| path_of(p.into_bytes())).collect())
            .collect(),
    )
}
