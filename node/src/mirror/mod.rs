//! The OCI distribution-spec pull API, as a pull-through mirror.
//!
//! Routes: `GET /v2/`, `GET|HEAD /v2/<name>/manifests/<reference>`,
//! `GET|HEAD /v2/<name>/blobs/<digest>` (with `Range`), `GET /v2/<name>/tags/list`,
//! `GET /_shoal/stats` and the other `/_shoal/` endpoints for the CLI (`admin.rs`,
//! `ops.rs`, `flat.rs`), and `GET /metrics` for Prometheus (every route is
//! timed by [`crate::metrics::track`]). Which registry a request is for comes from,
//! in order: containerd's `?ns=<registry>` parameter, a registry as the first path
//! component (`/v2/<registry>/<repo>/...`, for podman and CRI-O mirror locations; see
//! [`shoal_protocol::reference::registry_in_path`]), or the node's default upstream.
//! Repositories configured in `flat_repositories` are answered with flat images
//! (`served_flat.rs`).

mod admin;
mod error;
mod flat;
mod ops;
mod peer;
mod served_flat;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_protocol::range::{RangeRequest, parse_range};
use shoal_protocol::reference::registry_in_path;
use shoal_protocol::{Digest, Reference, RepoName};

use crate::blobs::Source;
use crate::node::Node;
use crate::stats::Stats;
pub use error::MirrorError;

const API_VERSION: &str = "registry/2.0";

/// The mirror's routes over `node`.
pub fn router(node: Arc<Node>) -> Router {
    // What changes the store, or hands out content past the pull API's access checks,
    // answers only root on this host (`peer.rs`).
    let privileged = Router::new()
        .route("/_shoal/layers/{digest}/tar", get(admin::layer_tar))
        .route("/_shoal/fsck", axum::routing::post(admin::fsck))
        .route("/_shoal/gc", axum::routing::post(ops::gc))
        .route("/_shoal/rm", axum::routing::post(ops::rm))
        .route(
            "/_shoal/pins",
            axum::routing::post(ops::pin).delete(ops::pin),
        )
        .route("/_shoal/pull", axum::routing::post(ops::pull))
        .route("/_shoal/seed", axum::routing::post(ops::seed))
        .route("/_shoal/flat/flatten", axum::routing::post(flat::flatten))
        .route("/_shoal/flat/mount", axum::routing::post(flat::mount))
        .route("/_shoal/flat/umount", axum::routing::post(flat::umount))
        .route("/_shoal/flat/export", axum::routing::post(flat::export))
        .route("/_shoal/flat/prune", axum::routing::post(flat::prune))
        .route(
            "/_shoal/flat/exports/{manifest}/archive",
            get(flat::archive),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&node),
            peer::only_local_root,
        ));
    Router::new()
        .route("/v2/", get(api_root).head(api_root))
        .route("/v2", get(api_root).head(api_root))
        .route("/_shoal/stats", get(admin::stats))
        .route("/_shoal/peers", get(admin::peers))
        .route("/_shoal/inspect", get(admin::inspect))
        .route("/_shoal/images", get(ops::images))
        .route("/_shoal/flat/mounts", get(flat::mounts))
        .route("/metrics", get(crate::metrics::serve))
        .merge(privileged)
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&node),
            crate::metrics::track,
        ))
        .with_state(node)
}

/// `GET /v2/`. Engines learn from this ping whether to send credentials at all: when
/// the node may hold private repositories (an upstream with credentials whose clients
/// must prove their own access), a ping without credentials gets a basic challenge,
/// as Docker Hub's does. Public repositories still pull without any.
async fn api_root(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let private = node
        .config
        .upstreams
        .values()
        .any(|u| u.credentials.is_some() && u.client_auth == crate::config::ClientAuth::Origin);
    if private && !headers.contains_key(header::AUTHORIZATION) {
        return MirrorError::denied(crate::access::Denied::Ping).into_response();
    }
    let mut r = Response::new(Body::from("{}"));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    r
}

/// What a `/v2/...` path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Manifest(Reference),
    Blob(Digest),
    Tags,
}

/// Splits `/v2/<name...>/<kind>/<ref>` into the registry named in the path (if any),
/// the repository and the target.
fn parse_path(path: &str) -> Result<(Option<String>, RepoName, Target), MirrorError> {
    let rest = path
        .strip_prefix("/v2/")
        .ok_or_else(MirrorError::not_found)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 3 {
        return Err(MirrorError::not_found());
    }
    let (name_parts, kind, last) = (
        &parts[..parts.len() - 2],
        parts[parts.len() - 2],
        parts[parts.len() - 1],
    );
    let target = match kind {
        "manifests" => {
            Target::Manifest(Reference::parse(last).map_err(MirrorError::bad_reference)?)
        }
        "blobs" => Target::Blob(last.parse().map_err(|e| MirrorError::bad_digest(&e))?),
        "tags" if last == "list" => Target::Tags,
        _ => return Err(MirrorError::not_found()),
    };
    let (registry, name_parts) = match name_parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => match registry_in_path(first) {
            Some(host) => (Some(host), rest),
            None => (None, name_parts),
        },
        _ => (None, name_parts),
    };
    let repo = RepoName::parse(&name_parts.join("/")).map_err(MirrorError::bad_name)?;
    Ok((registry, repo, target))
}

/// The `ns` query parameter containerd adds to name the real registry.
fn ns_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "ns")
        .map(|(_, v)| v.into_owned())
}

