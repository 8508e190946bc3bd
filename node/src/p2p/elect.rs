//! One origin fetch per fleet: when no peer holds a blob yet, the fleet agrees without
//! a coordinator on which node fetches it from the origin, and the others take its
//! pieces as they land.
//!
//! The rule is rendezvous hashing: each node scores itself and its verified peers by
//! `BLAKE3(peer id ‖ digest)`, and the highest score fetches. Nodes that see the same
//! fleet (every node of a small fleet sees every other) pick the same node with no
//! message exchanged, and different blobs spread over different nodes. The elected
//! node is asked with a `Fetch`; it starts (or joins) its own single-flight origin
//! fetch and answers with its blob map once the origin said the size, and the asker
//! swarms from it like from any peer. If it refuses or does not answer within the
//! lookup deadline, the asker fetches from the origin itself: a pull through shoal is
//! never held hostage by a peer.

use std::sync::Arc;

use futures_util::io::AsyncReadExt;
use libp2p::PeerId;
use shoal_protocol::wire::{ErrorCode, Message, Unavailable};
use shoal_protocol::{Digest, RepoName};
use tokio::sync::watch;

use super::P2p;
use super::fetch::{PeerFetchError, fetch_from_peers};
use super::io::{FrameReader, FrameWriter};
use crate::blobs::{FetchState, Holding, Source};

/// A peer's rendezvous score for `digest`.
pub fn score(peer: &PeerId, digest: &Digest) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&peer.to_bytes());
    h.update(digest.as_bytes());
    *h.finalize().as_bytes()
}

/// The node of `self` and its verified peers that fetches `digest` from the origin.
pub fn elected(p2p: &P2p, digest: &Digest) -> PeerId {
    let local = p2p.local_id();
    p2p.table
        .verified()
        .into_iter()
        .chain(std::iter::once(local))
        .max_by_key(|p| score(p, digest))
        .unwrap_or(local)
}

/// Asks the elected node to fetch `digest`, and swarms from it. Returns
/// [`PeerFetchError::NoPeers`] when this node is the elected one, or the elected
/// node cannot help: the caller then fetches from the origin.
pub(super) async fn fetch_through_elected(
    p2p: &Arc<P2p>,
    source: &Source,
    digest: Digest,
    tx: &watch::Sender<FetchState>,
) -> Result<(), PeerFetchError> {
    let chosen = elected(p2p, &digest);
    if chosen == p2p.local_id() {
        return Err(PeerFetchError::NoPeers(digest));
    }
    let asked = tokio::time::timeout(
        p2p.config
            .lookup_deadline
            .max(std::time::Duration::from_secs(5)),
        ask_to_fetch(p2p, chosen, source, digest),
    )
    .await;
    match asked {
        Ok(Ok(true)) => {
            tracing::debug!(%digest, peer = %chosen, "the fleet's elected node is fetching it; taking pieces from it");
            // Every other member pulling the blob now takes pieces from the elected
            // node too, and serves them as they land: asked alongside it, the
            // fleet forms a swarm rather than a star around one uplink.
            let mut peers = vec![chosen];
            peers.extend(p2p.swarm_partners(&digest, chosen));
            fetch_from_peers(p2p, digest, p2p.noted_size(&digest), tx, peers, 0).await
        }
        Ok(Ok(false)) => Err(PeerFetchError::NoPeers(digest)),
        Ok(Err(e)) => {
            tracing::debug!(%digest, peer = %chosen, "the elected node did not take the fetch: {e}");
            Err(PeerFetchError::NoPeers(digest))
        }
        Err(_) => {
            tracing::warn!(%digest, peer = %chosen, "the elected node did not answer in time; fetching from the origin");
            Err(PeerFetchError::NoPeers(digest))
        }
    }
}

/// Sends `Fetch` to `peer`; true when it answered with a map (it is fetching).
pub(super) async fn ask_to_fetch(
    p2p: &Arc<P2p>,
    peer: PeerId,
    source: &Source,
    digest: Digest,
) -> Result<bool, super::io::StreamError> {
    let stream = p2p.open_wire(peer).await?;
    let (read, write) = stream.split();
    let mut writer = FrameWriter::new(write);
    let mut reader = FrameReader::new(read);
    writer
        .send(&Message::Fetch {
            digest,
            size: 0,
            upstream: source.upstream.host.clone(),
            repo: source.repo.to_string(),
        })
        .await?;
    let answer = reader.recv().await?;
    let _ = writer.send(&Message::Bye).await;
    Ok(matches!(answer, Some(Message::BlobMap { digest: d, .. }) if d == digest))
}

/// Answers a peer's `Fetch`: starts (or joins) this node's fetch of the blob, and
/// answers with the first page of its map once the size is known.
pub(super) async fn fetch_for_peer(
    p2p: &Arc<P2p>,
    digest: &Digest,
    upstream: &str,
    repo: &str,
) -> Message {
    let unknown = Message::PieceUnavailable {
        digest: *digest,
        index: 0,
        reason: Unavailable::UnknownBlob,
    };
    let Ok(blobs) = p2p.blobs() else {
        return unknown;
    };
    if !matches!(blobs.holding(digest), Ok(Holding::Complete(_))) {
        let Some(node) = p2p.node.get() else {
            return unknown;
        };
        let (Ok(upstream), Ok(repo)) = (node.upstream(Some(upstream)), RepoName::parse(repo))
        else {
            return unknown;
        };
        let source = Source { upstream, repo };
        match blobs.open(&source, *digest).await {
            // Dropping the open blob leaves the fetch running; it was started (or
            // joined) for the fleet.
            Ok(_open) => {}
            Err(e) => {
                return Message::Error {
                    code: ErrorCode::Internal,
                    message: truncate(format!("cannot fetch {digest}: {e}")),
                };
            }
        }
    }
    serve_map(p2p, digest)
}

fn serve_map(p2p: &P2p, digest: &Digest) -> Message {
    super::serve::map_page(p2p, digest, 0)
}

fn truncate(mut s: String) -> String {
    if s.len() > shoal_protocol::wire::MAX_TEXT_LEN {
        let mut end = shoal_protocol::wire::MAX_TEXT_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_ranks_the_same_fleet_alike_and_blobs_spread() {
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let mut winners = std::collections::HashSet::new();
        for n in 0..64u32 {
            let d = Digest::of(&n.to_le_bytes());
            let best = |order: &[PeerId]| *order.iter().max_by_key(|p| score(p, &d)).unwrap();
            let mut reversed = peers.clone();
            reversed.reverse();
            assert_eq!(best(&peers), best(&reversed));
            winners.insert(best(&peers));
        }
        assert!(
            winners.len() >= 4,
            "64 blobs land on {} of 5 nodes",
            winners.len()
        );
    }
}
