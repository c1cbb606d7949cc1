//! From a trained model to a verified split bundle: export head and tail, check ONNX Runtime
//! against the training framework, measure test accuracy (one view vs all views fused, float and
//! through the codec), compute the link budget, write the bundle.

use std::path::PathBuf;

use prost::Message;
use splitnets_camera::dataset::{CLASSES, ImageSet};
use splitnets_camera::rig::{CameraRig, replay_frame};
use splitnets_proto::bundle::{
    Bundle, FORMAT_VERSION, Files, InputSpec, Manifest, SplitSpec, TrainingSummary, link_budget_for,
};
use splitnets_proto::codec::CodecSpec;
use splitnets_proto::wire::FrameLayout;
use splitnets_runtime::argmax;
use splitnets_runtime::{HeadStage, SessionOptions, TailStage};

use crate::export;
use crate::train::{TrainConfig, Trained};

#[derive(Debug)]
pub struct BundleJob<'a> {
    pub out_dir: PathBuf,
    pub name: String,
    pub rig: CameraRig,
    pub input: InputSpec,
    pub codec: CodecSpec,
    pub target_fps: f64,
    pub trained: &'a Trained,
    pub train_config: &'a TrainConfig,
    pub test_set: &'a ImageSet,
    /// Test samples for accuracy (≤ test set size).
    pub eval_samples: usize,
    /// Samples on which ONNX Runtime is compared with burn.
    pub check_samples: usize,
    pub command: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    pub samples: usize,
    pub accuracy_fused: f64,
    pub accuracy_fused_through_codec: f64,
    pub accuracy_per_view: Vec<f64>,
    pub accuracy_one_view_mean: f64,
    pub onnx_max_abs_diff: f64,
    pub onnx_checked_samples: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleOutcome {
    pub dir: PathBuf,
    pub digest: String,
    pub evaluation: Evaluation,
    pub link_budget: splitnets_cost_model::LinkBudget,
}

pub fn write_bundle(job: &BundleJob<'_>) -> anyhow::Result<BundleOutcome> {
    let weights = job.trained.model.weights();
    let (h, w) = (job.input.height, job.input.width);
    let head = export::head_model(&weights, h, w).encode_to_vec();
    let tail = export::tail_model(&weights, h / 4, w / 4).encode_to_vec();
    let feature_shape = vec![1, weights.reduce.out_channels, h / 4, w / 4];
    let evaluation = evaluate(job, &head, &tail, &feature_shape)?;

    let budget = link_budget_for(
        &FrameLayout::single(&feature_shape, job.codec),
        job.rig.views,
        job.target_fps,
        job.input.raw_frame_bytes(),
    );
    let cfg = job.train_config;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: job.name.clone(),
        description: format!(
            "Fashion-MNIST seen by {} simulated cameras (occluder {} px, noise {}); split CNN {:?}",
            job.rig.views, job.rig.occluder_px, job.rig.noise_std, cfg.spec
        ),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        input: job.input.clone(),
        cameras: job.rig.clone(),
        scene: None,
        split: SplitSpec {
            head_input: export::HEAD_INPUT.into(),
            head_output: export::HEAD_OUTPUT.into(),
            feature_shape,
            tail_input: export::TAIL_INPUT.into(),
            tail_output: export::TAIL_OUTPUT.into(),
            channel_ranges: Vec::new(),
            extra_features: Vec::new(),
            fusion: "max".into(),
        },
        codec: job.codec,
        files: Files::to_be_written(),
        link_budget: budget,
        predicted: None,
        training: Some(TrainingSummary {
            dataset: "fashion-mnist (Debian dataset-fashion-mnist)".into(),
            steps: cfg.steps,
            batch_size: cfg.batch_size,
            seconds: job.trained.seconds,
            final_loss: tail_mean(&job.trained.losses, 50),
            test_accuracy_one_view: evaluation.accuracy_one_view_mean,
            test_accuracy_fused: evaluation.accuracy_fused,
            test_samples: evaluation.samples,
            onnx_max_abs_diff: evaluation.onnx_max_abs_diff,
            command: job.command.clone(),
        }),
    };
    let digest = Bundle::write(&job.out_dir, manifest, &head, &tail)?;
    Ok(BundleOutcome {
        dir: job.out_dir.clone(),
        digest,
        evaluation,
        link_budget: budget,
    })
}

