//! Small blobs fetched whole into memory from one peer at a time: manifests by
//! digest, which the node must check and parse before it stores them (with their media
//! type), so they do not go through the piece store like layers.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::io::AsyncReadExt;
use libp2p::PeerId;
use shoal_protocol::wire::{MAX_REQUEST_PIECES, Message};
use shoal_protocol::{Digest, PieceLayout};

use super::P2p;
use super::io::{FrameReader, FrameWriter, StreamError};
use crate::stats::Stats;

/// Largest blob fetched this way (manifests are far smaller).
pub const MAX_SMALL: u64 = 4 << 20;

impl P2p {
    /// The bytes of `digest` from the first peer that holds it whole and sends bytes
    /// that hash to it; `None` if no peer does. A peer whose bytes do not match is
    /// banned.
    pub async fn fetch_small(self: &Arc<Self>, digest: Digest) -> Option<bytes::Bytes> {
        let deadline = self
            .config
            .lookup_deadline
            .max(std::time::Duration::from_secs(3));
        for peer in self.candidates(&digest) {
            match tokio::time::timeout(deadline, self.small_from(peer, digest)).await {
                Ok(Ok(Some(bytes))) => {
                    if Digest::of(&bytes) == digest {
                        Stats::add(&self.stats.bytes_from_peers, bytes.len() as u64);
                        self.table.add_from(&peer, bytes.len() as u64);
                        return Some(bytes);
                    }
                    Stats::add(&self.stats.bad_peer_pieces, 1);
                    self.ban(
                        peer,
                        format!("it sent bytes for {digest} that hash to something else"),
                    );
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %digest, "peer could not send a small blob: {e}")
                }
                Err(_) => tracing::debug!(%peer, %digest, "peer too slow with a small blob"),
            }
        }
        None
    }

    async fn small_from(
        &self,
        peer: PeerId,
        digest: Digest,
    ) -> Result<Option<bytes::Bytes>, StreamError> {
        let stream = self.open_wire(peer).await?;
        let (read, write) = stream.split();
        let mut reader = FrameReader::new(read);
        let mut writer = FrameWriter::new(write);
        writer
            .send(&Message::BlobMapRequest { digest, start: 0 })
            .await?;
        let (size, ids) = match reader.recv().await? {
            Some(Message::BlobMap {
                digest: d,
                size,
                start: 0,
                pieces,
                complete: true,
            }) if d == digest && size <= MAX_SMALL => (size, pieces),
            _ => return Ok(None),
        };
        let layout = PieceLayout::new(size);
        let indices: Vec<u32> = (0..layout.count() as u32).collect();
        let mut out = BytesMut::with_capacity(size as usize);
        for chunk in indices.chunks(MAX_REQUEST_PIECES) {
            writer
                .send(&Message::PieceRequest {
                    digest,
                    indices: chunk.to_vec(),
                })
                .await?;
            for &index in chunk {
                match reader.recv().await? {
                    Some(Message::Piece {
                        digest: d,
                        index: i,
                        bytes,
                    }) if d == digest && i == index => {
                        let id = ids.get(index as usize).copied().flatten();
                        if !id.is_some_and(|id| id.matches(&bytes)) {
                            return Ok(Some(bytes::Bytes::new()));
                        }
                        out.extend_from_slice(&bytes);
                    }
                    _ => return Ok(None),
                }
            }
        }
        let _ = writer.send(&Message::Bye).await;
        Ok(Some(out.freeze()))
    }
}
