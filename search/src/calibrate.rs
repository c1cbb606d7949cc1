//! Calibration: measures this machine with ONNX Runtime and fits a cost per op class.
//!
//! Synthetic micro-models (single ops of every class at shapes that span what CNNs use: stems
//! with 3-channel 7×7 and 11×11 strided kernels, 1×1, 3×3 and 5×5 convolutions over narrow and
//! wide channel counts, grouped convolutions, fully connected layers whose weights fit in cache
//! and ones that do not, and two-input element-wise ops, pools, concatenations...) are timed with
//! one intra-op thread, as a sensor runs, in several round-robin passes (median of each pass,
//! median over passes: a burst of load on the machine moves one pass, not the result). Per class
//! a non-negative least-squares fit on relative error gives
//! `time = MACs / rate + nodes · s_node + activation bytes · s_act + weight bytes · s_weight`
//! (see [`ComputeProfile`]). Chains of 1–16 tiny Relus give the per-run and per-node overhead.
//! Held-out models (never used in the fit) are then predicted with the cost model
//! ([`SideWork::seconds`], epilogue fusion included) and compared with their measured time.

use std::time::Instant;

use prost::Message;
use splitnets_camera::rig::SplitMix64;
use splitnets_cost_model::graph::{AnalyzedGraph, OpClass, analyze};
use splitnets_cost_model::profile::{ClassCoefficients, ClassThroughput, ComputeProfile};
use splitnets_cost_model::split::{SideWork, summarize};
use splitnets_onnx::{self as onnx, Dim, GraphProto, ModelProto, NodeProto};
use splitnets_runtime::onnx_runtime::{MultiIoModel, NamedTensor, SessionOptions};

/// How models are timed: `passes` round-robin passes over all models; in each pass a model runs
/// once untimed, then at least `min_runs` times and for at least `min_seconds`; a pass's value
/// is the median of its runs, the result the median over passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub passes: usize,
    pub min_runs: usize,
    pub min_seconds: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            passes: 7,
            min_runs: 3,
            min_seconds: 0.02,
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A model loaded in ONNX Runtime (graph optimizations on, 1 intra-op thread) with random inputs.
struct Loaded {
    session: MultiIoModel,
    inputs: Vec<NamedTensor>,
}

impl Loaded {
    fn new(model: &ModelProto) -> anyhow::Result<Self> {
        let g = analyze(&onnx::cost_graph(model)?, &Default::default())?;
        let mut rng = SplitMix64::new(3);
        let inputs = g
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
        let session = MultiIoModel::from_bytes(
            "calibration",
            &model.encode_to_vec(),
            SessionOptions::default(),
            true,
        )?;
        Ok(Self { session, inputs })
    }
    fn run(&mut self) -> anyhow::Result<f64> {
        let s = Instant::now();
        self.session.run(&self.inputs)?;
        Ok(s.elapsed().as_secs_f64())
    }
    /// One pass: a warm-up run, then the median of at least `min_runs` runs lasting at least
    /// `min_seconds` together.
    fn pass(&mut self, t: &Timing) -> anyhow::Result<f64> {
        self.run()?;
        let mut v = Vec::new();
        let mut total = 0.0;
        while v.len() < t.min_runs.max(1) || total < t.min_seconds {
            let s = self.run()?;
            total += s;
            v.push(s);
        }
        Ok(median(&mut v))
    }
}

/// Seconds of one run of each model, measured as [`Timing`] says (models interleaved).
/// `progress(pass, passes)` is called before each pass.
pub fn time_models(
    models: &[ModelProto],
    t: &Timing,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Vec<f64>> {
    let mut loaded: Vec<Loaded> = models.iter().map(Loaded::new).collect::<Result<_, _>>()?;
    let mut per_pass = vec![Vec::with_capacity(t.passes); models.len()];
    for p in 0..t.passes.max(1) {
        progress(p, t.passes.max(1));
        // Alternate the order so that no model always follows the same neighbour.
        let order: Vec<usize> = if p % 2 == 0 {
            (0..models.len()).collect()
        } else {
            (0..models.len()).rev().collect()
        };
        for i in order {
            per_pass[i].push(loaded[i].pass(t)?);
        }
    }
    Ok(per_pass.iter_mut().map(|v| median(v)).collect())
}

/// Seconds of one run of `model`, measured as [`Timing`] says.
pub fn time_model(model: &ModelProto, t: &Timing) -> anyhow::Result<f64> {
    Ok(time_models(std::slice::from_ref(model), t, |_, _| {})?[0])
}

fn rand_init(rng: &mut SplitMix64, name: &str, dims: &[i64]) -> onnx::TensorProto {
    let n: i64 = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.next_f64() as f32 - 0.5) * 0.1)
        .collect();
    onnx::float_initializer(name, dims, &v)
}

