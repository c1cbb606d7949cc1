//! The project's ONNX schema against real model files: decode then re-encode is byte-identical.
//!
//! The files are the real network topologies shipped in the Python `onnx` package (installed by
//! scripts/setup.sh) and the committed demo bundle's head and tail.

use std::path::PathBuf;
use std::process::Command;

use prost::Message;
use splitnets_onnx as onnx;

fn onnx_light_models() -> Vec<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend/test/data/light'))"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python onnx package is required (scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the light_*.onnx models in {}",
        dir.display()
    );
    files
}

#[test]
fn real_models_round_trip_without_loss() {
    let mut files = onnx_light_models();
    let bundle =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/bundles/fashion-mnist-4view");
    files.push(bundle.join("head.onnx"));
    files.push(bundle.join("tail.onnx"));
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let model = onnx::decode_model(&bytes, &f.display().to_string()).unwrap();
        let graph = model.graph.as_ref().unwrap();
        assert!(!graph.node.is_empty(), "{}", f.display());
        assert_eq!(
            model.encode_to_vec(),
            bytes,
            "{} changed on re-encode",
            f.display()
        );
    }
}
