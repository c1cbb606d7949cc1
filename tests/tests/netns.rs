//! Separate hosts without Docker (issue 8, item 3): the aggregator and each sensor in a network
//! namespace of its own, joined by veth pairs (one link per camera, as on a headset); one
//! sensor's link is cut (interface down) and restored. Predictions must go on from three views,
//! flagged degraded, and the sensor must reconnect and be fused again. Needs root (CI runs as
//! root).

use std::process::Stdio;
use std::time::Duration;

use splitnets_deploy::metric_sum;
use splitnets_proto::wire::{Prediction, WatchRequest, predictions_client::PredictionsClient};
use splitnets_tests::{daemons_bin_dir, demo_bundle, sensor_args, trigger_in};
use tokio::process::{Child, Command};

/// Network namespaces and their veth pairs, removed on drop.
struct Hosts {
    prefix: String,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `agg` plus `sensor-i` for each view; view i's link is 10.213.i.0/24 (aggregator .1,
    /// sensor .2); the test process reaches the aggregator at 10.213.200.2.
    fn build(views: u32) -> Self {
        let h = Hosts {
            prefix: format!("snt{}", std::process::id()),
        };
        let agg = h.ns("agg");
        ip(&["netns", "add", &agg]);
        ip(&["-n", &agg, "link", "set", "lo", "up"]);
        for v in 0..views {
            let sensor = h.ns(&format!("s{v}"));
            let (a, s) = (format!("{}a{v}", h.prefix), format!("{}s{v}", h.prefix));
            ip(&["netns", "add", &sensor]);
            ip(&["-n", &sensor, "link", "set", "lo", "up"]);
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &s]);
            ip(&["link", "set", &a, "netns", &agg]);
            ip(&["link", "set", &s, "netns", &sensor]);
            ip(&[
                "-n",
                &agg,
                "addr",
                "add",
                &format!("10.213.{v}.1/24"),
                "dev",
                &a,
            ]);
            ip(&[
                "-n",
                &sensor,
                "addr",
                "add",
                &format!("10.213.{v}.2/24"),
                "dev",
                &s,
            ]);
            ip(&["-n", &agg, "link", "set", &a, "up"]);
            ip(&["-n", &sensor, "link", "set", &s, "up"]);
        }
        let (r, ra) = (format!("{}r", h.prefix), format!("{}ra", h.prefix));
        ip(&["link", "add", &r, "type", "veth", "peer", "name", &ra]);
        ip(&["link", "set", &ra, "netns", &agg]);
        ip(&["addr", "add", "10.213.200.1/24", "dev", &r]);
        ip(&["link", "set", &r, "up"]);
        ip(&["-n", &agg, "addr", "add", "10.213.200.2/24", "dev", &ra]);
        ip(&["-n", &agg, "link", "set", &ra, "up"]);
        h
    }

    /// Takes view `v`'s link down (`up == false`) or up again, on the aggregator's side.
    fn link(&self, v: u32, up: bool) {
        let a = format!("{}a{v}", self.prefix);
        ip(&[
            "-n",
            &self.ns("agg"),
            "link",
            "set",
            &a,
            if up { "up" } else { "down" },
        ]);
    }

    fn spawn(&self, ns: &str, program: &str, args: &[String], log: &std::path::Path) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .arg(daemons_bin_dir().join(program))
            .args(args)
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("ip netns exec")
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it (and so their peers).
        let list = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&format!("{}-", self.prefix)) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "delete", name])
                    .status();
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &format!("{}r", self.prefix)])
            .stderr(Stdio::null())
            .status();
    }
}

