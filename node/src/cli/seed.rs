//! `shoal seed IMAGE`: asks the local node to order nodes of its fleet to fetch and pin
//! an image (`POST /_shoal/seed`; the node issues the order, see [`crate::seed`]),
//! shows each node's progress on stderr while it runs, and prints a summary, or one
//! JSON document with `--json`. Exits 0 only when every chosen node holds the image;
//! otherwise it names the nodes that failed or timed out and exits 1.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::remote::{self, Common, mib};
use crate::seed::report::{NodeSeed, NodeState, SeedProgress, SeedReport};

/// `shoal seed`.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The image: [registry/]repository[:tag|@digest].
    image: String,
    /// Which nodes: "all" (this node and every verified peer), or a comma-separated
    /// list of node names or peer ids; a listed node that is not connected fails
    /// [default: all].
    #[arg(long, value_name = "all|LIST", conflicts_with = "group")]
    nodes: Option<String>,
    /// Only the nodes in this group (`[p2p] groups` or `--group` of `shoal node`).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// How long to wait for every node, e.g. 90s, 5m, 1h. A node not done by then
    /// counts as timed out (it may still finish).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    timeout: String,
    /// How long each node keeps the image pinned if no deploy pulls it through the
    /// node first, e.g. 12h, 7d; 0 for no pin.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pin_ttl: String,
    #[command(flatten)]
    common: Common,
}

/// How long the CLI waits past `--timeout` for the node's report.
const REPORT_GRACE: Duration = Duration::from_secs(60);

/// `--timeout`: a duration with a unit, more than zero.
pub fn parse_timeout(text: &str) -> anyhow::Result<Duration> {
    let d = crate::config::parse_duration(text).with_context(|| format!("--timeout {text:?}"))?;
    if d.is_zero() {
        bail!("--timeout must be more than zero");
    }
    Ok(d)
}

/// `--pin-ttl`: a duration with a unit, or 0 for no pin.
pub fn parse_pin_ttl(text: &str) -> anyhow::Result<Duration> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    crate::config::parse_duration(text).with_context(|| format!("--pin-ttl {text:?}"))
}

