//! Makes and applies deltas outside criterion, to see sizes, times and memory.
//!
//! ```text
//! cargo run --release -p shoal-diff --example delta -- files BASE TARGET [LEVEL] [--zstd]
//! cargo run --release -p shoal-diff --example delta -- large MIB [LEVEL] [--zstd]
//! cargo run --release -p shoal-diff --example delta -- pairs DIR ELF
//! ```
//!
//! `files` makes the delta of two files with the default budget (at LEVEL if given,
//! with bidiff off if `--zstd`), applies it, and prints the method, size and times.
//! `pairs` writes the benchmark's generated pairs to DIR (`elf.old`, `elf.new` from
//! ELF, `text.old`, `text.new`) for other tools to compare. `large` does the same for a
//! generated text-like pair of MIB MiB each (the target is the base with an edit per
//! MiB and 1 MiB appended), applying into a sink, and prints the peak resident memory
//! after generating the pair and after making and applying: the difference is the
//! working memory, which stays flat whatever MIB is. Run it under `/usr/bin/time -v`
//! to see the same peak from outside.

#[path = "../benches/pairs/mod.rs"]
mod pairs;

use std::time::Instant;

use shoal_diff::delta::{self, Budget};

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb >> 10)
}

fn run(base: &[u8], target: &[u8], budget: &Budget) -> anyhow::Result<()> {
    let before = peak_rss_mib();
    let t = Instant::now();
    let d = delta::make(base, target, budget)?;
    let made = t.elapsed();
    let after_make = peak_rss_mib();
    let t = Instant::now();
    let n = delta::apply_into(base, d.as_bytes(), u64::MAX, &mut std::io::sink())?;
    let applied = t.elapsed();
    anyhow::ensure!(n == target.len() as u64);
    println!(
        "base {} B, target {} B: {:?} delta of {} B ({:.3}% of the target), made in {made:.2?}, applied in {applied:.2?}",
        base.len(),
        target.len(),
        d.header().method,
        d.len(),
        d.len() as f64 * 100.0 / target.len().max(1) as f64,
    );
    println!(
        "peak RSS: {before} MiB with the inputs, {after_make} MiB after make, {} MiB after apply",
        peak_rss_mib()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let zstd_only = args.iter().any(|a| a == "--zstd");
    args.retain(|a| a != "--zstd");
    let budget = |i: usize| -> anyhow::Result<Budget> {
        let default = Budget::default();
        Ok(Budget {
            level: args
                .get(i)
                .map(|l| l.parse())
                .transpose()?
                .unwrap_or(default.level),
            bsdiff_max: if zstd_only { 0 } else { default.bsdiff_max },
            ..default
        })
    };
    match args.first().map(String::as_str) {
        Some("files") if args.len() >= 3 => {
            let base = std::fs::read(&args[1])?;
            let target = std::fs::read(&args[2])?;
            run(&base, &target, &budget(3)?)
        }
        Some("large") if args.len() >= 2 => {
            let mib: usize = args[1].parse()?;
            let base = pairs::text(mib << 20, 1);
            let target = pairs::edited(&base, mib, 1 << 20, 2);
            run(&base, &target, &budget(2)?)
        }
        Some("pairs") if args.len() >= 3 => {
            let dir = std::path::Path::new(&args[1]);
            let binary = std::fs::read(&args[2])?;
            std::fs::write(dir.join("elf.new"), pairs::rebuilt(&binary, 1))?;
            std::fs::write(dir.join("elf.old"), binary)?;
            let text = pairs::text(96 << 20, 1);
            std::fs::write(dir.join("text.new"), pairs::edited(&text, 96, 1 << 20, 2))?;
            std::fs::write(dir.join("text.old"), text)?;
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: delta files BASE TARGET [LEVEL] [--zstd] | large MIB [LEVEL] [--zstd] | pairs DIR ELF"
        ),
    }
}
