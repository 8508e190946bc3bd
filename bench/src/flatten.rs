//! `shoal-bench flatten`: flattening a real multi-layer image, beside `umoci unpack` of
//! the same image in the same run, and what a second version costs once the first is
//! flat.
//!
//! Two Debian roots (debootstrap minbase, then the same with packages added; built
//! once and kept, as for `shoal-bench recipes`) become two images: v1 is the root's
//! `/usr` in one layer and the rest in another; v2 is v1's two layers and a third with
//! what v2 adds or changes (and whiteouts for what it removes). Layers are GNU tar
//! archives, gzipped; both images are pushed to a docker-registry origin.
//!
//! Each round has two fresh nodes that pulled the images (`shoal pull`, ingest
//! awaited), and times, interleaved, the tool going first alternating between rounds:
//! - v1: `umoci unpack` of the bench's OCI layout, and `shoal flatten --out` on the
//!   first node, cold (no objects yet: every file written) and then warm (every object
//!   there: every file a hardlink);
//! - v2: `umoci unpack`, and `shoal flatten` on the first node after v1, whose tree
//!   holds its objects (what it writes is what v2 does not share with v1); and on the
//!   second node, cold.
//!
//! Nothing is deleted until the run ends, and `sync` runs before each timed step
//! (neither tool syncs its writes): on ext4 without a journal, creating files within
//! a minute (five, while the inode table is dirty) of deleting many costs the kernel a
//! scan over the deleted inodes for every new one (`recently_deleted`), which would
//! charge whichever step follows a deletion. Times are wall times of whole commands:
//! `shoal flatten` is the CLI asking the node, which flattens from its store; `umoci
//! unpack` reads the gzip blobs and also writes its mtree manifest, as every `umoci
//! unpack` does. The first round checks that shoal's trees are umoci's entry by entry
//! and that v2's is the root it was made from; at the end, v2 is exported flat and its
//! hardlink entries are counted beside the image's own hardlinks.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use shoal_tests::flat::{archive_layer_tar, describe_tree, inode_groups, tar_hardlinks};
use shoal_tests::image::{Layer, Layout};
use shoal_tests::{Node, Registry};

