//! The scenarios. Each runs shoal on a fresh fleet (empty stores), then its baseline
//! on the same namespaces and links with the nodes stopped, and measures both the
//! same way: per-node completion from the moment of the order, origin egress from the
//! origin's port on the bridge, per-node link bytes from the nodes' ports.
//!
//! - `cold`: every node fetches v1, which none holds.
//! - `update`: every node holds v1 (fetched by the fleet beforehand, not measured) and
//!   fetches v2; the baseline's hosts skip the blobs v1 has, as an engine does.
//! - `churn`: `cold`, with nodes killed (SIGKILL) at set times during the fetch and
//!   started again on the same data a little later (never the node the order is
//!   issued on, see `order.rs`); the baseline's hosts are cut off on the same
//!   schedule and start their pull over.
//! - `proxy`: podman pulls v1 on every host at once through its node's mirror
//!   (configured by `shoal configure podman`), beside podman pulling from the origin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::FleetConfig;
use super::baseline::Clients;
use super::hosts::{Fleet, FleetSpec, MIRROR, Origin, stats};
use super::images::{Images, REPO, Version};
use super::net::{Net, Sample, Sampler};
use super::order::{Fetched, ISSUER, fetch_everywhere};
use super::progress::{Display, Progress};
use super::report::{Kill, NodeFigures, PhaseFigures, ScenarioFigures};

/// A scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every node fetches an image none has.
    Cold,
    /// Every node has v1 and fetches v2.
    Update,
    /// Nodes are killed and restarted during a cold fetch.
    Churn,
    /// podman pulls through each node's mirror.
    Proxy,
}

impl Scenario {
    /// Every scenario, in the order a run takes them.
    pub const ALL: [Scenario; 4] = [
        Scenario::Cold,
        Scenario::Update,
        Scenario::Churn,
        Scenario::Proxy,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Cold => "cold",
            Scenario::Update => "update",
            Scenario::Churn => "churn",
            Scenario::Proxy => "proxy",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Scenario::Cold => "every node fetches v1, which none holds, at the same moment",
            Scenario::Update => {
                "every node holds v1 and fetches v2 at the same moment; the baseline skips the blobs v1 has"
            }
            Scenario::Churn => {
                "every node fetches v1 while nodes are killed (SIGKILL) and restarted on the same data; the baseline's hosts are cut off on the same schedule and start over"
            }
            Scenario::Proxy => {
                "podman pulls v1 on every host at once through its node's mirror, beside podman pulling from the origin"
            }
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .with_context(|| format!("{s:?}: scenarios are cold, update, churn, proxy and all"))
    }
}

/// What every scenario runs on.
pub struct Ctx<'a> {
    /// The network.
    pub net: &'a Net,
    /// Its counters.
    pub sampler: &'a Arc<Sampler>,
    /// The origin registry.
    pub origin: &'a Origin,
    /// The image's versions.
    pub images: &'a Images,
    /// The `shoal` binary.
    pub shoal: &'a Path,
    /// The fleet key file.
    pub key: &'a Path,
    /// The run's work directory.
    pub work: &'a Path,
    /// The run's settings.
    pub cfg: &'a FleetConfig,
}

impl Ctx<'_> {
    fn image(&self, v: &Version) -> String {
        format!("{}/{REPO}:{}", self.origin.addr, v.tag)
    }

    /// A fleet with empty stores in `work/<name>`, meshed as far as it gets in 60 s.
    fn fleet(&self, name: &str) -> anyhow::Result<(Fleet, PathBuf)> {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir)?;
        eprintln!("{name}: starting {} nodes...", self.net.nodes.len());
        let fleet = Fleet::start(
            self.net,
            &FleetSpec {
                shoal: self.shoal,
                dir: &dir,
                key: self.key,
                origin: self.origin,
                bootstrap: self.cfg.bootstrap,
            },
        )?;
        Ok((fleet, dir))
    }

    fn mesh(&self, fleet: &Fleet, name: &str) -> anyhow::Result<Vec<u64>> {
        let want = fleet.len() - 1;
        let started = Instant::now();
        let peers = fleet.wait_meshed(want, Duration::from_secs(60))?;
        if peers.iter().all(|&p| p as usize >= want) {
            eprintln!(
                "{name}: every node verified its {want} peers in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        } else {
            eprintln!(
                "{name}: the fleet did not mesh fully within 60 s; verified peers per node: {peers:?}"
            );
        }
        Ok(peers)
    }
}

