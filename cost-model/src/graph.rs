//! Graph analysis: every tensor's shape from the input shapes, and per node its multiply-
//! accumulates, parameter bytes, output bytes and op class.
//!
//! The graph arrives in a small neutral form ([`GraphSpec`]) so this crate needs neither protobuf
//! nor files; `splitnets_onnx::cost_graph` converts an ONNX model into it.
//!
//! Nodes whose inputs are all constant (weights made by `ConstantOfShape`, `Unsqueeze` of a
//! weight, `Shape` of a known shape, ...) are folded: their outputs are constants, they are not
//! compute nodes, and they never cross a cut.

use std::collections::{BTreeMap, HashMap};

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Str(String),
    /// A tensor attribute (e.g. `Constant.value`): dims and, for integer tensors, values.
    Tensor(ConstTensor),
    Other,
}

/// A constant tensor: its dims, element size and, when integral and small, its values.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstTensor {
    pub dims: Vec<usize>,
    pub elem_bytes: usize,
    pub int_values: Option<Vec<i64>>,
    /// Values of small float tensors (scales, ...).
    pub float_values: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Attr>,
}

/// A model graph in neutral form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphSpec {
    /// Data inputs with their dims (`None`: symbolic).
    pub inputs: Vec<(String, Vec<Option<usize>>)>,
    /// Element size of each data input in bytes.
    pub input_elem_bytes: Vec<usize>,
    pub outputs: Vec<String>,
    pub constants: HashMap<String, ConstTensor>,
    pub nodes: Vec<NodeSpec>,
}

/// What kind of work a node does; hardware throughput is given per class.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    Conv,
    DepthwiseConv,
    Gemm,
    Pool,
    Elementwise,
    Normalization,
    DataMovement,
    Resize,
    Reduce,
    Softmax,
    /// Local response normalization: a windowed sum of squares and a power per element.
    LocalResponseNorm,
}

impl OpClass {
    pub const ALL: [OpClass; 11] = [
        OpClass::Conv,
        OpClass::DepthwiseConv,
        OpClass::Gemm,
        OpClass::Pool,
        OpClass::Elementwise,
        OpClass::Normalization,
        OpClass::DataMovement,
        OpClass::Resize,
        OpClass::Reduce,
        OpClass::Softmax,
        OpClass::LocalResponseNorm,
    ];
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn name(self) -> &'static str {
        match self {
            OpClass::Conv => "conv",
            OpClass::DepthwiseConv => "depthwise_conv",
            OpClass::Gemm => "gemm",
            OpClass::Pool => "pool",
            OpClass::Elementwise => "elementwise",
            OpClass::Normalization => "normalization",
            OpClass::DataMovement => "data_movement",
            OpClass::Resize => "resize",
            OpClass::Reduce => "reduce",
            OpClass::Softmax => "softmax",
            OpClass::LocalResponseNorm => "local_response_norm",
        }
    }
}

/// A compute node after analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCost {
    /// Index of the node in [`GraphSpec::nodes`] (the model's node list).
    pub spec_index: usize,
    pub name: String,
    pub op_type: String,
    pub class: OpClass,
    /// Multiply-accumulates (for non-arithmetic classes: elements touched).
    pub macs: u64,
    /// Bytes of constant inputs (weights, biases, ...).
    pub param_bytes: u64,
    /// Bytes of all outputs.
    pub output_bytes: u64,
    /// Bytes of the data (non-constant) inputs.
    pub input_bytes: u64,
    /// Data (non-constant) input tensor ids and output tensor ids.
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// A convolution epilogue (BatchNorm, activation, constant Mul/Add) right after a Conv, alone
    /// on its input: runtimes such as ONNX Runtime fold it into the Conv.
    pub conv_epilogue: bool,
}

/// A data tensor after analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: u64,
    /// Producing compute node; `None` for graph inputs.
    pub producer: Option<usize>,
    pub consumers: Vec<usize>,
    pub is_graph_output: bool,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64
    }
}

/// The analysed graph: compute nodes in topological order and the data tensors between them.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzedGraph {
    pub nodes: Vec<NodeCost>,
    /// Indices in [`GraphSpec::nodes`] of the folded constant nodes.
    pub constant_nodes: Vec<usize>,
    pub tensors: Vec<TensorInfo>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// Constants computed from data tensors' static shapes (`Shape` of an activation and the
    /// integer arithmetic on it, as exported graphs write a flatten), by output name, with
    /// their values for the analysed input shapes. A split model carries them as initializers
    /// instead of the nodes that computed them: the activation they were computed from may be on
    /// the other side of the cut.
    pub shape_constants: BTreeMap<String, ConstTensor>,
    /// Data inputs whose symbolic leading (batch) dimension was taken as 1.
    pub batch_taken_as_one: Vec<String>,
}

