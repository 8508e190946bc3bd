//! The harness of the `flatten` fuzz target (`fuzz/fuzz_targets/flatten.rs`, which
//! compiles this file with the flattening core), kept here so that `tests_fuzz.rs` runs
//! it over the seeds with every `cargo test`, and writes the seed corpus.
//!
//! # Input
//! A first byte `b`: `1 + b % 3` layers, and the tight limits ([`limits`]) when
//! `b & 0x80` is set; then a little-endian `u16` length for every layer but the last
//! (cut short where the input ends); then the layers' bytes, the last one taking what is
//! left.
//!
//! # What must hold
//! The layers are flattened into `RUN/tree` of a fresh directory `RUN` that also holds
//! the objects directory and an empty directory `RUN/sentinel` (the seeds' symlinks
//! point at `../sentinel`, a write through which would land there). Whatever the input:
//! - no panic, and the result is a tree or an error the layers can cause (the image at
//!   fault, or a system call that refused what it asked for), never one about the
//!   output, the objects directory or the layer source;
//! - nothing is left beside the output: `RUN` holds the objects directory, the empty
//!   sentinel and, only on success, the tree (no `tree.partial-…`);
//! - a tree is a real directory holding no whiteout (no name starting with `.wh.`),
//!   and its report counts every layer.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FlattenError, FlattenLimits, FlattenReport, Objects, flatten};

/// The empty directory beside the tree that nothing may write into.
pub(crate) const SENTINEL: &str = "sentinel";
/// The tree's name in the run directory.
const TREE: &str = "tree";
/// The objects directory's name in the run directory.
const OBJECTS: &str = "objects";

/// A fuzz input taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Input<'a> {
    /// The layer tars, bottom first (1 to 3).
    pub(crate) layers: Vec<&'a [u8]>,
    /// Whether the tight limits apply.
    pub(crate) tight: bool,
}

/// Splits a fuzz input into its layers; `None` for an empty input.
pub(crate) fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&first, mut rest) = data.split_first()?;
    let count = 1 + usize::from(first % 3);
    let tight = first & 0x80 != 0;
    let mut lengths = Vec::with_capacity(count - 1);
    for _ in 1..count {
        let (len, after) = match rest {
            [lo, hi, after @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), after),
            _ => (0, &[][..]),
        };
        lengths.push(len);
        rest = after;
    }
    let mut layers = Vec::with_capacity(count);
    for len in lengths {
        let (layer, after) = rest.split_at(len.min(rest.len()));
        layers.push(layer);
        rest = after;
    }
    layers.push(rest);
    Some(Input { layers, tight })
}

/// The fuzz input for `layers` (1 to 3, each but the last under 64 KiB).
pub(crate) fn join(layers: &[Vec<u8>], tight: bool) -> Vec<u8> {
    assert!((1..=3).contains(&layers.len()), "1 to 3 layers");
    let first = (0..=u8::MAX)
        .find(|&b| usize::from(b % 3) == layers.len() - 1 && (b & 0x80 != 0) == tight)
        .expect("every count has a first byte either way");
    let mut out = vec![first];
    let (last, lower) = layers.split_last().expect("at least one layer");
    for layer in lower {
        let len = u16::try_from(layer.len()).expect("a lower layer under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
    }
    for layer in lower {
        out.extend_from_slice(layer);
    }
    out.extend_from_slice(last);
    out
}

/// The limits an input runs under: the defaults, or (tight) small enough that the
/// limits themselves are reached by small inputs.
pub(crate) fn limits(tight: bool) -> FlattenLimits {
    if tight {
        FlattenLimits {
            max_entries: 3,
            max_tar_bytes: 8192,
            max_header_bytes: 2048,
            max_depth: 6,
        }
    } else {
        FlattenLimits::default()
    }
}

/// Flattens a fuzz input in a fresh run directory and checks what must hold (see the
/// module docs), panicking if it does not. Returns what the flatten returned (`None`
/// for an empty input).
pub(crate) fn check(data: &[u8]) -> Option<Result<FlattenReport, FlattenError>> {
    let input = split(data)?;
    let run = Run::new();
    let objects = Objects::open(&run.path.join(OBJECTS)).expect("open the objects directory");
    let tree = run.path.join(TREE);
    let layers = input.layers.iter().map(|layer| Ok(*layer));
    let result = flatten(layers, &objects, &tree, &limits(input.tight));

    let sentinel = run.path.join(SENTINEL);
    assert!(
        fs::symlink_metadata(&sentinel).is_ok_and(|m| m.is_dir()),
        "the sentinel directory is gone or replaced"
    );
    let written: Vec<_> = fs::read_dir(&sentinel)
        .expect("list the sentinel")
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    assert!(written.is_empty(), "written outside the tree: {written:?}");
    let mut beside = names(&run.path);
    beside.retain(|n| n != OBJECTS && n != SENTINEL);
    match &result {
        Ok(report) => {
            assert_eq!(beside, [TREE], "beside a finished tree");
            assert!(
                fs::symlink_metadata(&tree).is_ok_and(|m| m.is_dir()),
                "the tree is not a directory"
            );
            assert_eq!(report.layers, input.layers.len(), "layers in the report");
            no_whiteouts(&tree);
        }
        Err(e) => {
            assert!(beside.is_empty(), "left after `{e}`: {beside:?}");
            assert!(
                matches!(e, FlattenError::Entry { .. } | FlattenError::Apply { .. }),
                "an error layers cannot cause: {e:?}"
            );
        }
    }
    Some(result)
}

/// A fresh directory under the temporary directory, removed when dropped (unless the
/// thread panics, so that a failure can be looked at).
struct Run {
    path: PathBuf,
}

impl Run {
    fn new() -> Run {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir().join(format!("shoal-fuzz-flatten-{}", std::process::id()));
        fs::create_dir_all(&base).expect("create the fuzz directory");
        let path = base.join(COUNTER.fetch_add(1, Ordering::Relaxed).to_string());
        fs::create_dir(&path).expect("create a run directory");
        fs::create_dir(path.join(SENTINEL)).expect("create the sentinel");
        Run { path }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // The tree may hold mode-000 directories; root removes them all the same.
        fs::remove_dir_all(&self.path).expect("remove a run directory");
        if let Some(base) = self.path.parent() {
            // Fails while another thread's run is there, which is fine.
            let _ = fs::remove_dir(base);
        }
    }
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list a directory")
        .map(|e| {
            e.expect("read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Walks a tree, never through a symlink, and fails on any whiteout name.
fn no_whiteouts(dir: &Path) {
    for entry in fs::read_dir(dir).expect("list a tree directory") {
        let entry = entry.expect("read a tree entry");
        let name = entry.file_name();
        assert!(
            !name.as_encoded_bytes().starts_with(b".wh."),
            "a whiteout survived: {}",
            entry.path().display()
        );
        if entry.file_type().expect("a tree entry's type").is_dir() {
            no_whiteouts(&entry.path());
        }
    }
}
