//! Trained weights to ONNX: the head (one view's image → split feature) and the tail (the present
//! views' features → fused logits), written with the project's own ONNX types.

use splitnets_onnx::{self as onnx, Dim, GraphProto, ModelProto, NodeProto, TensorProto};

use crate::model::{ConvWeights, SplitCnnWeights};

pub const HEAD_INPUT: &str = "image";
pub const HEAD_OUTPUT: &str = "feature";
pub const TAIL_INPUT: &str = "features";
pub const TAIL_OUTPUT: &str = "logits";

fn conv_node(
    name: &str,
    input: &str,
    output: &str,
    w: &ConvWeights,
    inits: &mut Vec<TensorProto>,
) -> NodeProto {
    let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
    let k = w.kernel as i64;
    inits.push(onnx::float_initializer(
        &wn,
        &[w.out_channels as i64, w.in_channels as i64, k, k],
        &w.weight,
    ));
    inits.push(onnx::float_initializer(
        &bn,
        &[w.out_channels as i64],
        &w.bias,
    ));
    let pad = k / 2;
    onnx::node(
        "Conv",
        name,
        &[input, &wn, &bn],
        &[output],
        vec![
            onnx::attr_ints("kernel_shape", &[k, k]),
            onnx::attr_ints("pads", &[pad, pad, pad, pad]),
            onnx::attr_ints("strides", &[1, 1]),
        ],
    )
}

fn relu(name: &str, input: &str, output: &str) -> NodeProto {
    onnx::node("Relu", name, &[input], &[output], vec![])
}

fn maxpool(name: &str, input: &str, output: &str) -> NodeProto {
    onnx::node(
        "MaxPool",
        name,
        &[input],
        &[output],
        vec![
            onnx::attr_ints("kernel_shape", &[2, 2]),
            onnx::attr_ints("strides", &[2, 2]),
        ],
    )
}

/// The head for one `[1, 1, height, width]` image.
pub fn head_model(w: &SplitCnnWeights, height: usize, width: usize) -> ModelProto {
    let mut inits = Vec::new();
    let nodes = vec![
        conv_node("conv1", HEAD_INPUT, "conv1_out", &w.conv1, &mut inits),
        relu("relu1", "conv1_out", "relu1_out"),
        maxpool("pool1", "relu1_out", "pool1_out"),
        conv_node("conv2", "pool1_out", "conv2_out", &w.conv2, &mut inits),
        relu("relu2", "conv2_out", "relu2_out"),
        maxpool("pool2", "relu2_out", "pool2_out"),
        conv_node("reduce", "pool2_out", "reduce_out", &w.reduce, &mut inits),
        relu("reduce_relu", "reduce_out", HEAD_OUTPUT),
    ];
    let (h, wd) = (height as i64, width as i64);
    let graph = GraphProto {
        name: Some("splitnets_head".into()),
        node: nodes,
        initializer: inits,
        input: vec![onnx::float_value_info(
            HEAD_INPUT,
            &[Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(h), Dim::Fixed(wd)],
        )],
        output: vec![onnx::float_value_info(
            HEAD_OUTPUT,
            &[
                Dim::Fixed(1),
                Dim::Fixed(w.reduce.out_channels as i64),
                Dim::Fixed(h / 4),
                Dim::Fixed(wd / 4),
            ],
        )],
        ..Default::default()
    };
    onnx::model(graph, "SplitNets head: runs on each camera sensor")
}

/// The tail for `[views_present, C, h, w]` stacked features (views in ascending order).
pub fn tail_model(w: &SplitCnnWeights, feature_h: usize, feature_w: usize) -> ModelProto {
    let mut inits = Vec::new();
    let mut nodes = vec![
        conv_node("recover", TAIL_INPUT, "recover_out", &w.recover, &mut inits),
        relu("recover_relu", "recover_out", "recovered"),
        // Fusion: element-wise max over the views present (axis 0).
        onnx::node(
            "ReduceMax",
            "fuse_max",
            &["recovered"],
            &["fused"],
            vec![onnx::attr_ints("axes", &[0]), onnx::attr_int("keepdims", 1)],
        ),
        conv_node("conv3", "fused", "conv3_out", &w.conv3, &mut inits),
        relu("relu3", "conv3_out", "relu3_out"),
        onnx::node(
            "GlobalAveragePool",
            "gap",
            &["relu3_out"],
            &["gap_out"],
            vec![],
        ),
        onnx::node(
            "Flatten",
            "flatten",
            &["gap_out"],
            &["flat"],
            vec![onnx::attr_int("axis", 1)],
        ),
    ];
    let c = &w.classifier;
    inits.push(onnx::float_initializer(
        "classifier.weight",
        &[c.inputs as i64, c.outputs as i64],
        &c.weight,
    ));
    inits.push(onnx::float_initializer(
        "classifier.bias",
        &[c.outputs as i64],
        &c.bias,
    ));
    nodes.push(onnx::node(
        "Gemm",
        "classifier",
        &["flat", "classifier.weight", "classifier.bias"],
        &[TAIL_OUTPUT],
        vec![],
    ));
    let graph = GraphProto {
        name: Some("splitnets_tail".into()),
        node: nodes,
        initializer: inits,
        input: vec![onnx::float_value_info(
            TAIL_INPUT,
            &[
                Dim::Symbolic("views".into()),
                Dim::Fixed(w.recover.in_channels as i64),
                Dim::Fixed(feature_h as i64),
                Dim::Fixed(feature_w as i64),
            ],
        )],
        output: vec![onnx::float_value_info(
            TAIL_OUTPUT,
            &[Dim::Fixed(1), Dim::Fixed(c.outputs as i64)],
        )],
        ..Default::default()
    };
    onnx::model(
        graph,
        "SplitNets tail: fuses the views' features and classifies, on the aggregator",
    )
}
