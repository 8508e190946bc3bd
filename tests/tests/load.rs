//! Load on one node, in two rounds. First 16 skopeo pulls at once through it, of 8
//! images each pulled twice at the same moment (so identical pulls meet in
//! single-flight fetches and different ones share a base layer), all from the origin.
//! Then 8 peer nodes join its fleet, the origin stops, and the 16 pulls run again
//! while every peer pulls all 8 images through its own mirror at the same time:
//! with the origin down and the node the only one that holds anything, every byte the
//! peers get leaves the node over peer-to-peer (or, once a peer holds it, another
//! peer). The images' own layers are versions of one file, so a peer that holds one
//! image asks the node for the others as packs: the node makes packs under the load.
//! Every pull must succeed with the origin's digests, and the node's anonymous
//! memory must stay under its bound the whole time.
//!
//! The bound is on `RssAnon` (heap and stacks). Pieces are read through memory maps,
//! so `RssFile` grows with what is served and is page cache the kernel can drop; it
//! is reported, not bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_tests::engines::{Pulled, skopeo_copy};
use shoal_tests::fleet::Fleet;
use shoal_tests::image::{Built, Layer, Layout, noise};

/// The node's anonymous memory must stay under this during the load.
const ANON_BOUND_MIB: u64 = 384;
const PULLERS: u64 = 16;
const PEERS: usize = 8;

