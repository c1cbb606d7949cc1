//! `splitnets-search`: offline design of split networks.
//!
//! `splitnets-search train` trains the multi-view split CNN on Fashion-MNIST and writes a bundle.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::CameraRig;
use splitnets_proto::bundle::InputSpec;
use splitnets_proto::codec::CodecSpec;
use splitnets_search::data::BatchSampler;
use splitnets_search::make_bundle::{BundleJob, tail_mean, write_bundle};
use splitnets_search::model::SplitCnnSpec;
use splitnets_search::train::{TrainBackend, TrainConfig, train};

#[derive(Parser, Debug)]
#[command(version, about = "Offline design of SplitNets split models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the multi-view split CNN on Fashion-MNIST and write a split bundle.
    Train(TrainArgs),
    /// Find the best split points of an ONNX model for a hardware profile.
    Plan(PlanArgs),
    /// Benchmark the planner: split evaluations per second and whole-plan time per model.
    BenchPlan(BenchArgs),
    /// Re-split a bundle's network at another tensor and write the new bundle.
    SplitBundle(SplitBundleArgs),
    /// Write a bundle's split with another link codec (link budget recomputed; no retraining).
    SetCodec(SetCodecArgs),
    /// Measure this machine with ONNX Runtime, fit per-op-class throughput, write a host profile,
    /// and report prediction error on held-out models.
    Calibrate(CalibrateArgs),
}

