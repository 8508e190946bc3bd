//! What a check of the whole store (`shoal fsck`, [`crate::fsck`]) needs beyond the
//! everyday rules: a scan of every record, piece and chunk as they were at one moment,
//! the atomic drop of everything that uses a damaged piece or chunk, and the
//! correction of a reference count.
//!
//! The scan takes no lock: it reads a snapshot while the node keeps serving and
//! fetching. Drops and corrections are store changes like any other: one batch under
//! the writer lock, through the same reference counting and totals, and each decides
//! on the store as it is then, not as the scan saw it.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use shoal_protocol::recipe::ChunkId;
use shoal_protocol::{Digest, PieceId};

use super::content::{ContentStore, Counted, TOTALS_KEY};
use super::engine::{Batch, Engine, Table};
use super::recipes::{RecipeRecord, RecipeStore};
use super::{BlobRecord, PartialBlob, Store, StoreError, Totals, codec};

/// One thing a [`Store::scan`] saw.
#[derive(Debug)]
pub enum Scanned<'a> {
    /// A complete blob's record.
    Blob(Digest, BlobRecord),
    /// A partial blob's record.
    Partial(Digest, PartialBlob),
    /// A piece's reference record: how many uses it has, and its size.
    PieceRef(PieceId, u64, u64),
    /// A piece's bytes as stored, unverified.
    Piece(PieceId, &'a [u8]),
    /// A chunk's reference record: how many layers use it, and its size.
    ChunkRef(ChunkId, u64, u64),
    /// A chunk's bytes as stored, unverified.
    Chunk(ChunkId, &'a [u8]),
    /// The recipe (complete or being built) of a layer holds a reference to a chunk.
    LayerChunk(Digest, ChunkId),
    /// A complete recipe.
    Recipe(Digest, RecipeRecord),
    /// A recipe being built.
    PartialRecipe(Digest),
    /// The store's totals.
    Totals(Totals),
    /// A record whose key or value does not decode.
    Unreadable {
        /// Its table.
        table: Table,
        /// Its key.
        key: Vec<u8>,
        /// Why it does not decode.
        why: String,
    },
}

/// What dropping the users of a damaged piece or chunk did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The piece or chunk read back sound under the writer lock (it was stored again
    /// since it was checked), so nothing was dropped.
    pub sound: bool,
    /// Complete blobs, or complete recipes, dropped.
    pub complete: Vec<Digest>,
    /// Partial blobs, or recipes being built, dropped.
    pub partial: Vec<Digest>,
    /// References the piece or chunk still has: users stored since the caller's scan,
    /// which it did not name. Its bad bytes stay until those are dropped too.
    pub users_left: u64,
}

