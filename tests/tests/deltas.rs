//! Image versions as packs: a node holding `app:v1` that pulls `app:v2` from a peer
//! receives what changed, not the layer, and re-creates the exact v2 blob (podman's
//! gzip, bit for bit); a peer that sends a bad pack is banned and the layer comes
//! whole from elsewhere, with nothing wrong stored.

use std::path::Path;
use std::time::Duration;

use shoal_tests::engines::{Pulled, skopeo_copy};
use shoal_tests::fleet::Fleet;
use shoal_tests::image::{Layer, Layout, noise, podman_push};
use shoal_tests::process::wait_until;

/// A "binary" that compresses like one: runs of noise and of repeated structure.
fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&noise(4096, seed.wrapping_add(i)));
        out.extend(std::iter::repeat_n((i % 251) as u8, 1024));
        out.extend_from_slice(format!("symbol_{seed}_{i:08}\0").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn text(lines: usize, seed: u64) -> Vec<u8> {
    (0..lines)
        .map(|i| {
            format!(
                "line {i} of document {seed}: the quick brown fox {}\n",
                i * 7 % 13
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// An image's files: paths and contents.
type Files = Vec<(&'static str, Vec<u8>)>;

/// v1 and v2 of the application's files: v2 changes the binary in a few places,
/// edits the config, and adds a file.
fn versions() -> (Files, Files) {
    let app = binary(6 << 20, 1);
    let lib = binary(3 << 20, 2);
    let v1 = vec![
        ("usr/bin/app", app.clone()),
        ("usr/lib/libapp.so", lib.clone()),
        ("etc/app.conf", text(200, 3)),
        ("usr/share/doc/app/README", text(2000, 4)),
    ];
    let mut app2 = app;
    for at in [100_000usize, 2_500_000, 5_000_000] {
        app2[at..at + 3000].copy_from_slice(&noise(3000, at as u64));
    }
    app2.splice(4_000_000..4_000_000, b"a new function".iter().copied());
    let mut conf2 = text(200, 3);
    conf2.extend_from_slice(b"feature = on\n");
    let v2 = vec![
        ("usr/bin/app", app2),
        ("usr/lib/libapp.so", lib),
        ("etc/app.conf", conf2),
        ("usr/share/doc/app/README", text(2000, 4)),
        ("usr/share/doc/app/CHANGES", text(500, 5)),
    ];
    (v1, v2)
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

/// Waits until node `i` has given every layer it holds a recipe.
fn ingested(fleet: &Fleet, i: usize, recipes: u64) -> anyhow::Result<()> {
    let mut last = serde_json::Value::Null;
    wait_until(
        "the node's layers get their recipes",
        Duration::from_secs(60),
        || {
            last = fleet.nodes[i].stats()?;
            Ok(counter(&last, "recipes") >= recipes && counter(&last, "ingest_pending") == 0)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}: {last}"))
}

fn pull(fleet: &Fleet, i: usize, tag: &str, dest: &str) -> anyhow::Result<Pulled> {
    skopeo_copy(
        &fleet.registries_conf(i)?,
        &format!("{}/app:{tag}", fleet.alias),
        &fleet.path(dest),
        &[],
    )
}

/// The size of the one layer of an image copied to `dir`.
fn layer_size(dir: &Path, pulled: &Pulled) -> anyhow::Result<u64> {
    let mut largest = 0;
    for d in &pulled.blobs {
        largest = largest.max(std::fs::metadata(dir.join(d.hex()))?.len());
    }
    Ok(largest)
}

/// Waits until node 1 knows node 0 holds at least `blobs` blobs: packs are asked of
/// peers known to hold the layer.
fn knows_holdings(fleet: &Fleet, blobs: u64) -> anyhow::Result<()> {
    let mut last = serde_json::Value::Null;
    wait_until(
        "node 1 learns what node 0 holds",
        Duration::from_secs(20),
        || {
            last = fleet.nodes[1].cli_json(&["peers"])?;
            Ok(last["peers"][0]["blobs"].as_u64().unwrap_or(0) >= blobs)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}: {last}"))
}

/// Pushes both versions and lets node 0 hold both (with recipes); then starts node 1,
/// which joins only now (so it was never elected to fetch anything for node 0), and
/// lets it hold v1; node 1 gets `late_flags`. Returns what node 0 got for v2.
fn two_versions(fleet: &mut Fleet, late_flags: &[String]) -> anyhow::Result<Pulled> {
    let (v1, v2) = versions();
    let registry = fleet.registry.addr.clone();
    // podman ties its storage to one runroot: one directory per push.
    podman_push(&fleet.path("podman-v1"), &v1, &format!("{registry}/app:v1"))?;
    podman_push(&fleet.path("podman-v2"), &v2, &format!("{registry}/app:v2"))?;
    pull(fleet, 0, "v1", "a1")?;
    let a2 = pull(fleet, 0, "v2", "a2")?;
    ingested(fleet, 0, 2)?;
    let key = fleet.key.clone();
    let late = fleet.add_node("late", Some(&key), late_flags)?;
    fleet.nodes.push(late);
    fleet.wait_meshed()?;
    knows_holdings(fleet, 6)?;
    pull(fleet, 1, "v1", "b1")?;
    ingested(fleet, 1, 1)?;
    Ok(a2)
}

#[test]
fn a_node_holding_v1_gets_v2_as_a_pack_and_recreates_the_exact_blob() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(1, |_| vec![])?;
    let a2 = two_versions(&mut fleet, &[])?;
    let before = fleet.nodes[1].stats()?;
    let origin_before = fleet.proxy.bytes_down();

    let b2 = pull(&fleet, 1, "v2", "b2")?;
    assert_eq!(
        b2, a2,
        "B got other blobs than A: digests must never change"
    );
    let after = fleet.nodes[1].stats()?;
    let layer = layer_size(&fleet.path("b2"), &b2)?;
    let received = counter(&after, "bytes_from_peers") - counter(&before, "bytes_from_peers")
        + (fleet.proxy.bytes_down() - origin_before);
    eprintln!(
        "v2 layer {layer} bytes; B received {received} bytes, of which {} as a pack; {} content bytes reused",
        counter(&after, "bytes_delta"),
        counter(&after, "bytes_chunks_reused")
    );
    assert_eq!(counter(&after, "layers_recreated"), 1, "{after}");
    assert_eq!(counter(&after, "layers_fetched_whole"), 0, "{after}");
    assert!(counter(&after, "bytes_delta") > 0, "{after}");
    assert!(counter(&after, "bytes_chunks_reused") > 8 << 20, "{after}");
    assert!(
        received * 10 < layer,
        "B received {received} bytes for a {layer}-byte layer"
    );
    assert!(counter(&fleet.nodes[0].stats()?, "packs_made") >= 1);
    // The layer's recipe came with the pack: flattening and exports read it at once.
    assert!(counter(&after, "recipes") >= 2, "{after}");

    // What B stores is right.
    let out = fleet.nodes[1].cli(&["fsck"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// Packs are on by default; `--no-packs` takes layers as pieces, as before packs.
#[test]
fn a_node_with_packs_off_takes_v2_as_pieces() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(1, |_| vec![])?;
    let a2 = two_versions(&mut fleet, &["--no-packs".into()])?;
    let b2 = pull(&fleet, 1, "v2", "b2")?;
    assert_eq!(b2, a2);
    let after = fleet.nodes[1].stats()?;
    let layer = layer_size(&fleet.path("b2"), &b2)?;
    assert_eq!(counter(&after, "layers_recreated"), 0, "{after}");
    assert_eq!(counter(&after, "bytes_delta"), 0, "{after}");
    assert!(counter(&after, "bytes_from_peers") >= layer, "{after}");
    assert_eq!(counter(&fleet.nodes[0].stats()?, "packs_made"), 0);
    Ok(())
}

#[test]
fn a_bad_pack_is_caught_the_peer_banned_and_the_layer_fetched_whole() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(1, |_| vec!["--test-peer-fault".into(), "bad-pack".into()])?;
    let a2 = two_versions(&mut fleet, &[])?;

    let b2 = pull(&fleet, 1, "v2", "b2")?;
    assert_eq!(b2, a2, "B got other blobs than A");
    let after = fleet.nodes[1].stats()?;
    assert_eq!(counter(&after, "layers_recreated"), 0, "{after}");
    assert_eq!(counter(&after, "layers_fetched_whole"), 1, "{after}");
    let peers = fleet.nodes[1].cli_json(&["peers"])?;
    let liar = fleet.nodes[0].cli_json(&["peers"])?["peer_id"].clone();
    let banned = peers["banned"].as_array().cloned().unwrap_or_default();
    assert!(
        banned.iter().any(|b| b["peer_id"] == liar),
        "the maker of the bad pack is not banned: {peers}"
    );
    let out = fleet.nodes[1].cli(&["fsck"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[test]
fn a_flat_image_always_comes_as_a_pack() -> anyhow::Result<()> {
    // Layers gzipped by flate2 (the harness's own writer): not an encoder shoal
    // re-creates, but the flat images exported from them are shoal's own gzip.
    let mut fleet = Fleet::start(1, |_| vec![])?;
    let (v1, v2) = versions();
    let registry = fleet.registry.addr.clone();
    let mut layout = Layout::new(&fleet.path("layout"))?;
    for (tag, files) in [("v1", &v1), ("v2", &v2)] {
        let mut layer = Layer::new();
        for (path, content) in files {
            layer = layer.file(path, content.clone());
        }
        layout.image(&[layer], "amd64", Some(tag))?;
        layout.push(tag, &format!("{registry}/src:{tag}"), false, false)?;
        let image = format!("{}/src:{tag}", fleet.alias);
        fleet.nodes[0].cli_json(&["pull", &image])?;
        let archive = fleet.path(&format!("flat-{tag}.tar"));
        fleet.nodes[0].cli_json(&[
            "export",
            "--flat",
            &image,
            "-o",
            archive.to_str().unwrap_or_default(),
        ])?;
        shoal_tests::run(
            std::process::Command::new("skopeo")
                .args(["copy", "-q", "--dest-tls-verify=false"])
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("docker://{registry}/app:{tag}")),
            Duration::from_secs(120),
        )?;
    }
    // Node 0 holds both flat versions through its mirror, node 1 only v1.
    pull(&fleet, 0, "v1", "a1")?;
    let a2 = pull(&fleet, 0, "v2", "a2")?;
    ingested(&fleet, 0, 4)?;
    let key = fleet.key.clone();
    let late = fleet.add_node("late", Some(&key), &[])?;
    fleet.nodes.push(late);
    fleet.wait_meshed()?;
    knows_holdings(&fleet, 6)?;
    pull(&fleet, 1, "v1", "b1")?;
    ingested(&fleet, 1, 1)?;

    let b2 = pull(&fleet, 1, "v2", "b2")?;
    assert_eq!(b2, a2, "B got other blobs than A");
    let after = fleet.nodes[1].stats()?;
    let log = fleet.nodes[0].log();
    let maker: Vec<&str> = log.lines().filter(|l| l.contains("pack")).collect();
    assert_eq!(
        counter(&after, "layers_recreated"),
        1,
        "{after}\n{maker:#?}"
    );
    assert_eq!(counter(&after, "layers_fetched_whole"), 0, "{after}");
    Ok(())
}

#[test]
fn nodes_holding_v1_that_pull_v2_at_once_take_one_copy_and_packs() -> anyhow::Result<()> {
    let fleet = Fleet::start(3, |_| vec![])?;
    fleet.wait_meshed()?;
    let (v1, v2) = versions();
    let registry = fleet.registry.addr.clone();
    podman_push(&fleet.path("podman-v1"), &v1, &format!("{registry}/app:v1"))?;
    podman_push(&fleet.path("podman-v2"), &v2, &format!("{registry}/app:v2"))?;
    for i in 0..3 {
        pull(&fleet, i, "v1", &format!("v1-{i}"))?;
    }
    for i in 0..3 {
        ingested(&fleet, i, 1)?;
    }
    let origin_before = fleet.proxy.bytes_down();
    let peers_before: u64 = (0..3)
        .map(|i| Ok(counter(&fleet.nodes[i].stats()?, "bytes_from_peers")))
        .sum::<anyhow::Result<u64>>()?;
    let pulled: Vec<anyhow::Result<Pulled>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let fleet = &fleet;
                scope.spawn(move || pull(fleet, i, "v2", &format!("v2-{i}")))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a pull panicked")))
            })
            .collect()
    });
    let pulled = pulled.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    assert!(
        pulled.iter().all(|p| *p == pulled[0]),
        "the nodes got different blobs"
    );
    let layer = layer_size(&fleet.path("v2-0"), &pulled[0])?;
    let origin = fleet.proxy.bytes_down() - origin_before;
    let stats: Vec<serde_json::Value> = (0..3)
        .map(|i| fleet.nodes[i].stats())
        .collect::<anyhow::Result<_>>()?;
    let recreated: u64 = stats.iter().map(|s| counter(s, "layers_recreated")).sum();
    let peers: u64 = stats
        .iter()
        .map(|s| counter(s, "bytes_from_peers"))
        .sum::<u64>()
        - peers_before;
    eprintln!(
        "v2 layer {layer} bytes; origin sent {origin}; peers sent {peers}; {recreated} layers re-created"
    );
    // One node fetched the layer from the origin; the other two made it from packs.
    assert_eq!(recreated, 2, "{stats:#?}");
    assert!(
        origin < layer + layer / 10,
        "origin sent {origin} bytes for a {layer}-byte layer"
    );
    assert!(peers < layer / 4, "peers sent {peers} bytes");
    Ok(())
}

/// A node that rebuilt a layer from a pack answers the next node holding the same
/// layers with that pack: the fleet makes each pack once.
#[test]
fn a_node_that_received_a_pack_passes_it_on_without_making_it_again() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(1, |_| vec![])?;
    let a2 = two_versions(&mut fleet, &[])?;
    let key = fleet.key.clone();
    let third = fleet.add_node("third", Some(&key), &[])?;
    fleet.nodes.push(third);
    fleet.wait_meshed()?;
    pull(&fleet, 2, "v1", "c1")?;
    ingested(&fleet, 2, 1)?;

    // B gets v2 as a pack that A makes.
    let b2 = pull(&fleet, 1, "v2", "b2")?;
    assert_eq!(b2, a2);
    let b = fleet.nodes[1].stats()?;
    assert_eq!(counter(&b, "layers_recreated"), 1, "{b}");
    assert_eq!(counter(&fleet.nodes[0].stats()?, "packs_made"), 1);

    // A leaves; C, holding v1 too, asks B, which holds v2 now.
    fleet.nodes[0].kill9();
    let b_id = fleet.nodes[1].cli_json(&["peers"])?["peer_id"].clone();
    let mut last = serde_json::Value::Null;
    wait_until(
        "node 2 learns that node 1 holds v2",
        Duration::from_secs(20),
        || {
            last = fleet.nodes[2].cli_json(&["peers"])?;
            let peers = last["peers"].as_array().cloned().unwrap_or_default();
            Ok(peers
                .iter()
                .any(|p| p["peer_id"] == b_id && p["blobs"].as_u64().unwrap_or(0) >= 6))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}: {last}"))?;
    let origin_before = fleet.proxy.bytes_down();
    let c2 = pull(&fleet, 2, "v2", "c2")?;
    assert_eq!(c2, a2, "C got other blobs than A");
    let c = fleet.nodes[2].stats()?;
    let layer = layer_size(&fleet.path("c2"), &c2)?;
    let origin = fleet.proxy.bytes_down() - origin_before;
    eprintln!(
        "v2 layer {layer} bytes; C took a {}-byte pack from B, {origin} bytes from the origin",
        counter(&c, "bytes_delta")
    );
    assert_eq!(counter(&c, "layers_recreated"), 1, "{c}");
    assert_eq!(
        counter(&c, "bytes_delta"),
        counter(&b, "bytes_delta"),
        "C got the pack B got"
    );
    assert_eq!(
        counter(&fleet.nodes[1].stats()?, "packs_made"),
        0,
        "B passed the pack on without making one"
    );
    assert!(origin < layer / 10, "origin sent {origin} bytes");
    for i in [1, 2] {
        let out = fleet.nodes[i].cli(&["fsck"])?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}
