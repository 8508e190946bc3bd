//! Layer ingest: every layer the node holds gets a recipe of its uncompressed tar, with
//! file contents cut into chunks stored once across all layers and images.
//!
//! # When
//! Serving an image manifest tells the node which blobs are layers and, through the
//! image config, what each layer's uncompressed sha256 (diff_id) must be. A layer is
//! ingested as soon as both are known and its blob is complete: right away for layers
//! the store holds, or the moment their fetch verifies. Ingest reads the blob from the
//! store, so it only ever works on bytes whose digest matched; it never slows a fetch.
//! Layers are ingested one at a time on the blocking pool, keeping one core for serving.
//!
//! # Checks
//! The blob is decompressed (gzip, zstd, or a plain tar, told apart by magic bytes) as
//! it is read, with a bound on the inflated size and on the inflation ratio, and cut by
//! [`shoal_diff::RecipeBuilder`]. The recipe is kept only if the tar's sha256 equals
//! the diff_id from the config; anything else drops every chunk reference it took.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoal_diff::{RecipeBuilder, TarError};
use shoal_protocol::Digest;
use shoal_protocol::manifest::{Descriptor, Manifest, ManifestKind};
use shoal_protocol::recipe::{self, ChunkId};
use tokio::sync::mpsc;

use crate::blobs::{BlobError, Blobs, Source};
use crate::stats::Stats;
use crate::store::recipes::RecipeRecord;
use crate::store::{PieceReadError, Store, StoreError, read_piece};

/// Largest image config read to learn diff_ids.
const MAX_CONFIG: u64 = 8 << 20;
/// Chunk bytes gathered before they are written to the store in one batch.
const CHUNK_BATCH: usize = 8 << 20;
/// Inflated bytes below which the ratio bound is not applied (small layers of empty
/// files inflate a lot and harm nobody).
const RATIO_FLOOR: u64 = 64 << 20;
/// Most layers remembered as awaiting their blob.
const MAX_EXPECTED: usize = 100_000;

/// Bounds on what a layer may inflate to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest uncompressed tar accepted [default: 64 GiB].
    pub max_tar_size: u64,
    /// Largest ratio of uncompressed to compressed bytes, once past 64 MiB [default: 200].
    pub max_ratio: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_tar_size: 64 << 30,
            max_ratio: 200,
        }
    }
}

