//! `shoal fsck`: every stored piece and content chunk checked against its BLAKE3 id,
//! every record checked against the others, and what is damaged dropped so that it is
//! fetched (or rebuilt) again.
//!
//! # What is checked
//! One scan of a consistent snapshot of the store ([`Store::scan`]) reads every record,
//! then every piece, then every chunk, while the node keeps serving. From it:
//! - a piece or chunk whose bytes do not hash to its id is **damaged**; one that a blob,
//!   a partial blob or a recipe names but that is not stored is **missing**;
//! - every reference count must equal its users (blob and partial records naming the
//!   piece, each occurrence counted, a partial's pieces beyond its prefix included;
//!   recipes holding the chunk), and every recipe must name exactly the chunks its
//!   layer holds references to;
//! - a complete blob's pieces must fit its size, and the totals must add up.
//!
//! # What is repaired
//! - Every user of a damaged or missing piece (complete blobs, partial blobs) is dropped
//!   in one atomic batch ([`Store::drop_piece_users`]); the next pull fetches the blob
//!   from the origin. Likewise every recipe using a damaged or missing chunk
//!   ([`crate::store::recipes::RecipeStore::drop_chunk_users`]); it is rebuilt the next
//!   time its image is served. A blob whose pieces are all sound stays.
//! - A recipe that does not decode or names other chunks than its layer holds, and a
//!   blob whose pieces do not fit its size, are dropped (both are caches, always safe to
//!   drop).
//! - A reference count that differs from its users is corrected when it has a count to
//!   correct ([`Store::correct_refs`]): the scan is a snapshot, so the difference it
//!   found is exact, and later writes keep it. Everything else (a used piece with no
//!   count, bytes nobody counts, references held by no recipe, totals that do not add
//!   up) is reported, not changed.
//!
//! The scan holds no lock. Each drop or correction decides again on the store as it is
//! under the writer lock, so a blob fetched again since the scan is not dropped.
//! Memory: about 100 bytes per stored piece and chunk, for the per-id tallies.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use shoal_protocol::recipe::ChunkId;
use shoal_protocol::{Digest, PieceId, PieceLayout};

use crate::store::check::{Dropped, Scanned};
use crate::store::content::Counted;
use crate::store::engine::Table;
use crate::store::{Store, StoreError, Totals};

/// The order of the scan: records first (so that the tallies of users and counts are
/// complete before any piece is judged), then the content.
const SCAN: [Table; 10] = [
    Table::Meta,
    Table::Blobs,
    Table::Partials,
    Table::PieceRefs,
    Table::ChunkRefs,
    Table::LayerChunks,
    Table::Recipes,
    Table::PartialRecipes,
    Table::Pieces,
    Table::Chunks,
];

/// Why a check could not finish.
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The progress callback asked to stop (the client went away).
    #[error("the check was cancelled")]
    Cancelled,
}

/// What the check is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Reading blob, partial, reference and recipe records.
    #[default]
    Records,
    /// Hashing pieces.
    Pieces,
    /// Hashing chunks.
    Chunks,
    /// Dropping what is damaged and correcting counts.
    Repair,
}

/// How far the check is: the wire form of a progress line of `POST /_shoal/fsck`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What it is doing.
    pub phase: Phase,
    /// Records read.
    pub records_checked: u64,
    /// Pieces hashed.
    pub pieces_checked: u64,
    /// Chunks hashed.
    pub chunks_checked: u64,
    /// Bytes of pieces and chunks hashed.
    pub bytes_checked: u64,
    /// Bytes of pieces and chunks the reference records count (known once the records
    /// are read; bytes nobody counts come on top).
    pub bytes_total: u64,
    /// Damaged or missing pieces and chunks found so far.
    pub damaged: u64,
}

/// Something found that is not damaged content: the wire form of one entry of
/// [`FsckReport::problems`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What kind: `unreadable_record`, `piece_refs`, `chunk_refs`, `uncounted_piece`,
    /// `uncounted_chunk`, `blob_layout`, `recipe`, `layer_chunks`, `totals`,
    /// `still_used`, `repair_failed`.
    pub kind: String,
    /// What exactly, in words.
    pub detail: String,
    /// Whether fsck repaired it.
    pub fixed: bool,
}

