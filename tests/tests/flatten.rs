//! Flat images end to end, as an operator uses them: `shoal flatten` gives the tree
//! umoci unpacks from the same image, entry by entry; `shoal mount` gives each mount
//! its own writes over one shared read-only tree and keeps the image from GC until
//! `shoal umount`; `shoal export --flat` writes an archive podman, skopeo and
//! containerd load, the same bytes on every node, with the image's hardlinks and only
//! those; a hostile layer fails with its entry named and nothing written.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use shoal_protocol::Digest;
use shoal_tests::containerd::Containerd;
use shoal_tests::fixture::Mirror;
use shoal_tests::flat::{
    MountGuard, Podman, RichLayer, archive_layer_tar, describe_tree, inode_groups,
    overlay_mounted_at, tar_hardlinks, umoci_unpack,
};
use shoal_tests::image::{Layer, LayerCompression, Layout, http_get};
use shoal_tests::node::Node;

/// `security.capability`, revision 2, effective, three capabilities permitted; its
/// first value byte is a newline.
const CAPABILITY: [u8; 20] = [
    1, 0, 0, 2, 0x0a, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Three layers using every rule of the OCI layer spec that flattening applies. The
/// image's hardlinks: `etc/passwd-link` is `etc/passwd`; `usr/bin/tool-link` was
/// `usr/bin/tool` until layer 1 replaced that; `srv/same-a` and `srv/same-b` are
/// identical (content and metadata) but two files.
fn rich_layers() -> Vec<Layer> {
    let base = RichLayer::new()
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/remove-me", b"whited out by layer 1")
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/tool", b"\x7fELF tool v1")
        .mode(0o4755)
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .symlink("usr/bin/sh", "tool")
        .file("usr/bin/ping", b"\x7fELF ping")
        .mode(0o755)
        .xattr("security.capability", &CAPABILITY)
        .xattr("user.origin", b"layer 0")
        .dir("gone")
        .file("gone/a", b"a")
        .file("gone/b", b"b")
        .dir("opq")
        .file("opq/old", b"hidden by an opaque marker")
        .dir("opq/sub")
        .file("opq/sub/deep", b"hidden too")
        .dir("home")
        .dir("home/user")
        .mode(0o750)
        .owner(1000, 1000)
        .file("home/user/.profile", b"export PS1='$ '\n")
        .mode(0o600)
        .owner(1000, 1000)
        .dir("tmp")
        .mode(0o1777);
    let middle = RichLayer::new()
        .whiteout("", "gone")
        .dir("opq")
        .opaque("opq")
        .file("opq/new", b"after the marker")
        .whiteout("etc", "remove-me")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/ash\n")
        .file("usr/bin/tool", b"\x7fELF tool v2")
        .mode(0o4755);
    let top = RichLayer::new()
        .hardlink("etc/passwd-link", "etc/passwd")
        .symlink("usr/bin/sh", "/usr/bin/tool")
        .file("srv/data", b"served")
        .file("srv/same-a", b"identical")
        .file("srv/same-b", b"identical");
    vec![base.layer(), middle.layer(), top.layer()]
}

/// Pushes `layers` as `repo:v1` to the origin and pulls it into the node; returns the
/// image's name through the node's alias.
fn publish(
    m: &Mirror,
    layout: &mut Layout,
    repo: &str,
    layers: &[Layer],
) -> anyhow::Result<String> {
    layout.image(layers, "amd64", Some("v1"))?;
    layout.push(
        "v1",
        &format!("{}/{repo}:v1", m.registry.addr),
        false,
        false,
    )?;
    let image = format!("{}/{repo}:v1", m.alias);
    m.node.cli_json(&["pull", &image])?;
    Ok(image)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn flatten_gives_the_tree_umoci_unpacks_and_shares_its_files() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let image = publish(&m, &mut layout, "flat/app", &rich_layers())?;

    let out = m.path("flat-tree");
    let report =
        m.node
            .cli_json(&["flatten", &image, "--out", out.to_str().unwrap_or_default()])?;
    assert_eq!(report["layers"], 3, "{report}");
    assert_eq!(report["path"], out.display().to_string());
    assert!(report["objects_new"].as_u64() >= Some(8), "{report}");

    let rootfs = umoci_unpack(
        &format!("{}/flat/app:v1", m.registry.addr),
        &m.path("umoci"),
        "v1",
    )?;
    let (ours, theirs) = (describe_tree(&out)?, describe_tree(&rootfs)?);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same names"
    );
    for (name, what) in &ours {
        assert_eq!(what, &theirs[name], "{name}: shoal's, then umoci's");
    }
    // The rules, spelled out.
    for gone in ["gone", "opq/old", "opq/sub", "etc/remove-me"] {
        assert!(!ours.contains_key(gone), "{gone} was whited out");
    }
    assert!(
        ours["usr/bin/tool"].contains("mode 4755"),
        "{}",
        ours["usr/bin/tool"]
    );
    assert!(ours["usr/bin/ping"].contains("security.capability"));
    assert_eq!(
        std::fs::read(out.join("usr/bin/tool-link"))?,
        b"\x7fELF tool v1"
    );
    let ino = |p: &str| std::fs::symlink_metadata(out.join(p)).map(|m| m.ino());
    assert_eq!(
        ino("etc/passwd-link")?,
        ino("etc/passwd")?,
        "a hardlink shares its inode"
    );

    // A second flatten writes no object: every file is a link to one already there.
    let again = m.path("flat-tree-2");
    let second = m.node.cli_json(&[
        "flatten",
        &image,
        "--out",
        again.to_str().unwrap_or_default(),
    ])?;
    assert_eq!(second["objects_new"], 0, "{second}");
    assert_eq!(second["objects_reused"], second["files"], "{second}");
    assert_eq!(
        ino("srv/data")?,
        std::fs::metadata(again.join("srv/data"))?.ino()
    );

    // An existing --out is refused and left alone.
    let refused = m
        .node
        .cli(&["flatten", &image, "--out", out.to_str().unwrap_or_default()])?;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("already exists"),
        "{}",
        stderr(&refused)
    );
    Ok(())
}

