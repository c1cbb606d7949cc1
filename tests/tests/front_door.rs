//! The aggregator's front door against hostile peers (issue 8, item 5): what a peer can make it
//! hold is bounded, every refusal is counted, and replies stay small. Figures at the issue's
//! scale: `cargo run --release -p splitnets-tests --example front_door_abuse`.

use std::time::Duration;

use splitnets_deploy::{ClusterOptions, LocalCluster, metric_sum};
use splitnets_proto::bundle::Bundle;
use splitnets_tests::abuse;
use splitnets_tests::{RawSensor, daemons_bin_dir, demo_bundle, unix_ms};

async fn guarded_cluster(work: &std::path::Path, args: &[&str]) -> LocalCluster {
    LocalCluster::start(ClusterOptions {
        bin_dir: daemons_bin_dir(),
        bundle: demo_bundle(),
        work_dir: work.to_path_buf(),
        fusion_deadline_ms: 50,
        listen: "127.0.0.1:0".parse().unwrap(),
        aggregator_args: args.iter().map(|s| (*s).to_string()).collect(),
        sensor_args: vec![],
    })
    .await
    .expect("aggregator starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_streams_without_hello_are_closed_and_counted() {
    let work = tempfile::tempdir().unwrap();
    let c = guarded_cluster(
        work.path(),
        &["--handshake-timeout-ms", "1500", "--max-connections", "12"],
    )
    .await;

    // Thirteen silent sockets against a limit of twelve: at least one is refused at once (more
    // if a connection from the start-up health check still holds a slot); the others are
    // closed after the handshake timeout.
    let mut quick = 0.0;
    let mut slow = 0.0;
    for h in abuse::silent_sockets(c.grpc, 13, Duration::from_secs(5)) {
        let d = h
            .await
            .unwrap()
            .expect("silent socket closed by the aggregator");
        if d < Duration::from_millis(1000) {
            quick += 1.0;
        } else {
            assert!(d >= Duration::from_millis(1400), "closed after {d:?}");
            slow += 1.0;
        }
    }
    assert!(
        quick >= 1.0 && slow <= 12.0,
        "{quick} refused, {slow} timed out"
    );
    // Streams that never say Hello end with DEADLINE_EXCEEDED.
    for s in abuse::streams_without_hello(&c.endpoint(), 3) {
        let (code, _) = tokio::time::timeout(Duration::from_secs(5), s)
            .await
            .expect("stream ended")
            .unwrap()
            .expect("connected");
        assert_eq!(code, tonic::Code::DeadlineExceeded);
    }
    let m = c.metrics_text().await.unwrap();
    let refused = |reason| {
        metric_sum(
            &m,
            "aggregator_connections_refused_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refused("silent"), slow, "{m}");
    assert_eq!(refused("limit"), quick, "{m}");
    assert_eq!(
        metric_sum(&m, "aggregator_handshake_timeouts_total", &[]),
        3.0
    );
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_holders_oversize_messages_and_huge_hellos_are_bounded() {
    let work = tempfile::tempdir().unwrap();
    let c = guarded_cluster(work.path(), &["--view-idle-timeout-ms", "500"]).await;
    let digest = Bundle::load(&demo_bundle()).unwrap().digest;
    let trigger = unix_ms();

    // A peer that says Hello and then nothing loses the view after the idle timeout...
    let squatter = RawSensor::connect_on(&c.endpoint(), 0, &digest, trigger, 30.0)
        .await
        .unwrap();
    assert!(squatter.reply.accepted, "{}", squatter.reply.detail);
    let refused = RawSensor::connect_on(&c.endpoint(), 0, &digest, trigger, 30.0)
        .await
        .unwrap();
    assert!(!refused.reply.accepted, "view 0 is held");
    tokio::time::sleep(Duration::from_millis(900)).await;
    // ...and the real sensor gets it.
    let real = RawSensor::connect_on(&c.endpoint(), 0, &digest, trigger, 30.0)
        .await
        .unwrap();
    assert!(real.reply.accepted, "{}", real.reply.detail);
    drop((squatter, real));

    // A message larger than any frame of this bundle: RESOURCE_EXHAUSTED, counted.
    let code = abuse::oversize_frame(&c.endpoint(), 1, &digest, trigger, 100 * 1024)
        .await
        .unwrap();
    assert_eq!(code, tonic::Code::ResourceExhausted);

    // A Hello with a 60 KiB identifier full of newlines and a wrong digest: a short, clean reply.
    let flood = abuse::hello_flood(&c.endpoint(), 2, 60 * 1024, Duration::from_millis(300)).await;
    assert!(flood.hellos_sent >= 2);
    assert!(flood.error_codes.is_empty(), "{:?}", flood.error_codes);
    assert!(
        flood.max_reply_detail_bytes > 0 && flood.max_reply_detail_bytes < 512,
        "reply detail of {} bytes",
        flood.max_reply_detail_bytes
    );

    let m = c.metrics_text().await.unwrap();
    assert_eq!(
        metric_sum(&m, "aggregator_idle_streams_closed_total", &[]),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "aggregator_oversize_messages_total", &[]),
        1.0
    );
    assert!(
        metric_sum(
            &m,
            "aggregator_sensors_rejected_total",
            &[("reason", "REJECT_REASON_BUNDLE_DIGEST")]
        ) >= flood.hellos_sent as f64
    );
    let log = std::fs::read_to_string(work.path().join("aggregator.log")).unwrap();
    assert!(
        !log.contains("evil\nsensor"),
        "peer newlines reached the log"
    );
    assert!(log.len() < 200_000, "log of {} bytes", log.len());
    c.stop().await.unwrap();
}