/// The wire form of `shoal fsck --json` (the last line of `POST /_shoal/fsck`). Fields
/// are only ever added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReport {
    /// Whether nothing was found: no damage, nothing missing, no problem.
    pub clean: bool,
    /// Pieces hashed.
    pub pieces_checked: u64,
    /// Chunks hashed.
    pub chunks_checked: u64,
    /// Bytes of pieces and chunks hashed.
    pub bytes_checked: u64,
    /// Complete blobs checked.
    pub blobs_checked: u64,
    /// Partial blobs checked.
    pub partials_checked: u64,
    /// Complete recipes checked.
    pub recipes_checked: u64,
    /// Pieces whose bytes do not hash to their id (hex BLAKE3).
    pub damaged_pieces: Vec<String>,
    /// Pieces a blob or partial names that are not stored.
    pub missing_pieces: Vec<String>,
    /// Chunks whose bytes do not hash to their id.
    pub damaged_chunks: Vec<String>,
    /// Chunks a recipe holds that are not stored.
    pub missing_chunks: Vec<String>,
    /// Complete blobs dropped (to be fetched again).
    pub blobs_dropped: Vec<String>,
    /// Partial blobs dropped.
    pub partials_dropped: Vec<String>,
    /// Complete recipes dropped (to be rebuilt).
    pub recipes_dropped: Vec<String>,
    /// Recipes being built that were dropped.
    pub partial_recipes_dropped: Vec<String>,
    /// Everything else found.
    pub problems: Vec<Problem>,
}

/// One line of `POST /_shoal/fsck`'s answer (see [`crate::jobs`]).
pub type FsckLine = crate::jobs::JobLine<Progress, FsckReport>;

/// What the scan learnt of one piece or chunk.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Its reference record: count and size.
    refs: Option<(u64, u64)>,
    /// Records that use it.
    users: u64,
    /// Whether its bytes are stored.
    stored: bool,
    /// Whether they hash to something else.
    damaged: bool,
}

/// An order-free summary of a set of chunk ids, to compare a recipe's chunks with the
/// references its layer holds without keeping either set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SetSum {
    count: u64,
    xor: [u8; 32],
}

