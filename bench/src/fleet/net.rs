//! The fleet's network: a namespace per node and one for the origin, each with one
//! veth link to a bridge in a namespace of its own (the "switch"), every link shaped
//! with `tc tbf` in both directions.
//!
//! ```text
//!   origin ns            switch ns (br0)              node ns n0..nN
//!   eth0 10.77.0.1 ──── origin ┐                  ┌── n0 ──── eth0 10.77.1.1
//!   (tbf: origin uplink)       ├─ br0 ─ ... ──────┤   (tbf on n0: node downlink,
//!   (tbf on `origin`: origin   │                  │    tbf on eth0: node uplink)
//!    downlink)                 └──────────────────┴── n1 ──── eth0 10.77.1.2
//! ```
//!
//! Nothing is added to the host's own namespace: the veths are created straight into
//! their namespaces, and the bridge lives in the switch namespace, so the host's
//! firewall never sees fleet traffic. The bench reaches into a namespace from a thread
//! that enters it ([`connect`]): a socket belongs to the namespace it was made in, so
//! the stream then works from any thread. Link counters come from the switch
//! namespace's `/proc/thread-self/net/dev` ([`Sampler`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::cleanup;

/// A link rate in bits per second, written as `tc` writes it (`100mbit`, `1gbit`,
/// `500kbit`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub u64);

impl Rate {
    /// Bytes per second.
    pub fn bytes_per_sec(self) -> f64 {
        self.0 as f64 / 8.0
    }
}

impl std::str::FromStr for Rate {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Rate> {
        let lower = s.trim().to_ascii_lowercase();
        let split = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(lower.len());
        let (num, unit) = lower.split_at(split);
        let num: f64 = num
            .parse()
            .with_context(|| format!("{s:?}: a rate is a number and a unit, like 100mbit"))?;
        let scale = match unit {
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            _ => bail!("{s:?}: the unit must be kbit, mbit or gbit"),
        };
        let bits = (num * scale).round();
        if bits.is_nan() || bits < 8000.0 {
            bail!("{s:?}: a link needs at least 8kbit");
        }
        Ok(Rate(bits as u64))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_multiple_of(1_000_000_000) {
            write!(f, "{}gbit", self.0 / 1_000_000_000)
        } else if self.0.is_multiple_of(1_000_000) {
            write!(f, "{}mbit", self.0 / 1_000_000)
        } else {
            write!(f, "{}kbit", self.0 / 1000)
        }
    }
}

/// One host of the fleet: its namespace, its address, and its port on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its address on the fleet's network.
    pub ip: Ipv4Addr,
    /// The name of the bridge's end of its link (in the switch namespace).
    pub port: String,
}

impl Host {
    /// A command run inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }
}

/// The namespaces, links and shaping of one run; all removed on drop.
pub struct Net {
    /// The switch namespace, holding the bridge and the hosts' ports.
    pub switch: String,
    /// The origin registry's host.
    pub origin: Host,
    /// The nodes' hosts, in order.
    pub nodes: Vec<Host>,
}

/// The shaping of a run's links.
#[derive(Clone, Copy, Debug)]
pub struct Shaping {
    /// Each node's uplink and downlink.
    pub node: Rate,
    /// The origin's uplink (and downlink).
    pub origin: Rate,
}

impl Net {
    /// Builds the network for `nodes` nodes. Needs root.
    pub fn create(nodes: usize, shaping: Shaping) -> anyhow::Result<Net> {
        if nodes == 0 || nodes > 250 {
            bail!("a fleet has 1 to 250 nodes");
        }
        let prefix = cleanup::run_prefix();
        let net = Net {
            switch: format!("{prefix}switch"),
            origin: Host {
                ns: format!("{prefix}origin"),
                ip: Ipv4Addr::new(10, 77, 0, 1),
                port: "origin".into(),
            },
            nodes: (0..nodes)
                .map(|i| Host {
                    ns: format!("{prefix}n{i}"),
                    ip: Ipv4Addr::new(10, 77, 1, i as u8 + 1),
                    port: format!("n{i}"),
                })
                .collect(),
        };
        // From here on, a failure drops `net`, which deletes what was made.
        ns_add(&net.switch)?;
        ip(&net.switch, &["link", "set", "lo", "up"])?;
        ip(
            &net.switch,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "forward_delay",
                "0",
                "stp_state",
                "0",
            ],
        )?;
        ip(&net.switch, &["link", "set", "br0", "up"])?;
        net.attach(&net.origin, shaping.origin, shaping.origin)?;
        for host in &net.nodes {
            net.attach(host, shaping.node, shaping.node)?;
        }
        Ok(net)
    }

    /// Makes `host`'s namespace and its link to the bridge: `up` shapes what the host
    /// sends, `down` what it receives.
    fn attach(&self, host: &Host, up: Rate, down: Rate) -> anyhow::Result<()> {
        ns_add(&host.ns)?;
        run(Command::new("ip").args([
            "link",
            "add",
            "eth0",
            "netns",
            &host.ns,
            "type",
            "veth",
            "peer",
            "name",
            &host.port,
            "netns",
            &self.switch,
        ]))?;
        ip(&host.ns, &["link", "set", "lo", "up"])?;
        ip(
            &host.ns,
            &["addr", "add", &format!("{}/16", host.ip), "dev", "eth0"],
        )?;
        ip(&host.ns, &["link", "set", "eth0", "up"])?;
        ip(&self.switch, &["link", "set", &host.port, "master", "br0"])?;
        ip(&self.switch, &["link", "set", &host.port, "up"])?;
        shape(&host.ns, "eth0", up)?;
        shape(&self.switch, &host.port, down)?;
        Ok(())
    }

    /// Every host: the origin, then the nodes.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.origin).chain(&self.nodes)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        let names: Vec<String> = self
            .hosts()
            .map(|h| h.ns.clone())
            .chain(std::iter::once(self.switch.clone()))
            .collect();
        for ns in names {
            cleanup::delete_netns(&ns);
            cleanup::untrack_netns(&ns);
        }
    }
}

