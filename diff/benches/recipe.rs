//! Throughput of building a layer recipe from an in-memory tar (~64 MiB of files with
//! random content, so nothing dedups), beside the hashes it must compute anyway:
//! BLAKE3 alone and sha256 alone over the same bytes.
//!
//! `cargo bench -p shoal-diff -- --quick`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_diff::RecipeBuilder;
use shoal_protocol::Digest;

/// A tar of files with random content, sizes spread from 1 KiB to 8 MiB (log-uniform),
/// about `total` bytes in all.
fn layer(total: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::with_capacity(total + (1 << 20)));
    let mut xof = blake3::Hasher::new().update(b"bench").finalize_xof();
    let (mut written, mut i) = (0, 0);
    while written < total {
        let mut pick = [0u8; 8];
        xof.fill(&mut pick);
        // 2^10 .. 2^23 bytes.
        let log = 10.0 + (u64::from_le_bytes(pick) % 13_000) as f64 / 1000.0;
        let len = (2f64.powf(log) as usize).min(total - written).max(1);
        let mut content = vec![0; len];
        xof.fill(&mut content);
        let mut h = tar::Header::new_gnu();
        h.set_size(len as u64);
        h.set_mode(0o644);
        builder
            .append_data(&mut h, format!("usr/lib/file-{i}"), &content[..])
            .expect("appends to memory");
        written += len;
        i += 1;
    }
    builder.into_inner().expect("finishes in memory")
}

fn build(tar: &[u8], slice: usize) -> u64 {
    let mut builder = RecipeBuilder::new();
    let mut chunks = 0u64;
    for part in tar.chunks(slice) {
        builder
            .push(part, &mut |_, bytes| {
                black_box(bytes);
                chunks += 1;
            })
            .expect("a good tar");
    }
    black_box(builder.finish().expect("a good tar"));
    chunks
}

fn recipe(c: &mut Criterion) {
    let tar = layer(64 << 20);
    let mut group = c.benchmark_group("recipe");
    group.throughput(Throughput::Bytes(tar.len() as u64));
    group.sample_size(10);
    group.bench_function("build, 64 KiB slices", |b| b.iter(|| build(&tar, 64 << 10)));
    group.bench_function("build, whole tar", |b| b.iter(|| build(&tar, tar.len())));
    group.bench_function("blake3 alone", |b| b.iter(|| blake3::hash(black_box(&tar))));
    group.bench_function("sha256 alone", |b| b.iter(|| Digest::of(black_box(&tar))));
    group.finish();
}

criterion_group!(benches, recipe);
criterion_main!(benches);
