//! Private repositories stay private through a warm node: the origin needs credentials,
//! the node has its own, and a client gets the node's cached copy only after the origin
//! accepted the client's own credentials for that repository.

use base64::Engine as _;
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::ACCEPT_ALL;
use shoal_tests::image::{Layer, Layout, http_get, noise};
use shoal_tests::registry::{Registry, RegistryAuth, RegistryOptions};
use shoal_tests::{Node, free_port};

const USER: &str = "puller";
const PASSWORD: &str = "pull-secret-1";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn a_warm_node_serves_a_private_image_only_to_clients_the_origin_accepts() -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
    let registry = Registry::start_opts(
        dir.path(),
        RegistryOptions {
            auth: RegistryAuth::Basic {
                user: USER.into(),
                password: PASSWORD.into(),
            },
            tls: None,
        },
    )?;
    let mut layout = Layout::new(&dir.path().join("layout"))?;
    let built = layout.image(
        &[Layer::new().file("secret", noise(2 << 20, 77))],
        "amd64",
        Some("v1"),
    )?;
    layout.push_with(
        "v1",
        &format!("{}/private:v1", registry.addr),
        &shoal_tests::image::PushOptions {
            creds: Some(format!("{USER}:{PASSWORD}")),
            ..Default::default()
        },
    )?;
    let alias = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nhost = \"{alias}\"\nurl = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            registry.url()
        ),
    )?;
    let node = Node::start(
        dir.path(),
        &registry.url(),
        &["--config", &config.display().to_string()],
    )?;
    let manifest_url = format!("{}/v2/private/manifests/v1?ns={alias}", node.url());
    let blob_url = format!(
        "{}/v2/private/blobs/{}?ns={alias}",
        node.url(),
        built.blobs[1]
    );
    let accept = format!("Accept: {ACCEPT_ALL}");
    let right = basic(USER, PASSWORD);

    // Warm the node with a client the origin accepts.
    let reply = http_get(&manifest_url, &[&accept, &right])?;
    assert_eq!(reply.status, 200, "{}", node.log_tail());
    let reply = http_get(&blob_url, &[&right])?;
    assert_eq!(reply.status, 200);
    let fetches = node.stat("origin_fetches")?;

    // No credentials: 401 with a challenge, for the manifest and for the blob.
    for url in [&manifest_url, &blob_url] {
        let reply = http_get(url, &[&accept])?;
        assert_eq!(reply.status, 401, "{url}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"shoal\"")
        );
        assert!(reply.body.len() < 1000, "no content in a refusal");
        assert!(String::from_utf8_lossy(&reply.body).contains("is private"));
    }
    // Wrong credentials: refused by the origin, so by the node.
    let reply = http_get(&blob_url, &[&basic(USER, "guess")])?;
    assert_eq!(reply.status, 401);
    assert!(String::from_utf8_lossy(&reply.body).contains("refused your credentials"));

    // Right credentials: served from the store, no new fetch.
    let reply = http_get(&blob_url, &[&right])?;
    assert_eq!(reply.status, 200);
    assert_eq!(node.stat("origin_fetches")?, fetches);

    // An engine does the same: skopeo without credentials fails, with them succeeds.
    let conf = {
        let text = node.configure("podman", &["--only", &alias])?;
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, text)?;
        path
    };
    let image = format!("{alias}/private:v1");
    assert!(skopeo_copy(&conf, &image, &dir.path().join("anon"), &[]).is_err());
    // The engine logs in to the node (an auth file entry for the node's address, as
    // `podman login NODE` writes): it sends those credentials when the node asks.
    let authfile = dir.path().join("auth.json");
    let node_host = node.url().trim_start_matches("http://").to_owned();
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {node_host: {"auth":
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))}}})
        .to_string(),
    )?;
    let pulled = skopeo_copy(
        &conf,
        &image,
        &dir.path().join("authed"),
        &["--src-authfile", &authfile.display().to_string()],
    )
    .map_err(|e| anyhow::anyhow!("{e:#}\nnode log:\n{}", node.log_tail()))?;
    assert_eq!(pulled.manifest, built.manifest);
    assert_eq!(
        node.stat("origin_fetches")?,
        fetches,
        "served from the store"
    );
    Ok(())
}

#[test]
fn endpoints_that_change_the_store_answer_only_root_on_the_host() -> anyhow::Result<()> {
    let m = shoal_tests::fixture::Mirror::start(&[])?;
    // `curl` as user nobody, then as root (this test's user).
    let status = |as_nobody: bool, method: &str, path: &str| -> anyhow::Result<String> {
        let url = format!("{}{path}", m.node.url());
        let mut cmd = if as_nobody {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "nobody", "--", "curl"]);
            c
        } else {
            std::process::Command::new("curl")
        };
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
            &url,
        ]);
        let out = shoal_tests::run(&mut cmd, std::time::Duration::from_secs(30))?;
        Ok(String::from_utf8(out.stdout)?)
    };
    for (method, path) in [
        ("POST", "/_shoal/gc?dry_run=true"),
        ("POST", "/_shoal/fsck"),
        ("POST", "/_shoal/pull?image=x/y:z"),
        ("POST", "/_shoal/flat/prune"),
    ] {
        assert_eq!(
            status(true, method, path)?,
            "403",
            "{method} {path} as nobody"
        );
    }
    assert_eq!(
        status(true, "GET", "/_shoal/stats")?,
        "200",
        "read-only figures"
    );
    assert_eq!(
        status(false, "POST", "/_shoal/gc?dry_run=true")?,
        "200",
        "root"
    );
    Ok(())
}
