//! Small blobs fetched whole into memory from one peer at a time: manifests by
//! digest, which the node must check and parse before it stores them (with their media
//! type), so they do not go through the piece store like layers.

use std::collections::VecDeque;
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

/// Most times a peer whose stream broke is asked again for one small blob.
pub const SMALL_RETRIES: u32 = 2;

/// How long before asking a peer again, times the number of tries so far.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl P2p {
    /// The bytes of `digest` from the first peer that holds it whole and sends bytes
    /// that hash to it; `None` if no peer does. A peer whose bytes do not match is
    /// banned. A peer whose stream broke is asked again after the others, up to
    /// [`SMALL_RETRIES`] times: a busy peer drops streams it had no time to accept, and
    /// it may be the only one that holds the blob (a blob transfer retries it alike).
    pub async fn fetch_small(self: &Arc<Self>, digest: Digest) -> Option<bytes::Bytes> {
        let deadline = self
            .config
            .lookup_deadline
            .max(std::time::Duration::from_secs(3));
        let mut queue: VecDeque<(PeerId, u32)> = self
            .candidates(&digest)
            .into_iter()
            .map(|peer| (peer, 0))
            .collect();
        while let Some((peer, tries)) = queue.pop_front() {
            if tries > 0 {
                tokio::time::sleep(RETRY_PAUSE * tries).await;
            }
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
                    tracing::debug!(%peer, %digest, "peer could not send a small blob: {e}");
                    let broke = matches!(e, StreamError::Io(_) | StreamError::Truncated);
                    if broke && tries < SMALL_RETRIES && self.table.is_verified(&peer) {
                        queue.push_back((peer, tries + 1));
                    }
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
            // Closed unanswered: dropped by a busy peer, not an answer.
            None => {
                return Err(StreamError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the peer closed the stream without answering",
                )));
            }
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
