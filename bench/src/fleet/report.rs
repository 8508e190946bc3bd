//! Every figure of a fleet run, as written to the JSON file (the HTML report is drawn
//! from the same structs, in `html.rs`). Byte counts are bytes, times are seconds,
//! rates are bits per second.

use serde::Serialize;

use super::images::Version;

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// What made it.
    pub tool: String,
    /// How it was run.
    pub config: Config,
    /// The two versions of the image.
    pub images: ImagesFigures,
    /// Each scenario run, in order.
    pub scenarios: Vec<ScenarioFigures>,
    /// The goals of issue 7, each with what was measured.
    pub goals: Vec<Goal>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// How the run was set up.
#[derive(Debug, Serialize)]
pub struct Config {
    /// Nodes in the fleet.
    pub nodes: usize,
    /// Each node's uplink and downlink, bits per second.
    pub node_rate_bps: u64,
    /// The origin's uplink (and downlink), bits per second.
    pub origin_rate_bps: u64,
    /// The image flag (`debian`, `synthetic:SIZE`).
    pub image: String,
    /// The scenarios asked for.
    pub scenarios: Vec<String>,
    /// Peers each node dials at start (`--bootstrap`).
    pub bootstrap: usize,
    /// Kills in the churn scenario.
    pub churn_kills: usize,
    /// How long a killed node stays down.
    pub churn_down_s: f64,
    /// The seed of the churn schedule.
    pub seed: u64,
    /// Processors the machine has.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// How links are shaped, in words.
    pub shaping: String,
}

/// Both versions.
#[derive(Debug, Serialize)]
pub struct ImagesFigures {
    /// How they were made.
    pub description: String,
    /// The first version.
    pub v1: Version,
    /// Its bytes on the wire: manifest, config and layers.
    pub v1_bytes: u64,
    /// The second version.
    pub v2: Version,
    /// Its bytes on the wire.
    pub v2_bytes: u64,
    /// What a host holding v1 fetches for v2 (its manifest and the blobs v1 lacks).
    pub v2_bytes_after_v1: u64,
}

/// One scenario: shoal, its baseline, and the bound.
#[derive(Debug, Serialize)]
pub struct ScenarioFigures {
    /// `cold`, `update`, `churn` or `proxy`.
    pub name: String,
    /// What happens in it.
    pub description: String,
    /// The tag every host fetches.
    pub image_tag: String,
    /// Bytes each host must receive: the image, or what it lacks of it.
    pub bytes_needed: u64,
    /// The lower bound: `bytes_needed` over the slower of a node's downlink and the
    /// origin's uplink.
    pub bound_s: f64,
    /// The baseline's own bound: every host's copy leaves the origin, so
    /// `nodes × bytes_needed` over the origin's uplink (or the node bound if larger).
    pub baseline_bound_s: f64,
    /// Verified peers of each node when the measured phase started.
    pub mesh_peers: Vec<u64>,
    /// With shoal.
    pub shoal: PhaseFigures,
    /// Without: every host pulling straight from the origin.
    pub baseline: PhaseFigures,
    /// shoal's time to all over the bound.
    pub shoal_over_bound: f64,
    /// The baseline's time to all over the bound.
    pub baseline_over_bound: f64,
    /// Baseline time to all over shoal's.
    pub speedup: f64,
    /// shoal's origin egress (link bytes) over `bytes_needed`.
    pub shoal_origin_over_image: f64,
    /// The baseline's origin egress (link bytes) over `bytes_needed`.
    pub baseline_origin_over_image: f64,
    /// The churn scenario's kills (empty otherwise); the baseline's hosts are killed on
    /// the same schedule.
    pub kills: Vec<Kill>,
}

/// One node killed and restarted.
#[derive(Clone, Debug, Serialize)]
pub struct Kill {
    /// Which node.
    pub node: usize,
    /// Seconds after the order.
    pub at_s: f64,
    /// How long it stays down before it is started again.
    pub down_s: f64,
}

