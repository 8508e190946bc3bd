//! kill -9 at random moments: 20 times while engines pull and garbage collection runs,
//! and 8 times while a two-node fleet seeds an image (the issuer and the target killed
//! in turn). After each restart the store opens, `shoal fsck` finds it consistent with
//! every piece and chunk sound, the interrupted pull or seed completes byte-exact, and
//! what the store (or, seeding, any node of the fleet) held complete is not fetched
//! again from the origin.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::Mirror;
use shoal_tests::fleet::{Fleet, free_udp_port};
use shoal_tests::image::{Built, Layer, Layout, noise};
use shoal_tests::node::{Node, shoal_binary};
use shoal_tests::process::{run_unchecked, wait_until};
use shoal_tests::proxy::Faults;

const TRIALS: u64 = 20;
/// Seeding trials: the issuer is killed in half of them, the target in the other half.
const SEED_TRIALS: u64 = 8;

/// A small deterministic generator, so a failing trial can be replayed.
struct Rng(u64);

impl Rng {
    /// A generator for `seed` (scrambled, so that nearby seeds diverge at once).
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Bytes of the blobs of `image` that the node does not hold complete (per
/// `shoal inspect`): the most a pull of it may fetch from the origin, besides manifests
/// and configs.
fn missing_layer_bytes(m: &Mirror, image: &str, built: &Built) -> anyhow::Result<u64> {
    let out = m.node.cli(&["inspect", image, "--json"])?;
    if !out.status.success() {
        // Never resolved by this node (or its record was collected): all of it.
        return Ok(built.blobs[1..]
            .iter()
            .map(|d| std::fs::metadata(m.registry.blob_path(d)).map_or(0, |md| md.len()))
            .sum());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut missing = 0;
    for layer in report["images"][0]["layers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if layer["held"] != true {
            missing += layer["size"].as_u64().unwrap_or(0);
        }
    }
    Ok(missing)
}

#[test]
fn twenty_kills_during_pulls_and_gc_leave_a_sound_store_and_lose_nothing_verified()
-> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("shoal-crash-conf-")
        .tempdir()?;
    let conf_path = dir.path().join("node.toml");
    // A budget the images exceed, and a short in-use window, so collections remove
    // images while others are pulled.
    std::fs::write(
        &conf_path,
        "[gc]\nbudget = \"40MiB\"\nin_use = \"1s\"\nmax_age = \"off\"\nkeep_versions = 0\n",
    )?;
    let mut m = Mirror::start_behind_proxy(&["--config", conf_path.to_str().unwrap_or_default()])?;
    let conf = m.registries_conf()?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let mut built = Vec::new();
    for v in 0..4u64 {
        let tag = format!("v{v}");
        built.push(layout.image(
            &[
                Layer::new().file("base", noise(2 << 20, 7)),
                Layer::new().file("app", noise(6 << 20, 50 + v)),
            ],
            "amd64",
            Some(&tag),
        )?);
        layout.push(
            &tag,
            &format!("{}/crash:{tag}", m.registry.addr),
            false,
            false,
        )?;
    }
    let image = |v: u64| format!("{}/crash:v{v}", m.alias);

    let (mut killed_mid_fetch, mut gc_runs) = (0, 0);
    for trial in 0..TRIALS {
        let mut rng = Rng::new(trial);
        let v = rng.below(4);
        // Even trials remove the image first and kill once its fetch has stored
        // something; odd ones kill at a random moment, whatever is going on. The origin
        // is slowed so that kills land inside fetches, at depths that vary.
        let mid_fetch = trial % 2 == 0;
        let rate = if mid_fetch {
            1_500_000 + rng.below(2_000_000)
        } else {
            4_000_000 + rng.below(8_000_000)
        };
        m.proxy().set_faults(Faults {
            rate: Some(rate),
            ..Faults::default()
        });
        let kill_after = Duration::from_millis(200 + rng.below(2500));
        if mid_fetch {
            // Past the in-use window (1 s, in whole seconds of last use).
            std::thread::sleep(Duration::from_millis(2100));
            let _ = m.node.cli(&["rm", &image(v)]);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let puller = {
            let (conf, image, dest) = (conf.clone(), image(v), m.path(&format!("t{trial}-a")));
            std::thread::spawn(move || {
                // Fails when the node dies under it; that is the point.
                let _ = skopeo_copy(&conf, &image, &dest, &["--retry-times", "0"]);
            })
        };
        let collector = {
            let (stop, url, shoal) = (Arc::clone(&stop), m.node.url(), shoal_binary()?);
            std::thread::spawn(move || {
                let mut runs = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let out = run_unchecked(
                        Command::new(&shoal).args(["gc", "--json", "--node", &url]),
                        Duration::from_secs(60),
                    );
                    runs += u64::from(out.is_ok_and(|o| o.status.success()));
                    std::thread::sleep(Duration::from_millis(150));
                }
                runs
            })
        };
        if mid_fetch {
            let _ =
                shoal_tests::process::wait_until("a partial blob", Duration::from_secs(20), || {
                    Ok(m.node.stat("partial_blobs")? > 0)
                });
            // Pinned, so that the collection the budget forces after the restart
            // (the pull is no longer in use by then) leaves the partial to resume.
            let _ = m.node.cli(&["pin", &image(v), "--name", "trial"]);
            std::thread::sleep(Duration::from_millis(rng.below(1000)));
        } else {
            std::thread::sleep(kill_after);
        }
        m.node.kill9();
        stop.store(true, Ordering::Release);
        let _ = puller.join();
        gc_runs += collector.join().unwrap_or(0);
        m.node.restart()?;
        if m.node.stat("partial_blobs")? > 0 {
            killed_mid_fetch += 1;
        }

        // The store opened; every piece and chunk is sound and the counts add up.
        let out = m.node.cli(&["fsck", "--json"])?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(
            out.status.success() && report["clean"] == true,
            "trial {trial} (v{v}, killed after {kill_after:?}): fsck found {report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The pull completes byte-exact, and fetches only what was not held complete.
        m.proxy().set_faults(Faults::default());
        let missing = missing_layer_bytes(&m, &image(v), &built[v as usize])?;
        let before = m.proxy().bytes_down();
        let pulled = skopeo_copy(&conf, &image(v), &m.path(&format!("t{trial}-b")), &[])?;
        assert_eq!(pulled.manifest, built[v as usize].manifest, "trial {trial}");
        let moved = m.proxy().bytes_down() - before;
        assert!(
            moved <= missing + 64 * 1024,
            "trial {trial}: fetched {moved} bytes from the origin, but only {missing} bytes of layers were missing"
        );
        if mid_fetch {
            let _ = m
                .node
                .cli(&["pin", "--remove", &image(v), "--name", "trial"]);
        }
        std::fs::remove_dir_all(m.path(&format!("t{trial}-b")))?;
        let _ = std::fs::remove_dir_all(m.path(&format!("t{trial}-a")));
    }
    // The kills did land inside fetches and among collections.
    assert!(
        killed_mid_fetch >= TRIALS / 3,
        "only {killed_mid_fetch} of {TRIALS} kills left a partial blob"
    );
    assert!(
        gc_runs >= TRIALS,
        "only {gc_runs} collections ran around the kills"
    );
    eprintln!("{killed_mid_fetch} of {TRIALS} kills landed mid-fetch; {gc_runs} collections ran");
    Ok(())
}

/// Seed orders a node's log shows started and ended (complete or failed) since byte
/// `from` of it.
fn orders(node: &Node, from: usize) -> (usize, usize) {
    let log = node.log();
    let log = log.get(from..).unwrap_or_default();
    let started =
        log.matches("seed order from a peer").count() + log.matches("seed order issued").count();
    let ended =
        log.matches("seed order complete").count() + log.matches("seed order failed").count();
    (started, ended)
}

/// The layers of `image_by_digest` (`HOST/REPO@DIGEST`) that `node` holds complete
/// (none if it does not hold the manifest).
fn held_layers(node: &Node, image_by_digest: &str) -> anyhow::Result<BTreeSet<String>> {
    let out = node.cli(&["inspect", image_by_digest, "--json"])?;
    if !out.status.success() {
        return Ok(BTreeSet::new());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(report["images"][0]["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["held"] == true)
        .filter_map(|l| l["digest"].as_str().map(str::to_owned))
        .collect())
}

/// `shoal seed IMAGE --nodes all --json` against `node`, in a thread.
fn seed_all(
    node: &Node,
    image: &str,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<std::process::Output>>> {
    let (bin, url, image) = (shoal_binary()?, node.url(), image.to_owned());
    Ok(std::thread::spawn(move || {
        run_unchecked(
            Command::new(bin).args([
                "seed",
                &image,
                "--nodes",
                "all",
                "--timeout",
                "60s",
                "--json",
                "--node",
                &url,
            ]),
            Duration::from_secs(120),
        )
    }))
}

#[test]
fn kills_during_seeding_leave_sound_stores_and_the_fleet_fetches_only_what_it_lacked()
-> anyhow::Result<()> {
    let started = Instant::now();
    // Each node names the other as a bootstrap peer, so whichever restarts dials the
    // other at once rather than waiting for a dead connection to time out.
    let port1 = free_udp_port();
    let mut fleet = Fleet::start(1, |_| {
        vec!["--bootstrap".into(), format!("127.0.0.1:{port1}")]
    })?;
    let key = fleet.key.clone();
    let second = fleet.add_node_on("n1", Some(&key), &[], port1)?;
    fleet.nodes.push(second);
    fleet.wait_meshed()?;

    // One image per trial: a base layer they share (held from the second trial on, so
    // it must come from a node, never the origin) and a layer of their own.
    let mut layout = Layout::new(&fleet.path("layout"))?;
    let mut built = Vec::new();
    for t in 0..SEED_TRIALS {
        let tag = format!("t{t}");
        built.push(layout.image(
            &[
                Layer::new().file("base", noise(2 << 20, 7)),
                Layer::new().file("app", noise(4 << 20, 300 + t)),
            ],
            "amd64",
            Some(&tag),
        )?);
        layout.push(
            &tag,
            &format!("{}/seedcrash:{tag}", fleet.registry.addr),
            false,
            false,
        )?;
    }

    let (mut mid_order, mut left_partial) = (0, 0);
    for trial in 0..SEED_TRIALS {
        let mut rng = Rng::new(1000 + trial);
        let b = &built[trial as usize];
        let image = format!("{}/seedcrash:t{trial}", fleet.alias);
        let by_digest = format!("{}/seedcrash@{}", fleet.alias, b.manifest);
        let victim = (trial % 2) as usize; // 0: the issuer, 1: the target
        let survivor = 1 - victim;
        let logs_from: Vec<usize> = fleet.nodes.iter().map(|n| n.log().len()).collect();
        // The origin is slowed so that a kill lands inside the fetch, at a depth that
        // varies: the new layer takes 1.2 to 2.8 s to leave it.
        fleet.proxy.set_faults(Faults {
            rate: Some(1_500_000 + rng.below(2_000_000)),
            ..Faults::default()
        });
        let kill_after = Duration::from_millis(150 + rng.below(2500));
        let seeding = seed_all(&fleet.nodes[0], &image)?;
        std::thread::sleep(kill_after);
        let (open, ended) = orders(&fleet.nodes[victim], logs_from[victim]);
        mid_order += u64::from(open > ended);
        fleet.nodes[victim].kill9();
        // Ends at once when the issuer died, else once the issuer sees its target gone
        // and its own fetch end.
        let _ = seeding
            .join()
            .map_err(|_| anyhow::anyhow!("the seed thread panicked"))?;
        fleet.nodes[victim].restart()?;
        left_partial += u64::from(fleet.nodes[victim].stat("partial_blobs")? > 0);
        fleet.wait_meshed()?;
        // The order keeps running on the node that lived: let it end first, so that
        // what follows measures the re-issued seed alone.
        let mut last = (0, 0);
        wait_until(
            "the surviving node's seed order to end",
            Duration::from_secs(90),
            || {
                last = orders(&fleet.nodes[survivor], logs_from[survivor]);
                Ok(last.0 == last.1)
            },
        )
        .with_context(|| {
            format!(
                "trial {trial}: orders started, ended {last:?}\n{}",
                fleet.nodes[survivor].log_tail()
            )
        })?;

        // Both stores opened; every piece and chunk is sound and the counts add up.
        for (i, node) in fleet.nodes.iter().enumerate() {
            let out = node.cli(&["fsck", "--json"])?;
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert!(
                out.status.success() && report["clean"] == true,
                "trial {trial} (node {victim} killed after {kill_after:?}): fsck on node {i} found {report}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // The seed again: both nodes complete it, and the origin sends only the layers
        // no node held complete (manifest and config aside).
        fleet.proxy.set_faults(Faults::default());
        let mut held = held_layers(&fleet.nodes[0], &by_digest)?;
        held.extend(held_layers(&fleet.nodes[1], &by_digest)?);
        let mut missing = 0;
        for layer in &b.blobs[1..] {
            if !held.contains(&layer.to_string()) {
                missing += layout.blob(layer)?.len() as u64;
            }
        }
        let before = fleet.proxy.bytes_down();
        let out = seed_all(&fleet.nodes[0], &image)?
            .join()
            .map_err(|_| anyhow::anyhow!("the seed thread panicked"))??;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(
            out.status.success(),
            "trial {trial}: the seed again failed: {}\n{report:#}",
            String::from_utf8_lossy(&out.stderr)
        );
        let states: Vec<&str> = report["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["state"].as_str())
            .collect();
        assert_eq!(
            states,
            ["complete", "complete"],
            "trial {trial}: {report:#}"
        );
        let moved = fleet.proxy.bytes_down() - before;
        assert!(
            moved <= missing + 64 * 1024,
            "trial {trial} (node {victim} killed after {kill_after:?}): the origin sent {moved} bytes, but only {missing} bytes of layers were held by no node"
        );

        // And an engine pulling through the node that was killed gets the image exact.
        let dest = fleet.path(&format!("t{trial}"));
        let pulled = skopeo_copy(&fleet.registries_conf(victim)?, &image, &dest, &[])?;
        assert_eq!(pulled.manifest, b.manifest, "trial {trial}");
        std::fs::remove_dir_all(dest)?;
    }
    eprintln!(
        "{mid_order} of {SEED_TRIALS} kills landed while the killed node carried the order out; \
         {left_partial} left a partial blob; {:?} in all",
        started.elapsed()
    );
    // The kills landed inside seeding, most of them during a fetch.
    assert!(
        mid_order >= SEED_TRIALS / 2,
        "only {mid_order} of {SEED_TRIALS} kills landed while the order ran"
    );
    Ok(())
}
