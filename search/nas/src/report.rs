//! The run's report: markdown, CSV and an SVG plot of accuracy against predicted latency.
//! Pure text generation: the caller writes the files.

use std::fmt::Write as _;

use crate::NasOutcome;

/// CSV: one row per evaluated subnet, the front's test accuracies where measured.
pub fn csv(o: &NasOutcome) -> String {
    let mut s = String::from(
        "arch,split,c_red,bits,fusion,sensor_macs,aggregator_macs,sensor_ms,sensor_memory_bytes,link_bytes_per_view,link_ms,aggregator_ms,end_to_end_ms,parameters,val_accuracy,on_front,test_accuracy,test_accuracy_one_view,test_accuracy_one_missing\n",
    );
    for c in &o.evaluated {
        let f = o.front.iter().find(|m| m.arch == c.arch);
        let _ = writeln!(
            s,
            "\"{}\",{},{},{},{},{},{},{:.4},{},{},{:.4},{:.4},{:.4},{},{:.4},{},{},{},{}",
            c.arch.short(),
            c.arch.split,
            c.arch.c_red,
            c.arch.bits,
            c.arch.fusion.name(),
            c.cost.sensor_macs,
            c.cost.aggregator_macs,
            c.cost.sensor_seconds * 1e3,
            c.cost.sensor_memory_bytes,
            c.cost.link_bytes_per_view,
            c.cost.link_seconds * 1e3,
            c.cost.aggregator_seconds * 1e3,
            c.cost.end_to_end_seconds * 1e3,
            c.cost.parameters,
            c.val_accuracy,
            f.is_some(),
            f.map_or(String::new(), |m| format!("{:.4}", m.test_accuracy)),
            f.map_or(String::new(), |m| format!(
                "{:.4}",
                m.test_accuracy_one_view
            )),
            f.map_or(String::new(), |m| format!(
                "{:.4}",
                m.test_accuracy_one_missing
            )),
        );
    }
    s
}

/// Markdown summary.
pub fn markdown(o: &NasOutcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Split-aware NAS: {}\n", o.data.name());
    let _ = writeln!(
        s,
        "Supernet: {} steps{} (batch {}, {} random subnets + largest + smallest per step, distillation {}, split-aware sampling {}, init {:?}, view keep probability {}), {:.1} s ({:.3} s per step). Search: {} subnets evaluated on the validation split in {:.1} s. Total {:.1} s; CPU time / wall time = {:.2} of {} cores.\n",
        o.steps_run,
        if o.steps_this_process < o.steps_run {
            format!(
                " ({} resumed from the checkpoint, {} in the final process)",
                o.steps_run - o.steps_this_process,
                o.steps_this_process
            )
        } else {
            String::new()
        },
        o.train.batch,
        o.train.random_subnets,
        o.train.distill,
        o.train.split_aware_sampling,
        o.train.init,
        o.train.view_keep_prob,
        o.train_seconds,
        o.step_seconds,
        o.evaluations,
        o.search_seconds,
        o.total_seconds,
        o.cores_used,
        o.cores_available,
    );
    let _ = writeln!(
        s,
        "Split module choices: C_red {:?}, bits {:?}, fusion {:?}.\n",
        o.space.reduce_channels,
        o.space.bits,
        o.space.fusions.iter().map(|f| f.name()).collect::<Vec<_>>(),
    );
    let _ = writeln!(
        s,
        "## Latency targets\n\n| target (ms) | best subnet | val acc | predicted e2e (ms) |\n|---|---|---|---|"
    );
    for t in &o.targets {
        match &t.best {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "| {:.3} | `{}` | {:.3} | {:.3} |",
                    t.latency_seconds * 1e3,
                    b.arch.short(),
                    b.val_accuracy,
                    b.cost.end_to_end_seconds * 1e3
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| {:.3} | (none feasible) | | |",
                    t.latency_seconds * 1e3
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\n## Pareto front (test split)\n\n| subnet | e2e (ms) | sensor (ms) | sensor mem (KB) | link B/view | val | test all views | test one view | test one missing |\n|---|---|---|---|---|---|---|---|---|"
    );
    for m in &o.front {
        let _ = writeln!(
            s,
            "| `{}` | {:.3} | {:.3} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            m.arch.short(),
            m.cost.end_to_end_seconds * 1e3,
            m.cost.sensor_seconds * 1e3,
            m.cost.sensor_memory_bytes as f64 / 1e3,
            m.cost.link_bytes_per_view,
            m.val_accuracy,
            m.test_accuracy,
            m.test_accuracy_one_view,
            m.test_accuracy_one_missing
        );
    }
    s
}

/// SVG scatter: every evaluated subnet (grey, validation accuracy) and the front (black, test).
pub fn svg(o: &NasOutcome) -> String {
    let (w, h, m) = (640.0, 420.0, 50.0);
    let xs: Vec<f64> = o
        .evaluated
        .iter()
        .map(|c| c.cost.end_to_end_seconds * 1e3)
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(0.0, f64::max).max(1e-9),
    );
    let (y0, y1) = (0.0, 1.0);
    let px = |x: f64| m + (x - x0) / (x1 - x0).max(1e-12) * (w - 2.0 * m);
    let py = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - m,
        w - m,
        h - m
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>",
        h - m
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">predicted end-to-end latency (ms), {:.3}–{:.3}</text>",
        w / 2.0,
        h - 15.0,
        x0,
        x1
    );
    let _ = writeln!(
        s,
        "<text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">accuracy (0–1)</text>",
        h / 2.0,
        h / 2.0
    );
    for c in &o.evaluated {
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#bbb\"/>",
            px(c.cost.end_to_end_seconds * 1e3),
            py(c.val_accuracy)
        );
    }
    let mut pts = String::new();
    for f in &o.front {
        let (x, y) = (px(f.cost.end_to_end_seconds * 1e3), py(f.test_accuracy));
        let _ = write!(pts, "{x:.1},{y:.1} ");
        let _ = writeln!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"black\"/>"
        );
    }
    let _ = writeln!(
        s,
        "<polyline points=\"{pts}\" fill=\"none\" stroke=\"black\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"30\">grey: validation accuracy of evaluated subnets; black: Pareto front, test accuracy ({})</text>",
        m,
        o.data.name()
    );
    s.push_str("</svg>\n");
    s
}