impl AnalyzedGraph {
    pub fn total_macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.macs).sum()
    }
    pub fn tensor_id(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("unsupported op {op} at node {node:?}")]
    UnsupportedOp { op: String, node: String },
    #[error(
        "input {tensor:?} has symbolic dimensions at positions {positions:?} (dims {dims:?}, None = symbolic) and no shape was given for it; a symbolic leading batch dimension alone is taken as 1, others need the input's full shape"
    )]
    DynamicShape {
        tensor: String,
        dims: Vec<Option<usize>>,
        positions: Vec<usize>,
    },
    #[error("node {node:?} ({op}): {reason}")]
    Shape {
        node: String,
        op: String,
        reason: String,
    },
    #[error("tensor {tensor:?} used by node {node:?} is produced by no node, input or initializer")]
    Dangling { tensor: String, node: String },
    #[error("the graph has a cycle or a node uses a tensor produced later: {0}")]
    NotADag(String),
}

enum Value {
    Const(ConstTensor),
    Data(Vec<usize>),
}

struct Ctx<'a> {
    node: &'a NodeSpec,
}

impl Ctx<'_> {
    fn err(&self, reason: impl Into<String>) -> GraphError {
        GraphError::Shape {
            node: self.node.name.clone(),
            op: self.node.op_type.clone(),
            reason: reason.into(),
        }
    }
    fn int(&self, k: &str) -> Option<i64> {
        match self.node.attrs.get(k) {
            Some(Attr::Int(v)) => Some(*v),
            _ => None,
        }
    }
    fn ints(&self, k: &str) -> Option<Vec<i64>> {
        match self.node.attrs.get(k) {
            Some(Attr::Ints(v)) => Some(v.clone()),
            _ => None,
        }
    }
    fn floats(&self, k: &str) -> Option<Vec<f32>> {
        match self.node.attrs.get(k) {
            Some(Attr::Floats(v)) => Some(v.clone()),
            _ => None,
        }
    }
    fn string(&self, k: &str) -> Option<String> {
        match self.node.attrs.get(k) {
            Some(Attr::Str(v)) => Some(v.clone()),
            _ => None,
        }
    }
}

fn prod(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

fn broadcast(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max()?;
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

/// Spatial output sizes of a convolution or pooling window.
fn window_out(
    c: &Ctx<'_>,
    spatial: &[usize],
    kernel: &[usize],
    dilations: &[usize],
) -> Result<Vec<usize>, GraphError> {
    let n = spatial.len();
    let strides = c.ints("strides").unwrap_or_else(|| vec![1; n]);
    let pads = c.ints("pads").unwrap_or_else(|| vec![0; 2 * n]);
    let ceil = c.int("ceil_mode").unwrap_or(0) == 1;
    let auto_pad = c.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = strides[i].max(1) as usize;
        let eff = dilations[i] * (kernel[i].max(1) - 1) + 1;
        let o = match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => spatial[i].div_ceil(s),
            "VALID" => (spatial[i].saturating_sub(eff)) / s + 1,
            _ => {
                let padded = spatial[i] as i64 + pads[i] + pads[i + n];
                if padded < eff as i64 {
                    return Err(c.err(format!("window {eff} larger than padded input {padded}")));
                }
                let num = (padded - eff as i64) as usize;
                if ceil {
                    num.div_ceil(s) + 1
                } else {
                    num / s + 1
                }
            }
        };
        out.push(o);
    }
    Ok(out)
}