/// Flags of `shoal-bench flatten`.
#[derive(Debug, clap::Args)]
pub struct FlattenArgs {
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Packages v2 adds to v1's minbase root.
    #[arg(long, default_value = "curl,ca-certificates,less,procps")]
    v2_packages: String,
    /// Where the two roots are kept between runs (built once; debootstrap takes ~30 s
    /// each). The same as `shoal-bench recipes` uses.
    #[arg(long, default_value = "/var/tmp/shoal-bench-roots")]
    roots: PathBuf,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One image as built.
#[derive(Debug, Default, Serialize)]
struct ImageFigures {
    tag: String,
    /// Tar bytes of each layer.
    layer_tar_bytes: Vec<u64>,
    /// Gzip bytes of each layer.
    layer_gzip_bytes: Vec<u64>,
    /// Regular files in the root it was made from (each path once).
    files: u64,
    /// Their bytes.
    file_bytes: u64,
}

/// What `shoal flatten` reported.
#[derive(Clone, Debug, Default, Serialize)]
struct Flattened {
    /// Wall time of the command.
    seconds: f64,
    /// The node's own time for it.
    node_seconds: f64,
    files: u64,
    file_bytes: u64,
    objects_new: u64,
    object_bytes_new: u64,
    objects_reused: u64,
}

#[derive(Debug, Default, Serialize)]
struct Round {
    umoci_v1_seconds: f64,
    shoal_v1_cold: Flattened,
    shoal_v1_warm: Flattened,
    umoci_v2_seconds: f64,
    shoal_v2_after_v1: Flattened,
    shoal_v2_cold: Flattened,
}

#[derive(Debug, Default, Serialize)]
struct Medians {
    umoci_v1_seconds: f64,
    shoal_v1_cold_seconds: f64,
    shoal_v1_warm_seconds: f64,
    umoci_v2_seconds: f64,
    shoal_v2_after_v1_seconds: f64,
    shoal_v2_cold_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
struct Checks {
    /// shoal's v1 tree is umoci's, entry by entry (type, mode, owner, content, mtime
    /// of non-directories, xattrs).
    v1_tree_is_umocis: bool,
    /// The same for v2.
    v2_tree_is_umocis: bool,
    /// shoal's v2 tree is the v2 root the image was made from.
    v2_tree_is_the_root: bool,
    /// The first differences found, if any.
    differences: Vec<String>,
    /// Hardlink entries in `shoal export --flat` of v2.
    v2_export_hardlinks: u64,
    /// The image's own hardlinks: paths sharing an inode in umoci's v2 unpack, beyond
    /// the first of each group.
    v2_image_hardlinks: u64,
}

/// What v2's own layer holds.
#[derive(Debug, Default, Serialize)]
struct DiffFigures {
    /// Paths it adds or changes.
    paths: u64,
    /// Whiteouts in it.
    whiteouts: u64,
    /// Regular files in it with the content v1 has at the same path, only their
    /// metadata changed (an mtime, mostly): a new object each, as objects are per
    /// content and metadata.
    same_content_files: u64,
    /// Their bytes.
    same_content_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    rounds: usize,
    v1: ImageFigures,
    v2: ImageFigures,
    /// v2's own layer.
    v2_layer: DiffFigures,
    per_round: Vec<Round>,
    medians: Medians,
    /// Median of `object_bytes_new` of v2 after v1 over v2's file bytes.
    v2_after_v1_new_bytes_fraction: f64,
    checks: Checks,
}

/// Runs the benchmark.
pub fn run(args: &FlattenArgs) -> anyhow::Result<()> {
    shoal_tests::require_root()?;
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let v1_root = debootstrap(&args.roots.join("v1"), None)?;
    let v2_root = debootstrap(&args.roots.join("v2"), Some(&args.v2_packages))?;
    let work = tempfile::Builder::new()
        .prefix("shoal-bench-flatten-")
        .tempdir_in("/var/tmp")?;
    let w = work.path();
    let mut report = Report {
        rounds: args.rounds,
        ..Report::default()
    };

    eprintln!("packing the layers...");
    let usr = pack(&v1_root, &["usr".into()], &w.join("usr.tar"))?;
    let rest_names: Vec<PathBuf> = sorted_names(&v1_root)?
        .into_iter()
        .filter(|n| n.as_os_str() != "usr")
        .collect();
    let rest = pack(&v1_root, &rest_names, &w.join("rest.tar"))?;
    let (diff, figures) = diff_layer(&v1_root, &v2_root, w)?;
    report.v2_layer = figures;

    let registry = Registry::start(w)?;
    let mut layout = Layout::new(&w.join("layout"))?;
    let v1_layers = vec![usr, rest];
    let mut v2_layers = v1_layers.clone();
    v2_layers.push(diff);
    for (tag, layers, root, figures) in [
        ("v1", &v1_layers, &v1_root, &mut report.v1),
        ("v2", &v2_layers, &v2_root, &mut report.v2),
    ] {
        eprintln!("building and pushing {tag} ({} layers)...", layers.len());
        let raw: Vec<Layer> = layers.iter().cloned().map(Layer::raw_tar).collect();
        let image = layout.image(&raw, "amd64", Some(tag))?;
        layout.push(
            tag,
            &format!("{}/bench/debian:{tag}", registry.addr),
            false,
            false,
        )?;
        let (files, file_bytes) = regular_files(root)?;
        *figures = ImageFigures {
            tag: tag.to_owned(),
            layer_tar_bytes: layers.iter().map(|l| l.len() as u64).collect(),
            // The config first, then the layers.
            layer_gzip_bytes: image.blobs[1..]
                .iter()
                .map(|d| layout.blob(d).map(|b| b.len() as u64))
                .collect::<anyhow::Result<_>>()?,
            files,
            file_bytes,
        };
    }
    drop((v1_layers, v2_layers));

    let image = |tag: &str| format!("{}/bench/debian:{tag}", registry.addr);
    let (v1, v2) = (image("v1"), image("v2"));
    eprintln!("starting {} nodes and pulling...", 2 * args.rounds);
    let mut nodes = Vec::new();
    for round in 1..=args.rounds {
        for (role, tags) in [("a", &[&v1, &v2][..]), ("b", &[&v2][..])] {
            let node = Node::start_named(w, &format!("node-{round}{role}"), &registry.url(), &[])?;
            for tag in tags {
                node.cli_json(&["pull", tag])?;
            }
            nodes.push(node);
        }
    }
    eprintln!("waiting for ingest...");
    for node in &nodes {
        shoal_tests::process::wait_until("ingest", Duration::from_secs(900), || {
            let stats = node.stats()?;
            Ok(stats["ingest_pending"].as_u64() == Some(0)
                && stats["recipes"].as_u64().unwrap_or(0) >= 3)
        })?;
    }

    let bench = Bench {
        layout: &layout.dir,
        work: w,
    };
    for (round, pair) in nodes.chunks(2).enumerate() {
        let [a, b] = pair else {
            anyhow::bail!("two nodes a round");
        };
        let n = round + 1;
        let umoci_first = round % 2 == 0;
        let mut r = Round::default();
        let v1_cold = format!("v1-cold-{n}");
        if umoci_first {
            r.umoci_v1_seconds = bench.umoci("v1", n)?;
            r.shoal_v1_cold = bench.flatten(a, &v1, &v1_cold)?;
        } else {
            r.shoal_v1_cold = bench.flatten(a, &v1, &v1_cold)?;
            r.umoci_v1_seconds = bench.umoci("v1", n)?;
        }
        r.shoal_v1_warm = bench.flatten(a, &v1, &format!("v1-warm-{n}"))?;
        let v2_after = format!("v2-after-v1-{n}");
        if umoci_first {
            r.umoci_v2_seconds = bench.umoci("v2", n)?;
            r.shoal_v2_after_v1 = bench.flatten(a, &v2, &v2_after)?;
        } else {
            r.shoal_v2_after_v1 = bench.flatten(a, &v2, &v2_after)?;
            r.umoci_v2_seconds = bench.umoci("v2", n)?;
        }
        r.shoal_v2_cold = bench.flatten(b, &v2, &format!("v2-cold-{n}"))?;
        if round == 0 {
            report.checks = bench.check(
                [
                    (&bench.out(&v1_cold), &bench.umoci_rootfs("v1", n)),
                    (&bench.out(&v2_after), &bench.umoci_rootfs("v2", n)),
                ],
                &v2_root,
            )?;
        }
        eprintln!(
            "round {n}: v1 umoci {:.2} s, shoal cold {:.2} s, warm {:.2} s; v2 umoci {:.2} s, shoal after v1 {:.2} s ({} objects, {:.1} MB new), cold {:.2} s",
            r.umoci_v1_seconds,
            r.shoal_v1_cold.seconds,
            r.shoal_v1_warm.seconds,
            r.umoci_v2_seconds,
            r.shoal_v2_after_v1.seconds,
            r.shoal_v2_after_v1.objects_new,
            mb(r.shoal_v2_after_v1.object_bytes_new),
            r.shoal_v2_cold.seconds,
        );
        report.per_round.push(r);
    }

    eprintln!("exporting v2 flat...");
    let archive = w.join("v2-flat.tar");
    let exported = nodes[0].cli_json(&[
        "export",
        "--flat",
        &v2,
        "-o",
        archive.to_str().unwrap_or_default(),
    ])?;
    let bytes = std::fs::read(&archive)?;
    let layer = archive_layer_tar(&bytes, exported["layer"].as_str().unwrap_or_default())?;
    report.checks.v2_export_hardlinks = tar_hardlinks(&layer)?.len() as u64;

    let rounds = &report.per_round;
    let med = |f: &dyn Fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    report.medians = Medians {
        umoci_v1_seconds: med(&|r| r.umoci_v1_seconds),
        shoal_v1_cold_seconds: med(&|r| r.shoal_v1_cold.seconds),
        shoal_v1_warm_seconds: med(&|r| r.shoal_v1_warm.seconds),
        umoci_v2_seconds: med(&|r| r.umoci_v2_seconds),
        shoal_v2_after_v1_seconds: med(&|r| r.shoal_v2_after_v1.seconds),
        shoal_v2_cold_seconds: med(&|r| r.shoal_v2_cold.seconds),
    };
    report.v2_after_v1_new_bytes_fraction =
        med(&|r| r.shoal_v2_after_v1.object_bytes_new as f64) / report.v2.file_bytes as f64;
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// The places one run uses.
struct Bench<'a> {
    layout: &'a Path,
    work: &'a Path,
}

impl Bench<'_> {
    /// Where `shoal flatten` writes the tree `name`.
    fn out(&self, name: &str) -> PathBuf {
        self.work.join(format!("out-{name}"))
    }