fn ns_add(name: &str) -> anyhow::Result<()> {
    cleanup::track_netns(name);
    run(Command::new("ip").args(["netns", "add", name]))
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// A token bucket on `dev`'s egress: `rate`, a burst of 10 ms at that rate (at least
/// 64 KiB, so a whole GSO packet passes unsplit), and a queue of 50 ms.
fn shape(ns: &str, dev: &str, rate: Rate) -> anyhow::Result<()> {
    let burst = ((rate.bytes_per_sec() / 100.0) as u64).max(64 << 10);
    run(Command::new("tc").args([
        "-n",
        ns,
        "qdisc",
        "add",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{}bit", rate.0),
        "burst",
        &burst.to_string(),
        "latency",
        "50ms",
    ]))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    shoal_tests::run(cmd, Duration::from_secs(20)).map(|_| ())
}

/// Runs `f` on a thread that has entered namespace `ns`, and returns what it returns.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        enter(&path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in namespace {ns} panicked"))?
}

/// Moves the calling thread into the network namespace bound at `path`.
fn enter(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&file),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("enter the network namespace {}", path.display()))
}

/// A TCP connection to `addr` made inside namespace `ns`.
pub fn connect(ns: &str, addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    in_netns(ns, move || {
        let s = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connect to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}

/// Byte counters of the bridge's ports, from the switch's side: a port's `rx` is what
/// its host sent, its `tx` what its host received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortBytes {
    /// Bytes the host sent (its uplink).
    pub sent: u64,
    /// Bytes the host received (its downlink).
    pub received: u64,
}

/// Counters of every port at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// The origin's port.
    pub origin: PortBytes,
    /// The nodes' ports, in order.
    pub nodes: Vec<PortBytes>,
}

/// Reads the switch's port counters every `every` on a thread inside the switch
/// namespace, from its start until dropped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `net`'s ports.
    pub fn start(net: &Net, every: Duration) -> anyhow::Result<Sampler> {
        let path = Path::new("/run/netns").join(&net.switch);
        let ports: Vec<String> = net.nodes.iter().map(|h| h.port.clone()).collect();
        let origin = net.origin.port.clone();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let read = || -> anyhow::Result<Sample> {
                    let all = read_net_dev()?;
                    let get = |name: &String| all.get(name).copied().unwrap_or_default();
                    Ok(Sample {
                        at: Instant::now(),
                        origin: get(&origin),
                        nodes: ports.iter().map(get).collect(),
                    })
                };
                let first = enter(&path).and_then(|()| read());
                let ok = first.is_ok();
                let _ = first_tx.send(first.map(|s| samples_push(&samples, s)));
                while ok && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    if let Ok(s) = read() {
                        samples_push(&samples, s);
                    }
                }
            })
        };
        first_rx
            .recv()
            .context("the counter thread ended before its first reading")??;
        Ok(Sampler {
            samples,
            stop,
            thread: Some(thread),
        })
    }

    /// The newest reading.
    pub fn latest(&self) -> Option<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    /// Every reading taken at or after `from`.
    pub fn since(&self, from: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.at >= from)
            .cloned()
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn samples_push(samples: &Mutex<Vec<Sample>>, s: Sample) {
    samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
}

/// `/proc/thread-self/net/dev`: the counters of the namespace this thread is in.
fn read_net_dev() -> anyhow::Result<HashMap<String, PortBytes>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    let mut out = HashMap::new();
    // Two header lines, then `name: rx_bytes rx_packets ... (8 rx fields) tx_bytes ...`.
    for line in text.lines().skip(2) {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        let f: Vec<u64> = fields
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 9 {
            out.insert(
                name.trim().to_owned(),
                PortBytes {
                    sent: f[0],
                    received: f[8],
                },
            );
        }
    }
    Ok(out)
}
