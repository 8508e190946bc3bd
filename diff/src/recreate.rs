//! Writing a layer's tar back from its recipe, byte for byte.
//!
//! The recipe may come from a peer and the chunks from anywhere, so nothing is taken
//! on trust: the recipe is validated first (its sizes bound everything written), each
//! chunk is checked against its length and id before a byte of it is written, and the
//! sha256 of all that was written is compared with the recipe's diff_id at the end.
//! Bytes already written when an error is found are the caller's to discard.

use std::io::Write;

use shoal_protocol::digest::DigestHasher;
use shoal_protocol::recipe::{ChunkId, Entry, Padding, Recipe};

use crate::error::RecreateError;

/// Writes the tar `recipe` describes to `out`, taking each chunk's bytes from `chunk`
/// (which may return an owned `Vec<u8>` or a borrowed slice). Returns the bytes
/// written, which are exactly [`Recipe::tar_size`] and hash to its diff_id.
pub fn recreate<B: AsRef<[u8]>>(
    recipe: &Recipe,
    mut chunk: impl FnMut(&ChunkId) -> Option<B>,
    out: &mut dyn Write,
) -> Result<u64, RecreateError> {
    recipe.validate()?;
    let mut diff_id = DigestHasher::new();
    let mut write = |bytes: &[u8]| {
        diff_id.update(bytes);
        out.write_all(bytes).map_err(RecreateError::Write)
    };
    const ZEROS: [u8; 512] = [0; 512];
    for (entry, e) in recipe.entries.iter().enumerate() {
        write(&e.header)?;
        for (index, c) in e.chunks.iter().enumerate() {
            let bytes = chunk(&c.id).ok_or_else(|| RecreateError::MissingChunk {
                entry,
                path: e.path.clone(),
                index,
                id: c.id,
            })?;
            let bytes = bytes.as_ref();
            if bytes.len() != c.len as usize {
                return Err(RecreateError::ChunkLength {
                    entry,
                    path: e.path.clone(),
                    index,
                    id: c.id,
                    expected: c.len,
                    got: bytes.len(),
                });
            }
            if !c.id.matches(bytes) {
                return Err(RecreateError::ChunkMismatch {
                    entry,
                    path: e.path.clone(),
                    index,
                    id: c.id,
                });
            }
            write(bytes)?;
        }
        match &e.padding {
            // Validated: less than a block.
            Padding::Zeros => write(&ZEROS[..Entry::padding_len(e.size) as usize])?,
            Padding::Raw(bytes) => write(bytes)?,
        }
    }
    write(&recipe.trailer)?;
    let got = diff_id.finish();
    if got != recipe.diff_id {
        return Err(RecreateError::DiffId {
            expected: recipe.diff_id,
            got,
        });
    }
    Ok(recipe.tar_size)
}
