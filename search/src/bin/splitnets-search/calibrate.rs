//! `splitnets-search calibrate`: measures this machine with ONNX Runtime, fits a host profile,
//! reports prediction error on held-out models.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct CalibrateArgs {
    /// Where to write the host profile.
    #[arg(long, default_value = "out/host.toml")]
    pub(crate) out: PathBuf,
    /// Held-out ONNX models to check predictions on (never used in the fit).
    #[arg(long = "validate")]
    pub(crate) validate: Vec<PathBuf>,
    /// Timed runs per model (median).
    #[arg(long, default_value_t = 30)]
    pub(crate) repeats: usize,
}

pub(crate) fn run_calibrate(a: CalibrateArgs) -> anyhow::Result<()> {
    use splitnets_cost_model::graph::analyze;
    use splitnets_cost_model::profile::{ComputeProfile, HardwareProfile, presets};
    use splitnets_search::calibrate::{calibrate, time_model};

    splitnets_runtime::onnx_runtime::environment()?;
    let (thr, overhead, report) = calibrate(a.repeats, |i, n| {
        eprint!("\r[calibrate] micro-model {}/{}", i + 1, n);
    })?;
    eprintln!();
    let headset: HardwareProfile = toml::from_str(presets::HEADSET)?;
    let compute = ComputeProfile {
        macs_per_second: thr.clone(),
        per_node_overhead_seconds: overhead,
        per_run_overhead_seconds: report.per_run_overhead_seconds,
        memory_bytes: 24_000_000_000,
        energy_per_mac_joules: 0.0,
        // ONNX Runtime folds Conv epilogues at the optimization level the daemons use.
        fuses_conv_epilogues: true,
    };
    let host = HardwareProfile {
        name: "host-calibrated".into(),
        description: format!(
            "This machine measured with ONNX Runtime, 1 intra-op thread, {} micro-models (median of {} runs); link copied from the headset preset",
            report.samples, a.repeats
        ),
        sensors: headset.sensors,
        links: headset.links,
        sensor: compute.clone(),
        link: headset.link,
        aggregator: compute,
    };
    host.validate()?;
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(
        &a.out,
        format!(
            "# Written by `splitnets-search calibrate`.\n{}",
            toml::to_string_pretty(&host)?
        ),
    )?;
    println!(
        "per-node overhead {:.2} us, per-run overhead {:.2} us",
        overhead * 1e6,
        report.per_run_overhead_seconds * 1e6
    );
    for (c, t) in &report.throughput {
        println!("  {c:<15} {:>10.3} G/s", t / 1e9);
    }
    let mut errors = Vec::new();
    for m in &a.validate {
        let model = splitnets_onnx::read_model(m)?;
        let g = analyze(&splitnets_onnx::cost_graph(&model)?, &Default::default())
            .with_context(|| format!("analysing {}", m.display()))?;
        let predicted: f64 = g
            .nodes
            .iter()
            .map(|n| overhead + n.macs as f64 / thr.get(n.class))
            .sum();
        let whole = splitnets_search::onnx_cut::runnable_original(&model, &g)?;
        let measured = time_model(&whole, a.repeats)?;
        let err = (predicted - measured).abs() / measured;
        errors.push(err);
        println!(
            "  held out {:<28} predicted {:>9.3} ms  measured {:>9.3} ms  error {:>6.1} %",
            m.file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
            predicted * 1e3,
            measured * 1e3,
            err * 100.0
        );
    }
    if !errors.is_empty() {
        println!(
            "MAPE on {} held-out models: {:.1} %",
            errors.len(),
            100.0 * errors.iter().sum::<f64>() / errors.len() as f64
        );
    }
    println!("host profile written to {}", a.out.display());
    Ok(())
}