    /// Where `umoci unpack` of `tag` in round `round` unpacks.
    fn umoci_rootfs(&self, tag: &str, round: usize) -> PathBuf {
        self.work
            .join(format!("umoci-{tag}-{round}"))
            .join("rootfs")
    }

    /// `shoal flatten IMAGE --out out-NAME` on `node`, timed.
    fn flatten(&self, node: &Node, image: &str, name: &str) -> anyhow::Result<Flattened> {
        let out = self.out(name);
        let (seconds, report) = timed(|| {
            node.cli_json(&["flatten", image, "--out", out.to_str().unwrap_or_default()])
        })?;
        let n = |k: &str| report[k].as_u64().unwrap_or(0);
        let done = Flattened {
            seconds,
            node_seconds: report["seconds"].as_f64().unwrap_or(0.0),
            files: n("files"),
            file_bytes: n("file_bytes"),
            objects_new: n("objects_new"),
            object_bytes_new: n("object_bytes_new"),
            objects_reused: n("objects_reused"),
        };
        eprintln!(
            "  shoal flatten {name}: {seconds:.2} s, {} objects new ({:.1} MB), {} reused",
            done.objects_new,
            mb(done.object_bytes_new),
            done.objects_reused
        );
        Ok(done)
    }

    /// `umoci unpack` of layout tag `tag` for round `round`, timed.
    fn umoci(&self, tag: &str, round: usize) -> anyhow::Result<f64> {
        let rootfs = self.umoci_rootfs(tag, round);
        let bundle = rootfs.parent().context("a bundle holds the rootfs")?;
        let (seconds, _) = timed(|| {
            shoal_tests::run(
                Command::new("umoci")
                    .args(["unpack", "--image"])
                    .arg(format!("{}:{tag}", self.layout.display()))
                    .arg(bundle),
                Duration::from_secs(900),
            )
        })?;
        eprintln!("  umoci unpack {tag}: {seconds:.2} s");
        Ok(seconds)
    }

