//! Applying a pack from an untrusted peer: every section checked before it is used
//! (the order is in the [module docs](super)), then the deltas, then the literal stream.

use std::collections::HashSet;

use shoal_protocol::recipe::{self, ChunkId, ChunkRef, Recipe};

use super::error::PackError;
use super::format::{DeltaEntry, read_sections};
use super::{
    Applied, Base, ChunkSource, Limits, Sink, Summary, held_chunks, literal, literal_chunks,
    read_file, reused,
};
use crate::chunk_content;
use crate::delta::frame::Decoder;
use crate::delta::{self, Method};

/// Rebuilds the target's recipe from `pack` and hands every chunk of the target that
/// is not in the bases to `sink` exactly once, checked against its BLAKE3 id.
///
/// `bases` must hold every base the pack's header names (others are ignored), with
/// the same recipes; their chunks come from `chunks`, checked against their ids.
/// Chunks go to `sink` as they are rebuilt: first those of the delta'd files, then
/// the literal stream's. An error from `sink` stops the apply and is returned as it
/// is. On any error, chunks already handed over are whole and correct (each matched
/// its id), but the target is not complete.
pub fn apply(
    pack: &[u8],
    bases: &[Base],
    chunks: &dyn ChunkSource,
    sink: &mut Sink<'_>,
    limits: &Limits,
) -> Result<Applied, PackError> {
    let s = read_sections(pack, limits)?;
    let header = &s.header;

    // The bases, in the header's order, each with the recipe the pack was made against.
    let mut named: Vec<&Recipe> = Vec::with_capacity(header.bases.len());
    let mut prefix = Vec::new();
    for (layer, expected) in header.bases.iter().zip(&header.base_recipes) {
        let base = bases
            .iter()
            .find(|b| b.layer == *layer)
            .ok_or(PackError::MissingBase { layer: *layer })?;
        let raw = recipe::to_raw(base.recipe);
        let got = ChunkId::of(&raw);
        if got != *expected {
            return Err(PackError::WrongBase {
                layer: *layer,
                expected: *expected,
                got,
            });
        }
        prefix.extend_from_slice(&raw);
        named.push(base.recipe);
    }

    let target = decode_recipe(&prefix, s.recipe, s.recipe_raw_len)?;
    drop(prefix);
    if target.diff_id != header.diff_id || target.tar_size != header.tar_size {
        return Err(PackError::Inconsistent(format!(
            "the recipe is of {} ({} bytes), the header says {} ({} bytes)",
            target.diff_id, target.tar_size, header.diff_id, header.tar_size
        )));
    }
    let held = held_chunks(named.iter().copied());

    for (d, body) in &s.deltas {
        check_delta(&target, &named, d, body, limits)?;
    }
    let literals = literal_chunks(
        &target,
        &held,
        s.deltas.iter().map(|(d, _)| d.entry as usize),
    );
    let literal_raw: u64 = literals.iter().map(|l| u64::from(l.chunk.len)).sum();
    if literal_raw != s.literal_raw_len {
        return Err(PackError::Inconsistent(format!(
            "the literal stream holds {} bytes, its chunks take {literal_raw}",
            s.literal_raw_len
        )));
    }

    let mut sent: HashSet<ChunkId> = HashSet::new();
    for (d, body) in &s.deltas {
        let entry = d.entry as usize;
        // Checked by check_delta: the indexes are in range.
        let e = &target.entries[entry];
        let base_entry = &named[usize::from(d.base)].entries[d.base_entry as usize];
        let base = read_file(base_entry, chunks)?;
        let bytes = delta::apply_limited(&base, body, limits.max_file).map_err(|source| {
            PackError::Delta {
                entry,
                path: e.path.clone(),
                source,
            }
        })?;
        drop(base);
        let (content, cut) = chunk_content(&bytes);
        if content != e.content || cut != e.chunks {
            return Err(PackError::FileMismatch {
                entry,
                path: e.path.clone(),
            });
        }
        let mut at = 0;
        for c in &e.chunks {
            let chunk = &bytes[at..at + c.len as usize];
            at += c.len as usize;
            if !held.contains(&c.id) && sent.insert(c.id) {
                sink(*c, chunk)?;
            }
        }
    }

    let plain: Vec<ChunkRef> = literals.iter().map(|l| l.chunk).collect();
    literal::decode(
        s.literal,
        &plain,
        limits.window_log_max,
        &mut |index, c, bytes| {
            if !c.id.matches(bytes) {
                return Err(PackError::LiteralMismatch { index, id: c.id });
            }
            sink(*c, bytes)
        },
    )?;

    let (reused_chunks, reused_bytes) = reused(&target, &held);
    let summary = Summary {
        pack_bytes: pack.len() as u64,
        recipe_bytes: s.recipe.len() as u64,
        delta_files: s.deltas.len() as u64,
        delta_bytes: s.deltas.iter().map(|(_, b)| b.len() as u64).sum(),
        delta_raw: s
            .deltas
            .iter()
            .map(|(d, _)| target.entries[d.entry as usize].size)
            .sum(),
        literal_chunks: literals.len() as u64,
        literal_raw,
        literal_bytes: s.literal.len() as u64,
        reused_chunks,
        reused_bytes,
    };
    Ok(Applied {
        recipe: target,
        profile: s.profile.map(<[u8]>::to_vec),
        summary,
    })
}

