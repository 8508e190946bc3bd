//! Tags from the fleet, for when the origin is down: each verified peer is asked what
//! the tag last resolved to there, and the newest answer wins. Used only when the node
//! is configured to serve stale tags; the digest is then checked like any manifest.

use std::sync::Arc;
use std::time::Duration;

use futures_util::io::AsyncReadExt;
use libp2p::PeerId;
use shoal_protocol::RepoName;
use shoal_protocol::wire::{Message, TagResolution};

use super::P2p;
use super::io::{FrameReader, FrameWriter, StreamError};
use crate::store::TagRecord;

/// How long the fleet is given to answer.
const TAG_DEADLINE: Duration = Duration::from_secs(3);

impl P2p {
    /// The newest resolution of `repo:tag` at `upstream` any verified peer holds.
    pub async fn fleet_tag(
        self: &Arc<Self>,
        upstream: &str,
        repo: &RepoName,
        tag: &str,
    ) -> Option<TagRecord> {
        let asks = self.table.verified().into_iter().map(|peer| {
            let p2p = Arc::clone(self);
            let (upstream, repo, tag) = (upstream.to_owned(), repo.to_string(), tag.to_owned());
            async move {
                tokio::time::timeout(TAG_DEADLINE, p2p.ask_tag(peer, upstream, repo, tag))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            }
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .max_by_key(|r| r.resolved_at)
    }

    async fn ask_tag(
        &self,
        peer: PeerId,
        upstream: String,
        repo: String,
        tag: String,
    ) -> Result<Option<TagRecord>, StreamError> {
        let stream = self.open_wire(peer).await?;
        let (read, write) = stream.split();
        let mut reader = FrameReader::new(read);
        let mut writer = FrameWriter::new(write);
        writer
            .send(&Message::TagRequest {
                upstream: upstream.clone(),
                repo: repo.clone(),
                tag: tag.clone(),
            })
            .await?;
        let answer = reader.recv().await?;
        let _ = writer.send(&Message::Bye).await;
        Ok(match answer {
            Some(Message::Tag {
                upstream: u,
                repo: r,
                tag: t,
                resolved: Some(res),
            }) if u == upstream && r == repo && t == tag => Some(TagRecord {
                digest: res.digest,
                media_type: res.media_type,
                resolved_at: res.resolved_at,
            }),
            _ => None,
        })
    }
}

/// Answers a peer's `TagRequest` from this node's tag records.
pub(super) async fn tag_for_peer(
    p2p: &P2p,
    upstream: String,
    repo: String,
    tag: String,
) -> Message {
    let store = Arc::clone(&p2p.store);
    let (u, r, t) = (upstream.clone(), repo.clone(), tag.clone());
    let record = tokio::task::spawn_blocking(move || {
        let repo = RepoName::parse(&r).ok()?;
        store.tag(&u, &repo, &t).ok().flatten()
    })
    .await
    .ok()
    .flatten();
    Message::Tag {
        upstream,
        repo,
        tag,
        resolved: record.map(|r| TagResolution {
            digest: r.digest,
            media_type: r.media_type,
            resolved_at: r.resolved_at,
        }),
    }
}
