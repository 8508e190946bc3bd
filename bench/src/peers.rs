//! `shoal-bench peers`: peer-to-peer throughput of one large blob between two nodes on
//! loopback, beside curl fetching it straight from the docker-registry origin, rounds
//! interleaved so that machine noise hits both.
//!
//! Each round starts a node with an empty store in the same fleet as a warm node that
//! holds the blob, and times curl pulling the blob through the cold node's mirror: every
//! byte crosses QUIC (TLS 1.3) from the warm node, is checked against its BLAKE3 piece
//! id, stored, and streamed to curl, and the blob's sha256 is checked before its last
//! piece is sent. The round fails unless every byte came from the peer.
//!
//! Each round also times the transports alone (`transport.rs`): libp2p's QUIC as the
//! nodes use it, and quinn with AES-128-GCM, carrying as many bytes with nothing else to
//! do. That is the ceiling a transfer between two nodes could reach on this machine.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use shoal_tests::fleet::{free_udp_port, random_key};
use shoal_tests::image::{Layer, Layout, noise};
use shoal_tests::process::wait_until;
use shoal_tests::{Node, Registry};

use crate::serve::{fetch, fetch_cold, mb_s, median};

/// Flags of `shoal-bench peers`.
#[derive(Debug, clap::Args)]
pub struct PeersArgs {
    /// Size of the blob's content in MiB (random, so the gzip blob is about as large).
    #[arg(long, default_value_t = 256)]
    size_mib: usize,
    /// Rounds of each measurement; medians are reported.
    #[arg(long, default_value_t = 5)]
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
    origin_through_cold_node_mb_s: Vec<f64>,
    peer_mb_s: Vec<f64>,
    libp2p_quic_alone_mb_s: Vec<f64>,
    quinn_aes_alone_mb_s: Vec<f64>,
    median_origin_curl_mb_s: f64,
    median_origin_through_cold_node_mb_s: f64,
    median_peer_mb_s: f64,
    median_libp2p_quic_alone_mb_s: f64,
    median_quinn_aes_alone_mb_s: f64,
    peer_over_origin: f64,
    libp2p_quic_alone_over_origin: f64,
    quinn_aes_alone_over_origin: f64,
    peer_over_origin_through_cold_node: f64,
}

