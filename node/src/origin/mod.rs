//! The client for upstream registries: the distribution-spec pull API over HTTP(S),
//! with anonymous, basic and token (Bearer) authentication.
//!
//! It moves bytes and reports what the origin said; it does not decide what to trust.
//! Checking digests is the caller's job (`blobs`, `manifests`), because only the caller
//! knows what the bytes were supposed to be.

mod auth;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use shoal_protocol::{Digest, Reference, RepoName};

use crate::config::{OriginConfig, Upstream};
pub use auth::Auth;

/// Most of an origin's error body that is kept to pass on to a client.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Why a request to an upstream failed. Clone, so that every client waiting on one
/// fetch can be given the same answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OriginError {
    /// No connection, a timeout, or the connection broke.
    #[error("upstream {url} is unreachable: {detail}")]
    Unreachable {
        /// What was asked for.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The upstream answered with an error status; its body is kept for the client.
    #[error("upstream {url} answered {status}")]
    Status {
        /// What was asked for.
        url: String,
        /// The status.
        status: StatusCode,
        /// Its body (truncated), usually a distribution-spec error document.
        body: Bytes,
        /// The body's type.
        content_type: Option<String>,
    },
    /// The upstream wants credentials the node does not have, or refused them.
    #[error("upstream {url} denied access: {detail}")]
    Auth {
        /// What was asked for.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The upstream's answer breaks the protocol (a missing length, a bad range, a
    /// manifest over the size limit).
    #[error("upstream {url} sent a bad response: {detail}")]
    Protocol {
        /// What was asked for.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The node's own settings for this upstream are unusable (a bad CA file).
    #[error("upstream {host} is misconfigured: {detail}")]
    Config {
        /// Which upstream.
        host: String,
        /// What is wrong.
        detail: String,
    },
}

/// A manifest as the origin served it.
#[derive(Debug)]
pub struct OriginManifest {
    /// The exact bytes.
    pub bytes: Bytes,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its `Docker-Content-Digest`, if the origin sent one.
    pub digest_header: Option<String>,
}

/// A blob response whose body is still to be read.
#[derive(Debug)]
pub struct OriginBlob {
    /// First byte of the body within the blob (0 unless a range was honoured).
    pub start: u64,
    /// The blob's whole size.
    pub total: u64,
    /// The response, body unread.
    pub response: reqwest::Response,
}

/// The upstream client. One per node; it keeps an HTTP client per upstream (TLS
/// settings differ) and the tokens upstreams have granted.
pub struct Origin {
    config: OriginConfig,
    // std Mutex: map lookups and inserts only, never held across an await.
    clients: Mutex<HashMap<String, reqwest::Client>>,
    auth: Auth,
}

impl Origin {
    /// A client with `config`'s timeouts.
    pub fn new(config: OriginConfig) -> Self {
        Origin {
            config,
            clients: Mutex::new(HashMap::new()),
            auth: Auth::default(),
        }
    }

    fn client(&self, up: &Upstream) -> Result<reqwest::Client, OriginError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&up.host) {
            return Ok(c.clone());
        }
        let config_err = |detail: String| OriginError::Config {
            host: up.host.clone(),
            detail,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .no_proxy()
            .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(up.insecure_skip_verify);
        if let Some(ca) = &up.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| config_err(format!("cannot read ca_file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                config_err(format!(
                    "ca_file {} is not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| config_err(e.to_string()))?;
        clients.insert(up.host.clone(), client.clone());
        Ok(client)
    }

    fn url(up: &Upstream, repo: &RepoName, tail: &str) -> String {
        let base = up.url.as_str().trim_end_matches('/');
        format!("{base}/v2/{repo}/{tail}")
    }

    /// Fetches a manifest by tag or digest, asking for the media types in `accept`.
    pub async fn manifest(
        &self,
        up: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
    ) -> Result<OriginManifest, OriginError> {
        let url = Self::url(up, repo, &format!("manifests/{reference}"));
        let client = self.client(up)?;
        let timeout = self.config.manifest_timeout;
        let response = self
            .auth
            .send(&client, up, repo, timeout, || {
                client.get(&url).header(ACCEPT, accept).timeout(timeout)
            })
            .await?;
        let response = check_status(&url, response).await?;
        let content_type = header(&response, CONTENT_TYPE.as_str());
        let digest_header = header(&response, "docker-content-digest");
        let bytes =
            read_limited(&url, response, shoal_protocol::manifest::MAX_MANIFEST_SIZE).await?;
        Ok(OriginManifest {
            bytes,
            content_type,
            digest_header,
        })
    }

    /// Starts fetching blob `digest` from byte `offset` on; the caller reads the body.
    pub async fn blob(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<OriginBlob, OriginError> {
        let url = Self::url(up, repo, &format!("blobs/{digest}"));
        let client = self.client(up)?;
        let response = self
            .auth
            .send(&client, up, repo, self.config.manifest_timeout, || {
                let req = client.get(&url);
                if offset > 0 {
                    req.header(RANGE, format!("bytes={offset}-"))
                } else {
                    req
                }
            })
            .await?;
        let response = check_status(&url, response).await?;
        let bad = |detail: String| OriginError::Protocol {
            url: url.clone(),
            detail,
        };
        let length: Option<u64> =
            header(&response, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
        let (start, total) = if response.status() == StatusCode::PARTIAL_CONTENT {
            let range = header(&response, CONTENT_RANGE.as_str())
                .ok_or_else(|| bad("206 without Content-Range".into()))?;
            parse_content_range(&range)
                .ok_or_else(|| bad(format!("unusable Content-Range {range:?}")))?
        } else {
            (
                0,
                length.ok_or_else(|| bad("no Content-Length for a blob".into()))?,
            )
        };
        Ok(OriginBlob {
            start,
            total,
            response,
        })
    }

    /// Asks whether the upstream has blob `digest`; returns its size.
    pub async fn blob_size(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64, OriginError> {
        let url = Self::url(up, repo, &format!("blobs/{digest}"));
        let client = self.client(up)?;
        let timeout = self.config.manifest_timeout;
        let response = self
            .auth
            .send(&client, up, repo, timeout, || {
                client.head(&url).timeout(timeout)
            })
            .await?;
        let response = check_status(&url, response).await?;
        header(&response, CONTENT_LENGTH.as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| OriginError::Protocol {
                url,
                detail: "HEAD without Content-Length".into(),
            })
    }

    /// Asks whether `up`'s credentials (or none) may pull `repo`: lists its tags with a
    /// fresh authorization, neither using nor filling the node's token cache. `Ok` if
    /// the origin answered 2xx.
    pub async fn probe(&self, up: &Upstream, repo: &RepoName) -> Result<(), OriginError> {
        let url = Self::url(up, repo, "tags/list?n=1");
        let client = self.client(up)?;
        let timeout = self.config.manifest_timeout;
        let response = Auth::default()
            .send(&client, up, repo, timeout, || {
                client.get(&url).timeout(timeout)
            })
            .await?;
        check_status(&url, response).await?;
        Ok(())
    }

    /// Fetches `tags/list` for a repository, passing `query` (pagination) through.
    pub async fn tags(
        &self,
        up: &Upstream,
        repo: &RepoName,
        query: &str,
    ) -> Result<(Bytes, Option<String>), OriginError> {
        let tail = if query.is_empty() {
            "tags/list".to_owned()
        } else {
            format!("tags/list?{query}")
        };
        let url = Self::url(up, repo, &tail);
        let client = self.client(up)?;
        let timeout = self.config.manifest_timeout;
        let response = self
            .auth
            .send(&client, up, repo, timeout, || {
                client.get(&url).timeout(timeout)
            })
            .await?;
        let response = check_status(&url, response).await?;
        let content_type = header(&response, CONTENT_TYPE.as_str());
        Ok((read_limited(&url, response, 4 << 20).await?, content_type))
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Turns an error status into [`OriginError::Status`], keeping (some of) its body.
async fn check_status(
    url: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, OriginError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let content_type = header(&response, CONTENT_TYPE.as_str());
    let body = read_limited(url, response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    Err(OriginError::Status {
        url: url.to_owned(),
        status,
        body,
        content_type,
    })
}

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(
    url: &str,
    response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, OriginError> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreachable(url, &e))?;
        if out.len() + chunk.len() > limit {
            return Err(OriginError::Protocol {
                url: url.to_owned(),
                detail: format!("response body is over the {limit}-byte limit"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total): (u64, u64, u64) =
        (start.parse().ok()?, end.parse().ok()?, total.parse().ok()?);
    (start <= end && end < total).then_some((start, total))
}

pub(crate) fn unreachable(url: &str, e: &reqwest::Error) -> OriginError {
    // reqwest's Display leaves out the cause (connection refused, DNS): walk the chain.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(hint) = tls_hint(&detail) {
        detail.push_str("; ");
        detail.push_str(hint);
    }
    OriginError::Unreachable {
        url: url.to_owned(),
        detail,
    }
}

/// What an operator should do about a connection that failed on the upstream's TLS
/// certificate (rustls says "invalid peer certificate: ...").
fn tls_hint(detail: &str) -> Option<&'static str> {
    detail.contains("invalid peer certificate").then_some(
        "the node does not trust the upstream's TLS certificate: give the CA that issued it \
         as ca_file in the upstream's [[upstreams]] entry (or, for a test registry only, \
         insecure_skip_verify = true)",
    )
}

/// A duration as whole seconds for messages.
pub(crate) fn secs(d: Duration) -> u64 {
    d.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, 100)));
        assert_eq!(parse_content_range("bytes 10-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 5-1/100"), None);
    }

    #[test]
    fn an_untrusted_certificate_gets_a_hint() {
        // Before: only rustls's words ("invalid peer certificate: UnknownIssuer") under
        // "is unreachable", with nothing saying which setting fixes it.
        let hint = tls_hint("client error (Connect): invalid peer certificate: UnknownIssuer");
        assert!(hint.is_some_and(|h| h.contains("ca_file")));
        assert_eq!(tls_hint("tcp connect error: Connection refused"), None);
    }
}
