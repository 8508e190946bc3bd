//! The receiver's side: a pack from a peer applied into the store, the layer's tar
//! rebuilt from its recipe, and the blob re-created from the tar, checked by digest.
//!
//! The layer's recipe is built like an ingest's (`begin_recipe`, chunks in batches,
//! `complete_recipe`), so a kill at any point leaves what an interrupted ingest
//! leaves: a partial recipe released at the next start, and a partial blob that is
//! dropped before anyone trusts it (see [`rebuild`]).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::mpsc;

use shoal_diff::gzip;
use shoal_diff::pack::{self, Base, Limits, Summary};
use shoal_protocol::digest::DigestHasher;
use shoal_protocol::recipe::{self, ChunkId, Recipe};
use shoal_protocol::{Digest, PIECE_SIZE};

use super::make::StoreChunks;
use super::profile_kind;
use crate::store::recipes::RecipeRecord;
use crate::store::{Store, StoreError};

/// What a rebuild did.
#[derive(Debug)]
pub struct Rebuilt {
    /// The pack's account of itself (checked as it was applied).
    pub summary: Summary,
    /// Bytes of the layer's tar.
    pub tar_size: u64,
}

/// Why a layer was not rebuilt from a pack. Nothing of it is left in the store.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The pack is wrong: it does not decode, or yields bytes that do not match their
    /// ids. The peer that made it sent garbage or lied.
    #[error("the pack is bad: {0}")]
    Pack(#[from] pack::PackError),
    /// The pack is for another layer.
    #[error("the pack is for layer {got}, not {expected}")]
    OtherLayer {
        /// The layer asked for.
        expected: Digest,
        /// The layer the pack names.
        got: Digest,
    },
    /// The pack builds on a layer this node no longer holds (GC removed it meanwhile).
    #[error("the pack builds on layer {0}, which this node no longer holds")]
    MissingBase(Digest),
    /// A chunk of a held layer is gone from the store.
    #[error("chunk {0} of a held layer is missing or damaged")]
    MissingChunk(ChunkId),
    /// The pack names no way to re-create the blob from its tar.
    #[error("the pack names no encoder to re-create the blob with")]
    NoProfile,
    /// The tar did not rebuild (a chunk missing, or the diff_id differs).
    #[error("rebuilding the tar: {0}")]
    Tar(#[from] shoal_diff::RecreateError),
    /// Compressing the tar failed.
    #[error("compressing the tar: {0}")]
    Compress(String),
    /// The re-created blob is not the layer: its bytes differ from the origin's.
    #[error(
        "the re-created blob has digest {actual} and {size} bytes, not {expected} and {expected_size}"
    )]
    Differs {
        /// The layer's digest.
        expected: Digest,
        /// Its size.
        expected_size: u64,
        /// What the bytes hashed to.
        actual: Digest,
        /// How many there were.
        size: u64,
    },
}

impl RebuildError {
    /// Whether the peer that made the pack is to blame: its pack does not decode or
    /// yields bytes that are not what it says. A blob that differs is not proof: the
    /// encoder profile is a guess from the blob's first megabytes.
    pub fn blames_peer(&self) -> bool {
        match self {
            RebuildError::Pack(e) => e.is_bad_pack(),
            RebuildError::OtherLayer { .. } => true,
            _ => false,
        }
    }
}

/// Chunks handed to the store per batch.
const BATCH_BYTES: usize = 8 << 20;

/// Rebuilds `layer` (a blob of `blob_size` bytes) from `pack`: its recipe and chunks
/// into the store, then the blob itself, complete and checked by digest. The caller
/// holds leases on the layer and the layers the pack builds on, and has made sure no
/// partial of the layer's blob exists.
pub fn rebuild(
    store: &dyn Store,
    layer: &Digest,
    blob_size: u64,
    pack: &[u8],
) -> Result<Rebuilt, RebuildError> {
    let header = pack::read_header(pack)?;
    if header.target_layer != *layer {
        return Err(RebuildError::OtherLayer {
            expected: *layer,
            got: header.target_layer,
        });
    }
    let mut held: Vec<(Digest, Vec<u8>, Recipe)> = Vec::new();
    for digest in &header.bases {
        let record = store
            .recipe(digest)?
            .ok_or(RebuildError::MissingBase(*digest))?;
        let decoded =
            recipe::decode(&record.encoded).map_err(|_| RebuildError::MissingBase(*digest))?;
        held.push((*digest, record.encoded, decoded));
    }
    let bases: Vec<Base<'_>> = held
        .iter()
        .map(|(digest, encoded, recipe)| Base {
            layer: *digest,
            recipe,
            encoded,
        })
        .collect();
    store.begin_recipe(layer)?;
    let result = apply_and_write(store, layer, blob_size, pack, &bases);
    if result.is_err() {
        store.discard_partial_recipe(layer)?;
        store.discard_partial(layer)?;
    }
    result
}

