//! Bring your own model: a user's ONNX CNN, cut where the planner says, written as bundles the
//! daemons run unchanged, and checked on the user's own images.
//!
//! A written bundle is single-view (no fusion: the tail takes the one view's feature as the
//! model did). A cut where several tensors cross (both branches of a residual or
//! squeeze-excite block) sends them all in each frame (`split.extra_features`). Before it is written, its head then tail are run in float against the whole
//! model on sample inputs, unoptimised so the comparison is of what the graph computes: a cut
//! that changes any output bit is refused. The quantized agreement (top-1 of head → codec →
//! tail vs the whole model) is measured per bit width on the user's images.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use prost::Message;
use splitnets_cost_model::graph::{AnalyzedGraph, analyze};
use splitnets_cost_model::profile::HardwareProfile;
use splitnets_cost_model::split::{evaluate, summarize};
use splitnets_onnx::{self as onnx, ModelProto};
use splitnets_proto::bundle::{
    Bundle, CameraRig, ExtraFeature, Files, InputSpec, Manifest, PredictedCost, SplitSpec,
    link_budget_for,
};
use splitnets_proto::codec::{self, CodecSpec};
use splitnets_proto::wire::{FrameLayout, TensorLayout};
use splitnets_runtime::onnx_runtime::{MultiIoModel, NamedTensor, SessionOptions};

use crate::cuts::Cut;
use crate::onnx_cut::{runnable_original, split_model};

/// A user's model, analysed at fixed input shapes.
#[derive(Debug)]
pub struct UserModel {
    pub name: String,
    pub model: ModelProto,
    pub graph: AnalyzedGraph,
    /// The whole model as written for ONNX Runtime (fixed input shapes, shapes folded).
    pub whole: ModelProto,
}

impl UserModel {
    /// Reads and analyses `path`; `input_shapes` resolves symbolic input dims by name.
    pub fn load(path: &Path, input_shapes: &HashMap<String, Vec<usize>>) -> anyhow::Result<Self> {
        let model = onnx::read_model(path)?;
        let spec = onnx::cost_graph(&model)?;
        let graph = analyze(&spec, input_shapes)
            .with_context(|| format!("analysing {}", path.display()))?;
        let whole = runnable_original(&model, &graph)?;
        Ok(Self {
            name: path
                .file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
            model,
            graph,
            whole,
        })
    }

    /// The single data input's shape, checked to be an image tensor `[1, C, H, W]` or
    /// `[1, H, W, C]` with C 1 or 3.
    pub fn image_input(&self) -> anyhow::Result<(&str, &[usize])> {
        let g = &self.graph;
        if g.inputs.len() != 1 {
            bail!(
                "the model has {} data inputs; a camera feeds exactly one image",
                g.inputs.len()
            );
        }
        let t = &g.tensors[g.inputs[0]];
        let s = &t.shape;
        if s.len() != 4 || s[0] != 1 || !(matches!(s[1], 1 | 3) || matches!(s[3], 1 | 3)) {
            bail!(
                "input {:?} has shape {s:?}; an image input is [1, C, H, W] or [1, H, W, C] with 1 or 3 channels",
                t.name
            );
        }
        Ok((&t.name, s))
    }

    /// The single-tensor cut that sends exactly `tensor` across, among `cuts`.
    pub fn cut_at<'a>(&self, cuts: &'a [Cut], tensors: &[String]) -> anyhow::Result<&'a Cut> {
        let g = &self.graph;
        let mut ids = Vec::new();
        for t in tensors {
            ids.push(g.tensor_id(t).with_context(|| {
                format!(
                    "no tensor {t:?} in the model (compute tensors: {})",
                    g.tensors
                        .iter()
                        .filter(|x| x.producer.is_some())
                        .map(|x| x.name.as_str())
                        .take(40)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?);
        }
        ids.sort();
        cuts.iter()
            .find(|c| {
                let mut x = c.crossing.clone();
                x.sort();
                x == ids
            })
            .with_context(|| {
                format!("no cut of the model sends exactly {tensors:?} across the link")
            })
    }
}

/// What a bundle records about the user's input and labels.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    pub input: InputSpec,
    pub classes: Vec<String>,
    pub codec: CodecSpec,
    /// One codec per crossing tensor (calibrated ranges of their own), overriding `codec`;
    /// empty: `codec` for every tensor.
    pub tensor_codecs: Vec<TensorCodec>,
    pub fps: f64,
    pub profile: HardwareProfile,
    /// The command that wrote it, recorded in the manifest's description.
    pub command: String,
}

