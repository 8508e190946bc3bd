//! A private `dockerd` inside a network namespace the test makes.
//!
//! dockerd sends only Docker Hub pulls to its mirrors and falls back to
//! registry-1.docker.io when a mirror fails, so it runs where nothing but the node is
//! reachable: a network namespace whose only link is a veth pair with a /30 of 10.x
//! addresses and no default route. The node listens on the host end. dockerd gets its
//! own data root, exec root, pidfile, socket and trust key path, and its own private
//! containerd (in the same namespace), so a system dockerd or containerd is never used
//! nor touched. Everything is undone on drop, also when a test fails.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_protocol::Digest;

use crate::containerd::{Containerd, PROXY_VARS, unmount_under};
use crate::node::Node;
use crate::process::{Daemon, free_port, require_root, run, run_unchecked, wait_until};
use crate::registry::Registry;

const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace with one veth link to the host and no default route.
pub struct NetNs {
    /// `ip netns` name.
    pub name: String,
    /// The veth end on the host.
    pub host_veth: String,
    /// The veth end inside the namespace.
    pub ns_veth: String,
    /// The host end's address (the node listens here).
    pub host_ip: Ipv4Addr,
    /// The namespace end's address.
    pub ns_ip: Ipv4Addr,
    /// Whether /run/netns existed (as a directory, as a mount) before this namespace.
    had_run_dir: bool,
    had_run_mount: bool,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args), Duration::from_secs(20))?;
    Ok(())
}

fn ip_output(args: &[&str]) -> anyhow::Result<String> {
    let out = run(Command::new("ip").args(args), Duration::from_secs(20))?;
    Ok(String::from_utf8(out.stdout)?)
}

fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path))
}

impl NetNs {
    /// Creates the namespace, the veth pair and their addresses (a free /30 in
    /// 10.201.0.0/16), with loopback up and IPv6 off inside.
    pub fn create() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Addresses and routes already on the host: the /30 must not overlap them.
        let taken = ip_output(&["-4", "-o", "addr"])? + &ip_output(&["-4", "route"])?;
        let subnet = (0..256u32)
            .map(|i| (pid.wrapping_mul(7).wrapping_add(n * 13 + i)) % (256 * 64))
            .map(|k| Ipv4Addr::new(10, 201, (k / 64) as u8, ((k % 64) * 4) as u8))
            .find(|net| {
                let o = net.octets();
                !(0..4).any(|h| {
                    let a = format!("10.201.{}.{}", o[2], o[3] + h);
                    taken.contains(&format!("{a}/")) || taken.contains(&format!("{a} "))
                })
            })
            .context("no free /30 in 10.201.0.0/16")?;
        let o = subnet.octets();
        let host_ip = Ipv4Addr::new(o[0], o[1], o[2], o[3] + 1);
        let ns_ip = Ipv4Addr::new(o[0], o[1], o[2], o[3] + 2);
        let tag = format!("{}{n}", pid % 100_000);
        let ns = NetNs {
            name: format!("shoal-test-{pid}-{n}"),
            host_veth: format!("shl{tag}h"),
            ns_veth: format!("shl{tag}n"),
            host_ip,
            ns_ip,
            had_run_dir: Path::new(NETNS_RUN_DIR).exists(),
            had_run_mount: is_mountpoint(NETNS_RUN_DIR),
        };
        // From here on, a failure drops `ns`, which undoes whatever was made.
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_veth,
        ])?;
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", ns.host_veth),
            "1",
        );
        ip(&["link", "set", &ns.ns_veth, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &ns.host_veth,
        ])?;
        ip(&["link", "set", &ns.host_veth, "up"])?;
        run(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, "sysctl", "-q", "-w"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                    "net.ipv6.conf.lo.disable_ipv6=1",
                ]),
            Duration::from_secs(20),
        )?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns.ns_veth,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &ns.ns_veth, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        // The namespace must have no way out but the /30 to the host.
        let routes = ip_output(&["-n", &ns.name, "route", "show", "table", "all"])?;
        if routes.lines().any(|l| l.starts_with("default")) {
            bail!("netns {} has a default route:\n{routes}", ns.name);
        }
        Ok(ns)
    }

    /// `ip netns exec NAME PROGRAM`.
    pub fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// `ip netns exec NAME PROGRAM` with the host's cgroup mounts made again first
    /// (`ip netns exec` mounts a fresh /sys for the namespace, which hides
    /// /sys/fs/cgroup; dockerd refuses to start without the devices cgroup). The mounts
    /// live in the mount namespace `ip netns exec` makes, and die with it.
    pub fn exec_with_cgroups(&self, program: &str) -> Command {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut script = String::from("set -e\n");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 4 || !(f[1] == "/sys/fs/cgroup" || f[1].starts_with("/sys/fs/cgroup/")) {
                continue;
            }
            let mp = quote(f[1]);
            script.push_str(&format!(
                "mkdir -p {mp}; mount -t {} -o {} {} {mp}\n",
                quote(f[2]),
                quote(f[3]),
                quote(f[0])
            ));
        }
        script.push_str("exec \"$0\" \"$@\"\n");
        let mut cmd = self.exec("sh");
        cmd.arg("-c").arg(script).arg(program);
        cmd
    }

    /// Process ids inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        let out = run_unchecked(
            Command::new("ip").args(["netns", "pids", &self.name]),
            Duration::from_secs(20),
        );
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Processes the test started in the namespace should be gone already; any left
        // (an engine's child) are killed by id.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        // `ip netns add` made /run/netns a (shared bind) mount if it was not one; undo
        // that when no namespace is left in it.
        if !self.had_run_mount {
            let empty = std::fs::read_dir(NETNS_RUN_DIR)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty {
                for _ in 0..4 {
                    if !is_mountpoint(NETNS_RUN_DIR) {
                        break;
                    }
                    let _ = Command::new("umount").arg(NETNS_RUN_DIR).output();
                }
                if !self.had_run_dir {
                    let _ = std::fs::remove_dir(NETNS_RUN_DIR);
                }
            }
        }
    }
}

