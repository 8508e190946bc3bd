//! Answering peers: blob maps and pieces of what this node holds, including blobs it
//! is still fetching, so that a fleet pulling one image at once forms a swarm; their
//! introductions; and seed orders (carried out by [`crate::seed`], whose statuses go
//! back on the order's stream).
//!
//! Only peers that passed the fleet handshake are answered; a stream from any other
//! peer is dropped unread. Every piece is read through [`read_piece`], which checks it
//! against its BLAKE3 id, so damage on this node's disk never reaches a peer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::io::AsyncReadExt;
use libp2p::{PeerId, Stream};
use shoal_protocol::wire::{ErrorCode, MAX_MAP_PIECES, Message, Unavailable};
use shoal_protocol::{Digest, PieceId, PieceLayout};

use super::P2p;
use super::config::PeerFault;
use super::io::{FrameReader, FrameWriter, StreamError};
use super::table::PeerInfo;
use crate::blobs::Holding;
use crate::stats::Stats;
use crate::store::{PieceReadError, read_piece};

/// Serves one stream a verified peer opened, until it closes it or misbehaves.
pub(super) async fn serve_stream(p2p: Arc<P2p>, peer: PeerId, stream: Stream) {
    if let Err(e) = serve(&p2p, peer, stream).await {
        tracing::debug!(%peer, "stream from a peer ended: {e}");
    }
}