    /// Compares shoal's trees with umoci's (v1, then v2) and v2's with its root;
    /// counts the image's hardlinks.
    fn check(&self, pairs: [(&PathBuf, &PathBuf); 2], v2_root: &Path) -> anyhow::Result<Checks> {
        eprintln!("  checking the trees...");
        let mut differences = Vec::new();
        let mut same = |what: &str, a: &Path, b: &Path| -> anyhow::Result<bool> {
            let (a, b) = (describe_tree(a)?, describe_tree(b)?);
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let mut ok = true;
            for name in names {
                if a.get(name) != b.get(name) {
                    ok = false;
                    if differences.len() < 20 {
                        differences.push(format!(
                            "{what}: {name}: {:?} / {:?}",
                            a.get(name),
                            b.get(name)
                        ));
                    }
                }
            }
            Ok(ok)
        };
        let [(shoal_v1, umoci_v1), (shoal_v2, umoci_v2)] = pairs;
        let checks = Checks {
            v1_tree_is_umocis: same("v1 shoal/umoci", shoal_v1, umoci_v1)?,
            v2_tree_is_umocis: same("v2 shoal/umoci", shoal_v2, umoci_v2)?,
            v2_tree_is_the_root: same("v2 shoal/root", shoal_v2, v2_root)?,
            v2_image_hardlinks: inode_groups(umoci_v2)?
                .iter()
                .map(|g| g.len() as u64 - 1)
                .sum(),
            differences,
            ..Checks::default()
        };
        for d in &checks.differences {
            eprintln!("  differs: {d}");
        }
        Ok(checks)
    }
}

fn print_table(r: &Report) {
    println!(
        "{:<5} {:>7} {:>10} {:>10} {:>7} {:>9}",
        "image", "layers", "tar MB", "gzip MB", "files", "file MB"
    );
    for i in [&r.v1, &r.v2] {
        println!(
            "{:<5} {:>7} {:>10.1} {:>10.1} {:>7} {:>9.1}",
            i.tag,
            i.layer_tar_bytes.len(),
            mb(i.layer_tar_bytes.iter().sum()),
            mb(i.layer_gzip_bytes.iter().sum()),
            i.files,
            mb(i.file_bytes)
        );
    }
    let d = &r.v2_layer;
    println!(
        "(v1: /usr, then the rest; v2: v1's layers and one of {} paths added or changed and {} whiteouts;",
        d.paths, d.whiteouts
    );
    println!(
        " {} of its files, {:.1} MB, have v1's content with new metadata, an mtime mostly)",
        d.same_content_files,
        mb(d.same_content_bytes)
    );
    println!();
    let m = &r.medians;
    println!(
        "median of {} rounds, wall seconds  {:>13} {:>13} {:>7}",
        r.rounds, "shoal flatten", "umoci unpack", "ratio"
    );
    for (what, shoal, umoci) in [
        (
            "v1, cold (every object new)",
            m.shoal_v1_cold_seconds,
            m.umoci_v1_seconds,
        ),
        (
            "v1, warm (every object there)",
            m.shoal_v1_warm_seconds,
            m.umoci_v1_seconds,
        ),
        (
            "v2 after v1",
            m.shoal_v2_after_v1_seconds,
            m.umoci_v2_seconds,
        ),
        ("v2, cold", m.shoal_v2_cold_seconds, m.umoci_v2_seconds),
    ] {
        println!(
            "{what:<34} {shoal:>13.2} {umoci:>13.2} {:>6.2}x",
            shoal / umoci
        );
    }
    println!();
    let first = |f: &dyn Fn(&Round) -> &Flattened| r.per_round.first().map(f).cloned();
    if let (Some(cold), Some(after)) = (
        first(&|x| &x.shoal_v1_cold),
        first(&|x| &x.shoal_v2_after_v1),
    ) {
        println!(
            "v1 cold writes {} objects, {:.1} MB, for {} file entries of {:.1} MB",
            cold.objects_new,
            mb(cold.object_bytes_new),
            cold.files,
            mb(cold.file_bytes)
        );
        println!(
            "v2 after v1 writes {} objects, {:.1} MB: {:.1}% of v2's {:.1} MB of files ({} files); {} files linked to v1's objects",
            after.objects_new,
            mb(after.object_bytes_new),
            100.0 * after.object_bytes_new as f64 / r.v2.file_bytes as f64,
            mb(r.v2.file_bytes),
            r.v2.files,
            after.objects_reused
        );
    }
    let c = &r.checks;
    let yes = |b: bool| if b { "yes" } else { "NO" };
    println!(
        "checks: shoal's tree is umoci's: v1 {}, v2 {}; v2's tree is the v2 root: {}; export --flat v2: {} hardlink entries, the image has {}",
        yes(c.v1_tree_is_umocis),
        yes(c.v2_tree_is_umocis),
        yes(c.v2_tree_is_the_root),
        c.v2_export_hardlinks,
        c.v2_image_hardlinks
    );
}

/// A minbase Debian root in `dir` (kept if already built), as `shoal-bench recipes`
/// makes it.
fn debootstrap(dir: &Path, include: Option<&str>) -> anyhow::Result<PathBuf> {
    if dir.join("etc/debian_version").is_file() {
        return Ok(dir.to_owned());
    }
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("debootstrap {} (once)...", dir.display());
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if let Some(p) = include {
        cmd.arg(format!("--include={p}"));
    }
    cmd.arg("bookworm").arg(dir);
    shoal_tests::run(&mut cmd, Duration::from_secs(900))
        .context("debootstrap (needs Debian's package mirror)")?;
    Ok(dir.to_owned())
}

/// The names in `dir`, sorted.
fn sorted_names(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| PathBuf::from(e.file_name())))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

