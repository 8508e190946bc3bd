//! Errors as the distribution spec shapes them: a status and
//! `{"errors":[{"code":...,"message":...}]}`, with messages that say what failed, on
//! which input, and what the operator can do.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_protocol::{DigestError, ReferenceError};

use crate::blobs::BlobError;
use crate::manifests::ManifestFetchError;
use crate::origin::OriginError;
use crate::store::StoreError;

/// An error answer to a client.
#[derive(Debug)]
pub struct MirrorError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// An origin's own error document, passed through unchanged.
    passthrough: Option<(bytes::Bytes, Option<String>)>,
    /// Whether to ask the client for basic credentials (`WWW-Authenticate`).
    challenge: bool,
}

impl MirrorError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        MirrorError {
            status,
            code,
            message: message.into(),
            passthrough: None,
            challenge: false,
        }
    }

    /// A path that is not part of the pull API.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "not a distribution-spec pull endpoint",
        )
    }

    /// A node feature that is off, with what turns it on.
    pub fn off(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "UNSUPPORTED", what)
    }

    /// A method other than GET or HEAD.
    pub fn unsupported(method: &Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!(
                "{method} is not supported: shoal is a pull-through mirror; push to the origin registry"
            ),
        )
    }

    /// A bad repository name.
    pub fn bad_name(e: ReferenceError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string())
    }

    /// A bad tag or digest in a manifest path.
    pub fn bad_reference(e: ReferenceError) -> Self {
        match e {
            ReferenceError::BadDigest(d) => Self::bad_digest(&d),
            other => Self::new(StatusCode::BAD_REQUEST, "TAG_INVALID", other.to_string()),
        }
    }

    /// A bad digest.
    pub fn bad_digest(e: &DigestError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string())
    }

    /// A registry the node will not or cannot reach.
    pub fn bad_registry(e: anyhow::Error) -> Self {
        Self::new(StatusCode::FORBIDDEN, "DENIED", format!("{e:#}"))
    }

    /// A range past the end of a blob.
    pub fn unsatisfiable(size: u64) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_INVALID",
            format!("the blob has {size} bytes"),
        )
    }

    /// An inspect request the node cannot answer.
    pub fn inspect(e: crate::inspect::InspectError) -> Self {
        use crate::inspect::InspectError as E;
        let status = match &e {
            E::BadReference(_) => StatusCode::BAD_REQUEST,
            E::Unknown(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, "UNKNOWN", e.to_string())
    }

    /// A client without access to a private repository: 401 with a basic challenge
    /// (so that engines send their credentials), or 503 if the origin could not be
    /// asked.
    pub fn denied(e: crate::access::Denied) -> Self {
        use crate::access::Denied;
        match e {
            Denied::CannotCheck { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            ),
            Denied::Ping | Denied::NeedCredentials { .. } | Denied::Refused { .. } => MirrorError {
                challenge: true,
                ..Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
            },
        }
    }

    /// The store's disk is full: 503, so that engines retry later.
    pub fn disk_full(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!("shoal node cannot store more: {e}"),
        )
    }

    /// An image of a repository served flat that the node could not pull or flatten.
    pub fn flat(image: &str, e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("shoal cannot serve {image} as a flat image: {e}"),
        )
    }

    /// A failure of the node itself.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("shoal node error: {e}"),
        )
    }
}

/// ": <message>" from an origin's distribution-spec error document, if it has one.
fn origin_message(body: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match doc["errors"][0]["message"].as_str() {
        Some(m) if !m.is_empty() => format!(": {}", m.chars().take(300).collect::<String>()),
        _ => String::new(),
    }
}

impl From<OriginError> for MirrorError {
    fn from(e: OriginError) -> Self {
        let message = e.to_string();
        match e {
            OriginError::Status {
                status,
                body,
                content_type,
                ..
            } => {
                // 4xx answers (unknown repository, tag or blob) are the origin's to
                // give, and so is 503 (down for maintenance, retry later): pass them
                // through. Any other 5xx is the origin failing: say so as 502, with
                // what it said.
                let passes = (status.is_client_error() && status != StatusCode::UNAUTHORIZED)
                    || status == StatusCode::SERVICE_UNAVAILABLE;
                if passes {
                    MirrorError {
                        status,
                        code: "UNKNOWN",
                        message,
                        passthrough: Some((body, content_type)),
                        challenge: false,
                    }
                } else if status == StatusCode::UNAUTHORIZED {
                    Self::new(
                        StatusCode::FORBIDDEN,
                        "DENIED",
                        format!(
                            "{message}: the origin needs credentials; configure them for this upstream in the node's config"
                        ),
                    )
                } else {
                    let said = origin_message(&body);
                    Self::new(
                        StatusCode::BAD_GATEWAY,
                        "UNKNOWN",
                        format!("{message}{said}"),
                    )
                }
            }
            OriginError::Auth { .. } => Self::new(StatusCode::FORBIDDEN, "DENIED", message),
            OriginError::Unreachable { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", message)
            }
            OriginError::Protocol { .. } => Self::new(StatusCode::BAD_GATEWAY, "UNKNOWN", message),
            OriginError::Config { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", message)
            }
        }
    }
}

impl From<BlobError> for MirrorError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Origin(o) => o.into(),
            BlobError::DigestMismatch { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "DIGEST_INVALID", e.to_string())
            }
            BlobError::TooLarge { .. } => {
                Self::new(StatusCode::FORBIDDEN, "SIZE_INVALID", e.to_string())
            }
            BlobError::Overlong { .. } | BlobError::Interrupted { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", e.to_string())
            }
            BlobError::Store(StoreError::DiskFull { .. }) => Self::disk_full(e),
            BlobError::Store(_) | BlobError::Damaged(_) | BlobError::Internal(_) => {
                Self::internal(e)
            }
        }
    }
}

impl From<ManifestFetchError> for MirrorError {
    fn from(e: ManifestFetchError) -> Self {
        match e {
            ManifestFetchError::Origin(o) => o.into(),
            ManifestFetchError::DigestMismatch { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "DIGEST_INVALID", e.to_string())
            }
            ManifestFetchError::Invalid { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "MANIFEST_INVALID", e.to_string())
            }
            ManifestFetchError::Store(StoreError::DiskFull { .. }) => Self::disk_full(e),
            ManifestFetchError::Store(_)
            | ManifestFetchError::Damaged(_)
            | ManifestFetchError::Internal(_) => Self::internal(e),
        }
    }
}

impl IntoResponse for MirrorError {
    fn into_response(self) -> Response {
        tracing::info!(status = %self.status, code = self.code, "request failed: {}", self.message);
        let (body, content_type) = match self.passthrough {
            Some((body, ct)) if !body.is_empty() => {
                (body, ct.unwrap_or_else(|| "application/json".into()))
            }
            _ => {
                let doc =
                    serde_json::json!({"errors": [{"code": self.code, "message": self.message}]});
                (doc.to_string().into(), "application/json".into())
            }
        };
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = self.status;
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static(super::API_VERSION),
        );
        if self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"shoal\""),
            );
        }
        r
    }
}
