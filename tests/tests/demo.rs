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

/// `splitnets-watch` prints what the aggregator decides, as JSON lines, with no custom client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_prints_predictions_as_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = splitnets_tests::cluster(&splitnets_tests::demo_bundle(), tmp.path(), 100).await;
    let watcher = tokio::process::Command::new(daemons_bin_dir().join("splitnets-watch"))
        .args(["--aggregator", &c.endpoint(), "--json", "--count", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let args = splitnets_tests::sensor_args(Some(30), 30.0, splitnets_tests::trigger_in(1500));
    for v in 0..4 {
        c.start_sensor(v, &args).unwrap();
    }
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        watcher.wait_with_output(),
    )
    .await
    .expect("the watcher ends after --count")
    .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for l in &lines {
        assert!(
            l["class_name"].as_str().is_some_and(|s| !s.is_empty()),
            "{l}"
        );
        let conf = l["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&conf), "{l}");
        assert!(!l["views_used"].as_array().unwrap().is_empty(), "{l}");
    }
    c.wait_sensors(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    c.stop().await.unwrap();
}
