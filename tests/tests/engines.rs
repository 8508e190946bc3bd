//! containerd (with ctr) and dockerd pull through a node, configured exactly as
//! `shoal configure` prints, and end up with the origin's exact manifests and blobs.

use shoal_protocol::Digest;
use shoal_tests::containerd::Containerd;
use shoal_tests::dockerd::DockerMirror;
use shoal_tests::fixture::{ACCEPT_ALL, Mirror};
use shoal_tests::image::{Layer, Layout, http_get, noise};

/// The platform architecture of this machine, as image configs name it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The manifest digest the origin gives for `repo:tag`, and the digests of everything
/// the manifest names (config and layers), read from the origin with curl.
fn origin_manifest(
    registry_url: &str,
    repo: &str,
    tag: &str,
) -> anyhow::Result<(Digest, Vec<Digest>)> {
    let reply = http_get(
        &format!("{registry_url}/v2/{repo}/manifests/{tag}"),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    anyhow::ensure!(
        reply.status == 200,
        "origin answered {} for {repo}:{tag}",
        reply.status
    );
    let manifest: serde_json::Value = serde_json::from_slice(&reply.body)?;
    let mut blobs = vec![
        manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()?,
    ];
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        blobs.push(layer["digest"].as_str().unwrap_or_default().parse()?);
    }
    Ok((Digest::of(&reply.body), blobs))
}

fn two_layers(seed: u64) -> [Layer; 2] {
    [
        Layer::new()
            .dir("etc")
            .file("etc/os-release", "ID=shoal-test\n")
            .file("bin/tool", noise(3 << 20, seed)),
        Layer::new()
            .file("app/run", noise(600_000, seed + 1))
            .file("app/config", "port=1\n"),
    ]
}

#[test]
fn containerd_pulls_through_the_node_with_the_hosts_toml_shoal_writes() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(&two_layers(11), host_arch(), Some("v1"))?;
    layout.push("v1", &format!("{}/app:v1", m.registry.addr), false, false)?;
    layout.push(
        "v1",
        &format!("{}/app-docker:v1", m.registry.addr),
        true,
        false,
    )?;

    let hosts_dir = m.path("certs.d");
    let hosts_dir_arg = hosts_dir.display().to_string();
    m.node.configure(
        "containerd",
        &["--only", &m.alias, "--write", &hosts_dir_arg],
    )?;
    let hosts_toml = std::fs::read_to_string(hosts_dir.join(&m.alias).join("hosts.toml"))?;
    assert!(
        hosts_toml.contains(&format!("[host.\"{}\"]", m.node.url())),
        "{hosts_toml}"
    );

    let containerd = Containerd::start(&m.path("containerd"))?;
    for (repo, expect_manifest) in [("app", Some(built.manifest)), ("app-docker", None)] {
        let image = format!("{}/{repo}:v1", m.alias);
        let before = m.node.stats()?;
        containerd.pull(&hosts_dir, &image)?;
        let after = m.node.stats()?;

        let (origin, origin_blobs) = origin_manifest(&m.registry.url(), repo, "v1")?;
        if let Some(d) = expect_manifest {
            assert_eq!(origin, d, "{repo}: the origin keeps the manifest as built");
        }
        assert_eq!(containerd.image_digest(&image)?, origin, "{repo}");
        // Everything containerd holds, each checked against its bytes, is exactly the
        // manifests pulled so far and the blobs they name.
        let content = containerd.content()?;
        assert!(content.contains(&origin), "{repo}: {content:?}");
        for blob in &origin_blobs {
            assert!(
                content.contains(blob),
                "{repo}: {blob} missing from {content:?}"
            );
        }
        let served = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
        assert!(served("manifests_served") >= 1, "{repo}: {after}");
        assert!(served("bytes_served") > 0, "{repo}: {after}");
    }
    // ctr unpacked the layers: some snapshot is the whole image's filesystem.
    let unpacked = containerd.native_snapshots()?.into_iter().any(|s| {
        std::fs::read(s.join("app/config")).ok().as_deref() == Some(b"port=1\n".as_slice())
            && std::fs::read(s.join("etc/os-release")).ok().as_deref()
                == Some(b"ID=shoal-test\n".as_slice())
    });
    assert!(
        unpacked,
        "no native snapshot holds the image: {:?}",
        containerd.native_snapshots()?
    );
    // app and app-docker share config and layers; only the manifests differ.
    let mut expected = built.blobs.clone();
    expected.push(built.manifest);
    expected.push(origin_manifest(&m.registry.url(), "app-docker", "v1")?.0);
    expected.sort();
    assert_eq!(containerd.content()?, expected);

    let stats = m.node.stats()?;
    assert!(
        stats["bytes_served"].as_u64().unwrap_or(0) > 3 << 20,
        "{stats}"
    );
    assert_eq!(stats["digest_mismatches"].as_u64(), Some(0), "{stats}");
    Ok(())
}

#[test]
fn dockerd_in_a_network_namespace_pulls_hub_images_through_the_node() -> anyhow::Result<()> {
    let m = DockerMirror::start(&[])?;
    assert_eq!(
        m.dockerd.daemon_json["registry-mirrors"],
        serde_json::json!([m.node.url()]),
        "{}",
        m.dockerd.daemon_json
    );
    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(&two_layers(21), host_arch(), Some("v1"))?;
    layout.push(
        "v1",
        &format!("{}/shoaltest/app:v1", m.registry.addr),
        false,
        false,
    )?;
    layout.push(
        "v1",
        &format!("{}/shoaltest/app-docker:v1", m.registry.addr),
        true,
        false,
    )?;

    for repo in ["shoaltest/app", "shoaltest/app-docker"] {
        let image = format!("{repo}:v1");
        let before = m.node.stats()?;
        m.dockerd.pull(&image)?;
        let after = m.node.stats()?;

        let (origin, _) = origin_manifest(&m.registry.url(), repo, "v1")?;
        if repo == "shoaltest/app" {
            assert_eq!(origin, built.manifest);
        }
        assert_eq!(
            m.dockerd.repo_digests(&image, repo)?,
            vec![origin],
            "{repo}"
        );
        // dockerd 20.10's image ID is the config's digest: the config arrived intact
        // (and with it the diff IDs every layer was checked against).
        let info = m.dockerd.inspect(&image)?;
        assert_eq!(
            info["Id"].as_str(),
            Some(built.blobs[0].to_string().as_str()),
            "{repo}: {info}"
        );

        let served = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
        assert!(served("manifests_served") >= 1, "{repo}: {after}");
        assert!(served("bytes_served") > 0, "{repo}: {after}");
    }
    let stats = m.node.stats()?;
    // Both layers once (the second image shares them), then they are local to dockerd.
    assert!(
        stats["bytes_served"].as_u64().unwrap_or(0) > 3 << 20,
        "{stats}"
    );
    assert_eq!(stats["digest_mismatches"].as_u64(), Some(0), "{stats}");
    Ok(())
}