fn apply_and_write(
    store: &dyn Store,
    layer: &Digest,
    blob_size: u64,
    pack: &[u8],
    bases: &[Base<'_>],
) -> Result<Rebuilt, RebuildError> {
    let mut chunks = Chunks::new(store, *layer);
    let mut store_failed = None;
    let applied = pack::apply(
        pack,
        bases,
        &StoreChunks(store),
        &mut |c, bytes| {
            chunks.add(c.id, bytes).map_err(|e| {
                let message = e.to_string();
                store_failed = Some(e);
                pack::PackError::Sink(message.into())
            })
        },
        &Limits::default(),
    );
    let applied = match (applied, store_failed) {
        (_, Some(e)) => return Err(e.into()),
        (result, None) => result?,
    };
    // The chunks the layer shares with held layers: referenced by this layer too.
    for id in applied.recipe.chunk_ids() {
        if chunks.delivered.contains(&id) {
            continue;
        }
        let bytes = store
            .chunk(&id)?
            .filter(|b| id.matches(b))
            .ok_or(RebuildError::MissingChunk(id))?;
        chunks.add(id, &bytes)?;
    }
    chunks.flush()?;
    let profile = applied.profile.as_deref().ok_or(RebuildError::NoProfile)?;
    write_blob(store, layer, blob_size, &applied.recipe, profile)?;
    store.complete_recipe(
        layer,
        &RecipeRecord {
            tar_size: applied.recipe.tar_size,
            encoded: recipe::encode(&applied.recipe),
        },
    )?;
    Ok(Rebuilt {
        summary: applied.summary,
        tar_size: applied.recipe.tar_size,
    })
}

/// The chunks of the layer being rebuilt, handed to the store in batches.
struct Chunks<'a> {
    store: &'a dyn Store,
    layer: Digest,
    batch: Vec<(ChunkId, Vec<u8>)>,
    batch_bytes: usize,
    delivered: HashSet<ChunkId>,
}

impl<'a> Chunks<'a> {
    fn new(store: &'a dyn Store, layer: Digest) -> Self {
        Chunks {
            store,
            layer,
            batch: Vec::new(),
            batch_bytes: 0,
            delivered: HashSet::new(),
        }
    }

