//! Making a pack: choosing the deltas, gathering the literal stream, compressing the
//! recipe against the bases' recipes, and writing the sections in order.

use std::collections::{HashMap, HashSet};

use shoal_protocol::Digest;
use shoal_protocol::recipe::{self, ChunkId, EntryKind, MAX_DECODED, Recipe};

use super::error::PackError;
use super::format::{DeltaEntry, Header, MAX_BASES, MAX_PROFILE};
use super::{
    Base, ChunkSource, Options, Summary, held_chunks, literal, literal_chunks, read_chunk,
    read_file, reused,
};
use crate::delta::frame::Encoder;
use crate::delta::{self, MakeError};

/// Makes the pack that rebuilds `target` (the recipe of layer `target_layer`, and its
/// wire form `target_encoded`) on a node holding `bases`, carrying `profile` as it is.
/// Chunk bytes, the target's and the base files' a delta is made against, come from
/// `chunks` and are checked against their ids ([`PackError::MissingChunk`],
/// [`PackError::ChunkMismatch`]). Returns the pack and where its bytes went.
///
/// CPU-bound for seconds on a layer of a few hundred MB (zstd at level 19, bidiff on
/// changed binaries): run it off any async executor. `target_encoded` is not read by
/// this version (the recipe travels in its raw form, compressed against the bases').
pub fn make(
    target_layer: Digest,
    target: &Recipe,
    target_encoded: &[u8],
    bases: &[Base],
    profile: Option<&[u8]>,
    chunks: &dyn ChunkSource,
    opts: &Options,
) -> Result<(Vec<u8>, Summary), PackError> {
    let _ = target_encoded;
    if bases.len() > MAX_BASES {
        return Err(PackError::TooLarge {
            what: "base list",
            len: bases.len() as u64,
            limit: MAX_BASES as u64,
        });
    }
    if let Some(p) = profile
        && p.len() > MAX_PROFILE
    {
        return Err(PackError::TooLarge {
            what: "gzip profile",
            len: p.len() as u64,
            limit: MAX_PROFILE as u64,
        });
    }
    target.validate().map_err(PackError::Recipe)?;
    let raw = recipe::to_raw(target);
    if raw.len() > MAX_DECODED {
        return Err(PackError::TooLarge {
            what: "target recipe",
            len: raw.len() as u64,
            limit: MAX_DECODED as u64,
        });
    }
    let base_raws: Vec<Vec<u8>> = bases.iter().map(|b| recipe::to_raw(b.recipe)).collect();
    let header = Header {
        target_layer,
        diff_id: target.diff_id,
        tar_size: target.tar_size,
        bases: bases.iter().map(|b| b.layer).collect(),
        base_recipes: base_raws.iter().map(|r| ChunkId::of(r)).collect(),
    };
    let held = held_chunks(bases.iter().map(|b| b.recipe));

    let deltas = choose_deltas(target, bases, &held, chunks, opts)?;

    let literals = literal_chunks(target, &held, deltas.iter().map(|d| d.0.entry as usize));
    let literal_raw: u64 = literals.iter().map(|l| u64::from(l.chunk.len)).sum();
    let literal_frame = if literal_raw == 0 {
        Vec::new()
    } else {
        let mut enc = literal::Encoder::new(
            opts.literal_level(literal_raw),
            literal_raw,
            opts.literal_window_log,
        )?;
        for l in &literals {
            let path = &target.entries[l.entry].path;
            enc.push(&read_chunk(&l.chunk, path, chunks)?)?;
        }
        enc.finish()?
    };

    let recipe_frame = {
        let prefix = base_raws.concat();
        let mut enc = Encoder::new(opts.recipe_level.clamp(1, 19))?;
        if prefix.is_empty() {
            enc.zstd(None, &raw)?
        } else {
            enc.zstd(Some(&prefix), &raw)?
        }
    };

    let mut pack = Vec::new();
    header.encode(&mut pack);
    match profile {
        None => pack.push(0),
        Some(p) => {
            pack.push(1);
            // Checked above: at most MAX_PROFILE bytes.
            pack.extend_from_slice(&(p.len() as u16).to_le_bytes());
            pack.extend_from_slice(p);
        }
    }
    // The raw recipe is at most MAX_DECODED (512 MiB) and its frame within zstd's
    // bound of that, both under u32::MAX.
    pack.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    pack.extend_from_slice(&(recipe_frame.len() as u32).to_le_bytes());
    pack.extend_from_slice(&recipe_frame);
    // A recipe holds at most MAX_ENTRIES (4 million) entries, and a delta is one of them.
    pack.extend_from_slice(&(deltas.len() as u32).to_le_bytes());
    for (d, bytes) in &deltas {
        d.encode(bytes.len() as u64, &mut pack);
    }
    for (_, bytes) in &deltas {
        pack.extend_from_slice(bytes);
    }
    pack.extend_from_slice(&literal_raw.to_le_bytes());
    pack.extend_from_slice(&(literal_frame.len() as u64).to_le_bytes());
    pack.extend_from_slice(&literal_frame);

    let (reused_chunks, reused_bytes) = reused(target, &held);
    let summary = Summary {
        pack_bytes: pack.len() as u64,
        recipe_bytes: recipe_frame.len() as u64,
        delta_files: deltas.len() as u64,
        delta_bytes: deltas.iter().map(|(_, b)| b.len() as u64).sum(),
        delta_raw: deltas
            .iter()
            .map(|(d, _)| target.entries[d.entry as usize].size)
            .sum(),
        literal_chunks: literals.len() as u64,
        literal_raw,
        literal_bytes: literal_frame.len() as u64,
        reused_chunks,
        reused_bytes,
    };
    Ok((pack, summary))
}

