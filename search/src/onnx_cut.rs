//! Writes the head and tail of a cut as ONNX models.
//!
//! The head keeps the model's data inputs and outputs the crossing tensors; the tail takes the
//! crossing tensors it consumes and produces the model's outputs. Constant subgraphs (weights,
//! shapes) go with whichever side uses them, to both if both do.

use std::collections::HashSet;

use splitnets_cost_model::graph::{AnalyzedGraph, ConstTensor};
use splitnets_onnx::{self as onnx, Dim, GraphProto, ModelProto, TensorProto, ValueInfoProto};

use crate::cuts::Cut;

fn value_info(g: &AnalyzedGraph, t: usize) -> ValueInfoProto {
    let dims: Vec<Dim> = g.tensors[t]
        .shape
        .iter()
        .map(|&d| Dim::Fixed(d as i64))
        .collect();
    onnx::float_value_info(&g.tensors[t].name, &dims)
}

/// What one side of a cut needs from the model.
struct Closure {
    /// ONNX nodes (indices into the model's node list, in their original order): the compute
    /// nodes plus every constant node they need.
    nodes: Vec<usize>,
    /// Shape constants (values folded from the analysed shapes) the side reads; they become
    /// initializers, since the activations they were computed from may sit on the other side.
    shape_constants: Vec<String>,
}

fn closure(model: &GraphProto, g: &AnalyzedGraph, compute: &[usize]) -> Closure {
    let constants: HashSet<usize> = g.constant_nodes.iter().copied().collect();
    let mut keep: HashSet<usize> = compute.iter().map(|&i| g.nodes[i].spec_index).collect();
    let mut folded: Vec<String> = Vec::new();
    let producer_of = |name: &str| {
        model
            .node
            .iter()
            .position(|n| n.output.iter().any(|o| o == name))
    };
    let mut todo: Vec<usize> = keep.iter().copied().collect();
    while let Some(k) = todo.pop() {
        for input in &model.node[k].input {
            if g.shape_constants.contains_key(input) {
                if !folded.contains(input) {
                    folded.push(input.clone());
                }
                continue;
            }
            if let Some(p) = producer_of(input)
                && constants.contains(&p)
                && keep.insert(p)
            {
                todo.push(p);
            }
        }
    }
    let mut v: Vec<usize> = keep.into_iter().collect();
    v.sort();
    folded.sort();
    Closure {
        nodes: v,
        shape_constants: folded,
    }
}

/// A folded shape constant as an initializer of its recorded element type.
fn shape_initializer(name: &str, t: &ConstTensor) -> Result<TensorProto, CutWriteError> {
    let dims: Vec<i64> = t.dims.iter().map(|&d| d as i64).collect();
    match (&t.int_values, &t.float_values) {
        (Some(v), _) if t.elem_bytes == 4 => {
            let mut p = onnx::int64_initializer(name, &dims, v);
            p.data_type = Some(onnx::INT32);
            p.int64_data.clear();
            p.int32_data = v.iter().map(|&x| x as i32).collect();
            Ok(p)
        }
        (Some(v), _) => Ok(onnx::int64_initializer(name, &dims, v)),
        (None, Some(v)) => Ok(onnx::float_initializer(name, &dims, v)),
        (None, None) => Err(CutWriteError::UnfoldedShapeConstant(name.to_string())),
    }
}

/// Why a cut's models could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CutWriteError {
    #[error(
        "tensor {0:?} is computed from an activation's shape but its values could not be folded (an op on shapes this planner does not evaluate)"
    )]
    UnfoldedShapeConstant(String),
}

fn sub_model(
    original: &ModelProto,
    g: &AnalyzedGraph,
    name: &str,
    side: &Closure,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> Result<ModelProto, CutWriteError> {
    let graph = original.graph.as_ref().expect("graph");
    let node: Vec<_> = side.nodes.iter().map(|&i| graph.node[i].clone()).collect();
    let used: HashSet<&str> = node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut initializer: Vec<TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| used.contains(t.name()))
        .cloned()
        .collect();
    for n in &side.shape_constants {
        initializer.push(shape_initializer(n, &g.shape_constants[n])?);
    }
    let mut m = original.clone();
    // ONNX Runtime 1.31 refuses the IR 3 of older zoo models; IR 10 with the model's own opset
    // is equivalent for these ops, and initializers no longer need to be listed as inputs.
    m.ir_version = Some(m.ir_version().max(onnx::WRITE_IR_VERSION));
    m.graph = Some(GraphProto {
        node,
        name: Some(format!("{}_{name}", graph.name())),
        initializer,
        input: inputs,
        output: outputs,
        ..Default::default()
    });
    Ok(m)
}

/// The graph's outputs with the analysed (fixed) shapes.
fn outputs_of(g: &AnalyzedGraph) -> Vec<ValueInfoProto> {
    g.outputs.iter().map(|&t| value_info(g, t)).collect()
}

/// The whole model as ONNX Runtime 1.31 loads it (IR raised, initializers not inputs, input
/// shapes fixed as analysed, shape arithmetic folded).
pub fn runnable_original(
    original: &ModelProto,
    g: &AnalyzedGraph,
) -> Result<ModelProto, CutWriteError> {
    let all: Vec<usize> = (0..g.nodes.len()).collect();
    let graph = original.graph.as_ref().expect("graph");
    sub_model(
        original,
        g,
        "whole",
        &closure(graph, g, &all),
        g.inputs.iter().map(|&t| value_info(g, t)).collect(),
        outputs_of(g),
    )
}

/// Head and tail of `cut`.
pub fn split_model(
    original: &ModelProto,
    g: &AnalyzedGraph,
    cut: &Cut,
) -> Result<(ModelProto, ModelProto), CutWriteError> {
    let graph = original.graph.as_ref().expect("graph");
    let sensor: Vec<usize> = (0..g.nodes.len()).filter(|&i| cut.on_sensor[i]).collect();
    let agg: Vec<usize> = (0..g.nodes.len()).filter(|&i| !cut.on_sensor[i]).collect();
    let head = sub_model(
        original,
        g,
        "head",
        &closure(graph, g, &sensor),
        g.inputs.iter().map(|&t| value_info(g, t)).collect(),
        cut.crossing.iter().map(|&t| value_info(g, t)).collect(),
    )?;
    let tail_inputs = cut
        .crossing
        .iter()
        .filter(|&&t| g.tensors[t].consumers.iter().any(|&c| !cut.on_sensor[c]))
        .map(|&t| value_info(g, t))
        .collect();
    let tail = sub_model(
        original,
        g,
        "tail",
        &closure(graph, g, &agg),
        tail_inputs,
        outputs_of(g),
    )?;
    Ok((head, tail))
}
