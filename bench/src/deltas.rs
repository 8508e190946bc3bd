//! `shoal-bench deltas`: the bytes a node sends a peer for a new layer version when
//! the peer holds the previous one, as a pack (`shoal_diff::pack`), beside the same
//! layer as gzip and beside `zstd -19 --long=27 --patch-from` of the whole tar.
//!
//! Two real version pairs, each layer one tar of a whole root:
//! - `debian-add`: the debootstrap minbase bookworm root, then the same with packages
//!   added (the roots `shoal-bench recipes` builds);
//! - `debian-update`: that minbase root with a few packages unpacked into it, then the
//!   same root with the next Debian builds of those packages (by default libssl3 and
//!   openssl 3.0.20 → 3.0.22 and git 2.39.5 deb12u2 → deb12u3, fetched once with
//!   `apt-get download` and unpacked with `dpkg -x`): rebuilt binaries and libraries.
//!
//! Tars are written as image builders write them: GNU tar in PAX format (for xattrs),
//! sorted, numeric owners, with no atime or ctime records (docker and buildkit clear
//! both; GNU tar would otherwise give every entry a ctime that differs between two
//! copies of the same file). Each round times `zstd`, making the pack (v1 as the one
//! base) and applying it (v1's chunks alone, into a sink); medians are reported.
//! After the first apply, v2's tar is re-created from v1's chunks and those received,
//! and its diff_id checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use shoal_diff::pack::{self, Base, Limits, Options, Summary};
use shoal_protocol::Digest;
use shoal_protocol::recipe::{self, ChunkId, Recipe};

use crate::recipes::debootstrap;

/// Flags of `shoal-bench deltas`.
#[derive(Debug, clap::Args)]
pub struct DeltasArgs {
    /// Rounds; medians of the times are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Packages the `debian-add` pair's v2 adds to v1's minbase root.
    #[arg(long, default_value = "curl,ca-certificates,less,procps")]
    v2_packages: String,
    /// The `debian-update` pair's packages, as `NAME=OLD..NEW` Debian versions,
    /// comma-separated (both versions must be in the host's apt sources).
    #[arg(
        long,
        default_value = "libssl3=3.0.20-1~deb12u2..3.0.22-1~deb12u2,\
                         openssl=3.0.20-1~deb12u2..3.0.22-1~deb12u2,\
                         git=1:2.39.5-0+deb12u2..1:2.39.5-0+deb12u3"
    )]
    updates: String,
    /// Where to keep the roots and packages between runs (built once).
    #[arg(long, default_value = "/var/tmp/shoal-bench-roots")]
    roots: PathBuf,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Make packs with a node's options (`shoal_node::p2p::packs::maker_options`:
    /// zstd level 9, deltas within 128 MiB) instead of the library's defaults (level
    /// 19), to see what a fleet sends.
    #[arg(long)]
    node_options: bool,
}

/// A pack's [`Summary`], as the report writes it.
#[derive(Debug, Serialize)]
struct Breakdown {
    pack_bytes: u64,
    recipe_bytes: u64,
    delta_files: u64,
    delta_bytes: u64,
    delta_raw: u64,
    literal_chunks: u64,
    literal_raw: u64,
    literal_bytes: u64,
    reused_chunks: u64,
    reused_bytes: u64,
}

impl From<&Summary> for Breakdown {
    fn from(s: &Summary) -> Self {
        Breakdown {
            pack_bytes: s.pack_bytes,
            recipe_bytes: s.recipe_bytes,
            delta_files: s.delta_files,
            delta_bytes: s.delta_bytes,
            delta_raw: s.delta_raw,
            literal_chunks: s.literal_chunks,
            literal_raw: s.literal_raw,
            literal_bytes: s.literal_bytes,
            reused_chunks: s.reused_chunks,
            reused_bytes: s.reused_bytes,
        }
    }
}

