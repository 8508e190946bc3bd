//! Engines pull through the node and get the origin's exact manifests and blobs.

use shoal_tests::engines::{Podman, skopeo_copy};
use shoal_tests::fixture::{ACCEPT_ALL, Mirror};
use shoal_tests::image::{Layer, Layout, http_get, noise};

#[test]
fn skopeo_and_podman_pull_a_two_layer_image_through_the_node() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let base = Layer::new()
        .dir("etc")
        .file("etc/os-release", "ID=shoal-test\n")
        .file("bin/tool", noise(3 << 20, 1));
    let app = Layer::new()
        .file("app/run", noise(600_000, 2))
        .file("app/config", "port=1\n");
    let built = layout.image(&[base, app], "amd64", Some("v1"))?;
    layout.push("v1", &format!("{}/app:v1", m.registry.addr), false, false)?;
    layout.push(
        "v1",
        &format!("{}/app-docker:v1", m.registry.addr),
        true,
        false,
    )?;
    let conf = m.registries_conf()?;

    // OCI media types: skopeo keeps every digest as built.
    let pulled = skopeo_copy(
        &conf,
        &format!("{}/app:v1", m.alias),
        &m.path("out-oci"),
        &[],
    )?;
    assert_eq!(pulled.manifest, built.manifest);
    let mut expected = built.blobs.clone();
    expected.sort();
    assert_eq!(pulled.blobs, expected);

    // Docker schema 2: the origin's own digest for it.
    let origin = m.origin_digest("app-docker", "v1", ACCEPT_ALL)?;
    let pulled = skopeo_copy(
        &conf,
        &format!("{}/app-docker:v1", m.alias),
        &m.path("out-docker"),
        &[],
    )?;
    assert_eq!(pulled.manifest, origin);

    let podman = Podman::new(&m.path("podman"), &conf);
    podman.pull(&format!("{}/app:v1", m.alias))?;
    assert_eq!(
        podman.digest(&format!("{}/app:v1", m.alias))?,
        built.manifest
    );

    let stats = m.node.stats()?;
    assert!(stats["bytes_served"].as_u64().unwrap() > 3 << 20, "{stats}");
    // app: manifest, config, 2 layers; app-docker: only its manifest differs (skopeo
    // converts media types, the config and layer bytes stay the same).
    assert_eq!(stats["blobs"].as_u64(), Some(5), "{stats}");
    assert_eq!(stats["partial_blobs"].as_u64(), Some(0), "{stats}");
    Ok(())
}

