//! Plots as inline SVG, drawn here rather than by a script so that the report reads
//! the same in any browser, offline, and in a test's DOM dump. Every series is a
//! `<g class="series" data-series="NAME">`, every legend entry a
//! `<g class="legend-item" data-series="NAME">` (the report's script toggles a series
//! when its legend entry is clicked), and every bar or point carries a `<title>` with
//! its value.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 44.0;

/// A series of bars, one value per category.
pub struct Bars {
    /// Its name (legend and `data-series`).
    pub name: String,
    /// Fill colour.
    pub color: &'static str,
    /// One value per category.
    pub values: Vec<f64>,
}

/// A horizontal reference line.
pub struct Rule {
    /// Its name (legend and `data-series`).
    pub name: String,
    /// Stroke colour.
    pub color: &'static str,
    /// Where it is.
    pub value: f64,
}

/// A bar chart: per category, one slot per group side by side; the series of a group
/// stack in its slot.
pub struct BarChart {
    /// Title above the plot.
    pub title: String,
    /// What the y axis counts.
    pub unit: String,
    /// Category labels along x.
    pub categories: Vec<String>,
    /// Groups of stacked series.
    pub groups: Vec<Vec<Bars>>,
    /// Reference lines.
    pub rules: Vec<Rule>,
}

/// A line through points.
pub struct Line {
    /// Its name (legend and `data-series`).
    pub name: String,
    /// Stroke colour.
    pub color: &'static str,
    /// `[x, y]` points, x increasing.
    pub points: Vec<[f64; 2]>,
}

/// A line chart.
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// What x counts.
    pub x_unit: String,
    /// What y counts.
    pub y_unit: String,
    /// The lines.
    pub lines: Vec<Line>,
    /// Reference lines.
    pub rules: Vec<Rule>,
}

/// `s` safe inside XML text and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about five ticks up to `max`, and the axis top.
fn ticks(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

fn number(v: f64) -> String {
    if v == v.round() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The frame: svg open tag, title, y grid and labels, legend. Returns (svg so far,
/// y scale).
fn frame(
    title: &str,
    y_unit: &str,
    y_top: f64,
    step: f64,
    legend: &[(&str, &str, bool)],
) -> (String, impl Fn(f64) -> f64) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = move |v: f64| TOP + plot_h - plot_h * (v / y_top).clamp(0.0, 1.05);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}"><title>{t}</title><text class="plot-title" x="{LEFT}" y="18">{t}</text>"#,
        t = esc(title)
    );
    let mut v = 0.0;
    while v <= y_top + step / 2.0 {
        let yy = y(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            number(v)
        );
        v += step;
    }
    let _ = write!(
        s,
        r#"<text class="axis-label" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        esc(y_unit)
    );
    let mut x = LEFT;
    for (name, color, dashed) in legend {
        let mark = if *dashed {
            format!(
                r#"<line x1="{x:.1}" x2="{:.1}" y1="36" y2="36" stroke="{color}" stroke-width="2" stroke-dasharray="4 3"/>"#,
                x + 14.0
            )
        } else {
            format!(r#"<rect x="{x:.1}" y="30" width="14" height="12" fill="{color}"/>"#)
        };
        let _ = write!(
            s,
            r#"<g class="legend-item" data-series="{n}">{mark}<text x="{:.1}" y="40">{n}</text></g>"#,
            x + 18.0,
            n = esc(name)
        );
        x += 30.0 + 7.0 * name.len() as f64;
    }
    (s, y)
}

fn rules(s: &mut String, rules: &[Rule], y: &impl Fn(f64) -> f64) {
    for r in rules {
        let yy = y(r.value);
        let _ = write!(
            s,
            r#"<g class="series rule" data-series="{n}"><line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="{}" stroke-width="1.5" stroke-dasharray="6 4"><title>{n}: {}</title></line></g>"#,
            WIDTH - RIGHT,
            r.color,
            number(r.value),
            n = esc(&r.name)
        );
    }
}

/// Draws a bar chart.
pub fn bar_chart(c: &BarChart) -> String {
    let mut top: f64 = c.rules.iter().map(|r| r.value).fold(0.0, f64::max);
    for g in &c.groups {
        for i in 0..c.categories.len() {
            let sum: f64 = g
                .iter()
                .map(|b| b.values.get(i).copied().unwrap_or(0.0))
                .sum();
            top = top.max(sum);
        }
    }
    let (step, y_top) = ticks(top);
    let mut legend: Vec<(&str, &str, bool)> = c
        .groups
        .iter()
        .flatten()
        .map(|b| (b.name.as_str(), b.color, false))
        .collect();
    legend.extend(c.rules.iter().map(|r| (r.name.as_str(), r.color, true)));
    let (mut s, y) = frame(&c.title, &c.unit, y_top, step, &legend);
    let plot_w = WIDTH - LEFT - RIGHT;
    let slot = plot_w / c.categories.len().max(1) as f64;
    let bar_w = (slot * 0.8 / c.groups.len().max(1) as f64).min(60.0);
    let group_w = bar_w * c.groups.len() as f64;
    for (gi, group) in c.groups.iter().enumerate() {
        let mut base = vec![0.0; c.categories.len()];
        for bars in group {
            let _ = write!(s, r#"<g class="series" data-series="{}">"#, esc(&bars.name));
            for (i, cat) in c.categories.iter().enumerate() {
                let v = bars.values.get(i).copied().unwrap_or(0.0);
                let x = LEFT + slot * i as f64 + (slot - group_w) / 2.0 + bar_w * gi as f64;
                let (y0, y1) = (y(base[i]), y(base[i] + v));
                base[i] += v;
                let _ = write!(
                    s,
                    r#"<rect class="bar" x="{x:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}{}: {} {}</title></rect>"#,
                    (bar_w - 1.0).max(1.0),
                    (y0 - y1).max(0.0),
                    bars.color,
                    esc(cat),
                    if cat.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", esc(&bars.name))
                    },
                    number(v),
                    esc(&c.unit)
                );
            }
            s.push_str("</g>");
        }
    }
    for (i, cat) in c.categories.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + slot * (i as f64 + 0.5),
            HEIGHT - BOTTOM + 16.0,
            esc(cat)
        );
    }
    rules(&mut s, &c.rules, &y);
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}"/></svg>"#,
        WIDTH - RIGHT,
        y(0.0),
        y(0.0)
    );
    s
}

