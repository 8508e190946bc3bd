//! The content store's rules over any [`Engine`]: pieces with reference counts, partial
//! and complete blobs, tags, and running totals, each change one atomic batch.
//!
//! A piece's count is its number of uses: every index of every blob and partial that
//! names it counts once, so a piece two blobs share, or one blob holds twice, is stored
//! once and counted twice, and each release takes back exactly one use.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use shoal_protocol::{Digest, PieceId, RepoName};

use super::codec;
use super::engine::{Batch, Engine, Table};
use super::partial::Placed;
use super::{BlobRecord, PartialBlob, Store, StoreError, TagRecord, Totals};

pub(super) const TOTALS_KEY: &[u8] = b"totals";

/// A [`Store`] over an engine.
pub struct ContentStore<E> {
    engine: E,
    /// Serialises writers, and holds the totals they update. Every change reads some
    /// records, computes a batch and writes it; two at once could lose a reference
    /// count. A std Mutex: the sections are short and never await.
    writer: Mutex<Totals>,
}

impl<E: Engine> ContentStore<E> {
    /// The store over `engine`, reading its totals.
    pub fn new(engine: E) -> Result<Self, StoreError> {
        let totals = match engine.get(Table::Meta, TOTALS_KEY)? {
            Some(bytes) => codec::decode_totals(&bytes)?,
            None => Totals::default(),
        };
        Ok(ContentStore {
            engine,
            writer: Mutex::new(totals),
        })
    }

    /// The engine underneath, for checks that look past the store's rules.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    fn writer(&self) -> MutexGuard<'_, Totals> {
        // Totals are only replaced after a batch is written, so a panic midway leaves
        // the last written value: a poisoned lock is still consistent with the engine.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `batch` with the new totals, and keeps them only if the write succeeded.
    fn commit(
        &self,
        totals: &mut Totals,
        next: Totals,
        mut batch: Batch,
    ) -> Result<(), StoreError> {
        batch.put(Table::Meta, TOTALS_KEY, codec::encode_totals(&next));
        self.engine.write(batch)?;
        *totals = next;
        Ok(())
    }

    /// Adds to `batch` the reference changes in `deltas` for `kind`, adjusting `next`.
    /// A first reference stores the bytes; dropping the last deletes them.
    pub(super) fn apply_refs(
        &self,
        kind: Counted,
        batch: &mut Batch,
        next: &mut Totals,
        deltas: HashMap<[u8; 32], (i64, Option<&[u8]>)>,
    ) -> Result<(), StoreError> {
        let (data, refs) = kind.tables();
        for (id, (delta, bytes)) in deltas {
            let key = format!("{} ref {}", kind.name(), hex::encode(id));
            let (count, size) = match self.engine.get(refs, &id)? {
                Some(v) => codec::decode_piece_ref(&key, &v)?,
                None => (0, bytes.map_or(0, |b| b.len() as u64)),
            };
            let new = count as i64 + delta;
            if new < 0 {
                return Err(StoreError::Conflict(format!(
                    "{key}: released more often than used"
                )));
            }
            let (items, item_bytes) = kind.totals(next);
            if count == 0 && new > 0 {
                let bytes = bytes.ok_or_else(|| {
                    StoreError::Conflict(format!("{key}: referenced but never stored"))
                })?;
                batch.put(data, &id, bytes.to_vec());
                *items += 1;
                *item_bytes += size;
            }
            if new == 0 {
                batch.delete(data, &id);
                batch.delete(refs, &id);
                *items = items.saturating_sub(1);
                *item_bytes = item_bytes.saturating_sub(size);
            } else {
                batch.put(
                    refs,
                    &id,
                    codec::encode_piece_ref(new as u64, size).to_vec(),
                );
            }
        }
        Ok(())
    }

