//! Garbage collection against real pulls: a small budget met while skopeo pulls
//! through the node and `shoal gc` runs again and again; pins and recent use
//! respected; `shoal images`, `rm`, `pin`, `pull` and `gc --dry-run` as an operator
//! uses them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_protocol::Digest;
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Built, Layer, Layout, noise};

const MIB: usize = 1 << 20;

/// A node config with a GC section (the mirror's other settings come as flags).
fn gc_config(section: &str) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("shoal-gc-conf-")
        .tempdir()?;
    let path = dir.path().join("node.toml");
    std::fs::write(&path, format!("[gc]\n{section}\n"))?;
    Ok((dir, path))
}

/// Pushes `app:vN` for each N in `versions`: a shared base layer and a layer of its own.
fn push_versions(
    m: &Mirror,
    repo: &str,
    versions: &[u64],
    own: usize,
) -> anyhow::Result<Vec<Built>> {
    let mut layout = Layout::new(&m.path(&format!("layout-{repo}")))?;
    let mut built = Vec::new();
    for &v in versions {
        let tag = format!("v{v}");
        built.push(layout.image(
            &[
                Layer::new().file("base/lib.so", noise(MIB, 1)),
                Layer::new().file(&format!("app/v{v}"), noise(own, 100 + v)),
            ],
            "amd64",
            Some(&tag),
        )?);
        layout.push(
            &tag,
            &format!("{}/{repo}:{tag}", m.registry.addr),
            false,
            false,
        )?;
    }
    Ok(built)
}

