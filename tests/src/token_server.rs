//! A token server for the distribution token flow, small enough to read whole: an
//! HTTP/1.1 server on a loopback port (one thread per connection, `Connection: close`)
//! that checks HTTP basic credentials and issues RS256 JWTs that docker-registry's
//! `auth: token:` accepts.
//!
//! The signing key is a self-signed certificate made with the `openssl` CLI; the
//! registry trusts it through `rootcertbundle`, and every token carries it in its
//! header's `x5c`. Signatures are made with `openssl dgst -sha256 -sign` (PKCS#1 v1.5,
//! which is what RS256 is). The server records every request so tests can count how
//! often a client came for a token.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;

use crate::process::run;
use crate::tls::{KeyPair, self_signed};

/// Longest request head the server reads.
const MAX_HEAD: usize = 64 * 1024;
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An account of the token server and the repository actions it may be granted.
#[derive(Clone, Debug)]
pub struct TokenUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// Actions it may get on any repository (`pull`, `push`).
    pub actions: Vec<String>,
}

impl TokenUser {
    /// A user allowed `actions`.
    pub fn new(name: &str, password: &str, actions: &[&str]) -> Self {
        TokenUser {
            name: name.to_owned(),
            password: password.to_owned(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// What the server issues and to whom.
#[derive(Clone, Debug)]
pub struct TokenServerConfig {
    /// `iss` of its tokens (the registry's `auth.token.issuer`).
    pub issuer: String,
    /// `aud` of its tokens (the registry's `auth.token.service`).
    pub service: String,
    /// Its accounts.
    pub users: Vec<TokenUser>,
    /// `expires_in` of its tokens.
    pub lifetime: Duration,
}

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The account whose credentials it carried, if they were right.
    pub account: Option<String>,
    /// Whether it carried an `Authorization` header at all.
    pub had_credentials: bool,
    /// Its `service` parameter.
    pub service: Option<String>,
    /// Its `scope` parameters.
    pub scopes: Vec<String>,
    /// The status answered.
    pub status: u16,
}

struct Shared {
    config: TokenServerConfig,
    signer: KeyPair,
    x5c: String,
    scratch: PathBuf,
    next: AtomicU64,
    stop: AtomicBool,
    requests: Mutex<Vec<TokenRequest>>,
}

/// A running token server; stopped (and its threads joined) when dropped.
pub struct TokenServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Makes a signing key under `dir/token-server/` and starts serving.
    pub fn start(dir: &Path, config: TokenServerConfig) -> anyhow::Result<Self> {
        let scratch = dir.join("token-server");
        let signer = self_signed(&scratch, "token-signer")?;
        let x5c = signer.cert_der_base64()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            config,
            signer,
            x5c,
            scratch,
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("token-server".into())
            .spawn(move || accept_loop(listener, for_thread))?;
        Ok(TokenServer {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// The realm registries send clients to: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate registries must trust (their `rootcertbundle`).
    pub fn rootcertbundle(&self) -> &Path {
        &self.shared.signer.cert
    }

    /// The service (audience) its tokens are for.
    pub fn service(&self) -> &str {
        &self.shared.config.service
    }

    /// The issuer its tokens name.
    pub fn issuer(&self) -> &str {
        &self.shared.config.issuer
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tokens issued to `account`, with their scopes.
    pub fn issued_to(&self, account: &str) -> Vec<TokenRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200 && r.account.as_deref() == Some(account))
            .collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(
            &self.addr.parse().expect("a socket address"),
            Duration::from_secs(1),
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let s = Arc::clone(&shared);
        if let Ok(h) = std::thread::Builder::new()
            .name("token-conn".into())
            .spawn(move || {
                let _ = serve(stream, &s);
            })
        {
            workers.push(h);
        }
        workers.retain(|h| !h.is_finished());
    }
    for h in workers {
        let _ = h.join();
    }
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
}

fn serve(mut stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let head = match read_head(&mut stream) {
        Ok(h) => h,
        Err(e) => {
            return respond(
                &mut stream,
                400,
                &[],
                &error_body("BAD_REQUEST", &e.to_string()),
            );
        }
    };
    if head.path != "/token" || head.method != "GET" {
        return respond(
            &mut stream,
            404,
            &[],
            &error_body("NOT_FOUND", "only GET /token is served"),
        );
    }
    let service = param(&head, "service").next().map(str::to_owned);
    let scopes: Vec<String> = param(&head, "scope")
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let user = head.authorization.as_deref().and_then(|h| {
        shared
            .config
            .users
            .iter()
            .find(|u| basic_matches(h, &u.name, &u.password))
    });
    let mut record = TokenRequest {
        account: user.map(|u| u.name.clone()),
        had_credentials: head.authorization.is_some(),
        service: service.clone(),
        scopes: scopes.clone(),
        status: 200,
    };
    let answer = match user {
        None => {
            record.status = 401;
            let why = if record.had_credentials {
                "wrong user name or password"
            } else {
                "credentials are required"
            };
            Answer::Refuse(why)
        }
        Some(_) if service.as_deref() != Some(shared.config.service.as_str()) => {
            record.status = 400;
            Answer::BadService
        }
        Some(user) => match issue(shared, user, &scopes) {
            Ok(body) => Answer::Token(body),
            Err(e) => {
                record.status = 500;
                Answer::Failed(format!("{e:#}"))
            }
        },
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(record);
    match answer {
        Answer::Token(body) => respond(&mut stream, 200, &[], &body),
        Answer::Refuse(why) => respond(
            &mut stream,
            401,
            &["WWW-Authenticate: Basic realm=\"shoal-test-token\""],
            &error_body("UNAUTHORIZED", why),
        ),
        Answer::BadService => respond(
            &mut stream,
            400,
            &[],
            &error_body("BAD_REQUEST", "unknown service"),
        ),
        Answer::Failed(e) => respond(&mut stream, 500, &[], &error_body("UNKNOWN", &e)),
    }
}

enum Answer {
    Token(Vec<u8>),
    Refuse(&'static str),
    BadService,
    Failed(String),
}

fn param<'a>(head: &'a Head, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    head.query
        .iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn read_head(stream: &mut TcpStream) -> anyhow::Result<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_HEAD {
            bail!("request head over {MAX_HEAD} bytes");
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before the request head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().context("no request target")?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let authorization = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    Ok(Head {
        method,
        path: path.to_owned(),
        query,
        authorization,
    })
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[&str],
    body: &[u8],
) -> anyhow::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    Ok(())
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    json!({"errors": [{"code": code, "message": message}]})
        .to_string()
        .into_bytes()
}

fn basic_matches(header: &str, user: &str, password: &str) -> bool {
    let Some((scheme, value)) = header.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("basic")
        && value.trim() == base64(format!("{user}:{password}").as_bytes(), false)
}

/// The JSON answer holding a token for `user` with what it may have of `scopes`.
fn issue(shared: &Shared, user: &TokenUser, scopes: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut access = Vec::new();
    for scope in scopes {
        // type:name:actions, where the name may itself hold colons (a port).
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if kind != "repository" {
            continue;
        }
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| user.actions.iter().any(|u| u == a))
            .collect();
        if !granted.is_empty() {
            access.push(json!({"type": "repository", "name": name, "actions": granted}));
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let lifetime = shared.config.lifetime.as_secs();
    let n = shared.next.fetch_add(1, Ordering::SeqCst);
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [shared.x5c]});
    let claims = json!({
        "iss": shared.config.issuer,
        "sub": user.name,
        "aud": shared.config.service,
        "exp": now + lifetime,
        "nbf": now,
        "iat": now,
        "jti": format!("shoal-test-{now}-{n}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let signature = sign(shared, n, signing_input.as_bytes())?;
    let token = format!("{signing_input}.{}", base64(&signature, true));
    Ok(json!({"token": token, "expires_in": lifetime})
        .to_string()
        .into_bytes())
}

/// RS256: an RSASSA-PKCS1-v1_5 SHA-256 signature by the signing key.
fn sign(shared: &Shared, n: u64, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let input = shared.scratch.join(format!("sign-{n}.in"));
    let output = shared.scratch.join(format!("sign-{n}.sig"));
    std::fs::write(&input, data)?;
    let result = run(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&shared.signer.key)
            .arg("-out")
            .arg(&output)
            .arg(&input),
        Duration::from_secs(30),
    )
    .and_then(|_| Ok(std::fs::read(&output)?));
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    result
}

/// Base64 of `bytes`: standard alphabet with padding, or URL-safe without (JOSE).
pub fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (raw, std, url) in [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"),
            ("fooba", "Zm9vYmE=", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes(), false), std);
            assert_eq!(base64(raw.as_bytes(), true), url);
        }
        assert_eq!(base64(&[0xfb, 0xff], false), "+/8=");
        assert_eq!(base64(&[0xfb, 0xff], true), "-_8");
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            percent_decode("repository%3Aapp%3Apull%2Cpush"),
            "repository:app:pull,push"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