/// Draws a line chart.
pub fn line_chart(c: &LineChart) -> String {
    let x_max = c
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p[0]))
        .fold(0.0, f64::max);
    let y_max = c
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p[1]))
        .chain(c.rules.iter().map(|r| r.value))
        .fold(0.0, f64::max);
    let (y_step, y_top) = ticks(y_max);
    let (x_step, x_top) = ticks(x_max);
    let mut legend: Vec<(&str, &str, bool)> = c
        .lines
        .iter()
        .map(|l| (l.name.as_str(), l.color, false))
        .collect();
    legend.extend(c.rules.iter().map(|r| (r.name.as_str(), r.color, true)));
    let (mut s, y) = frame(&c.title, &c.y_unit, y_top, y_step, &legend);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |v: f64| LEFT + plot_w * (v / x_top).clamp(0.0, 1.0);
    let mut v = 0.0;
    while v <= x_top + x_step / 2.0 {
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(v),
            HEIGHT - BOTTOM + 16.0,
            number(v)
        );
        v += x_step;
    }
    let _ = write!(
        s,
        r#"<text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        esc(&c.x_unit)
    );
    for l in &c.lines {
        let path: Vec<String> = l
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1])))
            .collect();
        let last = l
            .points
            .last()
            .map(|p| {
                format!(
                    "{} {} at {} {}",
                    number(p[1]),
                    c.y_unit,
                    number(p[0]),
                    c.x_unit
                )
            })
            .unwrap_or_default();
        let _ = write!(
            s,
            r#"<g class="series" data-series="{n}"><polyline fill="none" stroke="{}" stroke-width="2" points="{}"><title>{n}: {}</title></polyline></g>"#,
            l.color,
            path.join(" "),
            esc(&last),
            n = esc(&l.name)
        );
    }
    rules(&mut s, &c.rules, &y);
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}"/></svg>"#,
        WIDTH - RIGHT,
        y(0.0),
        y(0.0)
    );
    s
}