/// One measured phase: shoal or the baseline.
#[derive(Debug, Default, Serialize)]
pub struct PhaseFigures {
    /// Who fetched: `shoal seed`, `origin client`, `podman via shoal`, `podman`.
    pub client: String,
    /// Seconds until every node held the image.
    pub time_to_all_s: f64,
    /// Per node.
    pub nodes: Vec<NodeFigures>,
    /// Bytes the origin's uplink carried during the phase (frames, headers and all).
    pub origin_link_bytes: u64,
    /// Payload the origin sent as the hosts counted it: the nodes' `bytes_from_origin`
    /// for shoal, the bytes the baseline client received; absent for podman.
    pub origin_payload_bytes: Option<u64>,
    /// `[seconds, cumulative origin link bytes]`, every ~200 ms.
    pub origin_series: Vec<[f64; 2]>,
    /// Share of the machine's CPU time that was busy during the phase (every process:
    /// nodes, registry, clients), 0 to 1, from `/proc/stat`; absent where it cannot be
    /// read. Near 1, the phase was bound by CPU, not by the links.
    pub cpu_busy: Option<f64>,
    /// The machine's CPUs, for reading `cpu_busy`.
    pub cpus: usize,
}

/// One node in one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeFigures {
    /// Node index.
    pub node: usize,
    /// Seconds from the order until it held the image.
    pub seconds: f64,
    /// Orders it was given (more than one when killed during its pull).
    pub attempts: u32,
    /// Payload bytes from the origin (shoal: the node's counter, summed over restarts).
    pub bytes_from_origin: u64,
    /// Payload bytes from peers.
    pub bytes_from_peers: u64,
    /// Bytes that arrived as deltas (the node's `bytes_delta` counter): absent from
    /// nodes that do not report it.
    pub bytes_from_deltas: Option<u64>,
    /// Payload bytes sent to peers.
    pub bytes_to_peers: u64,
    /// Bytes its downlink carried during the phase (frames, headers and all).
    pub link_received_bytes: u64,
    /// Bytes its uplink carried during the phase.
    pub link_sent_bytes: u64,
}

/// A goal and where the run stands.
#[derive(Debug, Serialize)]
pub struct Goal {
    /// The scenario it is about.
    pub scenario: String,
    /// What is measured.
    pub what: String,
    /// The goal, as a ratio.
    pub target: f64,
    /// What this run measured.
    pub measured: f64,
    /// Whether it was met in this run.
    pub met: bool,
    /// How this run differs from the goal's setting, if it does.
    pub note: String,
}

impl Report {
    /// The goals of issue 7, checked against the `cold` scenario if it ran.
    pub fn goals(config: &Config, scenarios: &[ScenarioFigures]) -> Vec<Goal> {
        let Some(cold) = scenarios.iter().find(|s| s.name == "cold") else {
            return Vec::new();
        };
        let setting = if config.nodes == 16
            && config.node_rate_bps == 100_000_000
            && config.origin_rate_bps == 100_000_000
        {
            String::new()
        } else {
            format!(
                "the goal is set for 16 nodes at 100 Mbit/s; this run has {} nodes at {} Mbit/s (origin {} Mbit/s)",
                config.nodes,
                config.node_rate_bps as f64 / 1e6,
                config.origin_rate_bps as f64 / 1e6
            )
        };
        vec![
            Goal {
                scenario: "cold".into(),
                what: "time until every node holds the image, over the lower bound".into(),
                target: 1.3,
                measured: cold.shoal_over_bound,
                met: cold.shoal_over_bound <= 1.3,
                note: setting.clone(),
            },
            Goal {
                scenario: "cold".into(),
                what: "origin egress (uplink bytes, headers included) over the image's size".into(),
                target: 1.05,
                measured: cold.shoal_origin_over_image,
                met: cold.shoal_origin_over_image <= 1.05,
                note: setting,
            },
        ]
    }
}
