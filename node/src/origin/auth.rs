//! Answering upstream authentication challenges: basic credentials, and the token flow
//! (ask the challenge's realm for a token scoped to the repository, cache it until it
//! expires, send it as `Bearer`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde::Deserialize;
use shoal_protocol::RepoName;
use shoal_protocol::auth::{Challenge, parse_challenge};

use super::{OriginError, check_status, read_limited, unreachable};
use crate::config::{Credentials, Upstream};

/// Tokens are dropped this long before the origin says they expire, so that a request
/// never leaves with a token that dies on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// What the token spec says to assume when a token server gives no lifetime.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

/// Cached authorization per upstream and repository.
#[derive(Default)]
pub struct Auth {
    // std Mutex: lookups and inserts only, never held across an await.
    cache: Mutex<HashMap<(String, String), Cached>>,
}

#[derive(Clone)]
struct Cached {
    header: String,
    until: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    /// Sends the request `make` builds, answering one authentication challenge if the
    /// upstream sends one. A second 401 is returned to the caller as it is.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        up: &Upstream,
        repo: &RepoName,
        timeout: Duration,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OriginError> {
        let key = (up.host.clone(), repo.to_string());
        let cached = self.cached(&key);
        let mut request = make();
        if let Some(h) = &cached {
            request = request.header(AUTHORIZATION, h);
        }
        let url = up.url.to_string();
        let response = request.send().await.map_err(|e| unreachable(&url, &e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge);
        let Some(challenge) = challenge else {
            // Nothing to answer: hand the 401 back as the origin's answer.
            return Ok(response);
        };
        let fresh = match challenge {
            Challenge::Basic { .. } => Cached {
                header: basic(up.credentials.as_ref().ok_or_else(|| OriginError::Auth {
                    url: url.clone(),
                    detail: format!(
                        "it asks for basic credentials for {repo}; none are configured for {}",
                        up.host
                    ),
                })?),
                until: None,
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope.unwrap_or_else(|| format!("repository:{repo}:pull"));
                self.token(client, up, &realm, service.as_deref(), &scope, timeout)
                    .await?
            }
        };
        if cached.as_deref() == Some(fresh.header.as_str()) {
            // The same authorization was just refused: asking again would loop.
            return Err(OriginError::Auth {
                url,
                detail: "the credentials were refused".into(),
            });
        }
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, fresh.clone());
        make()
            .header(AUTHORIZATION, fresh.header)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))
    }

    fn cached(&self, key: &(String, String)) -> Option<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(key) {
            Some(c) if c.until.is_none_or(|t| Instant::now() < t) => Some(c.header.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    async fn token(
        &self,
        client: &reqwest::Client,
        up: &Upstream,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        timeout: Duration,
    ) -> Result<Cached, OriginError> {
        let mut url = url::Url::parse(realm).map_err(|e| OriginError::Auth {
            url: up.url.to_string(),
            detail: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OriginError::Auth {
                url: up.url.to_string(),
                detail: format!("token realm {realm:?} is not http(s)"),
            });
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let url_s = url.to_string();
        let mut request = client.get(url.clone()).timeout(timeout);
        if let Some(c) = &up.credentials {
            request = request.header(AUTHORIZATION, basic(c));
        }
        let response = request.send().await.map_err(|e| unreachable(&url_s, &e))?;
        let response = check_status(&url_s, response).await.map_err(|e| match e {
            OriginError::Status { status, .. } => OriginError::Auth {
                url: url_s.clone(),
                detail: format!("the token server answered {status} for scope {scope}"),
            },
            other => other,
        })?;
        let body = read_limited(&url_s, response, 1 << 20).await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| OriginError::Auth {
                url: url_s.clone(),
                detail: format!("the token server's answer is not a token: {e}"),
            })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .ok_or_else(|| OriginError::Auth {
                url: url_s.clone(),
                detail: "the token server's answer holds no token".into(),
            })?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME));
        Ok(Cached {
            header: format!("Bearer {token}"),
            until: Some(Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN)),
        })
    }
}

fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}
