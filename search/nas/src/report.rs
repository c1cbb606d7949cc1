//! The run's report: markdown, CSV and an SVG plot of accuracy against predicted latency.
//! Pure text generation: the caller writes the files.

use std::fmt::Write as _;

use crate::baseline::{BaselineOutcome, BaselineResult};
use crate::{FrontMember, NasOutcome};

/// CSV: one row per evaluated subnet, the front's test accuracies where measured.
pub fn csv(o: &NasOutcome) -> String {
    let mut s = String::from(
        "arch,split,c_red,bits,fusion,sensor_macs,aggregator_macs,sensor_ms,sensor_memory_bytes,link_bytes_per_view,link_ms,aggregator_ms,end_to_end_ms,parameters,val_accuracy,on_front,test_accuracy,test_accuracy_one_view,test_accuracy_one_missing,finetune_steps,test_accuracy_shared_weights\n",
    );
    for c in &o.evaluated {
        let f = o.front.iter().find(|m| m.arch == c.arch);
        let _ = writeln!(
            s,
            "\"{}\",{},{},{},{},{},{},{:.4},{},{},{:.4},{:.4},{:.4},{},{:.4},{},{},{},{},{},{}",
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
            f.map_or(String::new(), |m| m.finetune_steps.to_string()),
            f.and_then(|m| m.test_accuracy_shared_weights)
                .map_or(String::new(), |a| format!("{a:.4}")),
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
        "Supernet: {} steps{} (batch {}, {} random subnets + largest + smallest per step, distillation {} (label share {}), split-aware sampling {}, init {:?}, view keep probability {}), {:.1} s ({:.3} s per step). Search: {} subnets evaluated on the validation split in {:.1} s. Total {:.1} s; CPU time / wall time = {:.2} of {} cores.\n",
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
        o.train.distill_label_weight,
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
    let tuned = o.front.iter().map(|m| m.finetune_steps).max().unwrap_or(0);
    let shared_column = tuned > 0 || o.front_retrained_steps > 0;
    let _ = writeln!(
        s,
        "\n## Pareto front (test split)\n\n{}| subnet | e2e (ms) | sensor (ms) | sensor mem (KB) | link B/view | val | test all views | test one view | test one missing |{}\n|---|---|---|---|---|---|---|---|---|{}",
        if o.front_retrained_steps > 0 {
            format!(
                "Each member was retrained alone from scratch for {} steps (`splitnets-search nas-retrain`), with the search's settings; the test accuracies are the retrained networks', except the last column: the supernet's shared weights, all views (the search's figure). `val` is the shared weights' validation accuracy, which chose the member.\n\n",
                o.front_retrained_steps
            )
        } else if tuned > 0 {
            format!(
                "Each member was fine-tuned alone for {tuned} steps from the supernet's weights ({:.1} s in all, learning rate {} × the supernet's); the test accuracies are after it, except the last column: the supernet's shared weights, all views.\n\n",
                o.finetune_seconds, o.finetune_lr_fraction
            )
        } else {
            String::new()
        },
        if shared_column {
            " shared weights |"
        } else {
            ""
        },
        if shared_column { "---|" } else { "" },
    );
    for m in &o.front {
        let _ = writeln!(
            s,
            "| `{}` | {:.3} | {:.3} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} |{}",
            m.arch.short(),
            m.cost.end_to_end_seconds * 1e3,
            m.cost.sensor_seconds * 1e3,
            m.cost.sensor_memory_bytes as f64 / 1e3,
            m.cost.link_bytes_per_view,
            m.val_accuracy,
            m.test_accuracy,
            m.test_accuracy_one_view,
            m.test_accuracy_one_missing,
            match (shared_column, m.test_accuracy_shared_weights) {
                (false, _) => String::new(),
                (true, Some(a)) => format!(" {a:.3} |"),
                (true, None) => " — |".to_string(),
            }
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

/// CSV of the baselines: one row each, the same cost columns as [`csv`].
pub fn baselines_csv(b: &BaselineOutcome) -> String {
    let mut s = String::from(
        "id,name,arch,sensor_macs,aggregator_macs,sensor_ms,sensor_memory_bytes,link_bytes_per_view,link_ms,aggregator_ms,end_to_end_ms,parameters,feasible,why_not,planner_choice,test_accuracy,test_accuracy_one_view,test_accuracy_one_missing\n",
    );
    for r in &b.results {
        let c = &r.cost;
        let _ = writeln!(
            s,
            "{},\"{}\",\"{}\",{},{},{:.4},{},{},{:.4},{:.4},{:.4},{},{},\"{}\",{},{:.4},{:.4},{:.4}",
            r.id,
            r.name,
            r.arch.short_network(b.views),
            c.sensor_macs,
            c.aggregator_macs,
            c.sensor_seconds * 1e3,
            c.sensor_memory_bytes,
            c.link_bytes_per_view,
            c.link_seconds * 1e3,
            c.aggregator_seconds * 1e3,
            c.end_to_end_seconds * 1e3,
            c.parameters,
            r.feasible,
            r.why_not.join("; "),
            r.planner_choice,
            r.test_accuracy,
            r.test_accuracy_one_view,
            r.test_accuracy_one_missing,
        );
    }
    s
}

/// The best front member (test accuracy, all views) within `latency` seconds.
fn best_front_within(o: &NasOutcome, latency: f64) -> Option<&FrontMember> {
    o.front
        .iter()
        .filter(|m| m.cost.end_to_end_seconds <= latency)
        .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy))
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// How the baselines' training budget compares with the search's: the same steps as the
/// supernet, or (for a stricter comparison) the supernet's plus each member's fine-tuning.
fn budget_phrase(b: &BaselineOutcome, o: Option<&NasOutcome>) -> String {
    let Some(o) = o else {
        return "with the preset's budget".into();
    };
    let tuned = o.front.iter().map(|m| m.finetune_steps).max().unwrap_or(0);
    if o.front_retrained_steps > 0 {
        return if b.steps == o.front_retrained_steps {
            format!(
                "with the budget each front member here was retrained with, alone and from scratch ({} steps; the search's supernet had {} shared)",
                b.steps, o.steps_run
            )
        } else {
            format!(
                "with a budget other than the front's ({} steps each, retrained alone from scratch)",
                o.front_retrained_steps
            )
        };
    }
    if b.steps == o.steps_run {
        if tuned > 0 {
            format!(
                "with the supernet's budget (each front member had these shared steps plus {tuned} of its own)"
            )
        } else {
            "with the supernet's budget".into()
        }
    } else if b.steps == o.steps_run + tuned {
        format!(
            "with the budget of a front member, the supernet's {} shared steps plus its own {tuned}",
            o.steps_run
        )
    } else {
        format!(
            "with a budget other than the search's (supernet {} steps, fine-tuning {tuned})",
            o.steps_run
        )
    }
}

/// Markdown: the baselines, and (with the search's outcome) the front against them at every
/// latency target and the targets, each stated with what was measured.
pub fn baselines_markdown(b: &BaselineOutcome, o: Option<&NasOutcome>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Baselines: {}\n", b.data.name());
    let trained: Vec<String> = b
        .train_seconds
        .iter()
        // A network whose final checkpoint was already there trains nothing in this process.
        .map(|(id, t)| {
            if *t < 1.0 {
                format!("{id} read from its final checkpoint")
            } else {
                format!("{id} {t:.0} s")
            }
        })
        .collect();
    let _ = writeln!(
        s,
        "Each network trained alone {}: {} steps × batch {} (same schedule, label smoothing, seed and view dropout); training wall time in this process, on this machine: {}. Test split: {} items. {} Each placement runs the largest network of the space it can run at the target frame rate within the sensor's memory (predicted costs). Total {:.0} s.\n",
        budget_phrase(b, o),
        b.steps,
        b.batch,
        trained.join(", "),
        b.test_items,
        match (
            b.jpeg_quality,
            b.jpeg_mean_bytes,
            b.jpeg_encode_seconds_here
        ) {
            (Some(q), Some(bytes), Some(enc)) => format!(
                "JPEG: quality {q}, mean {bytes} B per frame (test split), encode {:.1} µs per frame here (median); on the sensor it is priced at {} multiply-accumulates per pixel at the sensor's convolution rate.",
                enc * 1e6,
                splitnets_cost_model::split::JPEG_MACS_PER_SAMPLE
            ),
            _ if b.not_trained.iter().any(|n| n == "aggregator-jpeg") => String::new(),
            _ => "The JPEG baseline was not run (`--no-jpeg`).".to_string(),
        },
        b.total_seconds,
    );
    if !b.not_trained.is_empty() {
        let _ = writeln!(
            s,
            "**Interim (`--trained-only`): not in this comparison, their training has not finished:** {}. The verdicts below count only the baselines measured here.\n",
            b.not_trained.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "| baseline | network | e2e (ms) | sensor (ms) | sensor mem (KB) | link B/view | aggregator (ms) | feasible | test all views | one view | one missing |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &b.results {
        let c = &r.cost;
        let _ = writeln!(
            s,
            "| {}{} | `{}` | {:.3} | {:.3} | {:.0} | {} | {:.3} | {} | {} | {} | {} |",
            r.name,
            if r.planner_choice {
                " **(planner's choice)**"
            } else {
                ""
            },
            r.arch.short_network(b.views),
            c.end_to_end_seconds * 1e3,
            c.sensor_seconds * 1e3,
            c.sensor_memory_bytes as f64 / 1e3,
            c.link_bytes_per_view,
            c.aggregator_seconds * 1e3,
            if r.feasible {
                "yes".to_string()
            } else {
                format!("no: {}", r.why_not.join("; "))
            },
            pct(r.test_accuracy),
            pct(r.test_accuracy_one_view),
            pct(r.test_accuracy_one_missing),
        );
    }
    let Some(o) = o else {
        return s;
    };
    if o.data != b.data {
        let _ = writeln!(
            s,
            "\n(The search outcome is for {}, not {}: no comparison.)",
            o.data.name(),
            b.data.name()
        );
        return s;
    }
    let _ = writeln!(
        s,
        "\n## The searched front against the baselines\n\nAt each of the search's latency targets: the front's best test accuracy within the target, against every feasible baseline within it (infeasible baselines do not count; a target no baseline meets is shown but not counted as dominated). Front: {} members, {} test items; baselines: {} test items.\n",
        o.front.len(),
        o.test_items,
        b.test_items
    );
    let _ = writeln!(
        s,
        "| target (ms) | front best | front test | baselines within the target (test) | verdict |\n|---|---|---|---|---|"
    );
    let mut dominated = 0;
    let mut counted = 0;
    for t in &o.targets {
        let lat = t.latency_seconds;
        let front = best_front_within(o, lat);
        let within: Vec<&BaselineResult> = b
            .results
            .iter()
            .filter(|r| r.feasible && r.cost.end_to_end_seconds <= lat)
            .collect();
        let list = if within.is_empty() {
            "none".to_string()
        } else {
            within
                .iter()
                .map(|r| format!("{} {}", r.id, pct(r.test_accuracy)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let best_base = within
            .iter()
            .map(|r| r.test_accuracy)
            .fold(f64::NEG_INFINITY, f64::max);
        let verdict = match (front, within.is_empty()) {
            (_, true) => "no baseline meets this target".to_string(),
            (None, false) => {
                counted += 1;
                "front has nothing this fast".to_string()
            }
            (Some(m), false) => {
                counted += 1;
                if m.test_accuracy >= best_base {
                    dominated += 1;
                    format!(
                        "front dominates (+{:.1} points)",
                        100.0 * (m.test_accuracy - best_base)
                    )
                } else {
                    format!(
                        "**baseline better by {:.1} points**",
                        100.0 * (best_base - m.test_accuracy)
                    )
                }
            }
        };
        let _ = writeln!(
            s,
            "| {:.3} | {} | {} | {} | {} |",
            lat * 1e3,
            front.map_or("—".to_string(), |m| format!("`{}`", m.arch.short())),
            front.map_or("—".to_string(), |m| pct(m.test_accuracy)),
            list,
            verdict
        );
    }
    let _ = writeln!(
        s,
        "\nPareto view, per baseline: is there a front member at most as slow and at least as accurate?\n\n| baseline | e2e (ms) | test | dominated by |\n|---|---|---|---|"
    );
    for r in &b.results {
        let by = o
            .front
            .iter()
            .filter(|m| {
                m.cost.end_to_end_seconds <= r.cost.end_to_end_seconds
                    && m.test_accuracy >= r.test_accuracy
            })
            .min_by(|a, b| {
                a.cost
                    .end_to_end_seconds
                    .total_cmp(&b.cost.end_to_end_seconds)
            });
        let _ = writeln!(
            s,
            "| {} | {:.3} | {} | {} |",
            r.id,
            r.cost.end_to_end_seconds * 1e3,
            pct(r.test_accuracy),
            by.map_or("**nothing on the front**".to_string(), |m| format!(
                "`{}` ({:.3} ms, {})",
                m.arch.short(),
                m.cost.end_to_end_seconds * 1e3,
                pct(m.test_accuracy)
            ))
        );
    }

    let _ = writeln!(s, "\n## The issue's targets\n");
    let _ = writeln!(
        s,
        "- **Front dominates every baseline at ≥ 3 latency targets**: at {dominated} of the {counted} targets some feasible baseline meets ({} targets in all). {}",
        o.targets.len(),
        if dominated >= 3 {
            "Met."
        } else {
            "**Missed.**"
        }
    );
    if o.space.views > 1 {
        if let Some(late) = b.results.iter().find(|r| r.id == "sensor") {
            let learned = o
                .front
                .iter()
                .filter(|m| {
                    m.arch.fusion == crate::space::Fusion::Learned
                        && m.cost.end_to_end_seconds <= late.cost.end_to_end_seconds
                })
                .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy));
            let _ = writeln!(
                s,
                "- **Learned fusion ≥ late fusion at equal latency**: late fusion (all on the sensor) {} at {:.3} ms; {}.",
                pct(late.test_accuracy),
                late.cost.end_to_end_seconds * 1e3,
                match learned {
                    Some(m) => format!(
                        "the best learned-fusion front member within that latency `{}` {} at {:.3} ms: {}",
                        m.arch.short(),
                        pct(m.test_accuracy),
                        m.cost.end_to_end_seconds * 1e3,
                        if m.test_accuracy >= late.test_accuracy {
                            "met"
                        } else {
                            "**missed**"
                        }
                    ),
                    None =>
                        "no learned-fusion front member is that fast: not measured at equal latency"
                            .to_string(),
                }
            );
        }
        let ok = o
            .front
            .iter()
            .filter(|m| m.test_accuracy_one_missing >= 0.9 * m.test_accuracy)
            .count();
        let worst = o
            .front
            .iter()
            .map(|m| m.test_accuracy_one_missing / m.test_accuracy.max(1e-9))
            .fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            s,
            "- **Any one camera missing keeps ≥ 90 % of the all-camera accuracy**: {ok} of {} front members (worst camera lost; lowest ratio {:.1} %). {}",
            o.front.len(),
            100.0 * worst,
            if ok == o.front.len() {
                "Met."
            } else {
                "**Missed** for the others."
            }
        );
    } else if let Some(best) = o
        .front
        .iter()
        .filter(|m| m.cost.fits_sensor_memory)
        .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy))
    {
        let _ = writeln!(
            s,
            "- **One clean view ≥ 92 % within the sensor's memory**: best `{}` {} % ({:.0} KB of {:.0} KB). {}",
            best.arch.short(),
            pct(best.test_accuracy),
            best.cost.sensor_memory_bytes as f64 / 1e3,
            best.cost.sensor_memory_limit_bytes as f64 / 1e3,
            if best.test_accuracy >= 0.92 {
                "Met.".to_string()
            } else {
                format!(
                    "**Missed by {:.1} points.**",
                    100.0 * (0.92 - best.test_accuracy)
                )
            }
        );
    }
    if let Some(raw) = b.results.iter().find(|r| r.id == "aggregator-raw") {
        let raw_bytes = raw.cost.link_bytes_per_view as f64;
        let best = o
            .front
            .iter()
            .filter(|m| m.cost.link_bytes_per_view as f64 * 20.0 <= raw_bytes)
            .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy));
        let _ = writeln!(
            s,
            "- **Link: ≤ 1 point below all-on-aggregator raw frames ({} %, {} B/view) with ≥ 20× fewer bytes** (the issue sets it on the 64×64 shape set; shown for every data set): {}",
            pct(raw.test_accuracy),
            raw.cost.link_bytes_per_view,
            match best {
                Some(m) => format!(
                    "best front member with ≤ {:.0} B/view: `{}` {} % at {} B/view ({:.1}× fewer), {:.1} points {} — {}",
                    raw_bytes / 20.0,
                    m.arch.short(),
                    pct(m.test_accuracy),
                    m.cost.link_bytes_per_view,
                    raw_bytes / m.cost.link_bytes_per_view.max(1) as f64,
                    100.0 * (raw.test_accuracy - m.test_accuracy).abs(),
                    if m.test_accuracy <= raw.test_accuracy {
                        "below"
                    } else {
                        "above"
                    },
                    if m.test_accuracy + 0.01 >= raw.test_accuracy {
                        "met"
                    } else {
                        "**missed**"
                    }
                ),
                None => "no front member sends 20× fewer bytes: **missed**".to_string(),
            }
        );
    }
    s
}

/// SVG: the front (black, test), every evaluated subnet (grey, validation) and each baseline
/// (coloured square, test; hollow when infeasible), accuracy against predicted end-to-end
/// latency on a logarithmic axis (the baselines span orders of magnitude).
pub fn comparison_svg(o: &NasOutcome, b: &BaselineOutcome) -> String {
    let (w, h, m) = (760.0, 480.0, 60.0);
    let lat: Vec<f64> = o
        .evaluated
        .iter()
        .map(|c| c.cost.end_to_end_seconds)
        .chain(b.results.iter().map(|r| r.cost.end_to_end_seconds))
        .filter(|x| *x > 0.0)
        .collect();
    let lo = lat.iter().copied().fold(f64::INFINITY, f64::min).log10();
    let hi = lat.iter().copied().fold(0.0, f64::max).log10();
    let (x0, x1) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let px = |sec: f64| m + (sec.max(1e-12).log10() - x0) / (x1 - x0) * (w - 2.0 * m);
    let py = |y: f64| h - m - y * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{0}\" stroke=\"black\"/>",
        h - m,
        w - m
    );
    let mut d = x0;
    while d <= x1 + 1e-9 {
        let sec = 10f64.powf(d);
        let x = px(sec);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{0}\" x2=\"{x:.1}\" y2=\"{1}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{2}\" text-anchor=\"middle\">{3} ms</text>",
            h - m,
            m,
            h - m + 15.0,
            sec * 1e3
        );
        d += 1.0;
    }
    for k in 0..=10 {
        let y = py(f64::from(k) / 10.0);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{y:.1}\" text-anchor=\"end\">{}</text>",
            m - 5.0,
            k * 10
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">predicted end-to-end latency (log scale)</text><text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">accuracy (%)</text>",
        w / 2.0,
        h - 20.0,
        h / 2.0,
        h / 2.0
    );
    for c in &o.evaluated {
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#ccc\"/>",
            px(c.cost.end_to_end_seconds),
            py(c.val_accuracy)
        );
    }
    let mut pts = String::new();
    for f in &o.front {
        let (x, y) = (px(f.cost.end_to_end_seconds), py(f.test_accuracy));
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
    let colours = [
        "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    for (i, r) in b.results.iter().enumerate() {
        let col = colours[i % colours.len()];
        let (x, y) = (px(r.cost.end_to_end_seconds), py(r.test_accuracy));
        let fill = if r.feasible { col } else { "none" };
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"{fill}\" stroke=\"{col}\" stroke-width=\"2\"/>",
            x - 4.0,
            y - 4.0
        );
        // Legend in the lower right, where slow and inaccurate points (none on a front) would be.
        let ly = h - m - 10.0 - 14.0 * (b.results.len() - 1 - i) as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"{fill}\" stroke=\"{col}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\">{}{}</text>",
            w - m - 230.0,
            ly - 8.0,
            w - m - 218.0,
            ly,
            r.id,
            if r.feasible { "" } else { " (infeasible)" }
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{m}\" y=\"25\">{}: front (black, test) · evaluated subnets (grey, validation) · baselines (squares, test; hollow = infeasible)</text>",
        o.data.name()
    );
    s.push_str("</svg>\n");
    s
}