async fn serve(p2p: &Arc<P2p>, peer: PeerId, stream: Stream) -> Result<(), StreamError> {
    let (read, write) = stream.split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    while let Some(message) = reader.recv().await? {
        if !p2p.table.is_verified(&peer) {
            // Banned while the stream was open.
            return Ok(());
        }
        match message {
            Message::BlobMapRequest { digest, .. }
                if p2p.config.fault == Some(PeerFault::Busy) && first_ask(peer, digest) =>
            {
                // Test mode: drop the stream unanswered.
                return Ok(());
            }
            Message::BlobMapRequest { digest, start } => {
                let answer = map_page(p2p, &digest, start);
                writer.send(&answer).await?;
            }
            Message::PieceRequest { .. } if p2p.config.fault == Some(PeerFault::Stall) => {
                // Test mode: sit on the request, keeping the stream open.
                std::future::pending::<()>().await;
            }
            Message::PieceRequest { digest, indices } => {
                let _lease = p2p.blobs()?.leases().take(digest);
                for index in indices {
                    if p2p.config.fault == Some(PeerFault::Slow) {
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    let answer = piece(p2p, &digest, index).await;
                    if let Message::Piece { bytes, .. } = &answer {
                        Stats::add(&p2p.stats.bytes_to_peers, bytes.len() as u64);
                        p2p.table.add_to(&peer, bytes.len() as u64);
                    }
                    writer.send(&answer).await?;
                }
            }
            Message::Fetch {
                digest,
                size: _,
                upstream,
                repo,
            } => {
                let answer = super::elect::fetch_for_peer(p2p, &digest, &upstream, &repo).await;
                writer.send(&answer).await?;
            }
            Message::TagRequest {
                upstream,
                repo,
                tag,
            } => {
                let answer = super::tags::tag_for_peer(p2p, upstream, repo, tag).await;
                writer.send(&answer).await?;
            }
            Message::PackRequest { layer, held } => {
                let answer = super::packs::pack_for_peer(p2p, layer, held).await;
                writer.send(&answer).await?;
            }
            Message::Have { digests } => p2p.table.record_holds(&peer, &digests),
            Message::NodeInfo { name, groups } => {
                p2p.table.record_info(&peer, PeerInfo { name, groups });
            }
            Message::SeedOrder {
                id,
                image,
                pin_ttl_secs,
                origin_node: _,
            } => {
                let order = crate::seed::Order {
                    id,
                    image,
                    pin_ttl: std::time::Duration::from_secs(pin_ttl_secs),
                };
                tracing::info!(%peer, id = %crate::seed::order_name(id), image = %order.image, "seed order from a peer");
                crate::seed::answer_order(p2p, order, &mut writer).await?;
            }
            Message::Bye | Message::Error { .. } => return Ok(()),
            other => {
                let e = Message::Error {
                    code: ErrorCode::BadMessage,
                    message: format!("{} is not a request", other.kind().name()),
                };
                writer.send(&e).await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Whether `peer` asks for the map of `digest` for the first time (test mode `Busy`).
fn first_ask(peer: PeerId, digest: Digest) -> bool {
    static ASKED: Mutex<Option<HashSet<(PeerId, Digest)>>> = Mutex::new(None);
    // A std Mutex: one set operation, no `.await` while it is held.
    ASKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert((peer, digest))
}

/// The page of the blob map that starts at `start`.
pub(super) fn map_page(p2p: &P2p, digest: &Digest, start: u32) -> Message {
    let unknown = Message::PieceUnavailable {
        digest: *digest,
        index: start,
        reason: Unavailable::UnknownBlob,
    };
    let Ok(blobs) = p2p.blobs() else {
        return unknown;
    };
    let (size, pieces, complete) = match blobs.holding(digest) {
        Ok(Holding::Complete(record)) => (
            record.size,
            record.pieces.into_iter().map(Some).collect::<Vec<_>>(),
            true,
        ),
        Ok(Holding::Fetching { size, pieces }) => (size, pieces, false),
        Ok(Holding::Nothing) => return unknown,
        Err(e) => {
            tracing::warn!(%digest, "cannot answer a peer's map request: {e}");
            return unknown;
        }
    };
    let count = PieceLayout::new(size).count();
    if u64::from(start) > count {
        return unknown;
    }
    let end = (u64::from(start) + MAX_MAP_PIECES as u64).min(count);
    let claimed = if p2p.config.fault == Some(PeerFault::WrongSize) {
        size + 1
    } else {
        size
    };
    Message::BlobMap {
        digest: *digest,
        size: claimed,
        start,
        pieces: pieces[start as usize..end as usize].to_vec(),
        complete,
    }
}

/// Piece `index` of `digest`, or why not.
async fn piece(p2p: &P2p, digest: &Digest, index: u32) -> Message {
    let unavailable = |reason| Message::PieceUnavailable {
        digest: *digest,
        index,
        reason,
    };
    let Ok(blobs) = p2p.blobs() else {
        return unavailable(Unavailable::UnknownBlob);
    };
    let id: Option<PieceId> = match blobs.holding(digest) {
        Ok(Holding::Complete(record)) => record.pieces.get(index as usize).copied(),
        Ok(Holding::Fetching { pieces, .. }) => pieces.get(index as usize).copied().flatten(),
        Ok(Holding::Nothing) => return unavailable(Unavailable::UnknownBlob),
        Err(_) => return unavailable(Unavailable::Busy),
    };
    let Some(id) = id else {
        return unavailable(Unavailable::NotHeld);
    };
    let store = Arc::clone(&p2p.store);
    let read = tokio::task::spawn_blocking(move || read_piece(store.as_ref(), &id)).await;
    match read {
        Ok(Ok(bytes)) => Message::Piece {
            digest: *digest,
            index,
            bytes: if p2p.config.fault == Some(PeerFault::Lie) {
                corrupt(bytes)
            } else {
                bytes
            },
        },
        Ok(Err(PieceReadError::Store(e))) => {
            tracing::warn!(%digest, index, "cannot read a piece for a peer: {e}");
            unavailable(Unavailable::Busy)
        }
        Ok(Err(damage)) => {
            tracing::warn!(%digest, index, "not serving a damaged piece to a peer: {damage}");
            unavailable(Unavailable::NotHeld)
        }
        Err(_) => unavailable(Unavailable::Busy),
    }
}

/// The test mode's lie: the same length, one byte flipped.
fn corrupt(bytes: Bytes) -> Bytes {
    let mut v = bytes.to_vec();
    if let Some(b) = v.get_mut(0) {
        *b ^= 0xff;
    }
    Bytes::from(v)
}
