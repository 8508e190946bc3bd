//! Load: 16 skopeo pulls at once through one node, of 8 images each pulled twice at
//! the same moment (so identical pulls meet in single-flight fetches and different
//! ones share a base layer). Every pull must succeed with the origin's digests, and the
//! node's anonymous memory must stay under its bound the whole time.
//!
//! The bound is on `RssAnon` (heap and stacks). Pieces are read through memory maps,
//! so `RssFile` grows with what is served and is page cache the kernel can drop; it
//! is reported, not bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Layer, Layout, noise};

/// The node's anonymous memory must stay under this during the load.
const ANON_BOUND_MIB: u64 = 384;
const PULLERS: u64 = 16;

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

#[test]
fn sixteen_engines_pulling_at_once_all_succeed_within_the_memory_bound() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let conf = m.registries_conf()?;
    let mut layout = Layout::new(&m.path("layout"))?;
    let mut built = Vec::new();
    for i in 0..PULLERS / 2 {
        let tag = format!("v{i}");
        built.push(layout.image(
            &[
                Layer::new().file("base", noise(6 << 20, 3)),
                Layer::new().file("own", noise(6 << 20, 100 + i)),
            ],
            "amd64",
            Some(&tag),
        )?);
        layout.push(
            &tag,
            &format!("{}/load:{tag}", m.registry.addr),
            false,
            false,
        )?;
    }
    let pid = m
        .node
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the node is not running"))?;

    let done = Arc::new(AtomicBool::new(false));
    let (peak_anon, peak_file) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, peak_anon, peak_file) = (done.clone(), peak_anon.clone(), peak_file.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if let Some((anon, file)) = rss(pid) {
                    peak_anon.fetch_max(anon, Ordering::Relaxed);
                    peak_file.fetch_max(file, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let pulls: Vec<_> = (0..PULLERS)
        .map(|n| {
            let (conf, image, dest) = (
                conf.clone(),
                format!("{}/load:v{}", m.alias, n / 2),
                m.path(&format!("pull-{n}")),
            );
            std::thread::spawn(move || skopeo_copy(&conf, &image, &dest, &[]))
        })
        .collect();
    let mut failures = Vec::new();
    for (n, p) in pulls.into_iter().enumerate() {
        match p.join() {
            Ok(Ok(pulled)) => assert_eq!(pulled.manifest, built[n / 2].manifest, "pull {n}"),
            Ok(Err(e)) => failures.push(format!("pull {n}: {e:#}")),
            Err(_) => failures.push(format!("pull {n} panicked")),
        }
    }
    done.store(true, Ordering::Release);
    let _ = sampler.join();
    assert!(failures.is_empty(), "{failures:#?}\n{}", m.node.log_tail());

    let stats = m.node.stats()?;
    // Each distinct blob was fetched from the origin once, whatever the concurrency.
    assert_eq!(
        stats["origin_fetches"].as_u64(),
        Some(1 + PULLERS / 2 * 2),
        "one base layer, and a config and a layer per image: {stats}"
    );
    let (anon, file) = (
        peak_anon.load(Ordering::Relaxed) / 1024,
        peak_file.load(Ordering::Relaxed) / 1024,
    );
    eprintln!("node peak RssAnon {anon} MiB, RssFile {file} MiB during {PULLERS} pulls");
    assert!(
        anon < ANON_BOUND_MIB,
        "the node's anonymous memory peaked at {anon} MiB (bound {ANON_BOUND_MIB} MiB)"
    );
    Ok(())
}
