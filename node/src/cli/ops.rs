//! `shoal images`, `gc`, `rm`, `pin` and `pull`: each asks the running node (which
//! holds the store) through its operations endpoints (`mirror/ops.rs`), shows progress
//! on stderr for the long ones, and prints a table, or JSON with `--json`.

use std::process::ExitCode;

use anyhow::Context;

use super::progress::{Display, Unit};
use super::remote::{self, Common, mib};
use crate::gc::plan::ImageListing;
use crate::gc::{GcProgress, GcReport};
use crate::pull::{PullProgress, PullReport};
use crate::store::unix_now;

/// `shoal images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    common: Common,
}

/// `shoal gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Only say what would be removed and what it would free.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    common: Common,
}

/// `shoal rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The image: [registry/]repository[:tag|@digest].
    image: String,
    /// Only say what would be removed and what it would free.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    common: Common,
}

/// `shoal pin`.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// The image: [registry/]repository[:tag|@digest].
    image: String,
    /// Remove the pin instead of setting it.
    #[arg(long)]
    remove: bool,
    /// The pin lapses after this long (e.g. 12h, 7d); without it, it holds until
    /// removed.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// The pin's name, so that several owners can pin one image independently.
    #[arg(long, default_value = "operator")]
    name: String,
    #[command(flatten)]
    common: Common,
}

/// `shoal pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The image: [registry/]repository[:tag|@digest].
    image: String,
    /// For a multi-platform image: os/arch[/variant], or "all" [default: this host's].
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    common: Common,
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "3m ago", "2d ago".
fn ago(then: u64) -> String {
    let s = unix_now().saturating_sub(then);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// Runs `shoal images`.
pub fn images(args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let url = remote::url(node, "/_shoal/images", &[])?;
    let list: Vec<ImageListing> =
        super::runtime()?.block_on(remote::json(node, remote::client()?.get(url)))?;
    if args.common.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<44} {:<20} {:>11} {:>11} {:>10}  PINS",
        "IMAGE", "DIGEST", "SIZE", "SHARED", "LAST USED"
    );
    for i in &list {
        let name = match i.tags.as_slice() {
            [] => format!("{}/{}", i.upstream, i.repo),
            tags => format!("{}/{}:{}", i.upstream, i.repo, tags.join(",")),
        };
        let short = i.digest.get(7..19).unwrap_or(&i.digest);
        let size = if i.complete {
            mib(i.size)
        } else {
            format!("{}*", mib(i.size))
        };
        println!(
            "{name:<44} {short:<20} {size:>11} {:>11} {:>10}  {}",
            mib(i.shared),
            ago(i.last_used),
            i.pins.join(",")
        );
    }
    if list.iter().any(|i| !i.complete) {
        println!("* not every blob of the image is held (it was pulled in part)");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_gc(node: &str, url: url::Url, json: bool) -> anyhow::Result<ExitCode> {
    let mut display = Display::new("gc", Unit::Items);
    let report: anyhow::Result<GcReport> =
        super::runtime()?.block_on(remote::job(node, url, |p: &GcProgress| {
            display.update("removing", p.done, p.total)
        }));
    display.finish();
    let report = report?;
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = &report.plan;
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for image in &plan.images {
        let tags = if image.tags.is_empty() {
            String::new()
        } else {
            format!(" tags {}", image.tags.join(","))
        };
        println!(
            "{verb} {}{tags} ({}, last used {}, {})",
            image.image,
            mib(image.size),
            ago(image.last_used),
            image.reason,
        );
    }
    if report.dry_run {
        println!(
            "{verb} {} images, {} blobs, {} partial blobs and {} recipes; frees {}",
            plan.images.len(),
            plan.blobs.len(),
            plan.partials.len(),
            plan.recipes.len(),
            mib(report.freed)
        );
    } else {
        let kept = report.skipped_in_use + report.images_kept.len() as u64;
        println!(
            "{verb} {} images, {} blobs, {} partial blobs and {} recipes; freed {}{}",
            report.images_removed,
            report.blobs_removed,
            report.partials_removed,
            report.recipes_removed,
            mib(report.freed),
            if kept > 0 {
                format!(" ({kept} kept because they came into use)")
            } else {
                String::new()
            }
        );
    }
    let budget = report
        .budget
        .map_or("no budget".to_owned(), |b| format!("budget {}", mib(b)));
    println!(
        "store: {} before, {} after ({budget})",
        mib(report.usage_before),
        mib(report.usage_after)
    );
    if !plan.budget_met {
        println!(
            "the budget cannot be met: what is left is pinned or in use ({} images)",
            plan.protected
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shoal gc`.
pub fn gc(args: &GcArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let dry = if args.dry_run { "true" } else { "false" };
    let url = remote::url(node, "/_shoal/gc", &[("dry_run", dry)])?;
    run_gc(node, url, args.common.json)
}

/// Runs `shoal rm`.
pub fn rm(args: &RmArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let dry = if args.dry_run { "true" } else { "false" };
    let url = remote::url(
        node,
        "/_shoal/rm",
        &[("image", args.image.as_str()), ("dry_run", dry)],
    )?;
    run_gc(node, url, args.common.json).with_context(|| format!("cannot remove {}", args.image))
}

/// Runs `shoal pin`.
pub fn pin(args: &PinArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let ttl = match &args.ttl {
        Some(t) => Some(crate::config::parse_duration(t)?.as_secs().to_string()),
        None => None,
    };
    let mut query = vec![("image", args.image.as_str()), ("name", args.name.as_str())];
    if let Some(t) = &ttl {
        query.push(("ttl_secs", t));
    }
    let url = remote::url(node, "/_shoal/pins", &query)?;
    let client = remote::client()?;
    let request = if args.remove {
        client.delete(url)
    } else {
        client.post(url)
    };
    let answer: serde_json::Value = super::runtime()?.block_on(remote::json(node, request))?;
    if args.common.json {
        print_json(&answer)?;
    } else if args.remove {
        println!(
            "unpinned {} ({})",
            answer["image"].as_str().unwrap_or("?"),
            args.name
        );
    } else {
        let until = answer["expires"]
            .as_u64()
            .map_or("until removed".to_owned(), |e| {
                format!("for {}s", e.saturating_sub(unix_now()))
            });
        println!(
            "pinned {} ({}) {until}",
            answer["image"].as_str().unwrap_or("?"),
            args.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shoal pull`.
pub fn pull(args: &PullArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let mut query = vec![("image", args.image.as_str())];
    if let Some(p) = &args.platform {
        query.push(("platform", p));
    }
    let url = remote::url(node, "/_shoal/pull", &query)?;
    let mut display = Display::new("pull", Unit::Bytes);
    let report: anyhow::Result<PullReport> =
        super::runtime()?.block_on(remote::job(node, url, |p: &PullProgress| {
            let stage = format!("blobs {}/{}", p.blobs_done, p.blobs_total);
            display.update(&stage, p.bytes_done, p.bytes_total)
        }));
    display.finish();
    let report = report.with_context(|| format!("cannot pull {}", args.image))?;
    if args.common.json {
        print_json(&report)?;
    } else {
        println!(
            "pulled {} ({}): {} blobs, {}, {} from the origin, {} from peers, in {:.1}s",
            report.image,
            report.digest,
            report.blobs,
            mib(report.bytes),
            mib(report.bytes_from_origin),
            mib(report.bytes_from_peers),
            report.millis as f64 / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
