//! The node's operations endpoints, behind `shoal images`, `gc`, `rm`, `pin` and
//! `pull`:
//! - `GET /_shoal/images`: every image, with sizes, last use and pins (JSON).
//! - `POST /_shoal/gc[?dry_run=true]`: a collection by the policy, as a job.
//! - `POST /_shoal/rm?image=..[&dry_run=true]`: removes one image, as a job.
//! - `POST /_shoal/pins?image=..[&name=..][&ttl_secs=..]` sets a pin; `DELETE` removes it.
//! - `POST /_shoal/pull?image=..[&platform=..]`: fetches an image into the store, as a job.
//! - `POST /_shoal/seed?image=..[&nodes=all|LIST|&group=..][&timeout_secs=..]
//!   [&pin_ttl_secs=..]`: orders nodes of the fleet to fetch and pin an image, as a
//!   job whose progress lines are snapshots of every target ([`crate::seed`]).
//!
//! Jobs answer with newline-delimited progress and a report ([`crate::jobs`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::MirrorError;
use crate::gc::plan::Request;
use crate::gc::{GcError, GcProgress, GcReport};
use crate::jobs::{JobBody, JobSender};
use crate::node::Node;
use crate::pull::{PullProgress, PullReport};
use crate::seed::issue::SeedRequest;
use crate::seed::report::{SeedProgress, SeedReport};
use crate::seed::select::Selection;
use crate::store::images::Pin;
use crate::store::unix_now;

