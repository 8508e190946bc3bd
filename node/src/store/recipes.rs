//! The recipe side of the content store: content chunks stored once across all layers
//! and images, and each layer's recipe.
//!
//! A layer's ingest is `begin_recipe`, any number of `add_chunks`, then
//! `complete_recipe` (or `discard_partial_recipe`). Each call is one atomic batch. A
//! layer holds one reference to each distinct chunk it uses (recorded in the
//! `LayerChunks` table), so dropping a layer releases exactly what it took, and a kill
//! midway leaves a partial recipe whose references are released when it is discarded
//! (at the next ingest of that layer, or at start).

use std::collections::HashMap;

use bytes::Bytes;
use shoal_protocol::Digest;
use shoal_protocol::recipe::ChunkId;

use super::content::{ContentStore, Counted};
use super::engine::{Batch, Engine, Table};
use super::{StoreError, codec};

/// A complete recipe as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipeRecord {
    /// Size of the tar it re-creates.
    pub tar_size: u64,
    /// The recipe in its wire form (`shoal_protocol::recipe::encode`).
    pub encoded: Vec<u8>,
}

/// Chunks and recipes. Implemented by every [`super::Store`].
pub trait RecipeStore {
    /// The bytes of chunk `id`, as stored (callers check them against the id).
    fn chunk(&self, id: &ChunkId) -> Result<Option<Bytes>, StoreError>;

    /// How many layers use chunk `id` (0: not stored).
    fn chunk_users(&self, id: &ChunkId) -> Result<u64, StoreError>;

    /// Starts (or restarts) building the recipe of `layer`, dropping what an earlier
    /// attempt left.
    fn begin_recipe(&self, layer: &Digest) -> Result<(), StoreError>;

    /// Records that the recipe of `layer` uses these chunks, storing the bytes of those
    /// the store lacks. Returns how many were new to the store.
    fn add_chunks(&self, layer: &Digest, chunks: &[(ChunkId, &[u8])]) -> Result<usize, StoreError>;

    /// Stores the finished recipe of `layer`. The caller has checked it (its diff_id,
    /// and that it names exactly the chunks added).
    fn complete_recipe(&self, layer: &Digest, record: &RecipeRecord) -> Result<(), StoreError>;

    /// Drops a recipe being built and the references it took.
    fn discard_partial_recipe(&self, layer: &Digest) -> Result<(), StoreError>;

    /// The complete recipe of `layer`, if stored.
    fn recipe(&self, layer: &Digest) -> Result<Option<RecipeRecord>, StoreError>;

    /// Drops the recipe of `layer` and the chunks only it used. Returns whether it was held.
    fn remove_recipe(&self, layer: &Digest) -> Result<bool, StoreError>;

    /// Layers whose recipe is being built (or was, when a process died).
    fn partial_recipes(&self) -> Result<Vec<Digest>, StoreError>;

    /// If chunk `id` is still missing or damaged when read again under the writer lock,
    /// drops in one atomic batch every recipe that uses it: complete recipes of the
    /// layers among `layers`, and every recipe being built. (See
    /// [`super::Store::drop_piece_users`]; a dropped recipe is rebuilt when its image
    /// is next served.)
    fn drop_chunk_users(
        &self,
        id: &ChunkId,
        layers: &[Digest],
    ) -> Result<super::check::Dropped, StoreError>;
}

fn layer_chunk_key(layer: &Digest, id: &ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(layer.as_bytes());
    k.extend_from_slice(&id.0);
    k
}

impl<E: Engine> ContentStore<E> {
    /// Adds to `batch` the release of every chunk `layer` holds, and deletes its
    /// layer-chunk records.
    fn release_layer(
        &self,
        layer: &Digest,
        batch: &mut Batch,
        next: &mut super::Totals,
    ) -> Result<(), StoreError> {
        let keys = self
            .engine()
            .keys_with_prefix(Table::LayerChunks, layer.as_bytes())?;
        let mut ids = Vec::with_capacity(keys.len());
        for k in &keys {
            let id: [u8; 32] = k[32..].try_into().map_err(|_| StoreError::BadRecord {
                key: format!("layer chunk of {layer}"),
                why: format!("key of {} bytes", k.len()),
            })?;
            ids.push(id);
            batch.delete(Table::LayerChunks, k);
        }
        self.apply_refs(Counted::Chunks, batch, next, Self::release(ids.iter()))
    }
}

impl<E: Engine> RecipeStore for ContentStore<E> {
    fn chunk(&self, id: &ChunkId) -> Result<Option<Bytes>, StoreError> {
        self.engine().get_bytes(Table::Chunks, &id.0)
    }

    fn chunk_users(&self, id: &ChunkId) -> Result<u64, StoreError> {
        match self.engine().get(Table::ChunkRefs, &id.0)? {
            Some(v) => Ok(codec::decode_piece_ref(&format!("chunk ref {id}"), &v)?.0),
            None => Ok(0),
        }
    }