/// Runs `scenario`.
pub fn run(ctx: &Ctx, scenario: Scenario) -> anyhow::Result<ScenarioFigures> {
    let name = scenario.name();
    let images = ctx.images;
    let n = ctx.net.nodes.len();
    let (version, had) = match scenario {
        Scenario::Update => (&images.v2, Some(&images.v1)),
        _ => (&images.v1, None),
    };
    let bytes_needed = had.map_or(version.bytes(), |h| version.bytes_after(h));
    let node_rate = ctx.cfg.node_rate.bytes_per_sec();
    let origin_rate = ctx.cfg.origin_rate.bytes_per_sec();
    let bound_s = bytes_needed as f64 / node_rate.min(origin_rate);
    let baseline_bound_s =
        (bytes_needed as f64 / node_rate).max(n as f64 * bytes_needed as f64 / origin_rate);
    let kills = match scenario {
        Scenario::Churn => churn_schedule(
            n,
            ctx.cfg.churn_kills,
            bound_s,
            ctx.cfg.churn_down.as_secs_f64(),
            ctx.cfg.seed,
        ),
        _ => Vec::new(),
    };
    eprintln!(
        "== {name}: {} ({:.1} MB per host; bound {:.1} s, baseline bound {:.1} s)",
        scenario.description(),
        bytes_needed as f64 / 1e6,
        bound_s,
        baseline_bound_s
    );

    let (fleet, dir) = ctx.fleet(name)?;
    let mut mesh_peers = ctx.mesh(&fleet, name)?;
    if let Some(had) = had {
        eprintln!(
            "{name}: every node fetches {} first (not measured)...",
            had.tag
        );
        let progress = Progress::new(n);
        let show = Display::start(
            format!("{name}/setup"),
            progress.clone(),
            ctx.sampler.clone(),
        );
        fetch_everywhere(&fleet, &ctx.image(had), &progress, Instant::now())?;
        drop(show);
        fleet.wait_ingested(Duration::from_secs(600))?;
        mesh_peers = ctx.mesh(&fleet, name)?;
    }
    let image = ctx.image(version);
    let shoal = match scenario {
        Scenario::Proxy => {
            let conf = dir.join("registries-shoal.conf");
            std::fs::write(&conf, shoal_registries_conf(ctx)?)?;
            let before = sources_now(&fleet)?;
            let window = Window::open(ctx, &format!("{name}/shoal"), n);
            let fetched = podman_everywhere(ctx, &conf, &image, &dir.join("p"), &window)?;
            let sources = final_sources(&fleet, &BTreeMap::new(), &before)?;
            let figures = window.close(ctx, "podman via shoal", &fetched, Some(sources));
            remove_podman_storage(&dir.join("p"));
            figures
        }
        _ => {
            let before = sources_now(&fleet)?;
            let window = Window::open(ctx, &format!("{name}/shoal"), n);
            let polled = Mutex::new(BTreeMap::new());
            let stop = AtomicBool::new(false);
            let fetched = std::thread::scope(|scope| {
                let poller = scope.spawn(|| poll_sources(&fleet, &polled, &stop));
                let churn = scope.spawn(|| {
                    run_kills(
                        &kills,
                        window.start,
                        &window.progress,
                        |i| {
                            fleet.kill(i);
                            Ok(())
                        },
                        |i| fleet.restart(i),
                    )
                });
                let fetched = fetch_everywhere(&fleet, &image, &window.progress, window.start);
                let churned = churn
                    .join()
                    .map_err(|_| anyhow::anyhow!("the churn thread panicked"));
                stop.store(true, Ordering::Relaxed);
                let _ = poller.join();
                churned??;
                fetched
            })?;
            check_bytes(&fetched, version)?;
            let polled = polled.into_inner().unwrap_or_else(|e| e.into_inner());
            let sources = final_sources(&fleet, &polled, &before)?;
            window.close(ctx, "shoal seed", &fetched, Some(sources))
        }
    };
    drop(fleet);
    // The stores go; the logs stay with the work directory.
    for host in &ctx.net.nodes {
        let _ = std::fs::remove_dir_all(dir.join(&host.port));
    }

    let baseline = match scenario {
        Scenario::Proxy => {
            let conf = ctx.work.join("registries-origin.conf");
            std::fs::write(
                &conf,
                format!(
                    "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                    ctx.origin.addr
                ),
            )?;
            let window = Window::open(ctx, &format!("{name}/baseline"), n);
            let fetched =
                podman_everywhere(ctx, &conf, &image, &ctx.work.join("p-origin"), &window)?;
            let figures = window.close(ctx, "podman", &fetched, None);
            remove_podman_storage(&ctx.work.join("p-origin"));
            figures
        }
        _ => {
            let clients = Clients::new(ctx.net, ctx.origin.addr);
            let window = Window::open(ctx, &format!("{name}/baseline"), n);
            let fetched = std::thread::scope(|scope| {
                let churn = scope.spawn(|| {
                    run_kills(
                        &kills,
                        window.start,
                        &window.progress,
                        |i| {
                            clients.kill(i);
                            Ok(())
                        },
                        |i| {
                            clients.restart(i);
                            Ok(())
                        },
                    )
                });
                let fetched = clients.pull_everywhere(version, had, &window.progress, window.start);
                churn
                    .join()
                    .map_err(|_| anyhow::anyhow!("the churn thread panicked"))??;
                fetched
            })?;
            let sources = (0..n)
                .map(|i| Sources {
                    from_origin: clients.received(i),
                    ..Sources::default()
                })
                .collect();
            window.close(ctx, "origin client", &fetched, Some(sources))
        }
    };

    let figures = ScenarioFigures {
        name: name.to_owned(),
        description: scenario.description().to_owned(),
        image_tag: version.tag.clone(),
        bytes_needed,
        bound_s,
        baseline_bound_s,
        mesh_peers,
        shoal_over_bound: shoal.time_to_all_s / bound_s,
        baseline_over_bound: baseline.time_to_all_s / bound_s,
        speedup: baseline.time_to_all_s / shoal.time_to_all_s,
        shoal_origin_over_image: shoal.origin_link_bytes as f64 / bytes_needed as f64,
        baseline_origin_over_image: baseline.origin_link_bytes as f64 / bytes_needed as f64,
        shoal,
        baseline,
        kills,
    };
    eprintln!(
        "{name}: shoal {:.1} s ({:.2}x bound, origin sent {:.2}x the image), baseline {:.1} s ({:.2}x bound, origin {:.2}x), bound {:.1} s",
        figures.shoal.time_to_all_s,
        figures.shoal_over_bound,
        figures.shoal_origin_over_image,
        figures.baseline.time_to_all_s,
        figures.baseline_over_bound,
        figures.baseline_origin_over_image,
        figures.bound_s
    );
    Ok(figures)
}

