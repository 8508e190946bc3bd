//! `shoal fsck`: asks a running node to check its store (`POST /_shoal/fsck`; the node
//! does the work, since it holds the database), shows the progress the node streams,
//! and prints the report. Exits 0 when the store is clean, 1 when anything was found
//! (damaged content is dropped to be fetched again; see [`crate::fsck`]) or the check
//! could not run.

use std::process::ExitCode;

use anyhow::Context;

use super::progress::{Display, Unit};
use super::remote::mib;
use crate::fsck::{FsckReport, Phase, Progress};

/// Flags of `shoal fsck`.
#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// The node's mirror URL.
    #[arg(long, default_value = super::remote::DEFAULT_NODE)]
    node: String,
}

/// Runs the check and prints its report.
pub fn run(args: &FsckArgs) -> anyhow::Result<ExitCode> {
    let mut display = Display::new("fsck", Unit::Bytes);
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
    let url = super::remote::url(node, "/_shoal/fsck", &[])?;
    super::remote::job(node, url, |p| update(display, p))
        .await
        .context("the check failed")
}

fn update(display: &mut Display, p: &Progress) {
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
    display.update(&what, p.bytes_checked, p.bytes_total);
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
