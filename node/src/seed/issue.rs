//! The issuer's side of an order: choose the targets, order each (itself through
//! [`Seeds`], its peers over the wire), follow their statuses, and tell the CLI.
//!
//! One task per target feeds a channel; the issuing task owns the table of targets
//! and is the only one to change it, so a target's end is decided in one place: its
//! last status, its failure (not connected, disconnected, silent for [`SILENCE`]), or
//! the deadline. Dropping the issuing task (the CLI went away) aborts the followers,
//! not the orders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use futures_util::io::AsyncReadExt;
use libp2p::PeerId;
use shoal_protocol::wire::{MAX_IMAGE_LEN, Message};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::report::{NodeSeed, NodeState, SeedProgress, SeedReport};
use super::select::{self, Member, Selection};
use super::{Order, Seeds, Status, order_name};
use crate::jobs::JobSender;
use crate::node::Node;
use crate::p2p::P2p;
use crate::p2p::io::{FrameReader, FrameWriter};

/// A target that sends no status for this long is given up as failed. Nodes report
/// every 500 ms, and a node killed outright is noticed by QUIC in about as long.
pub const SILENCE: Duration = Duration::from_secs(10);

/// How long a selection by name or group waits for verified peers to introduce
/// themselves (they do within a second or so of the handshake).
const INTRO_WAIT: Duration = Duration::from_secs(3);

/// How often the CLI is sent a snapshot.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What the CLI asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedRequest {
    /// The image, `[registry/]repository[:tag|@digest]`.
    pub image: String,
    /// The nodes it is for.
    pub selection: Selection,
    /// How long the issuer waits for the targets.
    pub timeout: Duration,
    /// How long each target keeps the image pinned (zero: not pinned).
    pub pin_ttl: Duration,
}

/// How the issuer reaches a target.
#[derive(Clone, Copy, Debug)]
enum Target {
    Local,
    Peer(PeerId),
}

/// Issues `request` from this node and answers `job` with its progress and report.
pub async fn issue(
    node: Arc<Node>,
    request: SeedRequest,
    job: JobSender<SeedProgress, SeedReport>,
) {
    let result = run(&node, &request, &job).await;
    match &result {
        Ok(r) => {
            let missing: Vec<&str> = r.not_seeded().iter().map(|n| n.name.as_str()).collect();
            tracing::info!(order = %r.order, image = %r.image, nodes = r.nodes.len(), ?missing, "seed order ended");
        }
        Err(e) => tracing::warn!(image = %request.image, "seed order stopped: {e:#}"),
    }
    job.finish(result.map_err(|e| format!("{e:#}"))).await;
}