async fn next(stream: &mut tonic::Streaming<Prediction>) -> Prediction {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a prediction within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

async fn metrics(admin: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_on_its_own_host_whose_link_is_cut_degrades_fusion_then_reconnects() {
    let views = 4;
    let work = tempfile::tempdir().unwrap();
    let hosts = Hosts::build(views);
    let bundle = demo_bundle().display().to_string();
    let mut aggregator = hosts.spawn(
        "agg",
        "aggregator",
        &[
            "--bundle".into(),
            bundle.clone(),
            "--listen".into(),
            "0.0.0.0:50051".into(),
            "--admin-listen".into(),
            "0.0.0.0:9090".into(),
            // A cut link is noticed by the aggregator when the view goes quiet.
            "--view-idle-timeout-ms".into(),
            "1500".into(),
        ],
        &work.path().join("aggregator.log"),
    );
    let endpoint = "http://10.213.200.2:50051";
    let mut client = loop {
        if let Ok(c) = PredictionsClient::connect(endpoint).await {
            break c;
        }
        assert!(
            aggregator.try_wait().unwrap().is_none(),
            "aggregator exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stream = client.watch(WatchRequest {}).await.unwrap().into_inner();
    let trigger = trigger_in(2000);
    let mut sensors = Vec::new();
    for v in 0..views {
        let mut args = vec![
            "--bundle".to_string(),
            bundle.clone(),
            "--view".into(),
            v.to_string(),
            "--aggregator".into(),
            format!("http://10.213.{v}.1:50051"),
            "--admin-listen".into(),
            "127.0.0.1:9100".into(),
            "--reconnect-max-ms".into(),
            "500".into(),
        ];
        args.extend(sensor_args(None, 30.0, trigger));
        sensors.push(hosts.spawn(
            &format!("s{v}"),
            "sensor-node",
            &args,
            &work.path().join(format!("sensor-{v}.log")),
        ));
    }

    // All four hosts fused.
    let mut full = 0;
    while full < 30 {
        full = if next(&mut stream).await.views_used.len() == 4 {
            full + 1
        } else {
            0
        };
    }
    // Camera 3's link goes down: frames fuse from three views at the deadline.
    hosts.link(3, false);
    let mut degraded = 0;
    while degraded < 30 {
        let p = next(&mut stream).await;
        if p.views_used == [0, 1, 2] {
            assert_eq!(p.views_missing, [3]);
            degraded += 1;
        }
    }
    // Long enough for the aggregator to free the silent view.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    hosts.link(3, true);
    let mut back = 0;
    let restored = tokio::time::Instant::now();
    while back < 30 {
        assert!(
            restored.elapsed() < Duration::from_secs(30),
            "camera 3 not fused again within 30 s of its link coming back"
        );
        back = if next(&mut stream).await.views_used.len() == 4 {
            back + 1
        } else {
            0
        };
    }
    let reconnected_after = restored.elapsed();
    let m = metrics("10.213.200.2:9090").await;
    assert!(metric_sum(&m, "aggregator_partial_frames_total", &[]) >= 30.0);

    for s in &sensors {
        splitnets_deploy::terminate(s);
    }
    let mut reports = Vec::new();
    for (v, s) in sensors.iter_mut().enumerate() {
        tokio::time::timeout(Duration::from_secs(10), s.wait())
            .await
            .expect("sensor stops on SIGTERM")
            .unwrap();
        let out = std::fs::read_to_string(work.path().join(format!("sensor-{v}.out")))
            .unwrap_or_default();
        reports.push(serde_json::from_str::<serde_json::Value>(out.trim()).unwrap_or_default());
    }
    splitnets_deploy::terminate(&aggregator);
    tokio::time::timeout(Duration::from_secs(15), aggregator.wait())
        .await
        .expect("aggregator stops on SIGTERM")
        .unwrap();
    assert!(
        reports[3]["connections"].as_u64().unwrap_or(0) >= 2,
        "sensor 3 did not reconnect: {}",
        reports[3]
    );
    for r in &reports[..3] {
        assert_eq!(r["connections"], 1, "{r}");
    }
    eprintln!(
        "camera 3 fused again {reconnected_after:?} after its link came back; reports: {reports:?}"
    );
}
