//! Makes and applies a pack of two layer tars outside the benchmark, to see where its
//! bytes go and how long each step takes.
//!
//! ```text
//! cargo run --release -p shoal-diff --example pack -- BASE.tar TARGET.tar [LEVEL [RECIPE_LEVEL]]
//! ```
//!
//! Builds both recipes in memory, makes the pack of TARGET against BASE (the literal
//! stream at LEVEL, the recipe at RECIPE_LEVEL; the defaults otherwise), applies it
//! with BASE's chunks alone, re-creates TARGET's tar from them and the chunks received
//! (its diff_id checked), and prints the summary and the times.

use std::collections::HashMap;
use std::time::Instant;

use shoal_diff::pack::{self, Base, Limits, Options};
use shoal_protocol::Digest;
use shoal_protocol::recipe::{self, ChunkId, Recipe};

struct Layer {
    digest: Digest,
    recipe: Recipe,
    encoded: Vec<u8>,
}

fn layer(tar: &[u8], store: &mut HashMap<ChunkId, Vec<u8>>) -> anyhow::Result<Layer> {
    let recipe = shoal_diff::build(tar, &mut |c, bytes| {
        store.entry(c.id).or_insert_with(|| bytes.to_vec());
    })?;
    Ok(Layer {
        digest: Digest::of(tar),
        encoded: recipe::encode(&recipe),
        recipe,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: pack BASE.tar TARGET.tar [LEVEL [RECIPE_LEVEL]]"
    );
    let mut opts = Options::default();
    if let Some(level) = args.get(2) {
        opts.level = level.parse()?;
    }
    if let Some(level) = args.get(3) {
        opts.recipe_level = level.parse()?;
    }
    let (mut base_store, mut target_store) = (HashMap::new(), HashMap::new());
    let base_tar = std::fs::read(&args[0])?;
    let target_tar = std::fs::read(&args[1])?;
    let base = layer(&base_tar, &mut base_store)?;
    let target = layer(&target_tar, &mut target_store)?;
    let mut sender = base_store.clone();
    sender.extend(target_store.drain());
    let bases = [Base {
        layer: base.digest,
        recipe: &base.recipe,
        encoded: &base.encoded,
    }];

    let t = Instant::now();
    let (p, made) = pack::make(
        target.digest,
        &target.recipe,
        &target.encoded,
        &bases,
        None,
        &sender,
        &opts,
    )?;
    let make_time = t.elapsed();
    drop(sender);

    let t = Instant::now();
    let mut received = HashMap::new();
    let applied = pack::apply(
        &p,
        &bases,
        &base_store,
        &mut |c, bytes| {
            received.insert(c.id, bytes.to_vec());
            Ok(())
        },
        &Limits::default(),
    )?;
    let apply_time = t.elapsed();
    anyhow::ensure!(applied.summary == made, "make and apply summarise alike");
    base_store.extend(received);
    let n = shoal_diff::recreate(
        &applied.recipe,
        |id| base_store.get(id),
        &mut std::io::sink(),
    )?;
    anyhow::ensure!(n == target_tar.len() as u64);

    println!(
        "pack {} B (recipe {} B; {} deltas {} B for {} B; literal {} chunks {} B for {} B); reused {} B",
        made.pack_bytes,
        made.recipe_bytes,
        made.delta_files,
        made.delta_bytes,
        made.delta_raw,
        made.literal_chunks,
        made.literal_bytes,
        made.literal_raw,
        made.reused_bytes
    );
    println!("made in {make_time:.2?}, applied in {apply_time:.2?}, tar re-created and checked");
    Ok(())
}
