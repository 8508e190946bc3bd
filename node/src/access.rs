//! Who may pull what through the node: private repositories stay private.
//!
//! A node configured with credentials for an upstream can fetch repositories that
//! anonymous clients cannot. Without a check, anyone who reaches the mirror would get
//! them from its store. So, for an upstream with credentials (and `client_auth =
//! "origin"`, the default):
//! - a repository is *public* if the origin lets an anonymous client list its tags
//!   (the same token flow an engine would use, with no credentials); public
//!   repositories need nothing from the client;
//! - for a *private* one, the client must send basic credentials (engines do after the
//!   node's `401` with `WWW-Authenticate: Basic`), and the node serves it only after
//!   the origin accepted those same credentials for that repository.
//!
//! Verdicts are cached briefly: whether a repository is public for 10 minutes,
//! accepted credentials for 5 minutes, refused ones for 30 seconds. Credentials are
//! kept only as a keyed hash. If the origin cannot be asked (down), a private
//! repository is refused unless a recent verdict says otherwise: the check fails
//! closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use shoal_protocol::RepoName;

use crate::config::{ClientAuth, Credentials, Upstream};
use crate::origin::{Origin, OriginError};

/// How long "this repository is public (or private)" is believed.
const VISIBILITY_FOR: Duration = Duration::from_secs(600);
/// How long accepted credentials are believed.
const ACCEPTED_FOR: Duration = Duration::from_secs(300);
/// How long refused credentials are refused without asking again.
const REFUSED_FOR: Duration = Duration::from_secs(30);

/// Why a client may not pull.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// A ping without credentials on a node that may hold private repositories: the
    /// challenge that tells engines to send theirs.
    #[error(
        "this node serves private repositories to clients whose credentials their origin accepts; public ones need none"
    )]
    Ping,
    /// The repository is private and the client sent no usable credentials.
    #[error(
        "{repo} at {upstream} is private: log in to this node with your credentials for {upstream} (they are checked with it)"
    )]
    NeedCredentials {
        /// The upstream.
        upstream: String,
        /// The repository.
        repo: String,
    },
    /// The origin refused the client's credentials for the repository.
    #[error("{upstream} refused your credentials for {repo}")]
    Refused {
        /// The upstream.
        upstream: String,
        /// The repository.
        repo: String,
    },
    /// The origin could not be asked.
    #[error(
        "cannot check your access to {repo} with {upstream} (it is private, and the origin did not answer): {detail}"
    )]
    CannotCheck {
        /// The upstream.
        upstream: String,
        /// The repository.
        repo: String,
        /// What went wrong.
        detail: String,
    },
}

/// When a verdict was reached, and whether it was yes.
type Verdict = (Instant, bool);

/// Upstream, repository, and the keyed hash of the credentials.
type CredentialKey = (String, String, [u8; 32]);

/// The access checks and their recent verdicts.
pub struct Access {
    // std Mutex: map lookups and inserts only, never held across an await.
    visibility: Mutex<HashMap<(String, String), Verdict>>,
    verdicts: Mutex<HashMap<CredentialKey, Verdict>>,
    /// Keys the hashes of credentials kept in `verdicts` (fresh per process).
    secret: [u8; 32],
}

impl Default for Access {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        // Per-process key for hashing credentials: the time and the pid are enough to
        // keep the hashes from being compared across processes or precomputed.
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        secret.copy_from_slice(blake3::hash(seed.as_bytes()).as_bytes());
        Access {
            visibility: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(HashMap::new()),
            secret,
        }
    }
}

/// Basic credentials from an `Authorization` header, if it holds them.
fn basic(authorization: &str) -> Option<Credentials> {
    let (scheme, value) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

fn fresh(at: Instant, verdict: bool) -> bool {
    at.elapsed() < if verdict { ACCEPTED_FOR } else { REFUSED_FOR }
}

impl Access {
    /// Whether a client sending `authorization` may pull `repo` from `up`.
    pub async fn check(
        &self,
        origin: &Origin,
        up: &Upstream,
        repo: &RepoName,
        authorization: Option<&str>,
    ) -> Result<(), Denied> {
        if up.credentials.is_none() || up.client_auth == ClientAuth::None {
            // The node fetches anonymously: what it holds, anyone could get.
            return Ok(());
        }
        let (host, name) = (up.host.clone(), repo.to_string());
        if self.public(origin, up, repo).await {
            return Ok(());
        }
        let need = || Denied::NeedCredentials {
            upstream: host.clone(),
            repo: name.clone(),
        };
        let credentials = authorization.and_then(basic).ok_or_else(need)?;
        let hash = *blake3::keyed_hash(
            &self.secret,
            format!("{}\0{}", credentials.username, credentials.password).as_bytes(),
        )
        .as_bytes();
        let key = (host.clone(), name.clone(), hash);
        let known = self
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .filter(|(at, v)| fresh(*at, *v));
        let accepted = match known {
            Some((_, v)) => v,
            None => {
                let as_client = Upstream {
                    credentials: Some(credentials),
                    ..up.clone()
                };
                let accepted = match origin.probe(&as_client, repo).await {
                    Ok(()) => true,
                    Err(OriginError::Auth { .. }) => false,
                    Err(OriginError::Status { status, .. })
                        if status.as_u16() == 401 || status.as_u16() == 403 =>
                    {
                        false
                    }
                    Err(e) => {
                        return Err(Denied::CannotCheck {
                            upstream: host,
                            repo: name,
                            detail: e.to_string(),
                        });
                    }
                };
                let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
                verdicts.retain(|_, (at, v)| fresh(*at, *v));
                verdicts.insert(key, (Instant::now(), accepted));
                tracing::info!(upstream = %host, repo = %name, user = %as_client_user(&as_client), accepted, "checked a client's credentials with the origin");
                accepted
            }
        };
        if accepted {
            Ok(())
        } else {
            Err(Denied::Refused {
                upstream: host,
                repo: name,
            })
        }
    }

    /// Whether the origin lets anonymous clients pull `repo` (cached). An origin that
    /// cannot be asked makes the repository count as private for now.
    async fn public(&self, origin: &Origin, up: &Upstream, repo: &RepoName) -> bool {
        let key = (up.host.clone(), repo.to_string());
        if let Some((at, public)) = self
            .visibility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            && at.elapsed() < VISIBILITY_FOR
        {
            return public;
        }
        let anonymous = Upstream {
            credentials: None,
            ..up.clone()
        };
        let public = match origin.probe(&anonymous, repo).await {
            Ok(()) => true,
            Err(OriginError::Auth { .. }) => false,
            Err(OriginError::Status { status, .. }) if status.is_client_error() => false,
            // Unknown: not cached, asked again next time.
            Err(_) => return false,
        };
        self.visibility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (Instant::now(), public));
        public
    }
}

fn as_client_user(up: &Upstream) -> &str {
    up.credentials.as_ref().map_or("", |c| c.username.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_from_the_header_only() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3:cret")
        );
        let c = basic(&h).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3:cret")
        );
        assert!(basic("Bearer abc").is_none());
        assert!(basic("Basic !!!").is_none());
        assert!(basic("Basic").is_none());
    }
}
