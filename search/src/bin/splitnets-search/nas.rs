//! `splitnets-search nas`: the split-aware architecture search (`splitnets-nas`) as a tool:
//! progress with ETA, checkpoints (a killed run resumes), a report (markdown, CSV, SVG, JSON),
//! and every subnet of the final Pareto front written as a split bundle the daemons run
//! unchanged, verified with the runtime's own stages (ONNX Runtime against the reference
//! forward, accuracy through the link codec).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::{CameraRig, replay_frame};
use splitnets_nas::data::DataKind;
use splitnets_nas::{FrontMember, NasConfig, NasOutcome, Preset, Progress, onnx_export, reference};
use splitnets_proto::bundle::{
    Bundle, FORMAT_VERSION, Files, InputSpec, Manifest, PredictedCost, SplitSpec, TrainingSummary,
    link_budget_for,
};
use splitnets_proto::codec::CodecSpec;
use splitnets_runtime::{LocalPipeline, SessionOptions, argmax};

use crate::plan::load_profile;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum NasData {
    /// Fashion-MNIST, one clean view.
    FashionMnist,
    /// Fashion-MNIST through the four occluded, noisy cameras of the default rig.
    #[value(name = "fashion-mnist-4view")]
    FashionMnist4view,
    /// The project's rendered multi-view 3-D shapes.
    Shapes,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum NasPreset {
    /// A few minutes on 2 cores.
    Quick,
    /// The full budget.
    Full,
}

impl NasData {
    fn kind(self) -> DataKind {
        match self {
            NasData::FashionMnist => DataKind::FashionMnist,
            NasData::FashionMnist4view => DataKind::FashionMnist4View,
            NasData::Shapes => DataKind::Shapes,
        }
    }
}

impl NasPreset {
    fn preset(self) -> Preset {
        match self {
            NasPreset::Quick => Preset::Quick,
            NasPreset::Full => Preset::Full,
        }
    }
}

/// What `nas` and `nas-baselines` share: the data, the profile, the budget and where it goes.
#[derive(clap::Args, Debug)]
pub(crate) struct NasRunArgs {
    #[arg(long, value_enum, default_value = "fashion-mnist-4view")]
    pub(crate) data: NasData,
    /// Hardware profile: `headset` (the shipped preset) or a TOML file.
    #[arg(long, default_value = "headset")]
    pub(crate) profile: String,
    /// The budget (`nas-baselines`: the same steps, batch and schedule as `nas` with it).
    #[arg(long, value_enum, default_value = "quick")]
    pub(crate) preset: NasPreset,
    /// Output directory: report, checkpoints, bundles (`front-NN/`). `nas-baselines` in the
    /// directory of a finished `nas` run (`outcome.json`) also writes the comparison.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Override the preset's training steps (pass the same to `nas` and `nas-baselines` for a
    /// like comparison).
    #[arg(long)]
    pub(crate) steps: Option<u64>,
    /// Where Debian's dataset-fashion-mnist put the files.
    #[arg(long, default_value = dataset::DEFAULT_DIR)]
    pub(crate) data_dir: PathBuf,
}

/// `splitnets-search nas`.
#[derive(clap::Args, Debug)]
pub(crate) struct NasArgs {
    #[command(flatten)]
    pub(crate) run: NasRunArgs,
    /// Test frames each written bundle is evaluated on through the runtime (link codec included).
    #[arg(long, default_value_t = 1000)]
    pub(crate) check_samples: usize,
    /// Ablations (comma-separated): switch a part of the method off or narrow the space.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) ablate: Vec<Ablation>,
    /// Train each front member alone for this many steps, from the supernet's weights, before
    /// it is tested and exported (default: the preset's, 0 for quick and a tenth of the
    /// supernet's steps for full). On a finished run's directory the supernet and the search
    /// are read back, so only this part runs again.
    #[arg(long)]
    pub(crate) finetune_steps: Option<u64>,
    /// With fine-tuning: also fine-tune this many more of each latency target's best
    /// candidates (by shared-weight validation accuracy) and draw the front again on validation
    /// accuracy after fine-tuning (default 2; 0: fine-tune the front as the search found it).
    #[arg(long)]
    pub(crate) finetune_extra_per_target: Option<usize>,
    /// Fine-tuning's learning rate as a fraction of the supernet's, in (0, 1] (default 1: the full rate, with its warm-up and cosine).
    #[arg(long)]
    pub(crate) finetune_lr_fraction: Option<f64>,
    /// Random draws per split position for each target's budget-filling seed (default 400; 0:
    /// no such seeds, the search of runs made before 2026-11-30, which a rerun then retraces).
    #[arg(long)]
    pub(crate) fill_draws: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Ablation {
    /// Reduce and recover initialised like every other convolution (Kaiming-normal).
    NoSplitInit,
    /// Largest, smallest and random subnets all split after the last stage at 8 bits.
    NoSplitSampling,
    /// Every view present in every training step.
    NoViewDropout,
    /// The split feature at 8 bits only.
    Bits8,
    /// At 4 bits only.
    Bits4,
    /// At 2 bits only.
    Bits2,
    /// Max fusion only.
    FusionMax,
    /// Mean fusion only.
    FusionMean,
    /// Learned (attention) fusion only.
    FusionLearned,
}

fn apply_ablations(cfg: &mut NasConfig, ablations: &[Ablation]) {
    use splitnets_nas::space::Fusion;
    for a in ablations {
        match a {
            Ablation::NoSplitInit => cfg.train.init = splitnets_nas::supernet::InitScheme::Default,
            Ablation::NoSplitSampling => cfg.train.split_aware_sampling = false,
            Ablation::NoViewDropout => cfg.train.view_keep_prob = 1.0,
            Ablation::Bits8 => cfg.restrict.bits = Some(vec![8]),
            Ablation::Bits4 => cfg.restrict.bits = Some(vec![4]),
            Ablation::Bits2 => cfg.restrict.bits = Some(vec![2]),
            Ablation::FusionMax => cfg.restrict.fusions = Some(vec![Fusion::Max]),
            Ablation::FusionMean => cfg.restrict.fusions = Some(vec![Fusion::Mean]),
            Ablation::FusionLearned => cfg.restrict.fusions = Some(vec![Fusion::Learned]),
        }
    }
}

impl NasRunArgs {
    /// The preset's configuration for `nas` and `nas-baselines` alike (so the baselines get the
    /// search's budget), with the command line's overrides, and the output directory made.
    fn config(&self) -> anyhow::Result<NasConfig> {
        let mut cfg = NasConfig::preset(
            self.preset.preset(),
            self.data.kind(),
            load_profile(&self.profile)?,
            Some(self.out.clone()),
        );
        cfg.data.fashion_mnist_dir.clone_from(&self.data_dir);
        if let Some(s) = self.steps {
            cfg.train.steps = s;
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        Ok(cfg)
    }
}

pub(crate) fn run_nas(a: NasArgs) -> anyhow::Result<()> {
    let (kind, preset) = (a.run.data.kind(), a.run.preset.preset());
    // The front's bundles are checked with ONNX Runtime at the end: find the library now, not
    // after hours of training (a full run once lost its bundles this way).
    splitnets_runtime::onnx_runtime::environment()?;
    let mut cfg = a.run.config()?;
    apply_ablations(&mut cfg, &a.ablate);
    if let Some(n) = a.finetune_steps {
        cfg.finetune_steps = n;
    }
    if let Some(n) = a.finetune_extra_per_target {
        cfg.finetune_extra_per_target = n;
    }
    if let Some(f) = a.finetune_lr_fraction {
        cfg.finetune_lr_fraction = f;
    }
    if let Some(n) = a.fill_draws {
        cfg.evo.fill_draws = n;
    }
    eprintln!(
        "[nas] {} preset {:?}{}: {} supernet steps, then evolutionary search{}; output in {}",
        kind.name(),
        preset,
        if a.ablate.is_empty() {
            String::new()
        } else {
            format!(", ablations {:?}", a.ablate)
        },
        cfg.train.steps,
        if cfg.finetune_steps > 0 {
            format!(
                ", then {} steps of fine-tuning per front member and per {} more of each target's best",
                cfg.finetune_steps, cfg.finetune_extra_per_target
            )
        } else {
            String::new()
        },
        a.run.out.display()
    );
    let bar = ProgressBar::new(cfg.train.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "[nas] supernet {bar:30} {pos}/{len} steps  {msg}  elapsed {elapsed}  ETA {eta}",
        )
        .expect("valid template"),
    );
    // In a log (stderr not a terminal) the bar is hidden: print a line per 2 % of the steps
    // with the loss and ETA instead, and every other event as it happens.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let say = |line: String| {
        if plain {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut last_loss = f64::NAN;
    let mut first_step = None; // steps run in this process (a resumed run starts later)
    let outcome = splitnets_nas::run_nas(&cfg, &mut |p| match p {
        Progress::Step(r) => {
            last_loss = r.loss_largest;
            bar.set_position(r.step);
            bar.set_message(format!("loss {:.3}", r.loss_largest));
            let first = *first_step.get_or_insert(r.step);
            if plain && (r.step % (r.steps / 50).max(1) == 0 || r.step == r.steps) {
                let elapsed = started.elapsed().as_secs_f64();
                let done = (r.step + 1).saturating_sub(first).max(1);
                let eta = elapsed / done as f64 * (r.steps - r.step) as f64;
                eprintln!(
                    "[nas] supernet step {}/{}  loss {:.3}  elapsed {:.0} s  ETA {:.0} s",
                    r.step, r.steps, r.loss_largest, elapsed, eta
                );
            }
            if r.step == r.steps {
                bar.finish();
            }
        }
        Progress::FineTuneStep {
            member,
            of,
            report: r,
        } => {
            // A line per 10 % of each member's steps (a bar per member would flood a terminal).
            if r.step % (r.steps / 10).max(1) == 0 || r.step == r.steps {
                say(format!(
                    "[nas] fine-tuning candidate {}/{of}: step {}/{}  loss {:.3}  {:.0} s",
                    member + 1,
                    r.step,
                    r.steps,
                    r.loss_largest,
                    r.seconds
                ));
            }
        }
        Progress::Resumed { step } => {
            bar.set_position(step);
            say(format!("[nas] resumed from the checkpoint at step {step}"));
        }
        other => say(format!("[nas] {other:?}")),
    })?;
    std::fs::write(
        a.run.out.join("report.md"),
        splitnets_nas::report::markdown(&outcome),
    )?;
    std::fs::write(
        a.run.out.join("report.csv"),
        splitnets_nas::report::csv(&outcome),
    )?;
    std::fs::write(
        a.run.out.join("report.svg"),
        splitnets_nas::report::svg(&outcome),
    )?;
    std::fs::write(
        a.run.out.join("outcome.json"),
        serde_json::to_string_pretty(&outcome)?,
    )?;
    let mut written = Vec::new();
    for (i, m) in outcome.front.iter().enumerate() {
        let dir = a.run.out.join(format!("front-{i:02}"));
        let opts = BundleOptions {
            profile: &a.run.profile,
            check_samples: a.check_samples,
            data_dir: &a.run.data_dir,
        };
        let check = write_front_bundle(&opts, &cfg, &outcome, m, &dir, last_loss)?;
        println!(
            "front-{i:02}  {:<48} e2e {:.3} ms  link {} B/view  test {:.1} % (through the codec, runtime: {:.1} % on {} frames; |ORT - reference| {:.1e})",
            m.arch.short(),
            m.cost.end_to_end_seconds * 1e3,
            m.cost.link_bytes_per_view,
            100.0 * m.test_accuracy,
            100.0 * check.accuracy_through_codec,
            check.samples,
            check.max_abs_diff,
        );
        written.push(serde_json::json!({
            "dir": dir, "arch": m.arch.short(), "predicted": m.cost,
            "test_accuracy": m.test_accuracy, "runtime_check": check,
        }));
    }
    std::fs::write(
        a.run.out.join("bundles.json"),
        serde_json::to_string_pretty(&written)?,
    )?;
    if outcome.front.len() > 1 {
        // The front as a bundle set, most accurate (dearest) first: the daemons preload it and
        // the aggregator switches between its members as the links allow.
        let names: Vec<String> = (0..outcome.front.len())
            .rev()
            .map(|i| format!("front-{i:02}"))
            .collect();
        splitnets_proto::bundle_set::BundleSet::write_set_file(&a.run.out, &names)?;
        println!(
            "bundle set (live split switching): --bundle {}  ({} variants)",
            a.run.out.display(),
            names.len()
        );
    }
    println!(
        "report: {}  ({:.0} s, {:.2} of {} cores busy)",
        a.run.out.join("report.md").display(),
        outcome.total_seconds,
        outcome.cores_used,
        outcome.cores_available
    );
    Ok(())
}

/// What the runtime measured on a written bundle.
#[derive(Debug, Clone, serde::Serialize)]
struct RuntimeCheck {
    samples: usize,
    accuracy_through_codec: f64,
    /// Largest |ONNX Runtime (through the codec) − plain-Rust reference forward| over the
    /// logits of the first 32 frames (the reference is tied to burn by splitnets-nas's tests).
    max_abs_diff: f64,
}

/// The camera rig the search trained and tested with, as the sensors' replay reproduces it.
fn rig_for(kind: DataKind, views: usize) -> CameraRig {
    match kind {
        DataKind::FashionMnist4View => CameraRig::default(),
        // One clean view: no occluder, no noise (the capture is then the image itself).
        DataKind::FashionMnist | DataKind::Shapes => CameraRig {
            views: views as u32,
            occluder_px: 0,
            occluder_jitter_px: 0,
            noise_std: 0.0,
            seed: 0,
        },
    }
}

/// What writing and checking a bundle needs beyond the run: the profile's name for the
/// manifest, and the test frames the runtime check replays.
struct BundleOptions<'a> {
    profile: &'a str,
    check_samples: usize,
    data_dir: &'a Path,
}

fn write_front_bundle(
    a: &BundleOptions<'_>,
    cfg: &NasConfig,
    o: &NasOutcome,
    m: &FrontMember,
    dir: &Path,
    final_loss: f64,
) -> anyhow::Result<RuntimeCheck> {
    let side = o.space.input_size;
    // The feature's side (after the classifier the feature is logits; the side is unused).
    let fside = o.space.sides()[m.arch.split.min(o.space.stages.len())];
    let head = prost::Message::encode_to_vec(&onnx_export::head_model(&m.weights, side, fside));
    let tail = prost::Message::encode_to_vec(&onnx_export::tail_model(&m.weights, fside));
    let codec = CodecSpec::Affine {
        bits: m.arch.bits as u8,
        per_channel: false,
    };
    let feature_shape: Vec<usize> = std::iter::once(1)
        .chain(m.arch.feature_shape(&o.space))
        .collect();
    let rig = rig_for(o.data, o.space.views);
    let input = InputSpec {
        height: side,
        width: side,
        pixel_format: "gray8".into(),
        mean: o.input_mean.into(),
        std: o.input_std.into(),
        ..Default::default()
    };
    let classes: Vec<String> = match o.data {
        DataKind::Shapes => splitnets_camera::shapes::CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        _ => dataset::CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: format!("nas-{}-{}", o.data.name(), m.arch.short()),
        description: format!(
            "Split-aware NAS on {} under profile {}: {}",
            o.data.name(),
            a.profile,
            m.arch.short()
        ),
        classes,
        input: input.clone(),
        cameras: rig.clone(),
        scene: (o.data == DataKind::Shapes)
            .then(|| splitnets_camera::shapes::scene_of(&cfg.data.shapes)),
        split: SplitSpec {
            head_input: onnx_export::HEAD_INPUT.into(),
            head_output: onnx_export::HEAD_OUTPUT.into(),
            feature_shape: feature_shape.clone(),
            tail_input: onnx_export::TAIL_INPUT.into(),
            tail_output: onnx_export::TAIL_OUTPUT.into(),
            channel_ranges: Vec::new(),
            extra_features: Vec::new(),
            fusion: format!("{:?}", m.arch.fusion).to_lowercase(),
        },
        codec,
        files: Files::to_be_written(),
        link_budget: link_budget_for(
            &splitnets_proto::wire::FrameLayout::single(&feature_shape, codec),
            rig.views,
            30.0,
            input.raw_frame_bytes(),
        ),
        predicted: Some(PredictedCost {
            profile: a.profile.to_string(),
            sensor_seconds: m.cost.sensor_seconds,
            link_seconds: m.cost.link_seconds,
            aggregator_seconds: m.cost.aggregator_seconds,
            end_to_end_seconds: m.cost.end_to_end_seconds,
            sensor_peak_memory_bytes: m.cost.sensor_memory_bytes,
        }),
        training: Some(TrainingSummary {
            dataset: o.data.name().into(),
            // The supernet's steps, and this member's own fine-tuning after them.
            steps: o.steps_run + m.finetune_steps,
            batch_size: o.train.batch,
            seconds: o.train_seconds,
            // The largest subnet's loss at the last step (NaN when resumed past the end).
            final_loss,
            test_accuracy_one_view: m.test_accuracy_one_view,
            test_accuracy_fused: m.test_accuracy,
            test_samples: o.test_items,
            onnx_max_abs_diff: f64::NAN,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }),
    };
    Bundle::write(dir, manifest, &head, &tail)
        .with_context(|| format!("writing bundle {}", dir.display()))?;
    let check = check_bundle(a, cfg, o, m, dir)?;
    // Record the runtime's figures in the bundle (rewritten: the digest covers them).
    let bundle = Bundle::load(dir)?;
    let mut manifest = bundle.manifest.clone();
    if let Some(t) = manifest.training.as_mut() {
        t.onnx_max_abs_diff = check.max_abs_diff;
    }
    Bundle::write(dir, manifest, &bundle.head_onnx, &bundle.tail_onnx)?;
    Ok(check)
}

/// Runs the written bundle with the runtime's stages on test frames the sensors would replay.
fn check_bundle(
    a: &BundleOptions<'_>,
    cfg: &NasConfig,
    o: &NasOutcome,
    m: &FrontMember,
    dir: &Path,
) -> anyhow::Result<RuntimeCheck> {
    let bundle = Bundle::load(dir)?;
    let rig = bundle.manifest.cameras.clone();
    let input = bundle.manifest.input.clone();
    let mut local = LocalPipeline::new(bundle, SessionOptions::default())?;
    let (frames, labels): (Vec<Vec<Vec<u8>>>, Vec<u8>) = match o.data {
        DataKind::Shapes => {
            // The sensors cannot replay the shapes yet: check on the search's own test frames.
            let set = splitnets_camera::shapes::load_or_generate(
                &cfg.data.shapes,
                splitnets_camera::shapes::ShapeSplit::Test,
                &cfg.data.cache_dir,
            )?;
            let n = set.len().min(a.check_samples);
            let px = set.size * set.size;
            let per_item = set.views * px;
            (
                (0..n)
                    .map(|i| {
                        (0..set.views)
                            .map(|v| {
                                set.images[i * per_item + v * px..i * per_item + (v + 1) * px]
                                    .to_vec()
                            })
                            .collect()
                    })
                    .collect(),
                set.labels[..n].to_vec(),
            )
        }
        _ => {
            let set = dataset::load(a.data_dir, Split::Test)?;
            let n = set.len().min(a.check_samples);
            (
                (0..n)
                    .map(|i| {
                        (0..rig.views)
                            .map(|v| replay_frame(&rig, &set, v, i as u64))
                            .collect()
                    })
                    .collect(),
                set.labels[..n].to_vec(),
            )
        }
    };
    let (mut ok, mut max_diff) = (0usize, 0.0f64);
    let mut pre = Vec::new();
    for (i, (views, &label)) in frames.iter().zip(&labels).enumerate() {
        let (logits, _) = local.run_frame(views, true)?;
        ok += usize::from(argmax(&logits) == label as usize);
        if i < 32 {
            // The reference quantizes the feature exactly as the codec does.
            let feats: Vec<_> = views
                .iter()
                .map(|px| {
                    input.preprocess(px, &mut pre);
                    reference::head(&m.weights, &pre, input.height)
                })
                .collect();
            let expected = reference::tail(&m.weights, &feats);
            for (x, y) in logits.iter().zip(&expected) {
                max_diff = max_diff.max(f64::from((x - y).abs()));
            }
        }
    }
    Ok(RuntimeCheck {
        samples: labels.len(),
        accuracy_through_codec: ok as f64 / labels.len().max(1) as f64,
        max_abs_diff: max_diff,
    })
}

#[derive(clap::Args, Debug)]
pub(crate) struct NasCompareArgs {
    /// Runs to compare, `NAME=DIR` (a `nas --out` directory), comma-separated; the first is the
    /// reference whose latency targets become the common budgets.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) runs: Vec<String>,
    /// Markdown table written here (and printed).
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// Compares finished runs (ablations): per run, the best test accuracy its front reaches within
/// each latency budget of the reference run, all views and with the worst camera missing.
pub(crate) fn run_nas_compare(a: NasCompareArgs) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut runs = Vec::new();
    for spec in &a.runs {
        let (name, dir) = spec
            .split_once('=')
            .with_context(|| format!("--runs {spec:?}: expected NAME=DIR"))?;
        let path = Path::new(dir).join("outcome.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is the run finished?)", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a NAS outcome", path.display()))?;
        runs.push((name.to_string(), v));
    }
    let budgets: Vec<f64> = runs[0].1["targets"]
        .as_array()
        .context("reference run has no targets")?
        .iter()
        .filter_map(|t| t["latency_seconds"].as_f64())
        .collect();
    let best_within = |v: &serde_json::Value, key: &str, budget: f64| -> Option<f64> {
        v["front"]
            .as_array()?
            .iter()
            .filter(|m| m["cost"]["end_to_end_seconds"].as_f64().unwrap_or(f64::MAX) <= budget)
            .filter_map(|m| m[key].as_f64())
            .reduce(f64::max)
    };
    let cell = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{:.1}", 100.0 * x));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Best test accuracy (%) of each run's Pareto front within each end-to-end latency budget (the reference run's targets), all views / worst camera missing; — : nothing on the front that fast.\n"
    );
    let head: Vec<String> = budgets
        .iter()
        .map(|b| format!("≤ {:.3} ms", b * 1e3))
        .collect();
    let _ = writeln!(
        md,
        "| run | {} | best overall | supernet steps | training (s) |\n|---|{}---|---|---|",
        head.join(" | "),
        "---|".repeat(budgets.len())
    );
    for (name, v) in &runs {
        let cells: Vec<String> = budgets
            .iter()
            .map(|&b| {
                format!(
                    "{} / {}",
                    cell(best_within(v, "test_accuracy", b)),
                    cell(best_within(v, "test_accuracy_one_missing", b))
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| {name} | {} | {} / {} | {} | {:.0} |",
            cells.join(" | "),
            cell(best_within(v, "test_accuracy", f64::MAX)),
            cell(best_within(v, "test_accuracy_one_missing", f64::MAX)),
            v["steps_run"].as_u64().unwrap_or(0),
            v["train_seconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
    std::fs::write(&a.out, &md).with_context(|| format!("writing {}", a.out.display()))?;
    print!("{md}");
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct NasBaselinesArgs {
    #[command(flatten)]
    pub(crate) run: NasRunArgs,
    /// JPEG quality of the all-on-aggregator JPEG baseline.
    #[arg(long, default_value_t = 75, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub(crate) jpeg_quality: u8,
    /// Skip the JPEG baseline (one network less to train).
    #[arg(long)]
    pub(crate) no_jpeg: bool,
    /// Only the largest network per placement. By default, with a finished `nas` run in
    /// `--out`, each placement is also trained at the largest size that meets each of the
    /// search's latency targets.
    #[arg(long)]
    pub(crate) largest_only: bool,
    /// Train nothing: measure the networks whose training has finished (final checkpoint in
    /// `--out`) and list the others as not trained, for an interim comparison while a long
    /// run goes on.
    #[arg(long)]
    pub(crate) trained_only: bool,
}

pub(crate) fn run_nas_baselines(a: NasBaselinesArgs) -> anyhow::Result<()> {
    use splitnets_nas::baseline::{BaselineProgress, run_baselines};
    let (kind, preset) = (a.run.data.kind(), a.run.preset.preset());
    let cfg = a.run.config()?;
    // Read the search's outcome first: a malformed one should stop the run now, not after
    // the training.
    let outcome_path = a.run.out.join("outcome.json");
    let outcome: Option<NasOutcome> = match std::fs::read_to_string(&outcome_path) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a NAS outcome", outcome_path.display()))?,
        ),
        Err(_) => None,
    };
    eprintln!(
        "[baselines] {} preset {:?}: up to 3 networks (and one per placement per latency target of the search) × {} steps (batch {}); output in {}{}",
        kind.name(),
        preset,
        cfg.train.steps,
        cfg.train.batch,
        a.run.out.display(),
        if outcome.is_some() {
            " (with the search's front for comparison)"
        } else {
            " (no outcome.json there: baselines only)"
        }
    );
    let started = std::time::Instant::now();
    let mut network_started = std::time::Instant::now();
    let jpeg = (!a.no_jpeg).then_some(a.jpeg_quality);
    let budgets: Vec<f64> = match (&outcome, a.largest_only) {
        (Some(o), false) if o.data == kind => o.targets.iter().map(|t| t.latency_seconds).collect(),
        _ => Vec::new(),
    };
    // The network in training, the step its process started at (a resumed one does not start
    // at 1) and when: the ETA is paced by the steps this process ran.
    let mut current: (String, u64) = (String::new(), 0);
    let result = run_baselines(&cfg, jpeg, &budgets, a.trained_only, &mut |p| match p {
        BaselineProgress::Step {
            network,
            step,
            steps,
            loss,
            ..
        } => {
            if current.0 != network {
                current = (network.clone(), step.saturating_sub(1));
                network_started = std::time::Instant::now();
            }
            if step % (steps / 20).max(1) == 0 || step == steps {
                let el = network_started.elapsed().as_secs_f64();
                let eta = el / (step - current.1).max(1) as f64 * (steps - step) as f64;
                eprintln!(
                    "[baselines] {network}: step {step}/{steps}  loss {loss:.3}  elapsed {el:.0} s  ETA {eta:.0} s"
                );
            }
        }
        other => eprintln!("[baselines] {other:?}"),
    })?;
    std::fs::write(
        a.run.out.join("baselines.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    std::fs::write(
        a.run.out.join("baselines.csv"),
        splitnets_nas::report::baselines_csv(&result),
    )?;
    let md = splitnets_nas::report::baselines_markdown(&result, outcome.as_ref());
    let md_name = if outcome.is_some() {
        "comparison.md"
    } else {
        "baselines.md"
    };
    std::fs::write(a.run.out.join(md_name), &md)?;
    if let Some(o) = outcome.as_ref().filter(|o| o.data == result.data) {
        std::fs::write(
            a.run.out.join("comparison.svg"),
            splitnets_nas::report::comparison_svg(o, &result),
        )?;
    }
    println!("{md}");
    println!(
        "written: {} ({:.0} s)",
        a.run.out.join(md_name).display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct NasRetrainArgs {
    /// A finished `nas` run's directory (its `outcome.json` gives the space, the training
    /// settings and the front).
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// The front member to retrain, as numbered in the run's `front-NN/` directories
    /// (default: the most accurate on the test split).
    #[arg(long)]
    pub(crate) member: Option<usize>,
    /// Training steps (batch and schedule as the run's; the cosine spans these steps).
    #[arg(long)]
    pub(crate) steps: u64,
    /// The run's preset: it fixes the data set's splits (checked against the run's test size).
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) preset: NasPreset,
    /// Hardware profile named in the bundle (the costs are the run's own predictions).
    #[arg(long, default_value = "headset")]
    pub(crate) profile: String,
    /// Output directory: checkpoint, `retrain.{json,md}` and the bundle (`bundle/`).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Test frames the written bundle is evaluated on through the runtime (link codec included).
    #[arg(long, default_value_t = 1000)]
    pub(crate) check_samples: usize,
    /// Where Debian's dataset-fashion-mnist put the files.
    #[arg(long, default_value = dataset::DEFAULT_DIR)]
    pub(crate) data_dir: PathBuf,
}

/// `splitnets-search nas-retrain`: one searched network trained alone for longer
/// (`splitnets_nas::retrain`), tested, and written as a bundle.
pub(crate) fn run_nas_retrain(a: NasRetrainArgs) -> anyhow::Result<()> {
    use splitnets_nas::retrain::{RetrainProgress, retrain};
    splitnets_runtime::onnx_runtime::environment()?;
    let outcome_path = a.run.join("outcome.json");
    let text = std::fs::read_to_string(&outcome_path)
        .with_context(|| format!("reading {} (a finished `nas` run)", outcome_path.display()))?;
    let outcome: NasOutcome = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a NAS outcome", outcome_path.display()))?;
    anyhow::ensure!(
        !outcome.front.is_empty(),
        "{} has an empty front",
        outcome_path.display()
    );
    let index = match a.member {
        Some(i) => {
            anyhow::ensure!(
                i < outcome.front.len(),
                "--member {i}: the run's front has {} members (0..={})",
                outcome.front.len(),
                outcome.front.len() - 1
            );
            i
        }
        None => (0..outcome.front.len())
            .max_by(|&x, &y| {
                outcome.front[x]
                    .test_accuracy
                    .total_cmp(&outcome.front[y].test_accuracy)
            })
            .expect("non-empty front"),
    };
    let searched = &outcome.front[index];
    let mut cfg = NasConfig::preset(
        a.preset.preset(),
        outcome.data,
        load_profile(&a.profile)?,
        Some(a.out.clone()),
    );
    cfg.data.fashion_mnist_dir.clone_from(&a.data_dir);
    cfg.train = outcome.train.clone();
    cfg.train.steps = a.steps;
    cfg.space = Some(outcome.space.clone());
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    eprintln!(
        "[retrain] {} front-{index:02} `{}` (searched: {:.1} % on the test split after {} supernet steps{}): {} steps × batch {} from scratch; output in {}",
        outcome.data.name(),
        searched.arch.short(),
        100.0 * searched.test_accuracy,
        outcome.steps_run,
        if searched.finetune_steps > 0 {
            format!(" and {} of fine-tuning", searched.finetune_steps)
        } else {
            String::new()
        },
        a.steps,
        cfg.train.batch,
        a.out.display()
    );
    let started = std::time::Instant::now();
    let mut first_step = None;
    let (result, member) = retrain(
        &cfg,
        &outcome.space,
        &searched.arch,
        searched.cost,
        // Refused before training when --preset gives another test split than the run's.
        Some(outcome.test_items),
        &mut |p| match p {
            RetrainProgress::Step { step, steps, loss } => {
                let first = *first_step.get_or_insert(step.saturating_sub(1));
                if step % (steps / 50).max(1) == 0 || step == steps {
                    let el = started.elapsed().as_secs_f64();
                    let eta = el / (step - first).max(1) as f64 * (steps - step) as f64;
                    eprintln!(
                        "[retrain] step {step}/{steps}  loss {loss:.3}  elapsed {el:.0} s  ETA {eta:.0} s"
                    );
                }
            }
            other => eprintln!("[retrain] {other:?}"),
        },
    )?;
    // The bundle's training summary: these steps alone, from scratch.
    let as_run = NasOutcome {
        steps_run: 0,
        train_seconds: result.train_seconds_this_process,
        ..outcome.clone()
    };
    let dir = a.out.join("bundle");
    let opts = BundleOptions {
        profile: &a.profile,
        check_samples: a.check_samples,
        data_dir: &a.data_dir,
    };
    let check = write_front_bundle(&opts, &cfg, &as_run, &member, &dir, f64::NAN)?;
    let sram = cfg.profile.sensor.memory_bytes;
    let json = serde_json::json!({
        "run": a.run, "member": index, "retrained": result,
        "searched_test_accuracy": searched.test_accuracy,
        "searched_after_steps": outcome.steps_run + searched.finetune_steps,
        "sensor_memory_limit_bytes": sram,
        "runtime_check": check, "bundle": dir,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    std::fs::write(
        a.out.join("retrain.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let c = &result.cost;
    let md = format!(
        "# Retrained: {data}, front-{index:02} of `{run}`\n\n\
         `{arch}`, trained alone from scratch for {steps} steps × batch {batch} ({epochs:.1} epochs of {items} items), \
         with the search's learning-rate schedule, label smoothing, seed, view dropout and quantization-aware split; \
         {secs:.0} s of training in this process.\n\n\
         | | test, all views | one view | worst camera missing | e2e (ms, predicted) | sensor memory | link B/view |\n\
         |---|---|---|---|---|---|---|\n\
         | the search's figure ({sw} steps) | {s_all:.2} | {s_one:.2} | {s_miss:.2} | {e2e:.3} | {mem} KB of {sram} KB | {link} |\n\
         | retrained ({steps} steps) | {r_all:.2} | {r_one:.2} | {r_miss:.2} | {e2e:.3} | {mem} KB of {sram} KB | {link} |\n\n\
         Test split: {test} items. The bundle (`bundle/`) ran {n} test frames through ONNX Runtime and the link codec: \
         {rt:.2} %, |ONNX Runtime − reference| ≤ {diff:.1e}.\n\n\
         {closing}\n",
        data = outcome.data.name(),
        run = a.run.display(),
        closing = if result.steps > outcome.steps_run + searched.finetune_steps {
            "This is the architecture the search chose, trained for longer; the baselines' comparison is at the \
             search's budget (`comparison.md` of the run)."
        } else {
            "This is the architecture the search chose, trained alone; `nas-retrained-front` gathers such members \
             into a front that `nas-baselines` compares with the baselines at the same budget per network."
        },
        arch = searched.arch.short(),
        steps = result.steps,
        batch = result.batch,
        epochs = result.epochs,
        items = result.train_items,
        secs = result.train_seconds_this_process,
        sw = outcome.steps_run + searched.finetune_steps,
        s_all = 100.0 * searched.test_accuracy,
        s_one = 100.0 * searched.test_accuracy_one_view,
        s_miss = 100.0 * searched.test_accuracy_one_missing,
        r_all = 100.0 * result.test_accuracy,
        r_one = 100.0 * result.test_accuracy_one_view,
        r_miss = 100.0 * result.test_accuracy_one_missing,
        e2e = c.end_to_end_seconds * 1e3,
        mem = c.sensor_memory_bytes / 1000,
        sram = sram / 1000,
        link = c.link_bytes_per_view,
        test = result.test_items,
        n = check.samples,
        rt = 100.0 * check.accuracy_through_codec,
        diff = check.max_abs_diff,
    );
    std::fs::write(a.out.join("retrain.md"), &md)?;
    println!("{md}");
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct NasRetrainedFrontArgs {
    /// The finished `nas` run whose members were retrained (its `outcome.json`).
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// Output directory: `outcome.json` and `report.{md,csv,svg}` of the retrained front, and
    /// each member's `retrain.{json,md}` and bundle as `front-NN/`. `nas-baselines --out` on
    /// this directory compares the retrained front with the baselines.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// `nas-retrain` output directories (each with its `retrain.json`), one per member.
    #[arg(required = true)]
    pub(crate) retrained: Vec<PathBuf>,
}

/// `splitnets-search nas-retrained-front`: a run's front made of members retrained alone
/// (`splitnets_nas::retrain::front_of_retrained`), written like a run so that `nas-baselines`
/// compares it with the baselines at an equal budget per network.
pub(crate) fn run_nas_retrained_front(a: NasRetrainedFrontArgs) -> anyhow::Result<()> {
    use splitnets_nas::retrain::{RetrainOutcome, front_of_retrained};
    let read_json = |path: &Path| -> anyhow::Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    };
    let run_path = a.run.join("outcome.json");
    let run: NasOutcome = serde_json::from_value(read_json(&run_path)?)
        .with_context(|| format!("{} is not a NAS outcome", run_path.display()))?;
    let mut retrained = Vec::new();
    for dir in &a.retrained {
        let path = dir.join("retrain.json");
        let v = read_json(&path)?;
        let member = v["member"].as_u64().with_context(|| {
            format!("{}: no `member` (not a nas-retrain output)", path.display())
        })? as usize;
        let r: RetrainOutcome = serde_json::from_value(v["retrained"].clone())
            .with_context(|| format!("{}: `retrained` is not a retrain outcome", path.display()))?;
        retrained.push((member, r, dir.clone()));
    }
    let pairs: Vec<(usize, RetrainOutcome)> =
        retrained.iter().map(|(m, r, _)| (*m, r.clone())).collect();
    let outcome = front_of_retrained(&run, &pairs)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for (file, text) in [
        ("outcome.json", serde_json::to_string_pretty(&outcome)?),
        ("report.md", splitnets_nas::report::markdown(&outcome)),
        ("report.csv", splitnets_nas::report::csv(&outcome)),
        ("report.svg", splitnets_nas::report::svg(&outcome)),
    ] {
        std::fs::write(a.out.join(file), text)?;
    }
    // Each member's own record and bundle, numbered as in the run.
    for (member, _, dir) in &retrained {
        let to = a.out.join(format!("front-{member:02}"));
        std::fs::create_dir_all(to.join("bundle"))?;
        for file in ["retrain.json", "retrain.md"] {
            std::fs::copy(dir.join(file), to.join(file))
                .with_context(|| format!("copying {}", dir.join(file).display()))?;
        }
        for entry in std::fs::read_dir(dir.join("bundle"))
            .with_context(|| format!("reading {}", dir.join("bundle").display()))?
        {
            let entry = entry?;
            anyhow::ensure!(
                entry.file_type()?.is_file(),
                "{}: a bundle holds files only",
                entry.path().display()
            );
            std::fs::copy(entry.path(), to.join("bundle").join(entry.file_name()))?;
        }
    }
    println!("{}", splitnets_nas::report::markdown(&outcome));
    println!(
        "written: {} ({} members retrained alone for {} steps each)",
        a.out.display(),
        outcome.front.len(),
        outcome.front_retrained_steps
    );
    Ok(())
}