    fn add(&mut self, id: ChunkId, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.delivered.insert(id) {
            return Ok(());
        }
        self.batch_bytes += bytes.len();
        self.batch.push((id, bytes.to_vec()));
        if self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let refs: Vec<(ChunkId, &[u8])> = self
            .batch
            .iter()
            .map(|(id, b)| (*id, b.as_slice()))
            .collect();
        self.store.add_chunks(&self.layer, &refs)?;
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

/// Writes the blob `profile` describes for the tar of `recipe` into the store as the
/// pieces of `layer`, and completes it if its digest and size match.
fn write_blob(
    store: &dyn Store,
    layer: &Digest,
    size: u64,
    recipe: &Recipe,
    profile: &[u8],
) -> Result<(), RebuildError> {
    let chunk = |id: &ChunkId| store.chunk(id).ok().flatten();
    let mut out = PieceWriter::new(store, *layer, size);
    match profile.split_first() {
        Some((&profile_kind::TAR, [])) => {
            shoal_diff::recreate(recipe, chunk, &mut out)?;
        }
        Some((&profile_kind::FLAT, [])) => {
            let mut gz = super::FlatGzip::new(&mut out);
            let made = shoal_diff::recreate(recipe, chunk, &mut gz).map(|_| ());
            let finished = gz.finish().map(|_| ());
            match (made, finished) {
                (Ok(()), Ok(())) => {}
                (Err(shoal_diff::RecreateError::Write(_)), _) | (Ok(()), Err(_)) => {
                    return Err(out
                        .failure()
                        .unwrap_or(RebuildError::Compress("the flat layer's gzip".into())));
                }
                (Err(e), _) => return Err(e.into()),
            }
        }
        Some((&profile_kind::GZIP, encoded)) => {
            let profile = gzip::Profile::decode(encoded).map_err(|_| RebuildError::NoProfile)?;
            let (tar_tx, tar_rx) = mpsc::sync_channel::<Vec<u8>>(4);
            let (tar, compressed) = std::thread::scope(|scope| {
                let out = &mut out;
                let compressing = scope
                    .spawn(move || gzip::recompress(&profile, ChannelReader::new(tar_rx), out));
                let mut writer = ChannelWriter::new(tar_tx);
                let tar = shoal_diff::recreate(recipe, chunk, &mut writer).and_then(|n| {
                    writer
                        .finish()
                        .map(|()| n)
                        .map_err(shoal_diff::RecreateError::Write)
                });
                drop(writer);
                let compressed = compressing
                    .join()
                    .map_err(|_| RebuildError::Compress("the compressing thread panicked".into()));
                (tar, compressed)
            });
            match (tar, compressed) {
                (Ok(_), Ok(Ok(_))) => {}
                // The compressor's failure is the cause when it stopped reading.
                (Err(shoal_diff::RecreateError::Write(_)), Ok(Err(e))) => {
                    return Err(out
                        .failure()
                        .unwrap_or(RebuildError::Compress(e.to_string())));
                }
                (Err(e), _) => return Err(e.into()),
                (Ok(_), Ok(Err(e))) => {
                    return Err(out
                        .failure()
                        .unwrap_or(RebuildError::Compress(e.to_string())));
                }
                (Ok(_), Err(e)) => return Err(e),
            }
        }
        _ => return Err(RebuildError::NoProfile),
    }
    out.finish()
}

/// Cuts what it is given into the pieces of a blob of known size and stores them,
/// hashing as it goes.
struct PieceWriter<'a> {
    store: &'a dyn Store,
    layer: Digest,
    size: u64,
    buf: Vec<u8>,
    index: u64,
    written: u64,
    hasher: DigestHasher,
    failed: Option<StoreError>,
}

impl<'a> PieceWriter<'a> {
    fn new(store: &'a dyn Store, layer: Digest, size: u64) -> Self {
        PieceWriter {
            store,
            layer,
            size,
            buf: Vec::with_capacity(PIECE_SIZE as usize),
            index: 0,
            written: 0,
            hasher: DigestHasher::new(),
            failed: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        match self
            .store
            .put_piece(&self.layer, self.size, self.index, bytes)
        {
            Ok(_) => {
                self.index += 1;
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                self.failed = Some(e);
                Err(io::Error::other(message))
            }
        }
    }

    /// The store's failure behind a write error, if that was the cause.
    fn failure(&mut self) -> Option<RebuildError> {
        self.failed.take().map(RebuildError::from)
    }

    /// Stores the last piece and completes the blob if it is the layer.
    fn finish(mut self) -> Result<(), RebuildError> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            if self.put(&last).is_err() {
                return Err(self
                    .failure()
                    .unwrap_or(RebuildError::Compress("storing the last piece".into())));
            }
        }
        let actual = self.hasher.finish();
        if actual != self.layer || self.written != self.size {
            return Err(RebuildError::Differs {
                expected: self.layer,
                expected_size: self.size,
                actual,
                size: self.written,
            });
        }
        self.store.complete(&self.layer, self.size, None)?;
        Ok(())
    }
}

impl Write for PieceWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.written + bytes.len() as u64 > self.size {
            // Longer than the blob: it cannot be the layer. Counted so that the error
            // names a size past the blob's.
            self.written += bytes.len() as u64;
            return Err(io::Error::other(
                "the re-created blob is longer than the layer",
            ));
        }
        self.written += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = PIECE_SIZE as usize - self.buf.len();
            let take = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == PIECE_SIZE as usize {
                let piece =
                    std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE_SIZE as usize));
                self.put(&piece)?;
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes of tar handed to the compressing thread at a time.
const HANDOFF: usize = 256 << 10;

/// The tar side of the pipe between rebuilding and compressing.
struct ChannelWriter {
    tx: mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::SyncSender<Vec<u8>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(HANDOFF),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(HANDOFF));
        self.tx
            .send(full)
            .map_err(|_| io::Error::other("the compressor stopped reading"))
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= HANDOFF {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressor's side of the pipe: reads until the writer is dropped.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.current = next;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
