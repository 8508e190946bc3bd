//! Layers sent as packs: what changed between versions of an image, instead of whole
//! layer blobs.
//!
//! A node that lacks a layer blob, and holds other layers of the same repository with
//! their recipes, asks a peer that holds the layer for a *pack*
//! ([`shoal_diff::pack`]): the layer's recipe, a delta for each changed file against
//! the same path in a held layer, and the content it lacks as one zstd stream. Chunks
//! it holds cost nothing. From the pack it rebuilds the layer's tar, and from the tar
//! the origin's compressed blob, bit for bit, with the encoder the blob's gzip
//! profile names ([`shoal_diff::gzip`]). Nothing is taken on trust: every chunk is
//! checked by BLAKE3 as the pack yields it, the tar by its diff_id, and the blob by
//! its digest before it counts, like any blob fetched from anywhere.
//!
//! - [`make`]: the maker's side, on the node that holds the layer (synchronous; the
//!   peer engine runs it on a blocking thread and caches what it made).
//! - [`rebuild`]: the receiver's side: the pack applied into the store, the tar
//!   rebuilt and compressed into the blob's pieces (synchronous as well).
//! - [`held_layers`]: which layers the receiver names as held.
//!
//! The exchange on the wire is `p2p/packs.rs`; `blobs.rs` tries a pack before the
//! fleet's pieces when the node holds layers of the blob's repository.
//!
//! # Choices
//!
//! - A pack is offered only when the layer's blob can be re-created: a gzip blob
//!   whose encoder [`shoal_diff::gzip::profile_parts`] recognises, a flat image's
//!   layer (shoal's own gzip, checked whole by the maker once), or an uncompressed
//!   tar. Otherwise, and when the pack would not be at most 90% of the
//!   blob, the maker declines and the receiver fetches pieces.
//! - The receiver publishes nothing of the blob while it rebuilds it: clients and
//!   peers see it only once its digest matched, so a re-creation that turns out wrong
//!   never reaches anyone, even as a prefix.
//! - When no peer holds the layer yet, the node asks the fleet's elected node for it
//!   (which fetches it from the origin, as for any blob nobody holds) and then for its
//!   pack, which that node makes once the layer and its recipe are in: a fleet that
//!   holds v1 and pulls v2 at once takes one copy from the origin and packs from the
//!   elected node, not the layer in pieces. A node waits for this only when it holds
//!   layers of the repository; a layer that packs badly (all new content) then costs
//!   it the elected node's fetch time before its pieces flow.

pub mod make;
pub mod rebuild;

use std::io::Write as _;

use shoal_protocol::wire::MAX_PACK_BASES;
use shoal_protocol::{Digest, RepoName};

use crate::store::{Store, StoreError};

pub use make::{Made, make};
pub use rebuild::{RebuildError, Rebuilt, rebuild};

/// How a pack says the layer blob is re-created from its tar: the first byte of the
/// profile a pack carries.
pub(crate) mod profile_kind {
    /// gzip; [`shoal_diff::gzip::Profile`]'s encoding follows.
    pub const GZIP: u8 = 1;
    /// The blob is the tar itself.
    pub const TAR: u8 = 2;
    /// shoal's own flat-layer gzip (`flatten::archive`): a flat image's layer, which
    /// every node of the same build writes alike.
    pub const FLAT: u8 = 3;
}

/// Bytes of tar handed to the flat layer's encoder at a time.
const FLAT_BLOCK: usize = 64 << 10;

/// Compresses a flat image's layer tar ([`crate::flatten::archive::write_layer`]):
/// shoal's own gzip settings, with the tar handed to the encoder in blocks of
/// [`FLAT_BLOCK`] whatever slices it is written in. zlib-rs's output depends on how
/// its input is sliced; blocked, the blob depends on the tar alone, so any node of the
/// same build re-creates it from the layer's content.
pub struct FlatGzip<W: std::io::Write> {
    gz: flate2::write::GzEncoder<W>,
    block: Vec<u8>,
}

impl<W: std::io::Write> FlatGzip<W> {
    /// The encoder, writing the blob to `out`.
    pub fn new(out: W) -> Self {
        FlatGzip {
            gz: flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(
                    out,
                    flate2::Compression::new(crate::flatten::archive::GZIP_LEVEL),
                ),
            block: Vec::with_capacity(FLAT_BLOCK),
        }
    }

    /// Compresses what is left and writes the gzip trailer; returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.block.is_empty() {
            self.gz.write_all(&self.block)?;
        }
        self.gz.finish()
    }
}

impl<W: std::io::Write> std::io::Write for FlatGzip<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let take = (FLAT_BLOCK - self.block.len()).min(bytes.len());
        self.block.extend_from_slice(&bytes[..take]);
        if self.block.len() == FLAT_BLOCK {
            self.gz.write_all(&self.block)?;
            self.block.clear();
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Layers of `repo` at `upstream` that this node holds with a recipe, the images
/// used most recently first, `except` left out: what a node names as held when it asks
/// for a pack. At most [`MAX_PACK_BASES`].
pub fn held_layers(
    store: &dyn Store,
    upstream: &str,
    repo: &RepoName,
    except: &Digest,
) -> Result<Vec<Digest>, StoreError> {
    let mut images: Vec<_> = store
        .images()?
        .into_iter()
        .filter(|(key, _)| key.upstream == upstream && key.repo == *repo)
        .collect();
    images.sort_by_key(|(_, record)| std::cmp::Reverse(record.last_used));
    let mut held = Vec::new();
    for (_, record) in images {
        for digest in record.refs {
            if held.len() == MAX_PACK_BASES {
                return Ok(held);
            }
            if digest != *except && !held.contains(&digest) && store.recipe(&digest)?.is_some() {
                held.push(digest);
            }
        }
    }
    Ok(held)
}
