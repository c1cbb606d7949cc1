//! Bundles from cuts: re-split an existing bundle's network at another tensor.
//!
//! The source bundle's head and tail are composed into one single-view model; the planner's cut
//! machinery cuts it again at the chosen tensor; the new head and tail go into a bundle the
//! daemons load unchanged. Cuts must lie before the view fusion (the `ReduceMax` over views),
//! since everything before it runs per view and everything after it runs once per frame.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use prost::Message;
use splitnets_cost_model::graph::analyze;
use splitnets_cost_model::profile::HardwareProfile;
use splitnets_cost_model::split::{evaluate, summarize};
use splitnets_onnx::{self as onnx, ModelProto, tensor_shape_proto, type_proto};
use splitnets_proto::bundle::{Bundle, PredictedCost, link_budget_for};
use splitnets_proto::codec::CodecSpec;

use crate::cuts;
use crate::onnx_cut::split_model;

/// The bundle's network for one view as a single model: head then tail.
pub fn compose_single_view(b: &Bundle) -> anyhow::Result<ModelProto> {
    let head = onnx::decode_model(&b.head_onnx, "head.onnx")?;
    let tail = onnx::decode_model(&b.tail_onnx, "tail.onnx")?;
    let (hg, tg) = (
        head.graph.clone().context("head graph")?,
        tail.graph.context("tail graph")?,
    );
    let (feature, tail_in) = (&b.manifest.split.head_output, &b.manifest.split.tail_input);
    let mut g = hg;
    for mut n in tg.node {
        for i in &mut n.input {
            if i == tail_in {
                *i = feature.clone();
            }
        }
        g.node.push(n);
    }
    let names: std::collections::HashSet<String> =
        g.initializer.iter().map(|t| t.name().to_string()).collect();
    for t in tg.initializer {
        if names.contains(t.name()) {
            bail!("head and tail both define initializer {:?}", t.name());
        }
        g.initializer.push(t);
    }
    g.output = tg.output;
    g.name = Some("splitnets_single_view".into());
    let mut m = head;
    m.graph = Some(g);
    Ok(m)
}

/// What a re-split produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebundled {
    pub digest: String,
    pub feature_shape: Vec<usize>,
    pub bytes_per_view_per_frame: usize,
    pub predicted: PredictedCost,
}

/// Writes a bundle that sends `tensor` across the link with `codec`.
/// How the new bundle encodes its feature.
#[derive(Debug, Clone)]
pub enum CodecChoice {
    Fixed(CodecSpec),
    /// Affine at `bits` with one range measured on these camera frames (the new head's output
    /// over all of them), recorded in the bundle.
    Calibrated {
        bits: u8,
        frames: Vec<Vec<u8>>,
    },
}

/// The new head's output range over `frames`.
fn feature_range(
    head: &[u8],
    input: &splitnets_proto::bundle::InputSpec,
    frames: &[Vec<u8>],
) -> anyhow::Result<(f32, f32)> {
    let mut m = splitnets_runtime::onnx_runtime::OnnxModel::from_bytes(
        "new head",
        head,
        Default::default(),
    )?;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    let mut x = Vec::new();
    for f in frames {
        input.preprocess(f, &mut x);
        let (_, y) = m.run(&input.head_input_shape(), &x)?;
        for v in y {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    anyhow::ensure!(lo <= hi, "no calibration frames");
    Ok((lo, hi))
}

/// Writes a bundle that sends `tensor` across the link, encoded as `choice` says.
pub fn rebundle(
    src: &Bundle,
    tensor: &str,
    choice: CodecChoice,
    profile: &HardwareProfile,
    out: &Path,
) -> anyhow::Result<Rebundled> {
    let whole = compose_single_view(src)?;
    let g = analyze(&onnx::cost_graph(&whole)?, &HashMap::new())?;
    let tid = g.tensor_id(tensor).with_context(|| {
        format!(
            "no tensor {tensor:?} in the model; tensors: {}",
            g.tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let cut = cuts::enumerate(&g, 1, 100_000)?
        .into_iter()
        .find(|c| c.crossing == [tid])
        .with_context(|| format!("no cut sends exactly {tensor:?} across"))?;
    if let Some(fuse) = g.nodes.iter().position(|n| n.op_type == "ReduceMax")
        && cut.on_sensor[fuse]
    {
        bail!(
            "{tensor:?} is after the view fusion; a multi-view bundle needs the fusion on the aggregator"
        );
    }
    let shape = g.tensors[tid].shape.clone();
    if shape.len() != 4 || shape[0] != 1 {
        bail!("{tensor:?} has shape {shape:?}; the runtime sends [1, C, H, W] features");
    }
    let (head, mut tail) = split_model(&whole, &g, &cut)?;
    let codec = match choice {
        CodecChoice::Fixed(c) => c,
        CodecChoice::Calibrated { bits, frames } => {
            let (min, max) = feature_range(&head.encode_to_vec(), &src.manifest.input, &frames)?;
            CodecSpec::AffineCalibrated { bits, min, max }
        }
    };
    codec.validate()?;
    // The tail takes the views present stacked on axis 0.
    if let Some(type_proto::Value::TensorType(t)) = tail
        .graph
        .as_mut()
        .and_then(|g| g.input[0].r#type.as_mut())
        .and_then(|t| t.value.as_mut())
        && let Some(s) = t.shape.as_mut()
    {
        s.dim[0].value = Some(tensor_shape_proto::dimension::Value::DimParam(
            "views".into(),
        ));
    }
    let mut m = src.manifest.clone();
    let views = m.cameras.views;
    m.name = format!("{}-at-{tensor}", src.manifest.name);
    m.description = format!(
        "{} — re-split at {tensor} by `splitnets-search split-bundle` from bundle {}",
        src.manifest.description,
        &src.digest[..16]
    );
    m.split.head_output = tensor.to_string();
    m.split.tail_input = tensor.to_string();
    m.split.feature_shape = shape.clone();
    m.codec = codec;
    m.split.extra_features.clear();
    m.link_budget = link_budget_for(
        &splitnets_proto::wire::FrameLayout::single(&shape, codec),
        views,
        m.link_budget.target_fps,
        m.input.raw_frame_bytes(),
    );
    let s = summarize(&g, &cut.on_sensor)?;
    let c = evaluate(&s, profile, codec.bits_per_element(), None);
    let predicted = PredictedCost {
        profile: profile.name.clone(),
        sensor_seconds: c.sensor_seconds,
        link_seconds: c.link_seconds,
        aggregator_seconds: c.aggregator_seconds,
        end_to_end_seconds: c.end_to_end_seconds,
        sensor_peak_memory_bytes: c.sensor_memory_bytes,
    };
    m.predicted = Some(predicted.clone());
    let digest = Bundle::write(out, m.clone(), &head.encode_to_vec(), &tail.encode_to_vec())?;
    Ok(Rebundled {
        digest,
        feature_shape: shape,
        bytes_per_view_per_frame: m.link_budget.bytes_per_view_per_frame,
        predicted,
    })
}
