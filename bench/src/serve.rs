//! `shoal-bench serve`: how fast a node serves a large layer from its store, and how
//! fast it ingests one from the origin, beside curl fetching the same blob straight from
//! the docker-registry origin, rounds interleaved so that machine noise hits both.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use shoal_protocol::Digest;
use shoal_tests::image::{Layer, Layout, noise};
use shoal_tests::{Node, Registry};

/// Flags of `shoal-bench serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Size of the layer's content in MiB (random, so the gzip blob is about as large).
    #[arg(long, default_value_t = 128)]
    size_mib: usize,
    /// Rounds of each measurement; medians are reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    blob_bytes: u64,
    rounds: usize,
    origin_curl_mb_s: Vec<f64>,
    node_serve_mb_s: Vec<f64>,
    node_ingest_mb_s: Vec<f64>,
    median_origin_curl_mb_s: f64,
    median_node_serve_mb_s: f64,
    median_node_ingest_mb_s: f64,
    serve_over_origin: f64,
}

/// Runs the benchmark.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-serve-")
        .tempdir()?;
    let registry = Registry::start(dir.path())?;
    eprintln!("building a {} MiB layer...", args.size_mib);
    let mut layout = Layout::new(&dir.path().join("layout"))?;
    let built = layout.image(
        &[Layer::new().file("blob", noise(args.size_mib << 20, 42))],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/bench:v1", registry.addr), false, false)?;
    let layer = built.blobs[1];
    let size = std::fs::metadata(registry.blob_path(&layer))?.len();
    let origin_url = format!("{}/v2/bench/blobs/{layer}", registry.url());

    let warm = Node::start_named(dir.path(), "warm", &registry.url(), &[])?;
    let warm_url = format!("{}/v2/bench/blobs/{layer}", warm.url());
    fetch(&warm_url, size, &layer)?; // fill its store

    let (mut origin, mut serve, mut ingest) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        origin.push(mb_s(size, fetch(&origin_url, size, &layer)?));
        serve.push(mb_s(size, fetch(&warm_url, size, &layer)?));
        // Ingest: a node with an empty store pulls the blob through itself.
        let cold = Node::start_named(dir.path(), &format!("cold-{round}"), &registry.url(), &[])?;
        let cold_url = format!("{}/v2/bench/blobs/{layer}", cold.url());
        ingest.push(mb_s(size, fetch_cold(&cold_url, size)?));
        drop(cold);
        std::fs::remove_dir_all(dir.path().join(format!("cold-{round}")))?;
        eprintln!(
            "round {}: origin {:.0} MB/s, node serve {:.0} MB/s, node ingest {:.0} MB/s",
            round + 1,
            origin[round],
            serve[round],
            ingest[round]
        );
    }
    let report = Report {
        blob_bytes: size,
        rounds: args.rounds,
        median_origin_curl_mb_s: median(&origin),
        median_node_serve_mb_s: median(&serve),
        median_node_ingest_mb_s: median(&ingest),
        serve_over_origin: median(&serve) / median(&origin),
        origin_curl_mb_s: origin,
        node_serve_mb_s: serve,
        node_ingest_mb_s: ingest,
    };
    println!(
        "blob: {:.1} MB, {} rounds, medians:",
        size as f64 / 1e6,
        args.rounds
    );
    println!(
        "  curl from docker-registry origin  {:>8.0} MB/s",
        report.median_origin_curl_mb_s
    );
    println!(
        "  curl from shoal node (stored)     {:>8.0} MB/s  ({:.2}x origin)",
        report.median_node_serve_mb_s, report.serve_over_origin
    );
    println!(
        "  curl through cold node (ingest)   {:>8.0} MB/s",
        report.median_node_ingest_mb_s
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Fetches `url` with curl once to a file and checks its digest (untimed), then
/// times one more fetch.
pub(crate) fn fetch(url: &str, size: u64, digest: &Digest) -> anyhow::Result<Duration> {
    let out = tempfile::NamedTempFile::new()?;
    shoal_tests::run(
        Command::new("curl")
            .args(["-sS", "--fail", "--noproxy", "*", "-o"])
            .arg(out.path())
            .arg(url),
        Duration::from_secs(600),
    )?;
    let bytes = std::fs::read(out.path())?;
    if bytes.len() as u64 != size || Digest::of(&bytes) != *digest {
        bail!("{url} gave {} bytes that are not {digest}", bytes.len());
    }
    fetch_cold(url, size)
}

/// Times one fetch of `url` to /dev/null, checking status and size. Through a node
/// with an empty store, this is its ingest.
pub(crate) fn fetch_cold(url: &str, size: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = shoal_tests::run(
        Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--noproxy",
                "*",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
            ])
            .arg(url),
        Duration::from_secs(600),
    )?;
    let took = start.elapsed();
    let got: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("curl size")?;
    if got != size {
        bail!("{url} gave {got} of {size} bytes");
    }
    Ok(took)
}

pub(crate) fn mb_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() { 0.0 } else { s[s.len() / 2] }
}
