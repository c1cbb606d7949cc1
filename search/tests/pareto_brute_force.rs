//! The planner against brute force on a small branchy graph: every subset of nodes is tried, the
//! valid cuts are exactly the enumerated ones, and the planner's Pareto flags equal the
//! non-dominated set computed independently.

use std::collections::BTreeSet;

use splitnets_cost_model::graph::analyze;
use splitnets_cost_model::profile::{HardwareProfile, presets};
use splitnets_cost_model::split::{crossing_tensors, evaluate, summarize};
use splitnets_onnx::{self as onnx, Dim};
use splitnets_search::{cuts, plan};

/// x → conv a → relu a ─┬─ conv d ───────────────┐
///   └→ conv b → relu b ─┴ add1 → conv c → relu c ┴ add2 → global pool → flatten → gemm
fn branchy_model() -> onnx::ModelProto {
    let conv = |name: &str, input: &str, out: &str, w: &str| {
        onnx::node(
            "Conv",
            name,
            &[input, w],
            &[out],
            vec![onnx::attr_ints("pads", &[1, 1, 1, 1])],
        )
    };
    let nodes = vec![
        conv("conv_a", "x", "a", "wa"),
        onnx::node("Relu", "relu_a", &["a"], &["ra"], vec![]),
        conv("conv_b", "x", "b", "wb"),
        onnx::node("Relu", "relu_b", &["b"], &["rb"], vec![]),
        onnx::node("Add", "add1", &["ra", "rb"], &["s1"], vec![]),
        conv("conv_c", "s1", "c", "wc"),
        onnx::node("Relu", "relu_c", &["c"], &["rc"], vec![]),
        conv("conv_d", "ra", "d", "wd"),
        onnx::node("Add", "add2", &["rc", "d"], &["s2"], vec![]),
        onnx::node("GlobalAveragePool", "gap", &["s2"], &["g"], vec![]),
        onnx::node("Flatten", "flatten", &["g"], &["f"], vec![]),
        onnx::node(
            "Gemm",
            "fc",
            &["f", "wf"],
            &["y"],
            vec![onnx::attr_int("transB", 1)],
        ),
    ];
    let w = |name: &str, o: i64, i: i64, k: i64| {
        onnx::float_initializer(name, &[o, i, k, k], &vec![0.01; (o * i * k * k) as usize])
    };
    let graph = onnx::GraphProto {
        name: Some("branchy".into()),
        node: nodes,
        initializer: vec![
            w("wa", 8, 3, 3),
            w("wb", 8, 3, 3),
            w("wc", 16, 8, 3),
            w("wd", 16, 8, 3),
            onnx::float_initializer("wf", &[10, 16], &[0.01; 160]),
        ],
        input: vec![onnx::float_value_info(
            "x",
            &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(16), Dim::Fixed(16)],
        )],
        output: vec![onnx::float_value_info(
            "y",
            &[Dim::Fixed(1), Dim::Fixed(10)],
        )],
        ..Default::default()
    };
    onnx::model(graph, "brute-force test graph")
}

#[test]
fn cuts_and_pareto_front_equal_brute_force() {
    let g = analyze(
        &onnx::cost_graph(&branchy_model()).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let n = g.nodes.len();
    assert_eq!(n, 12);
    let max_crossing = 2;

    // Brute force: every subset that is down-closed, computes no graph output on the sensor, is
    // non-empty, and has at most `max_crossing` crossing tensors.
    let mut brute: BTreeSet<Vec<bool>> = BTreeSet::new();
    for mask in 1u32..(1 << n) {
        let on: Vec<bool> = (0..n).map(|i| mask >> i & 1 == 1).collect();
        let down_closed = (0..n).all(|i| {
            !on[i]
                || g.nodes[i]
                    .inputs
                    .iter()
                    .filter_map(|&t| g.tensors[t].producer)
                    .all(|p| on[p])
        });
        let computes_output = g
            .outputs
            .iter()
            .filter_map(|&t| g.tensors[t].producer)
            .any(|p| on[p]);
        if down_closed && !computes_output {
            let crossing = crossing_tensors(&g, &on).unwrap();
            if crossing.len() <= max_crossing {
                brute.insert(on);
            }
        }
    }
    let enumerated = cuts::enumerate(&g, max_crossing, 1_000_000).unwrap();
    let found: BTreeSet<Vec<bool>> = enumerated.iter().map(|c| c.on_sensor.clone()).collect();
    assert_eq!(found.len(), enumerated.len(), "no cut enumerated twice");
    assert_eq!(found, brute, "enumerated cuts differ from brute force");
    assert!(
        brute.len() > n,
        "the graph is branchy: more cuts than a chain"
    );

    // Brute-force Pareto front over (end-to-end latency, link bytes, sensor memory).
    let mut profile: HardwareProfile = toml::from_str(presets::HEADSET).unwrap();
    profile.sensor.memory_bytes = 1 << 40; // every cut feasible: the front is over all of them
    let opts = plan::PlanOptions {
        bits: 8,
        fps: 1.0,
        latency_seconds: None,
        jpeg_frame_bytes: None,
        jpeg_frame_samples: None,
    };
    let sums = plan::summaries(&g, &enumerated);
    let p = plan::plan("branchy", &g, &enumerated, &sums, &profile, &opts);
    assert!(p.rows.iter().all(|r| r.feasible));
    let costs: Vec<[f64; 3]> = enumerated
        .iter()
        .map(|c| {
            let s = summarize(&g, &c.on_sensor).unwrap();
            let e = evaluate(&s, &profile, 8, None);
            [
                e.end_to_end_seconds,
                e.link_bytes_per_view as f64,
                e.sensor_memory_bytes as f64,
            ]
        })
        .collect();
    let brute_front: BTreeSet<usize> = (0..costs.len())
        .filter(|&i| {
            !(0..costs.len()).any(|j| {
                (0..3).all(|k| costs[j][k] <= costs[i][k])
                    && (0..3).any(|k| costs[j][k] < costs[i][k])
            })
        })
        .collect();
    let planner_front: BTreeSet<usize> = p
        .rows
        .iter()
        .filter(|r| r.pareto)
        .map(|r| r.cut_index)
        .collect();
    assert!(!brute_front.is_empty());
    assert_eq!(planner_front, brute_front);
    assert!(
        brute_front.len() < costs.len(),
        "some cut is dominated (otherwise the check says little)"
    );
}
