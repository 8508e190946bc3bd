//! `shoal flatten`, `mount`, `umount`, `mounts` and `export --flat`: each asks the
//! running node (which holds the store and runs as root) through its flat endpoints
//! (`mirror/flat.rs`), shows progress on stderr, and prints a summary, or JSON with
//! `--json`.
//!
//! Paths are made absolute here, in the caller's view of the filesystem, and used as
//! such by the node: both must see the same mounts (a node in a private mount
//! namespace, such as a systemd unit with `PrivateTmp=`, sees another `/tmp`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;

use super::progress::{Display, Unit};
use super::remote::{self, Common, mib};
use crate::flatten::wire::{
    ExportSummary, FlatProgress, FlattenSummary, MountRecord, MountSummary,
};

/// `shoal flatten`.
#[derive(Debug, clap::Args)]
pub struct FlattenArgs {
    /// The image: [registry/]repository[:tag|@digest].
    image: String,
    /// The directory to create. It must not exist, and must be on the filesystem of
    /// the node's data dir: its files are hardlinks to the node's shared objects (so
    /// use it read-only).
    #[arg(long, short)]
    out: PathBuf,
    /// For a multi-platform image: os/arch[/variant] [default: this host's].
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// `shoal mount`.
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The image: [registry/]repository[:tag|@digest].
    image: String,
    /// An existing directory to mount the image's overlay on.
    target: PathBuf,
    /// For a multi-platform image: os/arch[/variant] [default: this host's].
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// `shoal umount`.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// Where a shoal mount is.
    target: PathBuf,
    #[command(flatten)]
    common: Common,
}

/// `shoal mounts`.
#[derive(Debug, clap::Args)]
pub struct MountsArgs {
    #[command(flatten)]
    common: Common,
}

/// `shoal export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Export the image flattened into a single layer (the only kind of export).
    #[arg(long)]
    flat: bool,
    /// The image: [registry/]repository[:tag|@digest].
    image: String,
    /// The archive to write (an OCI layout with a Docker manifest.json, in a tar).
    #[arg(long, short)]
    output: PathBuf,
    /// For a multi-platform image: os/arch[/variant] [default: this host's].
    #[arg(long)]
    platform: Option<String>,
    /// The name the archive gives the image [default: the image's, when named by tag].
    #[arg(long)]
    tag: Option<String>,
    #[command(flatten)]
    common: Common,
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `path` made absolute against the working directory, its parent's symlinks resolved
/// when the parent exists.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let path = std::env::current_dir()
        .context("cannot read the working directory")?
        .join(path);
    let resolved = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .ok()
            .map(|parent| parent.join(name)),
        _ => None,
    };
    Ok(resolved.unwrap_or(path))
}

