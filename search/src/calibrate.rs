//! Calibration: measures this machine with ONNX Runtime and fits per-op-class throughput.
//!
//! Single-op models of each class at several sizes are timed (median of repeated runs, one
//! intra-op thread, as a sensor runs); per class a least-squares line `time = overhead + work /
//! throughput` is fitted. Held-out models (not used in the fit) are then predicted node by node
//! and compared with their measured whole-model time.

use std::time::Instant;

use prost::Message;
use splitnets_camera::rig::SplitMix64;
use splitnets_cost_model::graph::{OpClass, analyze};
use splitnets_cost_model::profile::ClassThroughput;
use splitnets_onnx::{self as onnx, Dim, GraphProto, ModelProto};
use splitnets_runtime::onnx_runtime::{MultiIoModel, NamedTensor, SessionOptions};

/// Median seconds of one run of `model` on random inputs.
pub fn time_model(model: &ModelProto, repeats: usize) -> anyhow::Result<f64> {
    let spec = onnx::cost_graph(model)?;
    let g = analyze(&spec, &Default::default())?;
    let mut rng = SplitMix64::new(3);
    let inputs: Vec<NamedTensor> = g
        .inputs
        .iter()
        .map(|&t| {
            let i = &g.tensors[t];
            NamedTensor {
                name: i.name.clone(),
                shape: i.shape.clone(),
                data: (0..i.shape.iter().product::<usize>())
                    .map(|_| rng.next_f64() as f32)
                    .collect(),
            }
        })
        .collect();
    let mut m = MultiIoModel::from_bytes(
        "calibration",
        &model.encode_to_vec(),
        SessionOptions::default(),
        true,
    )?;
    for _ in 0..3 {
        m.run(&inputs)?;
    }
    let mut t: Vec<f64> = (0..repeats)
        .map(|_| {
            let s = Instant::now();
            m.run(&inputs).map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn rand_init(rng: &mut SplitMix64, name: &str, dims: &[i64]) -> onnx::TensorProto {
    let n: i64 = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.next_f64() as f32 - 0.5) * 0.1)
        .collect();
    onnx::float_initializer(name, dims, &v)
}

fn one_op(
    op: &str,
    input: &[i64],
    nodes_attrs: Vec<onnx::AttributeProto>,
    weights: &[(&str, Vec<i64>)],
    out: &[i64],
    extra_inputs: &[&str],
) -> ModelProto {
    let mut rng = SplitMix64::new(11);
    let mut inputs = vec!["x"];
    inputs.extend(weights.iter().map(|(n, _)| *n));
    inputs.extend(extra_inputs);
    let graph = GraphProto {
        name: Some(format!("calib_{op}")),
        node: vec![onnx::node(op, "n", &inputs, &["y"], nodes_attrs)],
        initializer: weights
            .iter()
            .map(|(n, d)| rand_init(&mut rng, n, d))
            .collect(),
        input: vec![onnx::float_value_info(
            "x",
            &input.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>(),
        )],
        output: vec![onnx::float_value_info(
            "y",
            &out.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>(),
        )],
        ..Default::default()
    };
    onnx::model(graph, "calibration micro-model")
}

/// A chain of `k` Relu nodes on a tiny tensor: its time is the runtime's per-run overhead plus
/// `k` per-node overheads, with next to no work.
pub fn relu_chain(k: usize) -> ModelProto {
    let names: Vec<String> = (0..=k)
        .map(|i| {
            if i == 0 {
                "x".into()
            } else if i == k {
                "y".into()
            } else {
                format!("t{i}")
            }
        })
        .collect();
    let graph = GraphProto {
        name: Some(format!("calib_chain_{k}")),
        node: (0..k)
            .map(|i| {
                onnx::node(
                    "Relu",
                    &format!("r{i}"),
                    &[&names[i]],
                    &[&names[i + 1]],
                    vec![],
                )
            })
            .collect(),
        input: vec![onnx::float_value_info("x", &[Dim::Fixed(1), Dim::Fixed(8)])],
        output: vec![onnx::float_value_info("y", &[Dim::Fixed(1), Dim::Fixed(8)])],
        ..Default::default()
    };
    onnx::model(graph, "calibration chain")
}

/// The micro-models: (class, model) at several sizes.
pub fn micro_models() -> Vec<(OpClass, ModelProto)> {
    let mut v = Vec::new();
    for &(c, hw, m, k) in &[
        (8, 56, 16, 3),
        (16, 28, 32, 3),
        (32, 28, 64, 3),
        (64, 14, 128, 3),
        (16, 56, 16, 1),
        (64, 28, 64, 1),
        (3, 112, 16, 3),
        (128, 14, 128, 3),
        (192, 28, 64, 1),
        (480, 14, 192, 1),
        (16, 28, 32, 5),
        (32, 14, 96, 5),
    ] {
        let p = k / 2;
        v.push((
            OpClass::Conv,
            one_op(
                "Conv",
                &[1, c, hw, hw],
                vec![
                    onnx::attr_ints("kernel_shape", &[k, k]),
                    onnx::attr_ints("pads", &[p, p, p, p]),
                ],
                &[("w", vec![m, c, k, k]), ("b", vec![m])],
                &[1, m, hw, hw],
                &[],
            ),
        ));
    }
    for &(c, hw) in &[(16, 56), (32, 28), (64, 28), (128, 14), (256, 7)] {
        v.push((
            OpClass::DepthwiseConv,
            one_op(
                "Conv",
                &[1, c, hw, hw],
                vec![
                    onnx::attr_ints("kernel_shape", &[3, 3]),
                    onnx::attr_ints("pads", &[1, 1, 1, 1]),
                    onnx::attr_int("group", c),
                ],
                &[("w", vec![c, 1, 3, 3]), ("b", vec![c])],
                &[1, c, hw, hw],
                &[],
            ),
        ));
    }
    for &(k, n) in &[
        (256, 128),
        (512, 256),
        (1024, 1000),
        (2048, 1000),
        (128, 10),
    ] {
        v.push((
            OpClass::Gemm,
            one_op(
                "Gemm",
                &[1, k],
                vec![],
                &[("w", vec![k, n]), ("b", vec![n])],
                &[1, n],
                &[],
            ),
        ));
    }
    for &(c, hw) in &[(16, 56), (64, 28), (128, 28), (256, 14)] {
        v.push((
            OpClass::Pool,
            one_op(
                "MaxPool",
                &[1, c, hw, hw],
                vec![
                    onnx::attr_ints("kernel_shape", &[2, 2]),
                    onnx::attr_ints("strides", &[2, 2]),
                ],
                &[],
                &[1, c, hw / 2, hw / 2],
                &[],
            ),
        ));
        v.push((
            OpClass::Elementwise,
            one_op("Relu", &[1, c, hw, hw], vec![], &[], &[1, c, hw, hw], &[]),
        ));
        v.push((
            OpClass::Normalization,
            one_op(
                "BatchNormalization",
                &[1, c, hw, hw],
                vec![],
                &[
                    ("s", vec![c]),
                    ("bb", vec![c]),
                    ("mu", vec![c]),
                    ("var", vec![c]),
                ],
                &[1, c, hw, hw],
                &[],
            ),
        ));
        v.push((
            OpClass::Softmax,
            one_op(
                "Softmax",
                &[1, c * hw * hw],
                vec![onnx::attr_int("axis", 1)],
                &[],
                &[1, c * hw * hw],
                &[],
            ),
        ));
        v.push((
            OpClass::Reduce,
            one_op(
                "ReduceMean",
                &[1, c, hw, hw],
                vec![
                    onnx::attr_ints("axes", &[2, 3]),
                    onnx::attr_int("keepdims", 1),
                ],
                &[],
                &[1, c, 1, 1],
                &[],
            ),
        ));
        v.push((
            OpClass::LocalResponseNorm,
            one_op(
                "LRN",
                &[1, c, hw, hw],
                vec![onnx::attr_int("size", 5)],
                &[],
                &[1, c, hw, hw],
                &[],
            ),
        ));
        v.push((
            OpClass::Pool,
            one_op(
                "MaxPool",
                &[1, c, hw, hw],
                vec![
                    onnx::attr_ints("kernel_shape", &[3, 3]),
                    onnx::attr_ints("pads", &[1, 1, 1, 1]),
                ],
                &[],
                &[1, c, hw, hw],
                &[],
            ),
        ));
        v.push((
            OpClass::DataMovement,
            one_op(
                "Transpose",
                &[1, c, hw, hw],
                vec![onnx::attr_ints("perm", &[0, 2, 3, 1])],
                &[],
                &[1, hw, hw, c],
                &[],
            ),
        ));
    }
    v
}

/// Least-squares fit of `time = a + b · work`; returns (a ≥ 0, b > 0).
fn fit_line(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = if sxx > 0.0 {
        sxy / sxx
    } else {
        my / mx.max(1.0)
    };
    let a = my - b * mx;
    if a < 0.0 || b <= 0.0 {
        // Fall back to a line through the origin.
        let b0 = points.iter().map(|p| p.0 * p.1).sum::<f64>()
            / points.iter().map(|p| p.0 * p.0).sum::<f64>().max(1e-30);
        return (0.0, b0.max(1e-18));
    }
    (a, b)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    pub throughput: Vec<(String, f64)>,
    pub per_node_overhead_seconds: f64,
    pub per_run_overhead_seconds: f64,
    pub samples: usize,
}

/// Times the micro-models and fits throughput per class. Classes without samples (resize) take
/// the element-wise rate.
pub fn calibrate(
    repeats: usize,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<(ClassThroughput, f64, Calibration)> {
    let models = micro_models();
    let mut by_class: std::collections::BTreeMap<OpClass, Vec<(f64, f64)>> = Default::default();
    for (i, (class, m)) in models.iter().enumerate() {
        progress(i, models.len());
        let g = analyze(&onnx::cost_graph(m)?, &Default::default())?;
        let work = g.total_macs() as f64;
        by_class
            .entry(*class)
            .or_default()
            .push((work, time_model(m, repeats)?));
    }
    let mut thr = ClassThroughput {
        conv: 0.0,
        depthwise_conv: 0.0,
        gemm: 0.0,
        pool: 0.0,
        elementwise: 0.0,
        normalization: 0.0,
        data_movement: 0.0,
        resize: 0.0,
        reduce: 0.0,
        softmax: 0.0,
        local_response_norm: 0.0,
    };
    for (class, pts) in &by_class {
        let (_, b) = fit_line(pts);
        thr.set(*class, 1.0 / b);
    }
    thr.resize = thr.elementwise;
    // Overheads from Relu chains of 1..16 nodes: slope per node, intercept per run.
    let mut chain = Vec::new();
    for k in [1usize, 2, 4, 8, 16] {
        chain.push((k as f64, time_model(&relu_chain(k), repeats)?));
    }
    let (per_run, per_node) = fit_line(&chain);
    let overhead = per_node;
    let report = Calibration {
        throughput: OpClass::ALL
            .iter()
            .map(|c| (c.name().to_string(), thr.get(*c)))
            .collect(),
        per_node_overhead_seconds: overhead,
        per_run_overhead_seconds: per_run,
        samples: models.len(),
    };
    Ok((thr, overhead, report))
}

#[cfg(test)]
mod tests {
    use super::fit_line;

    #[test]
    fn fit_line_recovers_an_exact_line() {
        let pts: Vec<(f64, f64)> = [1.0, 2.0, 5.0, 9.0]
            .iter()
            .map(|&x| (x, 3e-6 + 2e-9 * x))
            .collect();
        let (a, b) = fit_line(&pts);
        assert!((a - 3e-6).abs() < 1e-12, "intercept {a}");
        assert!((b - 2e-9).abs() < 1e-15, "slope {b}");
    }

    #[test]
    fn a_negative_intercept_falls_back_to_a_line_through_the_origin() {
        // Least squares gives y = -1 + 2x here; time cannot be negative at zero work.
        let pts = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0)];
        let (a, b) = fit_line(&pts);
        assert_eq!(a, 0.0);
        // Through the origin: b = Σxy / Σx² = (1 + 6 + 15) / 14.
        assert!((b - 22.0 / 14.0).abs() < 1e-12, "slope {b}");
    }
}