/// How one crossing tensor is encoded: the codec, and the calibrated ranges per channel
/// [`CodecSpec::AffineCalibratedPerChannel`] needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorCodec {
    pub codec: CodecSpec,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_ranges: Vec<[f32; 2]>,
}

impl TensorCodec {
    /// A codec that needs no ranges beside it.
    pub fn plain(codec: CodecSpec) -> Self {
        Self {
            codec,
            channel_ranges: Vec::new(),
        }
    }
}

/// Why a cut cannot become a bundle (the planner lists such cuts but skips them).
pub fn bundle_blocker(g: &AnalyzedGraph, cut: &Cut) -> Option<String> {
    if cut.crossing.is_empty() {
        return Some("nothing crosses".into());
    }
    if cut.on_sensor.iter().all(|&s| s) {
        return Some("the model's output crosses (all on the sensor)".into());
    }
    for &id in &cut.crossing {
        let t = &g.tensors[id];
        if t.producer.is_none() {
            return Some("the raw input crosses (all on the aggregator)".into());
        }
        if t.is_graph_output {
            return Some(format!("the model's output {:?} crosses", t.name));
        }
        if t.shape.first() != Some(&1) || t.shape.len() < 2 {
            return Some(format!(
                "tensor {:?} has shape {:?}, not [1, ...]",
                t.name, t.shape
            ));
        }
    }
    None
}

/// A bundle written from a cut.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenBundle {
    pub dir: String,
    pub digest: String,
    /// The crossing tensors' names, joined with `+`.
    pub crossing: String,
    /// One view's shape of each crossing tensor, in frame order.
    pub feature_shapes: Vec<Vec<usize>>,
    pub bytes_per_view_per_frame: usize,
    /// The codec of each crossing tensor, in frame order.
    pub codecs: Vec<TensorCodec>,
    pub predicted: PredictedCost,
    /// Largest |head→tail − whole| over the check inputs, float passthrough (0: bit-exact).
    pub float_max_abs_diff: f32,
    pub check_inputs: usize,
}

