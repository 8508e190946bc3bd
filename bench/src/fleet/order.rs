//! "Every node, fetch image X": how a scenario gives the order, and learns when each
//! node holds the image.
//!
//! The order is one `shoal seed IMAGE --nodes LIST` issued on node [`ISSUER`] (its
//! seed API, which is what the CLI calls, reached inside its namespace), listing every
//! node of the fleet by peer id. A list rather than `--nodes all`: `all` is whatever
//! the issuer holds as verified at that moment, and a node missing from its table
//! would go unordered and unnoticed, where a listed one fails by name. The issuer's
//! snapshots drive the progress line; a node's time is when the issuer heard it
//! complete (the report's `millis`, counted from the moment the bench sent the order,
//! not from the snapshot that carried it, which comes up to half a second later), and
//! its bytes are the image's bytes as the node reported them. Where each node's bytes
//! came from is read from the nodes' counters (`scenario.rs`), not from the seed: the
//! seed does not count bytes sent to peers, nor what a node counted before a restart.
//!
//! Churn. A seed does not survive its target: a node killed during the order loses it,
//! and the issuer reports the node failed (its stream breaks when the node's new
//! connection replaces the dead one, or after 10 s of silence). The bench then does
//! what an operator would: once the node runs again and it and the issuer hold each
//! other as verified, it seeds the image again on that node alone (a second `shoal
//! seed IMAGE --nodes PEER`), as many times as the node is killed, while the first
//! order goes on for the rest. The node resumes from what its store kept, and its time
//! still counts from the first order. A failure of a node that was not killed fails
//! the run. The issuer itself is never killed ([`ISSUER`]): an order outlives its
//! issuer on the targets, but the bench would lose its only view of them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_node::seed::report::{NodeSeed, NodeState, SeedReport};

use super::hosts::{Fleet, peers, seed};
use super::progress::Progress;

/// The node every order is issued on; the churn scenario never kills it.
pub const ISSUER: usize = 0;

/// When a node came to hold the image.
#[derive(Clone, Copy, Debug)]
pub struct Fetched {
    /// Seconds from the order until it held every blob.
    pub seconds: f64,
    /// Orders it was given (more than one if it was killed during a seed).
    pub attempts: u32,
    /// Bytes of blobs the image needs, as the node reported them.
    pub bytes: u64,
}

/// How long the issuer waits for the targets of one order (the seed's `--timeout`).
const SEED_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long a killed node may take to run again and be verified by the issuer before
/// the bench gives it up.
const RESTART_LIMIT: Duration = Duration::from_secs(180);

/// Orders every node of `fleet` to fetch `image` now; returns, per node, when it held
/// it (counted from `start`). Fails if a node that was not killed fails its seed.
pub fn fetch_everywhere(
    fleet: &Fleet,
    image: &str,
    progress: &Progress,
    start: Instant,
) -> anyhow::Result<Vec<Fetched>> {
    let n = fleet.len();
    let ids: Vec<String> = (0..n).map(|i| fleet.peer_id(i)).collect();
    let index = |n: &NodeSeed| ids.iter().position(|id| *id == n.peer_id);
    // Each node's life when the order went out: a later one means it was killed.
    let lives: Vec<u64> = (0..n).map(|i| fleet.lives.get(i).0).collect();
    let fetched: Mutex<Vec<Option<Fetched>>> = Mutex::new(vec![None; n]);
    let done = |i: usize, f: Fetched| {
        fetched.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(f);
    };
    let issuer_ns = fleet.ns(ISSUER);

    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut again = Vec::new();
        let mut seen = vec![false; n];
        // The first order's outcome per node, from each snapshot and then the report:
        // a node's end is taken the first time it shows.
        let mut take = |nodes: &[NodeSeed], issued: f64| -> anyhow::Result<()> {
            for node in nodes {
                let i = index(node).with_context(|| {
                    format!("the seed reported a node the bench did not list: {node:?}")
                })?;
                if seen[i] {
                    continue;
                }
                match node.state {
                    NodeState::Queued | NodeState::Fetching => {
                        progress.set(i, node.bytes_done, node.bytes_total);
                    }
                    NodeState::Complete => {
                        seen[i] = true;
                        progress.finish(i);
                        done(i, completed(node, issued, 1));
                    }
                    NodeState::Failed | NodeState::TimedOut => {
                        seen[i] = true;
                        if !killed(fleet, i, lives[i]) {
                            bail!("{}", not_fetched(fleet, i, node));
                        }
                        let (ids, issuer_ns, done) = (&ids, &issuer_ns, &done);
                        again.push(scope.spawn(move || -> anyhow::Result<()> {
                            let f =
                                seed_again(fleet, issuer_ns, &ids[i], i, image, progress, start)?;
                            done(i, f);
                            Ok(())
                        }));
                    }
                }
            }
            Ok(())
        };
        let issued = start.elapsed().as_secs_f64();
        let mut failed = Ok(());
        let report = seed(&issuer_ns, image, &ids, SEED_TIMEOUT, |p| {
            if failed.is_ok() {
                failed = take(&p.nodes, issued);
            }
        })
        .context("the order to every node")?;
        failed?;
        take(&report.nodes, issued)?;
        check_listed(&report, &ids)?;
        for h in again {
            h.join()
                .map_err(|_| anyhow::anyhow!("a thread seeding a restarted node panicked"))??;
        }
        Ok(())
    })?;
    let fetched = fetched.into_inner().unwrap_or_else(|e| e.into_inner());
    fetched
        .into_iter()
        .enumerate()
        .map(|(i, f)| f.with_context(|| format!("node {i} was never reported complete")))
        .collect()
}

