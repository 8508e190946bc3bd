//! Making and applying deltas on two kinds of pair:
//!
//! - `elf`: a real ELF binary and a "rebuilt" version of it (one 4-byte change per
//!   2 KiB on average, 16 insertions and 8 deletions of up to 4 KiB: moved addresses
//!   and shifted sections). The binary is `$SHOAL_DELTA_ELF`, or this benchmark's own
//!   executable. `$SHOAL_DELTA_PAIR=OLD:NEW` adds a real pair of builds.
//! - `text`: 96 MiB of generated text-like content and a version with 96 edits and
//!   1 MiB appended: over the segmenting threshold, so segmented.
//!
//! Each pair is made with the default budget (bidiff where it fits, else zstd with the
//! base as prefix, segmented when large) and with zstd alone (bidiff off), and the
//! delta sizes are printed beside the times.
//!
//! `cargo bench -p shoal-diff --bench delta`

#[path = "pairs/mod.rs"]
mod pairs;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_diff::delta::{self, Budget};

fn elf() -> Vec<u8> {
    let path = std::env::var_os("SHOAL_DELTA_ELF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().expect("the benchmark's executable"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn bench_pair(c: &mut Criterion, name: &str, base: &[u8], target: &[u8]) {
    let zstd_only = Budget {
        bsdiff_max: 0,
        ..Budget::default()
    };
    let mut group = c.benchmark_group(format!("delta/{name}"));
    group.sample_size(10);
    group.throughput(Throughput::Bytes(target.len() as u64));
    for (what, budget) in [("default", Budget::default()), ("zstd", zstd_only)] {
        let d = delta::make(base, target, &budget).expect("makes");
        eprintln!(
            "{name}, {what}: base {} B, target {} B -> {:?} delta of {} B ({:.3}%)",
            base.len(),
            target.len(),
            d.header().method,
            d.len(),
            d.len() as f64 * 100.0 / target.len() as f64
        );
        group.bench_function(format!("make, {what}"), |b| {
            b.iter(|| delta::make(black_box(base), black_box(target), &budget).expect("makes"))
        });
        group.bench_function(format!("apply, {what}"), |b| {
            b.iter(|| delta::apply(black_box(base), black_box(d.as_bytes())).expect("applies"))
        });
    }
    group.finish();
}

fn deltas(c: &mut Criterion) {
    let binary = elf();
    let rebuilt = pairs::rebuilt(&binary, 1);
    bench_pair(c, "elf", &binary, &rebuilt);
    if let Some(pair) = std::env::var_os("SHOAL_DELTA_PAIR") {
        let pair = pair.to_string_lossy().into_owned();
        let (old, new) = pair.split_once(':').expect("SHOAL_DELTA_PAIR=OLD:NEW");
        let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("reading {p}: {e}"));
        bench_pair(c, "real", &read(old), &read(new));
    }
    let text = pairs::text(96 << 20, 1);
    let edited = pairs::edited(&text, 96, 1 << 20, 2);
    bench_pair(c, "text", &text, &edited);
}

criterion_group!(benches, deltas);
criterion_main!(benches);
