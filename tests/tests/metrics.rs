//! `GET /metrics` is valid Prometheus text (checked by a strict parser written here, not
//! by shoal's encoder) and its counters follow a pull and a repeat pull.

use std::collections::BTreeMap;

use anyhow::{Context, bail, ensure};
use shoal_tests::engines::skopeo_copy;
use shoal_tests::fixture::Mirror;
use shoal_tests::image::{Layer, Layout, http_get, noise};

#[test]
fn metrics_follow_a_pull_and_a_repeat_served_from_the_store() -> anyhow::Result<()> {
    let m = Mirror::start(&[])?;
    let scrape = || -> anyhow::Result<Scrape> {
        let reply = http_get(&format!("{}/metrics", m.node.url()), &[])?;
        ensure!(reply.status == 200, "/metrics answered {}", reply.status);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(reply.body).context("/metrics is not UTF-8")?;
        parse(&text).with_context(|| format!("in /metrics:\n{text}"))
    };

    let start = scrape()?;
    for (name, kind) in [
        ("shoal_origin_bytes_total", "counter"),
        ("shoal_served_bytes_total", "counter"),
        ("shoal_manifests_served_total", "counter"),
        ("shoal_blobs_served_total", "counter"),
        ("shoal_origin_blob_fetches_total", "counter"),
        ("shoal_digest_mismatches_total", "counter"),
        ("shoal_blob_cache_hits_total", "counter"),
        ("shoal_blob_cache_misses_total", "counter"),
        ("shoal_layers_ingested_total", "counter"),
        ("shoal_ingest_failures_total", "counter"),
        ("shoal_store_blobs", "gauge"),
        ("shoal_store_blob_bytes", "gauge"),
        ("shoal_store_pieces", "gauge"),
        ("shoal_store_piece_bytes", "gauge"),
        ("shoal_store_partial_blobs", "gauge"),
        ("shoal_store_chunks", "gauge"),
        ("shoal_store_chunk_bytes", "gauge"),
        ("shoal_store_recipes", "gauge"),
        ("shoal_store_recipe_tar_bytes", "gauge"),
        ("shoal_ingest_pending", "gauge"),
        ("shoal_request_duration_seconds", "histogram"),
    ] {
        assert_eq!(start.kind(name), Some(kind), "{name}");
    }
    assert!(
        start.families["shoal_request_duration_seconds"]
            .help
            .contains("first byte")
    );
    assert_eq!(start.get("shoal_origin_bytes_total")?, 0.0);
    assert_eq!(start.get("shoal_store_blobs")?, 0.0);
    assert_eq!(start.requests("blob"), 0.0);

    let mut layout = Layout::new(&m.path("layout"))?;
    let built = layout.image(
        &[
            Layer::new().file("bin/tool", noise(3 << 20, 1)),
            Layer::new().file("app/run", noise(600_000, 2)),
        ],
        "amd64",
        Some("v1"),
    )?;
    layout.push("v1", &format!("{}/app:v1", m.registry.addr), false, false)?;
    let mut image_size = built.manifest_size;
    for d in &built.blobs {
        image_size += layout.blob(d)?.len() as u64;
    }
    let image_size = image_size as f64;
    let conf = m.registries_conf()?;

    // First pull: everything comes from the origin.
    let pulled = skopeo_copy(&conf, &format!("{}/app:v1", m.alias), &m.path("out-1"), &[])?;
    assert_eq!(pulled.manifest, built.manifest);
    let first = scrape()?;
    assert!(first.get("shoal_origin_bytes_total")? >= image_size);
    assert!(first.get("shoal_served_bytes_total")? >= image_size);
    // The config and two layers, each fetched once however many asked for it.
    assert_eq!(first.get("shoal_origin_blob_fetches_total")?, 3.0);
    assert!(first.get("shoal_blob_cache_misses_total")? > 0.0);
    assert!(first.get("shoal_manifests_served_total")? >= 1.0);
    assert!(first.get("shoal_blobs_served_total")? >= 3.0);
    assert_eq!(first.get("shoal_digest_mismatches_total")?, 0.0);
    // Manifest, config, two layers.
    assert_eq!(first.get("shoal_store_blobs")?, 4.0);
    assert_eq!(first.get("shoal_store_blob_bytes")?, image_size);
    assert_eq!(first.get("shoal_store_partial_blobs")?, 0.0);
    assert!(first.requests("blob") >= 3.0);
    assert!(first.requests("manifest") >= 1.0);
    // The first scrape itself was timed.
    assert!(first.requests("other") >= 1.0);

    // Second pull, by digest: the manifest and every blob come from the store.
    let pulled = skopeo_copy(
        &conf,
        &format!("{}/app@{}", m.alias, built.manifest),
        &m.path("out-2"),
        &[],
    )?;
    assert_eq!(pulled.manifest, built.manifest);
    let second = scrape()?;
    let delta = |name: &str| -> anyhow::Result<f64> { Ok(second.get(name)? - first.get(name)?) };
    assert_eq!(delta("shoal_origin_bytes_total")?, 0.0);
    assert_eq!(delta("shoal_origin_blob_fetches_total")?, 0.0);
    assert_eq!(delta("shoal_blob_cache_misses_total")?, 0.0);
    assert!(delta("shoal_blob_cache_hits_total")? >= 3.0);
    assert!(delta("shoal_served_bytes_total")? >= image_size);
    assert!(second.requests("blob") - first.requests("blob") >= 3.0);
    assert!(second.requests("manifest") > first.requests("manifest"));

    // Once the two layers are ingested, the ingest counters and recipe gauges say so,
    // and `shoal stats --json` agrees with the scrape on figures that no longer move
    // (not the hits: the ingest's own read of the config may still be on its way).
    let stats = m.node.wait_ingested(2)?;
    let done = scrape()?;
    assert_eq!(done.get("shoal_layers_ingested_total")?, 2.0);
    assert_eq!(done.get("shoal_ingest_failures_total")?, 0.0);
    assert_eq!(done.get("shoal_ingest_pending")?, 0.0);
    assert_eq!(done.get("shoal_store_recipes")?, 2.0);
    assert!(done.get("shoal_store_recipe_tar_bytes")? > 3.0 * 2f64.powi(20));
    assert!(done.get("shoal_store_chunks")? > 0.0);
    for (metric, field) in [
        ("shoal_blob_cache_misses_total", "blob_cache_misses"),
        ("shoal_origin_bytes_total", "bytes_from_origin"),
        ("shoal_store_chunk_bytes", "content_stored_bytes"),
    ] {
        assert_eq!(
            Some(done.get(metric)? as u64),
            stats[field].as_u64(),
            "{field}: {stats}"
        );
    }
    Ok(())
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n";
    let parsed = parse(ok).unwrap();
    assert_eq!(parsed.samples[0].labels["x"], "q\"\\\n");
    for bad in [
        // A sample before its TYPE.
        "a_total 1\n# HELP a_total A.\n# TYPE a_total counter\n",
        // An unknown escape, an unterminated value, a bad value.
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"\\t\"} 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q} 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total one\n",
        // Histogram buckets that fall, or no +Inf bucket.
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        // A counter not named _total, a family typed twice, a missing final newline.
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP g G.\n# TYPE g gauge\n# HELP g G.\n# TYPE g gauge\ng 1\n",
        "# HELP g G.\n# TYPE g gauge\ng 1",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

/// One metric family as scraped.
#[derive(Debug, Default)]
struct Family {
    help: String,
    kind: String,
}

/// One sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
#[derive(Debug, Default)]
struct Scrape {
    families: BTreeMap<String, Family>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn kind(&self, family: &str) -> Option<&str> {
        self.families.get(family).map(|f| f.kind.as_str())
    }

    /// The value of the unlabelled sample `name`.
    fn get(&self, name: &str) -> anyhow::Result<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map(|s| s.value)
            .with_context(|| format!("no sample {name}"))
    }

    /// Requests answered on `route`, summed over methods and statuses.
    fn requests(&self, route: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == "shoal_request_duration_seconds_count")
            .filter(|s| s.labels.get("route").map(String::as_str) == Some(route))
            .map(|s| s.value)
            .sum()
    }
}