    pub(super) fn release<'a>(
        ids: impl IntoIterator<Item = &'a [u8; 32]>,
    ) -> HashMap<[u8; 32], (i64, Option<&'static [u8]>)> {
        let mut deltas = HashMap::new();
        for id in ids {
            deltas.entry(*id).or_insert((0, None)).0 -= 1;
        }
        deltas
    }

    /// Places one piece of partial blob `digest` ([`PartialBlob::place`]): appended in
    /// order without `size`, put at any index with it. One batch: the piece's bytes on
    /// its first use, its count, the partial's record and the totals.
    fn place_piece(
        &self,
        digest: &Digest,
        size: Option<u64>,
        index: u64,
        bytes: &[u8],
    ) -> Result<PieceId, StoreError> {
        let mut totals = self.writer();
        let mut next = *totals;
        let existing = self.partial(digest)?;
        if existing.is_none() {
            next.partial_blobs += 1;
        }
        let mut partial = existing.unwrap_or_default();
        let size_before = partial.size;
        let id = PieceId::of(bytes);
        let placed = partial
            .place(index, id, bytes.len() as u64, size)
            .map_err(|why| {
                let how = if size.is_some() { "put" } else { "appended" };
                StoreError::Conflict(format!("piece {index} of {digest} {how}: {why}"))
            })?;
        let mut batch = Batch::default();
        match placed {
            // Held already: only a size learnt now is worth a write.
            Placed::Held if partial.size == size_before => return Ok(id),
            Placed::Held => {}
            Placed::Stored => self.apply_refs(
                Counted::Pieces,
                &mut batch,
                &mut next,
                HashMap::from([(id.0, (1, Some(bytes)))]),
            )?,
        }
        batch.put(
            Table::Partials,
            digest.as_bytes(),
            codec::encode_partial(&partial),
        );
        self.commit(&mut totals, next, batch)?;
        Ok(id)
    }

    pub(super) fn lock_writer(&self) -> MutexGuard<'_, Totals> {
        self.writer()
    }

    pub(super) fn commit_batch(
        &self,
        totals: &mut Totals,
        next: Totals,
        batch: Batch,
    ) -> Result<(), StoreError> {
        self.commit(totals, next, batch)
    }
}

/// What is reference counted: pieces of blobs, and content chunks of recipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Pieces, used by complete and partial blobs.
    Pieces,
    /// Content chunks, used by complete recipes and recipes being built.
    Chunks,
}

impl Counted {
    /// Its (bytes, reference counts) tables.
    pub(super) fn tables(self) -> (Table, Table) {
        match self {
            Counted::Pieces => (Table::Pieces, Table::PieceRefs),
            Counted::Chunks => (Table::Chunks, Table::ChunkRefs),
        }
    }

    /// "piece" or "chunk".
    pub fn name(self) -> &'static str {
        match self {
            Counted::Pieces => "piece",
            Counted::Chunks => "chunk",
        }
    }

    fn totals(self, t: &mut Totals) -> (&mut u64, &mut u64) {
        match self {
            Counted::Pieces => (&mut t.pieces, &mut t.piece_bytes),
            Counted::Chunks => (&mut t.chunks, &mut t.chunk_bytes),
        }
    }
}

fn blob_key(d: &Digest) -> String {
    format!("blob {d}")
}

fn partial_key(d: &Digest) -> String {
    format!("partial {d}")
}

fn tag_key(upstream: &str, repo: &RepoName, tag: &str) -> Vec<u8> {
    // NUL cannot occur in a host, a repository name or a tag.
    format!("{upstream}\0{repo}\0{tag}").into_bytes()
}

impl<E: Engine> Store for ContentStore<E> {
    fn blob(&self, digest: &Digest) -> Result<Option<BlobRecord>, StoreError> {
        self.engine
            .get(Table::Blobs, digest.as_bytes())?
            .map(|v| codec::decode_blob(&blob_key(digest), &v))
            .transpose()
    }

    fn piece(&self, id: &PieceId) -> Result<Option<Bytes>, StoreError> {
        self.engine.get_bytes(Table::Pieces, &id.0)
    }

    fn partial(&self, digest: &Digest) -> Result<Option<PartialBlob>, StoreError> {
        self.engine
            .get(Table::Partials, digest.as_bytes())?
            .map(|v| codec::decode_partial(&partial_key(digest), &v))
            .transpose()
    }

    fn partials(&self) -> Result<Vec<Digest>, StoreError> {
        self.engine
            .keys(Table::Partials)?
            .into_iter()
            .map(|k| {
                let raw: [u8; 32] = k.as_slice().try_into().map_err(|_| StoreError::BadRecord {
                    key: "partials".into(),
                    why: format!("key of {} bytes is not a digest", k.len()),
                })?;
                Ok(Digest::from_bytes(raw))
            })
            .collect()
    }

    fn append_piece(
        &self,
        digest: &Digest,
        index: u64,
        bytes: &[u8],
    ) -> Result<PieceId, StoreError> {
        self.place_piece(digest, None, index, bytes)
    }

    fn put_piece(
        &self,
        digest: &Digest,
        size: u64,
        index: u64,
        bytes: &[u8],
    ) -> Result<PieceId, StoreError> {
        self.place_piece(digest, Some(size), index, bytes)
    }

