//! Origins that need authentication or TLS, set up the way an operator would: a config
//! file with an `[[upstreams]]` entry passed to `shoal node --config`.
//!
//! - docker-registry with htpasswd (basic auth): credentials as `password` or
//!   `password_file`, none, or wrong ones;
//! - docker-registry with `auth: token:` and the harness's token server: one token
//!   per repository, cached for its lifetime; wrong credentials are refused clearly;
//! - docker-registry over HTTPS with a private CA: `ca_file`, no `ca_file`, and
//!   `insecure_skip_verify`.
//!
//! Engines pull `ALIAS/repo:tag`, where ALIAS is a loopback port nothing listens on
//! and the config maps it to the origin, so a successful pull went through the node.

use std::path::Path;
use std::time::Duration;

use shoal_protocol::Digest;
use shoal_tests::Node;
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::ACCEPT_ALL;
use shoal_tests::image::{Built, Layer, Layout, PushOptions, http_get, noise};
use shoal_tests::process::free_port;
use shoal_tests::registry::{Registry, RegistryAuth, RegistryOptions};
use shoal_tests::tls::TestCa;
use shoal_tests::token_server::{TokenServer, TokenServerConfig, TokenUser};

const PULLER: &str = "puller";
const PULLER_PASSWORD: &str = "pull-secret-1";
const PUSHER: &str = "pusher";
const PUSHER_PASSWORD: &str = "push-secret-2";

fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("shoal-test-").tempdir()?)
}

/// A loopback name nothing listens on, for the config to map to the origin.
fn alias() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Starts node `name` with a config file holding one `[[upstreams]]` entry: `alias`
/// reached at `origin_url`, plus `settings` (TOML lines).
fn node_with(
    dir: &Path,
    name: &str,
    alias: &str,
    origin_url: &str,
    settings: &str,
) -> anyhow::Result<Node> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        // These tests are about the node's own credentials; clients' access to private
        // repositories is tests/tests/private.rs's.
        format!(
            "[[upstreams]]\nhost = \"{alias}\"\nurl = \"{origin_url}\"\nclient_auth = \"none\"\n{settings}\n"
        ),
    )?;
    let config = config.display().to_string();
    Node::start_named(dir, name, origin_url, &["--config", &config])
}

/// Builds an image of one noise layer of `size` bytes, tagged `tag` in a layout.
fn build(dir: &Path, tag: &str, size: usize, seed: u64) -> anyhow::Result<(Layout, Built)> {
    let mut layout = Layout::new(&dir.join(format!("layout-{tag}-{seed}")))?;
    let built = layout.image(
        &[
            Layer::new().file("etc/motd", format!("image {tag} {seed}\n")),
            Layer::new().file("data", noise(size, seed)),
        ],
        "amd64",
        Some(tag),
    )?;
    Ok((layout, built))
}

