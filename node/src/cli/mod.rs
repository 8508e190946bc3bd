//! The command line: flags parsed by clap, turned into configs in one place, and one
//! function per command.

mod configure;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{LogFormat, NodeConfig, NodeFlags};
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
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| {
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
