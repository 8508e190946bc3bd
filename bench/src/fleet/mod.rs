//! `shoal-bench fleet`: a fleet of real hosts on this machine. Each node runs `shoal
//! node` in a network namespace of its own, the origin (Debian's docker-registry) in
//! another, all joined through a bridge by veth links shaped with `tc tbf` to a rate
//! per node and a rate for the origin. Each scenario runs with shoal and then as its
//! baseline (every host pulling straight from the origin) on the same links, beside
//! the lower bound (bytes needed over the link rate). Writes every figure as JSON and
//! an HTML report with plots.
//!
//! - `net.rs`: namespaces, links, shaping, link counters; `cleanup.rs`: removal of all
//!   of it on any exit, and of what dead runs left.
//! - `hosts.rs`: the origin and node processes; `images.rs`: the image's two versions.
//! - `order.rs`: "every node, fetch X", as one `shoal seed`; `baseline.rs`: the hosts
//!   as plain origin clients; `scenario.rs`: the scenarios and their figures.
//! - `report.rs`: the JSON; `html.rs` and `svg.rs`: the report and its plots.

mod baseline;
mod cleanup;
mod hosts;
mod html;
mod http;
mod images;
mod net;
mod order;
mod progress;
mod report;
mod scenario;
mod svg;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use images::{ImageSpec, Roots};
use net::{Net, Rate, Sampler, Shaping};
use report::{Config, ImagesFigures, Report};
use scenario::Scenario;

/// Flags of `shoal-bench fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Nodes in the fleet, each in its own network namespace.
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Each node's uplink and downlink (tc units: kbit, mbit, gbit).
    #[arg(long, default_value = "200mbit")]
    node_rate: Rate,
    /// The origin's uplink (and downlink).
    #[arg(long, default_value = "200mbit")]
    origin_rate: Rate,
    /// The image: `debian` (debootstrap minbase roots, v2 with packages added) or
    /// `synthetic:SIZE` (random content, e.g. synthetic:32MiB).
    #[arg(long, default_value = "debian")]
    image: ImageSpec,
    /// Scenarios to run, comma-separated: cold, update, churn, proxy, or all.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Peers each node is told to dial at start (`--bootstrap`); the rest it finds
    /// through the DHT.
    #[arg(long, default_value_t = 2)]
    bootstrap: usize,
    /// Kills in the churn scenario [default: a third of the nodes].
    #[arg(long)]
    churn_kills: Option<usize>,
    /// Seconds a killed node stays down before it is started again.
    #[arg(long, default_value_t = 2.0)]
    churn_down: f64,
    /// Seed of the churn schedule (which node is killed when).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write every figure.
    #[arg(long, default_value = "shoal-bench-fleet.json")]
    json: PathBuf,
    /// Where to write the HTML report.
    #[arg(long, default_value = "shoal-bench-fleet.html")]
    html: PathBuf,
    /// Packages v2 adds to v1's minbase root (`--image debian`).
    #[arg(long, default_value = "curl,ca-certificates,less,procps")]
    v2_packages: String,
    /// Where the Debian roots are kept between runs (the same as `recipes` uses).
    #[arg(long, default_value = "/var/tmp/shoal-bench-roots")]
    roots: PathBuf,
    /// Where the run's work directory (the nodes' stores, logs, the origin's storage)
    /// goes. By default in memory: each host of a real fleet has a disk of its own,
    /// and a disk shared by every node (and by whatever else this machine runs) would
    /// be measured instead of the network. A run needs about nodes × 3 × the image.
    #[arg(long, default_value = "/dev/shm")]
    work_root: PathBuf,
    /// Keep the work directory (the nodes' logs, the origin's) after the run; the
    /// namespaces and processes still go.
    #[arg(long)]
    keep_work: bool,
}

