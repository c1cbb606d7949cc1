//! The split-aware architecture search as a user runs it: `splitnets-search nas --preset quick`
//! writes a Pareto front of bundles; the most accurate one runs in the daemons unchanged, scores
//! well above chance, and the distributed result equals the in-process pipeline.

use std::process::Command;

use splitnets_tests::{daemons_bin_dir, run_ok};

#[test]
fn quick_search_writes_bundles_the_daemons_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nas");
    let stdout = run_ok(
        Command::new(daemons_bin_dir().join("splitnets-search"))
            .args([
                "nas",
                "--data",
                "fashion-mnist-4view",
                "--profile",
                "headset",
            ])
            .args(["--preset", "quick", "--check-samples", "500", "--out"])
            .arg(&out),
    );
    for f in ["report.md", "report.csv", "report.svg", "outcome.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundles.json")).unwrap()).unwrap();
    let front = written.as_array().unwrap();
    assert!(front.len() >= 2, "{stdout}");
    // Every bundle: ONNX Runtime (through the codec) equals the reference forward.
    for b in front {
        let diff = b["runtime_check"]["max_abs_diff"].as_f64().unwrap();
        assert!(diff < 1e-2, "{b}");
    }
    let best = front
        .iter()
        .max_by(|a, b| {
            let acc = |x: &serde_json::Value| x["runtime_check"]["accuracy_through_codec"].as_f64();
            acc(a).partial_cmp(&acc(b)).unwrap()
        })
        .unwrap();
    let accuracy = best["runtime_check"]["accuracy_through_codec"]
        .as_f64()
        .unwrap();
    assert!(accuracy > 0.3, "best {accuracy} (chance 0.1): {stdout}");

    // The daemons run it unchanged: distributed equals one process, frame for frame.
    let report = run_in_daemons(best["dir"].as_str().unwrap(), tmp.path());
    assert!(
        report["accuracy_distributed"].as_f64().unwrap() > 0.3,
        "{report}"
    );
    // A member split after the classifier (the sensor sends its quantized logits, a rank-2
    // feature) runs too, when the front has one that is not the best.
    if let Some(logits) = front.iter().find(|b| {
        b["arch"].as_str().is_some_and(|a| a.contains("LOGITS")) && b["dir"] != best["dir"]
    }) {
        run_in_daemons(logits["dir"].as_str().unwrap(), tmp.path());
    }
}

/// Runs `bundle` in the daemons (one sensor per camera, the aggregator) for 90 frames and checks
/// that every prediction equals one process's and every frame is the budget's bytes; returns
/// the demo's report.
fn run_in_daemons(bundle: &str, tmp: &std::path::Path) -> serde_json::Value {
    let json = tmp.join("demo.json");
    let demo_out = run_ok(
        Command::new(daemons_bin_dir().join("splitnets-demo"))
            .args([
                "--bundle",
                bundle,
                "--frames",
                "90",
                "--fps",
                "30",
                "--print-every",
                "0",
            ])
            .arg("--json")
            .arg(&json),
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let report = &r["report"];
    assert_eq!(
        report["agreement_with_local"].as_f64(),
        Some(1.0),
        "{bundle}: {demo_out}"
    );
    assert_eq!(
        report["message_bytes_per_view_max"].as_u64(),
        report["link_budget_bytes_per_view"].as_u64(),
        "{bundle}: {demo_out}"
    );
    report.clone()
}

/// A bundle searched on the rendered shapes records its scene; the sensors render exactly the
/// frames it was tested on (a short search: this checks the mechanics, not the accuracy).
#[test]
fn shapes_bundles_replay_their_scene_in_the_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nas");
    run_ok(
        Command::new(daemons_bin_dir().join("splitnets-search"))
            .args([
                "nas", "--data", "shapes", "--preset", "quick", "--steps", "20",
            ])
            .args(["--check-samples", "100", "--out"])
            .arg(&out),
    );
    let bundle = splitnets_proto::bundle::Bundle::load(&out.join("front-00")).unwrap();
    let scene = bundle.manifest.scene.as_ref().expect("a scene");
    assert_eq!(scene.kind, "shapes");
    assert_eq!(bundle.manifest.classes.len(), 12);
    let json = tmp.path().join("demo.json");
    let demo_out = run_ok(
        Command::new(daemons_bin_dir().join("splitnets-demo"))
            .arg("--bundle")
            .arg(out.join("front-00"))
            .args([
                "--frames",
                "60",
                "--fps",
                "30",
                "--print-every",
                "0",
                "--json",
            ])
            .arg(&json),
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        r["report"]["agreement_with_local"].as_f64(),
        Some(1.0),
        "{demo_out}"
    );
    assert_eq!(r["report"]["predictions"].as_u64(), Some(60), "{demo_out}");
}
