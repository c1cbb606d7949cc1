//! The aggregator's dashboard in a real browser (headless Chromium over the DevTools protocol):
//! four views, a prediction and latency figures appear and update; a stopped sensor's view shows
//! as missing within about one fusion deadline; only the camera started with `--debug-preview`
//! shows a thumbnail; a screenshot is saved.

use std::time::Duration;

use splitnets_tests::browser::Browser;
use splitnets_tests::{cluster, demo_bundle, sensor_args, trigger_in};

const DEADLINE_MS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_views_prediction_latency_and_a_missing_camera() {
    let tmp = tempfile::tempdir().unwrap();
    // Every view shows its feature as one heat map per channel.
    let channels = splitnets_proto::bundle::Bundle::load(&demo_bundle())
        .unwrap()
        .manifest
        .split
        .feature_shape[1];
    let ready = format!(
        "document.querySelectorAll('.view:not(.missing)').length === 4 \
         && document.querySelectorAll('.view .maps canvas').length === {} \
         && document.getElementById('cls').textContent !== '–' \
         && !isNaN(parseFloat(document.querySelector('[data-stage=end_to_end] td:nth-child(2)').textContent))",
        4 * channels
    );
    let mut c = cluster(&demo_bundle(), tmp.path(), DEADLINE_MS).await;
    let trigger = trigger_in(1500);
    for v in 0..4 {
        let mut args = sensor_args(None, 30.0, trigger);
        // Only camera 0 sends a debug thumbnail (off by default).
        if v == 0 {
            args.push("--debug-preview".into());
        }
        c.start_sensor(v, &args).unwrap();
    }
    let url = format!("http://{}/", c.admin);
    // The browser is blocking I/O: its own thread.
    let mut browser = tokio::task::spawn_blocking(move || Browser::open(&url).unwrap())
        .await
        .unwrap();
    let (mut browser, stopped_after) = {
        let b = tokio::task::spawn_blocking(move || {
            browser
                .wait_for(&ready, Duration::from_secs(30))
                .expect("four views, a prediction and latency figures");
            // (The heat maps appear once the tail has sampled a frame for the page.)
            // Camera 0's thumbnail arrives (once a second); no other camera sends pixels.
            browser
                .wait_for(
                    "document.querySelector('.view[data-view=\"0\"] .preview canvas') !== null",
                    Duration::from_secs(10),
                )
                .expect("camera 0's debug preview");
            let others = browser
                .eval("document.querySelectorAll('.view .preview canvas').length")
                .unwrap();
            assert_eq!(others, 1, "{others}");
            // It updates: the prediction count moves on.
            let count = |b: &mut Browser| -> u64 {
                b.eval("parseInt(document.getElementById('count').textContent)")
                    .unwrap()
                    .as_u64()
                    .unwrap()
            };
            let first = count(&mut browser);
            std::thread::sleep(Duration::from_millis(1500));
            let second = count(&mut browser);
            assert!(second > first + 10, "{first} → {second}");
            browser
        })
        .await
        .unwrap();
        let mut b = b;
        c.stop_sensor(2).await.unwrap();
        let took = tokio::task::spawn_blocking(move || {
            let took = b
                .wait_for(
                    "document.querySelector('.view[data-view=\"2\"]').classList.contains('missing') \
                     && document.querySelectorAll('.view.missing').length === 1",
                    Duration::from_secs(10),
                )
                .expect("view 2 shown missing");
            (b, took)
        })
        .await
        .unwrap();
        (took.0, took.1)
    };
    // The page learns of the missing view from the first frame fused without it (one fusion
    // deadline) at its next update (the feed period, 250 ms); polling adds 50 ms.
    eprintln!("view 2 shown missing {stopped_after:?} after its sensor stopped");
    assert!(stopped_after < Duration::from_secs(3), "{stopped_after:?}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let path = shot.clone();
    tokio::task::spawn_blocking(move || browser.screenshot(&path).unwrap())
        .await
        .unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    c.stop().await.unwrap();
}