/// Analyses `g`. `input_shapes` overrides (or resolves symbolic) input dims by name.
pub fn analyze(
    g: &GraphSpec,
    input_shapes: &HashMap<String, Vec<usize>>,
) -> Result<AnalyzedGraph, GraphError> {
    let mut values: HashMap<String, Value> = HashMap::new();
    for (k, v) in &g.constants {
        values.insert(k.clone(), Value::Const(v.clone()));
    }
    let mut tensors: Vec<TensorInfo> = Vec::new();
    let mut tensor_ids: HashMap<String, usize> = HashMap::new();
    let mut inputs = Vec::new();
    let mut batch_taken_as_one = Vec::new();
    for (i, (name, dims)) in g.inputs.iter().enumerate() {
        let shape = match input_shapes.get(name) {
            Some(s) => s.clone(),
            None => {
                let symbolic: Vec<usize> = (0..dims.len()).filter(|&k| dims[k].is_none()).collect();
                if symbolic == [0] {
                    batch_taken_as_one.push(name.clone());
                } else if !symbolic.is_empty() {
                    return Err(GraphError::DynamicShape {
                        tensor: name.clone(),
                        dims: dims.clone(),
                        positions: symbolic,
                    });
                }
                dims.iter().map(|d| d.unwrap_or(1)).collect()
            }
        };
        let eb = g.input_elem_bytes.get(i).copied().unwrap_or(4) as u64;
        tensor_ids.insert(name.clone(), tensors.len());
        inputs.push(tensors.len());
        tensors.push(TensorInfo {
            name: name.clone(),
            bytes: prod(&shape) * eb,
            shape: shape.clone(),
            producer: None,
            consumers: vec![],
            is_graph_output: false,
        });
        values.insert(name.clone(), Value::Data(shape));
    }
    let mut nodes: Vec<NodeCost> = Vec::new();
    let mut constant_nodes = Vec::new();
    let mut shape_constants: BTreeMap<String, ConstTensor> = BTreeMap::new();
    for (spec_index, node) in g.nodes.iter().enumerate() {
        let c = Ctx { node };
        let mut ins: Vec<Option<&Value>> = Vec::new();
        for name in &node.inputs {
            if name.is_empty() {
                ins.push(None);
                continue;
            }
            match values.get(name) {
                Some(v) => ins.push(Some(v)),
                None => {
                    return Err(GraphError::Dangling {
                        tensor: name.clone(),
                        node: node.name.clone(),
                    });
                }
            }
        }
        let all_const = ins
            .iter()
            .all(|v| matches!(v, None | Some(Value::Const(_))));
        // The shape of an activation is known here (input shapes are fixed): `Shape`/`Size` of
        // data fold like constants, and so does everything computed from them.
        let of_shape = matches!(node.op_type.as_str(), "Shape" | "Size")
            && matches!(ins.first(), Some(Some(Value::Data(_))));
        if all_const || of_shape {
            let from_data = of_shape
                || node
                    .inputs
                    .iter()
                    .any(|n| shape_constants.contains_key(n.as_str()));
            let outs = fold_constant(&c, &ins)?;
            for (name, t) in node.outputs.iter().zip(outs) {
                if from_data {
                    shape_constants.insert(name.clone(), t.clone());
                }
                values.insert(name.clone(), Value::Const(t));
            }
            constant_nodes.push(spec_index);
            continue;
        }
        let (class, macs, out_shapes) = infer(&c, &ins)?;
        let mut param_bytes = 0u64;
        let mut data_inputs = Vec::new();
        for (name, v) in node.inputs.iter().zip(&ins) {
            match v {
                Some(Value::Const(t)) => param_bytes += prod(&t.dims) * t.elem_bytes as u64,
                Some(Value::Data(_)) => {
                    let id = tensor_ids[name];
                    if !data_inputs.contains(&id) {
                        data_inputs.push(id);
                    }
                }
                None => {}
            }
        }
        let id = nodes.len();
        let mut outputs = Vec::new();
        let mut output_bytes = 0;
        for (name, shape) in node.outputs.iter().zip(out_shapes) {
            if name.is_empty() {
                continue;
            }
            let bytes = prod(&shape) * 4;
            output_bytes += bytes;
            tensor_ids.insert(name.clone(), tensors.len());
            outputs.push(tensors.len());
            tensors.push(TensorInfo {
                name: name.clone(),
                shape: shape.clone(),
                bytes,
                producer: Some(id),
                consumers: vec![],
                is_graph_output: false,
            });
            values.insert(name.clone(), Value::Data(shape));
        }
        let mut input_bytes = 0;
        for &t in &data_inputs {
            tensors[t].consumers.push(id);
            input_bytes += tensors[t].bytes;
        }
        nodes.push(NodeCost {
            spec_index,
            name: if node.name.is_empty() {
                format!("{}_{id}", node.op_type)
            } else {
                node.name.clone()
            },
            op_type: node.op_type.clone(),
            class,
            macs,
            param_bytes,
            output_bytes,
            input_bytes,
            inputs: data_inputs,
            outputs,
            conv_epilogue: false,
        });
    }
    mark_conv_epilogues(&mut nodes, &tensors);
    let mut outputs = Vec::new();
    for o in &g.outputs {
        let id = *tensor_ids.get(o).ok_or_else(|| {
            GraphError::NotADag(format!(
                "graph output {o:?} is never produced (or is a constant)"
            ))
        })?;
        tensors[id].is_graph_output = true;
        outputs.push(id);
    }
    Ok(AnalyzedGraph {
        nodes,
        constant_nodes,
        tensors,
        inputs,
        outputs,
        shape_constants,
        batch_taken_as_one,
    })
}

const EPILOGUE_OPS: [&str; 9] = [
    "BatchNormalization",
    "Relu",
    "Clip",
    "LeakyRelu",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Mul",
    "Add",
];

fn mark_conv_epilogues(nodes: &mut [NodeCost], tensors: &[TensorInfo]) {
    for i in 0..nodes.len() {
        let n = &nodes[i];
        if !EPILOGUE_OPS.contains(&n.op_type.as_str()) || n.inputs.len() != 1 {
            continue;
        }
        let t = &tensors[n.inputs[0]];
        let Some(p) = t.producer else { continue };
        if t.consumers.len() == 1
            && !t.is_graph_output
            && (nodes[p].op_type == "Conv" || nodes[p].conv_epilogue)
        {
            nodes[i].conv_epilogue = true;
        }
    }
}

fn const_ints(v: Option<&Value>) -> Option<Vec<i64>> {
    match v {
        Some(Value::Const(t)) => t.int_values.clone(),
        _ => None,
    }
}

fn shape_of<'a>(c: &Ctx<'_>, v: Option<&'a Value>) -> Result<&'a [usize], GraphError> {
    match v {
        Some(Value::Data(s)) => Ok(s),
        Some(Value::Const(t)) => Ok(&t.dims),
        None => Err(c.err("missing input")),
    }
}

