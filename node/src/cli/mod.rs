//! The command line: flags parsed by clap, turned into configs in one place, and one
//! function per command.

mod configure;
mod flat;
mod fsck;
mod ops;
mod progress;
mod remote;
mod seed;

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
        #[arg(long, default_value = remote::DEFAULT_NODE)]
        node: String,
    },
    /// List the fleet peers the node is connected to: their addresses, whether they
    /// proved the fleet key, what they announced they hold, the bytes exchanged; and
    /// the peers it shuts out, with why.
    Peers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The node's mirror URL.
        #[arg(long, default_value = remote::DEFAULT_NODE)]
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
        #[arg(long, default_value = remote::DEFAULT_NODE)]
        node: String,
    },
    /// Check every stored piece and content chunk against its hash and the store's
    /// records against each other, on a running node; drop what is damaged so that it
    /// is fetched again. Exits 1 if anything was found.
    Fsck(fsck::FsckArgs),
    /// Print the configuration that points an engine at this node.
    Configure(configure::ConfigureArgs),
    /// Fetch an image into the node's store (as an engine's pull through it would),
    /// with progress.
    Pull(ops::PullArgs),
    /// Order nodes of the fleet to fetch an image and pin it until a deploy pulls it,
    /// with progress per node; exits 1 naming the nodes that failed or timed out.
    Seed(seed::SeedArgs),
    /// List the images the node holds: size, bytes shared with other images, last
    /// use, pins.
    Images(ops::ImagesArgs),
    /// Collect garbage now by the node's policy (budget, max age, versions kept);
    /// --dry-run says what would go and what it would free.
    Gc(ops::GcArgs),
    /// Remove one image and whatever only it uses. Refuses pinned or in-use images.
    Rm(ops::RmArgs),
    /// Pin an image so that GC never removes it (or --remove the pin).
    Pin(ops::PinArgs),
    /// Flatten an image's layers into one directory tree (whiteouts, hardlinks,
    /// owners and xattrs applied), its files shared with the node's other trees.
    Flatten(flat::FlattenArgs),
    /// Mount an image as an overlay: its flat tree read-only below, a fresh upper dir
    /// for this mount's writes. The image stays pinned until `shoal umount`.
    Mount(flat::MountArgs),
    /// Unmount a `shoal mount`, removing its writes and its pin.
    Umount(flat::UmountArgs),
    /// List the node's `shoal mount`s.
    Mounts(flat::MountsArgs),
    /// Write an image as an archive engines load (`podman load`, `ctr images import`,
    /// `skopeo copy oci-archive:`); --flat makes it one layer, the same bytes on every
    /// node.
    Export(flat::ExportArgs),
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
        Command::Peers { json, node } => {
            init_logging(LogFormat::Text);
            let report: crate::p2p::PeersReport = runtime()?.block_on(async {
                let url = remote::url(&node, "/_shoal/peers", &[])?;
                remote::json(&node, remote::client()?.get(url)).await
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_peers(&report);
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
        Command::Pull(args) => ops::pull(&args),
        Command::Seed(args) => seed::seed(&args),
        Command::Images(args) => ops::images(&args),
        Command::Gc(args) => ops::gc(&args),
        Command::Rm(args) => ops::rm(&args),
        Command::Pin(args) => ops::pin(&args),
        Command::Flatten(args) => flat::flatten(&args),
        Command::Mount(args) => flat::mount(&args),
        Command::Umount(args) => flat::umount(&args),
        Command::Mounts(args) => flat::mounts(&args),
        Command::Export(args) => flat::export(&args),
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
    let url = remote::url(node, "/_shoal/stats", &[])?;
    remote::json(node, remote::client()?.get(url)).await
}

async fn fetch_inspect(node: &str, image: &str) -> anyhow::Result<ImageReport> {
    let url = remote::url(node, "/_shoal/inspect", &[("image", image)])?;
    remote::json(node, remote::client()?.get(url)).await
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

fn print_peers(r: &crate::p2p::PeersReport) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "this node: {} {}  (fleet {})",
        r.name,
        r.peer_id,
        r.fleet_id.get(..16).unwrap_or(&r.fleet_id)
    );
    if !r.groups.is_empty() {
        println!("  groups: {}", r.groups.join(", "));
    }
    for a in &r.listening {
        println!("  listening on {a}");
    }
    println!(
        "\n{:<16} {:<54} {:<9} {:>7} {:>12} {:>12}  GROUPS  ADDRESSES",
        "NAME", "PEER", "STATE", "BLOBS", "FROM (MiB)", "TO (MiB)"
    );
    for p in &r.peers {
        let groups = if p.groups.is_empty() {
            "-".to_owned()
        } else {
            p.groups.join(",")
        };
        println!(
            "{:<16} {:<54} {:<9} {:>7} {:>12.1} {:>12.1}  {groups}  {}",
            p.name.as_deref().unwrap_or("-"),
            p.peer_id,
            if p.verified { "verified" } else { "pending" },
            p.blobs,
            mib(p.bytes_from),
            mib(p.bytes_to),
            p.addrs.join(" ")
        );
    }
    for b in &r.banned {
        println!(
            "{:<54} banned for {} s: {}",
            b.peer_id, b.remaining_secs, b.reason
        );
    }
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
    println!(
        "peers:   {} connected, {:.1} MiB received, {:.1} MiB sent, {} blobs fetched from peers, {} bad pieces refused",
        s.peers,
        mib(s.bytes_from_peers),
        mib(s.bytes_to_peers),
        s.peer_fetches,
        s.bad_peer_pieces
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
