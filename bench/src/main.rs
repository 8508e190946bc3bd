//! `shoal-bench`: whole-system figures from real processes, each beside its baseline
//! measured in the same run. See README.md for the commands and the last results.

#![forbid(unsafe_code)]

mod deltas;
mod flatten;
mod fleet;
mod gc;
mod peers;
mod recipes;
mod serve;
mod transport;

use clap::{Parser, Subcommand};

/// shoal's benchmark CLI.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve and ingest throughput of one large layer on loopback, beside curl from the
    /// docker-registry origin.
    Serve(serve::ServeArgs),
    /// Layer ingest (decompress, chunk, hash, store) on two versions of a real Debian
    /// root, beside gzip -d; recipe sizes; content reuse between the versions.
    Recipes(recipes::RecipesArgs),
    /// Bytes and time of a layer's pack against its previous version, beside the layer
    /// as gzip and `zstd -19 --long=27 --patch-from`, on two real Debian version pairs.
    Deltas(deltas::DeltasArgs),
    /// Garbage collection: its time, the budget held after every pull, and the store's
    /// size on disk beside what GC counts.
    Gc(gc::GcArgs),
    /// Flattening a real multi-layer image beside `umoci unpack` of it, cold and warm,
    /// and the bytes and time a second version costs once the first is flat.
    Flatten(flatten::FlattenArgs),
    /// Peer-to-peer throughput of one large blob between two nodes on loopback (QUIC,
    /// BLAKE3 per piece, sha256 per blob), beside curl from the docker-registry origin.
    Peers(peers::PeersArgs),
    /// A fleet of real hosts in network namespaces on shaped links: cold, update,
    /// churn and proxy scenarios with shoal, beside every host pulling from the origin
    /// and beside the lower bound; JSON and an HTML report. Needs root.
    Fleet(fleet::FleetArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(&args),
        Command::Recipes(args) => recipes::run(&args),
        Command::Deltas(args) => deltas::run(&args),
        Command::Gc(args) => gc::run(&args),
        Command::Flatten(args) => flatten::run(&args),
        Command::Peers(args) => peers::run(&args),
        Command::Fleet(args) => fleet::run(&args),
    }
}
