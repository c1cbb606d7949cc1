//! What the cost model says about a bundle, and the simulator's configuration built from it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use splitnets_cost_model::graph::analyze;
use splitnets_cost_model::profile::{ComputeProfile, HardwareProfile};
use splitnets_cost_model::split::SideWork;
use splitnets_proto::bundle::Bundle;

/// Compute seconds of one ONNX model under `profile`, its input given the shape `shape`.
fn model_seconds(
    bytes: &[u8],
    origin: &str,
    input: &str,
    shape: Vec<usize>,
    profile: &ComputeProfile,
) -> anyhow::Result<f64> {
    let model = splitnets_onnx::decode_model(bytes, origin)?;
    let spec = splitnets_onnx::cost_graph(&model)?;
    let g = analyze(&spec, &HashMap::from([(input.to_string(), shape)]))
        .with_context(|| format!("analysing {origin}"))?;
    let mut side = SideWork::default();
    for n in &g.nodes {
        let producer = n.inputs.first().and_then(|&t| g.tensors[t].producer);
        side.add(n, n.conv_epilogue && producer.is_some());
    }
    Ok(side.seconds(profile))
}

/// The cost model's view of a bundle under a profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleCosts {
    /// The head on the sensor, seconds.
    pub head_seconds: f64,
    /// The tail with one view, seconds; each further view adds `tail_per_view_seconds`.
    pub tail_one_view_seconds: f64,
    pub tail_per_view_seconds: f64,
    /// One view's feature frame as the wire carries it (the bundle's link budget), bytes.
    pub frame_bytes: u64,
}

pub fn bundle_costs(bundle: &Bundle, p: &HardwareProfile) -> anyhow::Result<BundleCosts> {
    let m = &bundle.manifest;
    let head = model_seconds(
        &bundle.head_onnx,
        "head.onnx",
        &m.split.head_input,
        m.input.head_input_shape().to_vec(),
        &p.sensor,
    )?;
    let tail = |views: usize| {
        let mut shape = m.split.feature_shape.clone();
        shape[0] = views;
        model_seconds(
            &bundle.tail_onnx,
            "tail.onnx",
            &m.split.tail_input,
            shape,
            &p.aggregator,
        )
    };
    let (one, two) = (tail(1)?, tail(2)?);
    Ok(BundleCosts {
        head_seconds: head,
        tail_one_view_seconds: one,
        tail_per_view_seconds: (two - one).max(0.0),
        frame_bytes: m.link_budget.bytes_per_view_per_frame as u64,
    })
}

/// Loads a hardware profile: `headset` (the preset) or a TOML file.
pub fn load_profile(spec: &str) -> anyhow::Result<HardwareProfile> {
    let text = if spec == "headset" {
        splitnets_cost_model::profile::presets::HEADSET.to_string()
    } else {
        std::fs::read_to_string(Path::new(spec))
            .with_context(|| format!("reading profile {spec}"))?
    };
    let p: HardwareProfile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "profile {spec}: {}",
            e.to_string().trim().replace('\n', " ")
        )
    })?;
    p.validate()?;
    Ok(p)
}
