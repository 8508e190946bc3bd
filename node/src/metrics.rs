//! Prometheus metrics at `GET /metrics` on the mirror port, in the text exposition
//! format 0.0.4. The encoder is written here: a few dozen series with fixed names do
//! not need a client library.
//!
//! What is exported, and where each figure comes from:
//! - traffic counters from [`Stats`]: per process, starting at zero, as Prometheus
//!   expects of counters (the same figures `shoal stats` prints);
//! - store gauges from [`Store::totals`](crate::store::Store::totals): what the store
//!   holds now, which survives restarts;
//! - `shoal_request_duration_seconds`, one histogram per route, method and status
//!   class, measured by [`track`] around every mirror route. A series appears once a
//!   request of its kind was answered.
//!
//! Not here yet, and not emitted as zeros before they exist: peer figures (pieces and
//! bytes from and to peers, peers connected) go beside the origin counters when `p2p/`
//! lands; GC figures (runs, blobs and bytes reclaimed, last run) go beside the store
//! gauges when `gc/` lands.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::mirror::MirrorError;
use crate::node::Node;
use crate::stats::Stats;
use crate::store::Totals;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the request latency buckets, in seconds: from 1 ms (a manifest or a
/// small blob from the store) to 60 s (a large layer whose first byte waits on a slow
/// origin).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// `GET /metrics`: one scrape.
pub async fn serve(State(node): State<Arc<Node>>) -> Result<Response, MirrorError> {
    let store = Arc::clone(&node.store);
    let totals = tokio::task::spawn_blocking(move || store.totals())
        .await
        .map_err(MirrorError::internal)?
        .map_err(MirrorError::internal)?;
    let text = render(
        &node.stats,
        &totals,
        node.ingest.pending(),
        node.config.gc.budget,
        &node.requests,
    );
    let mut r = Response::new(Body::from(text));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(r)
}

/// Middleware around the mirror's routes: times each request until its response
/// headers are ready and records it in [`Node::requests`]. A request whose client left
/// before that is not recorded.
pub async fn track(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let route = Route::of_path(request.uri().path());
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    node.requests.observe(
        route,
        method,
        status_class(response.status()),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// The whole exposition for one scrape.
pub fn render(
    stats: &Stats,
    totals: &Totals,
    ingest_pending: u64,
    gc_budget: Option<u64>,
    requests: &RequestMetrics,
) -> String {
    let mut e = Exposition::default();
    let counters: [(&str, &AtomicU64, &str); 18] = [
        (
            "shoal_origin_bytes_total",
            &stats.bytes_from_origin,
            "Bytes of blobs and manifests received from upstream registries.",
        ),
        (
            "shoal_served_bytes_total",
            &stats.bytes_served,
            "Bytes of blobs and manifests sent to clients.",
        ),
        (
            "shoal_manifests_served_total",
            &stats.manifests_served,
            "Manifest GET requests answered with a body.",
        ),
        (
            "shoal_blobs_served_total",
            &stats.blobs_served,
            "Blob GET requests answered with a body (whole or a range).",
        ),
        (
            "shoal_origin_blob_fetches_total",
            &stats.origin_fetches,
            "Blob fetches started at an upstream registry (resumes included).",
        ),
        (
            "shoal_digest_mismatches_total",
            &stats.digest_mismatches,
            "Blobs or manifests an upstream registry sent whose sha256 did not match; nothing of them was served whole or kept.",
        ),
        (
            "shoal_blob_cache_hits_total",
            &stats.blob_cache_hits,
            "Blob reads the store answered complete, with no origin fetch: client GETs, plus the node's own read of an image's config each time its manifest is served (to learn the layers' diff_ids).",
        ),
        (
            "shoal_blob_cache_misses_total",
            &stats.blob_cache_misses,
            "Blob reads the store could not answer: each started an origin fetch or joined one already running (a join costs no extra origin traffic; shoal_origin_blob_fetches_total counts fetches). Counted like shoal_blob_cache_hits_total.",
        ),
        (
            "shoal_layers_ingested_total",
            &stats.layers_ingested,
            "Layers given a recipe (cut into content chunks, diff_id checked).",
        ),
        (
            "shoal_ingest_failures_total",
            &stats.ingest_failures,
            "Layers that could not be given a recipe (the log says why); they are still served.",
        ),
        (
            "shoal_layers_recreated_total",
            &stats.layers_recreated,
            "Layer blobs re-created bit for bit from a pack received from a peer, and verified by digest.",
        ),
        (
            "shoal_layers_fetched_whole_total",
            &stats.layers_fetched_whole,
            "Layer blobs fetched as pieces after a pack could not re-create them.",
        ),
        (
            "shoal_delta_bytes_total",
            &stats.bytes_delta,
            "Bytes of packs (deltas, new chunks, recipes) received from peers.",
        ),
        (
            "shoal_chunks_reused_bytes_total",
            &stats.bytes_chunks_reused,
            "Content bytes of layers received as packs that were already held as chunks.",
        ),
        (
            "shoal_packs_made_total",
            &stats.packs_made,
            "Packs made for peers.",
        ),
        (
            "shoal_gc_runs_total",
            &stats.gc_runs,
            "Garbage collections run (scheduled, over budget, shoal gc, shoal rm).",
        ),
        (
            "shoal_gc_freed_bytes_total",
            &stats.gc_bytes_freed,
            "Store bytes (pieces and chunks) garbage collection freed.",
        ),
        (
            "shoal_gc_images_removed_total",
            &stats.gc_images_removed,
            "Images garbage collection removed.",
        ),
    ];
    for (name, counter, help) in counters {
        e.family(name, Kind::Counter, help);
        e.sample(name, &[], counter.load(Ordering::Relaxed));
    }
    // Peer counters (bytes and pieces from and to peers) go here with p2p/.

    let gauges: [(&str, u64, &str); 12] = [
        (
            "shoal_store_bytes",
            totals.piece_bytes + totals.chunk_bytes,
            "Bytes the store holds (pieces plus content chunks): what the GC budget limits.",
        ),
        (
            "shoal_store_blobs",
            totals.blobs,
            "Complete blobs in the store (layers, configs, manifests).",
        ),
        (
            "shoal_store_blob_bytes",
            totals.blob_bytes,
            "Bytes of the complete blobs, as engines see them.",
        ),
        (
            "shoal_store_pieces",
            totals.pieces,
            "Distinct 1 MiB pieces in the store.",
        ),
        (
            "shoal_store_piece_bytes",
            totals.piece_bytes,
            "Bytes of the distinct pieces: what the store really holds for blobs.",
        ),
        (
            "shoal_store_partial_blobs",
            totals.partial_blobs,
            "Blobs fetched in part, to be resumed.",
        ),
        (
            "shoal_store_chunks",
            totals.chunks,
            "Distinct content chunks stored for layer recipes.",
        ),
        (
            "shoal_store_chunk_bytes",
            totals.chunk_bytes,
            "Bytes of the distinct content chunks: what the recipes' files really cost.",
        ),
        (
            "shoal_store_recipes",
            totals.recipes,
            "Layers with a complete recipe.",
        ),
        (
            "shoal_store_recipe_tar_bytes",
            totals.recipe_tar_bytes,
            "Uncompressed tar bytes the recipes re-create.",
        ),
        (
            "shoal_store_partial_recipes",
            totals.partial_recipes,
            "Recipes being built.",
        ),
        (
            "shoal_ingest_pending",
            ingest_pending,
            "Layers waiting to be ingested or being ingested now.",
        ),
    ];
    for (name, value, help) in gauges {
        e.family(name, Kind::Gauge, help);
        e.sample(name, &[], value);
    }
    if let Some(budget) = gc_budget {
        let name = "shoal_gc_budget_bytes";
        e.family(name, Kind::Gauge, "The store's GC budget, when one is set.");
        e.sample(name, &[], budget);
    }

    let name = "shoal_request_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "Time from a request's arrival to its response headers, by route (manifest, blob, tags, other), method and status class. Blob bodies stream after that: for blobs this is the time to first byte, not to the last.",
    );
    for ((route, method, status), h) in requests.snapshot() {
        let labels = [
            ("route", route.label()),
            ("method", method),
            ("status_class", status),
        ];
        e.histogram(name, &labels, &h);
    }
    e.finish()
}

/// What a request asked for, as the latency histogram labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// `/v2/<name>/manifests/<reference>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `/v2/<name>/tags/list`.
    Tags,
    /// Anything else: `/v2/`, `/_shoal/...`, `/metrics`, unknown paths.
    Other,
}

impl Route {
    /// The route of a request path, by its shape only (the handler validates names).
    pub fn of_path(path: &str) -> Route {
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Route::Other;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 3 {
            return Route::Other;
        }
        match (parts[parts.len() - 2], parts[parts.len() - 1]) {
            ("manifests", _) => Route::Manifest,
            ("blobs", _) => Route::Blob,
            ("tags", "list") => Route::Tags,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::Tags => "tags",
            Route::Other => "other",
        }
    }
}

/// The `method` label: the methods of the pull API by name, anything else as `other`
/// so that clients cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// The `status_class` label: `2xx`, `4xx`, ...
fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// One histogram: counts per bucket (not cumulative; the last is above every bound),
/// their sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must be increasing.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records `value` in the first bucket whose bound is at least `value`.
    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }
}