#[test]
fn a_layer_without_a_recipe_is_read_from_its_blob() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    layout.compression = LayerCompression::Zstd;
    // A config whose diff_ids lie: ingest keeps no recipe, so flatten decompresses.
    let layers = [
        Layer::new().file("a/one", "1"),
        Layer::new().file("a/two", "2"),
    ];
    let lies = vec![Digest::of(b"not the tar"), Digest::of(b"nor this")];
    layout.image_with_diff_ids(&layers, "amd64", Some("v1"), Some(lies))?;
    layout.push(
        "v1",
        &format!("{}/norecipe:v1", m.registry.addr),
        false,
        false,
    )?;
    let image = format!("{}/norecipe:v1", m.alias);
    m.node.cli_json(&["pull", &image])?;
    shoal_tests::process::wait_until("ingest to give up", Duration::from_secs(60), || {
        Ok(m.node.stat("ingest_failures")? >= 2)
    })?;
    assert_eq!(m.node.stat("recipes")?, 0);
    let out = m.path("tree");
    m.node
        .cli_json(&["flatten", &image, "--out", out.to_str().unwrap_or_default()])?;
    assert_eq!(std::fs::read(out.join("a/one"))?, b"1");
    assert_eq!(std::fs::read(out.join("a/two"))?, b"2");
    Ok(())
}