/// Runs `shoal seed`.
pub fn seed(args: &SeedArgs) -> anyhow::Result<ExitCode> {
    let timeout = parse_timeout(&args.timeout)?;
    let pin_ttl = parse_pin_ttl(&args.pin_ttl)?;
    let node = &args.common.node;
    let (timeout_secs, ttl_secs) = (timeout.as_secs().to_string(), pin_ttl.as_secs().to_string());
    let mut query = vec![
        ("image", args.image.as_str()),
        ("timeout_secs", timeout_secs.as_str()),
        ("pin_ttl_secs", ttl_secs.as_str()),
    ];
    if let Some(nodes) = &args.nodes {
        query.push(("nodes", nodes));
    }
    if let Some(group) = &args.group {
        query.push(("group", group));
    }
    let url = remote::url(node, "/_shoal/seed", &query)?;
    let mut view = LiveView::new();
    let report = super::runtime()?.block_on(async {
        let job = remote::job(node, url, |p: &SeedProgress| view.show(p));
        tokio::time::timeout(timeout + REPORT_GRACE, job).await
    });
    view.finish();
    let report = match report {
        Ok(r) => r.with_context(|| format!("cannot seed {}", args.image))?,
        Err(_) => bail!(
            "cannot seed {}: the node at {node} sent no report within {} s of the timeout",
            args.image,
            REPORT_GRACE.as_secs()
        ),
    };
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    match not_seeded(&report) {
        None => {
            if !args.common.json {
                println!(
                    "seeded {} on {} nodes in {:.1}s",
                    report.image,
                    report.nodes.len(),
                    report.millis as f64 / 1000.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(line) => {
            eprintln!("shoal seed: {} {line}", report.image);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// "not seeded on n2 (timed out: ...), n3 (failed: ...)", or `None` if every node
/// holds the image.
pub fn not_seeded(report: &SeedReport) -> Option<String> {
    let missing = report.not_seeded();
    if missing.is_empty() {
        return None;
    }
    let named: Vec<String> = missing
        .iter()
        .map(|n| {
            let detail = printable(&n.detail, 160);
            if detail.is_empty() {
                format!("{} ({})", n.name, n.state.label())
            } else {
                format!("{} ({}: {detail})", n.name, n.state.label())
            }
        })
        .collect();
    Some(format!(
        "not seeded on {} of {} nodes: {}",
        missing.len(),
        report.nodes.len(),
        named.join(", ")
    ))
}

/// The summary table: one row per node.
pub fn summary(report: &SeedReport) -> String {
    let width = report
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<9}  {:>11}  {:>11}  {:>11}  {:>7}  DETAIL\n",
        "NODE", "STATE", "BYTES", "FROM ORIGIN", "FROM PEERS", "SECONDS"
    );
    for n in &report.nodes {
        let name = if n.local {
            format!("{}*", n.name)
        } else {
            n.name.clone()
        };
        out.push_str(
            format!(
                "{name:<width$}  {:<9}  {:>11}  {:>11}  {:>11}  {:>7.1}  {}",
                n.state.label(),
                mib(n.bytes_done),
                mib(n.from_origin),
                mib(n.from_peers),
                n.millis as f64 / 1000.0,
                printable(&n.detail, 200),
            )
            .trim_end(),
        );
        out.push('\n');
    }
    if report.nodes.iter().any(|n| n.local) {
        out.push_str("* this node\n");
    }
    out
}

/// One node's progress as a plain line (logs, CI).
pub fn node_line(n: &NodeSeed) -> String {
    let mix = format!("origin {}, peers {}", mib(n.from_origin), mib(n.from_peers));
    let secs = n.millis as f64 / 1000.0;
    match n.state {
        NodeState::Queued => format!("{}: queued", n.name),
        NodeState::Fetching => format!(
            "{}: fetching, {} of {} ({mix})",
            n.name,
            mib(n.bytes_done),
            mib(n.bytes_total)
        ),
        NodeState::Complete => format!(
            "{}: complete, {} in {secs:.1}s ({mix})",
            n.name,
            mib(n.bytes_done)
        ),
        NodeState::Failed | NodeState::TimedOut => format!(
            "{}: {} after {secs:.1}s: {}",
            n.name,
            n.state.label(),
            printable(&n.detail, 200)
        ),
    }
}

/// `text` with control characters blanked and cut to `max` characters: details come
/// from other nodes.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How often a plain line is repeated for a node whose state did not change.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Progress on stderr: a bar per node on a terminal, plain lines otherwise.
struct LiveView {
    bars: Option<(MultiProgress, Vec<ProgressBar>)>,
    /// Per node, for plain lines: the state last printed and when.
    printed: HashMap<usize, (NodeState, Instant)>,
}

impl LiveView {
    fn new() -> Self {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| (MultiProgress::new(), Vec::new()));
        LiveView {
            bars,
            printed: HashMap::new(),
        }
    }

    fn show(&mut self, p: &SeedProgress) {
        match &mut self.bars {
            Some((multi, bars)) => {
                while bars.len() < p.nodes.len() {
                    let bar = multi.add(ProgressBar::new(0));
                    // The template is a constant: it parses.
                    let style = ProgressStyle::with_template(
                        "{prefix:<16} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    bar.set_style(style);
                    bars.push(bar);
                }
                for (n, bar) in p.nodes.iter().zip(bars.iter()) {
                    bar.set_prefix(n.name.clone());
                    bar.set_length(n.bytes_total.max(n.bytes_done));
                    bar.set_position(n.bytes_done);
                    bar.set_message(bar_message(n));
                }
            }
            None => {
                for (i, n) in p.nodes.iter().enumerate() {
                    let due = self.printed.get(&i).is_none_or(|(state, at)| {
                        *state != n.state || (!n.state.is_over() && at.elapsed() >= LINE_EVERY)
                    });
                    if due {
                        self.printed.insert(i, (n.state, Instant::now()));
                        eprintln!("seed: {}", node_line(n));
                    }
                }
            }
        }
    }

    /// Leaves the bars as they last were (the summary follows).
    fn finish(&mut self) {
        if let Some((_, bars)) = self.bars.take() {
            for bar in bars {
                bar.abandon();
            }
        }
    }
}

/// What a node's bar says beside the bytes: its state and where its bytes came from.
fn bar_message(n: &NodeSeed) -> String {
    let mix = format!(
        "origin {} · peers {}",
        mib(n.from_origin),
        mib(n.from_peers)
    );
    match n.state {
        NodeState::Failed | NodeState::TimedOut => {
            format!("{}: {}", n.state.label(), printable(&n.detail, 80))
        }
        _ => format!("{:<9} {mix}", n.state.label()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: NodeState) -> NodeSeed {
        NodeSeed {
            name: name.into(),
            peer_id: format!("12D3KooW{name}"),
            local: name == "n0",
            state,
            bytes_done: 9 << 20,
            bytes_total: 9 << 20,
            from_origin: 3 << 20,
            from_peers: 6 << 20,
            millis: 1500,
            detail: String::new(),
        }
    }

    fn report(nodes: Vec<NodeSeed>) -> SeedReport {
        SeedReport {
            image: "127.0.0.1:5000/app:v1".into(),
            order: "00000000000000ff".into(),
            pin_ttl_secs: 86400,
            nodes,
            millis: 2000,
        }
    }

    #[test]
    fn timeouts_take_a_unit_and_must_be_positive() {
        assert_eq!(parse_timeout("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("90").is_err());
        assert!(parse_timeout("soon").is_err());
        assert_eq!(parse_pin_ttl("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_pin_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_pin_ttl("-1h").is_err());
    }

    #[test]
    fn the_summary_has_a_row_per_node_and_marks_this_one() {
        let mut failed = node("n12345", NodeState::Failed);
        failed.detail = "the node disconnected\n(or was banned)".into();
        let text = summary(&report(vec![node("n0", NodeState::Complete), failed]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("NODE    STATE"), "{text}");
        assert!(
            lines[1]
                .starts_with("n0*     complete       9.0 MiB      3.0 MiB      6.0 MiB      1.5"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("the node disconnected (or was banned)"),
            "{text}"
        );
        assert_eq!(lines[3], "* this node");
    }

    #[test]
    fn the_failure_line_names_every_node_not_seeded() {
        assert_eq!(
            not_seeded(&report(vec![node("n0", NodeState::Complete)])),
            None
        );
        let mut late = node("n2", NodeState::TimedOut);
        late.detail = "not done within 90 s".into();
        let line = not_seeded(&report(vec![
            node("n0", NodeState::Complete),
            late,
            node("n3", NodeState::Failed),
        ]))
        .unwrap();
        assert_eq!(
            line,
            "not seeded on 2 of 3 nodes: n2 (timed out: not done within 90 s), n3 (failed)"
        );
    }

    #[test]
    fn plain_lines_say_state_bytes_and_sources() {
        let mut n = node("n1", NodeState::Fetching);
        n.bytes_done = 1 << 20;
        assert_eq!(
            node_line(&n),
            "n1: fetching, 1.0 MiB of 9.0 MiB (origin 3.0 MiB, peers 6.0 MiB)"
        );
        assert_eq!(
            node_line(&node("n1", NodeState::Complete)),
            "n1: complete, 9.0 MiB in 1.5s (origin 3.0 MiB, peers 6.0 MiB)"
        );
        let mut f = node("n1", NodeState::Failed);
        f.detail = "no status\u{1b}[2J".into();
        assert_eq!(node_line(&f), "n1: failed after 1.5s: no status [2J");
        assert_eq!(node_line(&node("n1", NodeState::Queued)), "n1: queued");
    }
}
