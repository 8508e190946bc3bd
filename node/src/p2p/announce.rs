//! Telling the fleet what this node holds: every verified peer is sent `Have` for each
//! blob this node completes (batched, once a second), and a newly verified peer this
//! node's name and groups (`NodeInfo`) and the whole list of what the store holds.
//! Peers use it to ask likely holders first and to pick seeding targets, and `shoal
//! peers` shows it. The DHT gets one provider record per blob as well.
//!
//! A newly verified peer is told on the next tick, with the batch, rather than at once:
//! the side of a handshake that verifies first would open its stream before the other
//! side has verified it (which waits a moment for that, see `P2p::answer_wires`).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::io::AsyncReadExt;
use libp2p::PeerId;
use shoal_protocol::Digest;
use shoal_protocol::wire::{MAX_HAVE, Message};
use tokio::sync::mpsc;

use super::P2p;
use super::io::{FrameWriter, StreamError};
use super::swarm::Command;
use crate::store::check::Scanned;
use crate::store::engine::Table;

/// Most blobs announced from the store when a peer joins (the newest announcements
/// reach it anyway).
const MAX_STARTUP: usize = 100_000;

/// What the announcer is told.
pub(super) enum News {
    /// This node completed a blob.
    Holds(Digest),
    /// A peer was verified: send it everything.
    Joined(PeerId),
}

/// Runs the announcer until the node stops.
pub(super) async fn run(p2p: Arc<P2p>, mut news: mpsc::UnboundedReceiver<News>) {
    let mut fresh: Vec<Digest> = Vec::new();
    let mut joined: HashSet<PeerId> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            n = news.recv() => match n {
                Some(News::Holds(d)) => fresh.push(d),
                Some(News::Joined(p)) => { joined.insert(p); }
                None => return,
            },
            _ = tick.tick() => {
                if !fresh.is_empty() {
                    let batch = std::mem::take(&mut fresh);
                    for peer in p2p.table.verified() {
                        tokio::spawn(send(Arc::clone(&p2p), peer, None, batch.clone()));
                    }
                }
                if !joined.is_empty() {
                    let held = held_blobs(&p2p).await;
                    let info = Message::NodeInfo {
                        name: p2p.config.name.clone(),
                        groups: p2p.config.groups.clone(),
                    };
                    for peer in joined.drain() {
                        tokio::spawn(send(Arc::clone(&p2p), peer, Some(info.clone()), held.clone()));
                    }
                }
            }
        }
    }
}

/// Every complete blob in the store (up to [`MAX_STARTUP`]), also announced in the DHT.
pub(super) async fn held_blobs(p2p: &Arc<P2p>) -> Vec<Digest> {
    let store = Arc::clone(&p2p.store);
    tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        let scanned = store.scan(&[Table::Blobs], &mut |s| {
            if let Scanned::Blob(d, _) = s {
                held.push(d);
            }
            if held.len() >= MAX_STARTUP {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Err(e) = scanned {
            tracing::warn!("cannot list the store's blobs for peers: {e}");
        }
        held
    })
    .await
    .unwrap_or_default()
}

/// Announces every held blob in the DHT (at start).
pub(super) async fn provide_all(p2p: Arc<P2p>) {
    for d in held_blobs(&p2p).await {
        let _ = p2p.commands.send(Command::Provide(d));
    }
}

/// Sends `peer` the message `first` (an introduction), if any, then `Have` for
/// `digests`.
async fn send(p2p: Arc<P2p>, peer: PeerId, first: Option<Message>, digests: Vec<Digest>) {
    if let Err(e) = try_send(&p2p, peer, first, &digests).await {
        tracing::debug!(%peer, "cannot tell a peer what this node holds: {e}");
    }
}

async fn try_send(
    p2p: &P2p,
    peer: PeerId,
    first: Option<Message>,
    digests: &[Digest],
) -> Result<(), StreamError> {
    if first.is_none() && digests.is_empty() {
        return Ok(());
    }
    let stream = p2p.open_wire(peer).await?;
    let (_read, write) = stream.split();
    let mut writer = FrameWriter::new(write);
    if let Some(message) = &first {
        writer.send(message).await?;
    }
    for chunk in digests.chunks(MAX_HAVE) {
        writer
            .send(&Message::Have {
                digests: chunk.to_vec(),
            })
            .await?;
    }
    writer.send(&Message::Bye).await?;
    writer.close().await
}
