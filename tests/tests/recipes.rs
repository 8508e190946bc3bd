//! Every stored layer gets a recipe of its uncompressed content; file contents are
//! stored once across layers and images, and the recipe re-creates the tar exactly.

use std::time::Duration;

use shoal_protocol::Digest;
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Layer, Layout, http_get, noise, podman_push};
use shoal_tests::process::wait_until;

fn stat(s: &serde_json::Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"))
}

/// The tar the node re-creates for `layer` from its recipe and chunks.
fn recreated(m: &Mirror, layer: &Digest) -> anyhow::Result<Vec<u8>> {
    let reply = http_get(&format!("{}/_shoal/layers/{layer}/tar", m.node.url()), &[])?;
    anyhow::ensure!(
        reply.status == 200,
        "no tar for {layer}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    Ok(reply.body)
}

#[test]
fn file_contents_are_stored_once_across_layers_and_images() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let conf = m.registries_conf()?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let big = noise(2 << 20, 1);
    let base = Layer::new()
        .dir("usr")
        .file("usr/big", big.clone())
        .file("usr/medium", noise(700_000, 2))
        .file("etc/small", "x=1\n")
        .file("etc/empty", "");
    let a_only = noise(300_000, 3);
    let b_only = noise(450_000, 4);
    let c_only = noise(200_000, 5);
    let a = layout.image(
        &[base.clone(), Layer::new().file("app/a", a_only.clone())],
        "amd64",
        Some("a"),
    )?;
    layout.image(
        &[base, Layer::new().file("app/b", b_only.clone())],
        "amd64",
        Some("b"),
    )?;
    // c has the base's big file again, but in another layer with other neighbours:
    // another blob, another tar, the same content.
    let c = layout.image(
        &[Layer::new()
            .file("opt/copy-of-big", big.clone())
            .file("opt/c", c_only.clone())],
        "amd64",
        Some("c"),
    )?;
    for tag in ["a", "b", "c"] {
        layout.push(
            tag,
            &format!("{}/dedup:{tag}", m.registry.addr),
            false,
            false,
        )?;
    }

    skopeo_copy(
        &conf,
        &format!("{}/dedup:a", m.alias),
        &m.path("out-a"),
        &[],
    )?;
    let s = m.node.wait_ingested(2)?;
    let content_a = (big.len() + 700_000 + 4 + a_only.len()) as u64;
    assert_eq!(stat(&s, "recipes"), 2, "{s}");
    assert_eq!(stat(&s, "content_stored_bytes"), content_a, "{s}");
    assert!(
        stat(&s, "content_logical_bytes") > content_a,
        "tars hold headers too: {s}"
    );
    // The recipe re-creates each layer's tar exactly: its sha256 is the diff_id.
    for (i, layer) in a.blobs[1..].iter().enumerate() {
        let tar = recreated(&m, layer)?;
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(m.path("out-a").join(a.blobs[0].hex()))?)?;
        assert_eq!(
            config["rootfs"]["diff_ids"][i].as_str(),
            Some(Digest::of(&tar).to_string().as_str())
        );
    }

    skopeo_copy(
        &conf,
        &format!("{}/dedup:b", m.alias),
        &m.path("out-b"),
        &[],
    )?;
    let s2 = m.node.wait_ingested(3)?;
    assert_eq!(
        stat(&s2, "content_stored_bytes") - stat(&s, "content_stored_bytes"),
        b_only.len() as u64,
        "{s2}"
    );

    skopeo_copy(
        &conf,
        &format!("{}/dedup:c", m.alias),
        &m.path("out-c"),
        &[],
    )?;
    let s3 = m.node.wait_ingested(4)?;
    assert_eq!(
        stat(&s3, "content_stored_bytes") - stat(&s2, "content_stored_bytes"),
        c_only.len() as u64,
        "only c's own file is new content: {s3}"
    );
    assert_eq!(stat(&s3, "ingest_failures"), 0, "{s3}");

    let report = shoal_tests::run(
        std::process::Command::new(shoal_tests::node::shoal_binary()?)
            .args(["inspect", "--json", "--node", &m.node.url()])
            .arg(format!("{}/dedup:c", m.alias)),
        Duration::from_secs(30),
    )?;
    let report: serde_json::Value = serde_json::from_slice(&report.stdout)?;
    let layer = &report["images"][0]["layers"][0];
    assert_eq!(
        layer["digest"].as_str(),
        Some(c.blobs[1].to_string().as_str()),
        "{report}"
    );
    assert_eq!(layer["files"].as_u64(), Some(2), "{report}");
    assert_eq!(
        layer["shared_bytes"].as_u64(),
        Some(big.len() as u64),
        "{report}"
    );
    let human = shoal_tests::run(
        std::process::Command::new(shoal_tests::node::shoal_binary()?)
            .args(["inspect", "--node", &m.node.url()])
            .arg(format!("{}/dedup:c", m.alias)),
        Duration::from_secs(30),
    )?;
    assert!(String::from_utf8(human.stdout)?.contains("SHARED"));
    Ok(())
}

