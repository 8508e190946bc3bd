//! An origin that misbehaves: wrong bytes, truncated blobs, broken connections,
//! malformed manifests, unknown names. Each gives the client a clear error and leaves
//! nothing wrong in the store.

use shoal_protocol::Digest;
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::{ACCEPT_ALL, Mirror};
use shoal_tests::image::{Built, Layer, Layout, http_get, noise};
use shoal_tests::proxy::Faults;

fn push_one(m: &Mirror, repo: &str, layer_size: usize, seed: u64) -> anyhow::Result<Built> {
    let mut layout = Layout::new(&m.path(&format!("layout-{repo}")))?;
    let built = layout.image(
        &[Layer::new().file("data", noise(layer_size, seed))],
        "amd64",
        Some("v1"),
    )?;
    layout.push(
        "v1",
        &format!("{}/{repo}:v1", m.registry.addr),
        false,
        false,
    )?;
    Ok(built)
}

/// Flips bytes of the origin's stored copy of `digest`, keeping its length.
fn damage(m: &Mirror, digest: &Digest) -> anyhow::Result<()> {
    let path = m.registry.blob_path(digest);
    let mut bytes = std::fs::read(&path)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes)?;
    Ok(())
}

fn error_code(body: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    doc["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

fn assert_clean(m: &Mirror, blobs_before: u64) -> anyhow::Result<()> {
    let s = m.node.stats()?;
    assert_eq!(s["blobs"].as_u64(), Some(blobs_before), "{s}");
    assert_eq!(s["partial_blobs"].as_u64(), Some(0), "{s}");
    Ok(())
}

#[test]
fn wrong_bytes_in_a_small_blob_get_a_502_and_nothing_is_kept() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let built = push_one(&m, "small", 200_000, 1)?;
    let layer = built.blobs[1];
    damage(&m, &layer)?;
    let reply = http_get(&m.node_blob_url("small", &layer), &[])?;
    assert_eq!(reply.status, 502);
    assert_eq!(error_code(&reply.body), "DIGEST_INVALID");
    let text = String::from_utf8_lossy(&reply.body);
    assert!(
        text.contains(&layer.to_string()) && text.contains("nothing of them was kept"),
        "{text}"
    );
    assert_clean(&m, 0)?;
    assert_eq!(m.node.stat("digest_mismatches")?, 1);

    // An engine pulling the image fails and says why.
    let err = skopeo_copy(
        &m.registries_conf()?,
        &format!("{}/small:v1", m.alias),
        &m.path("out"),
        &[],
    )
    .expect_err("a pull of a damaged layer must fail");
    assert!(
        format!("{err:#}").contains("DIGEST_INVALID") || format!("{err:#}").contains("502"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn wrong_bytes_in_a_large_blob_cut_the_stream_before_its_end() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let built = push_one(&m, "large", 3 << 20, 2)?;
    let layer = built.blobs[1];
    let size = std::fs::metadata(m.registry.blob_path(&layer))?.len();
    damage(&m, &layer)?;
    // The first client is streamed all but the last piece, then cut: it never holds
    // the whole (wrong) blob.
    let first = http_get(&m.node_blob_url("large", &layer), &[])?;
    assert!(
        (first.body.len() as u64) < size,
        "got {} of {size} bytes",
        first.body.len()
    );
    // A retry gets the verdict as a clear error.
    let again = http_get(&m.node_blob_url("large", &layer), &[])?;
    assert_eq!(again.status, 502);
    assert_eq!(error_code(&again.body), "DIGEST_INVALID");
    assert_clean(&m, 0)?;
    Ok(())
}

#[test]
fn a_blob_truncated_at_the_origin_is_refused() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let built = push_one(&m, "trunc", 500_000, 3)?;
    let layer = built.blobs[1];
    let path = m.registry.blob_path(&layer);
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() - 1000])?;
    let reply = http_get(&m.node_blob_url("trunc", &layer), &[])?;
    assert_eq!(reply.status, 502);
    assert_eq!(error_code(&reply.body), "DIGEST_INVALID");
    assert_clean(&m, 0)?;
    Ok(())
}

