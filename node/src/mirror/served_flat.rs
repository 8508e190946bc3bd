//! Repositories served flat (`flat_repositories`): a pull of one of them gets the
//! image's flat export, the manifest, config and single layer `shoal export --flat`
//! makes, in place of the origin's manifest. The node pulls the image the usual way
//! (peers first, then the origin, verifying every blob) and flattens it on the first
//! request; the export cache answers after that. Flat exports are deterministic, so
//! every node of a fleet serves the same digests for the same source image.
//!
//! A tag or a source manifest digest is resolved at the origin (or the node's cache)
//! and answered with the flat manifest; a flat manifest's own digest, and the flat
//! config and layer, are found in the export cache, through the repositories the
//! export was served for (so the access check of the repository asked through covers
//! them). An index is served as the flat image of this host's platform.

use std::io::SeekFrom;
use std::ops::ControlFlow;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use shoal_protocol::manifest::OCI_MANIFEST;
use shoal_protocol::range::{ByteRange, RangeRequest, parse_range};
use shoal_protocol::{Digest, Reference};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{MirrorError, insert_digest};
use crate::blobs::Source;
use crate::flatten::Reporter;
use crate::flatten::service::Exported;
use crate::node::Node;
use crate::stats::Stats;

/// `GET|HEAD /v2/<name>/manifests/<reference>` of a repository served flat.
pub(super) async fn manifest(
    node: &Arc<Node>,
    source: &Source,
    reference: &Reference,
    head: bool,
) -> Result<Response, MirrorError> {
    let repo = format!("{}/{}", source.upstream.host, source.repo);
    if let Reference::Digest(d) = reference
        && let Some(Exported::Manifest(bytes)) = exported(node, *d, &repo).await
    {
        return Ok(manifest_response(node, bytes, head));
    }
    let top = node.manifests.get(source, reference, None).await?;
    node.ingest.image_seen(source, &top.manifest);
    let image = format!("{}/{}@{}", source.upstream.host, source.repo, top.digest);
    crate::pull::fetch_image(
        node,
        &image,
        None,
        |_| ControlFlow::Continue(()),
        |_| Ok(()),
    )
    .await
    .map_err(|e| MirrorError::flat(&image, format!("{e:#}")))?;
    let n = Arc::clone(node);
    let img = image.clone();
    let summary = tokio::task::spawn_blocking(move || {
        let mut quiet = |_: &_| ControlFlow::Continue(());
        n.flat
            .export(&n, &img, None, &mut Reporter::new(&mut quiet))
    })
    .await
    .map_err(MirrorError::internal)?
    .map_err(|e| MirrorError::flat(&image, e))?;
    let digests = summary
        .source_manifest
        .parse::<Digest>()
        .and_then(|source| Ok((source, summary.manifest.parse::<Digest>()?)));
    let (source_manifest, flat) =
        digests.map_err(|_| MirrorError::internal("the export names no manifest digests"))?;
    node.flat
        .serve_for(&source_manifest, &repo)
        .map_err(|e| MirrorError::flat(&image, e))?;
    let Some(Exported::Manifest(bytes)) = exported(node, flat, &repo).await else {
        return Err(MirrorError::flat(
            &image,
            "its export was removed while it was being served; ask again",
        ));
    };
    if !head {
        // An engine's pull: the deploy a seed waited for.
        let key = crate::store::images::ImageKey {
            upstream: source.upstream.host.clone(),
            repo: source.repo.clone(),
            digest: top.digest,
        };
        crate::seed::deployed(node, &key);
    }
    tracing::debug!(%image, %flat, "served as a flat image");
    Ok(manifest_response(node, bytes, head))
}

/// `GET|HEAD /v2/<name>/blobs/<digest>` of a repository served flat, when `digest` is
/// the flat config or layer of an export; `None` for any other blob.
pub(super) async fn blob(
    node: &Arc<Node>,
    source: &Source,
    digest: Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Option<Response>, MirrorError> {
    let repo = format!("{}/{}", source.upstream.host, source.repo);
    let (bytes, path, size) = match exported(node, digest, &repo).await {
        Some(Exported::Config(bytes)) => {
            let size = bytes.len() as u64;
            (Some(bytes), None, size)
        }
        Some(Exported::Layer { path, size }) => (None, Some(path), size),
        Some(Exported::Manifest(_)) | None => return Ok(None),
    };
    let (status, range) = if head {
        (
            StatusCode::OK,
            ByteRange {
                start: 0,
                end: size,
            },
        )
    } else {
        match parse_range(range_header(headers), size) {
            RangeRequest::Whole => (
                StatusCode::OK,
                ByteRange {
                    start: 0,
                    end: size,
                },
            ),
            RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
            RangeRequest::Unsatisfiable => return Err(MirrorError::unsatisfiable(size)),
        }
    };
    let body = match (head, bytes, path) {
        (true, _, _) => Body::empty(),
        (false, Some(bytes), _) => {
            Body::from(bytes[range.start as usize..range.end as usize].to_vec())
        }
        (false, None, Some(path)) => {
            let failed =
                |e: std::io::Error| MirrorError::internal(format!("{}: {e}", path.display()));
            let mut file = tokio::fs::File::open(&path).await.map_err(failed)?;
            file.seek(SeekFrom::Start(range.start))
                .await
                .map_err(failed)?;
            let part = file.take(range.end - range.start);
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(part, 1 << 16))
        }
        (false, None, None) => return Ok(None),
    };
    if !head {
        Stats::add(&node.stats.blobs_served, 1);
    }
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let v = format!("bytes {}-{}/{size}", range.start, range.end - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&v).map_err(MirrorError::internal)?,
        );
    }
    insert_digest(h, &digest);
    Ok(Some(r))
}

/// The export cache's blob of `digest` served for `repo`, looked up off the async
/// threads.
async fn exported(node: &Arc<Node>, digest: Digest, repo: &str) -> Option<Exported> {
    let n = Arc::clone(node);
    let repo = repo.to_owned();
    tokio::task::spawn_blocking(move || n.flat.exported(&digest, &repo))
        .await
        .ok()
        .flatten()
}

fn range_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::RANGE).and_then(|v| v.to_str().ok())
}

fn manifest_response(node: &Node, bytes: Vec<u8>, head: bool) -> Response {
    let digest = Digest::of(&bytes);
    let len = bytes.len();
    let mut r = if head {
        Response::new(Body::empty())
    } else {
        Stats::add(&node.stats.manifests_served, 1);
        Stats::add(&node.stats.bytes_served, len as u64);
        Response::new(Body::from(bytes))
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
    insert_digest(h, &digest);
    r
}
