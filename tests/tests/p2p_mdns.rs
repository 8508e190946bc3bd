//! Discovery with no configuration: two nodes in two network namespaces joined by one
//! veth link find each other by mDNS (no `--bootstrap`), prove the fleet key, and list
//! each other as verified peers. The namespaces have no other link, so the multicast
//! stays between them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use shoal_tests::fleet::random_key;
use shoal_tests::node::shoal_binary;
use shoal_tests::process::{Daemon, require_root, run, run_unchecked, wait_until};

/// Two namespaces and the veth between them, removed on drop.
struct Link {
    names: [String; 2],
    addrs: [String; 2],
}

impl Link {
    fn create() -> anyhow::Result<Link> {
        let pid = std::process::id();
        let link = Link {
            names: [format!("shoal-mdns-{pid}-a"), format!("shoal-mdns-{pid}-b")],
            addrs: ["10.203.77.1".into(), "10.203.77.2".into()],
        };
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            run(Command::new("ip").args(args), Duration::from_secs(20)).map(|_| ())
        };
        let veth = [
            format!("shm{}a", pid % 100_000),
            format!("shm{}b", pid % 100_000),
        ];
        for n in &link.names {
            ip(&["netns", "add", n])?;
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ])?;
        for ((dev, ns), addr) in veth.iter().zip(&link.names).zip(&link.addrs) {
            ip(&["link", "set", dev, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(link)
    }

    fn exec(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[i]]).arg(program);
        cmd
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for n in &self.names {
            // Deleting a namespace deletes the veth end inside it, and with it the pair.
            let _ = run_unchecked(
                Command::new("ip").args(["netns", "del", n]),
                Duration::from_secs(20),
            );
        }
    }
}

#[test]
fn two_nodes_on_one_link_find_each_other_by_mdns_and_verify() -> anyhow::Result<()> {
    require_root()?;
    let shoal = shoal_binary()?;
    let dir = tempfile::Builder::new().prefix("shoal-mdns-").tempdir()?;
    let key = dir.path().join("fleet.key");
    std::fs::write(&key, random_key())?;
    let link = Link::create()?;
    let mut daemons = Vec::new();
    for i in 0..2 {
        let mut cmd = link.exec(i, &shoal);
        cmd.args(["node", "--data-dir"])
            .arg(dir.path().join(format!("n{i}")))
            .args([
                "--listen",
                "127.0.0.1:5050",
                "--upstream",
                "http://127.0.0.1:9",
            ])
            .arg("--fleet-key")
            .arg(&key)
            .args(["--p2p-listen", &format!("{}:7070", link.addrs[i])])
            .env("RUST_LOG", "info,shoal_node=debug");
        let log = dir.path().join(format!("n{i}.log"));
        daemons.push((Daemon::spawn("shoal node", &mut cmd, &log)?, log));
    }
    for (i, (_, log)) in daemons.iter().enumerate() {
        let mut last = String::new();
        wait_until(
            "a peer found by mDNS and verified",
            Duration::from_secs(60),
            || {
                let out = run_unchecked(
                    link.exec(i, &shoal).args([
                        "peers",
                        "--json",
                        "--node",
                        "http://127.0.0.1:5050",
                    ]),
                    Duration::from_secs(20),
                )?;
                last = String::from_utf8_lossy(&out.stdout).into_owned();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&last) else {
                    return Ok(false);
                };
                Ok(v["peers"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p["verified"] == true)))
            },
        )
        .with_context(|| {
            format!(
                "node {i} peers: {last}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })?;
    }
    let log = std::fs::read_to_string(&daemons[0].1)?;
    assert!(
        log.contains("found a peer with mDNS") || {
            let other = std::fs::read_to_string(&daemons[1].1)?;
            other.contains("found a peer with mDNS")
        }
    );
    drop(daemons);
    Ok(())
}