/// Shapes (and small integer values) of a node whose inputs are all constants.
fn fold_constant(c: &Ctx<'_>, ins: &[Option<&Value>]) -> Result<Vec<ConstTensor>, GraphError> {
    let op = c.node.op_type.as_str();
    let ct = |dims: Vec<usize>, vals: Option<Vec<i64>>| ConstTensor {
        dims,
        elem_bytes: 4,
        int_values: vals,
        float_values: None,
    };
    Ok(match op {
        "Constant" => match c.node.attrs.get("value") {
            Some(Attr::Tensor(t)) => vec![t.clone()],
            _ => match (
                c.node.attrs.get("value_ints"),
                c.node.attrs.get("value_int"),
            ) {
                (Some(Attr::Ints(v)), _) => vec![ConstTensor {
                    dims: vec![v.len()],
                    elem_bytes: 8,
                    int_values: Some(v.clone()),
                    float_values: None,
                }],
                (_, Some(Attr::Int(v))) => vec![ConstTensor {
                    dims: vec![],
                    elem_bytes: 8,
                    int_values: Some(vec![*v]),
                    float_values: None,
                }],
                _ => vec![ct(vec![], None)],
            },
        },
        "ConstantOfShape" => {
            let dims =
                const_ints(ins[0]).ok_or_else(|| c.err("shape input is not a known constant"))?;
            vec![ct(dims.iter().map(|&d| d.max(0) as usize).collect(), None)]
        }
        "Shape" => {
            let s = shape_of(c, ins[0])?;
            // Opset 15: an optional [start, end) range of the dims.
            let r = s.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(c.int("start").unwrap_or(0));
            let end = clampi(c.int("end").unwrap_or(r)).max(start);
            let v: Vec<i64> = s[start..end].iter().map(|&d| d as i64).collect();
            vec![ConstTensor {
                dims: vec![v.len()],
                elem_bytes: 8,
                int_values: Some(v),
                float_values: None,
            }]
        }
        "Size" => vec![ConstTensor {
            dims: vec![],
            elem_bytes: 8,
            int_values: Some(vec![prod(shape_of(c, ins[0])?) as i64]),
            float_values: None,
        }],
        "Gather" => fold_gather(c, ins)?,
        _ => {
            // Any other op on constants: infer its shape as if it were data; values where the op
            // is shape arithmetic on known small values, unknown otherwise.
            let (_, _, shapes) = infer(c, ins)?;
            let mut outs: Vec<ConstTensor> = shapes.into_iter().map(|s| ct(s, None)).collect();
            if let Some(first) = outs.first_mut() {
                fold_values(c, ins, first);
            }
            outs
        }
    })
}

fn const_of(v: Option<&Value>) -> Option<&ConstTensor> {
    match v {
        Some(Value::Const(t)) => Some(t),
        _ => None,
    }
}

/// `Gather` on a constant (shape vectors indexed by position): dims and values.
fn fold_gather(c: &Ctx<'_>, ins: &[Option<&Value>]) -> Result<Vec<ConstTensor>, GraphError> {
    let data = const_of(ins.first().copied().flatten()).ok_or_else(|| c.err("missing data"))?;
    let idx = const_of(ins.get(1).copied().flatten()).ok_or_else(|| c.err("missing indices"))?;
    let rank = data.dims.len().max(1);
    let axis = norm_axis(c.int("axis").unwrap_or(0), rank);
    let mut dims = data.dims[..axis.min(data.dims.len())].to_vec();
    dims.extend(&idx.dims);
    if axis < data.dims.len() {
        dims.extend(&data.dims[axis + 1..]);
    }
    let mut out = ConstTensor {
        dims,
        elem_bytes: data.elem_bytes,
        int_values: None,
        float_values: None,
    };
    // Values only for the 1-D case shapes use.
    if data.dims.len() == 1
        && let Some(ix) = &idx.int_values
    {
        let n = data.dims[0] as i64;
        let pick = |i: i64| (if i < 0 { i + n } else { i }) as usize;
        if ix.iter().all(|&i| pick(i) < data.dims[0]) {
            out.int_values = data
                .int_values
                .as_ref()
                .map(|v| ix.iter().map(|&i| v[pick(i)]).collect());
            out.float_values = data
                .float_values
                .as_ref()
                .map(|v| ix.iter().map(|&i| v[pick(i)]).collect());
        }
    }
    Ok(vec![out])
}

