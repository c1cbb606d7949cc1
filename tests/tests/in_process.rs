//! The aggregator and four sensors as libraries in this one test process (mini-redis style:
//! listeners on port 0, shutdown futures, each daemon with its own metrics recorder), checked
//! frame by frame against the in-process reference pipeline.

use std::time::Duration;

use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::replay_frame;
use splitnets_ops::Metrics;
use splitnets_proto::bundle::Bundle;
use splitnets_runtime::{LocalPipeline, SessionOptions};
use splitnets_tests::{demo_bundle, unix_ms};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const FRAMES: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_and_sensors_in_one_process_equal_the_reference_pipeline() {
    let bundle = Bundle::load(&demo_bundle()).unwrap();
    let views = bundle.manifest.cameras.views;
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let agg_metrics = Metrics::new();
    let (stop_agg, agg_stopped) = oneshot::channel::<()>();
    let mut settings = aggregator::Settings::local(demo_bundle());
    settings.fusion_deadline = Duration::from_millis(200);
    let agg = tokio::spawn(aggregator::run(
        settings,
        bundle.clone(),
        grpc,
        admin,
        agg_metrics.clone(),
        async {
            let _ = agg_stopped.await;
        },
    ));

    // Watch before the sensors start, so no prediction is missed.
    let endpoint = format!("http://{grpc_addr}");
    let mut watch = splitnets_tests::watch_predictions(&endpoint).await;

    let trigger = unix_ms() + 1500;
    let mut sensors = Vec::new();
    let mut sensor_metrics = Vec::new();
    for view in 0..views {
        let mut s = sensor_node::Settings::local(demo_bundle(), view, endpoint.clone());
        s.frames = Some(FRAMES);
        s.start_at_unix_ms = Some(trigger);
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let m = Metrics::new();
        sensor_metrics.push(m.clone());
        sensors.push(tokio::spawn(sensor_node::run(
            s,
            bundle.clone(),
            admin,
            m,
            std::future::pending(),
        )));
    }

    let preds =
        splitnets_tests::collect_predictions(&mut watch, FRAMES, Duration::from_secs(30)).await;
    for s in sensors {
        let report = s.await.unwrap().expect("sensor finishes cleanly");
        assert_eq!(report.frames_sent, FRAMES, "{report:?}");
        assert_eq!(report.frames_acked, FRAMES, "{report:?}");
    }

    // Each daemon's /metrics holds only its own series.
    let agg_text = agg_metrics.render();
    assert!(agg_text.contains("aggregator_frames_received_total"));
    assert!(!agg_text.contains("sensor_frames_sent_total"));
    let sensor_text = sensor_metrics[0].render();
    assert!(sensor_text.contains(&format!("sensor_frames_sent_total {FRAMES}")));
    assert!(!sensor_text.contains("aggregator_"));
    // Both daemons' exposition passes Prometheus's own linter (HELP on every metric, units).
    for (who, text) in [("aggregator", &agg_text), ("sensor", &sensor_text)] {
        promtool_check(who, text);
    }
    assert!(
        agg_text.contains("aggregator_end_to_end_seconds_bucket"),
        "latencies are histograms"
    );
    let http = reqwest_free_get(admin_addr, "/ready").await;
    assert!(http.starts_with("HTTP/1.1 200"), "{http}");

    let _ = stop_agg.send(());
    agg.await.unwrap().expect("aggregator drains cleanly");

    // The same frames through the same stages in this process: bit for bit.
    let set = dataset::load(std::path::Path::new(dataset::DEFAULT_DIR), Split::Test).unwrap();
    let rig = bundle.manifest.cameras.clone();
    let mut local = LocalPipeline::new(bundle, SessionOptions::default()).unwrap();
    let mut all_views = 0;
    for (seq, p) in &preds {
        all_views += usize::from(p.views_used.len() == views as usize);
        let pixels: Vec<Vec<u8>> = p
            .views_used
            .iter()
            .map(|&v| replay_frame(&rig, &set, v, *seq))
            .collect();
        let (expected, _) = local.run_frame(&pixels, true).unwrap();
        assert_eq!(p.scores, expected, "frame {seq}");
        // The stages the latency harness splits a frame's time into: each view's capture time
        // (the earliest is the frame's), the hand-off to the tail thread, all within the end
        // to end.
        let captures: Vec<u64> = p.views.iter().map(|v| v.capture_time_unix_ns).collect();
        assert!(captures.iter().all(|&c| c > 0), "frame {seq}: {captures:?}");
        assert_eq!(captures.iter().min(), Some(&p.capture_time_unix_ns));
        assert!(p.handoff_ns > 0, "frame {seq}: no hand-off measured");
        assert!(
            p.wait_ns + p.handoff_ns + p.decode_ns + p.tail_ns <= p.end_to_end_ns,
            "frame {seq}: stages exceed the end to end: {p:?}"
        );
    }
    assert!(
        all_views as u64 >= FRAMES * 9 / 10,
        "only {all_views} of {FRAMES} frames fused all views"
    );
}

/// A minimal HTTP/1.1 GET (the test needs no HTTP client dependency).
async fn reqwest_free_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `promtool check metrics` on an exposition (scripts/setup.sh unpacks promtool; env.sh points
/// SPLITNETS_PROMTOOL at it).
fn promtool_check(who: &str, text: &str) {
    use std::io::Write;
    let promtool = std::env::var("SPLITNETS_PROMTOOL")
        .expect("SPLITNETS_PROMTOOL is set by scripts/env.sh (run scripts/setup.sh)");
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the {who}'s metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
