#![no_main]
//! A tar pushed to `RecipeBuilder` in slices: when it is accepted, `recreate` writes
//! back exactly the bytes pushed, and pushing it in one slice gives the same recipe.
//!
//! Input: a length byte `n` (0..=15), then `n` slice sizes (one byte each, 0 meaning
//! "the rest"), then the tar. The slice sizes repeat until the tar is used up.

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use shoal_diff::{RecipeBuilder, recreate};
use shoal_protocol::recipe::{ChunkId, ChunkRef};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, tar) = rest.split_at(n);

    let mut chunks: HashMap<ChunkId, Vec<u8>> = HashMap::new();
    let mut sink = |c: ChunkRef, bytes: &[u8]| {
        assert_eq!(c.len as usize, bytes.len(), "chunk length");
        assert!(c.id.matches(bytes), "chunk id");
        chunks.entry(c.id).or_insert_with(|| bytes.to_vec());
    };
    let mut builder = RecipeBuilder::new();
    let mut pushed = 0;
    let mut failed = false;
    let mut i = 0;
    while pushed < tar.len() {
        let want = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) if s != 0 => usize::from(s),
            _ => tar.len() - pushed,
        };
        let end = (pushed + want).min(tar.len());
        if builder.push(&tar[pushed..end], &mut sink).is_err() {
            failed = true;
            break;
        }
        pushed = end;
        i += 1;
    }
    let sliced = builder.finish();
    if failed {
        assert!(sliced.is_err(), "finish after a failed push");
    }

    let mut whole_chunks = 0usize;
    let mut one = RecipeBuilder::new();
    let whole = one
        .push(tar, &mut |_, _| whole_chunks += 1)
        .and_then(|()| one.finish());
    assert_eq!(
        sliced.is_ok(),
        whole.is_ok(),
        "slicing changed the outcome: {sliced:?} vs {whole:?}"
    );
    let Ok(recipe) = sliced else {
        return;
    };
    assert_eq!(whole.unwrap(), recipe, "slicing changed the recipe");
    assert_eq!(recipe.tar_size, tar.len() as u64);
    recipe.validate().expect("builder made an invalid recipe");

    let mut out = Vec::with_capacity(tar.len());
    let written = recreate(&recipe, |id| chunks.get(id).map(Vec::as_slice), &mut out)
        .expect("recreate of a fresh recipe");
    assert_eq!(written, tar.len() as u64);
    assert!(out == tar, "recreated tar differs");
});
