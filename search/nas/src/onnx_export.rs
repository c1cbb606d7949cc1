//! A searched subnet's head and tail as ONNX models (opset 17, the project's own ONNX types).
//!
//! Head: `image` `[1, 1, H, W]` → `feature` `[1, C_red, h, w]` (float; the sensor's codec
//! quantizes it to the subnet's bits). Tail: `features` `[views present, C_red, h, w]` (views in
//! ascending order) → `logits` `[1, classes]`, the fusion over axis 0 as the subnet learned it.
//!
//! Split after the classifier: the head ends with pooling and the classifier, `feature` is
//! `[1, k]` (the logits, and the learned fusion's score last); the tail fuses `[views, k]`.

use splitnets_onnx::{self as onnx, Dim, GraphProto, ModelProto, NodeProto, TensorProto};

use crate::space::Fusion;
use crate::supernet::{BlockLayers, ConvLayer, SubnetWeights};

pub const HEAD_INPUT: &str = "image";
pub const HEAD_OUTPUT: &str = "feature";
pub const TAIL_INPUT: &str = "features";
pub const TAIL_OUTPUT: &str = "logits";

struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    n: usize,
}

impl Builder {
    fn fresh(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}_{}", self.n)
    }

    fn conv(&mut self, name: &str, input: &str, l: &ConvLayer) -> String {
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        let k = l.kernel as i64;
        let groups = l.groups.max(1) as i64;
        self.inits.push(onnx::float_initializer(
            &wn,
            &[l.out_channels as i64, l.in_channels as i64 / groups, k, k],
            &l.weight,
        ));
        self.inits.push(onnx::float_initializer(
            &bn,
            &[l.out_channels as i64],
            &l.bias,
        ));
        let out = self.fresh(name);
        let p = l.padding as i64;
        let s = l.stride as i64;
        self.nodes.push(onnx::node(
            "Conv",
            name,
            &[input, &wn, &bn],
            &[&out],
            vec![
                onnx::attr_ints("kernel_shape", &[k, k]),
                onnx::attr_ints("pads", &[p, p, p, p]),
                onnx::attr_ints("strides", &[s, s]),
                onnx::attr_int("group", groups),
            ],
        ));
        if l.relu {
            let r = self.fresh(&format!("{name}_relu"));
            self.nodes.push(onnx::node(
                "Relu",
                &format!("{name}_relu"),
                &[&out],
                &[&r],
                vec![],
            ));
            r
        } else {
            out
        }
    }

    fn block(&mut self, name: &str, input: &str, b: &BlockLayers) -> String {
        let x = self.conv(&format!("{name}.expand"), input, &b.expand);
        let x = self.conv(&format!("{name}.depthwise"), &x, &b.depthwise);
        let x = self.conv(&format!("{name}.project"), &x, &b.project);
        if b.residual {
            let out = self.fresh(&format!("{name}_add"));
            self.nodes.push(onnx::node(
                "Add",
                &format!("{name}.add"),
                &[&x, input],
                &[&out],
                vec![],
            ));
            out
        } else {
            x
        }
    }

    /// Global average pooling, flatten and the classifier `Gemm` into `output`; returns the
    /// flattened pooled feature's name.
    fn classifier(&mut self, input: &str, w: &SubnetWeights, output: &str) -> String {
        let (gap, flat) = (self.fresh("gap"), self.fresh("flat"));
        self.nodes.push(onnx::node(
            "GlobalAveragePool",
            "gap",
            &[input],
            &[&gap],
            vec![],
        ));
        self.nodes.push(onnx::node(
            "Flatten",
            "flatten",
            &[&gap],
            &[&flat],
            vec![onnx::attr_int("axis", 1)],
        ));
        self.inits.push(onnx::float_initializer(
            "classifier.weight",
            &[w.classifier_inputs as i64, w.classifier_outputs as i64],
            &w.classifier_weight,
        ));
        self.inits.push(onnx::float_initializer(
            "classifier.bias",
            &[w.classifier_outputs as i64],
            &w.classifier_bias,
        ));
        self.nodes.push(onnx::node(
            "Gemm",
            "classifier",
            &[&flat, "classifier.weight", "classifier.bias"],
            &[output],
            vec![],
        ));
        flat
    }

    /// The finished model: one input, one output.
    fn model(
        self,
        name: &str,
        input: onnx::ValueInfoProto,
        output: onnx::ValueInfoProto,
        doc: &str,
    ) -> ModelProto {
        let graph = GraphProto {
            name: Some(name.into()),
            node: self.nodes,
            initializer: self.inits,
            input: vec![input],
            output: vec![output],
            ..Default::default()
        };
        onnx::model(graph, doc)
    }

    fn rename_last_output(&mut self, to: &str) {
        if let Some(n) = self.nodes.last_mut() {
            n.output = vec![to.to_string()];
        }
    }
}