/// A tar of `paths` under `root` (recursively, sorted) the way image builders write
/// one; returns its bytes.
fn pack(root: &Path, paths: &[PathBuf], tar: &Path) -> anyhow::Result<Vec<u8>> {
    shoal_tests::run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--sort=name", "-C"])
            .arg(root)
            .arg("-cf")
            .arg(tar)
            .args(paths),
        Duration::from_secs(300),
    )?;
    Ok(std::fs::read(tar)?)
}

/// What one path of a root is, for telling two roots apart.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    /// Not compared for directories.
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
    target: Option<PathBuf>,
    inode: (u64, u64),
    nlink: u64,
}

impl Stat {
    fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// Every path under `root` (relative), not following symlinks.
fn scan(root: &Path) -> anyhow::Result<BTreeMap<PathBuf, Stat>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir))? {
            let rel = dir.join(entry?.file_name());
            let path = root.join(&rel);
            let m = std::fs::symlink_metadata(&path)?;
            let stat = Stat {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: if m.is_dir() { 0 } else { m.size() },
                mtime: (m.mtime(), m.mtime_nsec()),
                rdev: m.rdev(),
                target: m
                    .file_type()
                    .is_symlink()
                    .then(|| std::fs::read_link(&path))
                    .transpose()?,
                inode: (m.dev(), m.ino()),
                nlink: m.nlink(),
            };
            if stat.is_dir() {
                dirs.push(rel.clone());
            }
            out.insert(rel, stat);
        }
    }
    Ok(out)
}

