//! Finds the profile of gzip blobs and checks that it re-creates them, with sizes and
//! times: the coverage measurement of bit-exact recompression.
//!
//! ```text
//! cargo run --release -p shoal-diff --features zlib --example gzip -- BLOB.gz...
//! ```
//!
//! For each blob: decompress it in memory, find its profile ([`gzip::profile`]),
//! re-create the blob from the content and compare ([`gzip::recreates`]). Prints one
//! line per blob and a summary per encoder: blobs, re-created exactly, MB/s of
//! recompression (uncompressed MB per CPU second of this thread), profile size.
//!
//! ```text
//! cargo run --release -p shoal-diff --example gzip -- corpus tar|text|sparse SEED SIZE OUT
//! ```
//!
//! writes the generated content the test fixtures were made from (see
//! `tests/gzip_fixtures/README.md`).

#[path = "../tests/gzip_fixtures/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Instant;

use shoal_diff::gzip;

/// CPU time this thread has used, in seconds (from `/proc`; 0 where there is none).
/// The machine may be shared, so CPU time says more than wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

#[derive(Default)]
struct Tally {
    blobs: usize,
    exact: usize,
    content_bytes: u64,
    seconds: f64,
    profile_bytes: usize,
}

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: gzip BLOB.gz...");
    if paths[0] == "corpus" {
        anyhow::ensure!(
            paths.len() == 5,
            "usage: gzip corpus tar|text|sparse SEED SIZE OUT"
        );
        let (seed, size) = (paths[2].parse()?, paths[3].parse()?);
        let bytes = match paths[1].as_str() {
            "tar" => corpus::tar(seed, size),
            "sparse" => corpus::sparse(seed, size),
            _ => corpus::text(seed, size),
        };
        std::fs::write(&paths[4], bytes)?;
        return Ok(());
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for path in &paths {
        let gz = std::fs::read(path)?;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar)?;
        let t = Instant::now();
        let found = gzip::profile(&gz);
        let profiled = t.elapsed();
        let (name, tally) = match &found {
            Ok(p) => (
                p.encoder().to_string(),
                tallies.entry(p.encoder().to_string()),
            ),
            Err(e) => (e.to_string(), tallies.entry("no profile".into())),
        };
        let tally = tally.or_default();
        tally.blobs += 1;
        let Ok(profile) = found else {
            println!("{path}: {} B, {name} (in {profiled:.0?})", gz.len());
            continue;
        };
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let exact = gzip::recreates(&profile, &tar[..], &gz[..])?;
        let wall = t.elapsed().as_secs_f64();
        let secs = cpu_seconds() - cpu;
        tally.exact += usize::from(exact);
        tally.content_bytes += tar.len() as u64;
        tally.seconds += secs;
        tally.profile_bytes = profile.encode().len();
        println!(
            "{path}: {} B gzip, {} B tar: {name}, profile {} B found in {:.0?}, {} in {secs:.2} s CPU, {wall:.2} s wall ({:.1} MB/s of CPU)",
            gz.len(),
            tar.len(),
            profile.encode().len(),
            profiled,
            if exact {
                "re-created exactly"
            } else {
                "NOT re-created"
            },
            tar.len() as f64 / 1e6 / secs,
        );
    }
    println!("\nencoder | blobs | re-created exactly | tar MB per CPU second | profile bytes");
    for (name, t) in &tallies {
        println!(
            "{name} | {} | {} | {:.1} | {}",
            t.blobs,
            t.exact,
            t.content_bytes as f64 / 1e6 / t.seconds.max(1e-9),
            t.profile_bytes
        );
    }
    Ok(())
}
