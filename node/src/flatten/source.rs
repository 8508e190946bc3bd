//! The node's side of flattening, first half: an image as the store holds it (a tag or
//! digest → an index → the platform's manifest → its config and layers), and each
//! layer's uncompressed tar as a stream.
//!
//! # Where a layer's tar comes from
//! - From its **recipe**, when ingest has cut one: `shoal_diff::recreate` re-creates the
//!   exact tar from stored chunks, each checked against its BLAKE3 id. `recreate` writes
//!   and flattening reads, so it runs on a thread of its own feeding a channel of
//!   1 MiB buffers, at most [`IN_FLIGHT`] of them: memory stays bounded whatever the
//!   layer's size. Dropping the reader stops the thread (its next send fails).
//! - From its **blob**, when there is no recipe yet (ingest is behind, or a layer was
//!   past its limits): the stored pieces, each checked against its BLAKE3 id, through a
//!   gzip or zstd decoder told by the magic bytes, or read as a plain tar. The blob's
//!   sha256 matched its digest when it was stored, and the manifest names that digest,
//!   so the content is the image's; the inflated size is bounded by
//!   [`super::FlattenLimits::max_tar_bytes`]. Flattening never waits for ingest and
//!   never writes recipes itself (a second writer of the same recipe would undo the
//!   ingest's references).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;
use shoal_protocol::manifest::{Manifest, ManifestKind};
use shoal_protocol::{Digest, PieceId, Reference};

use crate::config::NodeConfig;
use crate::inspect::{InspectError, parse_image, resolve};
use crate::store::images::ImageKey;
use crate::store::{PieceReadError, Store, StoreError, read_piece};

/// Re-created tar buffers waiting for the flattener.
const IN_FLIGHT: usize = 4;
/// Size of those buffers.
const BUFFER: usize = 1 << 20;
/// Largest manifest read.
const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config read.
const MAX_CONFIG: u64 = 8 << 20;

/// A small stored blob's bytes and media type.
type StoredBlob = (Vec<u8>, Option<String>);