#[derive(clap::Args, Debug)]
struct SplitBundleArgs {
    /// The source bundle.
    #[arg(long, default_value = "deploy/bundles/fashion-mnist-4view")]
    from: PathBuf,
    /// The tensor to send across the link (see `plan` for the candidates).
    #[arg(long)]
    cut: String,
    /// Bits per element on the link: 2, 4, 6, 8, 16 or 32.
    #[arg(long, default_value_t = 8)]
    bits: u8,
    #[arg(long)]
    per_channel: bool,
    /// Calibrate one fixed quantization range on this many training-split frames (seen by every
    /// camera of the bundle) instead of sending each frame's own range; 0 = off.
    #[arg(long, default_value_t = 0)]
    calibrate_frames: usize,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    data_dir: PathBuf,
    /// Hardware profile for the predicted costs recorded in the manifest (`headset` or a TOML file).
    #[arg(long, default_value = "headset")]
    profile: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct SetCodecArgs {
    #[arg(long)]
    bundle: PathBuf,
    /// Bits per element on the link: 2, 4, 6, 8, 16 or 32.
    #[arg(long)]
    bits: u8,
    #[arg(long)]
    per_channel: bool,
    /// Output directory (may be the input bundle itself).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct CalibrateArgs {
    /// Where to write the host profile.
    #[arg(long, default_value = "out/host.toml")]
    out: PathBuf,
    /// Held-out ONNX models to check predictions on (never used in the fit).
    #[arg(long = "validate")]
    validate: Vec<PathBuf>,
    /// Timed runs per model (median).
    #[arg(long, default_value_t = 30)]
    repeats: usize,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// ONNX models to plan (each with fixed input shapes).
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// Repetitions of the whole plan per model (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    #[arg(long, default_value_t = 2)]
    max_crossing: usize,
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// The ONNX model to split.
    #[arg(long)]
    model: PathBuf,
    /// Hardware profile TOML, or `headset` for the shipped preset.
    #[arg(long, default_value = "headset")]
    profile: String,
    /// Target camera frame rate (a constraint: the slowest stage must keep up).
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Bits per element of the crossing feature (2, 4, 6, 8, 16, 32).
    #[arg(long, default_value_t = 8)]
    bits: u32,
    /// End-to-end latency target, milliseconds.
    #[arg(long)]
    latency_ms: Option<f64>,
    /// Most tensors a cut may send across the link.
    #[arg(long, default_value_t = 2)]
    max_crossing: usize,
    /// Bound on the down-closed node sets visited while enumerating cuts.
    #[arg(long, default_value_t = 2_000_000)]
    max_states: usize,
    /// Shape of an input whose dims are symbolic: NAME=1,3,224,224 (repeatable).
    #[arg(long = "input-shape")]
    input_shapes: Vec<String>,
    /// JPEG quality of the "compress the frame and send it" baseline.
    #[arg(long, default_value_t = 75)]
    jpeg_quality: u8,
    /// Where to write plan.txt, plan.csv, plan.json and pareto.svg.
    #[arg(long, default_value = "out/plan")]
    out: PathBuf,
    /// Table rows to print.
    #[arg(long, default_value_t = 15)]
    rows: usize,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// A few hundred steps: checks the training path end to end (CI).
    Quick,
    /// The run behind the committed demo bundle.
    Full,
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Where to write the bundle.
    #[arg(long, default_value = "out/bundle")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "full")]
    preset: Preset,
    /// Training steps (overrides the preset).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, default_value_t = 2e-3)]
    learning_rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Test samples for the accuracy report (overrides the preset).
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Bits per feature element on the link: 2, 4, 6, 8, 16 (float16) or 32 (float32).
    #[arg(long, default_value_t = 8)]
    bits: u8,
    /// Quantize per channel instead of per tensor.
    #[arg(long)]
    per_channel: bool,
    /// Camera frame rate the link budget is computed for.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Channels of the split feature.
    #[arg(long, default_value_t = 4)]
    split_channels: usize,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    data_dir: PathBuf,
    #[arg(long, value_enum, default_value = "flex")]
    backend: TrainBackend,
    /// Write the loss curve and evaluation as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn codec_from_bits(bits: u8, per_channel: bool) -> anyhow::Result<CodecSpec> {
    Ok(match bits {
        32 => CodecSpec::Float32,
        16 => CodecSpec::Float16,
        2 | 4 | 6 | 8 => CodecSpec::Affine { bits, per_channel },
        b => anyhow::bail!("--bits {b} is not supported: use 2, 4, 6, 8, 16 or 32"),
    })
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => run_train(a),
        Command::Plan(a) => run_plan(a),
        Command::BenchPlan(a) => run_bench(a),
        Command::Calibrate(a) => run_calibrate(a),
        Command::SplitBundle(a) => run_split_bundle(a),
        Command::SetCodec(a) => run_set_codec(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("splitnets-search: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    let codec = codec_from_bits(a.bits, a.per_channel)?;
    let (steps, batch, eval) = match a.preset {
        Preset::Quick => (300, 32, 1000),
        Preset::Full => (4000, 64, 10_000),
    };
    let cfg = TrainConfig {
        spec: SplitCnnSpec {
            split_channels: a.split_channels,
            ..SplitCnnSpec::default()
        },
        steps: a.steps.unwrap_or(steps),
        batch_size: a.batch_size.unwrap_or(batch),
        learning_rate: a.learning_rate,
        seed: a.seed,
        backend: a.backend,
        ..TrainConfig::default()
    };
    let train_set =
        dataset::load(&a.data_dir, Split::Train).context("loading the training split")?;
    let test_set = dataset::load(&a.data_dir, Split::Test).context("loading the test split")?;
    // Fail before training, not after, when ONNX Runtime is missing.
    splitnets_runtime::onnx_runtime::environment()?;
    let rig = CameraRig::default();
    let input = InputSpec {
        height: train_set.rows,
        width: train_set.cols,
        pixel_format: "gray8".into(),
        mean: 0.0,
        std: 1.0,
    };
    tracing::info!(steps = cfg.steps, batch = cfg.batch_size, views = rig.views, ?cfg.spec, "training");
    let bar = ProgressBar::new(cfg.steps).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut sampler = BatchSampler::new(&train_set, &rig, &input, cfg.seed);
    let mut recent = Vec::new();
    let trained = train(
        &cfg,
        &mut sampler,
        rig.views as usize,
        input.height,
        input.width,
        |r| {
            recent.push(r.loss);
            bar.set_position(r.step);
            if r.step % 10 == 0 || r.step == cfg.steps {
                bar.set_message(format!(
                    "loss {:.4}  epoch {:.2}  {:.0} ms/step",
                    tail_mean(&recent, 50),
                    r.epochs,
                    1000.0 * r.seconds / r.step as f64
                ));
            }
            if r.step % 500 == 0 && !bar.is_hidden() {
                // Progress bars vanish from logs; leave a trace every 500 steps.
            } else if r.step % 500 == 0 {
                tracing::info!(step = r.step, loss = tail_mean(&recent, 50), "training");
            }
        },
    );
    bar.finish();
    tracing::info!(
        seconds = trained.seconds,
        ms_per_step = 1000.0 * trained.seconds / cfg.steps as f64,
        "trained"
    );
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome = write_bundle(&BundleJob {
        out_dir: a.out.clone(),
        name: "fashion-mnist-4view".into(),
        rig,
        input,
        codec,
        target_fps: a.fps,
        trained: &trained,
        train_config: &cfg,
        test_set: &test_set,
        eval_samples: a.eval_samples.unwrap_or(eval),
        check_samples: 256,
        command,
    })?;
    let e = &outcome.evaluation;
    let first = tail_mean(&trained.losses[..trained.losses.len().min(50)], 50);
    let last = tail_mean(&trained.losses, 50);
    println!(
        "bundle       {}  (digest {})",
        outcome.dir.display(),
        &outcome.digest[..16]
    );
    println!(
        "training     {} steps x {} in {:.0} s ({:.0} ms/step); loss {first:.3} -> {last:.3}",
        cfg.steps,
        cfg.batch_size,
        trained.seconds,
        1000.0 * trained.seconds / cfg.steps as f64
    );
    println!(
        "accuracy     {} test samples: one view {:.2} % (per view {}), {} views fused {:.2} %, fused through {} codec {:.2} %",
        e.samples,
        100.0 * e.accuracy_one_view_mean,
        e.accuracy_per_view
            .iter()
            .map(|a| format!("{:.1}", 100.0 * a))
            .collect::<Vec<_>>()
            .join("/"),
        e.accuracy_per_view.len(),
        100.0 * e.accuracy_fused,
        codec,
        100.0 * e.accuracy_fused_through_codec
    );
    println!(
        "onnx check   max |ONNX Runtime - burn| = {:.2e} over {} samples' logits",
        e.onnx_max_abs_diff, e.onnx_checked_samples
    );
    let b = &outcome.link_budget;
    println!(
        "link budget  {} B/view/frame (payload {} B) vs raw frame {} B ({:.1} %); {:.1} kbit/s per view at {} fps",
        b.bytes_per_view_per_frame,
        b.payload_bytes_per_view,
        b.raw_frame_bytes_per_view,
        100.0 * b.ratio_to_raw,
        b.bits_per_second_per_view / 1000.0,
        b.target_fps
    );
    if let Some(path) = a.report {
        let report = serde_json::json!({
            "losses": trained.losses,
            "seconds": trained.seconds,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "outcome": outcome,
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_plan(a: PlanArgs) -> anyhow::Result<()> {
    use splitnets_cost_model::graph::analyze;
    use splitnets_search::{cuts, plan};
    use std::collections::HashMap;
    use std::time::Instant;

    let profile = load_profile(&a.profile)?;
    anyhow::ensure!(
        matches!(a.bits, 2 | 4 | 6 | 8 | 16 | 32),
        "--bits {} is not 2, 4, 6, 8, 16 or 32",
        a.bits
    );
    let mut shapes = HashMap::new();
    for s in &a.input_shapes {
        let (name, dims) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--input-shape {s:?} is not NAME=d,d,..."))?;
        let dims = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow::anyhow!("--input-shape {s:?}: dims must be integers"))?;
        shapes.insert(name.to_string(), dims);
    }
    let started = Instant::now();
    let model = splitnets_onnx::read_model(&a.model)?;
    let spec = splitnets_onnx::cost_graph(&model)?;
    let g = analyze(&spec, &shapes).with_context(|| format!("analysing {}", a.model.display()))?;
    eprintln!(
        "[plan] {}: {} compute nodes ({} constant nodes folded), {:.2} GMAC",
        a.model.display(),
        g.nodes.len(),
        g.constant_nodes.len(),
        g.total_macs() as f64 / 1e9
    );
    let all_cuts = cuts::enumerate(&g, a.max_crossing, a.max_states)?;
    eprintln!(
        "[plan] {} cuts with at most {} crossing tensors ({:.0} ms)",
        all_cuts.len(),
        a.max_crossing,
        started.elapsed().as_secs_f64() * 1e3
    );
    let sums = plan::summaries(&g, &all_cuts);
    // The JPEG baseline's frame size is measured on real images (Fashion-MNIST, upscaled to the
    // model's input, grey replicated to its channels): a stand-in for camera frames.
    let input = &g.tensors[g.inputs[0]].shape;
    let jpeg = if input.len() == 4 && (input[1] == 1 || input[1] == 3) {
        let set = dataset::load(&a.data_dir, Split::Test)?;
        let (c, h, w) = (input[1], input[2], input[3]);
        let frames: Vec<Vec<u8>> = (0..32)
            .map(|i| {
                let img = set.image(i);
                let mut f = Vec::with_capacity(h * w * c);
                for y in 0..h {
                    for x in 0..w {
                        let p = img[(y * set.rows / h) * set.cols + x * set.cols / w];
                        f.extend(std::iter::repeat_n(p, c));
                    }
                }
                f
            })
            .collect();
        Some(plan::jpeg_mean_bytes(
            &frames,
            w as u16,
            h as u16,
            c,
            a.jpeg_quality,
        )?)
    } else {
        None
    };
    let p = plan::plan(
        &a.model.display().to_string(),
        &g,
        &all_cuts,
        &sums,
        &profile,
        &plan::PlanOptions {
            bits: a.bits,
            fps: a.fps,
            latency_seconds: a.latency_ms.map(|l| l / 1e3),
            jpeg_frame_bytes: jpeg,
        },
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let table = plan::table(&p, a.rows);
    std::fs::write(a.out.join("plan.txt"), &table)?;
    std::fs::write(a.out.join("plan.csv"), plan::csv(&p))?;
    std::fs::write(a.out.join("plan.json"), serde_json::to_vec_pretty(&p)?)?;
    std::fs::write(a.out.join("pareto.svg"), plan::svg(&p))?;
    let feasible = p.rows.iter().filter(|r| r.feasible).count();
    let pareto = p.rows.iter().filter(|r| r.pareto).count();
    println!("{table}");
    println!(
        "{} cuts, {} feasible at {} fps{}, {} on the Pareto front; planned in {:.0} ms; JPEG q{} frame {} B; written to {}",
        p.rows.len(),
        feasible,
        a.fps,
        a.latency_ms
            .map(|l| format!(" and {l} ms"))
            .unwrap_or_default(),
        pareto,
        started.elapsed().as_secs_f64() * 1e3,
        a.jpeg_quality,
        jpeg.map_or("n/a".to_string(), |b| b.to_string()),
        a.out.display()
    );
    Ok(())
}

fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
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

fn run_calibrate(a: CalibrateArgs) -> anyhow::Result<()> {
    use splitnets_cost_model::graph::analyze;
    use splitnets_cost_model::profile::{ComputeProfile, HardwareProfile, presets};
    use splitnets_search::calibrate::{calibrate, time_model};

    splitnets_runtime::onnx_runtime::environment()?;
    let (thr, overhead, report) = calibrate(a.repeats, |i, n| {
        eprint!("\r[calibrate] micro-model {}/{}", i + 1, n)
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
        link: headset.link.clone(),
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
        let whole = splitnets_search::onnx_cut::runnable_original(&model, &g);
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

fn load_profile(spec: &str) -> anyhow::Result<splitnets_cost_model::profile::HardwareProfile> {
    let text = if spec == "headset" {
        splitnets_cost_model::profile::presets::HEADSET.to_string()
    } else {
        std::fs::read_to_string(spec).with_context(|| format!("reading profile {spec}"))?
    };
    let p: splitnets_cost_model::profile::HardwareProfile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "profile {spec}: {}",
            e.to_string().trim().replace('\n', " ")
        )
    })?;
    p.validate()?;
    Ok(p)
}

fn run_split_bundle(a: SplitBundleArgs) -> anyhow::Result<()> {
    let codec = codec_from_bits(a.bits, a.per_channel)?;
    let profile = load_profile(&a.profile)?;
    let src = splitnets_proto::bundle::Bundle::load(&a.from)?;
    let choice = if a.calibrate_frames > 0 {
        anyhow::ensure!(
            a.bits <= 8 && !a.per_channel,
            "--calibrate-frames needs --bits 2, 4, 6 or 8, per tensor"
        );
        // Training-split frames: the range is never fitted on the frames the demo replays.
        let set = dataset::load(&a.data_dir, Split::Train)?;
        let rig = &src.manifest.cameras;
        let frames = (0..a.calibrate_frames as u64)
            .flat_map(|i| (0..rig.views).map(move |v| (v, i)))
            .map(|(v, i)| splitnets_camera::rig::replay_frame(rig, &set, v, i))
            .collect();
        splitnets_search::rebundle::CodecChoice::Calibrated {
            bits: a.bits,
            frames,
        }
    } else {
        splitnets_search::rebundle::CodecChoice::Fixed(codec)
    };
    let r = splitnets_search::rebundle::rebundle(&src, &a.cut, choice, &profile, &a.out)?;
    let codec = splitnets_proto::bundle::Bundle::load(&a.out)?
        .manifest
        .codec;
    println!(
        "bundle {} (digest {}): feature {:?} as {codec}, {} B per view per frame; predicted on {}: sensor {:.3} ms, link {:.3} ms, aggregator {:.3} ms, end to end {:.3} ms, sensor memory {} B",
        a.out.display(),
        &r.digest[..16],
        r.feature_shape,
        r.bytes_per_view_per_frame,
        r.predicted.profile,
        r.predicted.sensor_seconds * 1e3,
        r.predicted.link_seconds * 1e3,
        r.predicted.aggregator_seconds * 1e3,
        r.predicted.end_to_end_seconds * 1e3,
        r.predicted.sensor_peak_memory_bytes
    );
    Ok(())
}

fn run_set_codec(a: SetCodecArgs) -> anyhow::Result<()> {
    let codec = codec_from_bits(a.bits, a.per_channel)?;
    let b = splitnets_proto::bundle::Bundle::load(&a.bundle)?;
    let manifest = b.manifest.with_codec(codec);
    let budget = manifest.link_budget;
    let digest =
        splitnets_proto::bundle::Bundle::write(&a.out, manifest, &b.head_onnx, &b.tail_onnx)?;
    println!(
        "bundle {} (digest {}): {codec}, {} B per view per frame ({} B payload)",
        a.out.display(),
        &digest[..16],
        budget.bytes_per_view_per_frame,
        budget.payload_bytes_per_view
    );
    Ok(())
}
