//! `shoal fsck`: asks a running node to check its store (`POST /_shoal/fsck`; the node
//! does the work, since it holds the database), shows the progress the node streams,
//! and prints the report. Exits 0 when the store is clean, 1 when anything was found
//! (damaged content is dropped to be fetched again; see [`crate::fsck`]) or the check
//! could not run.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::fsck::{FsckLine, FsckReport, Phase, Progress};

/// Flags of `shoal fsck`.
#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:5050")]
    node: String,
}

/// Runs the check and prints its report.
pub fn run(args: &FsckArgs) -> anyhow::Result<ExitCode> {
    let mut display = Display::new();
    let report = super::runtime()?.block_on(request(&args.node, &mut display));
    display.finish();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn request(node: &str, display: &mut Display) -> anyhow::Result<FsckReport> {
    let url = format!("{}/_shoal/fsck", node.trim_end_matches('/'));
    // No overall timeout: a check reads the whole store. The node sends a progress
    // line at least every phase and 200 ms, so a silent minute means it is gone.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()?;
    let response = client.post(&url).send().await.with_context(|| {
        format!("cannot reach the node at {node} (is `shoal node` running? use --node URL)")
    })?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        bail!("the node at {node} answered {status} for {url}: {message}");
    }
    let mut body = response.bytes_stream();
    let mut buf = Vec::new();
    while let Some(part) = body.next().await {
        let part = part.with_context(|| format!("the node at {node} stopped answering"))?;
        buf.extend_from_slice(&part);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line: FsckLine = serde_json::from_slice(&line)
                .with_context(|| format!("{url} sent a line that is not fsck progress"))?;
            match line {
                FsckLine::Progress(p) => display.update(&p),
                FsckLine::Report(report) => return Ok(*report),
                FsckLine::Error(e) => bail!("the check failed on the node: {e}"),
            }
        }
    }
    bail!("the node at {node} ended its answer before the check finished (see its log)")
}

/// Progress on stderr: a bar on a terminal, otherwise a line per phase and every few
/// seconds (for logs).
struct Display {
    bar: Option<ProgressBar>,
    last_line: Option<(Instant, Phase)>,
}

/// How often a plain progress line is printed within a phase.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Display {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            // The template is a constant: it parses.
            let style = ProgressStyle::with_template(
                "{spinner} {msg:<28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Display {
            bar,
            last_line: None,
        }
    }

    fn update(&mut self, p: &Progress) {
        let what = match p.phase {
            Phase::Records => format!("records: {}", p.records_checked),
            Phase::Pieces => format!("pieces: {}", p.pieces_checked),
            Phase::Chunks => format!("chunks: {}", p.chunks_checked),
            Phase::Repair => "repairing".to_owned(),
        };
        let what = if p.damaged > 0 {
            format!("{what}, {} damaged", p.damaged)
        } else {
            what
        };
        if let Some(bar) = &self.bar {
            bar.set_length(p.bytes_total.max(p.bytes_checked));
            bar.set_position(p.bytes_checked);
            bar.set_message(what);
            return;
        }
        let due = self
            .last_line
            .is_none_or(|(at, phase)| phase != p.phase || at.elapsed() >= LINE_EVERY);
        if due {
            self.last_line = Some((Instant::now(), p.phase));
            eprintln!(
                "fsck: {what}; {} of {} checked",
                mib(p.bytes_checked),
                mib(p.bytes_total.max(p.bytes_checked))
            );
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn print_report(r: &FsckReport) {
    println!(
        "checked {} pieces and {} chunks ({}) of {} blobs, {} partial blobs and {} recipes",
        r.pieces_checked,
        r.chunks_checked,
        mib(r.bytes_checked),
        r.blobs_checked,
        r.partials_checked,
        r.recipes_checked
    );
    for (what, ids) in [
        ("damaged piece", &r.damaged_pieces),
        ("missing piece", &r.missing_pieces),
        ("damaged chunk", &r.damaged_chunks),
        ("missing chunk", &r.missing_chunks),
    ] {
        for id in ids {
            println!("{what} {id}");
        }
    }
    for (what, digests) in [
        ("dropped blob", &r.blobs_dropped),
        ("dropped partial blob", &r.partials_dropped),
        ("dropped recipe", &r.recipes_dropped),
        ("dropped partial recipe", &r.partial_recipes_dropped),
    ] {
        for d in digests {
            println!("{what} {d}");
        }
    }
    for p in &r.problems {
        let fixed = if p.fixed { "fixed" } else { "not fixed" };
        println!("{} ({fixed}): {}", p.kind, p.detail);
    }
    if r.clean {
        println!("the store is clean");
    } else {
        let damaged = r.damaged_pieces.len()
            + r.missing_pieces.len()
            + r.damaged_chunks.len()
            + r.missing_chunks.len();
        println!(
            "found {damaged} damaged or missing pieces and chunks and {} other problems; \
             dropped blobs are fetched again at the next pull, dropped recipes rebuilt \
             when their image is next served",
            r.problems.len()
        );
    }
}
