//! The node's own endpoints beside the pull API, used by the CLI and by tests:
//! `/_shoal/stats`, `/_shoal/inspect?image=`, `/_shoal/layers/<digest>/tar`, which
//! re-creates a layer's uncompressed tar from its recipe and stored chunks, and
//! `POST /_shoal/fsck`, which checks the whole store (see [`fsck`]).

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use shoal_protocol::Digest;
use tokio::sync::mpsc;

use super::MirrorError;
use crate::fsck::{FsckError, FsckReport, Phase, Progress};
use crate::jobs::JobSender;
use crate::node::Node;

pub(super) async fn stats(State(node): State<Arc<Node>>) -> Result<Response, MirrorError> {
    let snapshot = node.stats_snapshot().await.map_err(MirrorError::internal)?;
    Ok(axum::Json(snapshot).into_response())
}

/// `shoal peers`: this node's peer id and addresses, its peers, and its bans. A node
/// without a fleet key answers 404 with what to do.
pub(super) async fn peers(State(node): State<Arc<Node>>) -> Result<Response, MirrorError> {
    match &node.p2p {
        Some(p2p) => Ok(axum::Json(p2p.report()).into_response()),
        None => Err(MirrorError::off(
            "peer-to-peer exchange is off on this node: start it with --fleet-key FILE",
        )),
    }
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

/// At most one check runs at a time: a second would only read the disk twice.
static FSCK_RUNNING: AtomicBool = AtomicBool::new(false);

/// How often a running check reports its progress.
const FSCK_PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Clears [`FSCK_RUNNING`] when the check ends, also by a panic.
struct FsckRunning;

impl Drop for FsckRunning {
    fn drop(&mut self) {
        FSCK_RUNNING.store(false, Ordering::Release);
    }
}

/// `POST /_shoal/fsck`: runs [`crate::fsck::fsck`] on the blocking pool and answers
/// with its progress and report as a job (see [`crate::jobs`]): a progress line at each
/// phase and every 200 ms. A client that goes away cancels the check (until its repairs
/// begin, which always finish); a slow one only misses progress lines. A second request
/// while a check runs gets 409.
pub(super) async fn fsck(State(node): State<Arc<Node>>) -> Response {
    if FSCK_RUNNING.swap(true, Ordering::AcqRel) {
        return super::ops::busy("a check is already running on this node; wait for it to finish");
    }
    let running = FsckRunning;
    let (job, body) = JobSender::<Progress, FsckReport>::new();
    let store = Arc::clone(&node.store);
    tokio::task::spawn_blocking(move || {
        let _running = running;
        tracing::info!("fsck started");
        let mut last: Option<(Instant, Phase)> = None;
        let result = crate::fsck::fsck(store.as_ref(), &mut |p| {
            let due = last
                .is_none_or(|(at, phase)| phase != p.phase || at.elapsed() >= FSCK_PROGRESS_EVERY);
            if !due {
                return ControlFlow::Continue(());
            }
            last = Some((Instant::now(), p.phase));
            job.progress(*p)
        });
        let result = match result {
            Ok(report) => {
                tracing::info!(
                    clean = report.clean,
                    pieces = report.pieces_checked,
                    chunks = report.chunks_checked,
                    bytes = report.bytes_checked,
                    damaged_pieces = report.damaged_pieces.len() + report.missing_pieces.len(),
                    damaged_chunks = report.damaged_chunks.len() + report.missing_chunks.len(),
                    blobs_dropped = report.blobs_dropped.len(),
                    recipes_dropped = report.recipes_dropped.len(),
                    problems = report.problems.len(),
                    "fsck finished"
                );
                Ok(report)
            }
            Err(FsckError::Cancelled) => {
                tracing::info!("fsck cancelled: the client went away");
                return;
            }
            Err(e) => {
                tracing::error!("fsck failed: {e}");
                Err(e.to_string())
            }
        };
        job.finish_blocking(result);
    });
    super::ops::ndjson(body)
}
