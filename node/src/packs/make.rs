//! The maker's side: a pack for a peer, from the layer's recipe, the recipes of the
//! layers the peer holds, and the chunks in this node's store.

use shoal_diff::gzip;
use shoal_diff::pack::{self, Base, ChunkSource, Options, Summary};
use shoal_protocol::Digest;
use shoal_protocol::recipe::{self, ChunkId, Recipe};

use super::profile_kind;
use crate::store::{BlobRecord, PieceReadError, Store, StoreError, read_piece};

/// A pack made for a peer.
#[derive(Debug)]
pub struct Made {
    /// The pack's bytes.
    pub pack: Vec<u8>,
    /// What is in it.
    pub summary: Summary,
    /// The layer blob's size.
    pub blob_size: u64,
}

/// Why no pack was made.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A piece of the layer blob was missing or damaged.
    #[error("reading the layer blob: {0}")]
    Piece(#[from] PieceReadError),
    /// A stored recipe did not decode (the store is damaged; fsck drops it).
    #[error("the stored recipe of {layer} does not decode: {detail}")]
    Recipe {
        /// The layer.
        layer: Digest,
        /// The decoder's complaint.
        detail: String,
    },
    /// The pack could not be made (a chunk missing from the store, say).
    #[error(transparent)]
    Pack(#[from] pack::PackError),
}

/// Compressed bytes of a layer's start read to find its encoder: its first 4 MiB of
/// content compress to less than this with any encoder that could have written it.
const PROFILE_HEAD: u64 = 5 << 20;

/// Makes the pack of `layer` for a peer holding `held`; `None` if this node will not:
/// it lacks the layer complete or its recipe, the blob cannot be re-created from its
/// tar, or the pack would not be at most 90% of the blob.
pub fn make(
    store: &dyn Store,
    layer: &Digest,
    held: &[Digest],
    options: &Options,
) -> Result<Option<Made>, MakeError> {
    let (Some(blob), Some(target)) = (store.blob(layer)?, store.recipe(layer)?) else {
        return Ok(None);
    };
    let target_recipe = decode(layer, &target.encoded)?;
    let mut base_recipes: Vec<(Digest, Vec<u8>, Recipe)> = Vec::new();
    for digest in held {
        if digest == layer {
            continue;
        }
        if let Some(record) = store.recipe(digest)? {
            let decoded = decode(digest, &record.encoded)?;
            base_recipes.push((*digest, record.encoded, decoded));
        }
    }
    if !promising(
        store,
        &target_recipe,
        base_recipes.iter().map(|(_, _, r)| r),
    ) {
        tracing::info!(%layer, "no pack: the held layers share too little with this one");
        return Ok(None);
    }
    // After the recipes: finding the encoder compresses the blob's first megabytes
    // again with each candidate, which costs more than a look at recipes.
    let Some(profile) = blob_profile(store, layer, &blob, &target_recipe)? else {
        tracing::info!(%layer, "no pack: the blob's encoder is not one shoal re-creates");
        return Ok(None);
    };
    let bases: Vec<Base<'_>> = base_recipes
        .iter()
        .map(|(digest, encoded, recipe)| Base {
            layer: *digest,
            recipe,
            encoded,
        })
        .collect();
    let (bytes, summary) = pack::make(
        *layer,
        &target_recipe,
        &target.encoded,
        &bases,
        Some(&profile),
        &StoreChunks(store),
        options,
    )?;
    if bytes.len() as u64 * 10 > blob.size * 9 {
        tracing::info!(%layer, pack = bytes.len(), blob = blob.size, "no pack: not clearly smaller than the blob");
        return Ok(None);
    }
    Ok(Some(Made {
        pack: bytes,
        summary,
        blob_size: blob.size,
    }))
}

/// Whether a pack may come out clearly smaller than the layer, judged before any delta
/// is made: at least a quarter of the layer's content bytes are chunks the bases hold,
/// or files whose base file (at the same path, or of the same [`pack::shape`], as the
/// pack would pick it) has content they resemble (a probe:
/// the target file's first [`PROBE_TARGET`] bytes compressed against the base file's
/// first [`PROBE_BASE`] at zstd level 1, which must take under half of their size
/// compressed alone). Layers of unrelated content, even at the same paths, are declined
/// at the cost of a few lookups and milliseconds, not a pack made and thrown away.
fn promising<'a>(
    store: &dyn Store,
    target: &Recipe,
    bases: impl Iterator<Item = &'a Recipe>,
) -> bool {
    let mut chunks = std::collections::HashSet::new();
    let mut paths = std::collections::HashMap::new();
    let mut shapes = std::collections::HashMap::new();
    for base in bases {
        for entry in &base.entries {
            if entry.content.is_some() {
                paths.entry(entry.path.as_str()).or_insert(entry);
                shapes.entry(pack::shape(&entry.path)).or_insert(entry);
            }
            chunks.extend(entry.chunks.iter().map(|c| c.id));
        }
    }
    let (mut total, mut related, mut shared) = (0u64, 0u64, 0u64);
    for entry in &target.entries {
        total += entry.size;
        let own_shared = entry
            .chunks
            .iter()
            .filter(|c| chunks.contains(&c.id))
            .map(|c| u64::from(c.len))
            .sum::<u64>();
        shared += own_shared;
        let resembles = || {
            paths
                .get(entry.path.as_str())
                .or_else(|| shapes.get(&pack::shape(&entry.path)))
                .is_some_and(|base| resembles(store, base, entry))
        };
        // A file mostly made of held chunks needs no probe: its chunks count already.
        related += if own_shared * 2 < entry.size && resembles() {
            entry.size
        } else {
            own_shared
        };
    }
    let unshared = total - shared;
    (total == 0 || related * 4 >= total) && unshared <= MAX_UNSHARED
}