#[test]
fn mounts_keep_writes_apart_pin_the_image_and_umount_undoes_everything() -> anyhow::Result<()> {
    let conf_dir = tempfile::Builder::new()
        .prefix("shoal-flat-conf-")
        .tempdir()?;
    let conf = conf_dir.path().join("node.toml");
    std::fs::write(
        &conf,
        "[gc]\nbudget = \"1\"\nin_use = \"1s\"\nmax_age = \"off\"\nkeep_versions = 0\ninterval = \"1h\"\n",
    )?;
    let mut m = Mirror::start(&["--config", conf.to_str().unwrap_or_default()])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let image = publish(&m, &mut layout, "flat/mounted", &rich_layers())?;
    let (t1, t2) = (m.path("mnt-1"), m.path("mnt-2"));
    std::fs::create_dir(&t1)?;
    std::fs::create_dir(&t2)?;
    let _g1 = MountGuard(t1.clone());
    let _g2 = MountGuard(t2.clone());

    let first = m
        .node
        .cli_json(&["mount", &image, t1.to_str().unwrap_or_default()])?;
    let second = m
        .node
        .cli_json(&["mount", &image, t2.to_str().unwrap_or_default()])?;
    assert_eq!(
        second["tree"]["reused"], true,
        "one tree for both: {second}"
    );
    assert!(overlay_mounted_at(&t1)? && overlay_mounted_at(&t2)?);
    let lower = Path::new(first["mount"]["lower"].as_str().unwrap_or_default()).to_owned();
    let upper = Path::new(first["mount"]["upper"].as_str().unwrap_or_default()).to_owned();
    assert_eq!(std::fs::read(t1.join("srv/data"))?, b"served");

    // Writes land in the mount's upper dir; the shared tree and the other mount see
    // none of them.
    std::fs::write(t1.join("srv/new"), b"written through the mount")?;
    std::fs::write(t1.join("etc/passwd"), b"changed\n")?;
    assert_eq!(
        std::fs::read(upper.join("srv/new"))?,
        b"written through the mount"
    );
    assert_eq!(std::fs::read(upper.join("etc/passwd"))?, b"changed\n");
    assert_eq!(
        std::fs::read(lower.join("etc/passwd"))?,
        b"root:x:0:0:root:/root:/bin/ash\n"
    );
    assert_eq!(
        std::fs::read(t2.join("etc/passwd"))?,
        b"root:x:0:0:root:/root:/bin/ash\n"
    );
    assert!(!t2.join("srv/new").exists());
    assert!(
        std::fs::metadata(lower.join("etc/passwd"))?.nlink() >= 2,
        "a shared object"
    );

    // Pinned: GC with a one-byte budget keeps it, and rm refuses.
    std::thread::sleep(Duration::from_secs(2));
    m.node.cli_json(&["gc"])?;
    let images = m.node.cli_json(&["images"])?;
    let listed = images
        .as_array()
        .and_then(|a| a.iter().find(|i| i["repo"] == "flat/mounted").cloned())
        .unwrap_or_default();
    let pins = listed["pins"].to_string();
    assert!(
        pins.contains(&format!("mount:{}", t1.display())),
        "{images}"
    );
    assert!(
        pins.contains(&format!("mount:{}", t2.display())),
        "{images}"
    );
    let rm = m.node.cli(&["rm", &image])?;
    assert!(!rm.status.success());
    assert!(stderr(&rm).contains("pinned"), "{}", stderr(&rm));

    // A restarted node still knows its mounts, and mounts again one the system lost
    // (as after a reboot), with what was written to it.
    std::fs::write(t2.join("srv/kept"), b"survives a remount")?;
    shoal_tests::run(
        std::process::Command::new("umount").arg(&t2),
        Duration::from_secs(30),
    )?;
    assert!(!overlay_mounted_at(&t2)?);
    m.node.restart()?;
    let mounts = m.node.cli_json(&["mounts"])?;
    assert_eq!(mounts.as_array().map(Vec::len), Some(2), "{mounts}");
    assert!(
        mounts
            .as_array()
            .into_iter()
            .flatten()
            .all(|x| x["mounted"] == true)
    );
    assert_eq!(std::fs::read(t2.join("srv/kept"))?, b"survives a remount");

    // umount: the mount, its writes and its pin go; the other mount stays.
    let gone = m
        .node
        .cli_json(&["umount", t1.to_str().unwrap_or_default()])?;
    assert_eq!(gone["mounted"], false);
    assert!(!overlay_mounted_at(&t1)? && overlay_mounted_at(&t2)?);
    assert!(!upper.exists());
    let again = m.node.cli(&["umount", t1.to_str().unwrap_or_default()])?;
    assert!(
        stderr(&again).contains("has no shoal mount"),
        "{}",
        stderr(&again)
    );
    m.node
        .cli_json(&["umount", t2.to_str().unwrap_or_default()])?;
    assert!(!overlay_mounted_at(&t2)?);
    assert_eq!(m.node.cli_json(&["mounts"])?, serde_json::json!([]));
    std::thread::sleep(Duration::from_secs(2));
    m.node.cli_json(&["rm", &image])?;

    // With the image gone from the store, a prune removes its tree and the objects
    // nothing links any more.
    let pruned = shoal_tests::run(
        std::process::Command::new("curl")
            .args(["-sS", "--fail", "--noproxy", "*", "-X", "POST"])
            .arg(format!("{}/_shoal/flat/prune", m.node.url())),
        Duration::from_secs(60),
    )?;
    let pruned: serde_json::Value = serde_json::from_slice(&pruned.stdout)?;
    assert_eq!(pruned["trees"], 1, "{pruned}");
    // Nine files; etc/passwd-link is etc/passwd, and srv/same-a and srv/same-b have one
    // object: eight objects.
    assert_eq!(pruned["objects"], 8, "{pruned}");
    assert!(!lower.exists());
    let mut links_file = lower.into_os_string();
    links_file.push(".links.json");
    assert!(
        !Path::new(&links_file).exists(),
        "the tree's links file goes too"
    );
    Ok(())
}