/// The deltas worth sending (rule 2 in the module docs), in target entry order.
fn choose_deltas(
    target: &Recipe,
    bases: &[Base],
    held: &HashSet<ChunkId>,
    chunks: &dyn ChunkSource,
    opts: &Options,
) -> Result<Vec<(DeltaEntry, Vec<u8>)>, PackError> {
    let files = BaseFiles::new(bases, opts.similar_names);
    let mut out = Vec::new();
    // Chunks the deltas chosen so far rebuild: a copy of a delta'd file needs nothing.
    let mut covered: HashSet<ChunkId> = HashSet::new();
    for (i, e) in target.entries.iter().enumerate() {
        if e.kind != EntryKind::File || e.size == 0 || e.size > opts.max_target {
            continue;
        }
        let mut seen = HashSet::new();
        let missing: Vec<(usize, usize)> = chunk_spans(e)
            .filter(|(c, _)| !held.contains(&c.id) && !covered.contains(&c.id) && seen.insert(c.id))
            .map(|(_, span)| span)
            .collect();
        if missing.is_empty() {
            continue;
        }
        let Some((b, be)) = files.find(&e.path) else {
            continue;
        };
        let base_entry = &bases[b].recipe.entries[be];
        if base_entry.size > opts.max_target {
            continue;
        }
        let content = read_file(e, chunks)?;
        let base = read_file(base_entry, chunks)?;
        let missing_bytes: Vec<u8> = missing
            .iter()
            .flat_map(|&(at, len)| &content[at..at + len])
            .copied()
            .collect();
        let alone = compressed_len(&missing_bytes, opts.level.clamp(1, 19))?;
        let d = delta::make(&base, &content, &opts.budget)?;
        if delta::worth_sending(d.len() as u64, alone) {
            // Entry indexes fit in u32 (a recipe holds at most MAX_ENTRIES), base
            // indexes in u16 (at most MAX_BASES bases).
            let entry = DeltaEntry {
                entry: i as u32,
                base: b as u16,
                base_entry: be as u32,
            };
            covered.extend(e.chunks.iter().map(|c| c.id));
            out.push((entry, d.into_bytes()));
        }
    }
    Ok(out)
}

/// Each chunk of an entry with its span (offset, length) in the entry's content.
fn chunk_spans(
    e: &recipe::Entry,
) -> impl Iterator<Item = (&recipe::ChunkRef, (usize, usize))> + '_ {
    e.chunks.iter().scan(0usize, |at, c| {
        let span = (*at, c.len as usize);
        *at += c.len as usize;
        Some((c, span))
    })
}

/// Bytes of `bytes` compressed alone by zstd at `level`.
fn compressed_len(bytes: &[u8], level: i32) -> Result<u64, PackError> {
    zstd::bulk::compress(bytes, level)
        .map(|c| c.len() as u64)
        .map_err(|e| PackError::Make(MakeError::Zstd(e.to_string())))
}

/// The base files a target file may be delta'd against: by path, and by path with its
/// digits blurred. Each maps to the first (base, entry) in the bases' order.
struct BaseFiles<'a> {
    by_path: HashMap<&'a str, (usize, usize)>,
    by_shape: Option<HashMap<String, (usize, usize)>>,
}

impl<'a> BaseFiles<'a> {
    fn new(bases: &[Base<'a>], similar: bool) -> Self {
        let mut by_path = HashMap::new();
        let mut by_shape = similar.then(HashMap::new);
        for (b, base) in bases.iter().enumerate() {
            for (i, e) in base.recipe.entries.iter().enumerate() {
                if e.kind != EntryKind::File || e.size == 0 {
                    continue;
                }
                by_path.entry(e.path.as_str()).or_insert((b, i));
                if let Some(m) = &mut by_shape {
                    m.entry(shape(&e.path)).or_insert((b, i));
                }
            }
        }
        BaseFiles { by_path, by_shape }
    }

    /// The base file for a target file at `path`: the same path, else (if enabled) the
    /// same shape.
    fn find(&self, path: &str) -> Option<(usize, usize)> {
        if let Some(&hit) = self.by_path.get(path) {
            return Some(hit);
        }
        self.by_shape.as_ref()?.get(&shape(path)).copied()
    }
}

/// A path with every run of ASCII digits replaced by one `#`: the same for versions of
/// a file whose path carries its version. A target file with no base file at its path
/// is delta'd against the first base file of the same shape.
pub fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_digits = false;
    for ch in path.chars() {
        if ch.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(ch);
            in_digits = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shape;

    #[test]
    fn shapes_blur_digit_runs_only() {
        assert_eq!(shape("usr/lib/python3.11/os.py"), "usr/lib/python#.#/os.py");
        assert_eq!(
            shape("usr/lib/python3.11/os.py"),
            shape("usr/lib/python3.12/os.py")
        );
        assert_eq!(shape("libssl.so.3.0.20"), shape("libssl.so.3.0.22"));
        assert_ne!(shape("bin/ls"), shape("bin/cat"));
        assert_eq!(shape(""), "");
    }
}