type SeriesKey = (Route, &'static str, &'static str);

/// Request latencies by route, method and status class.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    // std Mutex: held to add one observation or to copy the map for a scrape, never
    // across an await. One lock keeps each histogram's buckets, sum and count in step,
    // which separate atomics would not.
    series: Mutex<BTreeMap<SeriesKey, Histogram>>,
}

impl RequestMetrics {
    /// Records one answered request that took `seconds`.
    pub fn observe(&self, route: Route, method: &'static str, status: &'static str, seconds: f64) {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, method, status))
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(seconds);
    }

    fn snapshot(&self) -> BTreeMap<SeriesKey, Histogram> {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Bucketed observations with `_bucket`, `_sum` and `_count` samples.
    Histogram,
}

/// A sample value: integers are written exactly, floats as Prometheus reads them.
#[derive(Clone, Copy, Debug)]
pub enum Number {
    /// A count.
    Int(u64),
    /// A measurement.
    Float(f64),
}

impl From<u64> for Number {
    fn from(n: u64) -> Self {
        Number::Int(n)
    }
}

impl From<f64> for Number {
    fn from(n: f64) -> Self {
        Number::Float(n)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Number::Int(n) => write!(f, "{n}"),
            Number::Float(x) if x.is_nan() => f.write_str("NaN"),
            Number::Float(x) if x == f64::INFINITY => f.write_str("+Inf"),
            Number::Float(x) if x == f64::NEG_INFINITY => f.write_str("-Inf"),
            // Rust writes finite floats without an exponent, which Prometheus reads.
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// A text exposition being written: families (HELP and TYPE), then their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts family `name` with its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Number>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value.into());
    }

