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
    /// upstream sends one. A 401 to that answer is an [`OriginError::Auth`] saying
    /// what was refused; nothing refused stays cached.
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
        let (fresh, sent) = match challenge {
            Challenge::Basic { .. } => {
                let credentials = up.credentials.as_ref().ok_or_else(|| OriginError::Auth {
                    url: url.clone(),
                    detail: format!(
                        "it asks for basic credentials for {repo}; none are configured for {}: \
                         set username and password (or password_file) in its [[upstreams]] entry",
                        up.host
                    ),
                })?;
                (
                    Cached {
                        header: basic(credentials),
                        until: None,
                    },
                    Sent::Basic,
                )
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope.unwrap_or_else(|| format!("repository:{repo}:pull"));
                let token = self
                    .token(client, up, &realm, service.as_deref(), &scope, timeout)
                    .await?;
                (token, Sent::Token { realm, scope })
            }
        };
        if cached.as_deref() == Some(fresh.header.as_str()) {
            // The same authorization was just refused: asking again would loop.
            self.forget(&key);
            return Err(OriginError::Auth {
                url,
                detail: refused(up, &sent),
            });
        }
        let response = make()
            .header(AUTHORIZATION, &fresh.header)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            // Challenged again right after answering: the origin refuses what was
            // sent. Say so (not "credentials needed"), and keep nothing that would
            // be sent again.
            self.forget(&key);
            return Err(OriginError::Auth {
                url,
                detail: refused(up, &sent),
            });
        }
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, fresh);
        Ok(response)
    }

    fn forget(&self, key: &(String, String)) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
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
                detail: token_refusal(up, status, scope),
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

/// What was sent in answer to a challenge, for messages.
enum Sent {
    Basic,
    Token { realm: String, scope: String },
}

/// Who the node presented itself as to `up`.
fn account(up: &Upstream) -> String {
    match &up.credentials {
        Some(c) => format!("user {}", c.username),
        None => "no credentials (anonymous)".to_owned(),
    }
}

/// Why the origin answered 401 to the authorization the node just sent.
fn refused(up: &Upstream, sent: &Sent) -> String {
    match sent {
        Sent::Basic => format!(
            "it refused the basic credentials configured for {} ({}); check them in its [[upstreams]] entry",
            up.host,
            account(up)
        ),
        Sent::Token { realm, scope } => format!(
            "it refused the token {realm} issued for scope {scope} to {} configured for {}",
            account(up),
            up.host
        ),
    }
}

/// Why the token server gave no token.
fn token_refusal(up: &Upstream, status: StatusCode, scope: &str) -> String {
    let refusal = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    match &up.credentials {
        Some(c) if refusal => format!(
            "the token server refused the credentials of user {} configured for {} ({status} for scope {scope}); check them in its [[upstreams]] entry",
            c.username, up.host
        ),
        None if refusal => format!(
            "the token server answered {status} for scope {scope} and no credentials are configured for {}: set username and password (or password_file) in its [[upstreams]] entry",
            up.host
        ),
        _ => format!("the token server answered {status} for scope {scope}"),
    }
}

fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;

    /// What the fake origin and its token server do and count.
    #[derive(Default)]
    struct Fake {
        /// The token server hands out tokens (else it answers 401).
        issue: bool,
        /// The origin accepts the tokens it hands out (else it answers 401 to anything).
        accept: bool,
        /// Bearer challenges (else basic).
        bearer: bool,
        origin_requests: AtomicUsize,
        token_requests: AtomicUsize,
        base: std::sync::OnceLock<String>,
    }

    async fn origin(State(f): State<Arc<Fake>>, headers: HeaderMap) -> axum::response::Response {
        f.origin_requests.fetch_add(1, Ordering::SeqCst);
        let auth = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if f.accept && auth == "Bearer good-token" {
            return (StatusCode::OK, "{}").into_response();
        }
        let challenge = if f.bearer {
            format!(
                r#"Bearer realm="{}/token",service="fake",scope="repository:app:pull""#,
                f.base.get().unwrap()
            )
        } else {
            r#"Basic realm="fake""#.to_owned()
        };
        (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, challenge)],
            "",
        )
            .into_response()
    }

    async fn token(State(f): State<Arc<Fake>>) -> impl IntoResponse {
        f.token_requests.fetch_add(1, Ordering::SeqCst);
        if f.issue {
            (StatusCode::OK, r#"{"token":"good-token","expires_in":300}"#)
        } else {
            (StatusCode::UNAUTHORIZED, "")
        }
    }

    async fn start(fake: Fake) -> (Arc<Fake>, String) {
        let fake = Arc::new(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        fake.base.set(base.clone()).unwrap();
        let app = Router::new()
            .route("/v2/app/manifests/v1", get(origin))
            .route("/token", get(token))
            .with_state(Arc::clone(&fake));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, base)
    }

    fn upstream(base: &str, credentials: Option<(&str, &str)>) -> Upstream {
        Upstream {
            host: "origin.test:5000".into(),
            url: url::Url::parse(base).unwrap(),
            credentials: credentials.map(|(u, p)| Credentials {
                username: u.into(),
                password: p.into(),
            }),
            ca_file: None,
            insecure_skip_verify: false,
            client_auth: crate::config::ClientAuth::Origin,
        }
    }

    async fn get_manifest(auth: &Auth, up: &Upstream) -> Result<reqwest::Response, OriginError> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let repo = RepoName::parse("app").unwrap();
        let url = format!("{}v2/app/manifests/v1", up.url);
        auth.send(&client, up, &repo, Duration::from_secs(10), || {
            client.get(&url)
        })
        .await
    }

    fn auth_detail(r: Result<reqwest::Response, OriginError>) -> String {
        match r {
            Err(e @ OriginError::Auth { .. }) => e.to_string(),
            Err(e) => panic!("expected an auth error, got {e}"),
            Ok(r) => panic!("expected an auth error, got {}", r.status()),
        }
    }

    #[tokio::test]
    async fn refused_basic_credentials_are_reported_as_refused_every_time() {
        // Before: the first request handed the origin's second 401 back, which clients
        // saw as "the origin needs credentials; configure them" although they were
        // configured; only later requests (sending the cached header) said "refused".
        let (_fake, base) = start(Fake::default()).await;
        let up = upstream(&base, Some(("puller", "wrong-password")));
        let auth = Auth::default();
        for _ in 0..2 {
            let msg = auth_detail(get_manifest(&auth, &up).await);
            assert!(msg.contains("refused the basic credentials"), "{msg}");
            assert!(msg.contains("user puller") && msg.contains("origin.test:5000"));
            assert!(!msg.contains("wrong-password"), "{msg}");
        }
        assert!(
            auth.cache.lock().unwrap().is_empty(),
            "refused, so not kept"
        );
    }

    #[tokio::test]
    async fn a_basic_challenge_without_credentials_says_none_are_configured() {
        // Before: "refused the node's credentials: ..." although the node had none.
        let (_fake, base) = start(Fake::default()).await;
        let msg = auth_detail(get_manifest(&Auth::default(), &upstream(&base, None)).await);
        assert!(!msg.contains("refused"), "{msg}");
        assert!(
            msg.contains("none are configured for origin.test:5000")
                && msg.contains("[[upstreams]]"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_token_server_refusal_names_the_account_or_the_missing_credentials() {
        // Before: "refused the node's credentials: the token server answered 401 for
        // scope ..." with no account, and the same words when none were configured.
        let (fake, base) = start(Fake {
            bearer: true,
            ..Default::default()
        })
        .await;
        let msg = auth_detail(
            get_manifest(
                &Auth::default(),
                &upstream(&base, Some(("puller", "wrong-password"))),
            )
            .await,
        );
        assert!(
            msg.contains("token server refused the credentials of user puller")
                && msg.contains("repository:app:pull"),
            "{msg}"
        );
        assert!(!msg.contains("wrong-password"), "{msg}");
        let msg = auth_detail(get_manifest(&Auth::default(), &upstream(&base, None)).await);
        assert!(msg.contains("no credentials are configured"), "{msg}");
        assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_token_is_reported_and_dropped() {
        let (fake, base) = start(Fake {
            bearer: true,
            issue: true,
            ..Default::default()
        })
        .await;
        let auth = Auth::default();
        let up = upstream(&base, Some(("puller", "pw")));
        let msg = auth_detail(get_manifest(&auth, &up).await);
        assert!(msg.contains("refused the token"), "{msg}");
        assert!(auth.cache.lock().unwrap().is_empty());
        // The next request starts over with a fresh token.
        auth_detail(get_manifest(&auth, &up).await);
        assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_accepted_token_is_kept_for_later_requests() {
        let (fake, base) = start(Fake {
            bearer: true,
            issue: true,
            accept: true,
            ..Default::default()
        })
        .await;
        let auth = Auth::default();
        let up = upstream(&base, Some(("puller", "pw")));
        for _ in 0..3 {
            let r = get_manifest(&auth, &up).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        assert_eq!(fake.token_requests.load(Ordering::SeqCst), 1);
        // One challenge, then three requests with the token.
        assert_eq!(fake.origin_requests.load(Ordering::SeqCst), 4);
    }
}