fn value_info(name: &str, dims: &[i64]) -> onnx::ValueInfoProto {
    onnx::float_value_info(
        name,
        &dims.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>(),
    )
}

/// A model of `nodes` with float inputs `inputs` (name, shape), random weights `weights` and
/// output `y` of shape `out`.
fn graph_model(
    name: &str,
    nodes: Vec<NodeProto>,
    inputs: &[(&str, Vec<i64>)],
    weights: &[(String, Vec<i64>)],
    out: &[i64],
) -> ModelProto {
    let mut rng = SplitMix64::new(11);
    let graph = GraphProto {
        name: Some(format!("calib_{name}")),
        node: nodes,
        initializer: weights
            .iter()
            .map(|(n, d)| rand_init(&mut rng, n, d))
            .collect(),
        input: inputs.iter().map(|(n, d)| value_info(n, d)).collect(),
        output: vec![value_info("y", out)],
        ..Default::default()
    };
    onnx::model(graph, "calibration micro-model")
}

fn one_op(
    op: &str,
    input: &[i64],
    attrs: Vec<onnx::AttributeProto>,
    weights: &[(&str, Vec<i64>)],
    out: &[i64],
) -> ModelProto {
    let mut names = vec!["x"];
    names.extend(weights.iter().map(|(n, _)| *n));
    graph_model(
        op,
        vec![onnx::node(op, "n", &names, &["y"], attrs)],
        &[("x", input.to_vec())],
        &weights
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect::<Vec<_>>(),
        out,
    )
}

/// A convolution of `c` → `m` channels on `hw`×`hw`, kernel `k`, stride `s`, `g` groups, "same"
/// padding.
pub fn conv(c: i64, m: i64, hw: i64, k: i64, s: i64, g: i64) -> ModelProto {
    let p = k / 2;
    let o = (hw + 2 * p - k) / s + 1;
    let mut model = one_op(
        "Conv",
        &[1, c, hw, hw],
        vec![
            onnx::attr_ints("kernel_shape", &[k, k]),
            onnx::attr_ints("pads", &[p, p, p, p]),
            onnx::attr_ints("strides", &[s, s]),
            onnx::attr_int("group", g),
        ],
        &[("w", vec![m, c / g, k, k]), ("b", vec![m])],
        &[1, m, o, o],
    );
    rename(&mut model, format!("conv{k}x{k}s{s}g{g}_{c}to{m}_{hw}"));
    model
}

/// A chain of `n` identical convolutions `c` → `c` on `hw`×`hw`, kernel `k`, `g` groups, "same"
/// padding: inside the chain the blocked layout is kept, as in a real network.
pub fn conv_chain(c: i64, hw: i64, k: i64, g: i64, n: usize) -> ModelProto {
    let p = k / 2;
    let name = |i: usize| {
        if i == 0 {
            "x".to_string()
        } else if i == n {
            "y".to_string()
        } else {
            format!("t{i}")
        }
    };
    let nodes = (0..n)
        .map(|i| {
            onnx::node(
                "Conv",
                &format!("c{i}"),
                &[&name(i), &format!("w{i}"), &format!("b{i}")],
                &[&name(i + 1)],
                vec![
                    onnx::attr_ints("kernel_shape", &[k, k]),
                    onnx::attr_ints("pads", &[p, p, p, p]),
                    onnx::attr_int("group", g),
                ],
            )
        })
        .collect();
    let weights: Vec<(String, Vec<i64>)> = (0..n)
        .flat_map(|i| {
            [
                (format!("w{i}"), vec![c, c / g, k, k]),
                (format!("b{i}"), vec![c]),
            ]
        })
        .collect();
    let mut model = graph_model(
        "chain",
        nodes,
        &[("x", vec![1, c, hw, hw])],
        &weights,
        &[1, c, hw, hw],
    );
    rename(&mut model, format!("conv{k}x{k}g{g}_{c}_{hw}_x{n}"));
    model
}

