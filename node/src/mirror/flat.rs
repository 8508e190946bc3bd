//! The flat endpoints, behind `shoal flatten`, `mount`, `umount`, `mounts` and
//! `export --flat` (the work is in [`crate::flatten`]):
//! - `POST /_shoal/flat/flatten?image=..&out=..[&platform=..]`: flattens into `out`,
//!   as a job.
//! - `POST /_shoal/flat/mount?image=..&target=..[&platform=..]`: builds or reuses the
//!   image's tree and mounts an overlay on `target`, as a job.
//! - `POST /_shoal/flat/umount?target=..`: unmounts (JSON).
//! - `GET /_shoal/flat/mounts`: the mount table (JSON).
//! - `POST /_shoal/flat/export?image=..[&platform=..]`: builds or reuses the flat
//!   image, as a job whose report says where to fetch it:
//! - `GET /_shoal/flat/exports/<manifest hex>/archive[?name=..]`: the archive (a tar).
//! - `POST /_shoal/flat/prune`: removes trees, exports and objects nothing needs
//!   (JSON; the node also does it hourly).
//!
//! All but the mount list write to or mount on a path the client names, as root, or
//! hand out content, so the router lets them answer only root on this host
//! (`peer.rs`, applied in `mirror/mod.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_protocol::Digest;
use tokio::sync::mpsc;

use super::MirrorError;
use super::ops::ndjson;
use crate::flatten::archive;
use crate::flatten::wire::FlatProgress;
use crate::flatten::{FlatError, Reporter};
use crate::jobs::JobSender;
use crate::node::Node;

/// Longest image name an archive may be given.
const MAX_NAME: usize = 1024;

use super::peer::refuse;

/// Runs `f` on the blocking pool as a job reporting [`FlatProgress`].
fn job<R: Serialize + Send + 'static>(
    node: Arc<Node>,
    what: &'static str,
    image: String,
    f: impl FnOnce(&Node, &mut Reporter<'_>) -> Result<R, FlatError> + Send + 'static,
) -> Response {
    let (job, body) = JobSender::<FlatProgress, R>::new();
    tokio::task::spawn_blocking(move || {
        let result = {
            let mut send = |p: &FlatProgress| job.progress(p.clone());
            let mut reporter = Reporter::new(&mut send);
            f(&node, &mut reporter)
        };
        match result {
            Ok(report) => job.finish_blocking(Ok(report)),
            Err(FlatError::Cancelled) => {
                tracing::info!(image, "{what} cancelled: the client went away")
            }
            Err(e) => {
                tracing::warn!(image, "{what} failed: {e}");
                job.finish_blocking(Err(e.to_string()));
            }
        }
    });
    ndjson(body)
}

#[derive(Deserialize)]
pub(super) struct FlattenQuery {
    image: String,
    out: PathBuf,
    platform: Option<String>,
}

/// `POST /_shoal/flat/flatten`.
pub(super) async fn flatten(
    State(node): State<Arc<Node>>,
    Query(q): Query<FlattenQuery>,
) -> Response {
    job(node, "flatten", q.image.clone(), move |node, reporter| {
        node.flat
            .flatten_to(node, &q.image, q.platform.as_deref(), &q.out, reporter)
    })
}

#[derive(Deserialize)]
pub(super) struct MountQuery {
    image: String,
    target: PathBuf,
    platform: Option<String>,
}

/// `POST /_shoal/flat/mount`.
pub(super) async fn mount(State(node): State<Arc<Node>>, Query(q): Query<MountQuery>) -> Response {
    job(node, "mount", q.image.clone(), move |node, reporter| {
        node.flat
            .mount(node, &q.image, q.platform.as_deref(), &q.target, reporter)
    })
}

#[derive(Deserialize)]
pub(super) struct UmountQuery {
    target: PathBuf,
}

/// `POST /_shoal/flat/umount`.
pub(super) async fn umount(
    State(node): State<Arc<Node>>,
    Query(q): Query<UmountQuery>,
) -> Response {
    let done = tokio::task::spawn_blocking(move || node.flat.umount(&node, &q.target)).await;
    match done {
        Ok(Ok(record)) => axum::Json(record).into_response(),
        Ok(Err(e @ FlatError::Mount(crate::flatten::mounts::MountError::NotMounted(_)))) => {
            refuse(StatusCode::NOT_FOUND, "UNKNOWN", &e.to_string())
        }
        Ok(Err(e)) => refuse(StatusCode::CONFLICT, "UNKNOWN", &e.to_string()),
        Err(e) => MirrorError::internal(e).into_response(),
    }
}

/// `GET /_shoal/flat/mounts`.
pub(super) async fn mounts(State(node): State<Arc<Node>>) -> Result<Response, MirrorError> {
    let list = tokio::task::spawn_blocking(move || node.flat.list_mounts())
        .await
        .map_err(MirrorError::internal)?;
    Ok(axum::Json(list).into_response())
}

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    image: String,
    platform: Option<String>,
}

/// `POST /_shoal/flat/export`.
pub(super) async fn export(
    State(node): State<Arc<Node>>,
    Query(q): Query<ExportQuery>,
) -> Response {
    job(node, "export", q.image.clone(), move |node, reporter| {
        node.flat
            .export(node, &q.image, q.platform.as_deref(), reporter)
    })
}

#[derive(Deserialize)]
pub(super) struct ArchiveQuery {
    name: Option<String>,
}

/// Sends what the archive writer writes to the response, in 1 MiB messages.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
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

/// `GET /_shoal/flat/exports/<manifest hex>/archive`.
pub(super) async fn archive(
    State(node): State<Arc<Node>>,
    Path(hex): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, MirrorError> {
    let manifest: Digest = format!("sha256:{hex}")
        .parse()
        .map_err(|e| MirrorError::bad_digest(&e))?;
    let bad_name = q
        .name
        .as_ref()
        .is_some_and(|n| n.len() > MAX_NAME || n.chars().any(char::is_control));
    if bad_name {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "the archive's image name is too long or holds control characters",
        ));
    }
    let n = Arc::clone(&node);
    let opened = tokio::task::spawn_blocking(move || n.flat.archive(&manifest))
        .await
        .map_err(MirrorError::internal)?;
    let Ok((parts, mut layer)) = opened else {
        return Ok(refuse(
            StatusCode::NOT_FOUND,
            "UNKNOWN",
            &format!("no flat export of {manifest} on this node (shoal export --flat makes one)"),
        ));
    };
    let size = archive::archive_size(&parts, q.name.as_deref());
    let (tx, mut rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(1 << 20),
        };
        let result = archive::write_archive(&parts, q.name.as_deref(), &mut layer, &mut out)
            .and_then(|_| std::io::Write::flush(&mut out));
        if let Err(e) = result {
            tracing::warn!(%manifest, "cannot send a flat archive: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

/// `POST /_shoal/flat/prune`.
pub(super) async fn prune(State(node): State<Arc<Node>>) -> Result<Response, MirrorError> {
    let summary = tokio::task::spawn_blocking(move || node.flat.prune(node.store.as_ref()))
        .await
        .map_err(MirrorError::internal)?
        .map_err(MirrorError::internal)?;
    Ok(axum::Json(summary).into_response())
}