/// Writes the bundle of `cut` to `out` after checking head then tail equals the whole model on
/// `check_inputs` (preprocessed head inputs).
pub fn write_bundle(
    um: &UserModel,
    cut: &Cut,
    opts: &BundleOptions,
    check_inputs: &[Vec<f32>],
    out: &Path,
) -> anyhow::Result<WrittenBundle> {
    let g = &um.graph;
    if let Some(why) = bundle_blocker(g, cut) {
        bail!("this cut cannot be a bundle: {why}");
    }
    let (head, tail) = split_model(&um.model, g, cut)?;
    let (head_bytes, tail_bytes) = (head.encode_to_vec(), tail.encode_to_vec());
    let features: Vec<_> = cut.crossing.iter().map(|&t| g.tensors[t].clone()).collect();
    let crossing = features
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let codecs = if opts.tensor_codecs.is_empty() {
        vec![TensorCodec::plain(opts.codec); features.len()]
    } else {
        anyhow::ensure!(
            opts.tensor_codecs.len() == features.len(),
            "{} codecs for {} crossing tensors",
            opts.tensor_codecs.len(),
            features.len()
        );
        opts.tensor_codecs.clone()
    };
    let diff = float_passthrough_diff(um, &head_bytes, &tail_bytes, check_inputs)?;
    if diff != 0.0 {
        bail!(
            "head then tail differs from the whole model by up to {diff:e} at cut {crossing:?}; not writing it"
        );
    }
    let output = &g.tensors[*g.outputs.first().context("the model has no output")?];
    let classes_out = output.shape.iter().product::<usize>();
    let classes = if opts.classes.is_empty() {
        (0..classes_out).map(|i| format!("class{i}")).collect()
    } else {
        if opts.classes.len() != classes_out {
            bail!(
                "--labels has {} names but the model's output {:?} has {} values",
                opts.classes.len(),
                output.name,
                classes_out
            );
        }
        opts.classes.clone()
    };
    let views = 1;
    let s = summarize(g, &cut.on_sensor)?;
    let mut single = opts.profile.clone();
    single.sensors = views;
    let c = evaluate(&s, &single, codecs[0].codec.bits_per_element(), None);
    let predicted = PredictedCost {
        profile: opts.profile.name.clone(),
        sensor_seconds: c.sensor_seconds,
        link_seconds: c.link_seconds,
        aggregator_seconds: c.aggregator_seconds,
        end_to_end_seconds: c.end_to_end_seconds,
        sensor_peak_memory_bytes: c.sensor_memory_bytes,
    };
    let head_input = g.tensors[g.inputs[0]].name.clone();
    let manifest = Manifest {
        format_version: splitnets_proto::bundle::FORMAT_VERSION,
        name: format!("{}-at-{crossing}", um.name),
        description: format!(
            "{} cut at {crossing:?} ({} compute nodes on the sensor) by `{}`",
            um.name,
            cut.on_sensor.iter().filter(|&&x| x).count(),
            opts.command
        ),
        classes,
        input: opts.input.clone(),
        cameras: CameraRig {
            views,
            ..CameraRig::default()
        },
        scene: None,
        split: SplitSpec {
            head_input,
            head_output: features[0].name.clone(),
            feature_shape: features[0].shape.clone(),
            tail_input: features[0].name.clone(),
            tail_output: output.name.clone(),
            fusion: "none".into(),
            channel_ranges: codecs[0].channel_ranges.clone(),
            extra_features: features[1..]
                .iter()
                .zip(&codecs[1..])
                .map(|(f, c)| ExtraFeature {
                    head_output: f.name.clone(),
                    tail_input: f.name.clone(),
                    shape: f.shape.clone(),
                    codec: (c.codec != codecs[0].codec).then_some(c.codec),
                    channel_ranges: c.channel_ranges.clone(),
                })
                .collect(),
        },
        codec: codecs[0].codec,
        files: Files::to_be_written(),
        link_budget: link_budget_for(
            &FrameLayout {
                tensors: features
                    .iter()
                    .zip(&codecs)
                    .map(|(f, c)| TensorLayout {
                        shape: f.shape.clone(),
                        codec: c.codec,
                        channel_ranges: c.channel_ranges.clone(),
                    })
                    .collect(),
            },
            views,
            opts.fps,
            opts.input.raw_frame_bytes(),
        ),
        predicted: Some(predicted.clone()),
        training: None,
    };
    let digest = Bundle::write(out, manifest.clone(), &head_bytes, &tail_bytes)?;
    Ok(WrittenBundle {
        dir: out.display().to_string(),
        digest,
        crossing,
        feature_shapes: features.into_iter().map(|f| f.shape).collect(),
        bytes_per_view_per_frame: manifest.link_budget.bytes_per_view_per_frame,
        codecs,
        predicted,
        float_max_abs_diff: diff,
        check_inputs: check_inputs.len(),
    })
}

fn session(name: &str, bytes: &[u8]) -> anyhow::Result<MultiIoModel> {
    // Unoptimised: the graph exactly as written, so the halves compute what the whole does.
    Ok(MultiIoModel::from_bytes(
        name,
        bytes,
        SessionOptions::default(),
        false,
    )?)
}

fn input_tensor(um: &UserModel, x: &[f32]) -> NamedTensor {
    let t = &um.graph.tensors[um.graph.inputs[0]];
    NamedTensor {
        name: t.name.clone(),
        shape: t.shape.clone(),
        data: x.to_vec(),
    }
}

