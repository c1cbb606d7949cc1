//! The runtime holds under what a systems engineer meets in the first hour: max rate, a fleet
//! restarted with a new trigger, sensors stopped with no aggregator.

use std::process::Command;
use std::time::{Duration, Instant};

use splitnets_deploy::metric_sum;
use splitnets_tests::{cluster, daemons_bin_dir, demo_bundle, run_ok, sensor_args, trigger_in};

/// `splitnets-demo --fps 0`: credits keep the sensors in step, so (nearly) every frame fuses
/// from all four views, and the demo prints its throughput.
#[test]
fn max_rate_fuses_frames_from_all_views() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("report.json");
    let frames = 2000;
    let stdout = run_ok(
        Command::new(daemons_bin_dir().join("splitnets-demo"))
            .args([
                "--fps",
                "0",
                "--frames",
                &frames.to_string(),
                "--print-every",
                "0",
            ])
            .arg("--json")
            .arg(&json),
    );
    assert!(stdout.contains("fused frames/s"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let report = &r["report"];
    let predictions = report["predictions"].as_u64().unwrap();
    let partial = report["partial_predictions"].as_u64().unwrap();
    assert_eq!(predictions, frames, "{stdout}");
    assert!(
        partial * 100 <= predictions,
        "{partial} of {predictions} frames fused from fewer views: {stdout}"
    );
    assert!(
        report["throughput"]["fused_frames_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

/// Sensors restarted with a new `--start-at-unix-ms` against a running aggregator: the new
/// epoch is recognised at once and no frame of it is lost as late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_restarted_with_a_new_trigger_fuses_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cluster(&demo_bundle(), tmp.path(), 100).await;
    let frames = 45u64;
    for round in 0..2 {
        let mut watch = c.watch().await.unwrap();
        let args = sensor_args(Some(frames), 30.0, trigger_in(1500));
        for v in 0..4 {
            c.start_sensor(v, &args).unwrap();
        }
        let mut full = 0;
        let mut seen = 0;
        let wait = async {
            while let Some(p) = watch.message().await.unwrap() {
                seen += 1;
                full += usize::from(p.views_used.len() == 4);
                if p.sequence + 1 >= frames {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("predictions arrive");
        c.wait_sensors(Duration::from_secs(30)).await.unwrap();
        assert!(
            full as u64 >= frames - 2,
            "round {round}: {full} of {seen} predictions had all views"
        );
    }
    let metrics = c.metrics_text().await.unwrap();
    assert_eq!(
        metric_sum(&metrics, "aggregator_late_views_total", &[]),
        0.0,
        "{metrics}"
    );
    c.stop().await.unwrap();
}

fn sensor(args: &[&str]) -> std::process::Child {
    Command::new(daemons_bin_dir().join("sensor-node"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "--bundle",
            demo_bundle().to_str().unwrap(),
            "--view",
            "0",
            "--aggregator",
            "http://127.0.0.1:9",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// No aggregator anywhere: SIGTERM ends the sensor within a second; a camera that has finished
/// its frames gives up after its flush timeout and says how many frames it could not deliver.
#[test]
fn sensors_exit_promptly_without_an_aggregator() {
    let mut running = sensor(&["--fps", "30"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(running.try_wait().unwrap().is_none(), "still retrying");
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut running, Duration::from_secs(5));
    let took = sent.elapsed();
    if status.is_none() {
        let _ = running.kill();
    }
    assert!(status.is_some(), "no exit within 5 s of SIGTERM");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");

    let mut finished = sensor(&[
        "--fps",
        "100",
        "--frames",
        "20",
        "--flush-timeout-ms",
        "500",
    ]);
    let status = wait_exit(&mut finished, Duration::from_secs(15));
    if status.is_none() {
        let _ = finished.kill();
    }
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let out = finished.wait_with_output().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("a JSON report on stdout");
    assert!(report["frames_unsent"].as_u64().unwrap() > 0, "{report}");
}