#[test]
fn an_image_index_serves_each_platform_with_its_digest() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let amd = layout.image(&[Layer::new().file("arch", "amd64")], "amd64", None)?;
    let arm = layout.image(&[Layer::new().file("arch", "arm64")], "arm64", None)?;
    let index = layout.index(&[amd.clone(), arm.clone()], "multi")?;
    layout.push(
        "multi",
        &format!("{}/multi:1", m.registry.addr),
        false,
        true,
    )?;
    let conf = m.registries_conf()?;

    // The index itself, byte for byte, through the path-prefix route podman uses.
    let prefix = m.alias.replace(':', "_");
    let via_node = http_get(
        &format!("{}/v2/{prefix}/multi/manifests/1", m.node.url()),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    assert_eq!(via_node.status, 200);
    assert_eq!(shoal_protocol::Digest::of(&via_node.body), index);
    assert_eq!(
        via_node.header("docker-content-digest"),
        Some(index.to_string().as_str())
    );
    assert_eq!(
        via_node.header("content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );

    for (arch, built) in [("amd64", &amd), ("arm64", &arm)] {
        let out = m.path(&format!("out-{arch}"));
        let pulled = skopeo_copy(
            &conf,
            &format!("{}/multi:1", m.alias),
            &out,
            &["--override-arch", arch],
        )?;
        assert_eq!(pulled.manifest, built.manifest, "{arch}");
    }
    Ok(())
}

#[test]
fn a_second_image_on_a_shared_base_fetches_only_its_own_layer() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let base = Layer::new().file("usr/lib/big", noise(4 << 20, 7));
    let a = layout.image(
        &[base.clone(), Layer::new().file("a", noise(100_000, 8))],
        "amd64",
        Some("a"),
    )?;
    let b = layout.image(
        &[base, Layer::new().file("b", noise(200_000, 9))],
        "amd64",
        Some("b"),
    )?;
    layout.push("a", &format!("{}/shared:a", m.registry.addr), false, false)?;
    layout.push("b", &format!("{}/shared:b", m.registry.addr), false, false)?;
    let conf = m.registries_conf()?;

    skopeo_copy(
        &conf,
        &format!("{}/shared:a", m.alias),
        &m.path("out-a"),
        &[],
    )?;
    let before = m.node.stats()?;
    let pulled = skopeo_copy(
        &conf,
        &format!("{}/shared:b", m.alias),
        &m.path("out-b"),
        &[],
    )?;
    assert_eq!(pulled.manifest, b.manifest);
    let after = m.node.stats()?;
    let fetched = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    // Only b's config and top layer came from the origin; the 4 MiB base did not.
    assert_eq!(fetched("origin_fetches"), 2, "{after}");
    assert!(fetched("bytes_from_origin") < 400_000, "{after}");
    assert_eq!(
        after["blobs"].as_u64(),
        Some(a.blobs.len() as u64 + 1 + 2 + 1),
        "{after}"
    );
    Ok(())
}

#[test]
fn range_and_head_requests_answer_like_a_registry() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(
        &[Layer::new().file("f", noise(2_500_000, 3))],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/r:v1", m.registry.addr), false, false)?;
    let layer = built.blobs[1];
    let origin_blob = http_get(&format!("{}/v2/r/blobs/{layer}", m.registry.url()), &[])?.body;
    let url = format!("{}/v2/r/blobs/{layer}?ns={}", m.node.url(), m.alias);

    let whole = http_get(&url, &[])?;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, origin_blob);
    assert_eq!(
        whole.header("docker-content-digest"),
        Some(layer.to_string().as_str())
    );

    let part = http_get(&url, &["Range: bytes=1048570-1048600"])?;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, origin_blob[1_048_570..=1_048_600]);
    let total = origin_blob.len();
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 1048570-1048600/{total}").as_str())
    );
    let tail = http_get(&url, &["Range: bytes=-10"])?;
    assert_eq!(tail.body, origin_blob[total - 10..]);
    let past = http_get(&url, &[&format!("Range: bytes={total}-")])?;
    assert_eq!(past.status, 416);

    let head = shoal_tests::run(
        std::process::Command::new("curl")
            .args(["-sS", "-I", "--noproxy", "*"])
            .arg(format!("{}/v2/r/manifests/v1?ns={}", m.node.url(), m.alias)),
        std::time::Duration::from_secs(30),
    )?;
    let head = String::from_utf8(head.stdout)?.to_ascii_lowercase();
    assert!(
        head.contains(&format!("docker-content-digest: {}", built.manifest)),
        "{head}"
    );
    assert!(
        head.contains(&format!("content-length: {}", built.manifest_size)),
        "{head}"
    );
    Ok(())
}

#[test]
fn tag_lists_pass_through_from_the_origin() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let mut layout = Layout::new(&m.path("layout"))?;
    layout.image(&[Layer::new().file("f", "1")], "amd64", Some("v1"))?;
    layout.push("v1", &format!("{}/tags:v1", m.registry.addr), false, false)?;
    layout.push("v1", &format!("{}/tags:v2", m.registry.addr), false, false)?;
    let origin = http_get(&format!("{}/v2/tags/tags/list", m.registry.url()), &[])?;
    let prefix = m.alias.replace(':', "_");
    let via = http_get(&format!("{}/v2/{prefix}/tags/tags/list", m.node.url()), &[])?;
    assert_eq!(via.status, 200);
    assert_eq!(via.body, origin.body);
    // Pagination parameters reach the origin (distribution 2.8 itself ignores them,
    // so the answers are compared rather than assumed).
    let origin_page = http_get(&format!("{}/v2/tags/tags/list?n=1", m.registry.url()), &[])?;
    let page = http_get(
        &format!("{}/v2/{prefix}/tags/tags/list?n=1", m.node.url()),
        &[],
    )?;
    assert_eq!(page.body, origin_page.body);
    Ok(())
}
