//! README.md's "Point an engine at it" steps, run as written for each engine (see
//! `shoal_tests::readme`): the node runs from `/etc/shoal/shoal.toml` (under a test
//! root), the README's configure step writes the engine's configuration, and the
//! README's pull step pulls the example image through the node.

use std::path::Path;

use shoal_protocol::Digest;
use shoal_tests::containerd::Containerd;
use shoal_tests::dockerd::{Dockerd, NetNs};
use shoal_tests::engines::Podman;
use shoal_tests::fixture::ACCEPT_ALL;
use shoal_tests::image::{Layer, Layout, http_get, noise};
use shoal_tests::readme::{EXAMPLE_REGISTRY, Steps};
use shoal_tests::{Node, Registry, free_port};

/// An origin with `app:v1` (and `team/app:v1`), a node configured by
/// `ROOT/etc/shoal/shoal.toml` naming the origin `ALIAS` (an address where nothing
/// listens), and the digest of `app:v1`'s manifest.
struct Setup {
    node: Node,
    registry: Registry,
    alias: String,
    manifest: Digest,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start(listen_ip: &str) -> anyhow::Result<Self> {
        shoal_tests::require_root()?;
        let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
        let registry = Registry::start(dir.path())?;
        let mut layout = Layout::new(&dir.path().join("layout"))?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let built = layout.image(
            &[Layer::new()
                .file("etc/os-release", "ID=readme\n")
                .file("bin/app", noise(2 << 20, 5))],
            arch,
            Some("v1"),
        )?;
        for repo in ["app", "team/app"] {
            layout.push("v1", &format!("{}/{repo}:v1", registry.addr), false, false)?;
        }
        let alias = format!("127.0.0.1:{}", free_port());
        let listen = format!("{listen_ip}:{}", free_port());
        let etc = dir.path().join("root/etc/shoal");
        std::fs::create_dir_all(&etc)?;
        let config = etc.join("shoal.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\nupstream = \"{origin}\"\n\n[[upstreams]]\nhost = \"{alias}\"\nurl = \"{origin}\"\n",
                origin = registry.url()
            ),
        )?;
        let node = Node::start_on(
            dir.path(),
            "node",
            &listen,
            &registry.url(),
            &["--config", &config.display().to_string()],
        )?;
        Ok(Setup {
            node,
            registry,
            alias,
            manifest: built.manifest,
            dir,
        })
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn steps(&self) -> anyhow::Result<Steps> {
        Ok(Steps::new(&self.root())?.replace(EXAMPLE_REGISTRY, &self.alias))
    }

    fn manifests_served(&self) -> anyhow::Result<u64> {
        self.node.stat("manifests_served")
    }
}

/// The digest the origin gives `repo:v1`.
fn origin_digest(registry: &Registry, repo: &str) -> anyhow::Result<Digest> {
    let reply = http_get(
        &format!("{}/v2/{repo}/manifests/v1", registry.url()),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    anyhow::ensure!(reply.status == 200, "origin answered {}", reply.status);
    Ok(Digest::of(&reply.body))
}

fn podman_pulls_with(s: &Setup, conf: &Path, steps: &Steps) -> anyhow::Result<()> {
    let podman = Podman::new(&s.dir.path().join("podman"), conf);
    let steps = Steps {
        root: steps.root.clone(),
        replace: steps.replace.clone(),
        preamble: format!("{}{}\n", steps.preamble, podman.shell_function()),
    };
    let before = s.manifests_served()?;
    steps.run("podman-pull")?;
    assert_eq!(
        podman.digest(&format!("{}/app:v1", s.alias))?,
        s.manifest,
        "podman holds the origin's manifest"
    );
    assert!(
        s.manifests_served()? > before,
        "the pull went through the node"
    );
    Ok(())
}

#[test]
fn readme_podman_steps_pull_through_the_node() -> anyhow::Result<()> {
    let s = Setup::start("127.0.0.1")?;
    let steps = s.steps()?;
    steps.run("podman-configure")?;
    let conf = s.root().join("etc/containers/registries.conf");
    podman_pulls_with(&s, &conf, &steps)
}

#[test]
fn readme_crio_steps_write_a_registries_conf_that_pulls_through_the_node() -> anyhow::Result<()> {
    let s = Setup::start("127.0.0.1")?;
    let steps = s.steps()?;
    steps.run("crio-configure")?;
    // CRI-O is not packaged for Debian 12: the file it would read is checked with
    // podman, which parses it with the same library.
    let conf = s.root().join("etc/containers/registries.conf");
    podman_pulls_with(&s, &conf, &steps)?;
    let pull = steps.script("crio-pull")?;
    assert!(
        pull.contains(&format!("crictl pull {}/app:v1", s.alias)),
        "{pull}"
    );
    Ok(())
}

#[test]
fn readme_containerd_steps_pull_through_the_node() -> anyhow::Result<()> {
    let s = Setup::start("127.0.0.1")?;
    let containerd = Containerd::start(&s.dir.path().join("containerd"))?;
    let steps = s.steps()?.define(&containerd.shell_function());
    steps.run("containerd-configure")?;
    assert!(
        s.root()
            .join(format!("etc/containerd/certs.d/{}/hosts.toml", s.alias))
            .exists()
    );
    let before = s.manifests_served()?;
    steps.run("containerd-pull")?;
    assert_eq!(
        containerd.image_digest(&format!("{}/app:v1", s.alias))?,
        s.manifest
    );
    assert!(
        s.manifests_served()? > before,
        "the pull went through the node"
    );
    Ok(())
}

#[test]
fn readme_docker_steps_pull_hub_images_through_the_node() -> anyhow::Result<()> {
    let netns = NetNs::create()?;
    let s = Setup::start(&netns.host_ip.to_string())?;
    let steps = s.steps()?;
    steps.run("docker-configure")?;
    let daemon_json = std::fs::read_to_string(s.root().join("etc/docker/daemon.json"))?;
    // The README's `systemctl restart docker`: start dockerd with what it wrote.
    let dockerd = Dockerd::start(&s.dir.path().join("docker"), &netns, &daemon_json)?;
    assert_eq!(
        dockerd.daemon_json["registry-mirrors"],
        serde_json::json!([s.node.url()])
    );
    let steps = steps.define(&dockerd.shell_function());
    let before = s.manifests_served()?;
    steps.run("docker-pull")?;
    assert_eq!(
        dockerd.repo_digests("team/app:v1", "team/app")?,
        vec![origin_digest(&s.registry, "team/app")?]
    );
    assert!(
        s.manifests_served()? > before,
        "the pull went through the node"
    );
    Ok(())
}