/// Parses the Prometheus text format 0.0.4, strictly: HELP then TYPE before a family's
/// samples, a family's samples together, only the escapes the format defines, counters
/// named `_total`, histograms with cumulative buckets ending at `+Inf` equal to
/// `_count`.
fn parse(text: &str) -> anyhow::Result<Scrape> {
    ensure!(text.ends_with('\n'), "the text does not end with a newline");
    let mut scrape = Scrape::default();
    let mut current: Option<String> = None;
    let mut pending_help: Option<(String, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').with_context(at)?;
            ensure!(valid_name(name), "bad name, {}", at());
            pending_help = Some((name.to_owned(), help.to_owned()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').with_context(at)?;
            let (help_for, help) = pending_help.take().context("TYPE without HELP")?;
            ensure!(help_for == name, "HELP and TYPE name differ, {}", at());
            ensure!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unknown type, {}",
                at()
            );
            ensure!(
                kind != "counter" || name.ends_with("_total"),
                "counter not named _total, {}",
                at()
            );
            ensure!(
                !scrape.families.contains_key(name),
                "family typed twice, {}",
                at()
            );
            scrape.families.insert(
                name.to_owned(),
                Family {
                    help,
                    kind: kind.to_owned(),
                },
            );
            current = Some(name.to_owned());
        } else if line.starts_with('#') || line.is_empty() {
            bail!("unexpected comment or empty line, {}", at());
        } else {
            let sample = parse_sample(line).with_context(at)?;
            let family = current
                .as_deref()
                .with_context(|| format!("sample before any TYPE, {}", at()))?;
            let base = if scrape.families[family].kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| sample.name.strip_suffix(s))
                    .unwrap_or("")
            } else {
                sample.name.as_str()
            };
            ensure!(
                base == family,
                "sample outside its family's block (or before its TYPE), {}",
                at()
            );
            ensure!(
                !scrape
                    .samples
                    .iter()
                    .any(|s| s.name == sample.name && s.labels == sample.labels),
                "duplicate series, {}",
                at()
            );
            scrape.samples.push(sample);
        }
    }
    for (name, family) in &scrape.families {
        if family.kind == "histogram" {
            check_histogram(&scrape, name)?;
        }
    }
    Ok(scrape)
}

