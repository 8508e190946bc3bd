//! `shoal-bench fleet` end to end on a small fleet: three nodes in network namespaces
//! on shaped links pull a small synthetic image (scenario `cold`), with shoal and as
//! the baseline. The JSON must hold every figure, consistent with itself and with the
//! shaping; the namespaces must be gone afterwards; and the HTML report must render
//! its plots in headless Chromium with no script error (DOM dump and screenshot).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use shoal_tests::node::workspace_binary;
use shoal_tests::process::{require_root, run, run_unchecked};
use shoal_tests::which;

/// Runs `cmd` within `limit` with its output in files under `dir`; returns its process
/// id and whether it succeeded, with its stderr.
fn run_logged(cmd: &mut Command, dir: &Path, limit: Duration) -> anyhow::Result<(u32, String)> {
    let (out, err) = (dir.join("bench.out"), dir.join("bench.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let pid = child.id();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            // SIGTERM: the bench's handler removes what it made, then exits.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let _ = child.wait();
            bail!(
                "shoal-bench fleet did not finish within {limit:?}:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    ensure!(
        status.success(),
        "shoal-bench fleet failed ({status}):\n{stderr}"
    );
    Ok((pid, stderr))
}

fn f(v: &Value, what: &str) -> anyhow::Result<f64> {
    v.as_f64()
        .with_context(|| format!("{what} is not a number: {v}"))
}

fn u(v: &Value, what: &str) -> anyhow::Result<u64> {
    v.as_u64()
        .with_context(|| format!("{what} is not a count: {v}"))
}

#[test]
fn a_small_fleet_runs_cold_writes_its_figures_and_a_report_chromium_renders() -> anyhow::Result<()>
{
    require_root()?;
    let bench = workspace_binary("shoal-bench", "shoal-bench")?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-bench-fleet-test-")
        .tempdir()?;
    let (json, html) = (dir.path().join("fleet.json"), dir.path().join("fleet.html"));
    let (pid, _) = run_logged(
        Command::new(&bench)
            .args([
                "fleet",
                "--nodes",
                "3",
                "--image",
                "synthetic:16MiB",
                "--scenario",
                "cold",
                "--node-rate",
                "200mbit",
                "--origin-rate",
                "200mbit",
            ])
            .arg("--json")
            .arg(&json)
            .arg("--html")
            .arg(&html),
        dir.path(),
        Duration::from_secs(300),
    )?;

    // Nothing of the run is left.
    let netns = run(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(20),
    )?;
    let prefix = format!("shoal-bf-{pid}-");
    let listed = String::from_utf8_lossy(&netns.stdout);
    ensure!(
        !listed.contains(&prefix),
        "namespaces left behind: {listed}"
    );
    let left: Vec<_> = std::fs::read_dir("/dev/shm")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    ensure!(left.is_empty(), "work directories left behind: {left:?}");

    let r: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    check_figures(&r).with_context(|| format!("in {r:#}"))?;
    check_report(&html, dir.path())?;
    Ok(())
}

/// The figures are all there, and agree with each other and with the links' rates.
fn check_figures(r: &Value) -> anyhow::Result<()> {
    ensure!(r["config"]["nodes"] == 3 && r["config"]["node_rate_bps"] == 200_000_000);
    let image = u(&r["images"]["v1_bytes"], "v1_bytes")?;
    ensure!(image > 16 << 20, "v1 is {image} bytes");
    let scenarios = r["scenarios"].as_array().context("scenarios")?;
    ensure!(scenarios.len() == 1 && scenarios[0]["name"] == "cold");
    let s = &scenarios[0];
    ensure!(u(&s["bytes_needed"], "bytes_needed")? == image);
    let bound = f(&s["bound_s"], "bound_s")?;
    ensure!((bound - image as f64 / 25e6).abs() < 1e-6, "bound {bound}");
    let baseline_bound = f(&s["baseline_bound_s"], "baseline_bound_s")?;
    ensure!((baseline_bound - 3.0 * bound).abs() < 1e-6);
    ensure!(s["mesh_peers"].as_array().map(Vec::len) == Some(3));
    let blobs: u64 = r["images"]["v1"]["blobs"]
        .as_array()
        .context("v1 blobs")?
        .iter()
        .map(|b| b[1].as_u64().unwrap_or(0))
        .sum();

    for phase in ["shoal", "baseline"] {
        let p = &s[phase];
        let nodes = p["nodes"].as_array().context("nodes")?;
        ensure!(nodes.len() == 3, "{phase}: {} nodes", nodes.len());
        let mut latest: f64 = 0.0;
        for (i, n) in nodes.iter().enumerate() {
            ensure!(n["node"] == i);
            let t = f(&n["seconds"], "seconds")?;
            ensure!(t > 0.0 && t < 120.0, "{phase} node {i}: {t} s");
            latest = latest.max(t);
            ensure!(n["attempts"] == 1, "{phase} node {i}: {}", n["attempts"]);
            // Every node received at least the image over its downlink.
            let link = u(&n["link_received_bytes"], "link_received_bytes")?;
            ensure!(link >= blobs, "{phase} node {i}: {link} bytes down");
            let got = u(&n["bytes_from_origin"], "from origin")?
                + u(&n["bytes_from_peers"], "from peers")?;
            ensure!(got >= blobs, "{phase} node {i} counted {got} bytes");
            ensure!(n["bytes_from_deltas"].is_null() || n["bytes_from_deltas"].is_u64());
        }
        let to_all = f(&p["time_to_all_s"], "time_to_all_s")?;
        ensure!(
            (to_all - latest).abs() < 1e-9,
            "{phase}: time to all {to_all}"
        );
        // Nothing arrives faster than the links let it.
        ensure!(
            to_all >= 0.95 * bound,
            "{phase}: {to_all} s under the bound {bound}"
        );
        let origin = u(&p["origin_link_bytes"], "origin_link_bytes")?;
        let series = p["origin_series"].as_array().context("origin_series")?;
        ensure!(series.len() >= 3, "{phase}: {} samples", series.len());
        let mut last = 0.0;
        for point in series {
            let b = f(&point[1], "series bytes")?;
            ensure!(b >= last, "{phase}: origin egress went down");
            last = b;
        }
        ensure!(
            (last - origin as f64).abs() <= 1.0,
            "{phase}: series ends at {last}, egress {origin}"
        );
        let payload = u(&p["origin_payload_bytes"], "origin_payload_bytes")?;
        match phase {
            // One copy leaves the origin for the fleet.
            "shoal" => ensure!(
                origin >= blobs && origin < 2 * image && payload < 2 * image,
                "shoal: origin sent {origin} bytes ({payload} payload) for an image of {image}"
            ),
            // A copy per host, at no more than the origin's rate.
            _ => {
                ensure!(
                    origin >= 3 * blobs && payload >= 3 * blobs,
                    "baseline: origin sent {origin} bytes ({payload} payload)"
                );
                ensure!(
                    to_all >= 0.95 * baseline_bound,
                    "baseline: {to_all} s beats its bound {baseline_bound} s: the origin's link is not shaped"
                );
            }
        }
    }
    let goals = r["goals"].as_array().context("goals")?;
    ensure!(goals.len() == 2 && goals.iter().all(|g| g["measured"].is_f64()));
    Ok(())
}

/// The report renders in headless Chromium: the script ran with no error, the DOM
/// holds every plot and series, and a screenshot is more than a blank page.
fn check_report(html: &Path, dir: &Path) -> anyhow::Result<()> {
    ensure!(
        which("chromium"),
        "chromium is not installed (scripts/setup --tests)"
    );
    let url = format!("file://{}", html.display());
    let chromium = |args: &[&str]| {
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .args(args)
        .arg(&url);
        cmd
    };
    let out = run_unchecked(&mut chromium(&["--dump-dom"]), Duration::from_secs(60))?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && dom.contains("data-ready=\"1\""),
        "the report's script did not run to its end:\n{log}\n{dom}"
    );
    ensure!(
        dom.contains("<pre id=\"script-errors\"></pre>"),
        "script errors: {}",
        dom.split("<pre id=\"script-errors\">")
            .nth(1)
            .and_then(|s| s.split("</pre>").next())
            .unwrap_or(&dom)
    );
    ensure!(
        !log.contains("Uncaught"),
        "script errors in Chromium's log:\n{log}"
    );
    // The summary's plot, and three for the one scenario.
    ensure!(dom.contains("data-plots=\"4\""), "plots: {dom}");
    ensure!(dom.matches("<svg class=\"plot\"").count() == 4);
    for series in [
        "shoal",
        "baseline",
        "bound",
        "from origin",
        "from peers",
        "baseline, from origin",
        "needed",
        "image",
    ] {
        ensure!(
            dom.contains(&format!("class=\"series\" data-series=\"{series}\""))
                || dom.contains(&format!("class=\"series rule\" data-series=\"{series}\"")),
            "no series {series:?} in the report"
        );
    }
    for node in 0..3 {
        for series in ["shoal", "baseline"] {
            ensure!(
                dom.contains(&format!("<title>n{node} {series}: ")),
                "no bar for node {node} ({series})"
            );
        }
    }
    ensure!(dom.matches("<polyline").count() == 2, "origin egress lines");

    let shot = dir.join("report.png");
    let out = run_unchecked(
        &mut chromium(&[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,2400",
            "--hide-scrollbars",
        ]),
        Duration::from_secs(60),
    )?;
    let png = std::fs::read(&shot)
        .with_context(|| format!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)))?;
    ensure!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
    // A blank 900x2400 page compresses to a few KiB; plots, text and bars do not.
    ensure!(
        png.len() > 40_000,
        "the screenshot is {} bytes: blank?",
        png.len()
    );
    Ok(())
}

#[test]
fn the_fleet_bench_says_it_needs_root() -> anyhow::Result<()> {
    require_root()?;
    if !which("setpriv") {
        bail!("setpriv (util-linux) is needed to run the bench as another user");
    }
    let bench = workspace_binary("shoal-bench", "shoal-bench")?;
    let out = run_unchecked(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bench)
            .args(["fleet", "--nodes", "2", "--image", "synthetic:1MiB"]),
        Duration::from_secs(60),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "it ran without root: {err}");
    ensure!(
        err.contains("needs root") && err.contains("network namespaces"),
        "it did not say it needs root: {err}"
    );
    Ok(())
}