/// Runs a flat job at `path` with `query`, showing its progress.
fn flat_job<R: serde::de::DeserializeOwned>(
    command: &'static str,
    node: &str,
    path: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<R> {
    let url = remote::url(node, path, query)?;
    let mut display = Display::new(command, Unit::Bytes);
    let report = super::runtime()?.block_on(remote::job(node, url, |p: &FlatProgress| {
        let stage = if p.stage == "layers" {
            format!("layer {}/{}", p.layer, p.layers)
        } else {
            p.stage.clone()
        };
        display.update(&stage, p.bytes_done, p.bytes_total);
    }));
    display.finish();
    report
}

fn print_tree(verb: &str, s: &FlattenSummary) {
    if s.reused {
        println!(
            "{verb} the flat tree of {} ({}) already built",
            s.image, s.manifest
        );
        return;
    }
    println!(
        "{verb} {} ({}): {} layers, {} entries, {} files ({}), {} dirs, {} symlinks, {} hardlinks, {} whiteouts",
        s.image,
        s.manifest,
        s.layers,
        s.entries,
        s.files,
        mib(s.file_bytes),
        s.dirs,
        s.symlinks,
        s.hardlinks,
        s.whiteouts
    );
    println!(
        "objects: {} new ({}), {} reused; {:.1}s",
        s.objects_new,
        mib(s.object_bytes_new),
        s.objects_reused,
        s.seconds
    );
}

/// Runs `shoal flatten`.
pub fn flatten(args: &FlattenArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let out = absolute(&args.out)?;
    let out_text = out.to_str().context("--out must be valid UTF-8")?;
    let mut query = vec![("image", args.image.as_str()), ("out", out_text)];
    if let Some(p) = &args.platform {
        query.push(("platform", p));
    }
    let report: FlattenSummary = flat_job("flatten", node, "/_shoal/flat/flatten", &query)
        .with_context(|| format!("cannot flatten {}", args.image))?;
    if args.common.json {
        print_json(&report)?;
    } else {
        print_tree("flattened", &report);
        println!(
            "{}: its files are hardlinks to the node's shared objects; use it read-only",
            report.path
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shoal mount`.
pub fn mount(args: &MountArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let target = std::fs::canonicalize(&args.target).with_context(|| {
        format!(
            "cannot mount on {}: it must be an existing directory",
            args.target.display()
        )
    })?;
    let target_text = target.to_str().context("the target must be valid UTF-8")?;
    let mut query = vec![("image", args.image.as_str()), ("target", target_text)];
    if let Some(p) = &args.platform {
        query.push(("platform", p));
    }
    let report: MountSummary = flat_job("mount", node, "/_shoal/flat/mount", &query)
        .with_context(|| format!("cannot mount {}", args.image))?;
    if args.common.json {
        print_json(&report)?;
    } else {
        print_tree("built", &report.tree);
        let m = &report.mount;
        println!(
            "mounted {} on {} (writes go to {}; pinned as {:?})",
            m.image, m.target, m.upper, m.pin
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shoal umount`.
pub fn umount(args: &UmountArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let target = std::fs::canonicalize(&args.target).or_else(|_| absolute(&args.target))?;
    let target_text = target.to_str().context("the target must be valid UTF-8")?;
    let url = remote::url(node, "/_shoal/flat/umount", &[("target", target_text)])?;
    let record: MountRecord = super::runtime()?
        .block_on(remote::json(node, remote::client()?.post(url)))
        .with_context(|| format!("cannot unmount {}", args.target.display()))?;
    if args.common.json {
        print_json(&record)?;
    } else {
        println!(
            "unmounted {} from {}; its writes and the pin {:?} are gone",
            record.image, record.target, record.pin
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shoal mounts`.
pub fn mounts(args: &MountsArgs) -> anyhow::Result<ExitCode> {
    let node = &args.common.node;
    let url = remote::url(node, "/_shoal/flat/mounts", &[])?;
    let list: Vec<MountRecord> =
        super::runtime()?.block_on(remote::json(node, remote::client()?.get(url)))?;
    if args.common.json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} {:<44} {:<20} STATE", "TARGET", "IMAGE", "MANIFEST");
    for m in &list {
        let short = m.manifest.get(7..19).unwrap_or(&m.manifest);
        let state = if m.mounted { "mounted" } else { "not mounted" };
        println!("{:<40} {:<44} {short:<20} {state}", m.target, m.image);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shoal export`.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    if !args.flat {
        bail!("shoal export writes flat images only so far: add --flat");
    }
    let node = &args.common.node;
    let output = absolute(&args.output)?;
    let mut query = vec![("image", args.image.as_str())];
    if let Some(p) = &args.platform {
        query.push(("platform", p));
    }
    let mut report: ExportSummary = flat_job("export", node, "/_shoal/flat/export", &query)
        .with_context(|| format!("cannot export {}", args.image))?;
    if let Some(tag) = &args.tag {
        report.name = Some(tag.clone());
    }
    let written = download(node, &report, &output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    report.archive_size = written;
    if args.common.json {
        print_json(&report)?;
    } else {
        println!(
            "exported {} as {} to {} ({})",
            report.image,
            report.name.as_deref().unwrap_or("an unnamed image"),
            output.display(),
            mib(written)
        );
        println!(
            "manifest {}, one layer {} ({} files, {} of tar), {:.1}s{}",
            report.manifest,
            report.layer,
            report.files,
            mib(report.tar_bytes),
            report.seconds,
            if report.reused { " (layer reused)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetches the archive of `report` into `output` (through `OUTPUT.partial`, renamed
/// when whole). Returns its size.
fn download(node: &str, report: &ExportSummary, output: &Path) -> anyhow::Result<u64> {
    let hex = report
        .source_manifest
        .strip_prefix("sha256:")
        .context("the node reported no source manifest")?;
    let mut query = Vec::new();
    if let Some(name) = &report.name {
        query.push(("name", name.as_str()));
    }
    let url = remote::url(node, &format!("/_shoal/flat/exports/{hex}/archive"), &query)?;
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let fetched = super::runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        let response = client
            .get(url)
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {node}"))?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            bail!(
                "the node answered {status}: {}",
                body["errors"][0]["message"].as_str().unwrap_or("")
            );
        }
        let expected = response.content_length();
        let mut file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut body = response.bytes_stream();
        let mut written = 0u64;
        while let Some(part) = body.next().await {
            let part = part.with_context(|| format!("the node at {node} stopped sending"))?;
            file.write_all(&part)?;
            written += part.len() as u64;
        }
        file.sync_all()?;
        if let Some(expected) = expected.filter(|&e| e != written) {
            bail!("the archive ended after {written} of {expected} bytes");
        }
        anyhow::Ok(written)
    });
    let written = match fetched {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, output)?;
    Ok(written)
}
