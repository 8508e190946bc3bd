//! `shoal-bench gc`: what garbage collection costs and whether the disk follows it.
//!
//! A series of image versions (a shared base layer and a layer of their own, random
//! content) is pulled into two nodes with `shoal pull`. The first has no budget: it
//! gives the full store's size, on disk and as GC counts it, and the time a dry run
//! (planning over every record) takes. The second has a budget of a fraction of that;
//! after every pull `shoal gc` runs, and the bench records its time, the store's usage
//! as GC counts it, and the store directory's size on disk (`du`), so the two can be
//! compared: the budget limits the first, an operator's disk sees the second.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use shoal_tests::image::{Layer, Layout, noise};
use shoal_tests::{Node, Registry};

/// Flags of `shoal-bench gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Image versions pulled.
    #[arg(long, default_value_t = 12)]
    images: u64,
    /// MiB of each version's own layer.
    #[arg(long, default_value_t = 16)]
    layer_mib: usize,
    /// MiB of the base layer every version shares.
    #[arg(long, default_value_t = 8)]
    base_mib: usize,
    /// The budget, as a fraction of the full store's usage.
    #[arg(long, default_value_t = 0.4)]
    budget_fraction: f64,
    /// Dry runs timed on the full store; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Serialize)]
struct Step {
    image: u64,
    usage_after_pull: u64,
    usage_after_gc: u64,
    disk_after_gc: u64,
    gc_millis: u64,
    freed: u64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    images: u64,
    full_usage: u64,
    full_disk: u64,
    dry_run_millis: Vec<u64>,
    median_dry_run_millis: u64,
    budget: u64,
    steps: Vec<Step>,
    max_usage_after_gc: u64,
    max_disk_after_gc: u64,
    median_gc_millis: u64,
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Bytes under `dir`, as `du -sb` counts them.
fn disk(dir: &Path) -> anyhow::Result<u64> {
    let out = shoal_tests::run(
        Command::new("du").arg("-sb").arg(dir),
        Duration::from_secs(60),
    )?;
    String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .context("du printed nothing")?
        .parse()
        .context("du printed no number")
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// Runs the benchmark.
pub fn run(args: &GcArgs) -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-gc-")
        .tempdir()?;
    let registry = Registry::start(dir.path())?;
    eprintln!("building {} versions...", args.images);
    let mut layout = Layout::new(&dir.path().join("layout"))?;
    for v in 0..args.images {
        let tag = format!("v{v}");
        layout.image(
            &[
                Layer::new().file("base", noise(args.base_mib << 20, 1)),
                Layer::new().file("app", noise(args.layer_mib << 20, 100 + v)),
            ],
            "amd64",
            Some(&tag),
        )?;
        layout.push(&tag, &format!("{}/app:{tag}", registry.addr), false, false)?;
    }
    let image = |v: u64| format!("{}/app:v{v}", registry.addr);
    let config = dir.path().join("gc.toml");
    std::fs::write(
        &config,
        "[gc]\nin_use = \"1s\"\nmax_age = \"off\"\nkeep_versions = 0\ninterval = \"1w\"\n",
    )?;
    let config = config.display().to_string();
    let wait_ingest = |node: &Node| {
        shoal_tests::process::wait_until("ingest", Duration::from_secs(300), || {
            Ok(node.stat("ingest_pending")? == 0)
        })
    };

    let mut report = Report {
        images: args.images,
        ..Report::default()
    };
    let full = Node::start_named(dir.path(), "full", &registry.url(), &["--config", &config])?;
    for v in 0..args.images {
        full.cli_json(&["pull", &image(v)])?;
    }
    wait_ingest(&full)?;
    report.full_usage = full.stat("store_bytes")?;
    report.full_disk = disk(&full.data_dir)?;
    for _ in 0..args.rounds {
        let dry = full.cli_json(&["gc", "--dry-run"])?;
        report
            .dry_run_millis
            .push(dry["millis"].as_u64().unwrap_or(0));
    }
    report.median_dry_run_millis = median(&report.dry_run_millis);
    drop(full);
    eprintln!(
        "full store: {:.1} MiB counted, {:.1} MiB on disk; dry run {} ms",
        mib(report.full_usage),
        mib(report.full_disk),
        report.median_dry_run_millis
    );

    report.budget = (report.full_usage as f64 * args.budget_fraction) as u64;
    let budget = report.budget.to_string();
    let node = Node::start_named(
        dir.path(),
        "budget",
        &registry.url(),
        &["--config", &config, "--gc-budget", &budget],
    )?;
    for v in 0..args.images {
        node.cli_json(&["pull", &image(v)])?;
        wait_ingest(&node)?;
        let usage_after_pull = node.stat("store_bytes")?;
        // Past the in-use window, so the image just pulled may go too.
        std::thread::sleep(Duration::from_millis(1100));
        let gc = node.cli_json(&["gc"])?;
        let step = Step {
            image: v,
            usage_after_pull,
            usage_after_gc: gc["usage_after"].as_u64().unwrap_or(0),
            disk_after_gc: disk(&node.data_dir)?,
            gc_millis: gc["millis"].as_u64().unwrap_or(0),
            freed: gc["freed"].as_u64().unwrap_or(0),
        };
        eprintln!(
            "v{v}: {:.1} MiB after the pull, {:.1} MiB after gc ({} ms), {:.1} MiB on disk",
            mib(step.usage_after_pull),
            mib(step.usage_after_gc),
            step.gc_millis,
            mib(step.disk_after_gc)
        );
        report.steps.push(step);
    }
    report.max_usage_after_gc = report
        .steps
        .iter()
        .map(|s| s.usage_after_gc)
        .max()
        .unwrap_or(0);
    report.max_disk_after_gc = report
        .steps
        .iter()
        .map(|s| s.disk_after_gc)
        .max()
        .unwrap_or(0);
    report.median_gc_millis = median(&report.steps.iter().map(|s| s.gc_millis).collect::<Vec<_>>());

    println!(
        "{} versions of {} MiB + a shared {} MiB base; full store {:.1} MiB counted, {:.1} MiB on disk",
        args.images,
        args.layer_mib,
        args.base_mib,
        mib(report.full_usage),
        mib(report.full_disk)
    );
    println!(
        "budget {:.1} MiB: after every gc at most {:.1} MiB counted, {:.1} MiB on disk; gc median {} ms, dry run over the full store median {} ms",
        mib(report.budget),
        mib(report.max_usage_after_gc),
        mib(report.max_disk_after_gc),
        report.median_gc_millis,
        report.median_dry_run_millis
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
