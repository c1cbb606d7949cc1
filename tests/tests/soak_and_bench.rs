//! The soak/fault-injection tool and the measurement harness, shortened: they must run end to
//! end and account for every frame. (Their figures — memory growth, reconnection times,
//! simulator error — are performance results: they live in the committed reports, not here.)

use std::process::Command;

use splitnets_tests::{daemons_bin_dir, demo_bundle, hand_designed_bundle};

#[test]
fn a_short_soak_loses_no_frame_without_faults_and_recovers_from_every_fault() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(daemons_bin_dir().join("splitnets-soak"))
        .arg("--bundle")
        .arg(demo_bundle())
        .args(["--steady-s", "4", "--warmup-s", "1", "--sample-s", "1"])
        .args(["--faults-s", "16", "--fault-every-s", "3"])
        .args(["--aggregator-fault-share", "0.5", "--max-down-s", "1"])
        // A generous deadline: this checks that no frame is lost, not how fast frames are on a
        // machine shared with other tests.
        .args(["--deadline-ms", "500"])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    let steady = &report["steady"];
    assert_eq!(steady["frames_expected_per_view"], 120, "{steady}");
    assert_eq!(steady["view_frames_lost"], 0, "{steady}");
    assert_eq!(steady["frames_fused_all_views"], 120, "{steady}");
    let faults = report["faults"].as_array().unwrap();
    assert!(faults.len() >= 2, "{report}");
    assert!(
        faults.iter().any(|f| f["target"] == "aggregator"),
        "{report}"
    );
    for f in faults {
        // Every camera's frames were fused again after each fault (within the tool's 20 s).
        assert!(f["recover_s"].is_number(), "{f}");
        assert!(f["view_frames_lost"].as_u64().unwrap() > 0, "{f}");
    }
    for file in ["report.md", "rss.csv", "faults.csv"] {
        assert!(out_dir.path().join(file).is_file(), "{file}");
    }
}

#[test]
fn the_harness_measures_one_and_two_sensors_and_puts_the_simulator_beside_them() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(daemons_bin_dir().join("splitnets-bench"))
        .arg("sensors")
        .arg("--bundle")
        .arg(demo_bundle())
        .args([
            "--counts",
            "1,2",
            "--measure-s",
            "2",
            "--warmup-s",
            "1",
            "--repeat",
            "1",
        ])
        .args(["--deadline-ms", "500"])
        .arg("--profile")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../cost-model/profiles/host.toml"
        ))
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("sensors.json")).unwrap(),
    )
    .unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, sensors) in runs.iter().zip([1, 2]) {
        assert_eq!(run["sensors"], sensors);
        assert_eq!(run["frames"], 60, "{run}");
        assert_eq!(run["degraded"], 0, "{run}");
        // The simulator ran the same configuration and fused every frame it simulated.
        assert_eq!(run["simulated"]["frames_degraded"], 0, "{run}");
        assert!(run["simulated"]["end_to_end"]["p50"].as_f64().unwrap() > 0.0);
    }
    assert!(stdout.contains("| 2 (wait fit) |"), "{stdout}");
    // The fit is written for `whatif --transport-from`.
    let whatif = Command::new(daemons_bin_dir().join("splitnets-bench"))
        .arg("whatif")
        .arg("--bundle")
        .arg(demo_bundle())
        .args(["--sensors", "4,32", "--frames", "300"])
        .arg("--transport-from")
        .arg(out_dir.path().join("fit.json"))
        .arg("--out")
        .arg(out_dir.path().join("whatif"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&whatif.stdout);
    assert!(whatif.status.success(), "{text}");
    assert!(text.contains("| 32 | shared bus |"), "{text}");
}

#[test]
fn the_latency_harness_measures_every_scenario_beside_prediction_and_baselines() {
    let out_dir = tempfile::tempdir().unwrap();
    let deadline_ms = 5.0;
    let out = Command::new(daemons_bin_dir().join("splitnets-bench"))
        .arg("latency")
        .arg("--bundle")
        .arg(hand_designed_bundle())
        .args([
            "--sensors",
            "1,2",
            "--rates",
            "30,max",
            "--emulation",
            "both",
        ])
        .args([
            "--window-s",
            "0.5",
            "--max-windows",
            "4",
            "--warmup-s",
            "0.5",
        ])
        .args(["--inprocess-frames", "50", "--paced-s", "0.5"])
        .args(["--tonic-messages", "200", "--missing-view-deadline-ms", "5"])
        .arg("--host-profile")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../cost-model/profiles/host.toml"
        ))
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(out_dir.path().join(f)).unwrap();
    let report: serde_json::Value = serde_json::from_str(&read("latency.json")).unwrap();
    // 2 sensor counts × (30 fps and max without emulation, 30 fps with it) + one camera missing.
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 7);
    for s in scenarios {
        let name = &s["scenario"];
        assert!(s["windows"].as_array().unwrap().len() >= 3, "{name}");
        let samples = s["samples"].as_array().unwrap();
        assert!(!samples.is_empty(), "{name}");
        assert!(s["predicted"]["end_to_end_ms"].as_f64().unwrap() > 0.0);
        // The bytes each view sent are the bundle's link budget, exactly.
        for f in samples {
            assert_eq!(f["bytes_per_view"].as_f64().unwrap(), 247.0, "{name}");
        }
        let missing = s["scenario"]["sensors"] != s["scenario"]["views"];
        if missing {
            // Every frame was fused without the missing camera, never before its deadline.
            for f in samples {
                assert_eq!(f["degraded"], true, "{f}");
                assert!(f["wait"].as_f64().unwrap() >= deadline_ms - 1e-3, "{f}");
            }
        }
        if s["scenario"]["emulation"] == true {
            assert!(s["emulation_detail"].as_str().unwrap().contains("shaper"));
        }
    }
    // Baselines of the same run: in process (hot and paced, per view count), bare tonic.
    assert_eq!(report["inprocess"].as_array().unwrap().len(), 4);
    assert_eq!(report["bare_tonic"]["message_bytes"], 247);
    assert!(
        report["bare_tonic"]["messages_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The floors: the paced bare stream (2 connections, and 1 for the one-sensor line) timed
    // one way per message, and the two thread hand-offs alone, every frame measured.
    for paced in ["bare_tonic_paced", "bare_tonic_paced_one_stream"] {
        let one_way = report[paced]["one_way_ms"].as_array().unwrap();
        assert!(!one_way.is_empty(), "{paced}");
        for ms in one_way {
            assert!(ms.as_f64().unwrap() > 0.0, "{paced}: {ms}");
        }
    }
    assert_eq!(report["bare_tonic_paced"]["streams"], 2);
    assert_eq!(report["bare_tonic_paced_one_stream"]["streams"], 1);
    for kind in ["thread_to_runtime_ms", "runtime_to_thread_ms"] {
        assert_eq!(
            report["handoff_floor"][kind].as_array().unwrap().len(),
            30,
            "{kind}"
        );
    }
    assert!(read("latency.md").contains("Floors on this host"));
    let csv = read("latency.csv");
    assert!(
        csv.starts_with("Concurrency,Request Rate,Inferences/Second,Client Send,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 8);
    assert!(read("latency.md").contains("## Targets"));
    assert!(read("latency.svg").starts_with("<svg"));
}