/// Why a layer has no recipe.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The blob is not gzip, zstd or a tar.
    #[error("layer {layer} is not a gzip, zstd or tar stream (it starts with {head})")]
    UnknownFormat {
        /// The layer.
        layer: Digest,
        /// Its first bytes, in hex.
        head: String,
    },
    /// The blob inflates past the limits: a decompression bomb or a misconfigured limit.
    #[error(
        "layer {layer} inflates past {limit} ({inflated} bytes from {compressed}); it was not ingested"
    )]
    TooLarge {
        /// The layer.
        layer: Digest,
        /// Bytes inflated when it was stopped.
        inflated: u64,
        /// Compressed bytes read by then.
        compressed: u64,
        /// Which limit.
        limit: String,
    },
    /// The compressed stream is corrupt.
    #[error("layer {layer}: the {format} stream is corrupt: {detail}")]
    Decompress {
        /// The layer.
        layer: Digest,
        /// gzip or zstd.
        format: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// The uncompressed stream is not a tar shoal can take apart.
    #[error("layer {layer}: {source}")]
    Tar {
        /// The layer.
        layer: Digest,
        /// Where the tar went wrong.
        source: TarError,
    },
    /// The tar's sha256 is not the diff_id the image config gives.
    #[error(
        "layer {layer} decompresses to a tar with sha256 {actual}, but the image config says {expected}"
    )]
    DiffIdMismatch {
        /// The layer.
        layer: Digest,
        /// From the config.
        expected: Digest,
        /// What the tar hashed to.
        actual: Digest,
    },
    /// The image config is unusable.
    #[error("image config {config} is unusable: {detail}")]
    Config {
        /// The config blob.
        config: Digest,
        /// What is wrong.
        detail: String,
    },
    /// Reading a blob failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A stored piece is damaged.
    #[error(transparent)]
    Piece(#[from] PieceReadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The ingest service.
pub struct Ingest {
    store: Arc<dyn Store>,
    blobs: Arc<Blobs>,
    stats: Arc<Stats>,
    limits: IngestLimits,
    /// Layers whose diff_id is known but whose blob is not complete yet.
    // std Mutex: map operations only.
    expected: Mutex<HashMap<Digest, Digest>>,
    queue: mpsc::UnboundedSender<(Digest, Digest)>,
    /// Layers queued or being ingested.
    pending: AtomicU64,
}

impl Ingest {
    /// Starts the service and its worker. Blob completions arrive on `completed`.
    pub fn start(
        store: Arc<dyn Store>,
        blobs: Arc<Blobs>,
        stats: Arc<Stats>,
        limits: IngestLimits,
        mut completed: mpsc::UnboundedReceiver<Digest>,
    ) -> Arc<Self> {
        let (queue, mut jobs) = mpsc::unbounded_channel();
        let ingest = Arc::new(Ingest {
            store,
            blobs,
            stats,
            limits,
            expected: Mutex::new(HashMap::new()),
            queue,
            pending: AtomicU64::new(0),
        });
        let worker = Arc::clone(&ingest);
        tokio::spawn(async move {
            while let Some((layer, diff_id)) = jobs.recv().await {
                worker.run_one(layer, diff_id).await;
                worker.pending.fetch_sub(1, Ordering::Relaxed);
            }
        });
        let watcher = Arc::clone(&ingest);
        tokio::spawn(async move {
            while let Some(digest) = completed.recv().await {
                let expected = watcher.expected().remove(&digest);
                if let Some(diff_id) = expected {
                    watcher.enqueue(digest, diff_id);
                }
            }
        });
        ingest
    }

    /// Layers queued or being ingested.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    fn expected(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Digest>> {
        self.expected.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, layer: Digest, diff_id: Digest) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if self.queue.send((layer, diff_id)).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Called when an image manifest was served: learns its layers' diff_ids from the
    /// config and ingests the layers as they become available.
    pub fn image_seen(self: &Arc<Self>, source: &Source, manifest: &Manifest) {
        let ManifestKind::Image { config, layers } = &manifest.kind else {
            return;
        };
        let (this, source, config, layers) = (
            Arc::clone(self),
            source.clone(),
            config.clone(),
            layers.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = this.learn(&source, &config, &layers).await {
                tracing::warn!(config = %config.digest, "cannot ingest the image's layers: {e}");
            }
        });
    }

    async fn learn(
        &self,
        source: &Source,
        config: &Descriptor,
        layers: &[Descriptor],
    ) -> Result<(), IngestError> {
        if config.size > MAX_CONFIG {
            return Err(IngestError::Config {
                config: config.digest,
                detail: format!("{} bytes", config.size),
            });
        }
        let diff_ids = self.diff_ids(source, config.digest).await?;
        if diff_ids.len() != layers.len() {
            return Err(IngestError::Config {
                config: config.digest,
                detail: format!("{} diff_ids for {} layers", diff_ids.len(), layers.len()),
            });
        }
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            // Record the expectation before looking at the store: a fetch that
            // completes in between then finds it (and the watcher enqueues), or this
            // check finds the blob held. Whoever takes the entry out of the map
            // enqueues, so the layer is ingested exactly once.
            {
                let mut expected = self.expected();
                if expected.len() >= MAX_EXPECTED {
                    expected.clear();
                }
                expected.insert(layer.digest, diff_id);
            }
            let (store, d) = (Arc::clone(&self.store), layer.digest);
            let (held, has_recipe) =
                tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                    Ok((store.blob(&d)?.is_some(), store.recipe(&d)?.is_some()))
                })
                .await
                .map_err(|e| IngestError::Internal(e.to_string()))??;
            if has_recipe {
                self.expected().remove(&layer.digest);
            } else if held && self.expected().remove(&layer.digest).is_some() {
                self.enqueue(layer.digest, diff_id);
            }
        }
        Ok(())
    }

    /// The diff_ids of image config `config`, read through the blob service.
    async fn diff_ids(&self, source: &Source, config: Digest) -> Result<Vec<Digest>, IngestError> {
        use futures_util::StreamExt;
        let open = self.blobs.open(source, config).await?.unserved();
        if open.size() > MAX_CONFIG {
            return Err(IngestError::Config {
                config,
                detail: format!("{} bytes", open.size()),
            });
        }
        let size = open.size();
        let mut bytes = Vec::with_capacity(size as usize);
        let mut stream = Box::pin(open.stream(shoal_protocol::range::ByteRange {
            start: 0,
            end: size,
        }));
        while let Some(part) = stream.next().await {
            let part = part.map_err(|e| IngestError::Config {
                config,
                detail: e.to_string(),
            })?;
            bytes.extend_from_slice(&part);
        }
        #[derive(serde::Deserialize)]
        struct Config {
            rootfs: RootFs,
        }
        #[derive(serde::Deserialize)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        let parsed: Config = serde_json::from_slice(&bytes).map_err(|e| IngestError::Config {
            config,
            detail: e.to_string(),
        })?;
        parsed
            .rootfs
            .diff_ids
            .iter()
            .map(|d| {
                d.parse().map_err(|e| IngestError::Config {
                    config,
                    detail: format!("diff_id {d:?}: {e}"),
                })
            })
            .collect()
    }

    async fn run_one(&self, layer: Digest, diff_id: Digest) {
        let (store, limits) = (Arc::clone(&self.store), self.limits);
        // GC leaves the blob (and its recipe) alone while it is read.
        let lease = self.blobs.leases().take(layer);
        let result = tokio::task::spawn_blocking(move || {
            let _lease = lease;
            ingest_layer(store.as_ref(), &layer, &diff_id, limits)
        })
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))
        .and_then(|r| r);
        match result {
            Ok(Some(summary)) => {
                Stats::add(&self.stats.layers_ingested, 1);
                tracing::info!(
                    %layer,
                    entries = summary.entries,
                    tar_bytes = summary.tar_size,
                    new_chunks = summary.new_chunks,
                    "layer ingested"
                );
            }
            Ok(None) => {}
            Err(e) => {
                Stats::add(&self.stats.ingest_failures, 1);
                tracing::warn!(%layer, "layer not ingested: {e}");
            }
        }
    }
}