    /// The samples of histogram `h`: cumulative `_bucket`s up to `le="+Inf"`, `_sum`
    /// and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        let les = h
            .bounds
            .iter()
            .map(|b| Number::Float(*b).to_string())
            .chain(["+Inf".to_owned()]);
        for (le, n) in les.zip(&h.counts) {
            cumulative += n;
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "a \\ b\nc \"quoted\"");
        e.sample("x_total", &[("path", "a\"b\\c\nd"), ("m", "GET")], 3u64);
        e.sample("x_total", &[], 4u64);
        assert_eq!(
            e.finish(),
            "# HELP x_total a \\\\ b\\nc \"quoted\"\n\
             # TYPE x_total counter\n\
             x_total{path=\"a\\\"b\\\\c\\nd\",m=\"GET\"} 3\n\
             x_total 4\n"
        );
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        let cases = [
            (Number::Int(u64::MAX), "18446744073709551615"),
            (Number::Float(0.001), "0.001"),
            (Number::Float(60.0), "60"),
            (Number::Float(1e-7), "0.0000001"),
            (Number::Float(f64::INFINITY), "+Inf"),
            (Number::Float(f64::NEG_INFINITY), "-Inf"),
            (Number::Float(f64::NAN), "NaN"),
        ];
        for (n, text) in cases {
            assert_eq!(n.to_string(), text);
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        static BOUNDS: &[f64] = &[0.25, 0.5, 1.0];
        let mut h = Histogram::new(BOUNDS);
        // A value on a bound falls in that bound's bucket (`le` is inclusive).
        for v in [0.25, 0.375, 0.75, 100.0] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        e.histogram("t_seconds", &[("route", "blob")], &h);
        assert_eq!(
            e.finish(),
            "t_seconds_bucket{route=\"blob\",le=\"0.25\"} 1\n\
             t_seconds_bucket{route=\"blob\",le=\"0.5\"} 2\n\
             t_seconds_bucket{route=\"blob\",le=\"1\"} 3\n\
             t_seconds_bucket{route=\"blob\",le=\"+Inf\"} 4\n\
             t_seconds_sum{route=\"blob\"} 101.375\n\
             t_seconds_count{route=\"blob\"} 4\n"
        );
    }