/// Bytes of a changed file probed for resemblance to its base (see [`promising`]).
const PROBE_TARGET: usize = 256 << 10;
/// Bytes of the base file the probe compresses against.
const PROBE_BASE: usize = 1 << 20;
/// The probe's zstd window: base and target together.
const PROBE_WINDOW_LOG: u32 = 21;

/// Whether `target`'s content resembles `base`'s by the probe [`promising`] describes.
/// Content the store cannot give counts as unlike.
fn resembles(store: &dyn Store, base: &recipe::Entry, target: &recipe::Entry) -> bool {
    let (Some(base), Some(target)) = (
        head(store, base, PROBE_BASE),
        head(store, target, PROBE_TARGET),
    ) else {
        return false;
    };
    if target.is_empty() {
        return true;
    }
    // The base then the target, in one frame whose window spans both: what the
    // target adds to the base's compressed size is what it costs given the base.
    let compressed = |bytes: &[u8]| -> std::io::Result<usize> {
        let mut c = zstd::bulk::Compressor::new(1)?;
        c.set_parameter(zstd::stream::raw::CParameter::WindowLog(PROBE_WINDOW_LOG))?;
        Ok(c.compress(bytes)?.len())
    };
    let alone = compressed(&target);
    let against = compressed(&[base.as_slice(), target.as_slice()].concat())
        .and_then(|both| Ok(both.saturating_sub(compressed(&base)?)));
    matches!((alone, against), (Ok(alone), Ok(against)) if against * 2 < alone)
}

/// The first `limit` bytes (or fewer) of an entry's content, from the store.
fn head(store: &dyn Store, entry: &recipe::Entry, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(limit.min(entry.size as usize));
    for chunk in &entry.chunks {
        if out.len() >= limit {
            break;
        }
        let bytes = store.chunk(&chunk.id).ok()??;
        out.extend_from_slice(&bytes[..bytes.len().min(limit - out.len())]);
    }
    Some(out)
}

/// Most content a pack may carry beyond chunks the receiver holds (deltas' targets and
/// new chunks). Making streams that content through zstd's window (8 MiB with the
/// node's options) and one delta at a time, but holds the pack it writes, at most
/// about this much, while the node serves engines and peers within its memory bound.
/// A Debian root with four packages added carries 24 MB of new content.
const MAX_UNSHARED: u64 = 64 << 20;

fn decode(layer: &Digest, encoded: &[u8]) -> Result<Recipe, MakeError> {
    recipe::decode(encoded).map_err(|e| MakeError::Recipe {
        layer: *layer,
        detail: e.to_string(),
    })
}

/// How the blob is re-created from its tar, as a pack carries it: a gzip profile, or
/// the tar itself; `None` for anything else (zstd layers, gzip from an encoder shoal
/// does not reproduce).
fn blob_profile(
    store: &dyn Store,
    layer: &Digest,
    blob: &BlobRecord,
    recipe: &Recipe,
) -> Result<Option<Vec<u8>>, MakeError> {
    let mut head = Vec::new();
    for id in &blob.pieces {
        if head.len() as u64 >= PROFILE_HEAD {
            break;
        }
        head.extend_from_slice(&read_piece(store, id)?);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        let tail = match blob.pieces.last() {
            Some(_) if head.len() as u64 == blob.size => {
                head[head.len().saturating_sub(gzip::TAIL)..].to_vec()
            }
            Some(last) => {
                let bytes = read_piece(store, last)?;
                let mut tail = Vec::new();
                if bytes.len() < gzip::TAIL && blob.pieces.len() >= 2 {
                    // The last piece is shorter than the tail: take the rest from the one before.
                    let before = read_piece(store, &blob.pieces[blob.pieces.len() - 2])?;
                    let need = gzip::TAIL - bytes.len();
                    tail.extend_from_slice(&before[before.len() - need.min(before.len())..]);
                }
                tail.extend_from_slice(&bytes[bytes.len().saturating_sub(gzip::TAIL)..]);
                tail
            }
            None => return Ok(None),
        };
        return Ok(match gzip::profile_parts(&head, &tail) {
            Ok(profile) => {
                let mut out = vec![profile_kind::GZIP];
                out.extend_from_slice(&profile.encode());
                Some(out)
            }
            Err(_) if head[3..10] == [0, 0, 0, 0, 0, 0, 0xff] && is_flat(store, blob, recipe) => {
                Some(vec![profile_kind::FLAT])
            }
            Err(e) => {
                tracing::info!(%layer, header = %hex::encode(&head[..head.len().min(10)]), "no gzip profile: {e}");
                None
            }
        });
    }
    let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
    Ok(is_tar.then(|| vec![profile_kind::TAR]))
}