/// The run's settings, checked.
#[derive(Debug)]
pub struct FleetConfig {
    /// Nodes.
    pub nodes: usize,
    /// Each node's link rate.
    pub node_rate: Rate,
    /// The origin's.
    pub origin_rate: Rate,
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Peers dialled at start.
    pub bootstrap: usize,
    /// Kills in `churn`.
    pub churn_kills: usize,
    /// Down time per kill.
    pub churn_down: Duration,
    /// Churn seed.
    pub seed: u64,
}

impl FleetConfig {
    fn from_args(args: &FleetArgs) -> anyhow::Result<FleetConfig> {
        if !(2..=250).contains(&args.nodes) {
            bail!("--nodes must be 2 to 250");
        }
        let mut scenarios = Vec::new();
        for s in args.scenario.split(',').map(str::trim) {
            if s == "all" {
                scenarios.extend(Scenario::ALL);
            } else {
                scenarios.push(s.parse()?);
            }
        }
        scenarios.dedup();
        if scenarios.is_empty() {
            bail!("--scenario names no scenario");
        }
        if !(args.churn_down.is_finite() && (0.0..=120.0).contains(&args.churn_down)) {
            bail!("--churn-down must be 0 to 120 seconds");
        }
        Ok(FleetConfig {
            nodes: args.nodes,
            node_rate: args.node_rate,
            origin_rate: args.origin_rate,
            scenarios,
            bootstrap: args.bootstrap.max(1),
            churn_kills: args.churn_kills.unwrap_or(args.nodes.div_ceil(3)),
            churn_down: Duration::from_secs_f64(args.churn_down),
            seed: args.seed,
        })
    }
}

/// Undoes everything the run made when dropped: the last thing dropped.
struct UndoAll;

impl Drop for UndoAll {
    fn drop(&mut self) {
        cleanup::undo_all();
    }
}

/// Runs the benchmark.
pub fn run(args: &FleetArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let cfg = FleetConfig::from_args(args)?;
    preflight(&cfg, args)?;
    cleanup::install_signal_handler()?;
    let _undo = UndoAll;
    cleanup::sweep_leftovers(&args.work_root);

    // A kept directory is named apart, so that no later run's sweep removes it.
    let prefix = match args.keep_work {
        true => format!("shoal-bench-fleet-kept-{}-", std::process::id()),
        false => cleanup::run_prefix(),
    };
    let mut work = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&args.work_root)
        .with_context(|| format!("a work directory in {}", args.work_root.display()))?;
    if args.keep_work {
        work.disable_cleanup(true);
        eprintln!("keeping the work directory {}", work.path().display());
    } else {
        cleanup::track_dir(work.path());
    }
    let shoal = shoal_tests::node::shoal_binary()?;

    eprintln!("building the image ({})...", args.image);
    let images = images::build(
        &args.image,
        &Roots {
            dir: &args.roots,
            v2_packages: &args.v2_packages,
        },
        work.path(),
    )?;
    eprintln!(
        "v1: {:.1} MB, v2: {:.1} MB ({:.1} MB of it not in v1)",
        images.v1.bytes() as f64 / 1e6,
        images.v2.bytes() as f64 / 1e6,
        images.v2.bytes_after(&images.v1) as f64 / 1e6
    );

    eprintln!(
        "building the network: {} node namespaces at {}, origin at {}...",
        cfg.nodes, cfg.node_rate, cfg.origin_rate
    );
    let net = Net::create(
        cfg.nodes,
        Shaping {
            node: cfg.node_rate,
            origin: cfg.origin_rate,
        },
    )?;
    let sampler = Arc::new(Sampler::start(&net, Duration::from_millis(200))?);
    let origin = hosts::Origin::start(&net, &images.storage, work.path())?;
    let key = work.path().join("fleet.key");
    std::fs::write(&key, shoal_tests::fleet::random_key())?;

    let ctx = scenario::Ctx {
        net: &net,
        sampler: &sampler,
        origin: &origin,
        images: &images,
        shoal: &shoal,
        key: &key,
        work: work.path(),
        cfg: &cfg,
    };
    let mut figures = Vec::new();
    for s in &cfg.scenarios {
        figures.push(scenario::run(&ctx, *s).with_context(|| format!("scenario {}", s.name()))?);
    }

    let config = Config {
        nodes: cfg.nodes,
        node_rate_bps: cfg.node_rate.0,
        origin_rate_bps: cfg.origin_rate.0,
        image: args.image.to_string(),
        scenarios: cfg.scenarios.iter().map(|s| s.name().to_owned()).collect(),
        bootstrap: cfg.bootstrap,
        churn_kills: cfg.churn_kills,
        churn_down_s: cfg.churn_down.as_secs_f64(),
        seed: cfg.seed,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: command_line("uname", &["-r"]),
        shaping: format!(
            "tc tbf on both ends of every veth: {} each way per node, {} each way for the origin; burst max(10 ms, 64 KiB), queue 50 ms; MTU 1500",
            cfg.node_rate, cfg.origin_rate
        ),
    };
    let report = Report {
        tool: format!("shoal-bench fleet {}", env!("CARGO_PKG_VERSION")),
        goals: Report::goals(&config, &figures),
        images: ImagesFigures {
            description: images.description.clone(),
            v1_bytes: images.v1.bytes(),
            v2_bytes: images.v2.bytes(),
            v2_bytes_after_v1: images.v2.bytes_after(&images.v1),
            v1: images.v1.clone(),
            v2: images.v2.clone(),
        },
        config,
        scenarios: figures,
        seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("write {}", args.json.display()))?;
    std::fs::write(&args.html, html::render(&report))
        .with_context(|| format!("write {}", args.html.display()))?;
    print_summary(&report);
    println!("wrote {} and {}", args.json.display(), args.html.display());
    drop(origin);
    drop(sampler);
    drop(net);
    Ok(())
}

