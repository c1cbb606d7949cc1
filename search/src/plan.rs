//! The split planner: every cut of a model, evaluated under a hardware profile and constraints;
//! the Pareto set over (end-to-end latency, link bytes per frame, sensor memory), ranked, as a
//! table, CSV and an SVG plot; and the two extremes (all on the sensor; all on the aggregator with
//! a raw or a JPEG-compressed frame) beside it.

use std::fmt::Write as _;

use serde::Serialize;
use splitnets_cost_model::graph::AnalyzedGraph;
use splitnets_cost_model::profile::HardwareProfile;
use splitnets_cost_model::split::{CutSummary, SplitCost, evaluate, summarize};

use crate::cuts::Cut;

#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Bits per element of the crossing tensors.
    pub bits: u32,
    /// Frame rate every stage must sustain.
    pub fps: f64,
    /// End-to-end latency target, seconds (None: no target).
    pub latency_seconds: Option<f64>,
    /// Measured JPEG size of a frame, for the "compress and send the frame" baseline.
    pub jpeg_frame_bytes: Option<u64>,
    /// Samples (pixels × channels) of the frame the sensor JPEG-encodes: its encode time is
    /// counted on the sensor ([`JPEG_MACS_PER_SAMPLE`] priced at the sensor's conv rate).
    pub jpeg_frame_samples: Option<u64>,
}

// The JPEG encoder's price lives in the cost model, beside the rest of the arithmetic.
pub use splitnets_cost_model::split::{JPEG_MACS_PER_SAMPLE, jpeg_encode_seconds};

#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    pub cut_index: usize,
    pub sensor_nodes: usize,
    pub crossing: Vec<String>,
    pub cost: SplitCost,
    pub feasible: bool,
    pub why_not: Vec<String>,
    pub pareto: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: String,
    pub cost: SplitCost,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub model: String,
    pub profile: String,
    pub bits: u32,
    pub fps: f64,
    pub rows: Vec<PlanRow>,
    pub baselines: Vec<Baseline>,
}

fn check(cost: &SplitCost, p: &HardwareProfile, c: &PlanOptions) -> Vec<String> {
    let mut why = Vec::new();
    if !cost.fits_sensor_memory {
        why.push(format!(
            "sensor memory {} B > {} B",
            cost.sensor_memory_bytes, p.sensor.memory_bytes
        ));
    }
    if cost.sustained_fps < c.fps {
        why.push(format!(
            "sustains {:.1} fps < {}",
            cost.sustained_fps, c.fps
        ));
    }
    if let Some(l) = c.latency_seconds
        && cost.end_to_end_seconds > l
    {
        why.push(format!(
            "latency {:.2} ms > {:.2} ms",
            cost.end_to_end_seconds * 1e3,
            l * 1e3
        ));
    }
    why
}

/// True when `a` is at least as good as `b` everywhere and better somewhere.
fn dominates(a: &SplitCost, b: &SplitCost) -> bool {
    let (x, y) = (
        [
            a.end_to_end_seconds,
            a.link_bytes_per_view as f64,
            a.sensor_memory_bytes as f64,
        ],
        [
            b.end_to_end_seconds,
            b.link_bytes_per_view as f64,
            b.sensor_memory_bytes as f64,
        ],
    );
    x.iter().zip(&y).all(|(p, q)| p <= q) && x.iter().zip(&y).any(|(p, q)| p < q)
}

/// Summarises every cut once.
pub fn summaries(g: &AnalyzedGraph, cuts: &[Cut]) -> Vec<CutSummary> {
    cuts.iter()
        .map(|c| summarize(g, &c.on_sensor).expect("enumerated cuts separate the graph"))
        .collect()
}