#[test]
fn a_podman_built_layer_compressed_by_go_gets_an_exact_recipe() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let files = vec![
        ("bin/tool", noise(1_500_000, 9)),
        ("etc/conf", b"a=b\n".to_vec()),
        (
            "usr/share/doc/long-name-".repeat(6).leak() as &str,
            noise(70_000, 10),
        ),
    ];
    podman_push(
        &m.dir.path().join("podman-build"),
        &files,
        &format!("{}/gobuilt:v1", m.registry.addr),
    )?;
    let pulled = skopeo_copy(
        &m.registries_conf()?,
        &format!("{}/gobuilt:v1", m.alias),
        &m.path("out"),
        &[],
    )?;
    let s = m.node.wait_ingested(1)?;
    assert_eq!(stat(&s, "recipes"), 1, "{s}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("out").join("manifest.json"))?)?;
    let layer: Digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(
        m.path("out").join(
            manifest["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("sha256:"),
        ),
    )?)?;
    let tar = recreated(&m, &layer)?;
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str(),
        Some(Digest::of(&tar).to_string().as_str())
    );
    assert!(pulled.blobs.contains(&layer));
    Ok(())
}

#[test]
fn hostile_layers_get_no_recipe_and_leave_nothing_behind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, "[ingest]\nmax_tar_size = 8388608\n")?;
    let m = Mirror::start(&["--config", config.to_str().unwrap_or_default()])?;
    let conf = m.registries_conf()?;
    let mut layout = Layout::new(&m.path("layout"))?;
    // A bomb (for this node's 8 MiB bound): 32 MiB of zeros gzip to a few kB.
    let bomb = Layer::new().file("zeros", vec![0u8; 32 << 20]);
    // A tar cut inside a file's content.
    let mut cut = Layer::new().file("f", noise(100_000, 1)).tar()?;
    cut.truncate(512 + 50_000);
    // A header whose size lies: it claims more content than the tar holds.
    let liar = {
        let mut t = Layer::new().file("g", noise(2_000, 2)).tar()?;
        t.truncate(512 + 2_048);
        t[124..135].copy_from_slice(b"00000100000");
        let sum: u32 = t[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        t[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        t.extend(vec![0u8; 1024]);
        t
    };
    let honest = Layer::new().file("ok", noise(50_000, 3));
    let images = [
        ("bomb", layout.image(&[bomb], "amd64", Some("bomb"))?),
        (
            "cut",
            layout.image(&[Layer::raw_tar(cut)], "amd64", Some("cut"))?,
        ),
        (
            "liar",
            layout.image(&[Layer::raw_tar(liar)], "amd64", Some("liar"))?,
        ),
        // A config whose diff_id is not the layer's.
        (
            "lying-config",
            layout.image_with_diff_ids(
                &[honest],
                "amd64",
                Some("lying-config"),
                Some(vec![Digest::of(b"not it")]),
            )?,
        ),
    ];
    for (i, (tag, built)) in images.iter().enumerate() {
        layout.push(
            tag,
            &format!("{}/hostile:{tag}", m.registry.addr),
            false,
            false,
        )?;
        // Engines still get every blob byte for byte: only the recipe is refused.
        let pulled = skopeo_copy(
            &conf,
            &format!("{}/hostile:{tag}", m.alias),
            &m.path(&format!("out-{tag}")),
            &[],
        )?;
        assert_eq!(pulled.manifest, built.manifest);
        wait_until(
            &format!("{tag} to be refused"),
            Duration::from_secs(60),
            || Ok(m.node.stat("ingest_failures")? == i as u64 + 1),
        )?;
    }
    let s = m.node.stats()?;
    assert_eq!(
        (
            stat(&s, "recipes"),
            stat(&s, "chunks"),
            stat(&s, "content_stored_bytes")
        ),
        (0, 0, 0),
        "{s}"
    );
    let log = m.node.log();
    for expected in ["max_tar_size", "truncated", "image config says"] {
        assert!(
            log.contains(expected),
            "the log should say {expected:?}:\n{}",
            m.node.log_tail()
        );
    }
    Ok(())
}

#[test]
fn zstd_and_uncompressed_layers_get_exact_recipes_too() -> anyhow::Result<()> {
    use shoal_tests::image::LayerCompression;
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let mut layers = Vec::new();
    for (i, c) in [LayerCompression::Zstd, LayerCompression::None]
        .into_iter()
        .enumerate()
    {
        layout.compression = c;
        let tag = format!("c{i}");
        let built = layout.image(
            &[Layer::new()
                .file("f", noise(400_000, 40 + i as u64))
                .file("g", "small")],
            "amd64",
            Some(&tag),
        )?;
        layout.push_exact(&built, &m.registry.url(), "compress", &tag)?;
        skopeo_copy(
            &m.registries_conf()?,
            &format!("{}/compress:{tag}", m.alias),
            &m.path(&format!("out-{tag}")),
            &[],
        )?;
        layers.push(built.blobs[1]);
    }
    let s = m.node.wait_ingested(2)?;
    assert_eq!(stat(&s, "ingest_failures"), 0, "{s}");
    for layer in layers {
        let tar = recreated(&m, &layer)?;
        let held = std::fs::read(layout.dir.join("blobs/sha256").join(layer.hex()))?;
        let original = if held.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::bulk::decompress(&held, 64 << 20)?
        } else {
            held
        };
        assert!(
            tar == original,
            "the re-created tar of {layer} differs from the original"
        );
    }
    Ok(())
}
