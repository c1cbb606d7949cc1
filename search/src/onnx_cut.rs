//! Writes the head and tail of a cut as ONNX models.
//!
//! The head keeps the model's data inputs and outputs the crossing tensors; the tail takes the
//! crossing tensors it consumes and produces the model's outputs. Constant subgraphs (weights,
//! shapes) go with whichever side uses them, to both if both do.

use std::collections::HashSet;

use splitnets_cost_model::graph::AnalyzedGraph;
use splitnets_onnx::{self as onnx, Dim, GraphProto, ModelProto, ValueInfoProto};

use crate::cuts::Cut;

fn value_info(g: &AnalyzedGraph, t: usize) -> ValueInfoProto {
    let dims: Vec<Dim> = g.tensors[t]
        .shape
        .iter()
        .map(|&d| Dim::Fixed(d as i64))
        .collect();
    onnx::float_value_info(&g.tensors[t].name, &dims)
}

/// The ONNX nodes (indices into the model's node list, in their original order) that compute
/// `compute` plus every constant node they need.
fn closure(model: &GraphProto, g: &AnalyzedGraph, compute: &[usize]) -> Vec<usize> {
    let constants: HashSet<usize> = g.constant_nodes.iter().copied().collect();
    let mut keep: HashSet<usize> = compute.iter().map(|&i| g.nodes[i].spec_index).collect();
    let producer_of = |name: &str| {
        model
            .node
            .iter()
            .position(|n| n.output.iter().any(|o| o == name))
    };
    let mut todo: Vec<usize> = keep.iter().copied().collect();
    while let Some(k) = todo.pop() {
        for input in &model.node[k].input {
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
    v
}

fn sub_model(
    original: &ModelProto,
    name: &str,
    nodes: &[usize],
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    let graph = original.graph.as_ref().expect("graph");
    let node: Vec<_> = nodes.iter().map(|&i| graph.node[i].clone()).collect();
    let used: HashSet<&str> = node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let initializer = graph
        .initializer
        .iter()
        .filter(|t| used.contains(t.name()))
        .cloned()
        .collect();
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
    m
}

/// The whole model as ONNX Runtime 1.31 loads it (IR raised, initializers not inputs).
pub fn runnable_original(original: &ModelProto, g: &AnalyzedGraph) -> ModelProto {
    let all: Vec<usize> = (0..g.nodes.len()).collect();
    let graph = original.graph.as_ref().expect("graph");
    let nodes = closure(graph, g, &all);
    sub_model(
        original,
        "whole",
        &nodes,
        g.inputs.iter().map(|&t| value_info(g, t)).collect(),
        graph.output.clone(),
    )
}

/// Head and tail of `cut`.
pub fn split_model(
    original: &ModelProto,
    g: &AnalyzedGraph,
    cut: &Cut,
) -> (ModelProto, ModelProto) {
    let graph = original.graph.as_ref().expect("graph");
    let sensor: Vec<usize> = (0..g.nodes.len()).filter(|&i| cut.on_sensor[i]).collect();
    let agg: Vec<usize> = (0..g.nodes.len()).filter(|&i| !cut.on_sensor[i]).collect();
    let head = sub_model(
        original,
        "head",
        &closure(graph, g, &sensor),
        g.inputs.iter().map(|&t| value_info(g, t)).collect(),
        cut.crossing.iter().map(|&t| value_info(g, t)).collect(),
    );
    let tail_inputs = cut
        .crossing
        .iter()
        .filter(|&&t| g.tensors[t].consumers.iter().any(|&c| !cut.on_sensor[c]))
        .map(|&t| value_info(g, t))
        .collect();
    let tail = sub_model(
        original,
        "tail",
        &closure(graph, g, &agg),
        tail_inputs,
        graph.output.clone(),
    );
    (head, tail)
}
