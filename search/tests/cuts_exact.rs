//! Cuts are exact: for the cuts of every model tested, head then tail reproduces the whole
//! model's output bit for bit (float passthrough), and our head's node set equals the one
//! `onnx.utils.extract_model` extracts for the same boundary.
//!
//! ONNX Runtime runs with graph optimizations off here: fusions such as folding a BatchNorm into
//! the Conv before it change the rounding when a cut separates the two, so bit-exactness is a
//! property of the cut graphs as written, which is what this test checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use splitnets_camera::rig::SplitMix64;
use splitnets_cost_model::graph::analyze;
use splitnets_onnx as onnx;
use splitnets_runtime::onnx_runtime::{MultiIoModel, NamedTensor, SessionOptions};
use splitnets_search::cuts::{self, Cut};
use splitnets_search::onnx_cut::{runnable_original, split_model};

fn light_dir() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend/test/data/light'))"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "Python onnx is required (scripts/setup.sh)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn bundle_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/bundles/hand-designed-4view")
}

/// Up to `n` cuts spread evenly over the list (all when `n` is None), multi-tensor cuts included.
fn pick(cuts: &[Cut], n: Option<usize>) -> Vec<&Cut> {
    match n {
        None => cuts.iter().collect(),
        Some(n) if cuts.len() <= n => cuts.iter().collect(),
        Some(n) => {
            let mut v: Vec<&Cut> = (0..n)
                .map(|i| &cuts[i * (cuts.len() - 1) / (n - 1)])
                .collect();
            if let Some(multi) = cuts.iter().find(|c| c.crossing.len() > 1) {
                v.push(multi);
            }
            v
        }
    }
}

fn check_model(path: &Path, shapes: &[(&str, Vec<usize>)], sample: Option<usize>) {
    let model = onnx::read_model(path).unwrap();
    let spec = onnx::cost_graph(&model).unwrap();
    let overrides: HashMap<String, Vec<usize>> = shapes
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let g = analyze(&spec, &overrides).unwrap();
    let all = cuts::enumerate(&g, 3, 2_000_000).unwrap();
    assert!(!all.is_empty(), "{}: no cuts", path.display());
    let chosen = pick(&all, sample);

    let mut rng = SplitMix64::new(7);
    let inputs: Vec<NamedTensor> = g
        .inputs
        .iter()
        .map(|&t| {
            let info = &g.tensors[t];
            let n: usize = info.shape.iter().product();
            NamedTensor {
                name: info.name.clone(),
                shape: info.shape.clone(),
                data: (0..n).map(|_| rng.next_f64() as f32).collect(),
            }
        })
        .collect();
    let opts = SessionOptions::default();
    let whole = runnable_original(&model, &g).unwrap();
    let expected = MultiIoModel::from_bytes("whole", &whole.encode_to_vec(), opts, false)
        .unwrap()
        .run(&inputs)
        .unwrap();

    let mut boundaries = Vec::new();
    for cut in &chosen {
        let (head, tail) = split_model(&model, &g, cut).unwrap();
        let names: Vec<String> = cut
            .crossing
            .iter()
            .map(|&t| g.tensors[t].name.clone())
            .collect();
        let mut h = MultiIoModel::from_bytes("head", &head.encode_to_vec(), opts, false)
            .unwrap_or_else(|e| panic!("{}: head of cut {names:?}: {e}", path.display()));
        let mid = h.run(&inputs).unwrap();
        let tail_inputs: Vec<String> = tail
            .graph
            .as_ref()
            .unwrap()
            .input
            .iter()
            .map(|v| v.name().to_string())
            .collect();
        let feed: Vec<NamedTensor> = mid
            .into_iter()
            .filter(|t| tail_inputs.contains(&t.name))
            .collect();
        let mut t = MultiIoModel::from_bytes("tail", &tail.encode_to_vec(), opts, false)
            .unwrap_or_else(|e| panic!("{}: tail of cut {names:?}: {e}", path.display()));
        let got = t.run(&feed).unwrap();
        assert_eq!(got.len(), expected.len());
        for (a, b) in got.iter().zip(&expected) {
            assert_eq!(a.shape, b.shape);
            let same = a
                .data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{}: cut {names:?} changes output {}",
                path.display(),
                a.name
            );
        }
        let head_nodes: Vec<Vec<String>> = head
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.output.clone())
            .collect();
        boundaries.push(serde_json::json!({ "outputs": names, "nodes": head_nodes }));
    }

    // The reference cutter must pick the same nodes for the same boundary.
    let whole_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(whole_path.path(), whole.encode_to_vec()).unwrap();
    let cuts_path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cuts_path.path(), serde_json::to_vec(&boundaries).unwrap()).unwrap();
    let inputs_names: Vec<String> = inputs.iter().map(|t| t.name.clone()).collect();
    let script = r#"
import json, sys, onnx
from onnx.utils import Extractor
m = onnx.shape_inference.infer_shapes(onnx.load(sys.argv[1]))
ex = Extractor(m)
bad = 0
for c in json.load(open(sys.argv[2])):
    sub = ex.extract_model(json.loads(sys.argv[3]), c["outputs"])
    theirs = sorted(tuple(n.output) for n in sub.graph.node)
    ours = sorted(tuple(o) for o in c["nodes"])
    if theirs != ours:
        bad += 1
        print("mismatch for", c["outputs"], len(theirs), len(ours))
sys.exit(1 if bad else 0)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(whole_path.path())
        .arg(cuts_path.path())
        .arg(serde_json::to_string(&inputs_names).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: node sets differ from onnx.utils.extract_model:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}: {} cuts enumerated, {} checked exactly",
        path.display(),
        all.len(),
        chosen.len()
    );
}

#[test]
fn every_cut_of_the_projects_own_models_is_exact() {
    check_model(&bundle_dir().join("head.onnx"), &[], None);
    check_model(
        &bundle_dir().join("tail.onnx"),
        &[("features", vec![4, 4, 7, 7])],
        None,
    );
}

#[test]
fn every_cut_of_squeezenet_shufflenet_and_resnet50_is_exact() {
    for m in [
        "light_squeezenet.onnx",
        "light_shufflenet.onnx",
        "light_resnet50.onnx",
    ] {
        check_model(&light_dir().join(m), &[], None);
    }
}

/// Inception v1 (700 cuts with up to 3 crossing tensors) and DenseNet-121 (667) are checked on a
/// spread of their cuts, multi-tensor ones included, to keep CI time bounded;
/// `SPLITNETS_EXACT_ALL_CUTS=1` checks every one (about 10 minutes on 2 cores).
#[test]
fn cuts_of_inception_and_densenet_are_exact() {
    let sample = if std::env::var_os("SPLITNETS_EXACT_ALL_CUTS").is_some() {
        None
    } else {
        Some(24)
    };
    for m in ["light_inception_v1.onnx", "light_densenet121.onnx"] {
        check_model(&light_dir().join(m), &[], sample);
    }
}