/// Why an image's layers cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The reference is bad or the node never resolved it.
    #[error(transparent)]
    Image(#[from] InspectError),
    /// An index without the platform asked for.
    #[error("{image} has no manifest for platform {wanted} (it offers: {offered}); use --platform")]
    NoPlatform {
        /// The image.
        image: String,
        /// The platform asked for.
        wanted: String,
        /// What the index lists.
        offered: String,
    },
    /// Something the image needs is not in the store.
    #[error(
        "the node does not hold {what} {digest} of {image}; fetch it first: shoal pull {image}"
    )]
    NotHeld {
        /// The image.
        image: String,
        /// What it is (a manifest, the config, a layer).
        what: &'static str,
        /// Its digest.
        digest: Digest,
    },
    /// A stored manifest or config does not parse, or a layer is of a kind that cannot
    /// be flattened.
    #[error("{what} {digest} cannot be used: {detail}")]
    Unusable {
        /// What it is.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// Why.
        detail: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored piece is missing or damaged.
    #[error(transparent)]
    Piece(#[from] PieceReadError),
    /// A thread could not be started.
    #[error("cannot start a thread to re-create a layer: {0}")]
    Thread(io::Error),
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLayer {
    /// The layer blob's digest.
    pub digest: Digest,
    /// Its compressed size, from the manifest.
    pub size: u64,
    /// The uncompressed tar's size, when a recipe says it.
    pub tar_size: Option<u64>,
}

/// An image as the node holds it.
#[derive(Clone, Debug)]
pub struct SourceImage {
    /// The image as asked for.
    pub image: String,
    /// What the reference resolved to (for an index, the index): what pins name.
    pub key: ImageKey,
    /// `registry/repository:tag` when the image was named by a tag.
    pub name: Option<String>,
    /// The image manifest flattened (for an index, the platform's): what trees are
    /// keyed by.
    pub manifest: Digest,
    /// The platform chosen from an index.
    pub platform: Option<String>,
    /// The config blob's digest.
    pub config_digest: Digest,
    /// The config blob.
    pub config: Vec<u8>,
    /// The layers, base first.
    pub layers: Vec<SourceLayer>,
}

impl SourceImage {
    /// Every digest reading the image touches: manifests, config, layers (to lease).
    pub fn digests(&self) -> Vec<Digest> {
        let mut out = vec![self.key.digest, self.manifest, self.config_digest];
        out.extend(self.layers.iter().map(|l| l.digest));
        out
    }
}

/// The platform an index entry must have for this host: `linux/amd64`, `linux/arm64`
/// (what `shoal pull` and flatten choose when not told).
pub fn default_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("linux/{arch}")
}

/// A small stored blob (manifest or config) and its media type, if held.
fn read_small(
    store: &dyn Store,
    digest: &Digest,
    limit: u64,
    what: &'static str,
) -> Result<Option<StoredBlob>, SourceError> {
    let Some(record) = store.blob(digest)? else {
        return Ok(None);
    };
    if record.size > limit {
        return Err(SourceError::Unusable {
            what,
            digest: *digest,
            detail: format!("{} bytes, more than the {limit} allowed", record.size),
        });
    }
    let mut bytes = Vec::with_capacity(record.size as usize);
    for id in &record.pieces {
        bytes.extend_from_slice(&read_piece(store, id)?);
    }
    Ok(Some((bytes, record.media_type)))
}

fn parse_manifest(
    bytes: &[u8],
    media_type: Option<&str>,
    digest: &Digest,
) -> Result<Manifest, SourceError> {
    Manifest::parse(bytes, media_type).map_err(|e| SourceError::Unusable {
        what: "manifest",
        digest: *digest,
        detail: e.to_string(),
    })
}

/// Finds `image` (`[registry/]repository[:tag|@digest]`) in the store, choosing
/// `platform` (default: this host's) from an index.
pub fn load(
    store: &dyn Store,
    config: &NodeConfig,
    image: &str,
    platform: Option<&str>,
) -> Result<SourceImage, SourceError> {
    let (_, _, reference) = parse_image(image)?;
    let key = resolve(store, config, image)?;
    let name = match &reference {
        Reference::Tag(tag) => Some(format!("{}/{}:{tag}", key.upstream, key.repo)),
        Reference::Digest(_) => None,
    };
    let (bytes, media_type) = read_small(store, &key.digest, MAX_MANIFEST, "manifest")?
        .ok_or_else(|| InspectError::Unknown(image.to_owned()))?;
    let top = parse_manifest(&bytes, media_type.as_deref(), &key.digest)?;
    let (manifest_digest, manifest, chosen) = match top.kind {
        ManifestKind::Image { .. } => (key.digest, top, None),
        ManifestKind::Index { manifests } => {
            let wanted = platform.map_or_else(default_platform, str::to_owned);
            let Some(entry) = manifests
                .iter()
                .find(|m| m.platform.as_deref() == Some(wanted.as_str()))
            else {
                let offered: Vec<&str> = manifests
                    .iter()
                    .filter_map(|m| m.platform.as_deref())
                    .collect();
                return Err(SourceError::NoPlatform {
                    image: image.to_owned(),
                    wanted,
                    offered: offered.join(", "),
                });
            };
            let (bytes, media_type) = read_small(store, &entry.digest, MAX_MANIFEST, "manifest")?
                .ok_or_else(|| SourceError::NotHeld {
                image: image.to_owned(),
                what: "the platform's manifest",
                digest: entry.digest,
            })?;
            let child = parse_manifest(&bytes, media_type.as_deref(), &entry.digest)?;
            (entry.digest, child, Some(wanted))
        }
    };
    let ManifestKind::Image {
        config: config_desc,
        layers,
    } = manifest.kind
    else {
        return Err(SourceError::Unusable {
            what: "manifest",
            digest: manifest_digest,
            detail: "an index inside an index".into(),
        });
    };
    let (config_bytes, _) = read_small(store, &config_desc.digest, MAX_CONFIG, "image config")?
        .ok_or_else(|| SourceError::NotHeld {
            image: image.to_owned(),
            what: "the image config",
            digest: config_desc.digest,
        })?;
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        if layer.media_type.contains("encrypted") {
            return Err(SourceError::Unusable {
                what: "layer",
                digest: layer.digest,
                detail: format!("its media type {} is not a plain layer", layer.media_type),
            });
        }
        let tar_size = store.recipe(&layer.digest)?.map(|r| r.tar_size);
        if tar_size.is_none() && store.blob(&layer.digest)?.is_none() {
            return Err(SourceError::NotHeld {
                image: image.to_owned(),
                what: "layer",
                digest: layer.digest,
            });
        }
        out.push(SourceLayer {
            digest: layer.digest,
            size: layer.size,
            tar_size,
        });
    }
    Ok(SourceImage {
        image: image.to_owned(),
        key,
        name,
        manifest: manifest_digest,
        platform: chosen,
        config_digest: config_desc.digest,
        config: config_bytes,
        layers: out,
    })
}