/// GETs the manifest by tag and every blob through `node` with curl and checks each
/// against the bytes that were pushed.
fn pull_with_curl(
    node: &Node,
    alias: &str,
    repo: &str,
    tag: &str,
    layout: &Layout,
    built: &Built,
) -> anyhow::Result<()> {
    let url = |tail: String| format!("{}/v2/{repo}/{tail}?ns={alias}", node.url());
    let reply = http_get(
        &url(format!("manifests/{tag}")),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    anyhow::ensure!(
        reply.status == 200,
        "manifest {repo}:{tag}: {} {}\n{}",
        reply.status,
        String::from_utf8_lossy(&reply.body),
        node.log_tail()
    );
    assert_eq!(reply.body, layout.blob(&built.manifest)?, "manifest bytes");
    for d in &built.blobs {
        let reply = http_get(&url(format!("blobs/{d}")), &[])?;
        anyhow::ensure!(
            reply.status == 200,
            "blob {d}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        assert!(reply.body == layout.blob(d)?, "blob {d}: bytes differ");
    }
    Ok(())
}

/// skopeo pulls `alias/repo:tag` with the registries.conf `shoal configure podman`
/// writes for the node; what arrives must be what was built.
fn pull_with_skopeo(
    node: &Node,
    dir: &Path,
    alias: &str,
    image: &str,
    built: &Built,
) -> anyhow::Result<()> {
    let conf = dir.join(format!("registries-{}.conf", node.addr.replace(':', "_")));
    std::fs::write(&conf, node.configure("podman", &["--only", alias])?)?;
    let dest = tempfile::tempdir_in(dir)?;
    let pulled = skopeo_copy(&conf, &format!("{alias}/{image}"), dest.path(), &[])?;
    assert_eq!(pulled.manifest, built.manifest);
    let mut expected = built.blobs.clone();
    expected.sort();
    assert_eq!(pulled.blobs, expected);
    Ok(())
}

/// An error answer: status, distribution error code, message.
#[derive(Debug)]
struct Refusal {
    status: u16,
    code: String,
    message: String,
}

fn manifest_refusal(node: &Node, alias: &str, repo: &str, tag: &str) -> anyhow::Result<Refusal> {
    let reply = http_get(
        &format!("{}/v2/{repo}/manifests/{tag}?ns={alias}", node.url()),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    refusal(reply.status, &reply.body)
}

fn blob_refusal(node: &Node, alias: &str, repo: &str, d: &Digest) -> anyhow::Result<Refusal> {
    let reply = http_get(
        &format!("{}/v2/{repo}/blobs/{d}?ns={alias}", node.url()),
        &[],
    )?;
    refusal(reply.status, &reply.body)
}

fn refusal(status: u16, body: &[u8]) -> anyhow::Result<Refusal> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        anyhow::anyhow!(
            "status {status}, body not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })?;
    Ok(Refusal {
        status,
        code: doc["errors"][0]["code"].as_str().unwrap_or("").to_owned(),
        message: doc["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    })
}

/// The node keeps nothing from refused requests.
fn assert_empty(node: &Node) -> anyhow::Result<()> {
    let s = node.stats()?;
    assert_eq!(s["blobs"].as_u64(), Some(0), "{s}");
    assert_eq!(s["partial_blobs"].as_u64(), Some(0), "{s}");
    Ok(())
}

// ---------------------------------------------------------------------------------
// Basic auth (htpasswd)
// ---------------------------------------------------------------------------------

fn basic_origin(dir: &Path) -> anyhow::Result<Registry> {
    Registry::start_with(
        dir,
        RegistryAuth::Basic {
            user: PULLER.into(),
            password: PULLER_PASSWORD.into(),
        },
    )
}

fn push_creds(user: &str, password: &str) -> PushOptions {
    PushOptions {
        creds: Some(format!("{user}:{password}")),
        ..Default::default()
    }
}

#[test]
fn a_basic_auth_origin_pulls_with_credentials_from_the_config_file() -> anyhow::Result<()> {
    let dir = tempdir()?;
    let registry = basic_origin(dir.path())?;
    let (layout, built) = build(dir.path(), "v1", 1 << 20, 11)?;
    layout.push_with(
        "v1",
        &format!("{}/app:v1", registry.addr),
        &push_creds(PULLER, PULLER_PASSWORD),
    )?;
    // The origin really refuses anonymous pulls.
    let anonymous = http_get(&format!("{}/v2/app/manifests/v1", registry.url()), &[])?;
    assert_eq!(anonymous.status, 401);

    // Password inline.
    let alias = alias();
    let node = node_with(
        dir.path(),
        "node-inline",
        &alias,
        &registry.url(),
        &format!("username = \"{PULLER}\"\npassword = \"{PULLER_PASSWORD}\""),
    )?;
    pull_with_skopeo(&node, dir.path(), &alias, "app:v1", &built)?;
    pull_with_curl(&node, &alias, "app", "v1", &layout, &built)?;

    // Password in a file, with the trailing newline `echo` leaves.
    let password_file = dir.path().join("origin.password");
    std::fs::write(&password_file, format!("{PULLER_PASSWORD}\n"))?;
    let alias = self::alias();
    let node = node_with(
        dir.path(),
        "node-file",
        &alias,
        &registry.url(),
        &format!(
            "username = \"{PULLER}\"\npassword_file = \"{}\"",
            password_file.display()
        ),
    )?;
    pull_with_curl(&node, &alias, "app", "v1", &layout, &built)?;
    pull_with_skopeo(&node, dir.path(), &alias, "app:v1", &built)?;
    Ok(())
}

#[test]
fn a_basic_auth_origin_without_credentials_gets_a_denied_that_says_so() -> anyhow::Result<()> {
    let dir = tempdir()?;
    let registry = basic_origin(dir.path())?;
    let (layout, built) = build(dir.path(), "v1", 10_000, 12)?;
    layout.push_with(
        "v1",
        &format!("{}/app:v1", registry.addr),
        &push_creds(PULLER, PULLER_PASSWORD),
    )?;
    let alias = alias();
    let node = node_with(dir.path(), "node", &alias, &registry.url(), "")?;
    // Twice: the answer must not change once the node has seen the challenge.
    for _ in 0..2 {
        let r = manifest_refusal(&node, &alias, "app", "v1")?;
        assert_eq!((r.status, r.code.as_str()), (403, "DENIED"), "{r:?}");
        assert!(
            r.message.contains("credentials") && r.message.contains("none are configured"),
            "{r:?}"
        );
        assert!(r.message.contains(&alias), "names the upstream: {r:?}");
    }
    let err = pull_with_skopeo(&node, dir.path(), &alias, "app:v1", &built)
        .expect_err("a pull without credentials must fail");
    let text = format!("{err:#}");
    assert!(text.contains("credentials"), "{text}");
    assert_empty(&node)?;
    Ok(())
}

#[test]
fn a_basic_auth_origin_refuses_wrong_credentials_clearly() -> anyhow::Result<()> {
    let dir = tempdir()?;
    let registry = basic_origin(dir.path())?;
    let (layout, built) = build(dir.path(), "v1", 10_000, 13)?;
    layout.push_with(
        "v1",
        &format!("{}/app:v1", registry.addr),
        &push_creds(PULLER, PULLER_PASSWORD),
    )?;
    let alias = alias();
    let node = node_with(
        dir.path(),
        "node",
        &alias,
        &registry.url(),
        &format!("username = \"{PULLER}\"\npassword = \"not-the-password\""),
    )?;
    // The first answer (credentials sent after the challenge) and later ones (the
    // refused credentials sent straight away) say the same thing.
    for _ in 0..2 {
        let r = manifest_refusal(&node, &alias, "app", "v1")?;
        assert_eq!((r.status, r.code.as_str()), (403, "DENIED"), "{r:?}");
        assert!(r.message.contains("refused the basic credentials"), "{r:?}");
        assert!(r.message.contains(PULLER), "names the account: {r:?}");
        assert!(
            !r.message.contains("not-the-password"),
            "the password never appears: {r:?}"
        );
    }
    let err = pull_with_skopeo(&node, dir.path(), &alias, "app:v1", &built)
        .expect_err("a pull with wrong credentials must fail");
    let text = format!("{err:#}");
    assert!(text.contains("refused the basic credentials"), "{text}");
    assert!(
        !node.log().contains("not-the-password"),
        "the password is not logged"
    );
    assert_empty(&node)?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Token flow
// ---------------------------------------------------------------------------------

const SERVICE: &str = "shoal-test-registry";
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

fn token_server(dir: &Path) -> anyhow::Result<TokenServer> {
    TokenServer::start(
        dir,
        TokenServerConfig {
            issuer: "shoal-test-issuer".into(),
            service: SERVICE.into(),
            users: vec![
                TokenUser::new(PUSHER, PUSHER_PASSWORD, &["pull", "push"]),
                TokenUser::new(PULLER, PULLER_PASSWORD, &["pull"]),
            ],
            lifetime: TOKEN_LIFETIME,
        },
    )
}

fn token_origin(dir: &Path, tokens: &TokenServer) -> anyhow::Result<Registry> {
    Registry::start_opts(
        dir,
        RegistryOptions {
            auth: RegistryAuth::Token {
                realm: tokens.realm(),
                service: tokens.service().into(),
                issuer: tokens.issuer().into(),
                rootcertbundle: tokens.rootcertbundle().to_owned(),
            },
            tls: None,
        },
    )
}

#[test]
fn a_token_origin_pulls_with_one_token_per_repository_while_it_lasts() -> anyhow::Result<()> {
    let dir = tempdir()?;
    let tokens = token_server(dir.path())?;
    let registry = token_origin(dir.path(), &tokens)?;
    // Three tags of one repository (each with its own blobs) and another repository,
    // pushed with a token skopeo gets itself.
    let mut images = Vec::new();
    for (i, tag) in ["v1", "v2", "v3"].into_iter().enumerate() {
        let (layout, built) = build(dir.path(), tag, 300_000 + i * 1000, 20 + i as u64)?;
        layout.push_with(
            tag,
            &format!("{}/app:{tag}", registry.addr),
            &push_creds(PUSHER, PUSHER_PASSWORD),
        )?;
        images.push((tag, layout, built));
    }
    let (other_layout, other) = build(dir.path(), "v1", 200_000, 30)?;
    other_layout.push_with(
        "v1",
        &format!("{}/other:v1", registry.addr),
        &push_creds(PUSHER, PUSHER_PASSWORD),
    )?;
    assert!(
        !tokens.issued_to(PUSHER).is_empty(),
        "the push went through the token flow: {:?}",
        tokens.requests()
    );
    let anonymous = http_get(&format!("{}/v2/app/manifests/v1", registry.url()), &[])?;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer") && h.contains(&tokens.realm())),
        "{:?}",
        anonymous.headers
    );

    let alias = alias();
    let node = node_with(
        dir.path(),
        "node",
        &alias,
        &registry.url(),
        &format!("username = \"{PULLER}\"\npassword = \"{PULLER_PASSWORD}\""),
    )?;
    // Every tag is new to the node, so every pull asks the origin for a manifest and
    // blobs; all of it with the one token.
    let (_, layout, built) = &images[0];
    pull_with_skopeo(&node, dir.path(), &alias, "app:v1", built)?;
    pull_with_curl(&node, &alias, "app", "v1", layout, built)?;
    for (tag, layout, built) in &images[1..] {
        pull_with_curl(&node, &alias, "app", tag, layout, built)?;
        pull_with_skopeo(&node, dir.path(), &alias, &format!("app:{tag}"), built)?;
    }
    let issued = tokens.issued_to(PULLER);
    assert_eq!(
        issued.len(),
        1,
        "one token for three pulls of one repository: {issued:?}"
    );
    assert_eq!(issued[0].scopes, vec!["repository:app:pull".to_owned()]);
    assert_eq!(issued[0].service.as_deref(), Some(SERVICE));

    // Another repository needs its own token.
    pull_with_curl(&node, &alias, "other", "v1", &other_layout, &other)?;
    pull_with_skopeo(&node, dir.path(), &alias, "other:v1", &other)?;
    let issued = tokens.issued_to(PULLER);
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert_eq!(issued[1].scopes, vec!["repository:other:pull".to_owned()]);

    // Back to the first repository with a tag pushed since: the node fetches its
    // manifest and blobs from the origin with the token it still holds for `app`.
    let (layout, built) = build(dir.path(), "v4", 100_000, 24)?;
    layout.push_with(
        "v4",
        &format!("{}/app:v4", registry.addr),
        &push_creds(PUSHER, PUSHER_PASSWORD),
    )?;
    pull_with_curl(&node, &alias, "app", "v4", &layout, &built)?;
    assert_eq!(tokens.issued_to(PULLER).len(), 2, "{:?}", tokens.requests());
    // Nobody was refused a token along the way.
    assert!(
        tokens.requests().iter().all(|r| r.status == 200),
        "{:?}",
        tokens.requests()
    );
    Ok(())
}

#[test]
fn a_token_origin_refuses_wrong_or_missing_node_credentials_clearly() -> anyhow::Result<()> {
    let dir = tempdir()?;
    let tokens = token_server(dir.path())?;
    let registry = token_origin(dir.path(), &tokens)?;
    let (layout, built) = build(dir.path(), "v1", 10_000, 40)?;
    layout.push_with(
        "v1",
        &format!("{}/app:v1", registry.addr),
        &push_creds(PUSHER, PUSHER_PASSWORD),
    )?;

    let wrong_alias = alias();
    let wrong = node_with(
        dir.path(),
        "node-wrong",
        &wrong_alias,
        &registry.url(),
        &format!("username = \"{PULLER}\"\npassword = \"not-the-password\""),
    )?;
    let before = tokens.requests().len();
    for _ in 0..2 {
        let r = manifest_refusal(&wrong, &wrong_alias, "app", "v1")?;
        assert_eq!((r.status, r.code.as_str()), (403, "DENIED"), "{r:?}");
        assert!(
            r.message.contains("token server refused the credentials") && r.message.contains("401"),
            "{r:?}"
        );
        assert!(r.message.contains(PULLER), "names the account: {r:?}");
        assert!(!r.message.contains("not-the-password"), "{r:?}");
    }
    let err = pull_with_skopeo(&wrong, dir.path(), &wrong_alias, "app:v1", &built)
        .expect_err("a pull with wrong credentials must fail");
    let text = format!("{err:#}");
    assert!(text.contains("token server refused"), "{text}");
    let asked: Vec<_> = tokens.requests()[before..].to_vec();
    assert!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|r| r.had_credentials && r.account.is_none() && r.status == 401),
        "the node sent its (wrong) credentials to the token server: {asked:?}"
    );
    assert!(!wrong.log().contains("not-the-password"));
    assert_empty(&wrong)?;

    let none_alias = alias();
    let none = node_with(dir.path(), "node-none", &none_alias, &registry.url(), "")?;
    let r = manifest_refusal(&none, &none_alias, "app", "v1")?;
    assert_eq!((r.status, r.code.as_str()), (403, "DENIED"), "{r:?}");
    assert!(
        r.message.contains("token server") && r.message.contains("no credentials are configured"),
        "{r:?}"
    );
    assert_empty(&none)?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// HTTPS origin
// ---------------------------------------------------------------------------------

#[test]
fn an_https_origin_is_trusted_through_ca_file_or_insecure_skip_verify() -> anyhow::Result<()> {
    let dir = tempdir()?;
    let ca = TestCa::new(dir.path(), "shoal-test-ca")?;
    let server = ca.issue_server("origin", &["IP:127.0.0.1"])?;
    let registry = Registry::start_opts(
        dir.path(),
        RegistryOptions {
            auth: RegistryAuth::None,
            tls: Some(server),
        },
    )?;
    assert!(registry.url().starts_with("https://"));
    // skopeo verifies the origin with the same CA.
    let cert_dir = dir.path().join("skopeo-certs");
    std::fs::create_dir_all(&cert_dir)?;
    std::fs::copy(&ca.ca.cert, cert_dir.join("ca.crt"))?;
    let (layout, built) = build(dir.path(), "v1", 500_000, 50)?;
    layout.push_with(
        "v1",
        &format!("{}/app:v1", registry.addr),
        &PushOptions {
            cert_dir: Some(cert_dir),
            ..Default::default()
        },
    )?;

    // ca_file: verified TLS.
    let alias = alias();
    let node = node_with(
        dir.path(),
        "node-ca",
        &alias,
        &registry.url(),
        &format!("ca_file = \"{}\"", ca.ca.cert.display()),
    )?;
    pull_with_skopeo(&node, dir.path(), &alias, "app:v1", &built)?;
    pull_with_curl(&node, &alias, "app", "v1", &layout, &built)?;
    drop(node);

    // No ca_file: the certificate is unknown, and the client is told so.
    let alias = self::alias();
    let node = node_with(dir.path(), "node-plain", &alias, &registry.url(), "")?;
    let r = manifest_refusal(&node, &alias, "app", "v1")?;
    assert_eq!(r.status, 502, "{r:?}");
    let lower = r.message.to_lowercase();
    assert!(
        lower.contains("certificate") && lower.contains(&registry.addr),
        "{r:?}"
    );
    assert!(r.message.contains("ca_file"), "says what to set: {r:?}");
    let err = pull_with_skopeo(&node, dir.path(), &alias, "app:v1", &built)
        .expect_err("a pull from an untrusted origin must fail");
    // skopeo shows the status only; the message is checked above.
    assert!(format!("{err:#}").contains("502"), "{err:#}");
    assert_empty(&node)?;
    drop(node);

    // insecure_skip_verify: no verification at all, asked for by name.
    let alias = self::alias();
    let node = node_with(
        dir.path(),
        "node-insecure",
        &alias,
        &registry.url(),
        "insecure_skip_verify = true",
    )?;
    pull_with_curl(&node, &alias, "app", "v1", &layout, &built)?;
    pull_with_skopeo(&node, dir.path(), &alias, "app:v1", &built)?;
    Ok(())
}

#[test]
fn a_ca_file_for_another_ca_does_not_make_the_origin_trusted() -> anyhow::Result<()> {
    let dir = tempdir()?;
    let ca = TestCa::new(dir.path(), "shoal-test-ca")?;
    let other = TestCa::new(dir.path(), "another-ca")?;
    let registry = Registry::start_opts(
        dir.path(),
        RegistryOptions {
            auth: RegistryAuth::None,
            tls: Some(ca.issue_server("origin", &["IP:127.0.0.1"])?),
        },
    )?;
    let alias = alias();
    let node = node_with(
        dir.path(),
        "node",
        &alias,
        &registry.url(),
        &format!("ca_file = \"{}\"", other.ca.cert.display()),
    )?;
    let r = manifest_refusal(&node, &alias, "app", "v1")?;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.message.to_lowercase().contains("certificate"), "{r:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------
// Blob requests
// ---------------------------------------------------------------------------------

#[test]
fn blob_requests_get_the_same_auth_and_tls_refusals_as_manifest_requests() -> anyhow::Result<()> {
    // Engines that already hold a manifest (or were given a digest) ask for blobs
    // directly; a refusal must be the same clear 403 / 502 then, not a 500.
    let dir = tempdir()?;
    let registry = basic_origin(dir.path())?;
    let (layout, built) = build(dir.path(), "v1", 10_000, 60)?;
    layout.push_with(
        "v1",
        &format!("{}/app:v1", registry.addr),
        &push_creds(PULLER, PULLER_PASSWORD),
    )?;
    let layer = built.blobs[1];

    let alias = alias();
    let none = node_with(dir.path(), "node-none", &alias, &registry.url(), "")?;
    let r = blob_refusal(&none, &alias, "app", &layer)?;
    assert_eq!((r.status, r.code.as_str()), (403, "DENIED"), "{r:?}");
    assert!(r.message.contains("none are configured"), "{r:?}");
    assert_empty(&none)?;

    let alias = self::alias();
    let wrong = node_with(
        dir.path(),
        "node-wrong",
        &alias,
        &registry.url(),
        &format!("username = \"{PULLER}\"\npassword = \"not-the-password\""),
    )?;
    let r = blob_refusal(&wrong, &alias, "app", &layer)?;
    assert_eq!((r.status, r.code.as_str()), (403, "DENIED"), "{r:?}");
    assert!(r.message.contains("refused the basic credentials"), "{r:?}");
    assert_empty(&wrong)?;

    let tls_dir = dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let ca = TestCa::new(&tls_dir, "shoal-test-ca")?;
    let https = Registry::start_opts(
        &tls_dir,
        RegistryOptions {
            auth: RegistryAuth::None,
            tls: Some(ca.issue_server("origin", &["IP:127.0.0.1"])?),
        },
    )?;
    let alias = self::alias();
    let untrusted = node_with(&tls_dir, "node-untrusted", &alias, &https.url(), "")?;
    let r = blob_refusal(&untrusted, &alias, "app", &layer)?;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.message.contains("certificate"), "{r:?}");
    assert_empty(&untrusted)?;
    Ok(())
}