/// Largest |head → tail − whole| over `inputs` (float, no codec).
pub fn float_passthrough_diff(
    um: &UserModel,
    head: &[u8],
    tail: &[u8],
    inputs: &[Vec<f32>],
) -> anyhow::Result<f32> {
    let mut whole = session("whole model", &um.whole.encode_to_vec())?;
    let (mut h, mut t) = (session("head", head)?, session("tail", tail)?);
    let mut worst = 0f32;
    for x in inputs {
        let feed = [input_tensor(um, x)];
        let expected = whole.run(&feed)?;
        let got = t.run(&h.run(&feed)?)?;
        for (a, b) in got.iter().zip(&expected) {
            for (p, q) in a.data.iter().zip(&b.data) {
                worst = worst.max((p - q).abs());
                if p.to_bits() != q.to_bits() && !(p.is_nan() && q.is_nan()) {
                    worst = worst.max(f32::MIN_POSITIVE);
                }
            }
        }
    }
    Ok(worst)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Top-1 agreement of head → codec → tail with the whole model on `inputs`, for each entry of
/// `codecs`: one codec for every crossing tensor, or one per crossing tensor (frame order).
pub fn quantized_agreement(
    um: &UserModel,
    cut: &Cut,
    codecs: &[Vec<TensorCodec>],
    inputs: &[Vec<f32>],
) -> anyhow::Result<Vec<f64>> {
    let g = &um.graph;
    let (head, tail) = split_model(&um.model, g, cut)?;
    let mut whole = session("whole model", &um.whole.encode_to_vec())?;
    let (mut h, mut t) = (
        session("head", &head.encode_to_vec())?,
        session("tail", &tail.encode_to_vec())?,
    );
    let mut agree = vec![0usize; codecs.len()];
    for x in inputs {
        let feed = [input_tensor(um, x)];
        let expected = argmax(&whole.run(&feed)?[0].data);
        let feature = h.run(&feed)?;
        for (k, specs) in codecs.iter().enumerate() {
            let mut f = feature.clone();
            anyhow::ensure!(
                specs.len() == 1 || specs.len() == f.len(),
                "{} codecs for {} crossing tensors (give one for all, or one each)",
                specs.len(),
                f.len()
            );
            for (i, part) in f.iter_mut().enumerate() {
                // One codec serves every tensor; otherwise tensor i has codec i.
                let spec = &specs[if specs.len() == 1 { 0 } else { i }];
                let enc = codec::encode_with_ranges(
                    spec.codec,
                    &spec.channel_ranges,
                    &part.shape,
                    &part.data,
                )?;
                part.data = codec::decode(&enc)?;
            }
            // The tail takes the crossing tensors it consumes, by name.
            if argmax(&t.run(&f)?[0].data) == expected {
                agree[k] += 1;
            }
        }
    }
    Ok(agree
        .iter()
        .map(|&a| a as f64 / inputs.len().max(1) as f64)
        .collect())
}

/// Calibrated ranges of one crossing tensor: the whole tensor's, and each channel's (axis 1).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRanges {
    pub min: f32,
    pub max: f32,
    pub channels: Vec<[f32; 2]>,
}

/// The ranges of each crossing tensor of the cut over `inputs` (frame order), for calibrated
/// codecs: a tensor of its own gets ranges of its own (a ReLU feature and a sigmoid gate share
/// nothing), per tensor and per channel.
pub fn feature_ranges(
    um: &UserModel,
    cut: &Cut,
    inputs: &[Vec<f32>],
) -> anyhow::Result<Vec<TensorRanges>> {
    anyhow::ensure!(!inputs.is_empty(), "no calibration images");
    let (head, _) = split_model(&um.model, &um.graph, cut)?;
    let mut h = session("head", &head.encode_to_vec())?;
    let mut ranges: Vec<TensorRanges> = Vec::new();
    for x in inputs {
        for (k, t) in h.run(&[input_tensor(um, x)])?.iter().enumerate() {
            let channels = if t.shape.len() >= 2 { t.shape[1] } else { 1 };
            let inner: usize = t.shape.iter().skip(2).product();
            if ranges.len() <= k {
                ranges.push(TensorRanges {
                    min: f32::INFINITY,
                    max: f32::NEG_INFINITY,
                    channels: vec![[f32::INFINITY, f32::NEG_INFINITY]; channels],
                });
            }
            let r = &mut ranges[k];
            for (i, &v) in t.data.iter().enumerate() {
                r.min = r.min.min(v);
                r.max = r.max.max(v);
                let c = &mut r.channels[(i / inner.max(1)) % channels];
                c[0] = c[0].min(v);
                c[1] = c[1].max(v);
            }
        }
    }
    Ok(ranges)
}
