//! mTLS and sensor identity (issue 8, item 4): the aggregator admits a sensor only with a
//! certificate from its CA valid for the identity allowed for the view it claims. A sensor with
//! the right certificate is fused; one without a certificate, one claiming another sensor's view
//! and one with another CA's certificate are refused with a clear reason, and counted.

use std::path::Path;
use std::time::Duration;

use splitnets_deploy::certs::{sensor_identity, write_demo_certificates};
use splitnets_deploy::metric_sum;
use splitnets_ops::Metrics;
use splitnets_proto::bundle::Bundle;
use splitnets_proto::wire::{WatchRequest, predictions_client::PredictionsClient};
use splitnets_tests::{daemons_bin_dir, demo_bundle, sensor_args, trigger_in};
use tokio::net::TcpListener;
use tokio::process::Command;

fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

/// A sensor process for `view` with TLS files from `certs` (`cert`: whose certificate it
/// presents, if any); returns its exit status (if it exited within `wait`) and its log.
async fn sensor(
    endpoint: &str,
    view: u32,
    ca: &Path,
    cert: Option<(&Path, &str)>,
    trigger: u64,
    wait: Duration,
    log: &Path,
) -> (Option<std::process::ExitStatus>, String) {
    let mut c = Command::new(daemons_bin_dir().join("sensor-node"));
    c.arg("--bundle")
        .arg(demo_bundle())
        .args(["--view", &view.to_string(), "--aggregator", endpoint])
        .args(["--admin-listen", "127.0.0.1:0", "--tls-ca"])
        .arg(ca)
        .args(sensor_args(Some(60), 30.0, trigger));
    if let Some((dir, id)) = cert {
        c.arg("--tls-cert")
            .arg(dir.join(format!("{id}.pem")))
            .arg("--tls-key")
            .arg(dir.join(format!("{id}.key")));
    }
    let mut child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(wait, child.wait())
        .await
        .ok()
        .map(|s| s.unwrap());
    if status.is_none() {
        splitnets_deploy::terminate(&child);
        let _ = child.wait().await;
    }
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_certificate_from_the_fleet_ca_for_the_claimed_view_is_admitted() {
    daemons_bin_dir(); // built before any clock starts
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let rogue = work.path().join("rogue");
    write_demo_certificates(&certs, 4, &names(), "fleet CA").unwrap();
    write_demo_certificates(&rogue, 4, &names(), "rogue CA").unwrap();

    let bundle = Bundle::load(&demo_bundle()).unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = grpc.local_addr().unwrap().port();
    let metrics = Metrics::new();
    let mut settings = aggregator::Settings::local(demo_bundle());
    settings.tls = Some(aggregator::config::TlsSettings {
        cert: certs.join("aggregator.pem"),
        key: certs.join("aggregator.key"),
        client_ca: Some(certs.join("ca.pem")),
        view_identities: Some((0..4).map(sensor_identity).collect()),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agg = tokio::spawn(aggregator::run(
        settings,
        bundle,
        grpc,
        admin,
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let endpoint = format!("https://localhost:{port}");
    let ca = certs.join("ca.pem");

    // Plaintext is refused at the TLS layer (no gRPC spoken).
    let plaintext = async {
        let mut c = PredictionsClient::connect(format!("http://127.0.0.1:{port}")).await?;
        c.watch(WatchRequest {}).await?;
        anyhow::Ok(())
    };
    assert!(plaintext.await.is_err(), "a plaintext client was served");

    // The right certificate for view 0: admitted and fused (predictions over TLS).
    let trigger = trigger_in(1500);
    let good = {
        let (endpoint, ca, certs, log) = (
            endpoint.clone(),
            ca.clone(),
            certs.clone(),
            work.path().join("good.log"),
        );
        tokio::spawn(async move {
            sensor(
                &endpoint,
                0,
                &ca,
                Some((&certs, "sensor-0")),
                trigger,
                Duration::from_secs(30),
                &log,
            )
            .await
        })
    };
    let tls = splitnets_ops::tls::client_config(&ca, None, "localhost").unwrap();
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a watcher connects over TLS");
    let mut watch = PredictionsClient::new(channel)
        .watch(WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let p = tokio::time::timeout(Duration::from_secs(20), watch.message())
        .await
        .expect("a prediction from the admitted sensor")
        .unwrap()
        .unwrap();
    assert_eq!(p.views_used, [0]);

    // No certificate, claiming view 1: refused with the reason; the sensor exits non-zero.
    let (status, log) = sensor(
        &endpoint,
        1,
        &ca,
        None,
        trigger,
        Duration::from_secs(15),
        &work.path().join("nocert.log"),
    )
    .await;
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(log.contains("no client certificate"), "{log}");

    // sensor-1's certificate claiming view 2: refused, names the identity.
    let (status, log) = sensor(
        &endpoint,
        2,
        &ca,
        Some((&certs, "sensor-1")),
        trigger,
        Duration::from_secs(15),
        &work.path().join("wrongview.log"),
    )
    .await;
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("not valid for") && log.contains("sensor-2"),
        "{log}"
    );

    // A certificate from another CA: the TLS handshake fails; the sensor keeps retrying (it may
    // be a rotation in progress) and says why.
    let (status, log) = sensor(
        &endpoint,
        3,
        &ca,
        Some((&rogue, "sensor-3")),
        trigger,
        Duration::from_secs(3),
        &work.path().join("rogue.log"),
    )
    .await;
    assert!(status.is_none(), "a rogue sensor exited: {log}");
    assert!(log.contains("link down; reconnecting"), "{log}");

    let m = metrics.render();
    assert!(
        metric_sum(
            &m,
            "aggregator_sensors_rejected_total",
            &[("reason", "REJECT_REASON_IDENTITY")]
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "aggregator_connections_refused_total",
            &[("reason", "tls")]
        ) >= 1.0,
        "{m}"
    );
    let (status, log) = good.await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    let _ = stop.send(());
    agg.await.unwrap().unwrap();
}