/// Mean of the last `n` values.
pub fn tail_mean(v: &[f64], n: usize) -> f64 {
    let s = &v[v.len().saturating_sub(n)..];
    s.iter().sum::<f64>() / s.len().max(1) as f64
}

fn evaluate(
    job: &BundleJob<'_>,
    head: &[u8],
    tail: &[u8],
    feature_shape: &[usize],
) -> anyhow::Result<Evaluation> {
    let opts = SessionOptions::default();
    let views = job.rig.views as usize;
    // The same stages the daemons run.
    let mut head_stage =
        HeadStage::from_parts("head", head, &job.input, feature_shape, job.codec, opts)?;
    let mut tail_stage = TailStage::from_parts("tail", tail, feature_shape, views, opts)?;
    let n = job.eval_samples.min(job.test_set.len());
    let fe: usize = feature_shape.iter().product();
    let (mut fused_ok, mut codec_ok) = (0usize, 0usize);
    let mut view_ok = vec![0usize; views];
    let check = job.check_samples.min(n);
    let mut check_inputs = Vec::new();
    let mut ort_logits = Vec::new();
    let mut pre = Vec::new();
    let mut stacked = Vec::with_capacity(views * fe);
    let mut encoded = Vec::with_capacity(views);
    for i in 0..n {
        let label = job.test_set.labels[i] as usize;
        stacked.clear();
        encoded.clear();
        for (v, ok) in view_ok.iter_mut().enumerate() {
            let px = replay_frame(&job.rig, job.test_set, v as u32, i as u64);
            if i < check {
                job.input.preprocess(&px, &mut pre);
                check_inputs.extend_from_slice(&pre);
            }
            let f = head_stage.features(&px)?;
            stacked.extend_from_slice(f);
            let one = tail_stage.run_floats(f, 1)?;
            *ok += usize::from(argmax(one) == label);
            encoded.push(head_stage.encode_features()?.to_vec());
        }
        let logits = tail_stage.run_floats(&stacked, views)?;
        fused_ok += usize::from(argmax(logits) == label);
        if i < check {
            ort_logits.extend_from_slice(logits);
        }
        let (logits_q, _) = tail_stage.run_encoded(encoded.iter().map(Vec::as_slice))?;
        codec_ok += usize::from(argmax(logits_q) == label);
    }
    // The training framework on the same inputs, all views present.
    let mut max_diff = 0.0f64;
    let px = job.input.height * job.input.width;
    for start in (0..check).step_by(64) {
        let b = (check - start).min(64);
        let inputs = check_inputs[start * views * px..(start + b) * views * px].to_vec();
        let burn = job.trained.logits(
            inputs,
            vec![1.0; b * views],
            b,
            views,
            job.input.height,
            job.input.width,
        );
        let classes = burn.len() / b;
        for (x, y) in burn
            .iter()
            .zip(&ort_logits[start * classes..(start + b) * classes])
        {
            max_diff = max_diff.max(f64::from((x - y).abs()));
        }
    }
    let per_view: Vec<f64> = view_ok.iter().map(|&k| k as f64 / n as f64).collect();
    Ok(Evaluation {
        samples: n,
        accuracy_fused: fused_ok as f64 / n as f64,
        accuracy_fused_through_codec: codec_ok as f64 / n as f64,
        accuracy_one_view_mean: per_view.iter().sum::<f64>() / views as f64,
        accuracy_per_view: per_view,
        onnx_max_abs_diff: max_diff,
        onnx_checked_samples: check,
    })
}
