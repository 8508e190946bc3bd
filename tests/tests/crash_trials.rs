//! kill -9 at random moments while engines pull and garbage collection runs, 20
//! times: after each restart the store opens, `shoal fsck` finds it consistent with
//! every piece and chunk sound, the interrupted pull completes byte-exact, and what the
//! store held complete is not fetched again.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Built, Layer, Layout, noise};
use shoal_tests::node::shoal_binary;
use shoal_tests::process::run_unchecked;
use shoal_tests::proxy::Faults;

const TRIALS: u64 = 20;

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