fn rename(m: &mut ModelProto, name: String) {
    if let Some(g) = m.graph.as_mut() {
        g.name = Some(name);
    }
}

/// A fully connected layer `k` → `n` on one row.
pub fn gemm(k: i64, n: i64) -> ModelProto {
    let mut model = one_op(
        "Gemm",
        &[1, k],
        vec![onnx::attr_int("transB", 1)],
        &[("w", vec![n, k]), ("b", vec![n])],
        &[1, n],
    );
    rename(&mut model, format!("gemm_{k}x{n}"));
    model
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

/// The micro-models: (class, model). Shapes are a grid over what image CNNs use, chosen without
/// reference to any particular network.
pub fn micro_models() -> Vec<(OpClass, ModelProto)> {
    let mut v = Vec::new();
    // (in channels, out channels, size, kernel, stride, groups)
    for &(c, m, hw, k, s, g) in &[
        // Stems on a 3-channel image.
        (3, 16, 224, 3, 2, 1),
        (3, 32, 224, 3, 2, 1),
        (3, 64, 224, 7, 2, 1),
        (3, 48, 224, 11, 4, 1),
        (3, 32, 112, 5, 2, 1),
        // 3×3, stride 1, narrow to wide.
        (16, 32, 56, 3, 1, 1),
        (32, 64, 56, 3, 1, 1),
        (64, 64, 56, 3, 1, 1),
        (64, 128, 28, 3, 1, 1),
        (128, 128, 28, 3, 1, 1),
        (160, 32, 28, 3, 1, 1),
        (128, 256, 14, 3, 1, 1),
        (256, 256, 14, 3, 1, 1),
        (384, 384, 7, 3, 1, 1),
        (512, 512, 7, 3, 1, 1),
        (20, 36, 40, 3, 1, 1),
        (40, 80, 20, 3, 1, 1),
        // 3×3, stride 2.
        (32, 64, 112, 3, 2, 1),
        (128, 128, 56, 3, 2, 1),
        (256, 384, 28, 3, 2, 1),
        // 1×1.
        (16, 64, 56, 1, 1, 1),
        (64, 16, 56, 1, 1, 1),
        (64, 256, 56, 1, 1, 1),
        (256, 64, 56, 1, 1, 1),
        (192, 48, 28, 1, 1, 1),
        (128, 512, 28, 1, 1, 1),
        (512, 128, 28, 1, 1, 1),
        (320, 960, 14, 1, 1, 1),
        (1024, 256, 14, 1, 1, 1),
        (640, 1280, 7, 1, 1, 1),
        (2048, 512, 7, 1, 1, 1),
        (24, 40, 30, 1, 1, 1),
        (512, 1024, 28, 1, 2, 1),
        // 5×5.
        (16, 32, 28, 5, 1, 1),
        (32, 96, 28, 5, 1, 1),
        (64, 192, 28, 5, 2, 1),
        (128, 128, 14, 5, 1, 1),
        // Grouped.
        (64, 128, 28, 3, 1, 2),
        (128, 256, 14, 3, 1, 4),
        (240, 240, 28, 1, 1, 3),
        (480, 480, 14, 1, 1, 4),
        (192, 192, 28, 1, 1, 8),
    ] {
        v.push((OpClass::Conv, conv(c, m, hw, k, s, g)));
    }
    // Chains of 4 (activations stay in the blocked layout between them).
    for &(c, hw, k, g) in &[
        (64, 56, 1, 1),
        (128, 28, 1, 1),
        (256, 14, 1, 1),
        (512, 7, 1, 1),
        (32, 56, 3, 1),
        (96, 28, 3, 1),
        (192, 14, 3, 1),
        (240, 14, 1, 3),
    ] {
        v.push((OpClass::Conv, conv_chain(c, hw, k, g, 4)));
    }
    for &(c, hw) in &[(64, 56), (144, 28), (480, 14)] {
        v.push((OpClass::DepthwiseConv, conv_chain(c, hw, 3, c, 4)));
    }
    for &(c, hw, k, s) in &[
        (16, 112, 3, 1),
        (32, 56, 3, 1),
        (96, 56, 3, 2),
        (144, 28, 3, 1),
        (240, 28, 5, 1),
        (384, 14, 3, 1),
        (576, 14, 5, 2),
        (960, 7, 3, 1),
    ] {
        v.push((OpClass::DepthwiseConv, conv(c, c, hw, k, s, c)));
    }
    // Fully connected: weights from 5 kB (in cache) to 150 MB (from memory every run).
    for &(k, n) in &[
        (128, 10),
        (256, 128),
        (512, 256),
        (1024, 1000),
        (1280, 1000),
        (2048, 1000),
        (4096, 1000),
        (2048, 2048),
        (4096, 4096),
        (9216, 4096),
    ] {
        v.push((OpClass::Gemm, gemm(k, n)));
    }
    for &(c, hw) in &[(16, 112), (64, 56), (128, 28), (256, 14), (512, 7)] {
        let x = [1, c, hw, hw];
        let half = [1, c, hw / 2, hw / 2];
        let pool = |op: &str, k: i64, s: i64, p: i64, out: &[i64]| {
            one_op(
                op,
                &x,
                vec![
                    onnx::attr_ints("kernel_shape", &[k, k]),
                    onnx::attr_ints("strides", &[s, s]),
                    onnx::attr_ints("pads", &[p, p, p, p]),
                ],
                &[],
                out,
            )
        };
        v.push((OpClass::Pool, pool("MaxPool", 2, 2, 0, &half)));
        v.push((OpClass::Pool, pool("MaxPool", 3, 1, 1, &x)));
        v.push((OpClass::Pool, pool("AveragePool", 3, 1, 1, &x)));
        v.push((OpClass::Pool, pool("AveragePool", 2, 2, 0, &half)));
        v.push((
            OpClass::Pool,
            one_op("GlobalAveragePool", &x, vec![], &[], &[1, c, 1, 1]),
        ));
        v.push((OpClass::Elementwise, one_op("Relu", &x, vec![], &[], &x)));
        v.push((
            OpClass::Elementwise,
            graph_model(
                "add",
                vec![onnx::node("Add", "n", &["x", "x2"], &["y"], vec![])],
                &[("x", x.to_vec()), ("x2", x.to_vec())],
                &[],
                &x,
            ),
        ));
        v.push((
            OpClass::Normalization,
            one_op(
                "BatchNormalization",
                &x,
                vec![],
                &[
                    ("s", vec![c]),
                    ("bb", vec![c]),
                    ("mu", vec![c]),
                    ("var", vec![c]),
                ],
                &x,
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
            ),
        ));
        v.push((
            OpClass::Reduce,
            one_op(
                "ReduceMean",
                &x,
                vec![
                    onnx::attr_ints("axes", &[2, 3]),
                    onnx::attr_int("keepdims", 1),
                ],
                &[],
                &[1, c, 1, 1],
            ),
        ));
        v.push((
            OpClass::LocalResponseNorm,
            one_op("LRN", &x, vec![onnx::attr_int("size", 5)], &[], &x),
        ));
        v.push((
            OpClass::DataMovement,
            one_op(
                "Transpose",
                &x,
                vec![onnx::attr_ints("perm", &[0, 2, 3, 1])],
                &[],
                &[1, hw, hw, c],
            ),
        ));
        v.push((
            OpClass::DataMovement,
            graph_model(
                "concat",
                vec![onnx::node(
                    "Concat",
                    "n",
                    &["x", "x2"],
                    &["y"],
                    vec![onnx::attr_int("axis", 1)],
                )],
                &[("x", x.to_vec()), ("x2", x.to_vec())],
                &[],
                &[1, 2 * c, hw, hw],
            ),
        ));
    }
    v
}

/// What a model costs in the cost model's terms, per class: (MACs, nodes, activation bytes,
/// weight bytes), with convolution epilogues fused as ONNX Runtime does.
pub fn features(g: &AnalyzedGraph) -> anyhow::Result<SideWork> {
    Ok(summarize(g, &vec![false; g.nodes.len()])?.aggregator)
}

/// The features the fit may use for a class: 0 MACs, 1 nodes, 2 activation bytes,
/// 3 weight bytes.
/// 4 the bytes of the model's own inputs and outputs: a lone convolution pays ONNX Runtime's
/// layout reorders (NCHW ↔ blocked) at the graph's edges, which a convolution inside a network
/// does not; the fit separates that cost (chains of convolutions tell it apart) and the profile
/// leaves it out.
fn class_features(c: OpClass) -> &'static [usize] {
    match c {
        OpClass::Conv | OpClass::DepthwiseConv => &[0, 1, 2, 3, 4],
        OpClass::Gemm => &[0, 1, 3],
        _ => &[0, 1, 2],
    }
}