#[test]
fn a_connection_cut_mid_blob_is_resumed_from_where_it_broke() -> anyhow::Result<()> {
    let m = Mirror::start_behind_proxy(&[])?;
    let built = push_one(&m, "cut", 6 << 20, 4)?;
    let layer = built.blobs[1];
    let size = std::fs::metadata(m.registry.blob_path(&layer))?.len();
    let origin = std::fs::read(m.registry.blob_path(&layer))?;
    // Let about 3.5 MiB through, then cut every connection.
    let start = m.proxy().bytes_down();
    m.proxy().set_faults(Faults {
        cut_after: Some(start + (7 << 19)),
        ..Default::default()
    });
    let first = http_get(&m.node_blob_url("cut", &layer), &[])?;
    assert!(
        (first.body.len() as u64) < size,
        "the cut response must not be complete"
    );
    let s = m.node.stats()?;
    assert_eq!(s["blobs"].as_u64(), Some(0), "{s}");
    assert_eq!(
        s["partial_blobs"].as_u64(),
        Some(1),
        "what arrived is kept to resume: {s}"
    );

    m.proxy().set_faults(Faults::default());
    let before = m.proxy().bytes_down();
    let second = http_get(&m.node_blob_url("cut", &layer), &[])?;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, origin);
    let refetched = m.proxy().bytes_down() - before;
    // Three whole pieces (3 MiB) were stored before the cut; only the rest (plus
    // response headers) crosses again.
    assert!(
        refetched < size - (3 << 20) + 16_384,
        "resumed fetch moved {refetched} of {size} bytes"
    );
    let s = m.node.stats()?;
    assert_eq!(
        (s["blobs"].as_u64(), s["partial_blobs"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    Ok(())
}

#[test]
fn malformed_and_mislabelled_manifests_are_refused() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    // JSON the registry itself serves (it does not check descriptors) but that is no
    // manifest: a layer whose digest is not a digest and whose size is negative.
    let config = Digest::of(b"{}");
    let junk = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:not-hex","size":-1}}]}}"#
    );
    let junk = junk.as_bytes();
    let d = m.registry.plant_blob(junk)?;
    m.registry.plant_tag("broken", "v1", &d)?;
    let reply = http_get(
        &m.node_manifest_url("broken", "v1"),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    assert_eq!(
        reply.status,
        502,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(error_code(&reply.body), "MANIFEST_INVALID");

    // A real manifest whose stored bytes were changed: the digest no longer matches.
    let built = push_one(&m, "tampered", 1000, 5)?;
    damage(&m, &built.manifest)?;
    for reference in ["v1".to_owned(), built.manifest.to_string()] {
        let reply = http_get(
            &m.node_manifest_url("tampered", &reference),
            &[&format!("Accept: {ACCEPT_ALL}")],
        )?;
        assert_eq!(reply.status, 502, "{reference}");
        assert_eq!(error_code(&reply.body), "DIGEST_INVALID", "{reference}");
    }
    assert_clean(&m, 0)?;
    Ok(())
}

#[test]
fn unknown_repositories_and_tags_get_the_origins_404() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    push_one(&m, "known", 1000, 6)?;
    let reply = http_get(
        &m.node_manifest_url("nothere", "v1"),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    assert_eq!(reply.status, 404);
    // distribution 2.8 says MANIFEST_UNKNOWN for an unknown repository too; the node
    // passes the origin's own answer through.
    assert!(
        String::from_utf8_lossy(&reply.body).contains("_UNKNOWN"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let reply = http_get(
        &m.node_manifest_url("known", "v9"),
        &[&format!("Accept: {ACCEPT_ALL}")],
    )?;
    assert_eq!(reply.status, 404);
    assert!(String::from_utf8_lossy(&reply.body).contains("MANIFEST_UNKNOWN"));
    let reply = http_get(&m.node_blob_url("known", &Digest::of(b"absent")), &[])?;
    assert_eq!(reply.status, 404);
    let reply = http_get(&format!("{}/v2/Bad_Name/manifests/v1", m.node.url()), &[])?;
    assert_eq!(reply.status, 400);
    assert_eq!(error_code(&reply.body), "NAME_INVALID");
    let err = skopeo_copy(
        &m.registries_conf()?,
        &format!("{}/nothere:v1", m.alias),
        &m.path("out"),
        &[],
    )
    .expect_err("pulling an unknown repository must fail");
    assert!(
        format!("{err:#}").to_lowercase().contains("unknown"),
        "{err:#}"
    );
    assert_clean(&m, 0)?;
    Ok(())
}
