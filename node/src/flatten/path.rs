//! Entry names as tar writers spell them (`./etc/passwd`, `/usr/`, `a//b`), turned into
//! paths that cannot leave the tree, and the OCI whiteout names told apart.
//!
//! Normalisation is purely lexical: leading `/`, `.` and empty components go, `..` pops
//! a component and is refused when there is none left to pop. Nothing here looks at the
//! filesystem; that a component on the way is not a symlink is checked while walking
//! (see `tree.rs`), because only the tree as it stands at that moment can tell.

use super::error::Problem;

/// Prefix of an OCI whiteout: `DIR/.wh.NAME` deletes `DIR/NAME` from lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// An opaque whiteout: `DIR/.wh..wh..opq` hides everything lower layers put in `DIR`.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of other AUFS metadata (`.wh..wh.plnk`, ...), never part of an image's tree.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// A normalised path inside the tree: the empty path is the root, otherwise components
/// joined by `/`, none of them empty, `.` or `..`, and no NUL byte anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TreePath(Vec<u8>);

impl TreePath {
    /// The root of the tree.
    pub(crate) fn root() -> TreePath {
        TreePath(Vec::new())
    }

    /// Normalises an entry name (or a hardlink target) from a tar header.
    pub(crate) fn parse(raw: &[u8], max_depth: usize) -> Result<TreePath, Problem> {
        if raw.contains(&0) {
            return Err(Problem::NulByte);
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(Problem::EscapesRoot);
                    }
                }
                _ => parts.push(part),
            }
        }
        if parts.len() > max_depth {
            return Err(Problem::TooDeep { limit: max_depth });
        }
        Ok(TreePath(parts.join(&b'/')))
    }

    /// Wraps bytes that came from [`TreePath::as_bytes`].
    pub(crate) fn from_normalised(bytes: Vec<u8>) -> TreePath {
        TreePath(bytes)
    }

    /// Whether this is the root.
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as bytes (`a/b/c`; empty for the root).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its components, outermost first (none for the root).
    pub(crate) fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// How many components it has.
    pub(crate) fn depth(&self) -> usize {
        self.components().count()
    }

    /// The parent and the last component, or `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(TreePath, &[u8])> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(at) => (TreePath(self.0[..at].to_vec()), &self.0[at + 1..]),
            None => (TreePath::root(), &self.0[..]),
        })
    }

    /// This path with one more component, `name` (which holds no `/`).
    pub(crate) fn join(&self, name: &[u8]) -> TreePath {
        if self.is_root() {
            return TreePath(name.to_vec());
        }
        let mut joined = Vec::with_capacity(self.0.len() + 1 + name.len());
        joined.extend_from_slice(&self.0);
        joined.push(b'/');
        joined.extend_from_slice(name);
        TreePath(joined)
    }

    /// The path and every ancestor of it except the root, innermost first.
    pub(crate) fn self_and_ancestors(&self) -> impl Iterator<Item = &[u8]> {
        let bytes = &self.0;
        let cuts = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(at, _)| at);
        let ends: Vec<usize> = cuts.chain(std::iter::once(bytes.len())).collect();
        ends.into_iter()
            .rev()
            .filter(|&end| end > 0)
            .map(move |end| &bytes[..end])
    }

    /// Lossy text for messages.
    pub(crate) fn display(&self) -> String {
        if self.is_root() {
            return "/".to_owned();
        }
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// What an entry's name says it is, before its type is looked at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NameKind<'a> {
    /// An ordinary entry.
    Plain,
    /// `PARENT/.wh.NAME`: delete `NAME` in the parent.
    Whiteout(&'a [u8]),
    /// `PARENT/.wh..wh..opq`: the parent is opaque.
    Opaque,
    /// Other `.wh..wh.` AUFS metadata: skipped.
    AufsMeta,
}

/// Tells whiteouts apart by the last component of a normalised path.
pub(crate) fn classify(path: &TreePath) -> Result<NameKind<'_>, Problem> {
    let Some((parent, last)) = path.split_last() else {
        return Ok(NameKind::Plain);
    };
    // A whiteout's name is only ever an entry's last component: a directory named
    // like one could never be written as an entry, so it is no layer's content. Under
    // AUFS metadata (`.wh..wh.plnk/...`) it is metadata too.
    for dir in parent.components() {
        if dir.starts_with(AUFS_META_PREFIX) {
            return Ok(NameKind::AufsMeta);
        }
        if dir.starts_with(WHITEOUT_PREFIX) {
            return Err(Problem::WhiteoutDir);
        }
    }
    if last == OPAQUE_MARKER {
        return Ok(NameKind::Opaque);
    }
    if last.starts_with(AUFS_META_PREFIX) {
        return Ok(NameKind::AufsMeta);
    }
    match last.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(NameKind::Plain),
        Some(b"" | b"." | b"..") => Err(Problem::BadWhiteout),
        Some(name) => Ok(NameKind::Whiteout(name)),
    }
}
