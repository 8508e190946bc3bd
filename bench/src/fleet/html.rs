//! The HTML report: one self-contained page (inline CSS, SVG and a few lines of
//! script) with the run's settings, the goals, a table and four plots per scenario:
//! time to all beside the baseline and the bound, per-node completion, bytes by
//! source per node, and origin egress over time.
//!
//! The script only toggles series from the legends. It is preceded by an error
//! recorder that writes any script error into `#script-errors`, and it marks the page
//! `data-ready="1"` when it has run, so a headless browser's DOM dump shows both.

use std::fmt::Write;

use super::report::{PhaseFigures, Report, ScenarioFigures};
use super::svg::{BarChart, Bars, Line, LineChart, Rule, bar_chart, esc, line_chart};

const SHOAL: &str = "#1f77b4";
const BASELINE: &str = "#d62728";
const BOUND: &str = "#2ca02c";
const PEERS: &str = "#17becf";
const DELTA: &str = "#9467bd";
const GREY: &str = "#7f7f7f";

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 820px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; border-top: 1px solid #ddd; padding-top: 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; } td, th { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; }
.met { color: #2ca02c; } .unmet { color: #d62728; font-weight: 600; }
svg.plot { display: block; margin: 12px 0; font-size: 11px; }
svg .grid { stroke: #eee; } svg .axis { stroke: #444; } svg .plot-title { font-size: 13px; font-weight: 600; }
svg .legend-item { cursor: pointer; } svg .legend-item.off { opacity: 0.35; }
svg .series.hidden { display: none; }
#script-errors:empty { display: none; } #script-errors { color: #d62728; }
.note { color: #555; }
"#;

const RECORD_ERRORS: &str = r#"
window.__scriptErrors = [];
function __recordError(text) {
  window.__scriptErrors.push(String(text));
  var el = document.getElementById('script-errors');
  if (el) { el.textContent = window.__scriptErrors.join('\n'); }
}
window.addEventListener('error', function (e) { __recordError(e.message || e); });
window.addEventListener('unhandledrejection', function (e) { __recordError(e.reason); });
"#;

const TOGGLE: &str = r#"
if (window.__scriptErrors.length) {
  document.getElementById('script-errors').textContent = window.__scriptErrors.join('\n');
}
document.querySelectorAll('svg.plot .legend-item').forEach(function (item) {
  item.addEventListener('click', function () {
    var name = item.getAttribute('data-series');
    item.closest('svg').querySelectorAll('.series').forEach(function (g) {
      if (g.getAttribute('data-series') === name) { g.classList.toggle('hidden'); }
    });
    item.classList.toggle('off');
  });
});
document.documentElement.setAttribute('data-plots', String(document.querySelectorAll('svg.plot').length));
document.documentElement.setAttribute('data-ready', '1');
"#;

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// The page.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>shoal-bench fleet: {} nodes</title><style>{STYLE}</style><script>{RECORD_ERRORS}</script></head><body>",
        r.config.nodes
    );
    s.push_str("<pre id=\"script-errors\"></pre>");
    let c = &r.config;
    let _ = write!(
        s,
        "<h1>shoal-bench fleet</h1><p>{} nodes, each in its own network namespace, at {} Mbit/s up and down; the origin (docker-registry) at {} Mbit/s. Shaping: {}. Image: {}. {} CPUs, Linux {}. Run took {:.0} s.</p>",
        c.nodes,
        c.node_rate_bps as f64 / 1e6,
        c.origin_rate_bps as f64 / 1e6,
        esc(&c.shaping),
        esc(&r.images.description),
        c.cpus,
        esc(&c.kernel),
        r.seconds
    );
    let _ = write!(
        s,
        "<p>v1: {:.1} MB on the wire ({:.1} MB of tar); v2: {:.1} MB ({:.1} MB of it not in v1).</p>",
        mb(r.images.v1_bytes),
        mb(r.images.v1.tar_bytes),
        mb(r.images.v2_bytes),
        mb(r.images.v2_bytes_after_v1)
    );
    summary(&mut s, r);
    for sc in &r.scenarios {
        scenario(&mut s, sc);
    }
    let _ = writeln!(s, "<script>{TOGGLE}</script></body></html>");
    s
}

fn summary(s: &mut String, r: &Report) {
    s.push_str("<h2 id=\"summary\">Summary</h2><table><tr><th>scenario</th><th>MB per host</th><th>bound s</th><th>shoal s</th><th>baseline s</th><th>shoal / bound</th><th>origin / image</th><th>speedup</th></tr>");
    for sc in &r.scenarios {
        let _ = write!(
            s,
            "<tr><td><a href=\"#{n}\">{n}</a></td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}x</td><td>{:.2}x</td><td>{:.2}x</td></tr>",
            mb(sc.bytes_needed),
            sc.bound_s,
            sc.shoal.time_to_all_s,
            sc.baseline.time_to_all_s,
            sc.shoal_over_bound,
            sc.shoal_origin_over_image,
            sc.speedup,
            n = esc(&sc.name)
        );
    }
    s.push_str("</table>");
    if !r.goals.is_empty() {
        s.push_str("<table><tr><th>goal</th><th>target</th><th>measured</th><th></th></tr>");
        for g in &r.goals {
            let _ = write!(
                s,
                "<tr><td>{}: {}</td><td>&le; {:.2}</td><td>{:.2}</td><td class=\"{}\">{}</td></tr>",
                esc(&g.scenario),
                esc(&g.what),
                g.target,
                g.measured,
                if g.met { "met" } else { "unmet" },
                if g.met { "met" } else { "not met" }
            );
        }
        s.push_str("</table>");
        if let Some(note) = r.goals.iter().map(|g| &g.note).find(|n| !n.is_empty()) {
            let _ = write!(s, "<p class=\"note\">Note: {}.</p>", esc(note));
        }
    }
    s.push_str(&bar_chart(&BarChart {
        title: "Time until every node holds the image".into(),
        unit: "seconds".into(),
        categories: r.scenarios.iter().map(|sc| sc.name.clone()).collect(),
        groups: vec![
            vec![Bars {
                name: "shoal".into(),
                color: SHOAL,
                values: r
                    .scenarios
                    .iter()
                    .map(|sc| sc.shoal.time_to_all_s)
                    .collect(),
            }],
            vec![Bars {
                name: "baseline".into(),
                color: BASELINE,
                values: r
                    .scenarios
                    .iter()
                    .map(|sc| sc.baseline.time_to_all_s)
                    .collect(),
            }],
            vec![Bars {
                name: "bound".into(),
                color: BOUND,
                values: r.scenarios.iter().map(|sc| sc.bound_s).collect(),
            }],
        ],
        rules: Vec::new(),
    }));
}

fn origin_bytes(p: &PhaseFigures) -> String {
    match p.origin_payload_bytes {
        Some(b) => format!(
            "{:.1} MB on the link, {:.1} MB of payload",
            mb(p.origin_link_bytes),
            mb(b)
        ),
        None => format!("{:.1} MB on the link", mb(p.origin_link_bytes)),
    }
}

fn scenario(s: &mut String, sc: &ScenarioFigures) {
    let n = &sc.name;
    let _ = write!(
        s,
        "<h2 id=\"{id}\">{id}</h2><p>{}. Each host needs {:.1} MB ({}). Lower bound {:.1} s (bytes over the slower of a node's downlink and the origin's uplink); the baseline's own bound, every copy from the origin, {:.1} s.</p>",
        esc(&sc.description),
        mb(sc.bytes_needed),
        esc(&sc.image_tag),
        sc.bound_s,
        sc.baseline_bound_s,
        id = esc(n)
    );
    let _ = write!(
        s,
        "<table><tr><th></th><th>time to all</th><th>/ bound</th><th>origin egress</th><th>/ image</th></tr>\
         <tr><td>shoal ({})</td><td>{:.1} s</td><td>{:.2}x</td><td>{}</td><td>{:.2}x</td></tr>\
         <tr><td>baseline ({})</td><td>{:.1} s</td><td>{:.2}x</td><td>{}</td><td>{:.2}x</td></tr></table>",
        esc(&sc.shoal.client),
        sc.shoal.time_to_all_s,
        sc.shoal_over_bound,
        origin_bytes(&sc.shoal),
        sc.shoal_origin_over_image,
        esc(&sc.baseline.client),
        sc.baseline.time_to_all_s,
        sc.baseline_over_bound,
        origin_bytes(&sc.baseline),
        sc.baseline_origin_over_image,
    );
    let _ = write!(
        s,
        "<p class=\"note\">Verified peers per node at the start: {:?}.",
        sc.mesh_peers
    );
    for (who, p) in [("shoal", &sc.shoal), ("the baseline", &sc.baseline)] {
        if let Some(busy) = p.cpu_busy {
            let _ = write!(
                s,
                " CPU busy during {who}: {:.0}% of {} cores.",
                busy * 100.0,
                p.cpus
            );
        }
    }
    if !sc.kills.is_empty() {
        let kills: Vec<String> = sc
            .kills
            .iter()
            .map(|k| format!("n{} at {:.1} s for {:.1} s", k.node, k.at_s, k.down_s))
            .collect();
        let _ = write!(s, " Killed: {}.", esc(&kills.join(", ")));
    }
    s.push_str("</p>");
    let nodes: Vec<String> = sc
        .shoal
        .nodes
        .iter()
        .map(|x| format!("n{}", x.node))
        .collect();
    s.push_str(&bar_chart(&BarChart {
        title: format!("{n}: when each node held the image"),
        unit: "seconds".into(),
        categories: nodes.clone(),
        groups: vec![
            vec![Bars {
                name: "shoal".into(),
                color: SHOAL,
                values: sc.shoal.nodes.iter().map(|x| x.seconds).collect(),
            }],
            vec![Bars {
                name: "baseline".into(),
                color: BASELINE,
                values: sc.baseline.nodes.iter().map(|x| x.seconds).collect(),
            }],
        ],
        rules: vec![Rule {
            name: "bound".into(),
            color: BOUND,
            value: sc.bound_s,
        }],
    }));
    let deltas = sc.shoal.nodes.iter().any(|x| x.bytes_from_deltas.is_some());
    let mut shoal_group = vec![
        Bars {
            name: "from origin".into(),
            color: SHOAL,
            values: sc
                .shoal
                .nodes
                .iter()
                .map(|x| mb(x.bytes_from_origin))
                .collect(),
        },
        Bars {
            name: "from peers".into(),
            color: PEERS,
            values: sc
                .shoal
                .nodes
                .iter()
                .map(|x| mb(x.bytes_from_peers))
                .collect(),
        },
    ];
    if deltas {
        shoal_group.push(Bars {
            name: "delta".into(),
            color: DELTA,
            values: sc
                .shoal
                .nodes
                .iter()
                .map(|x| mb(x.bytes_from_deltas.unwrap_or(0)))
                .collect(),
        });
    }
    let baseline_bytes: Vec<f64> = sc
        .baseline
        .nodes
        .iter()
        .map(|x| {
            mb(sc
                .baseline
                .origin_payload_bytes
                .map_or(x.link_received_bytes, |_| x.bytes_from_origin))
        })
        .collect();
    s.push_str(&bar_chart(&BarChart {
        title: format!(
            "{n}: bytes each node received, by source{}",
            if deltas {
                ""
            } else {
                " (nodes report no delta bytes yet)"
            }
        ),
        unit: "MB".into(),
        categories: nodes,
        groups: vec![
            shoal_group,
            vec![Bars {
                name: "baseline, from origin".into(),
                color: BASELINE,
                values: baseline_bytes,
            }],
        ],
        rules: vec![Rule {
            name: "needed".into(),
            color: GREY,
            value: mb(sc.bytes_needed),
        }],
    }));
    let series = |p: &PhaseFigures| -> Vec<[f64; 2]> {
        p.origin_series.iter().map(|&[t, b]| [t, b / 1e6]).collect()
    };
    s.push_str(&line_chart(&LineChart {
        title: format!("{n}: origin egress over time (uplink bytes, cumulative)"),
        x_unit: "seconds".into(),
        y_unit: "MB".into(),
        lines: vec![
            Line {
                name: "shoal".into(),
                color: SHOAL,
                points: series(&sc.shoal),
            },
            Line {
                name: "baseline".into(),
                color: BASELINE,
                points: series(&sc.baseline),
            },
        ],
        rules: vec![Rule {
            name: "image".into(),
            color: GREY,
            value: mb(sc.bytes_needed),
        }],
    }));
}