/// What one ingest did.
#[derive(Debug)]
pub struct IngestSummary {
    /// Tar entries.
    pub entries: usize,
    /// Uncompressed tar bytes.
    pub tar_size: u64,
    /// Chunks the store did not have.
    pub new_chunks: usize,
}

/// Builds and stores the recipe of `layer` (a complete blob), checking it against
/// `diff_id`. Returns `None` if the recipe was already there.
pub fn ingest_layer(
    store: &dyn Store,
    layer: &Digest,
    diff_id: &Digest,
    limits: IngestLimits,
) -> Result<Option<IngestSummary>, IngestError> {
    if store.recipe(layer)?.is_some() {
        return Ok(None);
    }
    let record = store
        .blob(layer)?
        .ok_or_else(|| IngestError::Internal(format!("{layer} is not stored")))?;
    store.begin_recipe(layer)?;
    let result = build(store, layer, &record.pieces, limits).and_then(|(recipe, new_chunks)| {
        if recipe.diff_id != *diff_id {
            return Err(IngestError::DiffIdMismatch {
                layer: *layer,
                expected: *diff_id,
                actual: recipe.diff_id,
            });
        }
        let summary = IngestSummary {
            entries: recipe.entries.len(),
            tar_size: recipe.tar_size,
            new_chunks,
        };
        store.complete_recipe(
            layer,
            &RecipeRecord {
                tar_size: recipe.tar_size,
                encoded: recipe::encode(&recipe),
            },
        )?;
        Ok(summary)
    });
    if result.is_err() {
        store.discard_partial_recipe(layer)?;
    }
    result.map(Some)
}

/// Format of a layer blob, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Gzip,
    Zstd,
    Tar,
}

fn sniff(layer: &Digest, head: &[u8]) -> Result<Format, IngestError> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Format::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Format::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Ok(Format::Tar)
    } else {
        Err(IngestError::UnknownFormat {
            layer: *layer,
            head: hex::encode(&head[..head.len().min(8)]),
        })
    }
}

/// Receives the uncompressed tar: bounds it, feeds the recipe builder, and writes the
/// chunks it cuts to the store in batches.
struct TarSink<'a> {
    store: &'a dyn Store,
    layer: Digest,
    limits: IngestLimits,
    builder: RecipeBuilder,
    inflated: u64,
    /// Compressed bytes handed to the decoder so far (set by the caller).
    compressed: u64,
    batch: Vec<(ChunkId, Vec<u8>)>,
    batch_bytes: usize,
    new_chunks: usize,
    /// The typed error behind an `io::Error` this sink returned.
    error: Option<IngestError>,
}