async fn run(
    node: &Arc<Node>,
    request: &SeedRequest,
    job: &JobSender<SeedProgress, SeedReport>,
) -> anyhow::Result<SeedReport> {
    crate::inspect::parse_image(&request.image)?;
    ensure!(
        request.image.len() <= MAX_IMAGE_LEN,
        "the image reference is longer than the {MAX_IMAGE_LEN} bytes an order carries"
    );
    let (members, targets) = members(node, &request.selection).await;
    let chosen = select::choose(&members, &request.selection);
    if chosen.targets.is_empty() && chosen.unknown.is_empty() {
        bail!(
            "no node matches {}: {}",
            request.selection,
            describe_groups(&members)
        );
    }
    let order = Order {
        id: random_id(),
        image: request.image.clone(),
        pin_ttl: request.pin_ttl,
    };
    let started = Instant::now();
    let mut nodes: Vec<NodeSeed> = chosen
        .targets
        .iter()
        .map(|&i| {
            let m = &members[i];
            NodeSeed::ordered(m.label().to_owned(), m.peer_id.clone(), m.local)
        })
        .collect();
    tracing::info!(
        order = %order_name(order.id),
        image = %order.image,
        targets = ?nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        "seed order issued for {}",
        request.selection
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Status)>();
    let mut followers = JoinSet::new();
    for (slot, &i) in chosen.targets.iter().enumerate() {
        let (order, tx) = (order.clone(), tx.clone());
        match (targets[i], &node.p2p) {
            (Target::Local, _) => {
                followers.spawn(follow_local(Arc::clone(&node.seeds), order, slot, tx));
            }
            (Target::Peer(peer), Some(p2p)) => {
                followers.spawn(follow_peer(Arc::clone(p2p), peer, order, slot, tx));
            }
            // A peer target exists only with a fleet.
            (Target::Peer(_), None) => {}
        }
    }
    drop(tx);
    for name in chosen.unknown {
        let mut n = NodeSeed::ordered(name, String::new(), false);
        n.fail(
            "not connected to this node: none of its verified peers has this name or peer id (see shoal peers)".into(),
            0,
        );
        nodes.push(n);
    }

    let deadline = tokio::time::Instant::now() + request.timeout;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let millis = || started.elapsed().as_millis() as u64;
    while !nodes.iter().all(|n| n.state.is_over()) {
        tokio::select! {
            update = rx.recv() => match update {
                Some((slot, status)) => nodes[slot].update(&status, millis()),
                None => {
                    // Every follower ended; one that said nothing of the end failed.
                    for n in &mut nodes {
                        n.fail("the issuer lost track of this node (see its log)".into(), millis());
                    }
                }
            },
            _ = tick.tick() => {
                if job.progress(SeedProgress { nodes: nodes.clone() }).is_break() {
                    bail!("the client went away; the order goes on on the nodes it reached");
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let detail = format!(
                    "not done within {} s (the node may still finish)",
                    request.timeout.as_secs()
                );
                for n in &mut nodes {
                    n.time_out(detail.clone(), millis());
                }
            }
        }
    }
    Ok(SeedReport {
        image: request.image.clone(),
        order: order_name(order.id),
        pin_ttl_secs: request.pin_ttl.as_secs(),
        nodes,
        millis: millis(),
    })
}

/// The nodes this one can order: itself first, then its verified peers by name.
async fn members(node: &Node, selection: &Selection) -> (Vec<Member>, Vec<Target>) {
    let local = Member {
        peer_id: node
            .p2p
            .as_ref()
            .map(|p| p.local_id().to_string())
            .unwrap_or_default(),
        name: Some(node.config.name.clone()),
        groups: node
            .p2p
            .as_ref()
            .map(|p| p.config.groups.clone())
            .unwrap_or_default(),
        local: true,
    };
    let mut out = vec![(local, Target::Local)];
    if let Some(p2p) = &node.p2p {
        if selection.needs_names() {
            let until = Instant::now() + INTRO_WAIT;
            while Instant::now() < until && p2p.table.members().iter().any(|(_, i)| i.is_none()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut peers: Vec<(Member, Target)> = p2p
            .table
            .members()
            .into_iter()
            .map(|(peer, info)| {
                let (name, groups) = info.map(|i| (i.name, i.groups)).unzip();
                let member = Member {
                    peer_id: peer.to_string(),
                    name,
                    groups: groups.unwrap_or_default(),
                    local: false,
                };
                (member, Target::Peer(peer))
            })
            .collect();
        peers.sort_by(|a, b| (a.0.label(), &a.0.peer_id).cmp(&(b.0.label(), &b.0.peer_id)));
        out.extend(peers);
    }
    out.into_iter().unzip()
}

/// For an error that selected nothing: which groups the members are in.
fn describe_groups(members: &[Member]) -> String {
    let mut groups: Vec<&str> = members
        .iter()
        .flat_map(|m| m.groups.iter().map(String::as_str))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.is_empty() {
        format!(
            "this node and its {} verified peers are in no group (set [p2p] groups or --group)",
            members.len() - 1
        )
    } else {
        format!(
            "the groups of this node and its {} verified peers are: {}",
            members.len() - 1,
            groups.join(", ")
        )
    }
}

/// A fresh order id.
fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    // As for the handshake's nonces: a node cannot go on without its random source.
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    u64::from_le_bytes(bytes)
}

/// Follows the order on this node.
async fn follow_local(
    seeds: Arc<Seeds>,
    order: Order,
    slot: usize,
    tx: mpsc::UnboundedSender<(usize, Status)>,
) {
    let mut rx = seeds.carry_out(order);
    loop {
        let status = rx.borrow_and_update().clone();
        let over = status.is_over();
        if tx.send((slot, status)).is_err() || over {
            return;
        }
        if rx.changed().await.is_err() {
            let last = rx.borrow().clone();
            let last = if last.is_over() {
                last
            } else {
                last.failed("the seed task on this node died (see its log)")
            };
            let _ = tx.send((slot, last));
            return;
        }
    }
}

/// Orders `peer` and follows its statuses until the order ends there or the peer is
/// given up.
async fn follow_peer(
    p2p: Arc<P2p>,
    peer: PeerId,
    order: Order,
    slot: usize,
    tx: mpsc::UnboundedSender<(usize, Status)>,
) {
    let mut last = Status::queued();
    if let Err(why) = follow(&p2p, peer, &order, slot, &tx, &mut last).await {
        tracing::warn!(%peer, order = %order_name(order.id), "seed order on a peer failed: {why}");
        let _ = tx.send((slot, last.failed(why)));
    }
}

async fn follow(
    p2p: &P2p,
    peer: PeerId,
    order: &Order,
    slot: usize,
    tx: &mpsc::UnboundedSender<(usize, Status)>,
    last: &mut Status,
) -> Result<(), String> {
    let stream = p2p
        .open_wire(peer)
        .await
        .map_err(|e| format!("cannot reach the node: {e}"))?;
    let (read, write) = stream.split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let message = Message::SeedOrder {
        id: order.id,
        image: order.image.clone(),
        pin_ttl_secs: order.pin_ttl.as_secs(),
        origin_node: p2p.local_id().to_bytes(),
    };
    writer
        .send(&message)
        .await
        .map_err(|e| format!("cannot send the order: {e}"))?;
    let mut heard = Instant::now();
    loop {
        // `recv` is cancel-safe: a read that did not finish consumed nothing.
        let next = tokio::time::timeout(Duration::from_secs(1), reader.recv()).await;
        let message = match next {
            Err(_) => {
                if !p2p.table.is_verified(&peer) {
                    return Err("the node disconnected (or was banned)".into());
                }
                if heard.elapsed() >= SILENCE {
                    return Err(format!(
                        "no status from the node for {} s (it may have died)",
                        SILENCE.as_secs()
                    ));
                }
                continue;
            }
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => {
                return Err("the node closed the order's stream before the order ended".into());
            }
            Ok(Err(e)) => return Err(format!("lost the node: {e}")),
        };
        match message {
            Message::SeedStatus {
                id,
                state,
                bytes_done,
                bytes_total,
                from_origin,
                from_peers,
                detail,
            } if id == order.id => {
                heard = Instant::now();
                *last = Status {
                    state,
                    bytes_done,
                    bytes_total,
                    from_origin,
                    from_peers,
                    detail,
                };
                let _ = tx.send((slot, last.clone()));
                if last.is_over() {
                    // The node is done with the stream; a failure to say goodbye
                    // changes nothing.
                    let _ = writer.send(&Message::Bye).await;
                    let _ = writer.close().await;
                    return Ok(());
                }
            }
            Message::Error { message, .. } => {
                return Err(format!("the node refused the order: {message:?}"));
            }
            other => {
                return Err(format!(
                    "the node answered the order with {}",
                    other.kind().name()
                ));
            }
        }
    }
}

impl NodeSeed {
    /// The issuer gave this node up for `detail`, `millis` after the order.
    fn fail(&mut self, detail: String, millis: u64) {
        if !self.state.is_over() {
            self.state = NodeState::Failed;
            self.detail = detail;
            self.millis = millis;
        }
    }
}