impl SetSum {
    fn add(&mut self, id: &[u8; 32]) {
        self.count += 1;
        for (x, b) in self.xor.iter_mut().zip(id) {
            *x ^= b;
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Layer {
    chunks: SetSum,
    recipe: bool,
    partial: bool,
}

struct BadRecipe {
    layer: Digest,
    seen: Vec<u8>,
    why: String,
}

/// What one scan found, before any repair.
#[derive(Default)]
struct Scan {
    progress: Progress,
    report: FsckReport,
    totals_record: Option<Totals>,
    totals: Totals,
    pieces: HashMap<[u8; 32], Tally>,
    chunks: HashMap<[u8; 32], Tally>,
    layers: HashMap<Digest, Layer>,
    /// Whether a record that would count users of pieces (blobs, partials) or of
    /// chunks (layer references) was unreadable: counts of that kind are not corrected.
    users_unknown: [bool; 2],
    /// Blobs whose pieces do not fit their size.
    misshapen: Vec<Digest>,
    /// Recipes that do not decode or name other chunks than their layer holds, with
    /// the record seen (to drop it only if it is still that record). Rare and small.
    bad_recipes: Vec<BadRecipe>,
}

impl Scan {
    fn problem(&mut self, kind: &str, detail: String) {
        tracing::warn!(kind, "fsck: {detail}");
        self.report.problems.push(Problem {
            kind: kind.into(),
            detail,
            fixed: false,
        });
    }

    fn see(&mut self, item: Scanned<'_>) {
        let p = &mut self.progress;
        match &item {
            Scanned::Piece(..) => p.phase = Phase::Pieces,
            Scanned::Chunk(..) => p.phase = Phase::Chunks,
            _ => p.records_checked += 1,
        }
        match item {
            Scanned::Totals(t) => self.totals_record = Some(t),
            Scanned::Blob(digest, record) => {
                self.report.blobs_checked += 1;
                self.totals.blobs += 1;
                self.totals.blob_bytes += record.size;
                if record.pieces.len() as u64 != PieceLayout::new(record.size).count() {
                    self.misshapen.push(digest);
                }
                for id in &record.pieces {
                    self.pieces.entry(id.0).or_default().users += 1;
                }
            }
            Scanned::Partial(_, partial) => {
                self.report.partials_checked += 1;
                self.totals.partial_blobs += 1;
                // Prefix and pieces held beyond it alike.
                for id in partial.piece_ids() {
                    self.pieces.entry(id.0).or_default().users += 1;
                }
            }
            Scanned::PieceRef(id, count, size) => {
                self.totals.pieces += 1;
                self.totals.piece_bytes += size;
                self.progress.bytes_total += size;
                self.pieces.entry(id.0).or_default().refs = Some((count, size));
            }
            Scanned::ChunkRef(id, count, size) => {
                self.totals.chunks += 1;
                self.totals.chunk_bytes += size;
                self.progress.bytes_total += size;
                self.chunks.entry(id.0).or_default().refs = Some((count, size));
            }
            Scanned::LayerChunk(layer, id) => {
                self.layers.entry(layer).or_default().chunks.add(&id.0);
                self.chunks.entry(id.0).or_default().users += 1;
            }
            Scanned::Recipe(layer, record) => {
                self.report.recipes_checked += 1;
                self.totals.recipes += 1;
                self.totals.recipe_tar_bytes += record.tar_size;
                let held = self.layers.entry(layer).or_default();
                held.recipe = true;
                let why = match shoal_protocol::recipe::decode(&record.encoded) {
                    Ok(recipe) => {
                        let mut named = SetSum::default();
                        for id in recipe.chunk_ids() {
                            named.add(&id.0);
                        }
                        (named != held.chunks).then(|| {
                            format!(
                                "the recipe of {layer} names {} chunks, not the {} its layer holds references to",
                                named.count, held.chunks.count
                            )
                        })
                    }
                    Err(e) => Some(format!("the recipe of {layer}: {e}")),
                };
                if let Some(why) = why {
                    self.bad_recipes.push(BadRecipe {
                        layer,
                        seen: record.encoded,
                        why,
                    });
                }
            }
            Scanned::PartialRecipe(layer) => {
                self.totals.partial_recipes += 1;
                self.layers.entry(layer).or_default().partial = true;
            }
            Scanned::Piece(id, bytes) => {
                let damaged = !id.matches(bytes);
                self.content(Counted::Pieces, id.0, bytes.len() as u64, damaged);
            }
            Scanned::Chunk(id, bytes) => {
                let damaged = !id.matches(bytes);
                self.content(Counted::Chunks, id.0, bytes.len() as u64, damaged);
            }
            Scanned::Unreadable { table, key, why } => {
                match table {
                    Table::Blobs | Table::Partials => self.users_unknown[0] = true,
                    Table::LayerChunks => self.users_unknown[1] = true,
                    _ => {}
                }
                self.problem(
                    "unreadable_record",
                    format!("{} record {}: {why}", table.name(), hex::encode(key)),
                );
            }
        }
    }

    fn content(&mut self, kind: Counted, id: [u8; 32], len: u64, damaged: bool) {
        let p = &mut self.progress;
        p.bytes_checked += len;
        let tallies = match kind {
            Counted::Pieces => {
                p.pieces_checked += 1;
                &mut self.pieces
            }
            Counted::Chunks => {
                p.chunks_checked += 1;
                &mut self.chunks
            }
        };
        let tally = tallies.entry(id).or_default();
        tally.stored = true;
        tally.damaged = damaged;
        if damaged {
            p.damaged += 1;
            tracing::warn!("fsck: {} {} is damaged", kind.name(), hex::encode(id));
        }
    }

    /// Turns the tallies into findings: damaged and missing ids (returned, for the
    /// drops), count corrections to make (returned), and problems (in the report).
    fn findings(&mut self) -> Findings {
        let mut out = Findings::default();
        for kind in [Counted::Pieces, Counted::Chunks] {
            let tallies = match kind {
                Counted::Pieces => std::mem::take(&mut self.pieces),
                Counted::Chunks => std::mem::take(&mut self.chunks),
            };
            let name = kind.name();
            let mut sorted: Vec<_> = tallies.into_iter().collect();
            sorted.sort_unstable_by_key(|(id, _)| *id);
            for (id, t) in sorted {
                let hex_id = hex::encode(id);
                let missing = t.users > 0 && !t.stored;
                if t.damaged || missing {
                    let (damaged_list, missing_list) = match kind {
                        Counted::Pieces => (
                            &mut self.report.damaged_pieces,
                            &mut self.report.missing_pieces,
                        ),
                        Counted::Chunks => (
                            &mut self.report.damaged_chunks,
                            &mut self.report.missing_chunks,
                        ),
                    };
                    if t.damaged {
                        damaged_list.push(hex_id.clone());
                    } else {
                        self.progress.damaged += 1;
                        tracing::warn!("fsck: {name} {hex_id} is used but missing");
                        missing_list.push(hex_id.clone());
                    }
                    if t.users > 0 {
                        out.bad.push((kind, id));
                    }
                }
                let users_unknown = match kind {
                    Counted::Pieces => self.users_unknown[0],
                    Counted::Chunks => self.users_unknown[1],
                };
                match t.refs {
                    Some((count, _)) if count != t.users && users_unknown => self.problem(
                        &format!("{name}_refs"),
                        format!(
                            "{name} {hex_id} has a reference count of {count} for {} users, \
                             not corrected: some records that would use it are unreadable",
                            t.users
                        ),
                    ),
                    Some((count, _)) if count != t.users => {
                        out.corrections.push((
                            kind,
                            id,
                            t.users as i64 - count as i64,
                            count,
                            t.users,
                        ));
                    }
                    Some(_) => {}
                    None if t.users > 0 => self.problem(
                        &format!("{name}_refs"),
                        format!(
                            "{name} {hex_id} is used {} times but has no reference count",
                            t.users
                        ),
                    ),
                    None => self.problem(
                        &format!("uncounted_{name}"),
                        format!("{name} {hex_id} is stored, but nothing counts or uses it"),
                    ),
                }
            }
        }
        let mut layers: Vec<_> = std::mem::take(&mut self.layers).into_iter().collect();
        layers.sort_unstable_by_key(|(d, _)| *d);
        for (layer, held) in layers {
            if held.chunks.count > 0 && !held.recipe && !held.partial {
                self.problem(
                    "layer_chunks",
                    format!(
                        "layer {layer} holds references to {} chunks but has no recipe",
                        held.chunks.count
                    ),
                );
            }
        }
        let recorded = self.totals_record.unwrap_or_default();
        if recorded != self.totals {
            self.problem(
                "totals",
                format!(
                    "the totals record says {recorded:?}, the records add up to {:?}",
                    self.totals
                ),
            );
        }
        out
    }
}

/// What the repairs work from.
#[derive(Default)]
struct Findings {
    /// Damaged or missing pieces and chunks that something uses.
    bad: Vec<(Counted, [u8; 32])>,
    /// (kind, id, delta, count, users): counts to correct.
    corrections: Vec<(Counted, [u8; 32], i64, u64, u64)>,
}

/// Checks every piece, chunk and record of `store` and drops what is damaged (see the
/// module docs). `progress` is called after every record, piece and chunk (callers
/// throttle); it stops the check by breaking, until the repairs begin, which always
/// finish. Blocking: run it on the blocking pool.
pub fn fsck(
    store: &dyn Store,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<FsckReport, FsckError> {
    let mut scan = Scan::default();
    let mut cancelled = false;
    store.scan(&SCAN, &mut |item| {
        scan.see(item);
        let flow = progress(&scan.progress);
        cancelled = flow.is_break();
        flow
    })?;
    if cancelled {
        return Err(FsckError::Cancelled);
    }
    let findings = scan.findings();
    scan.progress.phase = Phase::Repair;
    let _ = progress(&scan.progress);
    let Scan {
        mut report,
        progress: done,
        misshapen,
        bad_recipes,
        ..
    } = scan;
    report.pieces_checked = done.pieces_checked;
    report.chunks_checked = done.chunks_checked;
    report.bytes_checked = done.bytes_checked;
    let mut tick = || {
        // Repairs always finish: a break is not heeded here.
        let _ = progress(&done);
    };
    repair(
        store,
        &findings,
        &misshapen,
        &bad_recipes,
        &mut report,
        &mut tick,
    )?;
    report.clean = report.damaged_pieces.is_empty()
        && report.missing_pieces.is_empty()
        && report.damaged_chunks.is_empty()
        && report.missing_chunks.is_empty()
        && report.problems.is_empty();
    Ok(report)
}

fn repair(
    store: &dyn Store,
    findings: &Findings,
    misshapen: &[Digest],
    bad_recipes: &[BadRecipe],
    report: &mut FsckReport,
    tick: &mut dyn FnMut(),
) -> Result<(), FsckError> {
    let mut problems = Vec::new();
    let mut problem = |kind: &str, detail: String, fixed: bool| {
        if fixed {
            tracing::info!(kind, "fsck repaired: {detail}");
        } else {
            tracing::warn!(kind, "fsck: {detail}");
        }
        problems.push(Problem {
            kind: kind.into(),
            detail,
            fixed,
        });
    };

    // Counts first: a drop releases every reference of what it drops, which a count
    // too low would refuse.
    for &(kind, id, delta, count, users) in &findings.corrections {
        let detail = format!(
            "{} {} has a reference count of {count} for {users} users",
            kind.name(),
            hex::encode(id)
        );
        let kind_name = format!("{}_refs", kind.name());
        match store.correct_refs(kind, &id, delta) {
            Ok(()) => problem(&kind_name, detail, true),
            Err(e) => problem(&kind_name, format!("{detail} (not corrected: {e})"), false),
        }
    }

    // The users of each damaged or missing piece and chunk: named by a second look at
    // the records (the first scan kept only tallies). A user stored since is found by
    // the drop itself when it is a partial, or reported as left.
    let bad_pieces: BTreeSet<[u8; 32]> = findings
        .bad
        .iter()
        .filter(|(k, _)| *k == Counted::Pieces)
        .map(|(_, id)| *id)
        .collect();
    let bad_chunks: BTreeSet<[u8; 32]> = findings
        .bad
        .iter()
        .filter(|(k, _)| *k == Counted::Chunks)
        .map(|(_, id)| *id)
        .collect();
    let mut users: HashMap<[u8; 32], BTreeSet<Digest>> = HashMap::new();
    if !bad_pieces.is_empty() || !bad_chunks.is_empty() {
        store.scan(&[Table::Blobs, Table::LayerChunks], &mut |item| {
            match item {
                Scanned::Blob(digest, record) => {
                    for id in record.pieces.iter().filter(|p| bad_pieces.contains(&p.0)) {
                        users.entry(id.0).or_default().insert(digest);
                    }
                }
                Scanned::LayerChunk(layer, id) if bad_chunks.contains(&id.0) => {
                    users.entry(id.0).or_default().insert(layer);
                }
                _ => {}
            }
            tick();
            ControlFlow::Continue(())
        })?;
    }
    for &(kind, id) in &findings.bad {
        let named: Vec<Digest> = users
            .get(&id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let result = match kind {
            Counted::Pieces => store.drop_piece_users(&PieceId(id), &named),
            Counted::Chunks => store.drop_chunk_users(&ChunkId(id), &named),
        };
        let what = format!("{} {}", kind.name(), hex::encode(id));
        match result {
            Ok(Dropped { sound: true, .. }) => {
                tracing::info!("fsck: {what} was stored again since it was checked");
            }
            Ok(dropped) => {
                let (complete, partial) = match kind {
                    Counted::Pieces => (&mut report.blobs_dropped, &mut report.partials_dropped),
                    Counted::Chunks => (
                        &mut report.recipes_dropped,
                        &mut report.partial_recipes_dropped,
                    ),
                };
                for d in &dropped.complete {
                    tracing::warn!(digest = %d, "fsck: dropped, {what} is damaged or missing");
                }
                complete.extend(dropped.complete.iter().map(Digest::to_string));
                partial.extend(dropped.partial.iter().map(Digest::to_string));
                if dropped.users_left > 0 {
                    problem(
                        "still_used",
                        format!(
                            "{what} is damaged or missing and still has {} users stored since the check began; run fsck again",
                            dropped.users_left
                        ),
                        false,
                    );
                }
            }
            Err(e) => problem(
                "repair_failed",
                format!("cannot drop the users of {what}: {e}"),
                false,
            ),
        }
    }

    for digest in misshapen {
        let detail = format!("blob {digest}'s pieces do not fit its size");
        // Decide on the record as it is now: a blob fetched again since is left alone.
        let result = store.blob(digest).and_then(|now| match now {
            Some(r) if r.pieces.len() as u64 != PieceLayout::new(r.size).count() => {
                store.remove_blob(digest)
            }
            _ => Ok(false),
        });
        match result {
            Ok(dropped) => {
                if dropped {
                    report.blobs_dropped.push(digest.to_string());
                }
                problem("blob_layout", detail, true);
            }
            Err(e) => problem("blob_layout", format!("{detail} (not dropped: {e})"), false),
        }
    }

    for bad in bad_recipes {
        // Only the record that was seen: one rebuilt since is left alone.
        let result = store.recipe(&bad.layer).and_then(|now| match now {
            Some(r) if r.encoded == bad.seen => store.remove_recipe(&bad.layer),
            _ => Ok(false),
        });
        match result {
            Ok(dropped) => {
                if dropped {
                    report.recipes_dropped.push(bad.layer.to_string());
                }
                problem("recipe", bad.why.clone(), true);
            }
            Err(e) => problem("recipe", format!("{} (not dropped: {e})", bad.why), false),
        }
    }
    report.problems.extend(problems);
    Ok(())
}

#[cfg(test)]
mod tests;
