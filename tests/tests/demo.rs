//! The README's demo command, shortened: it must run and report.

use std::process::Command;

use splitnets_tests::daemons_bin_dir;

#[test]
fn the_demo_runs_and_reports_accuracy_latency_and_bytes() {
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(daemons_bin_dir().join("splitnets-demo"))
        .arg("--bundle")
        .arg(splitnets_tests::demo_bundle())
        .args([
            "--frames",
            "30",
            "--fps",
            "30",
            "--print-every",
            "10",
            "--deadline-ms",
            "1000",
        ])
        .arg("--json")
        .arg(report.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "distributed (sensors",
        "end to end",
        "gRPC message",
        "frame     0",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    let r = &json["report"];
    assert_eq!(r["predictions"], 30);
    assert_eq!(r["agreement_with_local"], 1.0, "{r}");
}
