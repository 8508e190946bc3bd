//! Several nodes of one fleet on loopback: each its own process, data directory, mirror
//! port and QUIC port, joined by `--bootstrap` (each node dials every node started
//! before it), in front of one origin reached through a counting [`Proxy`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::node::Node;
use crate::process::{free_port, wait_until};
use crate::proxy::Proxy;
use crate::registry::Registry;

/// A free UDP port on loopback (bound, then released for a node to use).
pub fn free_udp_port() -> u16 {
    // As for `free_port`: binding port 0 on loopback cannot fail on a working machine.
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    s.local_addr().expect("local_addr").port()
}

/// Origin, proxy and fleet.
pub struct Fleet {
    /// The nodes, in start order (dropped first).
    pub nodes: Vec<Node>,
    /// Their QUIC addresses, `127.0.0.1:PORT`.
    pub p2p: Vec<String>,
    /// Counts what the origin sends the fleet.
    pub proxy: Proxy,
    /// The origin.
    pub registry: Registry,
    /// The name engines pull by, mapped by every node to the origin (via the proxy).
    pub alias: String,
    /// The fleet key file.
    pub key: PathBuf,
    /// The test's directory, removed last.
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// An origin and `n` nodes of one fleet; node `i` gets `extra(i)` as more flags.
    pub fn start(n: usize, extra: impl Fn(usize) -> Vec<String>) -> anyhow::Result<Fleet> {
        crate::process::require_root()?;
        let dir = tempfile::Builder::new().prefix("shoal-fleet-").tempdir()?;
        let registry = Registry::start(dir.path())?;
        let proxy = Proxy::start(&registry.addr)?;
        let key = dir.path().join("fleet.key");
        std::fs::write(&key, random_key())?;
        let mut fleet = Fleet {
            nodes: Vec::new(),
            p2p: Vec::new(),
            proxy,
            registry,
            alias: format!("127.0.0.1:{}", free_port()),
            key,
            dir,
        };
        for i in 0..n {
            let key = fleet.key.clone();
            let node = fleet.add_node(&format!("n{i}"), Some(&key), &extra(i))?;
            fleet.nodes.push(node);
        }
        Ok(fleet)
    }

    /// Starts one more node named `name` with fleet key `key` (none: no peers at all),
    /// bootstrapping to every node started so far; returns it without adding it.
    pub fn add_node(
        &mut self,
        name: &str,
        key: Option<&Path>,
        extra: &[String],
    ) -> anyhow::Result<Node> {
        self.add_node_on(name, key, extra, free_udp_port())
    }

    /// Like [`Fleet::add_node`], with its QUIC endpoint on `port` (one that nodes
    /// started before it may already name with `--bootstrap`, so that they dial it too).
    pub fn add_node_on(
        &mut self,
        name: &str,
        key: Option<&Path>,
        extra: &[String],
        port: u16,
    ) -> anyhow::Result<Node> {
        let listen = format!("127.0.0.1:{port}");
        let mapping = format!("{}={}", self.alias, self.proxy.url());
        let mut args: Vec<String> = vec!["--registry".into(), mapping, "--no-mdns".into()];
        if let Some(key) = key {
            args.push("--fleet-key".into());
            args.push(key.display().to_string());
            args.push("--p2p-listen".into());
            args.push(listen.clone());
            for peer in &self.p2p {
                args.push("--bootstrap".into());
                args.push(peer.clone());
            }
        }
        args.extend(extra.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Node::start_named(self.dir.path(), name, &self.proxy.url(), &refs)?;
        self.p2p.push(listen);
        Ok(node)
    }

    /// Waits until every node counts `n - 1` verified peers.
    pub fn wait_meshed(&self) -> anyhow::Result<()> {
        let want = self.nodes.len() - 1;
        for node in &self.nodes {
            let mut last = serde_json::Value::Null;
            wait_until(
                "a full mesh of verified peers",
                Duration::from_secs(40),
                || {
                    last = node.cli_json(&["peers"])?;
                    let verified = last["peers"]
                        .as_array()
                        .map(|a| a.iter().filter(|p| p["verified"] == true).count())
                        .unwrap_or(0);
                    Ok(verified >= want)
                },
            )
            .with_context(|| {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("--- node {i}:\n{}", n.log_tail()))
                    .collect();
                format!("peers: {last}\n{}", logs.join("\n"))
            })?;
        }
        Ok(())
    }

    /// A registries.conf pointing engines at node `i` for the alias.
    pub fn registries_conf(&self, i: usize) -> anyhow::Result<PathBuf> {
        let text = self.nodes[i].configure("podman", &["--only", &self.alias])?;
        let path = self.dir.path().join(format!("registries-{i}.conf"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// A fresh directory under the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// 32 random bytes for a fleet key.
pub fn random_key() -> Vec<u8> {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id());
    (0..32)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