/// Values of `out` (whose dims are set) when the op is shape arithmetic on known values:
/// Identity, Reshape, (Un)squeeze, Cast, Concat, Slice, elementwise arithmetic and the like.
/// Leaves them unknown otherwise.
fn fold_values(c: &Ctx<'_>, ins: &[Option<&Value>], out: &mut ConstTensor) {
    let op = c.node.op_type.as_str();
    let x = const_of(ins.first().copied().flatten());
    let n_out: usize = out.dims.iter().product();
    match op {
        "Identity" | "Reshape" | "Squeeze" | "Unsqueeze" | "Flatten" => {
            if let Some(x) = x {
                out.elem_bytes = x.elem_bytes;
                out.int_values = x.int_values.clone();
                out.float_values = x.float_values.clone();
            }
        }
        "Cast" => {
            let Some(x) = x else { return };
            // ONNX TensorProto.DataType: 1 float, 6 int32, 7 int64, 10 float16, 11 double.
            let to = c.int("to").unwrap_or(0);
            let as_float = x.float_values.clone().or_else(|| {
                x.int_values
                    .as_ref()
                    .map(|v| v.iter().map(|&i| i as f32).collect())
            });
            let as_int = x.int_values.clone().or_else(|| {
                x.float_values
                    .as_ref()
                    .map(|v| v.iter().map(|&f| f as i64).collect())
            });
            match to {
                1 | 10 | 11 => {
                    out.elem_bytes = if to == 11 { 8 } else { 4 };
                    out.float_values = as_float;
                }
                6 | 7 => {
                    out.elem_bytes = if to == 7 { 8 } else { 4 };
                    out.int_values = as_int;
                }
                _ => {}
            }
        }
        "Concat" => {
            let parts: Vec<&ConstTensor> = ins.iter().filter_map(|v| const_of(*v)).collect();
            if parts.iter().all(|p| p.dims.len() <= 1) {
                out.elem_bytes = parts.first().map_or(8, |p| p.elem_bytes);
                if parts.iter().all(|p| p.int_values.is_some()) {
                    out.int_values = Some(
                        parts
                            .iter()
                            .flat_map(|p| p.int_values.clone().unwrap_or_default())
                            .collect(),
                    );
                } else if parts.iter().all(|p| p.float_values.is_some()) {
                    out.float_values = Some(
                        parts
                            .iter()
                            .flat_map(|p| p.float_values.clone().unwrap_or_default())
                            .collect(),
                    );
                }
            }
        }
        "Slice" => {
            let Some(x) = x.filter(|x| x.dims.len() == 1) else {
                return;
            };
            let g = |i: usize| const_ints(ins.get(i).copied().flatten());
            let (Some(starts), Some(ends)) = (
                g(1).or_else(|| c.ints("starts")),
                g(2).or_else(|| c.ints("ends")),
            ) else {
                return;
            };
            let step = g(4).and_then(|s| s.first().copied()).unwrap_or(1);
            let n = x.dims[0] as i64;
            if step == 0 || starts.is_empty() || ends.is_empty() {
                return;
            }
            let clampi = |v: i64, hi: i64| {
                let v = if v < 0 { v + n } else { v };
                v.clamp(if step > 0 { 0 } else { -1 }, hi)
            };
            let (s, e) = if step > 0 {
                (clampi(starts[0], n), clampi(ends[0], n))
            } else {
                (clampi(starts[0], n - 1), clampi(ends[0], n - 1))
            };
            let mut idx = Vec::new();
            let mut i = s;
            while (step > 0 && i < e) || (step < 0 && i > e) {
                idx.push(i as usize);
                i += step;
            }
            out.elem_bytes = x.elem_bytes;
            out.int_values = x
                .int_values
                .as_ref()
                .map(|v| idx.iter().map(|&i| v[i]).collect());
            out.float_values = x
                .float_values
                .as_ref()
                .map(|v| idx.iter().map(|&i| v[i]).collect());
        }
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Floor" | "Ceil" | "Neg" | "Abs" => {
            let args: Vec<&ConstTensor> = ins.iter().filter_map(|v| const_of(*v)).collect();
            if args.is_empty() || args.len() != ins.iter().flatten().count() {
                return;
            }
            // Broadcast by repetition: operands are scalars or vectors of the output's length.
            let at = |v: &Vec<f64>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let ints = args.iter().all(|a| a.int_values.is_some());
            let vals: Option<Vec<Vec<f64>>> = args
                .iter()
                .map(|a| {
                    a.int_values
                        .as_ref()
                        .map(|v| v.iter().map(|&i| i as f64).collect())
                        .or_else(|| {
                            a.float_values
                                .as_ref()
                                .map(|v| v.iter().map(|&f| f64::from(f)).collect())
                        })
                })
                .collect();
            let Some(vals) = vals else { return };
            if vals.iter().any(|v| v.len() != 1 && v.len() != n_out) {
                return;
            }
            let r: Vec<f64> = (0..n_out)
                .map(|i| {
                    let a = at(&vals[0], i);
                    let b = vals.get(1).map(|v| at(v, i));
                    match (op, b) {
                        ("Add", Some(b)) => a + b,
                        ("Sub", Some(b)) => a - b,
                        ("Mul", Some(b)) => a * b,
                        ("Div", Some(b)) if ints => (a / b).trunc(),
                        ("Div", Some(b)) => a / b,
                        ("Max", Some(b)) => a.max(b),
                        ("Min", Some(b)) => a.min(b),
                        ("Floor", _) => a.floor(),
                        ("Ceil", _) => a.ceil(),
                        ("Neg", _) => -a,
                        ("Abs", _) => a.abs(),
                        _ => a,
                    }
                })
                .collect();
            out.elem_bytes = args[0].elem_bytes;
            if ints {
                out.int_values = Some(r.iter().map(|&v| v as i64).collect());
            } else {
                out.float_values = Some(r.iter().map(|&v| v as f32).collect());
            }
        }
        _ => {}
    }
}

