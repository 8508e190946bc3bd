//! The node's own endpoints beside the pull API, used by the CLI and by tests:
//! `/_shoal/stats`, `/_shoal/inspect?image=`, and `/_shoal/layers/<digest>/tar`, which
//! re-creates a layer's uncompressed tar from its recipe and stored chunks.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use shoal_protocol::Digest;
use tokio::sync::mpsc;

use super::MirrorError;
use crate::node::Node;

pub(super) async fn stats(State(node): State<Arc<Node>>) -> Result<Response, MirrorError> {
    let snapshot = node.stats_snapshot().await.map_err(MirrorError::internal)?;
    Ok(axum::Json(snapshot).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct InspectQuery {
    image: String,
}

pub(super) async fn inspect(
    State(node): State<Arc<Node>>,
    Query(q): Query<InspectQuery>,
) -> Result<Response, MirrorError> {
    let report = tokio::task::spawn_blocking(move || {
        crate::inspect::inspect(node.store.as_ref(), &node.config, &q.image)
    })
    .await
    .map_err(MirrorError::internal)?
    .map_err(MirrorError::inspect)?;
    Ok(axum::Json(report).into_response())
}

/// Sends what `recreate` writes to the response, in 1 MiB messages.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let full = std::mem::take(&mut self.buf);
            self.tx
                .blocking_send(Ok(Bytes::from(full)))
                .map_err(|_| std::io::Error::other("the client went away"))?;
        }
        Ok(())
    }
}

pub(super) async fn layer_tar(
    State(node): State<Arc<Node>>,
    Path(digest): Path<String>,
) -> Result<Response, MirrorError> {
    let digest: Digest = digest.parse().map_err(|e| MirrorError::bad_digest(&e))?;
    let store = Arc::clone(&node.store);
    let record = tokio::task::spawn_blocking(move || store.recipe(&digest))
        .await
        .map_err(MirrorError::internal)?
        .map_err(MirrorError::internal)?
        .ok_or_else(MirrorError::not_found)?;
    let recipe = shoal_protocol::recipe::decode(&record.encoded).map_err(MirrorError::internal)?;
    let (tx, mut rx) = mpsc::channel(4);
    let store = Arc::clone(&node.store);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(1 << 20),
        };
        let result = shoal_diff::recreate(&recipe, |id| store.chunk(id).ok().flatten(), &mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|_| out.flush());
        if let Err(e) = result {
            tracing::warn!(layer = %digest, "cannot re-create the layer's tar: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(record.tar_size));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}
