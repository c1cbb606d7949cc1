//! The ONNX decoder and the ONNX → cost-graph conversion the planner runs on a user's model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(model) = splitnets_onnx::decode_model(bytes, "fuzz") {
        let _ = splitnets_onnx::cost_graph(&model);
    }
});