fn new_builder() -> Builder {
    Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        n: 0,
    }
}

/// The head for one `[1, 1, side, side]` frame; `feature_side` is the split feature's side
/// (unused after the classifier).
pub fn head_model(w: &SubnetWeights, side: usize, feature_side: usize) -> ModelProto {
    let mut b = new_builder();
    let mut x = b.conv("stem", HEAD_INPUT, &w.stem);
    for (i, blk) in w.head_blocks.iter().enumerate() {
        x = b.block(&format!("head{i}"), &x, blk);
    }
    let f = feature_side as i64;
    let feature_dims = if w.after_classifier {
        let learned = w.fusion == Some(Fusion::Learned);
        let logits = if learned { "logits" } else { HEAD_OUTPUT };
        let flat = b.classifier(&x, w, logits);
        if learned {
            score_nodes(&mut b, w, &flat, "score");
            b.nodes.push(onnx::node(
                "Concat",
                "logits_and_score",
                &[logits, "score"],
                &[HEAD_OUTPUT],
                vec![onnx::attr_int("axis", 1)],
            ));
        }
        let k = w.classifier_outputs + usize::from(learned);
        vec![Dim::Fixed(1), Dim::Fixed(k as i64)]
    } else {
        b.conv("reduce", &x, &w.reduce);
        b.rename_last_output(HEAD_OUTPUT);
        vec![
            Dim::Fixed(1),
            Dim::Fixed(w.reduce.out_channels as i64),
            Dim::Fixed(f),
            Dim::Fixed(f),
        ]
    };
    let s = side as i64;
    b.model(
        "splitnets_nas_head",
        onnx::float_value_info(
            HEAD_INPUT,
            &[Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(s), Dim::Fixed(s)],
        ),
        onnx::float_value_info(HEAD_OUTPUT, &feature_dims),
        "SplitNets SA-NAS head: runs on each camera sensor",
    )
}

/// The learned fusion's score of a pooled `[N, c]` feature: `[N, 1]` into `output`.
fn score_nodes(b: &mut Builder, w: &SubnetWeights, pooled: &str, output: &str) {
    let c = w.score_weight.len() as i64;
    b.inits.push(onnx::float_initializer(
        "fuse.score_weight",
        &[c, 1],
        &w.score_weight,
    ));
    b.inits.push(onnx::float_initializer(
        "fuse.score_bias",
        &[1],
        &[w.score_bias],
    ));
    let mm = b.fresh("score_mm");
    b.nodes.push(onnx::node(
        "MatMul",
        "score_mm",
        &[pooled, "fuse.score_weight"],
        &[&mm],
        vec![],
    ));
    b.nodes.push(onnx::node(
        "Add",
        "score",
        &[&mm, "fuse.score_bias"],
        &[output],
        vec![],
    ));
}

/// Learned fusion over axis 0 (the views present): softmax of `scores` `[views, 1]`, reshaped
/// by the `reshape` shape initializer when `values` has more axes, times `values`, summed into
/// `out` (axis kept).
fn attention_sum(b: &mut Builder, values: &str, scores: &str, reshape: Option<&str>, out: &str) {
    b.inits
        .push(onnx::int64_initializer("fuse.axes", &[1], &[0]));
    b.nodes.push(onnx::node(
        "Softmax",
        "fuse_attn",
        &[scores],
        &["fuse_attn"],
        vec![onnx::attr_int("axis", 0)],
    ));
    let attn = match reshape {
        Some(shape) => {
            b.nodes.push(onnx::node(
                "Reshape",
                "fuse_attn_shaped",
                &["fuse_attn", shape],
                &["fuse_attn_shaped"],
                vec![],
            ));
            "fuse_attn_shaped"
        }
        None => "fuse_attn",
    };
    b.nodes.push(onnx::node(
        "Mul",
        "fuse_weighted",
        &[values, attn],
        &["fuse_weighted"],
        vec![],
    ));
    b.nodes.push(onnx::node(
        "ReduceSum",
        "fuse_sum",
        &["fuse_weighted", "fuse.axes"],
        &[out],
        vec![onnx::attr_int("keepdims", 1)],
    ));
}

