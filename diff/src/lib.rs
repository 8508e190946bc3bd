//! File-aware chunking of layer tars: a layer's uncompressed tar in, its
//! [`Recipe`](shoal_protocol::recipe::Recipe) and content chunks out, and the exact tar
//! back from the recipe and its chunks.
//!
//! - [`RecipeBuilder`] takes the tar in slices of any size (as a decompressor hands it
//!   out) and gives each content chunk as soon as FastCDC cuts it. Chunks are cut per
//!   file, headers apart, so a file's chunks are the same in every layer that holds it.
//!   Memory stays bounded whatever the files' sizes. The [`recipe`] module says how
//!   tar headers are read where readers differ.
//! - [`recreate`] writes the tar back from the recipe, checking every chunk and the
//!   diff_id.
//!
//! - [`delta`] makes binary deltas between two versions of a file (bidiff, or zstd with
//!   the old version as a prefix dictionary, segmented for large files) and applies
//!   them, checking base and result by BLAKE3.
//!
//! - [`pack`] makes a layer's transfer plan against layers the receiver holds (their
//!   chunks cost nothing, changed files go as deltas, new content as one zstd stream,
//!   the recipe compressed against theirs) and applies it, checking every chunk.
//!
//! - [`gzip`] re-creates a layer's gzip blob bit for bit from its tar and a profile of
//!   a few dozen bytes naming the encoder (Go's, klauspost's pgzip, zlib) that wrote it.
//!
//! This crate is pure: it takes bytes and returns values, with no files, sockets or
//! async runtime. Its one thread pool is not its own: bidiff sorts with rayon, which
//! starts its global pool (one idle thread per core) the first time a `Bsdiff` delta is
//! made; the sort itself runs on the caller's thread. Everything it reads is untrusted
//! (layers from the origin, recipes and deltas from peers): errors are typed and say
//! where the input was wrong, and no input makes it panic.

#![forbid(unsafe_code)]

mod chunker;
pub mod delta;
mod error;
pub mod gzip;
mod header;
pub mod pack;
pub mod recipe;
mod recreate;

pub use error::{Part, RecreateError, TarError};
pub use recipe::{Limits, MAX_TRAILER, RecipeBuilder, build, chunk_content};
pub use recreate::recreate;
