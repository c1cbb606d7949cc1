//! The cost model on small hand-made graphs: costs computed by hand, and bad input named.

use std::collections::{BTreeMap, HashMap};

use splitnets_cost_model::graph::{
    Attr, ConstTensor, GraphError, GraphSpec, NodeSpec, OpClass, analyze,
};
use splitnets_cost_model::profile::{HardwareProfile, presets};
use splitnets_cost_model::split::{CutError, crossing_tensors, evaluate, summarize};

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: &[(&str, Attr)],
) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        op_type: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn weight(dims: &[usize]) -> ConstTensor {
    ConstTensor {
        dims: dims.to_vec(),
        elem_bytes: 4,
        int_values: None,
        float_values: None,
    }
}

/// x[1,3,32,32] → conv 3x3 s2 pad 1 (8 ch) → relu → conv 1x1 (4 ch) → y
fn small() -> GraphSpec {
    GraphSpec {
        inputs: vec![("x".into(), vec![Some(1), Some(3), Some(32), Some(32)])],
        input_elem_bytes: vec![4],
        outputs: vec!["y".into()],
        constants: HashMap::from([
            ("w1".to_string(), weight(&[8, 3, 3, 3])),
            ("w2".to_string(), weight(&[4, 8, 1, 1])),
        ]),
        nodes: vec![
            node(
                "Conv",
                "c1",
                &["x", "w1"],
                &["a"],
                &[
                    ("strides", Attr::Ints(vec![2, 2])),
                    ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ],
            ),
            node("Relu", "r1", &["a"], &["b"], &[]),
            node("Conv", "c2", &["b", "w2"], &["y"], &[]),
        ],
    }
}

#[test]
fn shapes_macs_and_bytes_by_hand() {
    let g = analyze(&small(), &HashMap::new()).unwrap();
    assert_eq!(
        g.tensors[g.tensor_id("a").unwrap()].shape,
        vec![1, 8, 16, 16]
    );
    assert_eq!(g.nodes[0].macs, 8 * 16 * 16 * 3 * 9);
    assert_eq!(g.nodes[0].param_bytes, 8 * 3 * 9 * 4);
    assert_eq!(g.nodes[0].class, OpClass::Conv);
    assert_eq!(g.nodes[2].macs, 4 * 16 * 16 * 8);
    assert_eq!(g.nodes[1].output_bytes, 8 * 16 * 16 * 4);
}

#[test]
fn split_costs_by_hand() {
    let g = analyze(&small(), &HashMap::new()).unwrap();
    let p: HardwareProfile = toml::from_str(presets::HEADSET).unwrap();
    p.validate().unwrap();
    let s = summarize(&g, &[true, true, false]).unwrap();
    assert_eq!(s.crossing_elements, vec![8 * 16 * 16]);
    // Peak on the sensor: input + `a` while the first conv runs (then the input is freed),
    // which beats `a` + `b` while the Relu runs.
    assert_eq!(
        s.sensor_peak_activation_bytes,
        3 * 32 * 32 * 4 + 8 * 16 * 16 * 4
    );
    let c = evaluate(&s, &p, 4, None);
    let frame = splitnets_cost_model::feature_message_bytes(1, 8 * 16 * 16 / 2);
    assert_eq!(c.link_bytes_per_view, frame + p.link.message_overhead_bytes);
    let sensor = 2.0 * p.sensor.per_node_overhead_seconds
        + (8 * 16 * 16 * 27) as f64 / p.sensor.macs_per_second.conv
        + (8 * 16 * 16) as f64 / p.sensor.macs_per_second.elementwise;
    assert!((c.sensor_seconds - sensor).abs() < 1e-15);
    let link = c.link_bytes_per_view as f64 * 8.0 / p.link.bandwidth_bits_per_second
        + p.link.latency_seconds;
    assert!((c.link_seconds - link).abs() < 1e-15);
    assert!(
        (c.end_to_end_seconds - (c.sensor_seconds + c.link_seconds + c.aggregator_seconds)).abs()
            < 1e-15
    );
}