/// Runs the benchmark.
pub fn run(args: &PeersArgs) -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-peers-")
        .tempdir()?;
    let registry = Registry::start(dir.path())?;
    eprintln!("building a {} MiB layer...", args.size_mib);
    let mut layout = Layout::new(&dir.path().join("layout"))?;
    let built = layout.image(
        &[Layer::new().file("blob", noise(args.size_mib << 20, 7))],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/bench:v1", registry.addr), false, false)?;
    let layer = built.blobs[1];
    let size = std::fs::metadata(registry.blob_path(&layer))?.len();
    let origin_url = format!("{}/v2/bench/blobs/{layer}", registry.url());
    let key = dir.path().join("fleet.key");
    std::fs::write(&key, random_key())?;
    let key_arg = key.display().to_string();

    let warm_p2p = format!("127.0.0.1:{}", free_udp_port());
    let warm = Node::start_named(
        dir.path(),
        "warm",
        &registry.url(),
        &[
            "--fleet-key",
            &key_arg,
            "--p2p-listen",
            &warm_p2p,
            "--no-mdns",
        ],
    )?;
    fetch(
        &format!("{}/v2/bench/blobs/{layer}", warm.url()),
        size,
        &layer,
    )?;

    let (mut origin, mut through, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    let (mut libp2p, mut quinn) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        origin.push(mb_s(size, fetch_cold(&origin_url, size)?));
        libp2p.push(mb_s(size, crate::transport::libp2p_time(size)?));
        quinn.push(mb_s(size, crate::transport::quinn_time(size)?));
        // The same cold-node work (piece, hash, store, serve) with the origin as source.
        let solo_name = format!("solo-{round}");
        let solo = Node::start_named(dir.path(), &solo_name, &registry.url(), &[])?;
        through.push(mb_s(
            size,
            fetch_cold(&format!("{}/v2/bench/blobs/{layer}", solo.url()), size)?,
        ));
        drop(solo);
        std::fs::remove_dir_all(dir.path().join(&solo_name))?;
        let name = format!("cold-{round}");
        let p2p = format!("127.0.0.1:{}", free_udp_port());
        let cold = Node::start_named(
            dir.path(),
            &name,
            &registry.url(),
            &[
                "--fleet-key",
                &key_arg,
                "--p2p-listen",
                &p2p,
                "--bootstrap",
                &warm_p2p,
                "--no-mdns",
            ],
        )?;
        wait_until(
            "the cold node verifies the warm one",
            Duration::from_secs(30),
            || Ok(cold.stat("peers")? >= 1),
        )
        .with_context(|| cold.log_tail())?;
        peer.push(mb_s(
            size,
            fetch_cold(&format!("{}/v2/bench/blobs/{layer}", cold.url()), size)?,
        ));
        let s = cold.stats()?;
        if s["bytes_from_origin"].as_u64() != Some(0)
            || s["bytes_from_peers"].as_u64() != Some(size)
        {
            bail!("round {round}: the blob did not come from the peer alone: {s}");
        }
        drop(cold);
        std::fs::remove_dir_all(dir.path().join(&name))?;
        eprintln!(
            "round {}: origin {:.0} MB/s, cold node from origin {:.0} MB/s, cold node from a peer {:.0} MB/s, libp2p QUIC alone {:.0} MB/s, quinn AES-GCM alone {:.0} MB/s",
            round + 1,
            origin[round],
            through[round],
            peer[round],
            libp2p[round],
            quinn[round]
        );
    }
    let report = Report {
        blob_bytes: size,
        rounds: args.rounds,
        median_origin_curl_mb_s: median(&origin),
        median_origin_through_cold_node_mb_s: median(&through),
        median_peer_mb_s: median(&peer),
        median_libp2p_quic_alone_mb_s: median(&libp2p),
        median_quinn_aes_alone_mb_s: median(&quinn),
        peer_over_origin: median(&peer) / median(&origin),
        libp2p_quic_alone_over_origin: median(&libp2p) / median(&origin),
        quinn_aes_alone_over_origin: median(&quinn) / median(&origin),
        peer_over_origin_through_cold_node: median(&peer) / median(&through),
        origin_curl_mb_s: origin,
        origin_through_cold_node_mb_s: through,
        peer_mb_s: peer,
        libp2p_quic_alone_mb_s: libp2p,
        quinn_aes_alone_mb_s: quinn,
    };
    println!(
        "blob: {:.1} MB, {} rounds, medians:",
        size as f64 / 1e6,
        args.rounds
    );
    println!(
        "  curl from docker-registry origin       {:>8.0} MB/s",
        report.median_origin_curl_mb_s
    );
    println!(
        "  curl through a cold node, from origin  {:>8.0} MB/s",
        report.median_origin_through_cold_node_mb_s
    );
    println!(
        "  curl through a cold node, from a peer  {:>8.0} MB/s  ({:.2}x origin, {:.2}x the cold node from origin)",
        report.median_peer_mb_s, report.peer_over_origin, report.peer_over_origin_through_cold_node
    );
    println!(
        "  libp2p QUIC alone (ChaCha20-Poly1305)  {:>8.0} MB/s  ({:.2}x origin)",
        report.median_libp2p_quic_alone_mb_s, report.libp2p_quic_alone_over_origin
    );
    println!(
        "  quinn alone, AES-128-GCM               {:>8.0} MB/s  ({:.2}x origin)",
        report.median_quinn_aes_alone_mb_s, report.quinn_aes_alone_over_origin
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    drop(warm);
    Ok(())
}
