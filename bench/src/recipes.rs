//! `shoal-bench recipes`: layer ingest on real content. Two versions of a Debian root
//! (debootstrap minbase, then the same with packages added) are packed as gzip layers;
//! each is ingested into a fresh RocksDB store by the node's own code (decompress,
//! cut file-aware, hash, store), beside `gzip -d` of the same layer, rounds
//! interleaved. Reports MB/s of uncompressed content, recipe sizes, and how much of
//! v2's content v1 already held.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use shoal_node::ingest::{IngestLimits, ingest_layer};
use shoal_node::store::Store;
use shoal_node::store::content::ContentStore;
use shoal_node::store::recipes::RecipeStore;
use shoal_node::store::rocks::RocksEngine;
use shoal_protocol::Digest;

/// Flags of `shoal-bench recipes`.
#[derive(Debug, clap::Args)]
pub struct RecipesArgs {
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Packages v2 adds to v1's minbase root.
    #[arg(long, default_value = "curl,ca-certificates,less,procps")]
    v2_packages: String,
    /// Where to keep the two roots between runs (built once; debootstrap takes ~30 s each).
    #[arg(long, default_value = "/var/tmp/shoal-bench-roots")]
    roots: PathBuf,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct LayerFigures {
    name: String,
    gzip_bytes: u64,
    tar_bytes: u64,
    entries: usize,
    recipe_bytes: usize,
    ingest_mb_s: Vec<f64>,
    gzip_d_mb_s: Vec<f64>,
    median_ingest_mb_s: f64,
    median_gzip_d_mb_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    layers: Vec<LayerFigures>,
    v2_content_bytes: u64,
    v2_new_content_bytes: u64,
    v2_content_reused: f64,
}

/// Runs the benchmark.
pub fn run(args: &RecipesArgs) -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let v1 = debootstrap(&args.roots.join("v1"), None)?;
    let v2 = debootstrap(&args.roots.join("v2"), Some(&args.v2_packages))?;
    let work = tempfile::Builder::new()
        .prefix("shoal-bench-recipes-")
        .tempdir()?;
    let layers = [
        ("v1", pack(&v1, work.path(), "v1")?),
        ("v2", pack(&v2, work.path(), "v2")?),
    ];

    let mut figures = Vec::new();
    for (name, (gz, tar_size, diff_id)) in &layers {
        let blob = std::fs::read(gz)?;
        let digest = Digest::of(&blob);
        let (mut ingest, mut gunzip) = (Vec::new(), Vec::new());
        let (mut entries, mut recipe_bytes) = (0, 0);
        for round in 0..args.rounds {
            let t = time(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("gzip -d -c {} > /dev/null", gz.display())),
            )?;
            gunzip.push(*tar_size as f64 / 1e6 / t.as_secs_f64());
            let dir = work.path().join(format!("store-{name}-{round}"));
            let store = ContentStore::new(RocksEngine::open(&dir, false)?)?;
            store.put_blob(&digest, &blob, None)?;
            let start = Instant::now();
            let summary = ingest_layer(&store, &digest, diff_id, IngestLimits::default())?
                .context("the layer was ingested already")?;
            let took = start.elapsed();
            ingest.push(*tar_size as f64 / 1e6 / took.as_secs_f64());
            entries = summary.entries;
            recipe_bytes = store.recipe(&digest)?.map_or(0, |r| r.encoded.len());
            drop(store);
            std::fs::remove_dir_all(&dir)?;
            eprintln!(
                "{name} round {}: ingest {:.0} MB/s, gzip -d {:.0} MB/s",
                round + 1,
                ingest[round],
                gunzip[round]
            );
        }
        figures.push(LayerFigures {
            name: name.to_string(),
            gzip_bytes: blob.len() as u64,
            tar_bytes: *tar_size,
            entries,
            recipe_bytes,
            median_ingest_mb_s: median(&ingest),
            median_gzip_d_mb_s: median(&gunzip),
            ingest_mb_s: ingest,
            gzip_d_mb_s: gunzip,
        });
    }

    // Dedup: v1 then v2 into one store.
    let dir = work.path().join("store-both");
    let store = ContentStore::new(RocksEngine::open(&dir, false)?)?;
    let mut stored_after = Vec::new();
    for (_, (gz, _, diff_id)) in &layers {
        let blob = std::fs::read(gz)?;
        let digest = Digest::of(&blob);
        store.put_blob(&digest, &blob, None)?;
        ingest_layer(&store, &digest, diff_id, IngestLimits::default())?;
        stored_after.push(store.totals()?.chunk_bytes);
    }
    let v2_digest = Digest::of(&std::fs::read(&layers[1].1.0)?);
    let v2_record = store.recipe(&v2_digest)?.context("v2 recipe")?;
    let v2_content = shoal_protocol::recipe::decode(&v2_record.encoded)?.content_bytes();
    let v2_new = stored_after[1] - stored_after[0];
    let report = Report {
        layers: figures,
        v2_content_bytes: v2_content,
        v2_new_content_bytes: v2_new,
        v2_content_reused: 1.0 - v2_new as f64 / v2_content as f64,
    };
    println!(
        "{:<4} {:>10} {:>10} {:>8} {:>12} {:>14} {:>14}",
        "", "gzip MB", "tar MB", "entries", "recipe KB", "ingest MB/s", "gzip -d MB/s"
    );
    for l in &report.layers {
        println!(
            "{:<4} {:>10.1} {:>10.1} {:>8} {:>12.1} {:>14.0} {:>14.0}",
            l.name,
            l.gzip_bytes as f64 / 1e6,
            l.tar_bytes as f64 / 1e6,
            l.entries,
            l.recipe_bytes as f64 / 1e3,
            l.median_ingest_mb_s,
            l.median_gzip_d_mb_s
        );
    }
    println!(
        "v2 holds {:.1} MB of file content; {:.1} MB of it was new after v1 ({:.1}% reused)",
        report.v2_content_bytes as f64 / 1e6,
        report.v2_new_content_bytes as f64 / 1e6,
        100.0 * report.v2_content_reused
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// A minbase Debian root in `dir` (kept if already built).
pub(crate) fn debootstrap(dir: &Path, include: Option<&str>) -> anyhow::Result<PathBuf> {
    if dir.join("etc/debian_version").is_file() {
        return Ok(dir.to_owned());
    }
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("debootstrap {} (once)...", dir.display());
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if let Some(p) = include {
        cmd.arg(format!("--include={p}"));
    }
    cmd.arg("bookworm").arg(dir);
    shoal_tests::run(&mut cmd, Duration::from_secs(900))
        .context("debootstrap (needs Debian's package mirror)")?;
    Ok(dir.to_owned())
}

/// Packs `root` as a gzip layer the way image builders do; returns the blob path, the
/// tar size and the diff_id.
fn pack(root: &Path, work: &Path, name: &str) -> anyhow::Result<(PathBuf, u64, Digest)> {
    let tar = work.join(format!("{name}.tar"));
    shoal_tests::run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--sort=name", "-C"])
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        Duration::from_secs(300),
    )?;
    let bytes = std::fs::read(&tar)?;
    let (size, diff_id) = (bytes.len() as u64, Digest::of(&bytes));
    shoal_tests::run(
        Command::new("gzip").arg("-6").arg("-f").arg(&tar),
        Duration::from_secs(300),
    )?;
    Ok((work.join(format!("{name}.tar.gz")), size, diff_id))
}

fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    shoal_tests::run(cmd, Duration::from_secs(300))?;
    Ok(start.elapsed())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() { 0.0 } else { s[s.len() / 2] }
}