/// The tail of a split after the classifier: `[views present, k]` logits fused to
/// `[1, classes]`.
fn logits_tail_model(w: &SubnetWeights) -> ModelProto {
    let mut b = new_builder();
    let classes = w.classifier_outputs as i64;
    let learned = w.fusion == Some(Fusion::Learned);
    match w.fusion {
        None | Some(Fusion::Max) | Some(Fusion::Mean) => {
            let op = if w.fusion == Some(Fusion::Mean) {
                "ReduceMean"
            } else {
                "ReduceMax"
            };
            b.nodes.push(onnx::node(
                op,
                "fuse",
                &[TAIL_INPUT],
                &[TAIL_OUTPUT],
                vec![onnx::attr_ints("axes", &[0]), onnx::attr_int("keepdims", 1)],
            ));
        }
        Some(Fusion::Learned) => {
            let ints = |b: &mut Builder, name: &str, v: i64| {
                b.inits.push(onnx::int64_initializer(name, &[1], &[v]));
            };
            ints(&mut b, "fuse.zero", 0);
            ints(&mut b, "fuse.one", 1);
            ints(&mut b, "fuse.classes", classes);
            ints(&mut b, "fuse.k", classes + 1);
            for (out, start, end) in [
                ("fuse_logits", "fuse.zero", "fuse.classes"),
                ("fuse_score", "fuse.classes", "fuse.k"),
            ] {
                b.nodes.push(onnx::node(
                    "Slice",
                    out,
                    &[TAIL_INPUT, start, end, "fuse.one"],
                    &[out],
                    vec![],
                ));
            }
            attention_sum(&mut b, "fuse_logits", "fuse_score", None, TAIL_OUTPUT);
        }
    }
    let k = classes + i64::from(learned);
    b.model(
        "splitnets_nas_tail",
        onnx::float_value_info(TAIL_INPUT, &[Dim::Symbolic("views".into()), Dim::Fixed(k)]),
        onnx::float_value_info(TAIL_OUTPUT, &[Dim::Fixed(1), Dim::Fixed(classes)]),
        "SplitNets SA-NAS tail: fuses the views' logits, on the aggregator",
    )
}

/// The tail for `[views present, C_red, feature_side, feature_side]` stacked features
/// (`[views present, k]` logits after the classifier).
pub fn tail_model(w: &SubnetWeights, feature_side: usize) -> ModelProto {
    if w.after_classifier {
        return logits_tail_model(w);
    }
    let mut b = new_builder();
    let rec = b.conv("recover", TAIL_INPUT, &w.recover);
    let fused = b.fresh("fused");
    match w.fusion {
        None | Some(Fusion::Max) => b.nodes.push(onnx::node(
            "ReduceMax",
            "fuse_max",
            &[&rec],
            &[&fused],
            vec![onnx::attr_ints("axes", &[0]), onnx::attr_int("keepdims", 1)],
        )),
        Some(Fusion::Mean) => b.nodes.push(onnx::node(
            "ReduceMean",
            "fuse_mean",
            &[&rec],
            &[&fused],
            vec![onnx::attr_ints("axes", &[0]), onnx::attr_int("keepdims", 1)],
        )),
        Some(Fusion::Learned) => {
            b.inits
                .push(onnx::int64_initializer("fuse.shape", &[4], &[-1, 1, 1, 1]));
            b.nodes.push(onnx::node(
                "GlobalAveragePool",
                "fuse_gap",
                &[&rec],
                &["fuse_gap"],
                vec![],
            ));
            b.nodes.push(onnx::node(
                "Flatten",
                "fuse_flat",
                &["fuse_gap"],
                &["fuse_flat"],
                vec![onnx::attr_int("axis", 1)],
            ));
            score_nodes(&mut b, w, "fuse_flat", "fuse_score");
            attention_sum(&mut b, &rec, "fuse_score", Some("fuse.shape"), &fused);
        }
    }
    let mut x = fused;
    for (i, blk) in w.tail_blocks.iter().enumerate() {
        x = b.block(&format!("tail{i}"), &x, blk);
    }
    b.classifier(&x, w, TAIL_OUTPUT);
    let f = feature_side as i64;
    b.model(
        "splitnets_nas_tail",
        onnx::float_value_info(
            TAIL_INPUT,
            &[
                Dim::Symbolic("views".into()),
                Dim::Fixed(w.recover.in_channels as i64),
                Dim::Fixed(f),
                Dim::Fixed(f),
            ],
        ),
        onnx::float_value_info(
            TAIL_OUTPUT,
            &[Dim::Fixed(1), Dim::Fixed(w.classifier_outputs as i64)],
        ),
        "SplitNets SA-NAS tail: recovers, fuses the views' features and classifies, on the aggregator",
    )
}