fn decode<'a>(table: Table, key: &[u8], value: &'a [u8]) -> Option<Scanned<'a>> {
    let unreadable = |why: String| Scanned::Unreadable {
        table,
        key: key.to_vec(),
        why,
    };
    let label = || format!("{} {}", table.name(), hex::encode(key));
    let item = match (table, key.len()) {
        (Table::Tags | Table::Images | Table::Pins, _) => return None,
        (Table::Meta, _) if key == TOTALS_KEY => codec::decode_totals(value).map(Scanned::Totals),
        (Table::Meta, _) => return None,
        (Table::LayerChunks, 64) => {
            let (mut layer, mut chunk) = ([0u8; 32], [0u8; 32]);
            layer.copy_from_slice(&key[..32]);
            chunk.copy_from_slice(&key[32..]);
            Ok(Scanned::LayerChunk(
                Digest::from_bytes(layer),
                ChunkId(chunk),
            ))
        }
        (Table::LayerChunks, n) => return Some(unreadable(format!("a key of {n} bytes"))),
        (_, 32) => {
            let mut id = [0u8; 32];
            id.copy_from_slice(key);
            let d = Digest::from_bytes(id);
            match table {
                Table::Pieces => Ok(Scanned::Piece(PieceId(id), value)),
                Table::Chunks => Ok(Scanned::Chunk(ChunkId(id), value)),
                Table::PieceRefs => codec::decode_piece_ref(&label(), value)
                    .map(|(n, size)| Scanned::PieceRef(PieceId(id), n, size)),
                Table::ChunkRefs => codec::decode_piece_ref(&label(), value)
                    .map(|(n, size)| Scanned::ChunkRef(ChunkId(id), n, size)),
                Table::Blobs => codec::decode_blob(&label(), value).map(|r| Scanned::Blob(d, r)),
                Table::Partials => {
                    codec::decode_partial(&label(), value).map(|p| Scanned::Partial(d, p))
                }
                Table::Recipes => {
                    codec::decode_recipe_record(&label(), value).map(|r| Scanned::Recipe(d, r))
                }
                Table::PartialRecipes => Ok(Scanned::PartialRecipe(d)),
                // Matched above.
                Table::Tags | Table::Images | Table::Pins | Table::Meta | Table::LayerChunks => {
                    return None;
                }
            }
        }
        (_, n) => return Some(unreadable(format!("a key of {n} bytes"))),
    };
    Some(item.unwrap_or_else(|e| unreadable(e.to_string())))
}

