//! The soak/fault-injection tool and the measurement harness, shortened: they must run end to
//! end and account for every frame. (Their figures — memory growth, reconnection times,
//! simulator error — are performance results: they live in the committed reports, not here.)

use std::process::Command;

use splitnets_tests::{daemons_bin_dir, demo_bundle};

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