#[derive(Debug, Serialize)]
struct PairFigures {
    name: String,
    what: String,
    v1_tar_bytes: u64,
    v2_tar_bytes: u64,
    v2_gzip_bytes: u64,
    zstd_patch_bytes: u64,
    pack_bytes: u64,
    pack_over_zstd: f64,
    pack: Breakdown,
    zstd_secs: Vec<f64>,
    make_secs: Vec<f64>,
    apply_secs: Vec<f64>,
    median_zstd_secs: f64,
    median_make_secs: f64,
    median_apply_secs: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    options: String,
    pairs: Vec<PairFigures>,
}

/// Runs the benchmark.
pub fn run(args: &DeltasArgs) -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let updates = parse_updates(&args.updates)?;
    let v1 = debootstrap(&args.roots.join("v1"), None)?;
    let v2 = debootstrap(&args.roots.join("v2"), Some(&args.v2_packages))?;
    let debs = args.roots.join("debs");
    let old = updated(&args.roots.join("update-old"), &v1, &debs, &updates, |u| {
        &u.old
    })?;
    let new = updated(&args.roots.join("update-new"), &v1, &debs, &updates, |u| {
        &u.new
    })?;
    let names: Vec<String> = updates
        .iter()
        .map(|u| format!("{} {} -> {}", u.name, u.old, u.new))
        .collect();
    let pairs = [
        (
            "debian-add",
            format!("minbase bookworm -> + {}", args.v2_packages),
            v1.clone(),
            v2,
        ),
        (
            "debian-update",
            format!("minbase bookworm + {}", names.join(", ")),
            old,
            new,
        ),
    ];
    let work = tempfile::Builder::new()
        .prefix("shoal-bench-deltas-")
        .tempdir_in("/var/tmp")?;
    let opts = if args.node_options {
        shoal_node::p2p::packs::maker_options()
    } else {
        Options::default()
    };
    let mut report = Report {
        options: format!("{opts:?}"),
        pairs: Vec::new(),
    };
    for (name, what, a, b) in pairs {
        report.pairs.push(measure(
            name,
            &what,
            &a,
            &b,
            work.path(),
            args.rounds,
            &opts,
        )?);
    }

    println!(
        "{:<14} {:>8} {:>8} {:>10} {:>10} {:>6} {:>8} {:>16} {:>20} {:>7} {:>7} {:>7}",
        "pair",
        "v2 tar",
        "v2 gzip",
        "zstd patch",
        "pack",
        "/zstd",
        "recipe",
        "deltas",
        "literal (raw)",
        "make s",
        "apply s",
        "zstd s"
    );
    for p in &report.pairs {
        let s = &p.pack;
        println!(
            "{:<14} {:>8} {:>8} {:>10} {:>10} {:>6.3} {:>8} {:>16} {:>20} {:>7.2} {:>7.2} {:>7.1}",
            p.name,
            mb(p.v2_tar_bytes),
            mb(p.v2_gzip_bytes),
            mb(p.zstd_patch_bytes),
            mb(p.pack_bytes),
            p.pack_over_zstd,
            kb(s.recipe_bytes),
            format!("{} files {}", s.delta_files, kb(s.delta_bytes)),
            format!("{} ({})", kb(s.literal_bytes), mb(s.literal_raw)),
            p.median_make_secs,
            p.median_apply_secs,
            p.median_zstd_secs
        );
    }
    for p in &report.pairs {
        println!(
            "{}: {}; v2 reuses {} of v1 ({} chunks); deltas rebuild {} of files; \
             pack {} B, zstd patch {} B",
            p.name,
            p.what,
            mb(p.pack.reused_bytes),
            p.pack.reused_chunks,
            mb(p.pack.delta_raw),
            p.pack_bytes,
            p.zstd_patch_bytes
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// One pair: tars, gzip, then `rounds` of zstd, make and apply.
fn measure(
    name: &str,
    what: &str,
    v1_root: &Path,
    v2_root: &Path,
    work: &Path,
    rounds: usize,
    opts: &Options,
) -> anyhow::Result<PairFigures> {
    let v1_tar = work.join(format!("{name}-v1.tar"));
    let v2_tar = work.join(format!("{name}-v2.tar"));
    tar(v1_root, &v1_tar)?;
    tar(v2_root, &v2_tar)?;
    let gz = work.join(format!("{name}-v2.tar.gz"));
    shoal_tests::run(
        Command::new("sh").arg("-c").arg(format!(
            "gzip -6 -c {} > {}",
            v2_tar.display(),
            gz.display()
        )),
        Duration::from_secs(600),
    )?;
    let v2_gzip_bytes = std::fs::metadata(&gz)?.len();
    std::fs::remove_file(&gz)?;

    let mut v1_store = HashMap::new();
    let mut sender = HashMap::new();
    let v1 = Layer::build(&std::fs::read(&v1_tar)?, &mut v1_store)?;
    let v2_bytes = std::fs::read(&v2_tar)?;
    let v2 = Layer::build(&v2_bytes, &mut sender)?;
    let v2_tar_bytes = v2_bytes.len() as u64;
    drop(v2_bytes);
    sender.extend(v1_store.iter().map(|(k, v)| (*k, v.clone())));
    let bases = [v1.base()];

    let patch = work.join(format!("{name}.patch"));
    let (mut zstd_secs, mut make_secs, mut apply_secs) = (Vec::new(), Vec::new(), Vec::new());
    let mut made = None;
    for round in 0..rounds {
        let start = Instant::now();
        shoal_tests::run(
            Command::new("zstd")
                .args(["-q", "-f", "-19", "--long=27"])
                .arg(format!("--patch-from={}", v1_tar.display()))
                .arg(&v2_tar)
                .arg("-o")
                .arg(&patch),
            Duration::from_secs(1800),
        )
        .context("zstd (the zstd CLI, 1.5 or later)")?;
        zstd_secs.push(start.elapsed().as_secs_f64());

        let start = Instant::now();
        let (p, summary) = pack::make(
            v2.digest,
            &v2.recipe,
            &v2.encoded,
            &bases,
            None,
            &sender,
            opts,
        )?;
        make_secs.push(start.elapsed().as_secs_f64());

        let mut received: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        let keep = round == 0;
        let start = Instant::now();
        let applied = pack::apply(
            &p,
            &bases,
            &v1_store,
            &mut |c, bytes| {
                if keep {
                    received.insert(c.id, bytes.to_vec());
                }
                Ok(())
            },
            &Limits::default(),
        )?;
        apply_secs.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(applied.summary == summary, "make and apply disagree");
        if keep {
            let n = shoal_diff::recreate(
                &applied.recipe,
                |id| v1_store.get(id).or_else(|| received.get(id)),
                &mut std::io::sink(),
            )
            .context("re-creating v2 from the pack")?;
            anyhow::ensure!(n == v2_tar_bytes);
        }
        eprintln!(
            "{name} round {}: zstd {:.1} s, make {:.2} s, apply {:.2} s, pack {} B",
            round + 1,
            zstd_secs[round],
            make_secs[round],
            apply_secs[round],
            p.len()
        );
        made = Some(summary);
    }
    // rounds > 0 was checked.
    let summary = made.expect("at least one round");
    let zstd_patch_bytes = std::fs::metadata(&patch)?.len();
    Ok(PairFigures {
        name: name.into(),
        what: what.into(),
        v1_tar_bytes: std::fs::metadata(&v1_tar)?.len(),
        v2_tar_bytes,
        v2_gzip_bytes,
        zstd_patch_bytes,
        pack_bytes: summary.pack_bytes,
        pack_over_zstd: summary.pack_bytes as f64 / zstd_patch_bytes as f64,
        pack: Breakdown::from(&summary),
        median_zstd_secs: median(&zstd_secs),
        median_make_secs: median(&make_secs),
        median_apply_secs: median(&apply_secs),
        zstd_secs,
        make_secs,
        apply_secs,
    })
}

/// A layer as the bench holds it: digest (of the tar, standing in for the blob's),
/// recipe and its wire form.
struct Layer {
    digest: Digest,
    recipe: Recipe,
    encoded: Vec<u8>,
}

impl Layer {
    fn build(tar: &[u8], store: &mut HashMap<ChunkId, Vec<u8>>) -> anyhow::Result<Layer> {
        let recipe = shoal_diff::build(tar, &mut |c, bytes| {
            store.entry(c.id).or_insert_with(|| bytes.to_vec());
        })?;
        Ok(Layer {
            digest: Digest::of(tar),
            encoded: recipe::encode(&recipe),
            recipe,
        })
    }

    fn base(&self) -> Base<'_> {
        Base {
            layer: self.digest,
            recipe: &self.recipe,
            encoded: &self.encoded,
        }
    }
}

/// One package of the `debian-update` pair.
#[derive(Debug)]
struct Update {
    name: String,
    old: String,
    new: String,
}

fn parse_updates(s: &str) -> anyhow::Result<Vec<Update>> {
    s.split(',')
        .map(|item| {
            let item = item.trim();
            let (name, versions) = item
                .split_once('=')
                .with_context(|| format!("{item:?} is not NAME=OLD..NEW"))?;
            let (old, new) = versions
                .split_once("..")
                .with_context(|| format!("{item:?} is not NAME=OLD..NEW"))?;
            Ok(Update {
                name: name.into(),
                old: old.into(),
                new: new.into(),
            })
        })
        .collect()
}

/// `base` copied to `dir` with one version of each package unpacked into it (kept if
/// already built).
fn updated(
    dir: &Path,
    base: &Path,
    debs: &Path,
    updates: &[Update],
    version: fn(&Update) -> &String,
) -> anyhow::Result<PathBuf> {
    let done = dir.with_extension("done");
    if done.is_file() {
        return Ok(dir.to_owned());
    }
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("building {} (once)...", dir.display());
    shoal_tests::run(
        Command::new("cp").arg("-a").arg(base).arg(dir),
        Duration::from_secs(600),
    )?;
    for u in updates {
        let deb = download(debs, &u.name, version(u))?;
        shoal_tests::run(
            Command::new("dpkg").arg("-x").arg(&deb).arg(dir),
            Duration::from_secs(300),
        )?;
    }
    std::fs::write(&done, b"")?;
    Ok(dir.to_owned())
}

/// The `.deb` of `name` at `version`, fetched into its own directory under `debs` once.
fn download(debs: &Path, name: &str, version: &str) -> anyhow::Result<PathBuf> {
    let dir = debs.join(format!("{name}={version}"));
    let find = |dir: &Path| -> anyhow::Result<Option<PathBuf>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    if let Some(deb) = find(&dir)? {
        return Ok(deb);
    }
    std::fs::create_dir_all(&dir)?;
    shoal_tests::run(
        Command::new("apt-get")
            .arg("download")
            .arg(format!("{name}={version}"))
            .current_dir(&dir),
        Duration::from_secs(600),
    )
    .with_context(|| format!("apt-get download {name}={version}"))?;
    find(&dir)?.with_context(|| format!("no .deb for {name}={version}"))
}

/// Writes `root` as a layer tar (see the module docs for the flags and why).
fn tar(root: &Path, out: &Path) -> anyhow::Result<()> {
    shoal_tests::run(
        Command::new("tar")
            .args([
                "--numeric-owner",
                "--xattrs",
                "--sort=name",
                "--pax-option=delete=atime,delete=ctime",
                "-C",
            ])
            .arg(root)
            .arg("-cf")
            .arg(out)
            .arg("."),
        Duration::from_secs(600),
    )?;
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() { 0.0 } else { s[s.len() / 2] }
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1e3)
}