/// Every node reported holding as many blob bytes as the image needs.
fn check_bytes(fetched: &[Fetched], version: &Version) -> anyhow::Result<()> {
    let want: u64 = version.blobs.iter().map(|b| b.1).sum();
    for (i, f) in fetched.iter().enumerate() {
        if f.bytes != want {
            bail!(
                "node {i} reported {} bytes of blobs for {}, not {want}",
                f.bytes,
                version.tag
            );
        }
    }
    Ok(())
}

/// A measured phase: its clock, its progress line, the counters at its start.
struct Window {
    start: Instant,
    base: Option<Sample>,
    cpu: Option<CpuTimes>,
    progress: Arc<Progress>,
    display: Display,
}

impl Window {
    fn open(ctx: &Ctx, label: &str, n: usize) -> Window {
        let progress = Progress::new(n);
        let display = Display::start(label.to_owned(), progress.clone(), ctx.sampler.clone());
        Window {
            cpu: CpuTimes::now(),
            base: ctx.sampler.latest(),
            start: Instant::now(),
            progress,
            display,
        }
    }

    /// The phase's figures, once every node is done.
    fn close(
        self,
        ctx: &Ctx,
        client: &str,
        fetched: &[Fetched],
        sources: Option<Vec<Sources>>,
    ) -> PhaseFigures {
        let cpu_busy = match (self.cpu, CpuTimes::now()) {
            (Some(before), Some(after)) => after.busy_since(&before),
            _ => None,
        };
        // Let the counters catch the last frames.
        std::thread::sleep(Duration::from_millis(500));
        drop(self.display);
        let samples = ctx.sampler.since(self.start);
        let base = self.base.or_else(|| samples.first().cloned());
        let last = samples.last().cloned().or_else(|| base.clone());
        let (Some(base), Some(last)) = (base, last) else {
            return PhaseFigures::default();
        };
        let origin_series = thin(
            samples
                .iter()
                .map(|s| {
                    [
                        s.at.saturating_duration_since(self.start).as_secs_f64(),
                        s.origin.sent.saturating_sub(base.origin.sent) as f64,
                    ]
                })
                .collect(),
            600,
        );
        let nodes: Vec<NodeFigures> = fetched
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let s = sources
                    .as_ref()
                    .and_then(|s| s.get(i))
                    .cloned()
                    .unwrap_or_default();
                NodeFigures {
                    node: i,
                    seconds: f.seconds,
                    attempts: f.attempts,
                    bytes_from_origin: s.from_origin,
                    bytes_from_peers: s.from_peers,
                    bytes_from_deltas: s.delta,
                    bytes_to_peers: s.to_peers,
                    link_received_bytes: last.nodes[i]
                        .received
                        .saturating_sub(base.nodes[i].received),
                    link_sent_bytes: last.nodes[i].sent.saturating_sub(base.nodes[i].sent),
                }
            })
            .collect();
        PhaseFigures {
            client: client.to_owned(),
            time_to_all_s: fetched.iter().map(|f| f.seconds).fold(0.0, f64::max),
            origin_link_bytes: last.origin.sent.saturating_sub(base.origin.sent),
            origin_payload_bytes: sources
                .as_ref()
                .map(|s| s.iter().map(|x| x.from_origin).sum()),
            origin_series,
            nodes,
            cpu_busy,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// At most `max` points of `series`, evenly picked, the last kept.
fn thin(series: Vec<[f64; 2]>, max: usize) -> Vec<[f64; 2]> {
    if series.len() <= max {
        return series;
    }
    let step = series.len().div_ceil(max);
    let last = series.last().copied();
    let mut out: Vec<[f64; 2]> = series.into_iter().step_by(step).collect();
    if let Some(l) = last
        && out.last() != Some(&l)
    {
        out.push(l);
    }
    out
}

/// Where a node's bytes came from, as it counted them.
#[derive(Clone, Debug, Default)]
struct Sources {
    from_origin: u64,
    from_peers: u64,
    /// `bytes_delta`: absent from nodes that do not make deltas yet.
    delta: Option<u64>,
    to_peers: u64,
}

impl Sources {
    fn of(stats: &serde_json::Value) -> Sources {
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        Sources {
            from_origin: n("bytes_from_origin"),
            from_peers: n("bytes_from_peers"),
            delta: stats["bytes_delta"].as_u64(),
            to_peers: n("bytes_to_peers"),
        }
    }

    /// What was counted beyond `o`.
    fn since(&self, o: &Sources) -> Sources {
        Sources {
            from_origin: self.from_origin.saturating_sub(o.from_origin),
            from_peers: self.from_peers.saturating_sub(o.from_peers),
            to_peers: self.to_peers.saturating_sub(o.to_peers),
            delta: self.delta.map(|d| d.saturating_sub(o.delta.unwrap_or(0))),
        }
    }

    fn add(&mut self, o: &Sources) {
        self.from_origin += o.from_origin;
        self.from_peers += o.from_peers;
        self.to_peers += o.to_peers;
        self.delta = match (self.delta, o.delta) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
    }
}

/// Each node's counters, by node and generation (its counters restart with it).
type Polled = BTreeMap<(usize, u64), Sources>;

/// Reads every running node's counters each second until `stop`, keeping the last
/// reading of each generation: a node killed between readings loses at most a
/// second's worth.
fn poll_sources(fleet: &Fleet, polled: &Mutex<Polled>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for i in 0..fleet.len() {
            let (generation, down) = fleet.lives.get(i);
            if down {
                continue;
            }
            if let Ok(s) = stats(&fleet.ns(i))
                && fleet.lives.get(i) == (generation, false)
            {
                polled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((i, generation), Sources::of(&s));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Each node's counters now (before a phase).
fn sources_now(fleet: &Fleet) -> anyhow::Result<Vec<Sources>> {
    (0..fleet.len())
        .map(|i| Ok(Sources::of(&stats(&fleet.ns(i))?)))
        .collect()
}

/// What each node counted since `before`: its counters now, plus what its earlier
/// generations counted (a restart zeroes them), less what its first counted before.
fn final_sources(
    fleet: &Fleet,
    polled: &Polled,
    before: &[Sources],
) -> anyhow::Result<Vec<Sources>> {
    (0..fleet.len())
        .map(|i| {
            let (generation, _) = fleet.lives.get(i);
            let mut total = Sources::of(&stats(&fleet.ns(i))?);
            for ((node, g), s) in polled {
                if *node == i && *g < generation {
                    total.add(s);
                }
            }
            Ok(total.since(&before[i]))
        })
        .collect()
}

/// The churn schedule: `kills` kills of random nodes (seeded) spread over 10–60% of
/// the bound, each node down for `down_s`, no node killed again while down, and the
/// node orders are issued on never killed (the bench follows the order through it).
fn churn_schedule(n: usize, kills: usize, bound_s: f64, down_s: f64, seed: u64) -> Vec<Kill> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out: Vec<Kill> = Vec::new();
    for k in 0..kills {
        let at_s = bound_s * (0.1 + 0.5 * (k as f64 + 0.5) / kills.max(1) as f64);
        // A node still down (with a margin for its restart) is not picked again.
        let free: Vec<usize> = (0..n)
            .filter(|&i| i != ISSUER)
            .filter(|&i| {
                !out.iter()
                    .any(|o| o.node == i && at_s < o.at_s + o.down_s + 5.0)
            })
            .collect();
        if free.is_empty() {
            break;
        }
        let node = free[(next() % free.len() as u64) as usize];
        out.push(Kill { node, at_s, down_s });
    }
    out
}

/// Carries out `kills` from `start`: each at its time, `kill`, then `restart` after its
/// down time. Returns once every node killed runs again.
fn run_kills(
    kills: &[Kill],
    start: Instant,
    progress: &Progress,
    kill: impl Fn(usize) -> anyhow::Result<()> + Sync,
    restart: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = kills
            .iter()
            .map(|k| {
                let (kill, restart) = (&kill, &restart);
                scope.spawn(move || -> anyhow::Result<()> {
                    let at = start + Duration::from_secs_f64(k.at_s);
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    kill(k.node)?;
                    progress.note(format!("killed n{} at {:.1} s", k.node, k.at_s));
                    std::thread::sleep(Duration::from_secs_f64(k.down_s));
                    restart(k.node)
                        .with_context(|| format!("restarting node {} after its kill", k.node))?;
                    progress.note(format!("n{} back", k.node));
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a kill thread panicked"))??;
        }
        Ok(())
    })
}

/// The registries.conf `shoal configure podman` prints for the origin's name, which
/// every node serves at the same address inside its own namespace.
fn shoal_registries_conf(ctx: &Ctx) -> anyhow::Result<String> {
    let origin = ctx.origin.url();
    let out = shoal_tests::run(
        Command::new(ctx.shoal).args([
            "configure",
            "podman",
            "--node",
            &format!("http://{MIRROR}"),
            "--upstream",
            &origin,
            "--registry",
            &format!("{}={origin}", ctx.origin.addr),
            "--only",
            &ctx.origin.addr.to_string(),
        ]),
        Duration::from_secs(20),
    )?;
    Ok(String::from_utf8(out.stdout)?)
}

/// podman pulls `image` on every host at once, reading `conf`, storing under
/// `storage/nI` (vfs). Per host, when its pull ended.
fn podman_everywhere(
    ctx: &Ctx,
    conf: &Path,
    image: &str,
    storage: &Path,
    window: &Window,
) -> anyhow::Result<Vec<Fetched>> {
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = ctx
            .net
            .nodes
            .iter()
            .enumerate()
            .map(|(i, host)| {
                scope.spawn(move || -> anyhow::Result<Fetched> {
                    // podman refuses a runroot path over 50 characters: keep it short.
                    let dir = storage.join(format!("n{i}"));
                    std::fs::create_dir_all(dir.join("r"))?;
                    let mut cmd = host.command("podman");
                    cmd.env("CONTAINERS_REGISTRIES_CONF", conf)
                        .arg("--storage-driver=vfs")
                        .arg("--root")
                        .arg(dir.join("s"))
                        .arg("--runroot")
                        .arg(dir.join("r"))
                        .args(["pull", "-q", image]);
                    let out =
                        shoal_tests::process::run_unchecked(&mut cmd, Duration::from_secs(1800))?;
                    if !out.status.success() {
                        bail!(
                            "podman pull {image} on host {i} failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    window.progress.finish(i);
                    Ok(Fetched {
                        seconds: window.start.elapsed().as_secs_f64(),
                        attempts: 1,
                        bytes: 0,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a podman thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    });
    if results.is_err() {
        remove_podman_storage(storage);
    }
    results
}

/// Removes what podman stored (after the phase's figures are taken: many small files).
fn remove_podman_storage(storage: &Path) {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(storage);
    eprintln!(
        "removed podman's storage in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The machine's CPU time so far, from the first line of `/proc/stat` (in ticks).
#[derive(Clone, Copy, Debug)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        CpuTimes::parse(stat.lines().next()?)
    }

    /// `cpu  user nice system idle iowait irq softirq steal ...`: idle and iowait are
    /// idle time, the rest busy (guest time is already within user).
    fn parse(line: &str) -> Option<CpuTimes> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if ticks.len() < 5 {
            return None;
        }
        let total: u64 = ticks.iter().sum();
        let idle = ticks[3] + ticks[4];
        Some(CpuTimes {
            busy: total - idle,
            total,
        })
    }

    /// The busy share of the CPU time between `before` and now.
    fn busy_since(&self, before: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        (total > 0).then(|| self.busy.saturating_sub(before.busy) as f64 / total as f64)
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::CpuTimes;

    #[test]
    fn busy_share_counts_idle_and_iowait_as_idle() {
        let a = CpuTimes::parse("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        let b = CpuTimes::parse("cpu  250 0 100 850 50 0 0 0 0 0").unwrap();
        assert_eq!(b.busy_since(&a), Some(0.8));
        assert!(CpuTimes::parse("cpu0 1 2 3 4 5").is_none());
        assert!(CpuTimes::parse("cpu  1 2").is_none());
    }
}
