//! `splitnets-search bench-plan`: planner speed (split evaluations per second, whole-plan time).

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// ONNX models to plan (each with fixed input shapes).
    #[arg(required = true)]
    pub(crate) models: Vec<PathBuf>,
    /// Repetitions of the whole plan per model (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub(crate) repeats: usize,
    #[arg(long, default_value_t = 2)]
    pub(crate) max_crossing: usize,
}

pub(crate) fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    use splitnets_cost_model::graph::analyze;
    use splitnets_cost_model::profile::{HardwareProfile, presets};
    use splitnets_cost_model::split::evaluate;
    use splitnets_search::{cuts, plan};
    use std::time::Instant;

    let profile: HardwareProfile = toml::from_str(presets::HEADSET)?;
    println!(
        "{:<28} {:>6} {:>6} {:>12} {:>14}",
        "model", "nodes", "cuts", "plan ms p50", "evals/s"
    );
    for m in &a.models {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..a.repeats.max(1) {
            let t = Instant::now();
            let model = splitnets_onnx::read_model(m)?;
            let g = analyze(&splitnets_onnx::cost_graph(&model)?, &Default::default())?;
            let cs = cuts::enumerate(&g, a.max_crossing, 2_000_000)?;
            let sums = plan::summaries(&g, &cs);
            let p = plan::plan(
                "bench",
                &g,
                &cs,
                &sums,
                &profile,
                &plan::PlanOptions {
                    bits: 8,
                    fps: 30.0,
                    latency_seconds: None,
                    jpeg_frame_bytes: None,
                    jpeg_frame_samples: None,
                },
            );
            times.push(t.elapsed().as_secs_f64());
            std::hint::black_box(&p);
            last = Some((g, sums));
        }
        times.sort_by(f64::total_cmp);
        let (g, sums) = last.expect("at least one run");
        // Evaluations of summarised cuts across bit widths, for at least one second.
        let bits = [2u32, 4, 6, 8, 16, 32];
        let t = Instant::now();
        let mut n = 0u64;
        let mut acc = 0.0;
        while t.elapsed().as_secs_f64() < 1.0 {
            for s in &sums {
                for &b in &bits {
                    acc += evaluate(std::hint::black_box(s), &profile, b, None).end_to_end_seconds;
                    n += 1;
                }
            }
        }
        std::hint::black_box(acc);
        let name = m
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        println!(
            "{:<28} {:>6} {:>6} {:>12.1} {:>14.0}",
            name,
            g.nodes.len(),
            sums.len(),
            times[times.len() / 2] * 1e3,
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