impl<E: Engine> ContentStore<E> {
    /// See [`Store::scan`].
    pub(super) fn scan_snapshot(
        &self,
        tables: &[Table],
        f: &mut dyn FnMut(Scanned<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.engine().with_snapshot(&mut |snapshot| {
            for &table in tables {
                let mut stopped = false;
                snapshot.scan(table, &mut |k, v| {
                    let flow = decode(table, k, v).map_or(ControlFlow::Continue(()), &mut *f);
                    stopped = flow.is_break();
                    flow
                })?;
                if stopped {
                    break;
                }
            }
            Ok(())
        })
    }

    fn ref_count(&self, kind: Counted, id: &[u8; 32]) -> Result<u64, StoreError> {
        match self.engine().get(kind.tables().1, id)? {
            Some(v) => Ok(codec::decode_piece_ref("reference count", &v)?.0),
            None => Ok(0),
        }
    }

    /// Whether `id`'s bytes are stored and hash to it.
    fn sound(&self, kind: Counted, id: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(match self.engine().get_bytes(kind.tables().0, id)? {
            Some(bytes) => match kind {
                Counted::Pieces => PieceId(*id).matches(&bytes),
                Counted::Chunks => ChunkId(*id).matches(&bytes),
            },
            None => false,
        })
    }

    /// See [`Store::drop_piece_users`].
    pub(super) fn drop_piece_users_now(
        &self,
        id: &PieceId,
        blobs: &[Digest],
    ) -> Result<Dropped, StoreError> {
        let mut totals = self.lock_writer();
        if self.sound(Counted::Pieces, &id.0)? {
            return Ok(Dropped {
                sound: true,
                ..Dropped::default()
            });
        }
        let mut next = *totals;
        let mut batch = Batch::default();
        let mut dropped = Dropped::default();
        let mut released = Vec::new();
        for digest in blobs.iter().collect::<BTreeSet<_>>() {
            let Some(record) = self.blob(digest)? else {
                continue;
            };
            if record.pieces.contains(id) {
                released.extend(record.pieces);
                batch.delete(Table::Blobs, digest.as_bytes());
                next.blobs = next.blobs.saturating_sub(1);
                next.blob_bytes = next.blob_bytes.saturating_sub(record.size);
                dropped.complete.push(*digest);
            }
        }
        // Partials are few (fetches under way or interrupted), so all are looked at,
        // including those begun since the caller's scan.
        for digest in self.partials()? {
            let Some(partial) = self.partial(&digest)? else {
                continue;
            };
            // Pieces held beyond the prefix are uses like any other.
            if partial.piece_ids().any(|p| p == id) {
                released.extend(partial.piece_ids().copied());
                batch.delete(Table::Partials, digest.as_bytes());
                next.partial_blobs = next.partial_blobs.saturating_sub(1);
                dropped.partial.push(digest);
            }
        }
        if !batch.ops.is_empty() {
            let deltas = Self::release(released.iter().map(|p| &p.0));
            self.apply_refs(Counted::Pieces, &mut batch, &mut next, deltas)?;
            self.commit_batch(&mut totals, next, batch)?;
        }
        dropped.users_left = self.ref_count(Counted::Pieces, &id.0)?;
        Ok(dropped)
    }

    /// See [`RecipeStore::drop_chunk_users`].
    pub(super) fn drop_chunk_users_now(
        &self,
        id: &ChunkId,
        layers: &[Digest],
    ) -> Result<Dropped, StoreError> {
        let mut totals = self.lock_writer();
        if self.sound(Counted::Chunks, &id.0)? {
            return Ok(Dropped {
                sound: true,
                ..Dropped::default()
            });
        }
        let mut next = *totals;
        let mut batch = Batch::default();
        let mut dropped = Dropped::default();
        let mut released = Vec::new();
        let mut candidates: BTreeSet<Digest> = layers.iter().copied().collect();
        // Recipes being built are few; all are looked at, as for partial blobs.
        candidates.extend(self.partial_recipes()?);
        for layer in candidates {
            let mut key = layer.as_bytes().to_vec();
            key.extend_from_slice(&id.0);
            if self.engine().get(Table::LayerChunks, &key)?.is_none() {
                continue;
            }
            if let Some(record) = self.recipe(&layer)? {
                batch.delete(Table::Recipes, layer.as_bytes());
                next.recipes = next.recipes.saturating_sub(1);
                next.recipe_tar_bytes = next.recipe_tar_bytes.saturating_sub(record.tar_size);
                dropped.complete.push(layer);
            } else if self
                .engine()
                .get(Table::PartialRecipes, layer.as_bytes())?
                .is_some()
            {
                batch.delete(Table::PartialRecipes, layer.as_bytes());
                next.partial_recipes = next.partial_recipes.saturating_sub(1);
                dropped.partial.push(layer);
            } else {
                // References without a recipe: not this drop's to release.
                continue;
            }
            for k in self
                .engine()
                .keys_with_prefix(Table::LayerChunks, layer.as_bytes())?
            {
                let chunk: [u8; 32] = k[32..].try_into().map_err(|_| StoreError::BadRecord {
                    key: format!("layer chunk of {layer}"),
                    why: format!("key of {} bytes", k.len()),
                })?;
                released.push(chunk);
                batch.delete(Table::LayerChunks, &k);
            }
        }
        if !batch.ops.is_empty() {
            // One release for every layer together: two layers releasing the same
            // chunk in one batch must both count.
            let deltas = Self::release(released.iter());
            self.apply_refs(Counted::Chunks, &mut batch, &mut next, deltas)?;
            self.commit_batch(&mut totals, next, batch)?;
        }
        dropped.users_left = self.ref_count(Counted::Chunks, &id.0)?;
        Ok(dropped)
    }

    /// See [`Store::correct_refs`].
    pub(super) fn correct_refs_now(
        &self,
        kind: Counted,
        id: &[u8; 32],
        delta: i64,
    ) -> Result<(), StoreError> {
        let mut totals = self.lock_writer();
        let count = self.ref_count(kind, id)?;
        if count == 0 {
            return Err(StoreError::Conflict(format!(
                "{} {} has no reference count to correct",
                kind.name(),
                hex::encode(id)
            )));
        }
        if delta == 0 {
            return Ok(());
        }
        let mut next = *totals;
        let mut batch = Batch::default();
        self.apply_refs(
            kind,
            &mut batch,
            &mut next,
            HashMap::from([(*id, (delta, None))]),
        )?;
        self.commit_batch(&mut totals, next, batch)
    }
}