fn listed(m: &Mirror) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(m.node
        .cli_json(&["images"])?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn tags_of(images: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = images
        .iter()
        .flat_map(|i| i["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[test]
fn gc_meets_a_small_budget_while_pulls_run_and_keeps_pinned_and_listed_images_whole()
-> anyhow::Result<()> {
    let budget = 12 * MIB as u64;
    let (_conf_dir, conf) = gc_config(&format!(
        "budget = \"{budget}\"\nin_use = \"2s\"\nmax_age = \"off\"\nkeep_versions = 0\ninterval = \"1h\""
    ))?;
    let m = Mirror::start(&["--config", conf.to_str().unwrap_or_default()])?;
    let conf = m.registries_conf()?;
    push_versions(&m, "app", &[0, 1, 2, 3, 4, 5], 2 * MIB)?;
    let image = |v: u64| format!("{}/app:v{v}", m.alias);

    // v0 is pinned before anything else happens.
    skopeo_copy(&conf, &image(0), &m.path("pull-v0"), &[])?;
    let pinned = m.node.cli_json(&["pin", &image(0)])?;
    assert_eq!(pinned["pinned"], true, "{pinned}");

    // Pulls of every version, twice over, while another thread collects garbage as
    // fast as it can and a third keeps pulling the pinned image.
    let pulling = AtomicBool::new(true);
    let (pulls, gcs, pinned_pulls) = std::thread::scope(|s| {
        let pulls = s.spawn(|| -> anyhow::Result<u32> {
            let mut n = 0;
            for round in 0..2 {
                for v in 1..=5 {
                    let dest = m.path(&format!("pull-{round}-v{v}"));
                    skopeo_copy(&conf, &image(v), &dest, &[])?;
                    std::fs::remove_dir_all(dest)?;
                    n += 1;
                }
            }
            pulling.store(false, Ordering::Release);
            Ok(n)
        });
        let pinned_pulls = s.spawn(|| -> anyhow::Result<u32> {
            let mut n = 0;
            while pulling.load(Ordering::Acquire) {
                let dest = m.path(&format!("pinned-{n}"));
                skopeo_copy(&conf, &image(0), &dest, &[])?;
                std::fs::remove_dir_all(dest)?;
                n += 1;
            }
            Ok(n)
        });
        let gcs = s.spawn(|| -> anyhow::Result<u32> {
            let mut n = 0;
            while pulling.load(Ordering::Acquire) {
                let out = m.node.cli(&["gc", "--json"])?;
                // A run refused because another is going on is fine; anything else is not.
                let stderr = String::from_utf8_lossy(&out.stderr);
                anyhow::ensure!(
                    out.status.success() || stderr.contains("already running"),
                    "shoal gc failed: {stderr}"
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            Ok(n)
        });
        (pulls.join(), gcs.join(), pinned_pulls.join())
    });
    let pulls = pulls.map_err(|_| anyhow::anyhow!("the pulling thread panicked"))??;
    let gcs = gcs.map_err(|_| anyhow::anyhow!("the gc thread panicked"))??;
    let pinned_pulls = pinned_pulls.map_err(|_| anyhow::anyhow!("a pulling thread panicked"))??;
    assert_eq!(pulls, 10);
    assert!(gcs >= 3, "only {gcs} gc runs happened during the pulls");
    assert!(pinned_pulls >= 1);

    // Once ingest has caught up and nothing was used for longer than `in_use`, one more
    // run meets the budget.
    shoal_tests::process::wait_until("ingest to finish", Duration::from_secs(120), || {
        Ok(m.node.stat("ingest_pending")? == 0)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let report = m.node.cli_json(&["gc"])?;
    let after = report["usage_after"].as_u64().unwrap_or(u64::MAX);
    assert!(
        after <= budget,
        "usage {after} is over the budget {budget}: {report}"
    );
    assert_eq!(report["plan"]["budget_met"], true, "{report}");
    assert_eq!(m.node.stat("store_bytes")?, after);
    assert!(m.node.stat("gc_runs")? >= gcs as u64);
    assert!(m.node.stat("gc_images_removed")? >= 4, "{report}");

    // The pinned image is listed whole; so is everything else that is listed, and
    // pulling any of it again costs no blob fetch from the origin.
    let images = listed(&m)?;
    let v0 = images
        .iter()
        .find(|i| tags_of(std::slice::from_ref(i)) == ["v0"])
        .ok_or_else(|| anyhow::anyhow!("the pinned image is gone: {images:?}"))?;
    assert_eq!(v0["pins"], serde_json::json!(["operator"]), "{v0}");
    assert!(images.len() < 6, "nothing was collected: {images:?}");
    let fetches = m.node.stat("origin_fetches")?;
    for tag in tags_of(&images) {
        let v: u64 = tag.trim_start_matches('v').parse()?;
        let pulled = skopeo_copy(&conf, &image(v), &m.path(&format!("final-{tag}")), &[])?;
        assert_eq!(pulled.blobs.len(), 3, "config and two layers of {tag}");
    }
    assert!(images.iter().all(|i| i["complete"] == true), "{images:?}");
    assert_eq!(
        m.node.stat("origin_fetches")?,
        fetches,
        "a listed image was missing blobs"
    );

    // Images that were collected pull again, byte-exact, from the origin.
    let gone: Vec<u64> = (1..=5)
        .filter(|v| !tags_of(&images).contains(&format!("v{v}")))
        .collect();
    assert!(!gone.is_empty());
    for v in gone {
        skopeo_copy(&conf, &image(v), &m.path(&format!("again-v{v}")), &[])?;
    }
    assert!(m.node.stat("origin_fetches")? > fetches);

    let metrics = shoal_tests::image::http_get(&format!("{}/metrics", m.node.url()), &[])?;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(&format!("shoal_gc_budget_bytes {budget}")),
        "{text}"
    );
    assert!(text.contains("shoal_gc_runs_total "), "{text}");
    Ok(())
}

#[test]
fn images_pin_rm_pull_and_dry_run_do_what_an_operator_expects() -> anyhow::Result<()> {
    let (_conf_dir, conf) =
        gc_config("in_use = \"5s\"\nkeep_versions = 1\nmax_age = \"off\"\ninterval = \"1h\"")?;
    let m = Mirror::start(&["--config", conf.to_str().unwrap_or_default()])?;
    let built = push_versions(&m, "app", &[1, 2], 3 * MIB)?;
    let image = |v: u64| format!("{}/app:v{v}", m.alias);

    // `shoal pull` fetches a whole image and reports what it moved.
    let report = m.node.cli_json(&["pull", &image(1)])?;
    assert_eq!(report["blobs"], 3, "{report}");
    let v1_bytes = report["bytes"].as_u64().unwrap_or(0);
    assert!(v1_bytes > 4 * MIB as u64, "{report}");
    assert!(report["bytes_from_origin"].as_u64().unwrap_or(0) >= v1_bytes);
    let human = m.node.cli(&["pull", &image(2)])?;
    assert!(human.status.success());
    assert!(
        String::from_utf8_lossy(&human.stdout).starts_with("pulled "),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
    m.node.wait_ingested(3)?;

    // Both listed, with the base layer shared between them.
    let images = listed(&m)?;
    assert_eq!(tags_of(&images), ["v1", "v2"]);
    for i in &images {
        assert!(i["shared"].as_u64().unwrap_or(0) > (MIB / 2) as u64, "{i}");
        assert_eq!(i["complete"], true, "{i}");
    }

    // An engine asking for v2's manifest a moment ago makes it in use: rm refuses, and
    // says why.
    let asked = shoal_tests::image::http_get(
        &m.node_manifest_url("app", "v2"),
        &[&format!("Accept: {}", shoal_tests::fixture::ACCEPT_ALL)],
    )?;
    assert_eq!(asked.status, 200);
    let out = m.node.cli(&["rm", &image(2)])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("may be being pulled"), "{stderr}");
    // In-use is counted in whole seconds of last use: wait past the window for sure.
    std::thread::sleep(Duration::from_millis(6500));

    // A pin stops rm too.
    m.node.cli_json(&["pin", &image(2), "--ttl", "1h"])?;
    let out = m.node.cli(&["rm", &image(2)])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is pinned (operator)"),
        "{stderr}"
    );

    // keep_versions = 1 would remove v1, the older one, not the pinned v2. A dry run
    // changes nothing.
    let before = m.node.stats()?;
    let dry = m.node.cli_json(&["gc", "--dry-run"])?;
    let planned = dry["plan"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(planned.len(), 1, "{dry}\n{:?}", listed(&m)?);
    assert_eq!(planned[0]["tags"], serde_json::json!(["v1"]), "{dry}");
    assert_eq!(planned[0]["reason"], "versions", "{dry}");
    let would_free = dry["freed"].as_u64().unwrap_or(0);
    let after = m.node.stats()?;
    assert_eq!(before["store_bytes"], after["store_bytes"]);
    assert_eq!(tags_of(&listed(&m)?), ["v1", "v2"]);

    // rm v1 frees what only v1 used: its manifest, config and own layer (pieces and
    // chunks), exactly what the dry run predicted for the same removal; the shared
    // base layer stays with v2.
    let blobs_before = m.node.stat("blobs")?;
    let removed = m.node.cli_json(&["rm", &image(1)])?;
    assert_eq!(removed["images_removed"], 1, "{removed}");
    assert_eq!(removed["blobs_removed"], 3, "{removed}");
    assert_eq!(removed["recipes_removed"], 1, "{removed}");
    assert_eq!(removed["freed"].as_u64(), Some(would_free), "{removed}");
    assert!(
        would_free > 6 * MIB as u64,
        "layer bytes plus chunk bytes: {removed}"
    );
    assert_eq!(m.node.stat("blobs")?, blobs_before - 3);
    assert_eq!(tags_of(&listed(&m)?), ["v2"]);
    let base: Digest = built[0].blobs[1];
    let v2 = m.node.cli_json(&["inspect", &image(2)])?;
    assert!(v2.to_string().contains(&base.to_string()), "{v2}");

    // Unpinned, v2 can go too; then v1 pulls again from the origin.
    let unpinned = m.node.cli_json(&["pin", "--remove", &image(2)])?;
    assert_eq!(unpinned["pinned"], false);
    let fetches = m.node.stat("origin_fetches")?;
    skopeo_copy(&m.registries_conf()?, &image(1), &m.path("again"), &[])?;
    assert_eq!(
        m.node.stat("origin_fetches")? - fetches,
        2,
        "v1's config and own layer come from the origin again; the base is held"
    );
    let human = m.node.cli(&["images"])?;
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("app:v1") && text.contains("app:v2"), "{text}");
    Ok(())
}