    fn complete(
        &self,
        digest: &Digest,
        size: u64,
        media_type: Option<&str>,
    ) -> Result<BlobRecord, StoreError> {
        let mut totals = self.writer();
        let mut next = *totals;
        let mut batch = Batch::default();
        let partial = self.partial(digest)?;
        if let Some(done) = self.blob(digest)? {
            // Someone completed it first; what this caller fetched is surplus.
            if let Some(p) = partial {
                self.apply_refs(
                    Counted::Pieces,
                    &mut batch,
                    &mut next,
                    Self::release(p.piece_ids().map(|p| &p.0)),
                )?;
                batch.delete(Table::Partials, digest.as_bytes());
                next.partial_blobs = next.partial_blobs.saturating_sub(1);
                self.commit(&mut totals, next, batch)?;
            }
            return Ok(done);
        }
        let pieces = match partial {
            Some(p) if p.covers(size) => {
                batch.delete(Table::Partials, digest.as_bytes());
                next.partial_blobs = next.partial_blobs.saturating_sub(1);
                p.pieces
            }
            None if size == 0 => Vec::new(),
            Some(p) if !p.later.is_empty() => {
                return Err(StoreError::Conflict(format!(
                    "{digest} completed as {size} bytes with a gap: {} pieces are held after the first {} ({} bytes) and piece {} is missing",
                    p.later.len(),
                    p.pieces.len(),
                    p.bytes,
                    p.pieces.len()
                )));
            }
            Some(PartialBlob {
                size: Some(held), ..
            }) if held != size => {
                return Err(StoreError::Conflict(format!(
                    "{digest} completed as {size} bytes but its pieces were put for a blob of {held}"
                )));
            }
            other => {
                return Err(StoreError::Conflict(format!(
                    "{digest} completed as {size} bytes but {} bytes are stored",
                    other.map_or(0, |p| p.bytes)
                )));
            }
        };
        let record = BlobRecord {
            size,
            pieces,
            media_type: media_type.map(str::to_owned),
        };
        batch.put(Table::Blobs, digest.as_bytes(), codec::encode_blob(&record));
        next.blobs += 1;
        next.blob_bytes += size;
        self.commit(&mut totals, next, batch)?;
        Ok(record)
    }

    fn discard_partial(&self, digest: &Digest) -> Result<(), StoreError> {
        let mut totals = self.writer();
        let Some(partial) = self.partial(digest)? else {
            return Ok(());
        };
        let mut next = *totals;
        let mut batch = Batch::default();
        self.apply_refs(
            Counted::Pieces,
            &mut batch,
            &mut next,
            Self::release(partial.piece_ids().map(|p| &p.0)),
        )?;
        batch.delete(Table::Partials, digest.as_bytes());
        next.partial_blobs = next.partial_blobs.saturating_sub(1);
        self.commit(&mut totals, next, batch)
    }

    fn remove_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        let mut totals = self.writer();
        let Some(record) = self.blob(digest)? else {
            return Ok(false);
        };
        let mut next = *totals;
        let mut batch = Batch::default();
        self.apply_refs(
            Counted::Pieces,
            &mut batch,
            &mut next,
            Self::release(record.pieces.iter().map(|p| &p.0)),
        )?;
        batch.delete(Table::Blobs, digest.as_bytes());
        next.blobs = next.blobs.saturating_sub(1);
        next.blob_bytes = next.blob_bytes.saturating_sub(record.size);
        self.commit(&mut totals, next, batch)?;
        Ok(true)
    }

    fn set_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &str,
        record: &TagRecord,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.put(
            Table::Tags,
            &tag_key(upstream, repo, tag),
            codec::encode_tag(record),
        );
        self.engine.write(batch)
    }

    fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &str,
    ) -> Result<Option<TagRecord>, StoreError> {
        self.engine
            .get(Table::Tags, &tag_key(upstream, repo, tag))?
            .map(|v| codec::decode_tag(&format!("tag {upstream}/{repo}:{tag}"), &v))
            .transpose()
    }

    fn totals(&self) -> Result<Totals, StoreError> {
        Ok(*self.writer())
    }

    fn scan(
        &self,
        tables: &[Table],
        f: &mut dyn FnMut(super::check::Scanned<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.scan_snapshot(tables, f)
    }

    fn drop_piece_users(
        &self,
        id: &PieceId,
        blobs: &[Digest],
    ) -> Result<super::check::Dropped, StoreError> {
        self.drop_piece_users_now(id, blobs)
    }

    fn correct_refs(&self, kind: Counted, id: &[u8; 32], delta: i64) -> Result<(), StoreError> {
        self.correct_refs_now(kind, id, delta)
    }

    fn compact(&self) -> Result<(), StoreError> {
        self.engine.compact()
    }
}
