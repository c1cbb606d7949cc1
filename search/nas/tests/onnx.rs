//! The exported ONNX head and tail: the cost model's own graph analysis of them agrees with the
//! search's cost layout (so the constraints the search applied are those of the bundle).

use std::collections::HashMap;

use burn::prelude::*;
use splitnets_cost_model::graph::analyze;
use splitnets_cost_model::profile::HardwareProfile;
use splitnets_nas::Rng;
use splitnets_nas::cost::predict;
use splitnets_nas::data::Batch;
use splitnets_nas::onnx_export::{HEAD_INPUT, TAIL_INPUT, head_model, tail_model};
use splitnets_nas::space::{Arch, Fusion, NO_REDUCE, SearchSpace};
use splitnets_nas::supernet::{InitScheme, Supernet};
use splitnets_nas::train::calibrate;

#[test]
fn onnx_graphs_cost_what_the_search_predicted() {
    let space = SearchSpace::standard(28, 4, 10);
    let d = Device::flex();
    let net = Supernet::new(&space, InitScheme::SplitAware, 1, &d);
    let mut rng = Rng::new(4);
    let px = 28 * 28;
    let calib = vec![Batch {
        inputs: (0..2 * 4 * px).map(|_| rng.normal() as f32).collect(),
        labels: vec![0, 1],
        view_mask: vec![1.0; 8],
        batch: 2,
    }];
    let profile: HardwareProfile =
        toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
    // Every fusion at a split after a stage, and every fusion after the classifier.
    let last = space.stages.len();
    let cases = Fusion::ALL
        .into_iter()
        .enumerate()
        .map(|(k, f)| (1 + k, f))
        .chain(Fusion::ALL.into_iter().map(|f| (last + 1, f)));
    for (split, fusion) in cases {
        let mut arch = Arch::random(&space, &mut rng);
        arch.fusion = fusion;
        arch.split = split;
        arch.c_red = if split > last { NO_REDUCE } else { 4 };
        assert!(arch.is_in(&space), "{}", arch.short());
        let stats = calibrate(&net, &space, &arch, &calib, &d);
        let w = net.export(&space, &arch, &stats);
        let fside = space.sides()[arch.split.min(last)];
        let head = splitnets_onnx::cost_graph(&head_model(&w, 28, fside)).unwrap();
        let tail = splitnets_onnx::cost_graph(&tail_model(&w, fside)).unwrap();
        let head = analyze(&head, &HashMap::new()).unwrap();
        let tail_input: Vec<usize> = std::iter::once(4)
            .chain(arch.feature_shape(&space))
            .collect();
        let shapes = HashMap::from([(TAIL_INPUT.to_string(), tail_input)]);
        let tail = analyze(&tail, &shapes).unwrap();
        let predicted = predict(&space, &arch, &profile, 30.0);
        assert!(head.tensor_id(HEAD_INPUT).is_some());
        assert_eq!(head.total_macs(), predicted.sensor_macs, "{}", arch.short());
        let (a, b) = (tail.total_macs() as f64, predicted.aggregator_macs as f64);
        assert!(
            (a - b).abs() <= 0.02 * b,
            "{}: tail {a} vs predicted {b}",
            arch.short()
        );
    }
}