/// Fails early, saying what is missing: root, and the programs the run starts.
fn preflight(cfg: &FleetConfig, args: &FleetArgs) -> anyhow::Result<()> {
    let uid = command_line("id", &["-u"]);
    if uid != "0" {
        bail!(
            "shoal-bench fleet needs root: it creates network namespaces, veth links and a bridge, and shapes them with tc. Run it as root (sudo -E shoal-bench fleet ...)."
        );
    }
    let mut need = vec!["ip", "tc", "docker-registry", "skopeo", "tar"];
    if cfg.scenarios.contains(&Scenario::Proxy) {
        need.push("podman");
    }
    if args.image == ImageSpec::Debian && !args.roots.join("v2/etc/debian_version").is_file() {
        need.push("debootstrap");
    }
    let missing: Vec<&str> = need
        .into_iter()
        .filter(|p| !shoal_tests::which(p))
        .collect();
    if !missing.is_empty() {
        bail!(
            "shoal-bench fleet needs {} on PATH (scripts/setup --tests installs them)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn print_summary(r: &Report) {
    println!(
        "{} nodes at {:.0} Mbit/s, origin at {:.0} Mbit/s; image {} (v1 {:.1} MB, v2 {:.1} MB)",
        r.config.nodes,
        r.config.node_rate_bps as f64 / 1e6,
        r.config.origin_rate_bps as f64 / 1e6,
        r.config.image,
        r.images.v1_bytes as f64 / 1e6,
        r.images.v2_bytes as f64 / 1e6
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8}",
        "scenario", "MB/host", "bound s", "shoal s", "base s", "shoal/bnd", "origin/img", "speedup"
    );
    for s in &r.scenarios {
        println!(
            "{:<8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.2}x {:>10.2}x {:>7.2}x",
            s.name,
            s.bytes_needed as f64 / 1e6,
            s.bound_s,
            s.shoal.time_to_all_s,
            s.baseline.time_to_all_s,
            s.shoal_over_bound,
            s.shoal_origin_over_image,
            s.speedup
        );
    }
    for g in &r.goals {
        println!(
            "goal ({}): {} <= {:.2}: measured {:.2}, {}{}",
            g.scenario,
            g.what,
            g.target,
            g.measured,
            if g.met { "met" } else { "NOT met" },
            if g.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.note)
            }
        );
    }
}
