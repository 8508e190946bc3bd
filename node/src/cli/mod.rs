//! The command line: flags parsed by clap, turned into configs in one place, and one
//! function per command.

mod configure;
mod fsck;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{LogFormat, NodeConfig, NodeFlags};
use crate::inspect::ImageReport;
use crate::stats::StatsSnapshot;

/// shoal: peer-to-peer distribution of container images.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: the content store and the pull-through registry mirror.
    Node(NodeFlags),
    /// Show a running node's counters.
    Stats {
        /// Print JSON (the fields are stable; new ones may be added).
        #[arg(long)]
        json: bool,
        /// The node's mirror URL.
        #[arg(long, default_value = "http://127.0.0.1:5050")]
        node: String,
    },
    /// Show what the node holds of an image: per layer, files, chunks, and content
    /// shared with other stored layers.
    Inspect {
        /// The image, as engines name it: [registry/]repository[:tag|@digest].
        image: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The node's mirror URL.
        #[arg(long, default_value = "http://127.0.0.1:5050")]
        node: String,
    },
    /// Check every stored piece and content chunk against its hash and the store's
    /// records against each other, on a running node; drop what is damaged so that it
    /// is fetched again. Exits 1 if anything was found.
    Fsck(fsck::FsckArgs),
    /// Print the configuration that points an engine at this node.
    Configure(configure::ConfigureArgs),
}

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Node(flags) => {
            if flags.print_config {
                print!("{}", crate::config::EXAMPLE);
                return Ok(ExitCode::SUCCESS);
            }
            let config = NodeConfig::load(&flags)?;
            init_logging(config.log_format);
            runtime()?.block_on(crate::node::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { json, node } => {
            init_logging(LogFormat::Text);
            let snapshot = runtime()?.block_on(fetch_stats(&node))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                print_stats(&snapshot);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { image, json, node } => {
            init_logging(LogFormat::Text);
            let report = runtime()?.block_on(fetch_inspect(&node, &image))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_inspect(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck(args) => {
            init_logging(LogFormat::Text);
            fsck::run(&args)
        }
        Command::Configure(args) => {
            configure::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn fetch_stats(node: &str) -> anyhow::Result<StatsSnapshot> {
    let url = format!("{}/_shoal/stats", node.trim_end_matches('/'));
    let response = http_client()?.get(&url).send().await.with_context(|| {
        format!("cannot reach the node at {node} (is `shoal node` running? use --node URL)")
    })?;
    if !response.status().is_success() {
        anyhow::bail!(
            "the node at {node} answered {} for {url}",
            response.status()
        );
    }
    response
        .json()
        .await
        .with_context(|| format!("{url} did not answer with shoal stats"))
}

async fn fetch_inspect(node: &str, image: &str) -> anyhow::Result<ImageReport> {
    let mut url = url::Url::parse(&format!("{}/_shoal/inspect", node.trim_end_matches('/')))
        .with_context(|| format!("--node {node:?} is not a URL"))?;
    url.query_pairs_mut().append_pair("image", image);
    let response = http_client()?
        .get(url.clone())
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the node at {node} (is `shoal node` running? use --node URL)")
        })?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        anyhow::bail!("the node answered {status}: {message}");
    }
    response
        .json()
        .await
        .with_context(|| format!("{url} did not answer with an inspect report"))
}

fn print_inspect(r: &ImageReport) {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    println!("{}  {} ({})", r.image, r.manifest, r.media_type);
    for image in &r.images {
        if let Some(p) = &image.platform {
            println!(
                "\nplatform {p}  {}{}",
                image.manifest,
                if image.held { "" } else { "  (not held)" }
            );
        }
        println!(
            "{:<20} {:>10} {:>10} {:>8} {:>8} {:>18}",
            "LAYER", "BLOB", "TAR", "FILES", "CHUNKS", "SHARED"
        );
        for l in &image.layers {
            let short = l.digest.get(7..19).unwrap_or(&l.digest);
            if !l.recipe {
                let what = if l.held {
                    "held, no recipe yet"
                } else {
                    "not held"
                };
                println!("{short:<20} {:>10} {what:>47}", mb(l.size));
                continue;
            }
            let pct = (100 * l.shared_bytes)
                .checked_div(l.content_bytes)
                .unwrap_or(0);
            println!(
                "{short:<20} {:>10} {:>10} {:>8} {:>8} {:>11} ({pct:>2}%)",
                mb(l.size),
                mb(l.tar_bytes),
                l.files,
                l.chunks,
                mb(l.shared_bytes)
            );
        }
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60))
        .build()?)
}

fn print_stats(s: &StatsSnapshot) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "store:   {} blobs, {:.1} MiB ({} pieces, {:.1} MiB on disk), {} partial",
        s.blobs,
        mib(s.blob_bytes),
        s.pieces,
        mib(s.piece_bytes),
        s.partial_blobs
    );
    println!(
        "origin:  {:.1} MiB received, {} blob fetches, {} digest mismatches",
        mib(s.bytes_from_origin),
        s.origin_fetches,
        s.digest_mismatches
    );
    println!(
        "clients: {:.1} MiB served, {} blobs, {} manifests",
        mib(s.bytes_served),
        s.blobs_served,
        s.manifests_served
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