#[test]
fn export_flat_loads_in_engines_and_is_the_same_bytes_on_every_node() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    layout.runtime_config = Some(serde_json::json!({
        "Env": ["PATH=/usr/bin:/bin", "GREETING=hello"],
        "Entrypoint": ["/usr/bin/tool"],
        "Cmd": ["--serve"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
        "Labels": {"org.example.flat": "yes"},
        "ExposedPorts": {"8080/tcp": {}},
    }));
    let image = publish(&m, &mut layout, "flat/export", &rich_layers())?;
    let (a, b) = (m.path("a.tar"), m.path("b.tar"));
    let first = m.node.cli_json(&[
        "export",
        "--flat",
        &image,
        "-o",
        a.to_str().unwrap_or_default(),
    ])?;
    let second = m.node.cli_json(&[
        "export",
        "--flat",
        &image,
        "-o",
        b.to_str().unwrap_or_default(),
    ])?;
    assert_eq!(first["name"], image.as_str(), "{first}");
    assert_eq!(second["reused"], true, "{second}");
    let bytes = std::fs::read(&a)?;
    assert_eq!(bytes, std::fs::read(&b)?, "two exports, one archive");
    assert_eq!(first["archive_size"], bytes.len());

    // A second node with a fresh data dir makes the same bytes.
    let node2 = Node::start_named(
        m.dir.path(),
        "node2",
        &m.registry.url(),
        &["--registry", &format!("{}={}", m.alias, m.registry.url())],
    )?;
    node2.cli_json(&["pull", &image])?;
    let c = m.path("c.tar");
    let third = node2.cli_json(&[
        "export",
        "--flat",
        &image,
        "-o",
        c.to_str().unwrap_or_default(),
    ])?;
    assert_eq!(third["layer"], first["layer"], "{third}");
    assert_eq!(third["reused"], false);
    assert_eq!(
        std::fs::read(&c)?,
        bytes,
        "the same archive from another node"
    );

    // A tree and an export an older shoal made (no links file; an export record
    // without a version) are made again, to the same bytes.
    let hex = first["source_manifest"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:");
    let flat = m.node.data_dir.join("flat");
    let links_file = flat.join(format!("trees/{hex}.links.json"));
    assert!(links_file.is_file(), "{}", links_file.display());
    std::fs::remove_file(&links_file)?;
    let record = flat.join(format!("exports/{hex}/export.json"));
    let mut older: serde_json::Value = serde_json::from_slice(&std::fs::read(&record)?)?;
    older
        .as_object_mut()
        .and_then(|o| o.remove("version"))
        .ok_or_else(|| anyhow::anyhow!("no version in {older}"))?;
    std::fs::write(&record, serde_json::to_vec(&older)?)?;
    let d = m.path("d.tar");
    let remade = m.node.cli_json(&[
        "export",
        "--flat",
        &image,
        "-o",
        d.to_str().unwrap_or_default(),
    ])?;
    assert_eq!(remade["reused"], false, "{remade}");
    assert_eq!(remade["tree"]["reused"], false, "{remade}");
    assert_eq!(std::fs::read(&d)?, bytes, "made again, the same archive");
    assert!(links_file.is_file());

    // Its hardlinks are the image's, and only those: identical files stay two files.
    let layer_tar = archive_layer_tar(&bytes, first["layer"].as_str().unwrap_or_default())?;
    assert_eq!(
        tar_hardlinks(&layer_tar)?,
        [("etc/passwd-link".to_owned(), "etc/passwd".to_owned())]
    );
    assert_eq!(first["hardlinks"], 1, "{first}");

    // skopeo reads it as an OCI archive, with one layer.
    let dir = m.path("skopeo-dir");
    shoal_tests::run(
        std::process::Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci-archive:{}", a.display()))
            .arg(format!("dir:{}", dir.display())),
        Duration::from_secs(120),
    )?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(manifest["layers"][0]["digest"], first["layer"]);

    // Unpacked by umoci, it is the tree shoal flattens.
    let out = m.path("tree");
    m.node
        .cli_json(&["flatten", &image, "--out", out.to_str().unwrap_or_default()])?;
    let layout_dir = m.path("exported-layout");
    shoal_tests::run(
        std::process::Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci-archive:{}", a.display()))
            .arg(format!("oci:{}:flat", layout_dir.display())),
        Duration::from_secs(120),
    )?;
    let bundle = m.path("exported-bundle");
    shoal_tests::run(
        std::process::Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:flat", layout_dir.display()))
            .arg(&bundle),
        Duration::from_secs(120),
    )?;
    assert_eq!(describe_tree(&bundle.join("rootfs"))?, describe_tree(&out)?);
    // And it links what umoci's unpacking of the source image links.
    let source = umoci_unpack(
        &format!("{}/flat/export:v1", m.registry.addr),
        &m.path("umoci-source"),
        "v1",
    )?;
    let links = inode_groups(&source)?;
    assert_eq!(
        links,
        [vec!["etc/passwd".to_owned(), "etc/passwd-link".to_owned()]].into(),
        "the image's hardlinks, unpacked by umoci"
    );
    assert_eq!(inode_groups(&bundle.join("rootfs"))?, links);

    // podman loads it under the image's name, with the runtime settings kept.
    let podman = Podman::new(&m.path("podman"))?;
    let loaded = podman.run(
        &["load", "-i", a.to_str().unwrap_or_default()],
        Duration::from_secs(120),
    )?;
    assert!(loaded.status.success(), "podman load: {}", stderr(&loaded));
    let inspect = podman.inspect(&image)?;
    let config = &inspect["Config"];
    assert_eq!(
        config["Env"],
        serde_json::json!(["PATH=/usr/bin:/bin", "GREETING=hello"])
    );
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/bin/tool"]));
    assert_eq!(config["Cmd"], serde_json::json!(["--serve"]));
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["Labels"]["org.example.flat"], "yes");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    assert_eq!(
        inspect["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1)
    );

    // containerd imports it under the same name, at the exported manifest.
    let containerd = Containerd::start(&m.path("containerd"))?;
    shoal_tests::run(
        containerd
            .ctr()
            .args(["images", "import", "--snapshotter", "native"])
            .arg(&a),
        Duration::from_secs(120),
    )?;
    let digest = containerd.image_digest(&image)?;
    assert_eq!(
        digest.to_string(),
        first["manifest"].as_str().unwrap_or_default()
    );
    Ok(())
}

#[test]
fn a_layer_escaping_the_root_fails_naming_the_entry_and_writes_nothing() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let layers = [
        Layer::new().file("fine", "ok"),
        RichLayer::new().raw_file(b"../evil", b"escaped").layer(),
    ];
    let image = publish(&m, &mut layout, "flat/hostile", &layers)?;
    let parent = m.path("out-parent");
    std::fs::create_dir(&parent)?;
    let out = parent.join("tree");
    let failed = m
        .node
        .cli(&["flatten", &image, "--out", out.to_str().unwrap_or_default()])?;
    assert!(!failed.status.success());
    let said = stderr(&failed);
    assert!(
        said.contains("../evil") && said.contains("leaves the root"),
        "{said}"
    );
    assert!(said.contains("layer 1"), "{said}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(&parent)?.count(),
        0,
        "no partial tree left"
    );
    assert!(!parent.join("evil").exists() && !m.path("evil").exists());
    Ok(())
}

