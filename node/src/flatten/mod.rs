//! Image flattening: an OCI image's layer tars applied in order into one flat directory
//! tree, with the OCI layer rules, from untrusted input, and with every regular file's
//! content shared across trees as a hardlink to a read-only object.
//!
//! # Goals
//! - The OCI rules exactly (image-spec `layer.md`): later layers override earlier ones;
//!   whiteouts and opaque whiteouts hide only what lower layers put there; a type change
//!   replaces what was there; hardlinks share the inode; modes, owners, mtimes and
//!   xattrs (`security.capability` included) are kept; no whiteout survives.
//! - Safety against hostile layers: no name leaves the tree, nothing is written through
//!   a symlink (paths are walked by descriptors with `O_NOFOLLOW`, see `tree.rs`), and
//!   every input-driven quantity is bounded ([`FlattenLimits`]).
//! - All or nothing: the tree is built in `OUT.partial-…` beside `out` and renamed into
//!   place; on any error it is removed and nothing is left at `out`. Objects written
//!   before an error stay: they are valid content.
//! - Sharing: a file that another tree already has costs a hardlink (see `objects.rs`).
//! - The image's own hardlinks known apart from that sharing: the report lists which
//!   paths the image links together (`links.rs`), so an export links those and only
//!   those.
//!
//! # Non-goals
//! - Decompression and digest checks: layers arrive as uncompressed tar streams the
//!   caller has verified.
//! - Async: flattening is disk-bound, synchronous work for a blocking thread.
//! - Trees that may be written to: a tree's regular files *are* the shared objects, so
//!   trees are to be used read-only (a read-only bind mount or an overlay lower dir).
//!
//! # Needs
//! Root (or equivalent capabilities): owners are set as the image says, devices are
//! made with `mknod`, and `security.*` xattrs are written. `/proc` must be mounted
//! (xattrs on symlinks and devices are set through `/proc/self/fd`).
//!
//! # Layout of the module
//! The core knows nothing of the store: [`flatten`] (`run.rs`, `apply.rs`,
//! `stream.rs`, `tree.rs`, `objects.rs`, `meta.rs`, `path.rs`, `links.rs`, `error.rs`)
//! builds a tree from tar streams and says which of its paths the image hardlinks; it
//! uses nothing else of the node, so the `flatten` fuzz target compiles it on its own
//! (`fuzzing.rs` is that target's harness, run over its seeds by `tests_fuzz.rs`).
//! `export.rs` and
//! `archive.rs` write a tree and those groups back as a deterministic layer and a
//! single-layer OCI archive (headers by `ustar.rs`). The node's side reads images from
//! the store (`source.rs`), keeps trees, exports and objects under `data_dir/flat/`
//! (`service.rs`), prunes what GC let go (`prune.rs`), and mounts trees as overlay
//! lower dirs (`mounts.rs`); `wire.rs` holds what goes between node and CLI and what
//! the node keeps as JSON.

mod apply;
pub mod archive;
mod error;
pub mod export;
pub mod links;
mod meta;
pub mod mounts;
mod objects;
mod path;
mod prune;
mod run;
pub mod service;
pub mod source;
mod stream;
mod tree;
mod ustar;
pub mod wire;

#[cfg(test)]
mod fuzzing;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_export;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_links;

pub use error::{FlattenError, Problem};
pub use export::{ExportError, TarStats};
pub use links::LinkGroups;
pub use objects::Objects;
pub use run::{FlattenLimits, FlattenReport, flatten};
pub use service::{Flat, FlatError, Reporter};