/// A node the report shows complete, for an order sent `issued` seconds after the
/// scenario's start.
fn completed(node: &NodeSeed, issued: f64, attempts: u32) -> Fetched {
    Fetched {
        seconds: issued + node.millis as f64 / 1000.0,
        attempts,
        bytes: node.bytes_done,
    }
}

/// Whether node `i` was killed since its life `life`.
fn killed(fleet: &Fleet, i: usize, life: u64) -> bool {
    let (now, down) = fleet.lives.get(i);
    down || now != life
}

/// Why node `i` does not hold the image, with the end of its log.
fn not_fetched(fleet: &Fleet, i: usize, node: &NodeSeed) -> String {
    format!(
        "node {i} ({}) did not fetch the image: {}: {}\n{}",
        node.name,
        node.state.label(),
        node.detail,
        fleet.node(i).log_tail()
    )
}

/// The issuer ordered every node listed, and nothing else.
fn check_listed(report: &SeedReport, ids: &[String]) -> anyhow::Result<()> {
    if report.nodes.len() != ids.len() {
        bail!(
            "the seed reported {} nodes for {} listed: {:?}",
            report.nodes.len(),
            ids.len(),
            report.nodes
        );
    }
    Ok(())
}

/// Seeds `image` on node `i` (peer id `id`), killed during an earlier order, once it
/// runs again; again if it is killed again. Its time counts from `start`.
fn seed_again(
    fleet: &Fleet,
    issuer_ns: &str,
    id: &str,
    i: usize,
    image: &str,
    progress: &Progress,
    start: Instant,
) -> anyhow::Result<Fetched> {
    let mut attempts = 1;
    loop {
        let (life, down) = fleet.lives.get(i);
        if down {
            fleet.lives.wait_restarted(i, life, RESTART_LIMIT)?;
            continue;
        }
        if !wait_verified(fleet, issuer_ns, i, id, life)? {
            continue;
        }
        attempts += 1;
        let issued = start.elapsed().as_secs_f64();
        let report = seed(issuer_ns, image, &[id.to_owned()], SEED_TIMEOUT, |p| {
            for node in &p.nodes {
                progress.set(i, node.bytes_done, node.bytes_total);
            }
        })
        .with_context(|| format!("the order to node {i} after its restart"))?;
        let node = report
            .nodes
            .first()
            .with_context(|| format!("the seed of node {i} reported no node"))?;
        match node.state {
            NodeState::Complete => {
                progress.finish(i);
                return Ok(completed(node, issued, attempts));
            }
            _ if killed(fleet, i, life) => continue,
            _ => bail!("{}", not_fetched(fleet, i, node)),
        }
    }
}

/// Waits until node `i` in its life `life` and the issuer hold each other as
/// verified: an order sent before that would find it not connected, or go down the
/// connection its previous life left behind. False if it was killed again meanwhile.
fn wait_verified(
    fleet: &Fleet,
    issuer_ns: &str,
    i: usize,
    id: &str,
    life: u64,
) -> anyhow::Result<bool> {
    let issuer_id = fleet.peer_id(ISSUER);
    let verifies = |ns: &str, whom: &str| -> bool {
        peers(ns).is_ok_and(|r| r.peers.iter().any(|p| p.peer_id == whom && p.verified))
    };
    let deadline = Instant::now() + RESTART_LIMIT;
    loop {
        if killed(fleet, i, life) {
            return Ok(false);
        }
        if verifies(&fleet.ns(i), &issuer_id) && verifies(issuer_ns, id) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!(
                "node {i} and the issuer did not verify each other within {RESTART_LIMIT:?} of its restart:\n{}",
                fleet.node(i).log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