#[test]
fn a_podman_built_image_of_real_files_flattens_like_umoci_unpacks_it() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    // Real files with everything /etc holds (symlink farms, setuid-free configs,
    // empty dirs, odd modes), written into layers by podman's own (Go) tar and gzip
    // writers: a base of the host's /etc, a layer of documentation, and a layer that
    // overwrites a base file.
    let ctx = m.path("context");
    std::fs::create_dir_all(ctx.join("docs"))?;
    let etc_tar = ctx.join("etc.tar");
    shoal_tests::run(
        std::process::Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "-C", "/", "-cf"])
            .arg(&etc_tar)
            .args(["--exclude=etc/ssl/private", "etc"]),
        Duration::from_secs(60),
    )?;
    for doc in ["apt", "bash", "coreutils", "tar"] {
        let from = Path::new("/usr/share/doc").join(doc);
        if from.exists() {
            shoal_tests::run(
                std::process::Command::new("cp")
                    .arg("-a")
                    .arg(&from)
                    .arg(ctx.join("docs")),
                Duration::from_secs(60),
            )?;
        }
    }
    std::fs::write(ctx.join("hostname"), "flattened\n")?;
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nADD etc.tar /\nCOPY docs /usr/share/doc\nCOPY hostname /etc/hostname\n",
    )?;
    let podman = Podman::new(&m.path("podman"))?;
    let out = podman.run(
        &[
            "build",
            "-q",
            "--layers",
            "-t",
            "localhost/real:v1",
            "-f",
            &ctx.join("Containerfile").display().to_string(),
            &ctx.display().to_string(),
        ],
        Duration::from_secs(300),
    )?;
    anyhow::ensure!(out.status.success(), "podman build: {}", stderr(&out));
    let out = podman.run(
        &[
            "push",
            "--tls-verify=false",
            "localhost/real:v1",
            &format!("docker://{}/real:v1", m.registry.addr),
        ],
        Duration::from_secs(300),
    )?;
    anyhow::ensure!(out.status.success(), "podman push: {}", stderr(&out));

    let image = format!("{}/real:v1", m.alias);
    let pulled = m.node.cli_json(&["pull", &image])?;
    assert!(
        pulled["blobs"].as_u64() >= Some(4),
        "config and 3+ layers: {pulled}"
    );
    let out = m.path("flat-real");
    m.node
        .cli_json(&["flatten", &image, "--out", out.to_str().unwrap_or_default()])?;
    let rootfs = umoci_unpack(
        &format!("{}/real:v1", m.registry.addr),
        &m.path("umoci-real"),
        "v1",
    )?;
    let (ours, theirs) = (describe_tree(&out)?, describe_tree(&rootfs)?);
    assert!(ours.len() > 100, "a real tree: {} entries", ours.len());
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same names"
    );
    for (name, what) in &ours {
        assert_eq!(what, &theirs[name], "{name}: shoal's, then umoci's");
    }
    assert_eq!(std::fs::read(out.join("etc/hostname"))?, b"flattened\n");
    Ok(())
}