/// The uncompressed tar of `layer`: re-created from its recipe, else decompressed from
/// its blob (see the module docs).
pub fn open_layer(
    store: &Arc<dyn Store>,
    layer: &SourceLayer,
) -> Result<Box<dyn Read + Send>, SourceError> {
    if let Some(record) = store.recipe(&layer.digest)? {
        let recipe =
            shoal_protocol::recipe::decode(&record.encoded).map_err(|e| SourceError::Unusable {
                what: "recipe of layer",
                digest: layer.digest,
                detail: e.to_string(),
            })?;
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let store = Arc::clone(store);
        let digest = layer.digest;
        std::thread::Builder::new()
            .name("shoal-layer-tar".into())
            .spawn(move || {
                let mut out = ChannelWriter {
                    tx,
                    buf: Vec::with_capacity(BUFFER),
                };
                let result =
                    shoal_diff::recreate(&recipe, |id| store.chunk(id).ok().flatten(), &mut out)
                        .map_err(|e| {
                            io::Error::other(format!(
                                "re-creating layer {digest} from its recipe: {e}"
                            ))
                        })
                        .and_then(|_| out.send());
                if let Err(e) = result {
                    // The reader may be gone (it stopped early or failed): nobody to tell.
                    let _ = out.tx.send(Err(e));
                }
            })
            .map_err(SourceError::Thread)?;
        return Ok(Box::new(ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }));
    }
    let record = store.blob(&layer.digest)?.ok_or(SourceError::Unusable {
        what: "layer",
        digest: layer.digest,
        detail: "it is no longer in the store".into(),
    })?;
    let mut pieces = PieceReader {
        store: Arc::clone(store),
        pieces: record.pieces,
        next: 0,
        cur: Bytes::new(),
        pos: 0,
    };
    pieces.fill()?;
    let head = &pieces.cur[..];
    let unusable = |detail: String| SourceError::Unusable {
        what: "layer",
        digest: layer.digest,
        detail,
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(pieces)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder =
            zstd::stream::read::Decoder::new(pieces).map_err(|e| unusable(format!("zstd: {e}")))?;
        Ok(Box::new(decoder))
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Ok(Box::new(pieces))
    } else {
        Err(unusable(format!(
            "it is not a gzip, zstd or tar stream (it starts with {})",
            hex::encode(&head[..head.len().min(8)])
        )))
    }
}

/// Sends what `recreate` writes to the flattener in [`BUFFER`]-sized parts.
struct ChannelWriter {
    tx: SyncSender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// Sends what is buffered.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(BUFFER));
        self.tx
            .send(Ok(full))
            .map_err(|_| io::Error::other("the flattener stopped reading"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BUFFER {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The flattener's end of a re-created tar. The sender hanging up without an error is
/// the end of the tar; a tar cut short that way is caught by the flattener, which
/// insists on the end-of-archive blocks.
struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    self.cur = next;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A stored blob's bytes, piece after piece, each checked on the way.
struct PieceReader {
    store: Arc<dyn Store>,
    pieces: Vec<PieceId>,
    next: usize,
    cur: Bytes,
    pos: usize,
}

impl PieceReader {
    /// Reads the next piece if the current one is used up.
    fn fill(&mut self) -> Result<(), PieceReadError> {
        while self.pos == self.cur.len() && self.next < self.pieces.len() {
            self.cur = read_piece(self.store.as_ref(), &self.pieces[self.next])?;
            self.next += 1;
            self.pos = 0;
        }
        Ok(())
    }
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill().map_err(io::Error::other)?;
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
