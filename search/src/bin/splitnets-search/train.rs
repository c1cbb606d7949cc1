//! `splitnets-search train`: trains the multi-view split CNN on Fashion-MNIST and writes a bundle.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::CameraRig;
use splitnets_proto::bundle::InputSpec;
use splitnets_search::data::BatchSampler;
use splitnets_search::make_bundle::{BundleJob, tail_mean, write_bundle};
use splitnets_search::model::SplitCnnSpec;
use splitnets_search::train::{TrainBackend, TrainConfig, train};

use crate::codec_from_bits;

#[derive(clap::Args, Debug)]
pub(crate) struct TrainArgs {
    /// Where to write the bundle.
    #[arg(long, default_value = "out/bundle")]
    pub(crate) out: PathBuf,
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) preset: Preset,
    /// Training steps (overrides the preset).
    #[arg(long)]
    pub(crate) steps: Option<u64>,
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    #[arg(long, default_value_t = 2e-3)]
    pub(crate) learning_rate: f64,
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Test samples for the accuracy report (overrides the preset).
    #[arg(long)]
    pub(crate) eval_samples: Option<usize>,
    /// Bits per feature element on the link: 2, 4, 6, 8, 16 (float16) or 32 (float32).
    #[arg(long, default_value_t = 8)]
    pub(crate) bits: u8,
    /// Quantize per channel instead of per tensor.
    #[arg(long)]
    pub(crate) per_channel: bool,
    /// Camera frame rate the link budget is computed for.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) fps: f64,
    /// Channels of the split feature.
    #[arg(long, default_value_t = 4)]
    pub(crate) split_channels: usize,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    pub(crate) data_dir: PathBuf,
    #[arg(long, value_enum, default_value = "flex")]
    pub(crate) backend: TrainBackend,
    /// Write the loss curve and evaluation as JSON here.
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Preset {
    /// A few hundred steps: checks the training path end to end (CI).
    Quick,
    /// The run behind the committed demo bundle.
    Full,
}

pub(crate) fn run_train(a: TrainArgs) -> anyhow::Result<()> {
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
        mean: 0.0.into(),
        std: 1.0.into(),
        ..Default::default()
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