#[test]
fn a_repository_served_flat_pulls_as_its_flat_export_in_engines() -> anyhow::Result<()> {
    let m = Mirror::start(&["--flat-repository", "flat/served"])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    layout.runtime_config = Some(serde_json::json!({
        "Env": ["PATH=/usr/bin:/bin", "MODE=flat"],
        "Cmd": ["/usr/bin/tool"],
    }));
    layout.image(&rich_layers(), "amd64", Some("v1"))?;
    for repo in ["flat/served", "plain/app"] {
        layout.push(
            "v1",
            &format!("{}/{repo}:v1", m.registry.addr),
            false,
            false,
        )?;
    }
    let node = m.node.url();
    let host = node.trim_start_matches("http://");
    let oci = "Accept: application/vnd.oci.image.manifest.v1+json";

    // The configured repository answers with one layer, the flat export's manifest.
    let reply = http_get(&format!("{node}/v2/flat/served/manifests/v1"), &[oci])?;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let flat: serde_json::Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(flat["layers"].as_array().map(Vec::len), Some(1), "{flat}");
    let digest = Digest::of(&reply.body).to_string();
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    let export = m.node.cli_json(&[
        "export",
        "--flat",
        &format!("{}/flat/served:v1", m.registry.addr),
        "-o",
        m.path("flat.tar").to_str().unwrap_or_default(),
    ])?;
    assert_eq!(
        export["reused"], true,
        "the mirror made the export: {export}"
    );
    assert_eq!(export["manifest"], digest.as_str(), "{export}");
    assert_eq!(flat["layers"][0]["digest"], export["layer"]);

    // By its own digest too, and its layer with a range.
    let again = http_get(&format!("{node}/v2/flat/served/manifests/{digest}"), &[oci])?;
    assert_eq!((again.status, &again.body), (200, &reply.body));
    let layer = flat["layers"][0]["digest"].as_str().unwrap_or_default();
    let whole = http_get(&format!("{node}/v2/flat/served/blobs/{layer}"), &[])?;
    assert_eq!(whole.status, 200);
    assert_eq!(Digest::of(&whole.body).to_string(), layer);
    let part = http_get(
        &format!("{node}/v2/flat/served/blobs/{layer}"),
        &["Range: bytes=10-99"],
    )?;
    assert_eq!((part.status, &part.body[..]), (206, &whole.body[10..100]));

    // Other repositories are served as the origin has them, and the flat blobs are not
    // theirs to hand out.
    let plain = http_get(&format!("{node}/v2/plain/app/manifests/v1"), &[oci])?;
    let origin = http_get(
        &format!("{}/v2/plain/app/manifests/v1", m.registry.url()),
        &[oci],
    )?;
    assert_eq!((plain.status, &plain.body), (200, &origin.body));
    let leaked = http_get(&format!("{node}/v2/plain/app/blobs/{layer}"), &[])?;
    assert_eq!(
        leaked.status, 404,
        "a flat layer through another repository"
    );

    // skopeo copies it with every digest checked; podman pulls it as one layer with the
    // image's runtime settings.
    let dir = m.path("skopeo-dir");
    shoal_tests::run(
        std::process::Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/flat/served:v1"))
            .arg(format!("dir:{}", dir.display())),
        Duration::from_secs(120),
    )?;
    assert_eq!(std::fs::read(dir.join("manifest.json"))?, reply.body);
    let podman = Podman::new(&m.path("podman"))?;
    let image = format!("{host}/flat/served:v1");
    let pulled = podman.run(
        &["pull", "--tls-verify=false", &image],
        Duration::from_secs(120),
    )?;
    assert!(pulled.status.success(), "podman pull: {}", stderr(&pulled));
    let inspect = podman.inspect(&image)?;
    assert_eq!(
        inspect["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "{inspect}"
    );
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(
        inspect["Config"]["Env"],
        serde_json::json!(["PATH=/usr/bin:/bin", "MODE=flat"])
    );

    // containerd, through the node as the alias's mirror (`?ns=`), gets the same image.
    let hosts_dir = m.path("certs.d");
    m.node.configure(
        "containerd",
        &[
            "--only",
            &m.alias,
            "--write",
            hosts_dir.to_str().unwrap_or_default(),
        ],
    )?;
    let containerd = Containerd::start(&m.path("containerd"))?;
    let image = format!("{}/flat/served:v1", m.alias);
    containerd.pull(&hosts_dir, &image)?;
    assert_eq!(containerd.image_digest(&image)?.to_string(), digest);
    let content = containerd.content()?;
    assert!(
        content.iter().any(|d| d.to_string() == layer),
        "{content:?}"
    );
    Ok(())
}