/// Evaluates every cut and ranks them.
pub fn plan(
    model: &str,
    g: &AnalyzedGraph,
    cuts: &[Cut],
    sums: &[CutSummary],
    p: &HardwareProfile,
    c: &PlanOptions,
) -> Plan {
    let (bits, jpeg_bytes) = (c.bits, c.jpeg_frame_bytes);
    let mut rows: Vec<PlanRow> = cuts
        .iter()
        .zip(sums)
        .enumerate()
        .map(|(i, (cut, s))| {
            let cost = evaluate(s, p, bits, None);
            let why_not = check(&cost, p, c);
            PlanRow {
                cut_index: i,
                sensor_nodes: cut.on_sensor.iter().filter(|&&x| x).count(),
                crossing: cut
                    .crossing
                    .iter()
                    .map(|&t| g.tensors[t].name.clone())
                    .collect(),
                cost,
                feasible: why_not.is_empty(),
                why_not,
                pareto: false,
            }
        })
        .collect();
    // Pareto set among feasible cuts (all cuts when none is feasible, so the table still helps).
    let any_feasible = rows.iter().any(|r| r.feasible);
    let candidates: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].feasible || !any_feasible)
        .collect();
    for &i in &candidates {
        rows[i].pareto = !candidates
            .iter()
            .any(|&j| j != i && dominates(&rows[j].cost, &rows[i].cost));
    }
    rows.sort_by(|a, b| {
        (b.pareto, b.feasible).cmp(&(a.pareto, a.feasible)).then(
            a.cost
                .end_to_end_seconds
                .total_cmp(&b.cost.end_to_end_seconds),
        )
    });

    // Extremes.
    let all_sensor = summarize(g, &vec![true; g.nodes.len()]).expect("all-sensor separates");
    let all_agg = summarize(g, &vec![false; g.nodes.len()]).expect("all-aggregator separates");
    let mut baselines = vec![
        Baseline {
            name: "all on sensor (answer over the link)".into(),
            cost: evaluate(&all_sensor, p, 32, None),
        },
        Baseline {
            name: "all on aggregator (raw 8-bit frame)".into(),
            cost: evaluate(&all_agg, p, 8, None),
        },
    ];
    if let Some(j) = jpeg_bytes {
        let mut cost = evaluate(&all_agg, p, 8, Some(j));
        if let Some(samples) = c.jpeg_frame_samples {
            // The encoder runs on the sensor: its time adds to the sensor stage.
            let enc = jpeg_encode_seconds(p, samples);
            cost.sensor_seconds += enc;
            cost.end_to_end_seconds += enc;
            if enc > 0.0 {
                cost.sustained_fps = cost.sustained_fps.min(1.0 / cost.sensor_seconds);
            }
        }
        baselines.push(Baseline {
            name: "all on aggregator (JPEG frame size measured, encode on the sensor)".into(),
            cost,
        });
    }
    Plan {
        model: model.into(),
        profile: p.name.clone(),
        bits,
        fps: c.fps,
        rows,
        baselines,
    }
}

fn fmt_cost(c: &SplitCost) -> String {
    format!(
        "{:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>10} {:>8.1} {:>9.3}",
        c.end_to_end_seconds * 1e3,
        c.sensor_seconds * 1e3,
        c.link_seconds * 1e3,
        c.aggregator_seconds * 1e3,
        c.link_bytes_per_view,
        c.sensor_memory_bytes,
        c.sustained_fps,
        c.energy_joules_per_frame * 1e3
    )
}

/// A table a person can read: Pareto cuts first, then the extremes.
pub fn table(plan: &Plan, max_rows: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9}  crossing tensors / notes",
        "rank", "e2e ms", "sensor ms", "link ms", "agg ms", "B/view", "sensor B", "fps", "mJ/frame"
    );
    for (rank, r) in plan
        .rows
        .iter()
        .filter(|r| r.pareto)
        .take(max_rows)
        .enumerate()
    {
        let _ = writeln!(
            s,
            "{:<5} {}  {}{}",
            rank + 1,
            fmt_cost(&r.cost),
            r.crossing.join(", "),
            if r.feasible {
                String::new()
            } else {
                format!("  [infeasible: {}]", r.why_not.join("; "))
            }
        );
    }
    for b in &plan.baselines {
        let _ = writeln!(s, "{:<5} {}  {}", "-", fmt_cost(&b.cost), b.name);
    }
    s
}

pub fn csv(plan: &Plan) -> String {
    let mut s = String::from(
        "cut,pareto,feasible,sensor_nodes,end_to_end_s,sensor_s,link_s,aggregator_s,link_bytes_per_view,sensor_memory_bytes,sustained_fps,energy_j,crossing,why_not\n",
    );
    for r in &plan.rows {
        let c = &r.cost;
        let _ = writeln!(
            s,
            "{},{},{},{},{:.9},{:.9},{:.9},{:.9},{},{},{:.3},{:.9},\"{}\",\"{}\"",
            r.cut_index,
            r.pareto,
            r.feasible,
            r.sensor_nodes,
            c.end_to_end_seconds,
            c.sensor_seconds,
            c.link_seconds,
            c.aggregator_seconds,
            c.link_bytes_per_view,
            c.sensor_memory_bytes,
            c.sustained_fps,
            c.energy_joules_per_frame,
            r.crossing.join(" "),
            r.why_not.join("; ")
        );
    }
    s
}