/// Op class, MACs and output shapes of one node.
fn infer(
    c: &Ctx<'_>,
    ins: &[Option<&Value>],
) -> Result<(OpClass, u64, Vec<Vec<usize>>), GraphError> {
    let op = c.node.op_type.as_str();
    let x = || shape_of(c, ins.first().copied().flatten());
    let n_out = c.node.outputs.len();
    use OpClass::*;
    Ok(match op {
        "Conv" => {
            let xs = x()?;
            let w = shape_of(c, ins.get(1).copied().flatten())?;
            if xs.len() < 3 || w.len() != xs.len() {
                return Err(c.err(format!("input {xs:?} and weight {w:?} ranks differ")));
            }
            let group = c.int("group").unwrap_or(1).max(1) as usize;
            let spatial = &xs[2..];
            let kernel = &w[2..];
            let dil: Vec<usize> = c
                .ints("dilations")
                .map(|d| d.iter().map(|&v| v as usize).collect())
                .unwrap_or_else(|| vec![1; spatial.len()]);
            let out_sp = window_out(c, spatial, kernel, &dil)?;
            let mut out = vec![xs[0], w[0]];
            out.extend(&out_sp);
            let macs = prod(&out) * (w[1] as u64) * prod(kernel);
            let class = if group > 1 && group == xs[1] {
                DepthwiseConv
            } else {
                Conv
            };
            (class, macs, vec![out])
        }
        "ConvTranspose" => {
            let xs = x()?;
            let w = shape_of(c, ins.get(1).copied().flatten())?;
            let group = c.int("group").unwrap_or(1).max(1) as usize;
            let n = xs.len() - 2;
            let strides = c.ints("strides").unwrap_or_else(|| vec![1; n]);
            let pads = c.ints("pads").unwrap_or_else(|| vec![0; 2 * n]);
            let dil = c.ints("dilations").unwrap_or_else(|| vec![1; n]);
            let opad = c.ints("output_padding").unwrap_or_else(|| vec![0; n]);
            let mut out = vec![xs[0], w[1] * group];
            if let Some(os) = c.ints("output_shape") {
                out.extend(os.iter().map(|&v| v as usize));
            } else {
                for i in 0..n {
                    let o = strides[i] * (xs[i + 2] as i64 - 1)
                        + opad[i]
                        + (w[i + 2] as i64 - 1) * dil[i]
                        + 1
                        - pads[i]
                        - pads[i + n];
                    out.push(o.max(0) as usize);
                }
            }
            let macs = prod(xs) * (w[1] as u64) * prod(&w[2..]);
            (Conv, macs, vec![out])
        }
        "LRN" => {
            let xs = x()?.to_vec();
            let size = c.int("size").unwrap_or(1).max(1) as u64;
            (LocalResponseNorm, prod(&xs) * size, vec![xs])
        }
        "BatchNormalization" | "InstanceNormalization" | "LayerNormalization" => {
            let xs = x()?.to_vec();
            let mut outs = vec![xs.clone()];
            outs.extend(std::iter::repeat_n(vec![xs[1]], n_out.saturating_sub(1)));
            (Normalization, prod(&xs) * 2, outs)
        }
        "Relu" | "Clip" | "HardSwish" | "HardSigmoid" | "Sigmoid" | "Tanh" | "LeakyRelu"
        | "Elu" | "Selu" | "PRelu" | "Mul" | "Add" | "Sub" | "Div" | "Sum" | "Max" | "Min"
        | "Mean" | "Pow" | "Sqrt" | "Exp" | "Log" | "Abs" | "Neg" | "Reciprocal" | "Erf"
        | "Gelu" | "Softplus" | "Dropout" | "Identity" | "Cast" | "Not" | "Floor" | "Ceil"
        | "Round" | "Equal" | "Greater" | "Less" | "Where" => {
            let shapes: Vec<&[usize]> = ins
                .iter()
                .flatten()
                .map(|v| shape_of(c, Some(v)))
                .collect::<Result<_, _>>()?;
            let out = broadcast(&shapes)
                .ok_or_else(|| c.err(format!("shapes {shapes:?} do not broadcast")))?;
            let e = prod(&out);
            let mut outs = vec![out.clone()];
            // Dropout's optional mask output has the data's shape.
            outs.extend(std::iter::repeat_n(out, n_out.saturating_sub(1)));
            (Elementwise, e, outs)
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let xs = x()?;
            let kernel: Vec<usize> = c
                .ints("kernel_shape")
                .ok_or_else(|| c.err("no kernel_shape"))?
                .iter()
                .map(|&v| v as usize)
                .collect();
            let dil: Vec<usize> = c
                .ints("dilations")
                .map(|d| d.iter().map(|&v| v as usize).collect())
                .unwrap_or_else(|| vec![1; kernel.len()]);
            let out_sp = window_out(c, &xs[2..], &kernel, &dil)?;
            let mut out = xs[..2].to_vec();
            out.extend(&out_sp);
            let macs = prod(&out) * prod(&kernel);
            (Pool, macs, std::iter::repeat_n(out, n_out.max(1)).collect())
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let xs = x()?;
            let mut out = xs[..2].to_vec();
            out.extend(std::iter::repeat_n(1, xs.len() - 2));
            (Pool, prod(xs), vec![out])
        }
        "Gemm" => {
            let a = x()?;
            let b = shape_of(c, ins.get(1).copied().flatten())?;
            if a.len() != 2 || b.len() != 2 {
                return Err(c.err(format!("Gemm needs 2-D inputs, got {a:?} and {b:?}")));
            }
            let (m, k) = if c.int("transA").unwrap_or(0) == 1 {
                (a[1], a[0])
            } else {
                (a[0], a[1])
            };
            let n = if c.int("transB").unwrap_or(0) == 1 {
                b[0]
            } else {
                b[1]
            };
            (Gemm, (m * n * k) as u64, vec![vec![m, n]])
        }
        "MatMul" => {
            let a = x()?;
            let b = shape_of(c, ins.get(1).copied().flatten())?;
            if a.len() < 2 || b.len() < 2 {
                return Err(c.err("MatMul of 1-D tensors is not supported"));
            }
            let batch = broadcast(&[&a[..a.len() - 2], &b[..b.len() - 2]])
                .ok_or_else(|| c.err("batch dims do not broadcast"))?;
            let (m, k, n) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
            let mut out = batch.clone();
            out.extend([m, n]);
            (Gemm, prod(&batch) * (m * n * k) as u64, vec![out])
        }
        "Flatten" => {
            let xs = x()?;
            let axis = norm_axis(c.int("axis").unwrap_or(1), xs.len());
            let out = vec![prod(&xs[..axis]) as usize, prod(&xs[axis..]) as usize];
            // Metadata only: runtimes reshape without moving data.
            (DataMovement, 0, vec![out])
        }
        "Reshape" => {
            let xs = x()?;
            let target = const_ints(ins.get(1).copied().flatten())
                .or_else(|| c.ints("shape"))
                .ok_or_else(|| c.err("target shape is not a known constant"))?;
            let total = prod(xs);
            let mut out: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d == 0 && c.int("allowzero").unwrap_or(0) == 0 {
                        xs.get(i).map_or(0, |&v| v as i64)
                    } else {
                        d
                    }
                })
                .collect();
            if let Some(p) = out.iter().position(|&d| d == -1) {
                let known: i64 = out.iter().filter(|&&d| d != -1).product();
                if known == 0 {
                    return Err(c.err("cannot infer -1 with a zero dimension"));
                }
                out[p] = total as i64 / known;
            }
            let out: Vec<usize> = out.iter().map(|&d| d as usize).collect();
            if prod(&out) != total {
                return Err(c.err(format!("cannot reshape {xs:?} to {target:?}")));
            }
            (DataMovement, 0, vec![out])
        }
        "Expand" => {
            let xs = x()?;
            let target = const_ints(ins.get(1).copied().flatten())
                .ok_or_else(|| c.err("target shape is not a known constant"))?;
            let t: Vec<usize> = target.iter().map(|&d| d.max(0) as usize).collect();
            let out = broadcast(&[xs, &t])
                .ok_or_else(|| c.err(format!("{xs:?} does not expand to {target:?}")))?;
            (DataMovement, prod(&out), vec![out])
        }
        "Gather" => {
            let xs = x()?;
            let idx = shape_of(c, ins.get(1).copied().flatten())?;
            let axis = norm_axis(c.int("axis").unwrap_or(0), xs.len());
            let mut out = xs[..axis].to_vec();
            out.extend(idx);
            out.extend(&xs[axis + 1..]);
            (DataMovement, prod(&out), vec![out])
        }
        "Transpose" => {
            let xs = x()?;
            let perm = c
                .ints("perm")
                .unwrap_or_else(|| (0..xs.len() as i64).rev().collect());
            let out = perm.iter().map(|&p| xs[p as usize]).collect();
            (DataMovement, prod(xs), vec![out])
        }
        "Concat" => {
            let shapes: Vec<&[usize]> = ins
                .iter()
                .flatten()
                .map(|v| shape_of(c, Some(v)))
                .collect::<Result<_, _>>()?;
            let axis = norm_axis(
                c.int("axis").ok_or_else(|| c.err("no axis"))?,
                shapes[0].len(),
            );
            let mut out = shapes[0].to_vec();
            out[axis] = shapes.iter().map(|s| s[axis]).sum();
            (DataMovement, prod(&out), vec![out])
        }
        "Split" => {
            let xs = x()?;
            let axis = norm_axis(c.int("axis").unwrap_or(0), xs.len());
            let parts = const_ints(ins.get(1).copied().flatten())
                .or_else(|| c.ints("split"))
                .unwrap_or_else(|| {
                    let k = n_out as i64;
                    let chunk = (xs[axis] as i64 + k - 1) / k;
                    (0..k)
                        .map(|i| chunk.min(xs[axis] as i64 - i * chunk))
                        .collect()
                });
            let outs = parts
                .iter()
                .map(|&p| {
                    let mut s = xs.to_vec();
                    s[axis] = p as usize;
                    s
                })
                .collect();
            (DataMovement, prod(xs), outs)
        }
        "Slice" => {
            let xs = x()?;
            let (starts, ends, axes, steps) = if let Some(s) = c.ints("starts") {
                (s, c.ints("ends").unwrap_or_default(), c.ints("axes"), None)
            } else {
                let g = |i: usize| const_ints(ins.get(i).copied().flatten());
                (
                    g(1).ok_or_else(|| c.err("starts are not known constants"))?,
                    g(2).ok_or_else(|| c.err("ends are not known constants"))?,
                    g(3),
                    g(4),
                )
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let mut out = xs.to_vec();
            for (i, &a) in axes.iter().enumerate() {
                let a = norm_axis(a, xs.len());
                let dim = xs[a] as i64;
                let step = steps.as_ref().map_or(1, |s| s[i]);
                let clampi = |v: i64| if v < 0 { (v + dim).max(0) } else { v.min(dim) };
                let (s, e) = (clampi(starts[i]), clampi(ends[i]));
                out[a] = if step > 0 {
                    ((e - s).max(0) + step - 1) / step
                } else {
                    ((s - e).max(0) + (-step) - 1) / (-step)
                } as usize;
            }
            (DataMovement, prod(&out), vec![out])
        }
        "Squeeze" | "Unsqueeze" => {
            let xs = x()?;
            let axes = const_ints(ins.get(1).copied().flatten()).or_else(|| c.ints("axes"));
            let out = if op == "Squeeze" {
                match axes {
                    Some(a) => {
                        let a: Vec<usize> = a.iter().map(|&v| norm_axis(v, xs.len())).collect();
                        xs.iter()
                            .enumerate()
                            .filter(|(i, _)| !a.contains(i))
                            .map(|(_, &d)| d)
                            .collect()
                    }
                    None => xs.iter().copied().filter(|&d| d != 1).collect(),
                }
            } else {
                let a = axes.ok_or_else(|| c.err("Unsqueeze without axes"))?;
                let rank = xs.len() + a.len();
                let mut a: Vec<usize> = a.iter().map(|&v| norm_axis(v, rank)).collect();
                a.sort();
                let mut out = xs.to_vec();
                for p in a {
                    out.insert(p, 1);
                }
                out
            };
            (DataMovement, 0, vec![out])
        }
        "Resize" | "Upsample" => {
            let xs = x()?;
            let sizes = const_ints(ins.get(3).copied().flatten());
            let out: Vec<usize> = if let Some(s) = sizes.filter(|s| !s.is_empty()) {
                s.iter().map(|&v| v as usize).collect()
            } else {
                let scales = c
                    .floats("scales")
                    .or_else(|| match ins.get(if op == "Upsample" { 1 } else { 2 }).copied().flatten() {
                        Some(Value::Const(t)) => t.float_values.clone().filter(|v| !v.is_empty()),
                        _ => None,
                    })
                    .ok_or_else(|| c.err("scales/sizes are not known constants (float constant values are not tracked; give sizes)"))?;
                xs.iter()
                    .zip(&scales)
                    .map(|(&d, &s)| (d as f32 * s).floor() as usize)
                    .collect()
            };
            (Resize, prod(&out) * 4, vec![out])
        }
        "Softmax" | "LogSoftmax" => {
            let xs = x()?.to_vec();
            (Softmax, prod(&xs) * 3, vec![xs])
        }
        "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceL2" | "ReduceProd" => {
            let xs = x()?;
            let keep = c.int("keepdims").unwrap_or(1) == 1;
            let axes: Vec<usize> = const_ints(ins.get(1).copied().flatten())
                .or_else(|| c.ints("axes"))
                .map(|a| a.iter().map(|&v| norm_axis(v, xs.len())).collect())
                .unwrap_or_else(|| (0..xs.len()).collect());
            let out: Vec<usize> = xs
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| {
                    if axes.contains(&i) {
                        keep.then_some(1)
                    } else {
                        Some(d)
                    }
                })
                .collect();
            (Reduce, prod(xs), vec![out])
        }
        "Pad" => {
            let xs = x()?;
            let pads = const_ints(ins.get(1).copied().flatten())
                .or_else(|| c.ints("pads"))
                .ok_or_else(|| c.err("pads are not known constants"))?;
            let n = xs.len();
            let out: Vec<usize> = (0..n)
                .map(|i| (xs[i] as i64 + pads[i] + pads[i + n]) as usize)
                .collect();
            (DataMovement, prod(&out), vec![out])
        }
        _ => {
            return Err(GraphError::UnsupportedOp {
                op: op.to_string(),
                node: c.node.name.clone(),
            });
        }
    })
}
