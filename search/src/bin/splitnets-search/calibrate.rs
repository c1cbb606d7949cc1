//! `splitnets-search calibrate`: measures this machine with ONNX Runtime, fits a host profile,
//! reports prediction error on held-out models.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct CalibrateArgs {
    /// Where to write the host profile.
    #[arg(long, default_value = "out/host.toml")]
    pub(crate) out: PathBuf,
    /// Held-out ONNX models to check predictions on (never used in the fit).
    #[arg(long = "validate")]
    pub(crate) validate: Vec<PathBuf>,
    /// Round-robin timing passes over all models (the median over passes is kept).
    #[arg(long, default_value_t = 7)]
    pub(crate) passes: usize,
    /// Timed runs of each model per pass, at least (the pass keeps their median).
    #[arg(long = "repeats", default_value_t = 3)]
    pub(crate) repeats: usize,
    /// Milliseconds each model runs per pass, at least.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) min_ms: f64,
    /// Print the cost model's prediction per op class for each held-out model.
    #[arg(long)]
    pub(crate) breakdown: bool,
}

/// Progress on stderr: `\r` updates on a terminal, one line per step otherwise (logs).
struct Status {
    tty: bool,
    open: bool,
    start: Instant,
}

impl Status {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            open: false,
            start: Instant::now(),
        }
    }
    fn update(&mut self, msg: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K[calibrate {t:5.1} s] {msg}");
            let _ = e.flush();
            self.open = true;
        } else {
            let _ = writeln!(e, "[calibrate {t:5.1} s] {msg}");
        }
    }
    fn done(&mut self, msg: &str) {
        self.update(msg);
        if self.open {
            eprintln!();
            self.open = false;
        }
    }
}

pub(crate) fn run_calibrate(a: CalibrateArgs) -> anyhow::Result<()> {
    use splitnets_cost_model::graph::{OpClass, analyze};
    use splitnets_cost_model::profile::{HardwareProfile, presets};
    use splitnets_search::calibrate::{Progress, Timing, calibrate, features};

    splitnets_runtime::onnx_runtime::environment()?;
    let timing = Timing {
        passes: a.passes.max(1),
        min_runs: a.repeats.max(1),
        min_seconds: a.min_ms.max(0.0) / 1e3,
    };
    let mut status = Status::new();
    // The held-out models are timed in the same passes as the micro-models (see `calibrate`).
    let mut checks = Vec::new();
    let mut whole = Vec::new();
    for m in &a.validate {
        let model = splitnets_onnx::read_model(m)?;
        let g = analyze(&splitnets_onnx::cost_graph(&model)?, &Default::default())
            .with_context(|| format!("analysing {}", m.display()))?;
        let w = features(&g)?;
        let name = m
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        whole.push(splitnets_search::onnx_cut::runnable_original(&model, &g)?);
        checks.push((name, w));
    }
    let (mut compute, report, measured) = calibrate(&timing, &whole, |p| match p {
        Progress::Loading { models } => status.done(&format!(
            "loading {models} models ({} held out, timed in the same passes)",
            whole.len()
        )),
        Progress::Pass { pass, passes } => {
            status.update(&format!("timing pass {}/{passes}", pass + 1));
        }
    })?;
    status.done(&format!(
        "fitted {} micro-models: median error {:.1} %, largest {:.1} %",
        report.samples,
        report.fit_median_error * 100.0,
        report.fit_max_error * 100.0
    ));
    let calibrate_seconds = status.start.elapsed().as_secs_f64();
    compute.memory_bytes = 24_000_000_000;
    let headset: HardwareProfile = toml::from_str(presets::HEADSET)?;
    let mut host = HardwareProfile {
        name: "host-calibrated".into(),
        description: format!(
            "This machine measured with ONNX Runtime, 1 intra-op thread, {} micro-models \
             (median over {} round-robin passes of the median of ≥ {} runs, ≥ {} ms, per pass); \
             link copied from the headset preset",
            report.samples, timing.passes, timing.min_runs, a.min_ms
        ),
        sensors: headset.sensors,
        links: headset.links,
        sensor: compute.clone(),
        link: headset.link,
        aggregator: compute.clone(),
    };
    host.validate()?;
    println!(
        "calibrated in {calibrate_seconds:.1} s: per-node overhead {:.2} us, per-run overhead {:.2} us",
        report.per_node_overhead_seconds * 1e6,
        report.per_run_overhead_seconds * 1e6
    );
    println!(
        "  {:<19} {:>10} {:>10} {:>12} {:>12}",
        "class", "G/s", "us/node", "ns/act.kB", "ns/weight.kB"
    );
    for c in OpClass::ALL {
        println!(
            "  {:<19} {:>10.3} {:>10.3} {:>12.3} {:>12.3}",
            c.name(),
            compute.macs_per_second.get(c) / 1e9,
            compute.seconds_per_node.get(c) * 1e6,
            compute.seconds_per_activation_byte.get(c) * 1e12,
            compute.seconds_per_weight_byte.get(c) * 1e12,
        );
    }

    if a.breakdown {
        println!("micro-models (measured, predicted, error):");
        for (name, t, p) in &report.fit {
            println!(
                "  {name:<32} {:>9.3} ms {:>9.3} ms {:>+6.1} %",
                t * 1e3,
                p * 1e3,
                (p - t) / t * 100.0
            );
        }
    }
    let mut lines = Vec::new();
    if !checks.is_empty() {
        let mut errors = Vec::new();
        for ((name, w), measured) in checks.iter().zip(measured) {
            let predicted = w.seconds(&compute);
            let err = (predicted - measured) / measured;
            errors.push(err.abs());
            let line = format!(
                "held out {name:<28} predicted {:>9.3} ms  measured {:>9.3} ms  error {:>+6.1} %",
                predicted * 1e3,
                measured * 1e3,
                err * 100.0
            );
            println!("  {line}");
            lines.push(line);
            if a.breakdown {
                for c in OpClass::ALL {
                    let mut one = splitnets_cost_model::split::SideWork::default();
                    let i = c.index();
                    one.macs_by_class[i] = w.macs_by_class[i];
                    one.shape_by_class[i] = w.shape_by_class[i];
                    one.nodes = w.shape_by_class[i].nodes;
                    if one.nodes == 0 {
                        continue;
                    }
                    let mut p = compute.clone();
                    p.per_run_overhead_seconds = 0.0;
                    println!(
                        "      {:<19} {:>4} nodes {:>10.1} MMAC {:>9.3} ms",
                        c.name(),
                        one.nodes,
                        w.macs_by_class[i] as f64 / 1e6,
                        one.seconds(&p) * 1e3
                    );
                }
            }
        }
        let mape = 100.0 * errors.iter().sum::<f64>() / errors.len() as f64;
        let line = format!("MAPE on {} held-out models: {mape:.1} %", errors.len());
        println!("{line}");
        lines.push(line);
    }
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut header = String::from("# Written by `splitnets-search calibrate`.\n");
    for l in &lines {
        header.push_str(&format!("#   {l}\n"));
    }
    host.description
        .push_str(&format!("; calibration took {calibrate_seconds:.0} s"));
    std::fs::write(
        &a.out,
        format!("{header}{}", toml::to_string_pretty(&host)?),
    )?;
    println!("host profile written to {}", a.out.display());
    Ok(())
}