/// Scatter plot: end-to-end latency against link bytes per view (log scale), Pareto cuts in red,
/// infeasible cuts hollow, extremes as labelled squares.
pub fn svg(plan: &Plan) -> String {
    let (w, h, m) = (860.0, 560.0, 70.0);
    let pts: Vec<(f64, f64)> = plan
        .rows
        .iter()
        .map(|r| {
            (
                r.cost.end_to_end_seconds * 1e3,
                r.cost.link_bytes_per_view as f64,
            )
        })
        .chain(plan.baselines.iter().map(|b| {
            (
                b.cost.end_to_end_seconds * 1e3,
                b.cost.link_bytes_per_view as f64,
            )
        }))
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    let ymin = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let ymax = pts
        .iter()
        .map(|p| p.1)
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(ymin + 1.0);
    let x = |v: f64| m + (w - 2.0 * m) * v / xmax.max(1e-9);
    let y = |v: f64| h - m - (h - 2.0 * m) * (v.max(1.0).log10() - ymin) / (ymax - ymin);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{} on {} — {} bits, {} fps</text>"#,
        w / 2.0,
        esc(&plan.model),
        esc(&plan.profile),
        plan.bits,
        plan.fps
    );
    let _ = writeln!(
        s,
        r#"<line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/>"#,
        h - m,
        w - m,
        h - m,
        h - m
    );
    for i in 0..=5 {
        let v = xmax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.2}</text>"#,
            x(v),
            h - m + 18.0,
            v
        );
    }
    let mut e = ymin;
    while e <= ymax {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">1e{}</text>"#,
            m - 6.0,
            y(10f64.powf(e)) + 4.0,
            e as i64
        );
        e += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">predicted end-to-end latency (ms)</text>"#,
        w / 2.0,
        h - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">link bytes per view per frame (log)</text>"#,
        h / 2.0,
        h / 2.0
    );
    for r in plan.rows.iter().rev() {
        let (px, py) = (
            x(r.cost.end_to_end_seconds * 1e3),
            y(r.cost.link_bytes_per_view as f64),
        );
        let (fill, stroke, rad) = match (r.pareto, r.feasible) {
            (true, _) => ("#d62728", "#d62728", 5.0),
            (false, true) => ("#1f77b4", "#1f77b4", 3.0),
            (false, false) => ("none", "#999999", 3.0),
        };
        let _ = writeln!(
            s,
            r##"<circle cx="{px:.1}" cy="{py:.1}" r="{rad}" fill="{fill}" stroke="{stroke}"><title>{}</title></circle>"##,
            esc(&r.crossing.join(", "))
        );
    }
    for b in &plan.baselines {
        let (px, py) = (
            x(b.cost.end_to_end_seconds * 1e3),
            y(b.cost.link_bytes_per_view as f64),
        );
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="#2ca02c"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            px - 4.5,
            py - 4.5,
            px + 8.0,
            py - 6.0,
            esc(&b.name)
        );
    }
    let _ = writeln!(
        s,
        r##"<g transform="translate({},{})"><circle cx="0" cy="0" r="5" fill="#d62728"/><text x="10" y="4">Pareto (latency, bytes, sensor memory)</text><circle cx="0" cy="18" r="3" fill="#1f77b4"/><text x="10" y="22">feasible</text><circle cx="0" cy="36" r="3" fill="none" stroke="#999"/><text x="10" y="40">infeasible</text></g>"##,
        w - 300.0,
        m
    );
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Measured JPEG size (mean over `frames`) of `h × w` frames with `channels` channels at `quality`.
pub fn jpeg_mean_bytes(
    frames: &[Vec<u8>],
    w: u16,
    h: u16,
    channels: usize,
    quality: u8,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for f in frames {
        let mut out = Vec::new();
        let enc = jpeg_encoder::Encoder::new(&mut out, quality);
        let ct = if channels == 1 {
            jpeg_encoder::ColorType::Luma
        } else {
            jpeg_encoder::ColorType::Rgb
        };
        enc.encode(f, w, h, ct)?;
        total += out.len() as u64;
    }
    Ok(total / frames.len().max(1) as u64)
}