/// (RssAnon, RssFile) of `pid` in KiB.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// Samples a process's peak `RssAnon` and `RssFile` (KiB) until stopped.
struct Sampler {
    done: Arc<AtomicBool>,
    peaks: Arc<(AtomicU64, AtomicU64)>,
    thread: JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let done = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let thread = {
            let (done, peaks) = (done.clone(), peaks.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    if let Some((anon, file)) = rss(pid) {
                        peaks.0.fetch_max(anon, Ordering::Relaxed);
                        peaks.1.fetch_max(file, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Sampler {
            done,
            peaks,
            thread,
        }
    }

    /// Stops sampling: the peaks in MiB.
    fn stop(self) -> (u64, u64) {
        self.done.store(true, Ordering::Release);
        let _ = self.thread.join();
        (
            self.peaks.0.load(Ordering::Relaxed) / 1024,
            self.peaks.1.load(Ordering::Relaxed) / 1024,
        )
    }
}

/// The 16 pulls through `conf`, started at once: pull `n` is of image `n / 2`, by tag.
fn engine_pulls(
    fleet: &Fleet,
    conf: &Path,
) -> Vec<(String, JoinHandle<anyhow::Result<Pulled>>, usize)> {
    (0..PULLERS)
        .map(|n| {
            let (conf, image, dest) = (
                conf.to_owned(),
                format!("{}/load:v{}", fleet.alias, n / 2),
                fleet.path(&format!("r1-pull-{n}")),
            );
            let pull = std::thread::spawn(move || skopeo_copy(&conf, &image, &dest, &[]));
            (format!("pull {n}"), pull, (n / 2) as usize)
        })
        .collect()
}

/// Waits for every pull; the failures, each named.
fn failures(
    pulls: Vec<(String, JoinHandle<anyhow::Result<Pulled>>, usize)>,
    built: &[Built],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, pull, image) in pulls {
        match pull.join() {
            Ok(Ok(pulled)) => assert_eq!(pulled.manifest, built[image].manifest, "{name}"),
            Ok(Err(e)) => failures.push(format!("{name}: {e:#}")),
            Err(_) => failures.push(format!("{name} panicked")),
        }
    }
    failures
}

/// Image `i`'s own file: one 6 MiB file edited in a few places and grown by 512 KiB
/// from one version to the next, so that a peer holding one version gets the others
/// as packs the node makes while under load.
fn version(i: u64) -> Vec<u8> {
    let mut bytes = noise(6 << 20, 100);
    for k in 0..4 {
        let at = ((k * 1_500_007 + i as usize * 65_537) % (6 << 20)) & !63;
        bytes[at..at + 64].copy_from_slice(&noise(64, 1000 + i * 4 + k as u64));
    }
    bytes.extend_from_slice(&noise(512 << 10, 200 + i));
    bytes
}

#[test]
fn sixteen_engines_and_eight_peers_at_once_all_succeed_within_the_memory_bound()
-> anyhow::Result<()> {
    let started = Instant::now();
    let mut fleet = Fleet::start(1, |_| vec![])?;
    let conf = fleet.registries_conf(0)?;
    let mut layout = Layout::new(&fleet.path("layout"))?;
    let mut built = Vec::new();
    for i in 0..PULLERS / 2 {
        let tag = format!("v{i}");
        built.push(layout.image(
            &[
                Layer::new().file("base", noise(6 << 20, 3)),
                Layer::new().file("own", version(i)),
            ],
            "amd64",
            Some(&tag),
        )?);
        layout.push(
            &tag,
            &format!("{}/load:{tag}", fleet.registry.addr),
            false,
            false,
        )?;
    }
    let pid = fleet.nodes[0]
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the node is not running"))?;

    // Round 1: 16 engines, from the origin.
    let sampler = Sampler::start(pid);
    let pulls = engine_pulls(&fleet, &conf);
    let failed = failures(pulls, &built);
    let (anon1, file1) = sampler.stop();
    assert!(
        failed.is_empty(),
        "{failed:#?}\n{}",
        fleet.nodes[0].log_tail()
    );
    let stats = fleet.nodes[0].stats()?;
    // Each distinct blob was fetched from the origin once, whatever the concurrency.
    assert_eq!(
        stats["origin_fetches"].as_u64(),
        Some(1 + PULLERS / 2 * 2),
        "one base layer, and a config and a layer per image: {stats}"
    );
    let round1 = started.elapsed();

    // Round 2: 8 peers join, the origin stops, and the 16 pulls (by digest, as no tag
    // can be resolved now) run again while the peers pull every image.
    let key = fleet.key.clone();
    for j in 0..PEERS {
        let peer = fleet.add_node(&format!("p{j}"), Some(&key), &[])?;
        fleet.nodes.push(peer);
    }
    fleet.wait_meshed()?;
    let peer_confs = (1..=PEERS)
        .map(|i| fleet.registries_conf(i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    fleet.registry.stop();
    let to_peers_before = fleet.nodes[0].stat("bytes_to_peers")?;
    let by_digest = |i: usize| format!("@{}", built[i].manifest);
    let sampler = Sampler::start(pid);
    // The engines pull again and again until the peers are done, so that the two
    // loads overlap for the whole round.
    let peers_done = Arc::new(AtomicBool::new(false));
    let engine_rounds = Arc::new(AtomicU64::new(0));
    let engines: Vec<JoinHandle<anyhow::Result<()>>> = (0..PULLERS)
        .map(|n| {
            let i = (n / 2) as usize;
            let (conf, image, dest) = (
                conf.clone(),
                format!("{}/load{}", fleet.alias, by_digest(i)),
                fleet.path(&format!("r2-pull-{n}")),
            );
            let (manifest, done, rounds) =
                (built[i].manifest, peers_done.clone(), engine_rounds.clone());
            std::thread::spawn(move || {
                loop {
                    let pulled = skopeo_copy(&conf, &image, &dest, &[])?;
                    anyhow::ensure!(pulled.manifest == manifest, "image {i}");
                    std::fs::remove_dir_all(&dest)?;
                    rounds.fetch_add(1, Ordering::Relaxed);
                    if done.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
            })
        })
        .collect();
    // Each peer pulls every image, one after another, starting from a different one.
    let peers: Vec<JoinHandle<anyhow::Result<()>>> = peer_confs
        .iter()
        .enumerate()
        .map(|(j, peer_conf)| {
            let conf = peer_conf.clone();
            let images: Vec<(usize, String, PathBuf)> = (0..built.len())
                .map(|k| {
                    let i = (j + k) % built.len();
                    let image = format!("{}/load{}", fleet.alias, by_digest(i));
                    (i, image, fleet.path(&format!("peer-{j}-pull-{i}")))
                })
                .collect();
            let manifests: Vec<_> = built.iter().map(|b| b.manifest).collect();
            std::thread::spawn(move || {
                for (i, image, dest) in images {
                    let pulled = skopeo_copy(&conf, &image, &dest, &[])?;
                    anyhow::ensure!(pulled.manifest == manifests[i], "image {i}");
                    std::fs::remove_dir_all(dest)?;
                }
                Ok(())
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (j, peer) in peers.into_iter().enumerate() {
        match peer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("peer {j}: {e:#}")),
            Err(_) => failed.push(format!("peer {j} panicked")),
        }
    }
    peers_done.store(true, Ordering::Release);
    for (n, engine) in engines.into_iter().enumerate() {
        match engine.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("round 2 pull {n}: {e:#}")),
            Err(_) => failed.push(format!("round 2 pull {n} panicked")),
        }
    }
    let (anon2, file2) = sampler.stop();
    let logs: Vec<String> = (0..fleet.nodes.len())
        .filter(|_| !failed.is_empty())
        .map(|i| format!("--- node {i}:\n{}", fleet.nodes[i].log_tail()))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{}", logs.join("\n"));

    // Each peer's first image left the node whole (nobody else held it), and the
    // node made packs of the others for peers holding an older version, under load.
    let to_peers = fleet.nodes[0].stat("bytes_to_peers")? - to_peers_before;
    let mut first_bytes = 0;
    for layer in &built[0].blobs[1..] {
        first_bytes += layout.blob(layer)?.len() as u64;
    }
    assert!(
        to_peers >= first_bytes,
        "the node sent its peers {to_peers} bytes, less than the {first_bytes} bytes of one image"
    );
    let packs_made = fleet.nodes[0].stat("packs_made")?;
    assert!(
        packs_made > 0,
        "no pack made: {}",
        fleet.nodes[0].log_tail()
    );

    eprintln!(
        "node peak RssAnon {anon1} MiB, RssFile {file1} MiB during {PULLERS} pulls from the origin ({round1:?}); \
         RssAnon {anon2} MiB, RssFile {file2} MiB during {} engine pulls and {PEERS} peers pulling \
         (sent them {} MiB, {packs_made} packs made); {:?} in all",
        engine_rounds.load(Ordering::Relaxed),
        to_peers >> 20,
        started.elapsed()
    );
    for (round, anon) in [("from the origin", anon1), ("with the peers", anon2)] {
        assert!(
            anon < ANON_BOUND_MIB,
            "the node's anonymous memory peaked at {anon} MiB {round} (bound {ANON_BOUND_MIB} MiB)"
        );
    }
    Ok(())
}