fn feature_row(w: &SideWork, boundary_bytes: u64, c: OpClass) -> [f64; 5] {
    let i = c.index();
    let s = &w.shape_by_class[i];
    [
        w.macs_by_class[i] as f64,
        s.nodes as f64,
        s.activation_bytes as f64,
        s.weight_bytes as f64,
        boundary_bytes as f64,
    ]
}

/// Bytes of a graph's inputs and outputs.
fn boundary_bytes(g: &AnalyzedGraph) -> u64 {
    g.inputs
        .iter()
        .chain(&g.outputs)
        .map(|&t| g.tensors[t].bytes)
        .sum()
}

/// Solves the normal equations `a x = b` (n ≤ 4) by Gaussian elimination with partial
/// pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for r in col + 1..n {
            let f = a[r][col] / a[col][col];
            let (top, rest) = a.split_at_mut(r);
            for (x, p) in rest[0][col..n].iter_mut().zip(&top[col][col..n]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// Non-negative least squares on relative error: minimises Σ ((y − x·β) / w)² over β ≥ 0, by
/// trying every subset of the (at most a handful of) columns. Columns are scaled to unit norm
/// first so that features in MACs and in bytes compare. Returns β (one per column).
pub fn fit_nonnegative(rows: &[(Vec<f64>, f64, f64)]) -> Vec<f64> {
    let p = rows.first().map_or(0, |r| r.0.len());
    let scaled: Vec<(Vec<f64>, f64)> = rows
        .iter()
        .map(|(x, y, w)| (x.iter().map(|v| v / w).collect(), y / w))
        .collect();
    let norms: Vec<f64> = (0..p)
        .map(|j| scaled.iter().map(|r| r.0[j] * r.0[j]).sum::<f64>().sqrt())
        .collect();
    let mut best: (f64, Vec<f64>) = (scaled.iter().map(|r| r.1 * r.1).sum::<f64>(), vec![0.0; p]);
    for mask in 1u32..(1 << p) {
        let cols: Vec<usize> = (0..p)
            .filter(|&j| mask & (1 << j) != 0 && norms[j] > 0.0)
            .collect();
        if cols.len() != mask.count_ones() as usize {
            continue;
        }
        let a: Vec<Vec<f64>> = cols
            .iter()
            .map(|&i| {
                cols.iter()
                    .map(|&j| {
                        scaled
                            .iter()
                            .map(|r| r.0[i] / norms[i] * r.0[j] / norms[j])
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let b: Vec<f64> = cols
            .iter()
            .map(|&i| scaled.iter().map(|r| r.0[i] / norms[i] * r.1).sum())
            .collect();
        let Some(x) = solve(a, b) else { continue };
        if x.iter().any(|&v| v < 0.0) {
            continue;
        }
        let mut beta = vec![0.0; p];
        for (k, &j) in cols.iter().enumerate() {
            beta[j] = x[k] / norms[j];
        }
        let sse: f64 = scaled
            .iter()
            .map(|r| {
                let pred: f64 = r.0.iter().zip(&beta).map(|(a, b)| a * b).sum();
                (r.1 - pred).powi(2)
            })
            .sum();
        if sse < best.0 * (1.0 - 1e-12) {
            best = (sse, beta);
        }
    }
    best.1
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
    /// Median and largest relative error of the fit on the micro-models themselves.
    pub fit_median_error: f64,
    pub fit_max_error: f64,
    /// Per micro-model: name, measured and predicted seconds.
    pub fit: Vec<(String, f64, f64)>,
}

/// What [`calibrate`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Loading the micro-models into ONNX Runtime.
    Loading { models: usize },
    /// Starting timing pass `pass` (from 0) of `passes` over all micro-models.
    Pass { pass: usize, passes: usize },
}

/// Times the micro-models and fits the cost per class: a [`ComputeProfile`] (memory and energy
/// left at 0) and a report. Classes without samples (resize) take the element-wise terms.
///
/// `held_out` models (never used in the fit) are timed in the same round-robin passes as the
/// micro-models, and their seconds returned: a shared machine's throughput drifts by several
/// per cent over a minute, and timing the check apart from the fit put that drift into the
/// held-out error (three quiet runs timed apart: MAPE 2.2 / 5.4 / 2.7 %).
pub fn calibrate(
    timing: &Timing,
    held_out: &[ModelProto],
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<(ComputeProfile, Calibration, Vec<f64>)> {
    let micro = micro_models();
    let chains: Vec<usize> = vec![1, 2, 4, 8, 16];
    let mut models: Vec<ModelProto> = micro.iter().map(|(_, m)| m.clone()).collect();
    models.extend(chains.iter().map(|&k| relu_chain(k)));
    let fitted = models.len();
    models.extend(held_out.iter().cloned());
    progress(Progress::Loading {
        models: models.len(),
    });
    let times = time_models(&models, timing, |pass, passes| {
        progress(Progress::Pass { pass, passes });
    })?;
    let (times, held_out_t) = times.split_at(fitted);
    let held_out_seconds = held_out_t.to_vec();
    let (micro_t, chain_t) = times.split_at(micro.len());
    // Overheads from Relu chains of 1..16 nodes: slope per node, intercept per run.
    let chain_pts: Vec<(f64, f64)> = chains
        .iter()
        .zip(chain_t)
        .map(|(&k, &t)| (k as f64, t))
        .collect();
    let (per_run, per_node) = fit_line(&chain_pts);

    let mut profile = ComputeProfile {
        macs_per_second: ClassThroughput {
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
        },
        per_node_overhead_seconds: per_node,
        per_run_overhead_seconds: per_run,
        memory_bytes: 0,
        energy_per_mac_joules: 0.0,
        // ONNX Runtime folds Conv epilogues at the optimization level the daemons use.
        fuses_conv_epilogues: true,
        seconds_per_node: ClassCoefficients::default(),
        seconds_per_activation_byte: ClassCoefficients::default(),
        seconds_per_weight_byte: ClassCoefficients::default(),
    };
    let mut work: Vec<SideWork> = Vec::new();
    let mut edges: Vec<u64> = Vec::new();
    for (_, m) in &micro {
        let g = analyze(&onnx::cost_graph(m)?, &Default::default())?;
        work.push(features(&g)?);
        edges.push(boundary_bytes(&g));
    }
    let mut edge_cost = [0.0; OpClass::ALL.len()];
    for class in OpClass::ALL {
        let cols = class_features(class);
        let rows: Vec<(Vec<f64>, f64, f64)> = micro
            .iter()
            .zip(work.iter().zip(&edges))
            .zip(micro_t)
            .filter(|(((c, _), _), _)| *c == class)
            .map(|(((_, _), (w, &e)), &t)| {
                let f = feature_row(w, e, class);
                let base = per_run + w.nodes as f64 * per_node;
                // Relative error for every class but fully connected layers: at batch 1 they
                // stream their weights, and in a real model (megabytes of other weights between
                // two runs) even the small ones come from memory; the largest micro-models,
                // far beyond any cache, set their rate (absolute error).
                let weight = if class == OpClass::Gemm { 1e-3 } else { t };
                (cols.iter().map(|&j| f[j]).collect(), t - base, weight)
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let beta = fit_nonnegative(&rows);
        let mut coef = [0.0; 5];
        for (k, &j) in cols.iter().enumerate() {
            coef[j] = beta[k];
        }
        edge_cost[class.index()] = coef[4];
        // A class whose time no MAC term explains still needs a finite rate.
        profile.macs_per_second.set(class, 1.0 / coef[0].max(1e-15));
        profile.seconds_per_node.set(class, coef[1]);
        profile.seconds_per_activation_byte.set(class, coef[2]);
        profile.seconds_per_weight_byte.set(class, coef[3]);
    }
    let e = OpClass::Elementwise;
    profile
        .macs_per_second
        .set(OpClass::Resize, profile.macs_per_second.get(e));
    profile
        .seconds_per_node
        .set(OpClass::Resize, profile.seconds_per_node.get(e));
    profile
        .seconds_per_activation_byte
        .set(OpClass::Resize, profile.seconds_per_activation_byte.get(e));
    // The fit on the micro-models themselves, their edge reorders included.
    let fitted: Vec<f64> = micro
        .iter()
        .zip(work.iter().zip(&edges))
        .map(|((c, _), (w, &e))| w.seconds(&profile) + e as f64 * edge_cost[c.index()])
        .collect();
    let mut errs: Vec<f64> = fitted
        .iter()
        .zip(micro_t)
        .map(|(p, &t)| (p - t).abs() / t)
        .collect();
    let fit_max_error = errs.iter().copied().fold(0.0, f64::max);
    let fit = micro
        .iter()
        .zip(&fitted)
        .zip(micro_t)
        .map(|(((_, m), &p), &t)| {
            let name = m.graph.as_ref().map_or("", |g| g.name()).to_string();
            (name, t, p)
        })
        .collect();
    let report = Calibration {
        throughput: OpClass::ALL
            .iter()
            .map(|c| (c.name().to_string(), profile.macs_per_second.get(*c)))
            .collect(),
        per_node_overhead_seconds: per_node,
        per_run_overhead_seconds: per_run,
        samples: micro.len(),
        fit_median_error: median(&mut errs),
        fit_max_error,
        fit,
    };
    Ok((profile, report, held_out_seconds))
}

#[cfg(test)]
mod tests {
    use super::{fit_line, fit_nonnegative, median};

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

    #[test]
    fn nonnegative_fit_recovers_exact_coefficients_of_mixed_scale_features() {
        // time = MACs / 5e10 + 2 µs per node + bytes / 8e9, features spanning 6 orders of
        // magnitude (MACs ~1e8, nodes 1, bytes ~1e6).
        let truth = [2e-11, 2e-6, 1.25e-10];
        let rows: Vec<(Vec<f64>, f64, f64)> = [
            (1e8, 1.0, 4e5),
            (3e8, 1.0, 2e6),
            (2e7, 1.0, 5e6),
            (9e8, 1.0, 1e5),
            (5e6, 1.0, 3e5),
        ]
        .iter()
        .map(|&(m, n, b)| {
            let x = vec![m, n, b];
            let y: f64 = x.iter().zip(&truth).map(|(a, b)| a * b).sum();
            (x, y, y)
        })
        .collect();
        let beta = fit_nonnegative(&rows);
        for (b, t) in beta.iter().zip(&truth) {
            assert!((b - t).abs() < 1e-6 * t, "{beta:?} vs {truth:?}");
        }
    }

    #[test]
    fn nonnegative_fit_drops_a_feature_that_would_come_out_negative() {
        // y = 2·x0 − 0.5·x1 exactly, which least squares would reproduce; with β ≥ 0 the best
        // is x0 alone (x1 set to 0).
        let rows: Vec<(Vec<f64>, f64, f64)> = [(1.0, 1.0), (2.0, 1.0), (3.0, 4.0), (5.0, 2.0)]
            .iter()
            .map(|&(a, b)| (vec![a, b], 2.0 * a - 0.5 * b, 1.0))
            .collect();
        let beta = fit_nonnegative(&rows);
        assert_eq!(beta[1], 0.0);
        assert!(beta[0] > 0.0);
        // Only x0: β0 = Σ x0·y / Σ x0².
        let (sxy, sxx) = rows.iter().fold((0.0, 0.0), |(a, b), r| {
            (a + r.0[0] * r.1, b + r.0[0] * r.0[0])
        });
        assert!((beta[0] - sxy / sxx).abs() < 1e-12);
    }

    #[test]
    fn relative_weights_favour_small_models() {
        // Two points that disagree: weighting by the point's own time makes the small one count
        // as much as the large one, so neither dominates as in absolute least squares.
        let rows = vec![(vec![1.0], 2.0, 2.0), (vec![100.0], 100.0, 100.0)];
        let beta = fit_nonnegative(&rows)[0];
        // Minimises (1 − β/2)² + (1 − β)²: β = 1.2.
        assert!((beta - 1.2).abs() < 1e-12, "{beta}");
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