impl TarSink<'_> {
    fn take(&mut self, data: &[u8]) -> Result<(), IngestError> {
        self.inflated += data.len() as u64;
        let too_large = |limit: String| IngestError::TooLarge {
            layer: self.layer,
            inflated: self.inflated,
            compressed: self.compressed,
            limit,
        };
        if self.inflated > self.limits.max_tar_size {
            return Err(too_large(format!(
                "max_tar_size {}",
                self.limits.max_tar_size
            )));
        }
        if self.inflated > RATIO_FLOOR
            && self.inflated > self.compressed.saturating_mul(self.limits.max_ratio)
        {
            return Err(too_large(format!("max_ratio {}", self.limits.max_ratio)));
        }
        let (batch, batch_bytes) = (&mut self.batch, &mut self.batch_bytes);
        self.builder
            .push(data, &mut |c, bytes| {
                *batch_bytes += bytes.len();
                batch.push((c.id, bytes.to_vec()));
            })
            .map_err(|source| IngestError::Tar {
                layer: self.layer,
                source,
            })?;
        if self.batch_bytes >= CHUNK_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let refs: Vec<(ChunkId, &[u8])> = self
            .batch
            .iter()
            .map(|(id, b)| (*id, b.as_slice()))
            .collect();
        self.new_chunks += self.store.add_chunks(&self.layer, &refs)?;
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

impl Write for TarSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self.take(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                self.error = Some(e);
                Err(io)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Decoder<'a> {
    Gzip(Box<flate2::write::MultiGzDecoder<TarSink<'a>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, TarSink<'a>>>),
    Tar(Box<TarSink<'a>>),
}

impl<'a> Decoder<'a> {
    fn sink(&mut self) -> &mut TarSink<'a> {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
            Decoder::Tar(s) => s,
        }
    }

    fn format(&self) -> &'static str {
        match self {
            Decoder::Gzip(_) => "gzip",
            Decoder::Zstd(_) => "zstd",
            Decoder::Tar(_) => "tar",
        }
    }

    /// Feeds compressed bytes; a sink error comes back as itself, a decoder error as
    /// [`IngestError::Decompress`].
    fn feed(&mut self, layer: &Digest, data: &[u8]) -> Result<(), IngestError> {
        let format = self.format();
        let result = match self {
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Zstd(d) => d.write_all(data),
            Decoder::Tar(s) => s.write_all(data),
        };
        result.map_err(|e| {
            self.sink().error.take().unwrap_or(IngestError::Decompress {
                layer: *layer,
                format,
                detail: e.to_string(),
            })
        })
    }

    fn finish(self, layer: &Digest) -> Result<TarSink<'a>, IngestError> {
        let format = self.format();
        let decompress = |e: std::io::Error| IngestError::Decompress {
            layer: *layer,
            format,
            detail: e.to_string(),
        };
        match self {
            Decoder::Gzip(mut d) => {
                let done = d.try_finish();
                if let Some(e) = d.get_mut().error.take() {
                    return Err(e);
                }
                done.map_err(decompress)?;
                d.finish().map_err(decompress)
            }
            Decoder::Zstd(mut d) => {
                let done = d.flush();
                if let Some(e) = d.get_mut().error.take() {
                    return Err(e);
                }
                done.map_err(decompress)?;
                Ok(d.into_inner())
            }
            Decoder::Tar(s) => Ok(*s),
        }
    }
}

/// Reads the layer's pieces through a decoder into the recipe builder.
fn build(
    store: &dyn Store,
    layer: &Digest,
    pieces: &[shoal_protocol::PieceId],
    limits: IngestLimits,
) -> Result<(recipe::Recipe, usize), IngestError> {
    let mut decoder: Option<Decoder<'_>> = None;
    let mut compressed = 0u64;
    for id in pieces {
        let piece = read_piece(store, id)?;
        let d = match decoder.as_mut() {
            Some(d) => d,
            None => {
                let sink = TarSink {
                    store,
                    layer: *layer,
                    limits,
                    builder: RecipeBuilder::new(),
                    inflated: 0,
                    compressed: 0,
                    batch: Vec::new(),
                    batch_bytes: 0,
                    new_chunks: 0,
                    error: None,
                };
                let new = match sniff(layer, &piece)? {
                    Format::Gzip => {
                        Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink)))
                    }
                    Format::Zstd => {
                        Decoder::Zstd(Box::new(zstd::stream::write::Decoder::new(sink).map_err(
                            |e| IngestError::Decompress {
                                layer: *layer,
                                format: "zstd",
                                detail: e.to_string(),
                            },
                        )?))
                    }
                    Format::Tar => Decoder::Tar(Box::new(sink)),
                };
                decoder.insert(new)
            }
        };
        compressed += piece.len() as u64;
        d.sink().compressed = compressed;
        d.feed(layer, &piece)?;
    }
    let decoder = decoder.ok_or_else(|| IngestError::UnknownFormat {
        layer: *layer,
        head: "an empty blob".into(),
    })?;
    let mut sink = decoder.finish(layer)?;
    sink.flush()?;
    let new_chunks = sink.new_chunks;
    let recipe = sink.builder.finish().map_err(|source| IngestError::Tar {
        layer: *layer,
        source,
    })?;
    Ok((recipe, new_chunks))
}