/// Whether `blob` is the flat-layer gzip of the tar `recipe` describes: the whole blob
/// compared with the tar compressed again, stopping at the first difference.
fn is_flat(store: &dyn Store, blob: &BlobRecord, recipe: &Recipe) -> bool {
    let mut cmp = CompareBlob {
        store,
        pieces: blob.pieces.iter(),
        current: Vec::new(),
        at: 0,
    };
    let chunk = |id: &ChunkId| store.chunk(id).ok().flatten();
    let mut gz = super::FlatGzip::new(&mut cmp);
    if shoal_diff::recreate(recipe, chunk, &mut gz).is_err() {
        return false;
    }
    match gz.finish() {
        Ok(cmp) => cmp.at == cmp.current.len() && cmp.pieces.len() == 0,
        Err(_) => false,
    }
}

/// A writer that accepts only the bytes of a stored blob, in order.
struct CompareBlob<'a, I> {
    store: &'a dyn Store,
    pieces: I,
    current: Vec<u8>,
    at: usize,
}

impl<'a, I: ExactSizeIterator<Item = &'a shoal_protocol::PieceId>> std::io::Write
    for CompareBlob<'a, I>
{
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.at == self.current.len() {
                let id = self
                    .pieces
                    .next()
                    .ok_or_else(|| std::io::Error::other("longer than the blob"))?;
                self.current = read_piece(self.store, id)
                    .map_err(std::io::Error::other)?
                    .to_vec();
                self.at = 0;
            }
            let n = rest.len().min(self.current.len() - self.at);
            if rest[..n] != self.current[self.at..self.at + n] {
                return Err(std::io::Error::other("differs from the blob"));
            }
            self.at += n;
            rest = &rest[n..];
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Chunks from the store, for the pack maker (which checks them against their ids).
pub(crate) struct StoreChunks<'a>(pub &'a dyn Store);

impl ChunkSource for StoreChunks<'_> {
    fn chunk(&self, id: &ChunkId) -> Option<Vec<u8>> {
        match self.0.chunk(id) {
            Ok(Some(bytes)) => Some(bytes.to_vec()),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(chunk = %id, "cannot read a chunk: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_protocol::Digest;
    use shoal_protocol::recipe::{ChunkId, ChunkRef, Entry, EntryKind, Padding};

    use super::resembles;
    use crate::store::content::ContentStore;
    use crate::store::memory::MemoryEngine;
    use crate::store::recipes::RecipeStore;

    /// Noise from a seed (xorshift), which no compressor shrinks.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A file entry whose content is stored as 64 KiB chunks.
    fn stored(store: &ContentStore<MemoryEngine>, path: &str, content: &[u8]) -> Entry {
        let layer = Digest::of(path.as_bytes());
        store.begin_recipe(&layer).unwrap();
        let pieces: Vec<(ChunkId, &[u8])> = content
            .chunks(64 << 10)
            .map(|c| (ChunkId::of(c), c))
            .collect();
        store.add_chunks(&layer, &pieces).unwrap();
        Entry {
            header: vec![0; 512],
            path: path.into(),
            kind: EntryKind::File,
            size: content.len() as u64,
            content: Some(ChunkId::of(content)),
            chunks: pieces
                .iter()
                .map(|(id, c)| ChunkRef {
                    id: *id,
                    len: c.len() as u32,
                })
                .collect(),
            padding: Padding::Zeros,
        }
    }

    #[test]
    fn an_edited_file_resembles_its_base_and_unrelated_noise_does_not() {
        let store = ContentStore::new(MemoryEngine::new()).unwrap();
        let v1 = noise(2 << 20, 1);
        let mut v2 = v1.clone();
        // Shifted by an insert near the start, and edited further on: no chunk of
        // the first MiB is shared, and the content is nearly the same.
        v2.splice(100..100, noise(1000, 2));
        v2[500_000..500_064].copy_from_slice(&noise(64, 3));
        let base = stored(&store, "app/v1", &v1);
        let edited = stored(&store, "app/v2", &v2);
        let other = stored(&store, "app/other", &noise(2 << 20, 4));
        assert!(resembles(&store, &base, &edited));
        assert!(!resembles(&store, &base, &other));
    }
}
