//! Bounded fuzzing in CI (issue 8, item 6): random and mutated bytes through the ONNX decoder and
//! the ONNX → cost-graph conversion the planner runs on a user's model. Nothing may panic: a
//! model that is not one is a named error. The long runs use cargo-fuzz (`fuzz/`).

use proptest::prelude::*;
use splitnets_onnx::{cost_graph, decode_model};

const DEMO_HEAD: &[u8] = include_bytes!("../../../deploy/bundles/fashion-mnist-4view/head.onnx");

fn onnx_path(bytes: &[u8]) {
    if let Ok(model) = decode_model(bytes, "fuzz") {
        let _ = cost_graph(&model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_onnx_path(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        onnx_path(&bytes);
    }

    #[test]
    fn mutated_models_never_panic_the_onnx_path(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
    ) {
        let mut bytes = DEMO_HEAD.to_vec();
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = if v % 2 == 0 { v } else { bytes[i] ^ (1 << (v % 8)) };
        }
        onnx_path(&bytes);
    }
}

#[test]
fn the_demo_head_decodes_and_converts() {
    let model = decode_model(DEMO_HEAD, "head.onnx").unwrap();
    cost_graph(&model).expect("the demo head is a cost graph");
}