    fn begin_recipe(&self, layer: &Digest) -> Result<(), StoreError> {
        let mut totals = self.lock_writer();
        let mut next = *totals;
        let mut batch = Batch::default();
        if self
            .engine()
            .get(Table::Recipes, layer.as_bytes())?
            .is_some()
        {
            return Err(StoreError::Conflict(format!(
                "the recipe of {layer} is already complete"
            )));
        }
        if self
            .engine()
            .get(Table::PartialRecipes, layer.as_bytes())?
            .is_some()
        {
            self.release_layer(layer, &mut batch, &mut next)?;
        } else {
            next.partial_recipes += 1;
        }
        batch.put(Table::PartialRecipes, layer.as_bytes(), Vec::new());
        self.commit_batch(&mut totals, next, batch)
    }

    fn add_chunks(&self, layer: &Digest, chunks: &[(ChunkId, &[u8])]) -> Result<usize, StoreError> {
        let mut totals = self.lock_writer();
        if self
            .engine()
            .get(Table::PartialRecipes, layer.as_bytes())?
            .is_none()
        {
            return Err(StoreError::Conflict(format!(
                "no recipe of {layer} is being built"
            )));
        }
        let mut next = *totals;
        let mut batch = Batch::default();
        let mut deltas: HashMap<[u8; 32], (i64, Option<&[u8]>)> = HashMap::new();
        for (id, bytes) in chunks {
            let key = layer_chunk_key(layer, id);
            if deltas.contains_key(&id.0) || self.engine().get(Table::LayerChunks, &key)?.is_some()
            {
                continue;
            }
            batch.put(Table::LayerChunks, &key, Vec::new());
            deltas.insert(id.0, (1, Some(bytes)));
        }
        let before = next.chunks;
        self.apply_refs(Counted::Chunks, &mut batch, &mut next, deltas)?;
        let added = (next.chunks - before) as usize;
        self.commit_batch(&mut totals, next, batch)?;
        Ok(added)
    }

    fn complete_recipe(&self, layer: &Digest, record: &RecipeRecord) -> Result<(), StoreError> {
        let mut totals = self.lock_writer();
        if self
            .engine()
            .get(Table::PartialRecipes, layer.as_bytes())?
            .is_none()
        {
            return Err(StoreError::Conflict(format!(
                "no recipe of {layer} is being built"
            )));
        }
        let mut next = *totals;
        let mut batch = Batch::default();
        batch.delete(Table::PartialRecipes, layer.as_bytes());
        batch.put(
            Table::Recipes,
            layer.as_bytes(),
            codec::encode_recipe_record(record),
        );
        next.partial_recipes = next.partial_recipes.saturating_sub(1);
        next.recipes += 1;
        next.recipe_tar_bytes += record.tar_size;
        self.commit_batch(&mut totals, next, batch)
    }

    fn discard_partial_recipe(&self, layer: &Digest) -> Result<(), StoreError> {
        let mut totals = self.lock_writer();
        if self
            .engine()
            .get(Table::PartialRecipes, layer.as_bytes())?
            .is_none()
        {
            return Ok(());
        }
        let mut next = *totals;
        let mut batch = Batch::default();
        self.release_layer(layer, &mut batch, &mut next)?;
        batch.delete(Table::PartialRecipes, layer.as_bytes());
        next.partial_recipes = next.partial_recipes.saturating_sub(1);
        self.commit_batch(&mut totals, next, batch)
    }

    fn recipe(&self, layer: &Digest) -> Result<Option<RecipeRecord>, StoreError> {
        self.engine()
            .get(Table::Recipes, layer.as_bytes())?
            .map(|v| codec::decode_recipe_record(&format!("recipe {layer}"), &v))
            .transpose()
    }

    fn remove_recipe(&self, layer: &Digest) -> Result<bool, StoreError> {
        let mut totals = self.lock_writer();
        let Some(record) = self.recipe(layer)? else {
            return Ok(false);
        };
        let mut next = *totals;
        let mut batch = Batch::default();
        self.release_layer(layer, &mut batch, &mut next)?;
        batch.delete(Table::Recipes, layer.as_bytes());
        next.recipes = next.recipes.saturating_sub(1);
        next.recipe_tar_bytes = next.recipe_tar_bytes.saturating_sub(record.tar_size);
        self.commit_batch(&mut totals, next, batch)?;
        Ok(true)
    }

    fn drop_chunk_users(
        &self,
        id: &ChunkId,
        layers: &[Digest],
    ) -> Result<super::check::Dropped, StoreError> {
        self.drop_chunk_users_now(id, layers)
    }

    fn partial_recipes(&self) -> Result<Vec<Digest>, StoreError> {
        self.engine()
            .keys(Table::PartialRecipes)?
            .into_iter()
            .map(|k| {
                let raw: [u8; 32] = k.as_slice().try_into().map_err(|_| StoreError::BadRecord {
                    key: "partial_recipes".into(),
                    why: format!("key of {} bytes is not a digest", k.len()),
                })?;
                Ok(Digest::from_bytes(raw))
            })
            .collect()
    }
}
