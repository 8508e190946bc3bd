//! The processes of a fleet: the origin registry in its namespace, and one `shoal node`
//! per node namespace, each with its own data directory, reached by the bench through
//! its mirror port inside the namespace.

use std::io::BufRead;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_node::jobs::JobLine;
use shoal_node::p2p::PeersReport;
use shoal_node::seed::report::{SeedProgress, SeedReport};
use shoal_tests::process::Daemon;

use super::cleanup;
use super::http;
use super::net::{Host, Net, connect};

/// Where every node's mirror listens, inside its namespace.
pub const MIRROR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 5050));
/// The UDP port of every node's QUIC endpoint.
pub const P2P_PORT: u16 = 7070;
/// The origin registry's port.
pub const ORIGIN_PORT: u16 = 5000;

/// A process started inside a namespace; killed when dropped, and until then known to
/// [`cleanup`] so that a signal kills it too.
pub struct NsDaemon {
    daemon: Daemon,
    pid: u32,
}

impl NsDaemon {
    /// Starts `cmd` (already wrapped by [`Host::command`]), output appended to `log`.
    pub fn spawn(name: &str, cmd: &mut std::process::Command, log: &Path) -> anyhow::Result<Self> {
        let daemon = Daemon::spawn(name, cmd, log)?;
        let pid = daemon.pid();
        cleanup::track_pid(pid);
        Ok(NsDaemon { daemon, pid })
    }

    /// Fails if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.daemon.check_alive()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        self.daemon.kill();
        cleanup::untrack_pid(self.pid);
    }
}

/// Waits until `addr` accepts connections inside `host`'s namespace.
fn wait_listening(
    host: &Host,
    addr: SocketAddr,
    daemon: &mut NsDaemon,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        daemon.check_alive()?;
        if connect(&host.ns, addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{addr} in {} did not open within {limit:?}:\n{}",
        host.ns,
        daemon.log_tail()
    )
}

/// The docker-registry origin, serving the storage the bench pushed its images into.
pub struct Origin {
    /// `IP:5000` on the fleet's network.
    pub addr: SocketAddrV4,
    _daemon: NsDaemon,
}

impl Origin {
    /// Starts the origin in its namespace, serving `storage` (a registry root).
    pub fn start(net: &Net, storage: &Path, dir: &Path) -> anyhow::Result<Origin> {
        let addr = SocketAddrV4::new(net.origin.ip, ORIGIN_PORT);
        let config = dir.join("origin.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 0.0.0.0:{ORIGIN_PORT}\n",
                storage.display()
            ),
        )?;
        let mut cmd = net.origin.command("docker-registry");
        cmd.arg("serve").arg(&config);
        let mut daemon = NsDaemon::spawn("docker-registry", &mut cmd, &dir.join("origin.log"))?;
        // Reached from the first node's namespace: the bridge works too.
        let probe = net.nodes.first().unwrap_or(&net.origin);
        wait_listening(
            probe,
            SocketAddr::V4(addr),
            &mut daemon,
            Duration::from_secs(20),
        )
        .context("the origin registry did not come up")?;
        Ok(Origin {
            addr,
            _daemon: daemon,
        })
    }

    /// `http://IP:5000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One `shoal node` process and what it needs to be started again.
pub struct FleetNode {
    /// Its host.
    pub host: Host,
    /// Its peer id (kept in its data directory: the same after a restart).
    pub peer_id: String,
    args: Vec<String>,
    log: PathBuf,
    daemon: Option<NsDaemon>,
}