#[test]
fn unsupported_ops_and_dynamic_shapes_are_named() {
    let mut g = small();
    g.nodes[1].op_type = "FancyAttention".into();
    assert_eq!(
        analyze(&g, &HashMap::new()).unwrap_err(),
        GraphError::UnsupportedOp {
            op: "FancyAttention".into(),
            node: "r1".into()
        }
    );
    // A symbolic batch alone is taken as 1 (and said so); any other symbolic dim is an error
    // naming its position.
    let mut g = small();
    g.inputs[0].1[0] = None;
    let a = analyze(&g, &HashMap::new()).unwrap();
    assert_eq!(a.batch_taken_as_one, vec!["x".to_string()]);
    assert_eq!(a.tensors[a.inputs[0]].shape, vec![1, 3, 32, 32]);
    g.inputs[0].1[2] = None;
    let e = analyze(&g, &HashMap::new()).unwrap_err();
    assert!(
        matches!(&e, GraphError::DynamicShape { positions, .. } if positions == &vec![0, 2]),
        "{e}"
    );
    assert!(analyze(&g, &HashMap::from([("x".to_string(), vec![1, 3, 32, 32])])).is_ok());
}

#[test]
fn a_cut_that_does_not_separate_the_graph_is_refused() {
    let g = analyze(&small(), &HashMap::new()).unwrap();
    let e = crossing_tensors(&g, &[false, true, false]).unwrap_err();
    assert!(matches!(e, CutError::NotSeparating { .. }), "{e}");
    assert!(e.to_string().contains("r1"), "{e}");
}

#[test]
fn inconsistent_profiles_are_refused() {
    let mut p: HardwareProfile = toml::from_str(presets::HEADSET).unwrap();
    p.link.bandwidth_bits_per_second = -1.0;
    assert!(
        p.validate()
            .unwrap_err()
            .to_string()
            .contains("link.bandwidth_bits_per_second")
    );
    let missing = presets::HEADSET.replace("depthwise_conv = 4.0e9\n", "");
    let e = toml::from_str::<HardwareProfile>(&missing).unwrap_err();
    assert!(e.to_string().contains("depthwise_conv"), "{e}");
}

#[test]
fn resize_with_float_scales_and_more_ops_infer_shapes() {
    let g = GraphSpec {
        inputs: vec![("x".into(), vec![Some(1), Some(8), Some(10), Some(10)])],
        input_elem_bytes: vec![4],
        outputs: vec!["z".into()],
        constants: HashMap::from([
            (
                "scales".to_string(),
                ConstTensor {
                    dims: vec![4],
                    elem_bytes: 4,
                    int_values: None,
                    float_values: Some(vec![1.0, 1.0, 2.0, 2.0]),
                },
            ),
            ("w".to_string(), weight(&[8, 1, 3, 3])),
        ]),
        nodes: vec![
            node("Resize", "up", &["x", "", "scales"], &["a"], &[]),
            // Depthwise, dilated, SAME_UPPER: shape kept.
            node(
                "Conv",
                "dw",
                &["a", "w"],
                &["b"],
                &[
                    ("group", Attr::Int(8)),
                    ("dilations", Attr::Ints(vec![2, 2])),
                    ("auto_pad", Attr::Str("SAME_UPPER".into())),
                ],
            ),
            node(
                "ReduceMean",
                "rm",
                &["b"],
                &["c"],
                &[("axes", Attr::Ints(vec![2, 3])), ("keepdims", Attr::Int(0))],
            ),
            node("Softmax", "sm", &["c"], &["z"], &[]),
        ],
    };
    let a = analyze(&g, &HashMap::new()).unwrap();
    assert_eq!(
        a.tensors[a.tensor_id("a").unwrap()].shape,
        vec![1, 8, 20, 20]
    );
    assert_eq!(a.nodes[0].class, OpClass::Resize);
    assert_eq!(
        a.tensors[a.tensor_id("b").unwrap()].shape,
        vec![1, 8, 20, 20]
    );
    assert_eq!(a.nodes[1].class, OpClass::DepthwiseConv);
    assert_eq!(a.nodes[1].macs, 8 * 20 * 20 * 9);
    assert_eq!(a.tensors[a.tensor_id("z").unwrap()].shape, vec![1, 8]);
}