async fn dispatch(
    State(node): State<Arc<Node>>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, MirrorError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(MirrorError::unsupported(&method));
    }
    let (path_registry, repo, target) = parse_path(uri.path())?;
    let registry = ns_param(query.as_deref()).or(path_registry);
    let upstream = node
        .config
        .upstream(registry.as_deref())
        .map_err(MirrorError::bad_registry)?;
    let source = Source { upstream, repo };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    node.access
        .check(&node.origin, &source.upstream, &source.repo, authorization)
        .await
        .map_err(MirrorError::denied)?;
    let head = method == Method::HEAD;
    let flat = node.config.serves_flat(&source.upstream.host, &source.repo);
    let mut response = match target {
        Target::Manifest(reference) if flat => {
            served_flat::manifest(&node, &source, &reference, head).await?
        }
        Target::Manifest(reference) => manifest(&node, &source, &reference, &headers, head).await?,
        Target::Blob(digest) => {
            let exported = match flat {
                true => served_flat::blob(&node, &source, digest, &headers, head).await?,
                false => None,
            };
            match exported {
                Some(r) => r,
                None => blob(&node, &source, digest, &headers, head).await?,
            }
        }
        Target::Tags => {
            let extra: String =
                url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
                    .filter(|(k, _)| k == "n" || k == "last")
                    .fold(
                        url::form_urlencoded::Serializer::new(String::new()),
                        |mut s, (k, v)| {
                            s.append_pair(&k, &v);
                            s
                        },
                    )
                    .finish();
            let (body, content_type) = node
                .origin
                .tags(&source.upstream, &source.repo, &extra)
                .await?;
            let mut r = Response::new(Body::from(body));
            let ct = content_type.unwrap_or_else(|| "application/json".into());
            if let Ok(v) = HeaderValue::from_str(&ct) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    Ok(response)
}

async fn manifest(
    node: &Node,
    source: &Source,
    reference: &Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, MirrorError> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let m = node.manifests.get(source, reference, Some(&accept)).await?;
    // The manifest tells the ingest which blobs are layers.
    node.ingest.image_seen(source, &m.manifest);
    if !head {
        // An engine's pull: the deploy a seed waited for.
        let key = crate::store::images::ImageKey {
            upstream: source.upstream.host.clone(),
            repo: source.repo.clone(),
            digest: m.digest,
        };
        crate::seed::deployed(node, &key);
    }
    let len = m.bytes.len();
    let mut r = if head {
        Response::new(Body::empty())
    } else {
        Stats::add(&node.stats.manifests_served, 1);
        Stats::add(&node.stats.bytes_served, len as u64);
        Response::new(Body::from(m.bytes))
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&m.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    insert_digest(h, &m.digest);
    if let Some(at) = m.stale_since {
        h.insert(
            "x-shoal-stale-tag",
            HeaderValue::from_str(&format!("resolved-at={at}"))
                .unwrap_or_else(|_| HeaderValue::from_static("resolved-at=unknown")),
        );
    }
    Ok(r)
}

async fn blob(
    node: &Arc<Node>,
    source: &Source,
    digest: Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, MirrorError> {
    if head {
        let size = match node.blobs.known_size(&digest)? {
            Some(size) => size,
            None => {
                node.origin
                    .blob_size(&source.upstream, &source.repo, &digest)
                    .await?
            }
        };
        let mut r = Response::new(Body::empty());
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        insert_digest(h, &digest);
        return Ok(r);
    }
    let open = node.blobs.open(source, digest).await?;
    let size = open.size();
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range) = match parse_range(range_header, size) {
        RangeRequest::Whole => (
            StatusCode::OK,
            shoal_protocol::range::ByteRange {
                start: 0,
                end: size,
            },
        ),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeRequest::Unsatisfiable => return Err(MirrorError::unsatisfiable(size)),
    };
    Stats::add(&node.stats.blobs_served, 1);
    let mut r = Response::new(Body::from_stream(open.stream(range)));
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
    Ok(r)
}

fn insert_digest(h: &mut HeaderMap, digest: &Digest) {
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("docker-content-digest", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_engines_send() {
        let d = Digest::of(b"x");
        let (reg, repo, t) = parse_path("/v2/library/debian/manifests/bookworm").unwrap();
        assert_eq!(
            (reg, repo.as_str(), t),
            (
                None,
                "library/debian",
                Target::Manifest(Reference::Tag("bookworm".into()))
            )
        );
        let (reg, repo, t) = parse_path(&format!("/v2/127.0.0.1_5000/app/blobs/{d}")).unwrap();
        assert_eq!(
            (reg.as_deref(), repo.as_str(), t),
            (Some("127.0.0.1:5000"), "app", Target::Blob(d))
        );
        let (reg, repo, _) = parse_path("/v2/docker.io/library/alpine/tags/list").unwrap();
        assert_eq!(
            (reg.as_deref(), repo.as_str()),
            (Some("docker.io"), "library/alpine")
        );
        // A lone component is a repository even if it looks like a host.
        let (reg, repo, _) = parse_path("/v2/my.app/manifests/v1").unwrap();
        assert_eq!((reg, repo.as_str()), (None, "my.app"));
        assert!(parse_path("/v2/app/manifests/sha256:zz").is_err());
        assert!(parse_path("/v2/APP/manifests/v1").is_err());
        assert!(parse_path("/v2/app/uploads/x").is_err());
        assert!(parse_path("/v2/manifests/v1").is_err());
    }

    #[test]
    fn ns_parameter() {
        assert_eq!(ns_param(Some("ns=docker.io")).as_deref(), Some("docker.io"));
        assert_eq!(
            ns_param(Some("a=b&ns=127.0.0.1%3A5000")).as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(ns_param(None), None);
    }
}