    #[test]
    fn an_empty_histogram_has_zero_buckets() {
        let mut e = Exposition::default();
        e.histogram("t", &[], &Histogram::new(&[1.0]));
        assert_eq!(
            e.finish(),
            "t_bucket{le=\"1\"} 0\nt_bucket{le=\"+Inf\"} 0\nt_sum 0\nt_count 0\n"
        );
    }

    #[test]
    fn latency_buckets_are_increasing_from_1ms_to_60s() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(LATENCY_BUCKETS.first(), Some(&0.001));
        assert_eq!(LATENCY_BUCKETS.last(), Some(&60.0));
    }

    #[test]
    fn routes_by_path_shape() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            ("/v2/library/debian/manifests/bookworm", Route::Manifest),
            ("/v2/127.0.0.1_5000/app/manifests/v1", Route::Manifest),
            (&format!("/v2/app/blobs/{d}") as &str, Route::Blob),
            ("/v2/docker.io/library/alpine/tags/list", Route::Tags),
            ("/v2/app/tags/other", Route::Other),
            ("/v2/manifests/v1", Route::Other),
            ("/v2/", Route::Other),
            ("/v2", Route::Other),
            ("/metrics", Route::Other),
            ("/_shoal/stats", Route::Other),
            ("/v2/app/uploads/x", Route::Other),
        ];
        for (path, route) in cases {
            assert_eq!(Route::of_path(path), route, "{path}");
        }
    }

    #[test]
    fn status_classes_and_methods() {
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::PARTIAL_CONTENT), "2xx");
        assert_eq!(status_class(StatusCode::TEMPORARY_REDIRECT), "3xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::BAD_GATEWAY), "5xx");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::HEAD), "HEAD");
        assert_eq!(method_label(&Method::PUT), "other");
    }

    #[test]
    fn a_scrape_has_every_family_typed_before_its_samples() {
        let stats = Stats::default();
        Stats::add(&stats.bytes_from_origin, 1234);
        Stats::add(&stats.blob_cache_hits, 2);
        let totals = Totals {
            blobs: 4,
            recipe_tar_bytes: 99,
            ..Totals::default()
        };
        let requests = RequestMetrics::default();
        requests.observe(Route::Blob, "GET", "2xx", 0.002);
        requests.observe(Route::Blob, "GET", "2xx", 0.5);
        requests.observe(Route::Manifest, "HEAD", "4xx", 0.0001);
        let text = render(&stats, &totals, 3, Some(1 << 30), &requests);

        let mut typed: Vec<(String, String)> = Vec::new();
        let mut helped = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(helped.last().map(String::as_str), Some(name), "{line}");
                assert!(typed.iter().all(|(n, _)| n != name), "TYPE twice: {name}");
                typed.push((name.to_owned(), kind.to_owned()));
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                let (family, kind) = typed.last().expect("a sample before any TYPE");
                let base = if kind == "histogram" {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name)
                } else {
                    name
                };
                assert_eq!(base, family, "{line}");
                assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
            }
        }
        for line in [
            "shoal_origin_bytes_total 1234",
            "shoal_blob_cache_hits_total 2",
            "shoal_blob_cache_misses_total 0",
            "shoal_store_blobs 4",
            "shoal_store_recipe_tar_bytes 99",
            "shoal_ingest_pending 3",
            "shoal_request_duration_seconds_count{route=\"blob\",method=\"GET\",status_class=\"2xx\"} 2",
            "shoal_request_duration_seconds_bucket{route=\"blob\",method=\"GET\",status_class=\"2xx\",le=\"0.0025\"} 1",
            "shoal_request_duration_seconds_bucket{route=\"blob\",method=\"GET\",status_class=\"2xx\",le=\"0.5\"} 2",
            "shoal_request_duration_seconds_bucket{route=\"manifest\",method=\"HEAD\",status_class=\"4xx\",le=\"0.001\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Only combinations that were seen get a series.
        assert!(!text.contains("route=\"tags\""), "{text}");
    }
}
