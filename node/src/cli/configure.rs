//! `shoal configure ENGINE`: the exact snippet that points an engine at this node.
//!
//! Each engine names the real registry to its mirror differently: podman and CRI-O by
//! a path prefix in the mirror location (`NODE/<registry>`, a port written as
//! `host_port`), containerd by its `?ns=` parameter (hosts.toml), dockerd not at all (it
//! mirrors Docker Hub only, which reaches the node's default upstream).

use std::path::PathBuf;

use anyhow::Context;
use shoal_protocol::reference::registry_path_component;

use crate::config::{DOCKER_HUB_HOST, NodeConfig, NodeFlags, Upstream};

/// Engines `shoal configure` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// podman, skopeo, buildah: registries.conf.
    Podman,
    /// containerd and ctr: hosts.toml under certs.d (or ctr --hosts-dir).
    Containerd,
    /// dockerd: daemon.json registry-mirrors.
    Docker,
    /// CRI-O: registries.conf.
    Crio,
}

/// Flags of `shoal configure`.
#[derive(Debug, clap::Args)]
pub struct ConfigureArgs {
    /// The engine to configure.
    #[arg(value_enum)]
    engine: Engine,
    /// The node's mirror URL [default: from the config's listen address].
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// Only this registry (as engines name it, host[:port]); repeatable. Default: the
    /// node's default upstream and every configured one.
    #[arg(long = "only", value_name = "HOST")]
    only: Vec<String>,
    /// containerd: write DIR/<registry>/hosts.toml instead of printing.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
    /// The node's settings, as `shoal node` takes them.
    #[command(flatten)]
    node_flags: NodeFlags,
}

/// Prints (or writes) the snippet.
pub fn run(args: &ConfigureArgs) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.node_flags)?;
    let node = match &args.node {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    let node_url =
        url::Url::parse(&node).with_context(|| format!("--node {node:?} is not a URL"))?;
    let node_authority = match node_url.port() {
        Some(p) => format!("{}:{p}", node_url.host_str().unwrap_or_default()),
        None => node_url.host_str().unwrap_or_default().to_owned(),
    };
    let hosts: Vec<String> = if args.only.is_empty() {
        let mut h: Vec<String> = config.upstreams.keys().cloned().collect();
        if !h.contains(&config.default_upstream) {
            h.insert(0, config.default_upstream.clone());
        }
        h
    } else {
        args.only.clone()
    };
    let upstreams = hosts
        .iter()
        .map(|h| config.upstream(Some(h)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let node_insecure = node_url.scheme() == "http";
    match args.engine {
        Engine::Podman | Engine::Crio => {
            print!(
                "{}",
                registries_conf(
                    args.engine,
                    &node,
                    &node_authority,
                    node_insecure,
                    &upstreams
                )
            );
        }
        Engine::Containerd => {
            for up in &upstreams {
                let text = hosts_toml(&node, up);
                match &args.write {
                    Some(dir) => {
                        let path = dir.join(&up.host).join("hosts.toml");
                        std::fs::create_dir_all(path.parent().unwrap_or(dir))
                            .with_context(|| format!("cannot create {}", dir.display()))?;
                        std::fs::write(&path, text)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        eprintln!("wrote {}", path.display());
                    }
                    None => print!("{text}"),
                }
            }
        }
        Engine::Docker => {
            if config.default_upstream != DOCKER_HUB_HOST {
                eprintln!(
                    "note: dockerd sends only Docker Hub pulls to mirrors; this node answers them from its default upstream {}",
                    config.default_upstream
                );
            }
            eprintln!("# merge into /etc/docker/daemon.json, then restart dockerd");
            let json = serde_json::json!({ "registry-mirrors": [node] });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(())
}

fn registries_conf(
    engine: Engine,
    node: &str,
    node_authority: &str,
    node_insecure: bool,
    upstreams: &[Upstream],
) -> String {
    let file = match engine {
        Engine::Crio => "/etc/containers/registries.conf (CRI-O reads it; restart crio after)",
        _ => "/etc/containers/registries.conf, or a file in registries.conf.d/",
    };
    let mut out = format!(
        "# shoal: pull through the node at {node}. Add to {file}.\n\
         # If the node is down, the engine falls back to the registry itself.\n"
    );
    for up in upstreams {
        let location = if up.host == DOCKER_HUB_HOST {
            "docker.io".to_owned()
        } else {
            up.host.clone()
        };
        out.push_str(&format!(
            "\n[[registry]]\nprefix = \"{}\"\nlocation = \"{location}\"\n",
            up.host
        ));
        if up.url.scheme() == "http" {
            out.push_str("insecure = true\n");
        }
        out.push_str(&format!(
            "\n[[registry.mirror]]\nlocation = \"{node_authority}/{}\"\n",
            registry_path_component(&up.host)
        ));
        if node_insecure {
            out.push_str("insecure = true\n");
        }
    }
    out
}

fn hosts_toml(node: &str, up: &Upstream) -> String {
    let server = if up.host == DOCKER_HUB_HOST {
        "https://registry-1.docker.io".to_owned()
    } else {
        format!("{}://{}", up.url.scheme(), up.host)
    };
    format!(
        "# shoal: <containerd certs.d>/{host}/hosts.toml (ctr: --hosts-dir DIR, file DIR/{host}/hosts.toml)\n\
         server = \"{server}\"\n\n\
         [host.\"{node}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        host = up.host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(host: &str, url: &str) -> Upstream {
        Upstream {
            host: host.into(),
            url: url::Url::parse(url).unwrap(),
            credentials: None,
            ca_file: None,
            insecure_skip_verify: false,
            client_auth: crate::config::ClientAuth::Origin,
        }
    }

    #[test]
    fn podman_mirror_location_carries_the_registry() {
        let text = registries_conf(
            Engine::Podman,
            "http://127.0.0.1:5050",
            "127.0.0.1:5050",
            true,
            &[up("127.0.0.1:5000", "http://127.0.0.1:5000")],
        );
        assert!(
            text.contains("location = \"127.0.0.1:5050/127.0.0.1_5000\""),
            "{text}"
        );
        assert!(text.contains("prefix = \"127.0.0.1:5000\""), "{text}");
    }

    #[test]
    fn containerd_server_is_the_registry_itself() {
        let text = hosts_toml(
            "http://127.0.0.1:5050",
            &up("docker.io", "https://registry-1.docker.io"),
        );
        assert!(
            text.contains("server = \"https://registry-1.docker.io\""),
            "{text}"
        );
        assert!(text.contains("[host.\"http://127.0.0.1:5050\"]"), "{text}");
    }
}