/// The docker CLI of the installed dockerd (Debian's docker.io puts it at
/// /usr/bin/docker; another CLI earlier on PATH may be a different version).
pub fn docker_cli() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/docker");
    if debian.is_file() {
        debian
    } else {
        PathBuf::from("docker")
    }
}

/// A running private dockerd.
pub struct Dockerd {
    /// Its API socket.
    pub socket: PathBuf,
    /// Its directory.
    pub dir: PathBuf,
    /// The daemon.json it runs with.
    pub daemon_json: serde_json::Value,
    daemon: Option<Daemon>,
    containerd: Option<Containerd>,
}

impl Dockerd {
    /// Starts dockerd in `netns` with everything under `dir`. `mirrors` is what
    /// `shoal configure docker` printed (a daemon.json with `registry-mirrors`); the
    /// harness adds vfs storage, no iptables, no bridge, and its own key path.
    pub fn start(dir: &Path, netns: &NetNs, mirrors: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let mut daemon_json: serde_json::Value = serde_json::from_str(mirrors)
            .with_context(|| format!("shoal configure docker printed no JSON:\n{mirrors}"))?;
        let obj = daemon_json
            .as_object_mut()
            .context("daemon.json is an object")?;
        for (k, v) in [
            ("storage-driver", serde_json::json!("vfs")),
            ("iptables", serde_json::json!(false)),
            ("ip-forward", serde_json::json!(false)),
            ("ip-masq", serde_json::json!(false)),
            ("bridge", serde_json::json!("none")),
            ("userland-proxy", serde_json::json!(false)),
            // Else dockerd 20.10 writes /etc/docker/key.json.
            (
                "deprecated-key-path",
                serde_json::json!(dir.join("key.json")),
            ),
            ("debug", serde_json::json!(true)),
        ] {
            obj.insert(k.to_owned(), v);
        }
        let config = dir.join("daemon.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&daemon_json)?)?;

        // Its own containerd, in the same namespace, rather than the child dockerd
        // would start only if no /run/containerd/containerd.sock exists (and would
        // otherwise share with a system containerd).
        let containerd = Containerd::start_in_netns(&dir.join("containerd"), &netns.name)?;
        let socket = dir.join("docker.sock");
        let mut cmd = netns.exec_with_cgroups("dockerd");
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--containerd")
            .arg(&containerd.socket);
        let daemon = Daemon::spawn("dockerd", &mut cmd, &dir.join("dockerd.log"))?;
        let mut d = Dockerd {
            socket,
            dir,
            daemon_json,
            daemon: Some(daemon),
            containerd: Some(containerd),
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let mut version = self.docker();
        version.args(["version", "--format", "{{.Server.Version}}"]);
        let socket = self.socket.clone();
        let daemon = self.daemon.as_mut().context("dockerd is running")?;
        wait_until(
            "dockerd to answer on its socket",
            Duration::from_secs(120),
            || {
                daemon.check_alive()?;
                if !socket.exists() {
                    return Ok(false);
                }
                Ok(run_unchecked(&mut version, Duration::from_secs(20))?
                    .status
                    .success())
            },
        )
        .with_context(|| format!("dockerd log:\n{}", self.log_tail()))
    }

    /// The docker CLI against this daemon, with its own config directory.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(docker_cli());
        for var in PROXY_VARS.iter().chain(&[
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ]) {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_CONFIG", self.dir.join("cli-config"));
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        cmd
    }

    /// A shell function named `docker` that drives this daemon (for README steps).
    pub fn shell_function(&self) -> String {
        format!(
            "docker() {{ env -u DOCKER_HOST -u DOCKER_CONTEXT -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY DOCKER_CONFIG='{}' '{}' -H 'unix://{}' \"$@\"; }}",
            self.dir.join("cli-config").display(),
            docker_cli().display(),
            self.socket.display()
        )
    }

    /// `docker pull IMAGE`.
    pub fn pull(&self, image: &str) -> anyhow::Result<String> {
        let out = run(
            self.docker().args(["pull", image]),
            Duration::from_secs(300),
        )
        .with_context(|| format!("docker pull {image}\ndockerd log:\n{}", self.log_tail()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `docker image inspect` of `image`, as JSON.
    pub fn inspect(&self, image: &str) -> anyhow::Result<serde_json::Value> {
        let out = run(
            self.docker().args(["image", "inspect", image]),
            Duration::from_secs(60),
        )?;
        let mut all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            all.len() == 1,
            "docker image inspect {image} gave {} images",
            all.len()
        );
        Ok(all.remove(0))
    }

    /// The manifest digests in `image`'s RepoDigests (`repo@sha256:...`) for `repo`
    /// (images sharing a config share an image, whose RepoDigests name every repo).
    pub fn repo_digests(&self, image: &str, repo: &str) -> anyhow::Result<Vec<Digest>> {
        let info = self.inspect(image)?;
        let mut out = Vec::new();
        for v in info["RepoDigests"].as_array().context("no RepoDigests")? {
            let s = v.as_str().context("RepoDigest is a string")?;
            let (name, digest) = s
                .rsplit_once('@')
                .with_context(|| format!("RepoDigest {s} has no @"))?;
            if name == repo {
                out.push(digest.parse()?);
            }
        }
        Ok(out)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.daemon
            .as_ref()
            .map(Daemon::log_tail)
            .unwrap_or_default()
    }

    /// Stops dockerd (SIGTERM, SIGKILL after `grace`), then its containerd.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut d) = self.daemon.take()
            && d.check_alive().is_ok()
        {
            d.terminate(grace);
        }
        if let Some(mut c) = self.containerd.take() {
            c.stop(grace);
        }
        unmount_under(&self.dir);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(15));
    }
}

/// Origin + node on the host end of a veth + dockerd in the namespace behind it.
pub struct DockerMirror {
    /// dockerd (dropped first: fields drop in order).
    pub dockerd: Dockerd,
    /// The node, listening on `netns.host_ip`, default upstream the origin.
    pub node: Node,
    /// The origin.
    pub registry: Registry,
    /// dockerd's network namespace.
    pub netns: NetNs,
    /// The test's directory, removed last.
    pub dir: tempfile::TempDir,
}

impl DockerMirror {
    /// Starts it all; the node gets `extra` flags.
    pub fn start(extra: &[&str]) -> anyhow::Result<Self> {
        require_root()?;
        let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir()?;
        let netns = NetNs::create()?;
        let registry = Registry::start(dir.path())?;
        let listen = format!("{}:{}", netns.host_ip, free_port());
        let node = Node::start_on(dir.path(), "node", &listen, &registry.url(), extra)?;
        let mirrors = node.configure("docker", &[])?;
        let dockerd = Dockerd::start(&dir.path().join("docker"), &netns, &mirrors)?;
        Ok(DockerMirror {
            dockerd,
            node,
            registry,
            netns,
            dir,
        })
    }

    /// A path under the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