fn check_histogram(scrape: &Scrape, name: &str) -> anyhow::Result<()> {
    let (bucket, sum, count) = (
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    );
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for s in scrape.samples.iter().filter(|s| s.name == bucket) {
        let mut labels = s.labels.clone();
        let le = labels.remove("le").context("a bucket without le")?;
        series
            .entry(labels)
            .or_default()
            .push((parse_value(&le)?, s.value));
    }
    for (labels, buckets) in &series {
        ensure!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}{labels:?}: buckets not increasing or not cumulative"
        );
        let last = buckets.last().context("no buckets")?;
        ensure!(last.0 == f64::INFINITY, "{name}{labels:?}: no +Inf bucket");
        let find = |n: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.name == n && &s.labels == labels)
                .map(|s| s.value)
        };
        ensure!(find(&sum).is_some(), "{name}{labels:?}: no _sum");
        ensure!(
            find(&count) == Some(last.1),
            "{name}{labels:?}: _count is not the +Inf bucket"
        );
    }
    let sums = scrape.samples.iter().filter(|s| s.name == sum).count();
    ensure!(sums == series.len(), "{name}: a _sum without buckets");
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(v: &str) -> anyhow::Result<f64> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => {
            // Rust also reads "inf" and "infinity", which Prometheus does not.
            ensure!(
                !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)),
                "bad value {v:?}"
            );
            v.parse().with_context(|| format!("bad value {v:?}"))
        }
    }
}

/// `name{label="value",...} value`, with no timestamp (shoal writes none).
fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(['{', ' '])
        .context("a sample line without a value")?;
    let name = &line[..name_end];
    ensure!(valid_name(name), "bad metric name {name:?}");
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut s) = rest.strip_prefix('{') {
        loop {
            let (key, after) = s.split_once("=\"").context("a label without =\"")?;
            ensure!(valid_label_name(key), "bad label name {key:?}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().context("an unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().context("a dangling backslash")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => bail!("unknown escape \\{c}"),
                    },
                    (_, c) => value.push(c),
                }
            };
            ensure!(
                labels.insert(key.to_owned(), value).is_none(),
                "label {key} twice"
            );
            s = &after[end + 1..];
            if let Some(r) = s.strip_prefix(',') {
                s = r;
            } else {
                rest = s.strip_prefix('}').context("labels not closed by }")?;
                break;
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .context("no space before the value")?;
    ensure!(!value.contains(' '), "a timestamp or trailing text");
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: parse_value(value)?,
    })
}