/// Decodes the recipe frame (exactly `raw_len` bytes, against `prefix`) and the recipe.
fn decode_recipe(prefix: &[u8], frame: &[u8], raw_len: u32) -> Result<Recipe, PackError> {
    // `raw_len` was checked against MAX_DECODED and the caller's limit.
    let method = if prefix.is_empty() {
        Method::Literal
    } else {
        Method::Zstd
    };
    let raw = Decoder::new()
        .decode(method, prefix, frame, u64::from(raw_len))
        .map_err(|e| PackError::Corrupt {
            what: "recipe",
            detail: e.to_string(),
        })?;
    recipe::from_raw(&raw).map_err(PackError::Recipe)
}

/// Checks a delta table entry against the recipes and the delta's own header, before
/// any base file is read.
fn check_delta(
    target: &Recipe,
    bases: &[&Recipe],
    d: &DeltaEntry,
    body: &[u8],
    limits: &Limits,
) -> Result<(), PackError> {
    let bad = |s: String| Err(PackError::Inconsistent(s));
    let Some(e) = target.entries.get(d.entry as usize) else {
        return bad(format!(
            "a delta for entry {} of {}",
            d.entry,
            target.entries.len()
        ));
    };
    let Some(base) = bases.get(usize::from(d.base)) else {
        return bad(format!(
            "a delta against base {} of {}",
            d.base,
            bases.len()
        ));
    };
    let Some(be) = base.entries.get(d.base_entry as usize) else {
        return bad(format!(
            "a delta against entry {} of base {}, which has {}",
            d.base_entry,
            d.base,
            base.entries.len()
        ));
    };
    let (Some(content), Some(base_content)) = (e.content, be.content) else {
        return bad(format!(
            "a delta for entry {} ({}) against entry {} ({}) of base {}: both need content",
            d.entry, e.path, d.base_entry, be.path, d.base
        ));
    };
    for (what, size) in [("delta'd file", e.size), ("delta's base file", be.size)] {
        if size > limits.max_file {
            return Err(PackError::TooLarge {
                what,
                len: size,
                limit: limits.max_file,
            });
        }
    }
    let h = delta::read_header(body).map_err(|source| PackError::Delta {
        entry: d.entry as usize,
        path: e.path.clone(),
        source,
    })?;
    if h.target != content || h.target_len != e.size || h.base != base_content {
        return bad(format!(
            "the delta for entry {} ({}) names other content than the recipes",
            d.entry, e.path
        ));
    }
    Ok(())
}