/// A job's answer: its lines as they come.
pub(super) fn ndjson(mut body: JobBody) -> Response {
    let stream = futures_util::stream::poll_fn(move |cx| body.poll_recv(cx))
        .map(Ok::<_, std::convert::Infallible>);
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// 409 with a distribution-style error document.
pub(super) fn busy(message: &str) -> Response {
    let doc = serde_json::json!({"errors": [{"code": "DENIED", "message": message}]});
    let mut r = axum::Json(doc).into_response();
    *r.status_mut() = StatusCode::CONFLICT;
    r
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MirrorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(MirrorError::internal)
}

/// `GET /_shoal/images`.
pub(super) async fn images(State(node): State<Arc<Node>>) -> Result<Response, MirrorError> {
    let gc = Arc::clone(&node.gc);
    let model = blocking(move || gc.model())
        .await?
        .map_err(MirrorError::internal)?;
    Ok(axum::Json(crate::gc::plan::list(&model)).into_response())
}

#[derive(Deserialize)]
pub(super) struct GcQuery {
    #[serde(default)]
    dry_run: bool,
    image: Option<String>,
}

/// `POST /_shoal/gc` and `POST /_shoal/rm`: both plan and carry out a collection; `rm`
/// asks for one image.
async fn collect(node: Arc<Node>, q: GcQuery, remove: bool) -> Result<Response, MirrorError> {
    let request = match (remove, q.image) {
        (false, _) => Request::Policy,
        (true, Some(image)) => {
            let n = Arc::clone(&node);
            let key =
                blocking(move || crate::inspect::resolve(n.store.as_ref(), &n.config, &image))
                    .await?
                    .map_err(MirrorError::inspect)?;
            Request::Remove(key)
        }
        (true, None) => {
            return Err(MirrorError::inspect(
                crate::inspect::InspectError::BadReference("(no image= given)".into()),
            ));
        }
    };
    let (job, body) = JobSender::<GcProgress, GcReport>::new();
    tokio::task::spawn_blocking(move || {
        let result = node.gc.run(&request, q.dry_run, &mut |p| job.progress(p));
        match result {
            Err(GcError::Cancelled) => {}
            Err(e @ GcError::Busy) => job.finish_blocking(Err(e.to_string())),
            Err(e) => {
                tracing::warn!("gc failed: {e}");
                job.finish_blocking(Err(e.to_string()));
            }
            Ok(report) => job.finish_blocking(Ok(report)),
        }
    });
    Ok(ndjson(body))
}

/// `POST /_shoal/gc`.
pub(super) async fn gc(
    State(node): State<Arc<Node>>,
    Query(q): Query<GcQuery>,
) -> Result<Response, MirrorError> {
    collect(node, q, false).await
}

/// `POST /_shoal/rm`.
pub(super) async fn rm(
    State(node): State<Arc<Node>>,
    Query(q): Query<GcQuery>,
) -> Result<Response, MirrorError> {
    collect(node, q, true).await
}

#[derive(Deserialize)]
pub(super) struct PinQuery {
    image: String,
    name: Option<String>,
    ttl_secs: Option<u64>,
}

/// What a pin request did.
#[derive(Debug, Serialize, Deserialize)]
pub struct PinAnswer {
    /// The image, `upstream/repo@digest`.
    pub image: String,
    /// The pin's name.
    pub name: String,
    /// When it lapses (seconds since the epoch), if ever.
    pub expires: Option<u64>,
    /// Whether the pin is now set (false after a removal).
    pub pinned: bool,
}

/// `POST` and `DELETE /_shoal/pins`.
pub(super) async fn pin(
    State(node): State<Arc<Node>>,
    method: axum::http::Method,
    Query(q): Query<PinQuery>,
) -> Result<Response, MirrorError> {
    let name = q.name.unwrap_or_else(|| "operator".to_owned());
    if name.is_empty() || name.contains('\0') {
        return Err(MirrorError::inspect(
            crate::inspect::InspectError::BadReference(format!("pin name {name:?}")),
        ));
    }
    let remove = method == axum::http::Method::DELETE;
    let answer = blocking(move || -> Result<PinAnswer, MirrorError> {
        let key = crate::inspect::resolve(node.store.as_ref(), &node.config, &q.image)
            .map_err(MirrorError::inspect)?;
        if node
            .store
            .image(&key)
            .map_err(MirrorError::internal)?
            .is_none()
        {
            return Err(MirrorError::inspect(crate::inspect::InspectError::Unknown(
                q.image,
            )));
        }
        if remove {
            let was = node
                .store
                .remove_pin(&key, &name)
                .map_err(MirrorError::internal)?;
            if !was {
                return Err(MirrorError::inspect(crate::inspect::InspectError::Unknown(
                    format!("pin {name:?} on {}", q.image),
                )));
            }
            tracing::info!(image = %key, pin = %name, "pin removed");
            return Ok(PinAnswer {
                image: key.to_string(),
                name,
                expires: None,
                pinned: false,
            });
        }
        let now = unix_now();
        let pin = Pin {
            created: now,
            expires: q.ttl_secs.map(|t| now.saturating_add(t)),
        };
        node.store
            .set_pin(&key, &name, &pin)
            .map_err(MirrorError::internal)?;
        tracing::info!(image = %key, pin = %name, expires = ?pin.expires, "pin set");
        Ok(PinAnswer {
            image: key.to_string(),
            name,
            expires: pin.expires,
            pinned: true,
        })
    })
    .await??;
    Ok(axum::Json(answer).into_response())
}

#[derive(Deserialize)]
pub(super) struct PullQuery {
    image: String,
    platform: Option<String>,
}

/// `POST /_shoal/pull`.
pub(super) async fn pull(State(node): State<Arc<Node>>, Query(q): Query<PullQuery>) -> Response {
    let (job, body) = JobSender::<PullProgress, PullReport>::new();
    tokio::spawn(crate::pull::pull(node, q.image, q.platform, job));
    ndjson(body)
}

#[derive(Deserialize)]
pub(super) struct SeedQuery {
    image: String,
    nodes: Option<String>,
    group: Option<String>,
    timeout_secs: Option<u64>,
    pin_ttl_secs: Option<u64>,
}

/// `POST /_shoal/seed`. A bad request is answered as a job that failed, like every
/// other failure of the order.
pub(super) async fn seed(State(node): State<Arc<Node>>, Query(q): Query<SeedQuery>) -> Response {
    let (job, body) = JobSender::<SeedProgress, SeedReport>::new();
    match Selection::parse(q.nodes.as_deref(), q.group.as_deref()) {
        Ok(selection) => {
            let request = SeedRequest {
                image: q.image,
                selection,
                timeout: q
                    .timeout_secs
                    .map_or(crate::seed::DEFAULT_TIMEOUT, Duration::from_secs),
                pin_ttl: q
                    .pin_ttl_secs
                    .map_or(crate::seed::DEFAULT_PIN_TTL, Duration::from_secs),
            };
            tokio::spawn(crate::seed::issue::issue(node, request, job));
        }
        Err(e) => {
            tokio::spawn(job.finish(Err(e)));
        }
    }
    ndjson(body)
}
