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
//! Binary deltas between file versions and bit-exact recompression of layer blobs will
//! live here too.
//!
//! This crate is pure: it takes bytes and returns values, with no files, sockets,
//! threads or async runtime. Everything it reads is untrusted (layers from the origin,
//! recipes from peers): errors are typed and say where the input was wrong, and no
//! input makes it panic.

#![forbid(unsafe_code)]

mod chunker;
mod error;
mod header;
pub mod recipe;
mod recreate;

pub use error::{Part, RecreateError, TarError};
pub use recipe::{Limits, MAX_TRAILER, RecipeBuilder, build, chunk_content};
pub use recreate::recreate;
