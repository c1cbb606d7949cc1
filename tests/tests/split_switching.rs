//! Live split switching under an emulated bandwidth drop: a bundle set of three variants of the
//! demo network (float32, 8-bit and 4-bit features), four sensors whose links are shaped in
//! process from 2 Mbit/s down to 150 kbit/s and back. The aggregator must move the fleet to a
//! smaller variant when the float feature no longer fits, and back after recovery; no frame may
//! be lost, and every frame must equal the in-process pipeline of the variant it names.

use std::time::Duration;

use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::replay_frame;
use splitnets_ops::Metrics;
use splitnets_proto::bundle_set::BundleSet;
use splitnets_proto::codec::CodecSpec;
use splitnets_runtime::{LocalPipeline, SessionOptions};
use splitnets_tests::{bundle_with_codec_from, hand_designed_bundle, unix_ms};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const FPS: f64 = 30.0;
/// 16 s: the drop comes 4 s after the sensors start and lasts 6 s.
const FRAMES: u64 = 480;
const SCHEDULE: &str = "0:2000,4:150,10:2000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_drop_switches_to_a_smaller_variant_and_recovery_switches_back() {
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = [
        CodecSpec::Float32,
        CodecSpec::Affine {
            bits: 8,
            per_channel: false,
        },
        CodecSpec::Affine {
            bits: 4,
            per_channel: false,
        },
    ]
    .into_iter()
    .map(|c| {
        // The hand-designed network: its 196-element feature puts float32 above the dropped
        // link and 8 bits well below it (the demo's 784-element feature needs more).
        let dir = bundle_with_codec_from(&hand_designed_bundle(), tmp.path(), c);
        dir.file_name().unwrap().to_string_lossy().into_owned()
    })
    .collect();
    BundleSet::write_set_file(tmp.path(), &names).unwrap();
    let set = BundleSet::load(tmp.path()).unwrap();
    assert!(set.switchable && set.variants.len() == 3);
    let views = set.primary().manifest.cameras.views;
    // The set's budgets: float32 needs more than the dropped link, 8-bit fits it.
    let need = |v: usize| set.link_budget(v).bits_per_second_per_view;
    assert!(
        need(0) > 150e3 && need(1) < 0.75 * 150e3,
        "{} {}",
        need(0),
        need(1)
    );

    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let agg_metrics = Metrics::new();
    let (stop_agg, agg_stopped) = oneshot::channel::<()>();
    let mut settings = aggregator::Settings::local(tmp.path().to_path_buf());
    settings.fusion_deadline = Duration::from_millis(200);
    let agg = tokio::spawn(aggregator::run(
        settings,
        set.clone(),
        grpc,
        admin,
        agg_metrics.clone(),
        async {
            let _ = agg_stopped.await;
        },
    ));
    let endpoint = format!("http://{grpc_addr}");
    let mut watch = splitnets_tests::watch_predictions(&endpoint).await;

    // A dashboard page's feed: the switches must show on its timeline.
    let page = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let (mut seen, mut buf) = (String::new(), vec![0u8; 64 * 1024]);
        while !(seen.contains("split switch: variant 0 → 1")
            && seen.contains("split switch: variant 1 → 0"))
        {
            match tokio::time::timeout(Duration::from_secs(40), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for line in text.lines().filter(|l| l.contains("split switch")) {
                        seen.push_str(line);
                    }
                }
                _ => break,
            }
        }
        seen
    });

    let trigger = unix_ms() + 1500;
    let mut sensors = Vec::new();
    for view in 0..views {
        let mut s = sensor_node::Settings::local(tmp.path().to_path_buf(), view, endpoint.clone());
        s.frames = Some(FRAMES);
        s.fps = FPS;
        s.start_at_unix_ms = Some(trigger);
        s.emulate_link = Some(sensor_node::emulation::LinkEmulation {
            bandwidth_kbps: sensor_node::emulation::LinkEmulation::parse_bandwidth(SCHEDULE)
                .unwrap(),
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            seed: u64::from(view),
        });
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        sensors.push(tokio::spawn(sensor_node::run(
            s,
            set.clone(),
            admin,
            Metrics::new(),
            std::future::pending(),
        )));
    }

    let preds =
        splitnets_tests::collect_predictions(&mut watch, FRAMES, Duration::from_secs(30)).await;
    for s in sensors {
        let report = s.await.unwrap().expect("sensor finishes cleanly");
        assert_eq!(report.frames_sent, FRAMES, "{report:?}");
        assert_eq!(report.frames_acked, FRAMES, "{report:?}");
        assert_eq!(report.frames_dropped, 0, "{report:?}");
    }
    let metrics = agg_metrics.render();
    for l in metrics.lines().filter(|l| {
        l.starts_with("aggregator_split_switch_seconds_sum")
            || l.starts_with("aggregator_split_switch_seconds_count")
            || l.starts_with("aggregator_split_switch_frames_in_flight_total")
            || l.starts_with("aggregator_split_switch_seconds{quantile")
    }) {
        eprintln!("{l}");
    }
    let timeline = page.await.unwrap();
    assert!(
        timeline.contains("split switch: variant 0 → 1")
            && timeline.contains("split switch: variant 1 → 0"),
        "the dashboard's timeline shows both switches"
    );
    let _ = stop_agg.send(());
    agg.await.unwrap().expect("aggregator drains cleanly");

    // None lost: every frame fused with all its views.
    assert_eq!(preds.len() as u64, FRAMES);
    let partial: Vec<u64> = preds
        .values()
        .filter(|p| !p.views_missing.is_empty())
        .map(|p| p.sequence)
        .collect();
    assert!(
        partial.is_empty(),
        "frames fused without some views: {partial:?}"
    );
    // The variants the frames were finished with, as runs: full, smaller, full again.
    let mut runs: Vec<(u32, u64, u64)> = Vec::new();
    for p in preds.values() {
        match runs.last_mut() {
            Some((v, _, last)) if *v == p.variant => *last = p.sequence,
            _ => runs.push((p.variant, p.sequence, p.sequence)),
        }
    }
    eprintln!("variant runs (variant, first frame, last frame): {runs:?}");
    assert_eq!(runs.len(), 3, "one switch down and one back: {runs:?}");
    assert_eq!(runs[0].0, 0, "{runs:?}");
    assert!(runs[1].0 >= 1, "{runs:?}");
    assert_eq!(runs[2].0, 0, "{runs:?}");
    // The drop starts 4 s after the sensors (≈ frame 75 on the trigger), the recovery 6 s later;
    // switching back waits for its hold.
    assert!(runs[1].1 > 60, "switched down before the drop: {runs:?}");
    assert!(
        runs[2].1 > runs[1].1 + 150,
        "switched back before the recovery: {runs:?}"
    );
    for (name, want) in [
        ("aggregator_split_switches_total", 2.0),
        ("aggregator_variant_mismatched_views_total", 0.0),
    ] {
        let got = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        assert_eq!(got, Some(want), "{name} in\n{metrics}");
    }
    assert!(
        metrics.contains("aggregator_split_switch_seconds_count 2"),
        "{metrics}"
    );

    // Every frame equals the in-process pipeline of the variant that made it.
    let data = dataset::load(std::path::Path::new(dataset::DEFAULT_DIR), Split::Test).unwrap();
    let rig = set.primary().manifest.cameras.clone();
    let mut local: Vec<LocalPipeline> = set
        .variants
        .iter()
        .map(|b| LocalPipeline::new(b.clone(), SessionOptions::default()).unwrap())
        .collect();
    for (seq, p) in preds.iter().step_by(3) {
        let pixels: Vec<Vec<u8>> = p
            .views_used
            .iter()
            .map(|&v| replay_frame(&rig, &data, v, *seq))
            .collect();
        let (expected, _) = local[p.variant as usize].run_frame(&pixels, true).unwrap();
        assert_eq!(p.scores, expected, "frame {seq} (variant {})", p.variant);
    }
}