impl FleetNode {
    fn launch(&mut self, shoal: &Path) -> anyhow::Result<()> {
        let mut cmd = self.host.command(shoal);
        cmd.args(&self.args).env("RUST_LOG", "info");
        let mut daemon = NsDaemon::spawn("shoal node", &mut cmd, &self.log)?;
        wait_listening(&self.host, MIRROR, &mut daemon, Duration::from_secs(60))?;
        self.daemon = Some(daemon);
        self.peer_id = peers(&self.host.ns)?.peer_id;
        Ok(())
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Whether a host runs, and how many times it was started again.
#[derive(Clone, Copy, Debug, Default)]
struct Life {
    generation: u64,
    down: bool,
}

/// The lives of a set of hosts that may be killed and started again: what a thread
/// driving a host waits on after its host was killed under it.
pub struct Lives {
    lives: Mutex<Vec<Life>>,
    changed: Condvar,
}

impl Lives {
    /// `n` hosts, all up, none restarted.
    pub fn new(n: usize) -> Lives {
        Lives {
            lives: Mutex::new(vec![Life::default(); n]),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Life>> {
        self.lives.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times host `i` has been started again, and whether it is down now.
    pub fn get(&self, i: usize) -> (u64, bool) {
        let l = self.lock()[i];
        (l.generation, l.down)
    }

    /// Host `i` is going down.
    pub fn down(&self, i: usize) {
        self.lock()[i].down = true;
    }

    /// Host `i` runs again.
    pub fn up(&self, i: usize) {
        let mut lives = self.lock();
        lives[i].generation += 1;
        lives[i].down = false;
        self.changed.notify_all();
    }

    /// Waits until host `i` runs again in a generation after `generation`.
    pub fn wait_restarted(&self, i: usize, generation: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut lives = self.lock();
        while lives[i].down || lives[i].generation <= generation {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("host {i} was not restarted within {limit:?}");
            }
            lives = self
                .changed
                .wait_timeout(lives, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

/// The nodes of one scenario, started with empty stores.
pub struct Fleet {
    nodes: Vec<Mutex<FleetNode>>,
    /// Which nodes run, and restarts.
    pub lives: Lives,
    shoal: PathBuf,
}

/// How to start a fleet.
pub struct FleetSpec<'a> {
    /// The `shoal` binary.
    pub shoal: &'a Path,
    /// Directory for the nodes' data and logs.
    pub dir: &'a Path,
    /// The fleet key file.
    pub key: &'a Path,
    /// The origin.
    pub origin: &'a Origin,
    /// Peers each node is told to dial at start.
    pub bootstrap: usize,
}

impl Fleet {
    /// Starts a node in each of `net`'s node namespaces; node `i` bootstraps to up to
    /// `spec.bootstrap` nodes started before it (node 0 first, then its predecessors).
    pub fn start(net: &Net, spec: &FleetSpec) -> anyhow::Result<Fleet> {
        let origin = spec.origin.url();
        let mut nodes = Vec::new();
        for (i, host) in net.nodes.iter().enumerate() {
            let data_dir = spec.dir.join(&host.port);
            let name = node_name(i);
            let mut args: Vec<String> = [
                "node",
                "--name",
                &name,
                "--listen",
                &MIRROR.to_string(),
                "--upstream",
                &origin,
                "--registry",
                &format!("{}={origin}", spec.origin.addr),
                "--fleet-key",
                &spec.key.display().to_string(),
                "--p2p-listen",
                &format!("{}:{P2P_PORT}", host.ip),
                "--no-mdns",
                "--data-dir",
                &data_dir.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut peers: Vec<usize> = vec![0];
            peers.extend((0..i).rev());
            peers.dedup();
            for j in peers.into_iter().filter(|&j| j < i).take(spec.bootstrap) {
                args.push("--bootstrap".into());
                args.push(format!("{}:{P2P_PORT}", net.nodes[j].ip));
            }
            let mut node = FleetNode {
                host: host.clone(),
                peer_id: String::new(),
                args,
                log: spec.dir.join(format!("{}.log", host.port)),
                daemon: None,
            };
            node.launch(spec.shoal)
                .with_context(|| format!("starting node {i}"))?;
            nodes.push(Mutex::new(node));
        }
        Ok(Fleet {
            lives: Lives::new(nodes.len()),
            nodes,
            shoal: spec.shoal.to_owned(),
        })
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> MutexGuard<'_, FleetNode> {
        self.nodes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        self.node(i).host.ns.clone()
    }

    /// Node `i`'s peer id.
    pub fn peer_id(&self, i: usize) -> String {
        self.node(i).peer_id.clone()
    }

    /// SIGKILL to node `i`: the crash a store must survive.
    pub fn kill(&self, i: usize) {
        self.lives.down(i);
        self.node(i).daemon = None;
    }

    /// Starts node `i` again with the same flags and data.
    pub fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.node(i).launch(&self.shoal)?;
        self.lives.up(i);
        Ok(())
    }

    /// Waits until every node counts `want` verified peers, or `limit` passes; returns
    /// each node's count then.
    pub fn wait_meshed(&self, want: usize, limit: Duration) -> anyhow::Result<Vec<u64>> {
        let deadline = Instant::now() + limit;
        loop {
            let counts = (0..self.len())
                .map(|i| Ok(stats(&self.ns(i))?["peers"].as_u64().unwrap_or(0)))
                .collect::<anyhow::Result<Vec<u64>>>()?;
            if counts.iter().all(|&c| c as usize >= want) || Instant::now() > deadline {
                return Ok(counts);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until no node has a layer left to ingest, so that the next measurement
    /// does not pay for the last one's.
    pub fn wait_ingested(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        for i in 0..self.len() {
            let ns = self.ns(i);
            while stats(&ns)?["ingest_pending"].as_u64().unwrap_or(0) > 0 {
                if Instant::now() > deadline {
                    bail!("node {i} still ingests after {limit:?}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }
}

/// GET `path` from the node in namespace `ns`, as JSON.
pub fn get_json(ns: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let stream = connect(ns, MIRROR, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = http::request(stream, "GET", "127.0.0.1", path, &[])?
        .into_ok_bytes(&format!("GET {path} in {ns}"))?;
    serde_json::from_slice(&body).with_context(|| format!("GET {path} in {ns}: not JSON"))
}

/// What `shoal stats --json` prints, from the node in namespace `ns`.
pub fn stats(ns: &str) -> anyhow::Result<serde_json::Value> {
    get_json(ns, "/_shoal/stats")
}

/// Node `i`'s name in its fleet (`--name`), as the HTML report labels it too.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// What `shoal peers --json` prints, from the node in namespace `ns`.
pub fn peers(ns: &str) -> anyhow::Result<PeersReport> {
    serde_json::from_value(get_json(ns, "/_shoal/peers")?)
        .with_context(|| format!("GET /_shoal/peers in {ns}: not a peers report"))
}

/// What `shoal seed IMAGE --nodes LIST --json` does: asks the node in namespace `ns`
/// to order the nodes `targets` (peer ids) to fetch `image`, calling `on_progress`
/// with each snapshot of every target, until the order's report. The issuer gives up
/// on targets after `timeout`.
pub fn seed(
    ns: &str,
    image: &str,
    targets: &[String],
    timeout: Duration,
    mut on_progress: impl FnMut(&SeedProgress),
) -> anyhow::Result<SeedReport> {
    let stream = connect(ns, MIRROR, Duration::from_secs(5))?;
    // The issuer sends a snapshot twice a second while the order runs.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let path = format!(
        "/_shoal/seed?image={}&nodes={}&timeout_secs={}",
        http::query_value(image),
        http::query_value(&targets.join(",")),
        timeout.as_secs()
    );
    let mut resp = http::request(stream, "POST", "127.0.0.1", &path, &[])?;
    if resp.status != 200 {
        let mut v = Vec::new();
        resp.body().read_to_end(&mut v)?;
        bail!(
            "seed {image}: HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&v)
        );
    }
    let mut lines = std::io::BufReader::new(resp.body());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            bail!("seed {image}: the node ended its answer before the order's report");
        }
        match serde_json::from_str::<JobLine<SeedProgress, SeedReport>>(&line)
            .with_context(|| format!("seed {image}: a line that is not a job line: {line:?}"))?
        {
            JobLine::Progress(p) => on_progress(&p),
            JobLine::Report(r) => return Ok(*r),
            JobLine::Error(e) => bail!("seed {image}: {e}"),
        }
    }
}