/// Regular files under `root` (each path once) and their bytes.
fn regular_files(root: &Path) -> anyhow::Result<(u64, u64)> {
    let all = scan(root)?;
    let files = all.values().filter(|s| s.is_file());
    Ok((files.clone().count() as u64, files.map(|s| s.size).sum()))
}

/// The layer that makes `v1`'s tree into `v2`'s: every path v2 adds or changes (type,
/// metadata or content; with the paths hardlinked to it), and a whiteout for each
/// path v2 removes (the topmost only). Returns the tar and what it holds.
fn diff_layer(v1: &Path, v2: &Path, work: &Path) -> anyhow::Result<(Vec<u8>, DiffFigures)> {
    let (old, new) = (scan(v1)?, scan(v2)?);
    let mut partners: BTreeMap<(u64, u64), Vec<&PathBuf>> = BTreeMap::new();
    for (path, stat) in &new {
        if !stat.is_dir() && stat.nlink > 1 {
            partners.entry(stat.inode).or_default().push(path);
        }
    }
    let mut changed: BTreeSet<&PathBuf> = BTreeSet::new();
    let mut figures = DiffFigures::default();
    for (path, stat) in &new {
        let same = match old.get(path) {
            None => false,
            Some(was) => {
                let meta = (was.mode, was.uid, was.gid, was.mtime, was.rdev)
                    == (stat.mode, stat.uid, stat.gid, stat.mtime, stat.rdev)
                    && was.target == stat.target;
                let content = was.size == stat.size
                    && (!stat.is_file()
                        || std::fs::read(v1.join(path))? == std::fs::read(v2.join(path))?);
                if content && !meta && stat.is_file() && was.is_file() {
                    figures.same_content_files += 1;
                    figures.same_content_bytes += stat.size;
                }
                meta && content
            }
        };
        if !same {
            changed.insert(path);
            if let Some(group) = partners.get(&stat.inode).filter(|_| !stat.is_dir()) {
                changed.extend(group.iter().copied());
            }
        }
    }
    let removed: Vec<&PathBuf> = old
        .keys()
        .filter(|p| !new.contains_key(*p))
        .filter(|p| match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                new.get(parent).is_some_and(Stat::is_dir)
            }
            _ => true,
        })
        .collect();

    let list = work.join("diff.list");
    let mut names = Vec::new();
    for path in &changed {
        names.extend_from_slice(path.as_os_str().as_bytes());
        names.push(0);
    }
    std::fs::write(&list, &names)?;
    let tar = work.join("diff.tar");
    shoal_tests::run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "-C"])
            .arg(v2)
            .arg("-cf")
            .arg(&tar)
            .args(["--no-recursion", "--null", "-T"])
            .arg(&list),
        Duration::from_secs(300),
    )?;
    if !removed.is_empty() {
        let staging = work.join("whiteouts");
        let mut names = Vec::new();
        for path in &removed {
            let mut name = std::ffi::OsString::from(".wh.");
            name.push(path.file_name().context("a removed path has a name")?);
            let wh = path.with_file_name(name);
            let at = staging.join(&wh);
            std::fs::create_dir_all(at.parent().context("under the staging dir")?)?;
            std::fs::File::create(&at)?;
            names.extend_from_slice(wh.as_os_str().as_bytes());
            names.push(0);
        }
        let wh_list = work.join("whiteouts.list");
        std::fs::write(&wh_list, &names)?;
        shoal_tests::run(
            Command::new("tar")
                .args(["--numeric-owner", "-C"])
                .arg(&staging)
                .arg("-rf")
                .arg(&tar)
                .args(["--no-recursion", "--null", "-T"])
                .arg(&wh_list),
            Duration::from_secs(300),
        )?;
    }
    figures.paths = changed.len() as u64;
    figures.whiteouts = removed.len() as u64;
    Ok((std::fs::read(&tar)?, figures))
}

/// Runs `f` after a `sync` (so no earlier write is flushed during it); its wall time.
fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    shoal_tests::run(&mut Command::new("sync"), Duration::from_secs(300))?;
    let start = Instant::now();
    let value = f()?;
    Ok((start.elapsed().as_secs_f64(), value))
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() { 0.0 } else { s[s.len() / 2] }
}