/// An exported flatten (Shape → Gather → Unsqueeze → Concat → Reshape, as PyTorch writes
/// `x.view(x.size(0), -1)`) folds to a constant target: the graph costs like a hand-written one,
/// and the folded values are recorded for the split models.
#[test]
fn exported_shape_arithmetic_folds() {
    let ints = |dims: &[usize], v: &[i64]| ConstTensor {
        dims: dims.to_vec(),
        elem_bytes: 8,
        int_values: Some(v.to_vec()),
        float_values: None,
    };
    let mut g = small();
    g.inputs[0].1[0] = None; // dynamic batch, as exported
    g.constants.insert("zero".into(), ints(&[], &[0]));
    g.constants.insert("axes0".into(), ints(&[1], &[0]));
    g.constants.insert("minus1".into(), ints(&[1], &[-1]));
    g.constants.insert("wfc".into(), weight(&[4 * 16 * 16, 10]));
    g.nodes.extend([
        node("Shape", "shape", &["y"], &["s"], &[]),
        node("Gather", "batch", &["s", "zero"], &["n"], &[]),
        node("Unsqueeze", "unsq", &["n", "axes0"], &["n1"], &[]),
        node(
            "Concat",
            "cat",
            &["n1", "minus1"],
            &["target"],
            &[("axis", Attr::Int(0))],
        ),
        node(
            "Cast",
            "cast",
            &["target"],
            &["target64"],
            &[("to", Attr::Int(7))],
        ),
        node("Reshape", "flat", &["y", "target64"], &["f"], &[]),
        node("MatMul", "fc", &["f", "wfc"], &["logits"], &[]),
        node("HardSwish", "hs", &["logits"], &["out"], &[]),
    ]);
    g.outputs = vec!["out".into()];
    let a = analyze(&g, &HashMap::new()).unwrap();
    assert_eq!(a.tensors[a.tensor_id("f").unwrap()].shape, vec![1, 1024]);
    assert_eq!(a.tensors[a.tensor_id("logits").unwrap()].shape, vec![1, 10]);
    assert_eq!(
        a.nodes.iter().find(|n| n.name == "fc").unwrap().macs,
        1024 * 10
    );
    assert_eq!(
        a.shape_constants["target64"].int_values,
        Some(vec![1, -1]),
        "{:?}",
        a.shape_constants
    );
    assert_eq!(a.shape_constants["s"].int_values, Some(vec![1, 4, 16, 16]));
    // Compute nodes: the three of small() + Reshape, MatMul, HardSwish; the rest folded.
    assert_eq!(a.nodes.len(), 6);
    assert_eq!(a.constant_nodes.len(), 5);
}

#[test]
fn shape_terms_are_optional_and_add_per_node_and_per_byte_costs() {
    use splitnets_cost_model::split::SideWork;
    // Profiles without shape terms (both shipped ones) load with them at zero.
    let mut p: HardwareProfile = toml::from_str(presets::HEADSET).unwrap();
    assert!(p.sensor.seconds_per_node.is_zero());
    assert!(p.sensor.seconds_per_activation_byte.is_zero());
    assert!(p.sensor.seconds_per_weight_byte.is_zero());
    // The shipped host profile (written by `calibrate`, with the terms) loads and validates.
    let host: HardwareProfile = toml::from_str(include_str!("../profiles/host.toml")).unwrap();
    host.validate().unwrap();

    let mut w = SideWork::default();
    w.add_work(OpClass::Gemm, 1000, 8_000, 4_000, false);
    w.add_work(OpClass::Conv, 2000, 10_000, 400, false);
    // An epilogue: free when fused, its shape terms too.
    w.add_work(OpClass::Elementwise, 500, 4_000, 0, true);
    let c = &mut p.sensor;
    c.seconds_per_node.conv = 1e-6;
    c.seconds_per_activation_byte.conv = 1e-10;
    c.seconds_per_weight_byte.gemm = 2e-10;
    c.seconds_per_activation_byte.elementwise = 1.0;
    c.fuses_conv_epilogues = true;
    let fused_base = {
        let mut c0 = c.clone();
        c0.seconds_per_node = Default::default();
        c0.seconds_per_activation_byte = Default::default();
        c0.seconds_per_weight_byte = Default::default();
        w.seconds(&c0)
    };
    let extra = 1e-6 + 10_000.0 * 1e-10 + 4_000.0 * 2e-10;
    assert!((w.seconds(c) - (fused_base + extra)).abs() < 1e-15);
    // Unfused, the epilogue's 4 kB at 1 s/byte count.
    c.fuses_conv_epilogues = false;
    assert!(w.seconds(c) > 4_000.0);
    // The new fields round-trip through TOML and are checked by validate().
    let text = toml::to_string(&p).unwrap();
    let back: HardwareProfile = toml::from_str(&text).unwrap();
    assert_eq!(back, p);
    p.sensor.seconds_per_node.pool = -1.0;
    assert!(p.validate().is_err());
}
