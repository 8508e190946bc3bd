//! The usual setup: an origin registry, a node in front of it, and a registry name for
//! engines whose direct route goes nowhere, so a successful pull proves it went through
//! the node.

use std::path::PathBuf;

use shoal_protocol::Digest;

use crate::image::http_get;
use crate::node::Node;
use crate::process::free_port;
use crate::proxy::Proxy;
use crate::registry::Registry;

/// Origin + node + an unreachable name for the origin.
pub struct Mirror {
    /// The node (dropped first: fields drop in order).
    pub node: Node,
    /// A counting, fault-injecting proxy the node reaches the origin through, if asked for.
    pub proxy: Option<Proxy>,
    /// The origin.
    pub registry: Registry,
    /// `127.0.0.1:PORT` where nothing listens: engines pull `ALIAS/repo:tag`, the node
    /// maps it to the origin.
    pub alias: String,
    /// The test's directory, removed last.
    pub dir: tempfile::TempDir,
}

impl Mirror {
    /// Starts an anonymous origin and a node with `extra` flags.
    pub fn start(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(extra, false)
    }

    /// Like [`Mirror::start`], with the node reaching the origin through a [`Proxy`]
    /// that counts origin egress and can slow or cut it.
    pub fn start_behind_proxy(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(extra, true)
    }

    fn start_inner(extra: &[&str], with_proxy: bool) -> anyhow::Result<Self> {
        crate::process::require_root()?;
        let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
        let registry = Registry::start(dir.path())?;
        let proxy = if with_proxy {
            Some(Proxy::start(&registry.addr)?)
        } else {
            None
        };
        let upstream = proxy.as_ref().map_or_else(|| registry.url(), |p| p.url());
        let alias = format!("127.0.0.1:{}", free_port());
        let mapping = format!("{alias}={upstream}");
        let mut args = vec!["--registry", mapping.as_str()];
        args.extend_from_slice(extra);
        let node = Node::start(dir.path(), &upstream, &args)?;
        Ok(Mirror {
            node,
            proxy,
            registry,
            alias,
            dir,
        })
    }

    /// The proxy (for mirrors started with [`Mirror::start_behind_proxy`]).
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("this test's mirror was started without a proxy")
    }

    /// URL of blob `digest` of `repo` through the node, via the alias.
    pub fn node_blob_url(&self, repo: &str, digest: &Digest) -> String {
        format!(
            "{}/v2/{repo}/blobs/{digest}?ns={}",
            self.node.url(),
            self.alias
        )
    }

    /// URL of manifest `reference` of `repo` through the node, via the alias.
    pub fn node_manifest_url(&self, repo: &str, reference: &str) -> String {
        format!(
            "{}/v2/{repo}/manifests/{reference}?ns={}",
            self.node.url(),
            self.alias
        )
    }

    /// A registries.conf written by `shoal configure podman` for the alias.
    pub fn registries_conf(&self) -> anyhow::Result<PathBuf> {
        let text = self.node.configure("podman", &["--only", &self.alias])?;
        let path = self.dir.path().join("registries.conf");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The manifest digest the origin itself gives for `repo:tag` (asked with curl).
    pub fn origin_digest(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
    ) -> anyhow::Result<Digest> {
        let reply = http_get(
            &format!("{}/v2/{repo}/manifests/{reference}", self.registry.url()),
            &[&format!("Accept: {accept}")],
        )?;
        anyhow::ensure!(
            reply.status == 200,
            "origin answered {} for {repo}:{reference}",
            reply.status
        );
        Ok(Digest::of(&reply.body))
    }

    /// A fresh directory under the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Accept header listing every manifest type.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
