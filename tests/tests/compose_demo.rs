//! The docker-compose demo (issue 8, items 1–2): up → all healthy → four-view predictions →
//! one sensor container stopped → three-view predictions, flagged degraded, within the fusion
//! deadline and without losing a frame → started again → four-view predictions → down, nothing
//! left. Needs a Docker engine: `scripts/docker-engine.sh` uses a running one or installs and
//! starts its own (as root).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use splitnets_proto::wire::{Prediction, WatchRequest, predictions_client::PredictionsClient};
use splitnets_tests::{daemons_bin_dir, run_ok};

const PROJECT: &str = "splitnets-test";
const SERVICES: [&str; 5] = ["aggregator", "sensor-0", "sensor-1", "sensor-2", "sensor-3"];
/// The compose demo's `fusion_deadline_ms` (deploy/compose/config/aggregator.toml).
const DEADLINE_MS: f64 = 50.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Compose {
    docker_host: String,
    grpc_port: u16,
    admin_port: u16,
}

impl Compose {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(root())
            .env("DOCKER_HOST", &self.docker_host)
            .env("SPLITNETS_COMPOSE_PROJECT", PROJECT)
            .env("SPLITNETS_COMPOSE_GRPC_PORT", self.grpc_port.to_string())
            .env("SPLITNETS_COMPOSE_ADMIN_PORT", self.admin_port.to_string());
        c
    }

    fn compose(&self, args: &[&str]) -> String {
        let mut c = self.cmd("docker-compose");
        c.args(["-p", PROJECT, "-f", "deploy/compose/docker-compose.yml"])
            .args(args);
        run_ok(&mut c)
    }

    fn health(&self, service: &str) -> String {
        let id = self.compose(&["ps", "-q", service]);
        let mut c = self.cmd("docker");
        c.args(["inspect", "-f", "{{.State.Health.Status}}", id.trim()]);
        run_ok(&mut c).trim().to_string()
    }

    fn project_containers(&self) -> String {
        let mut c = self.cmd("docker");
        c.args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={PROJECT}"),
        ]);
        run_ok(&mut c)
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        // Whatever happened, nothing stays running.
        let _ = self
            .cmd("docker-compose")
            .args(["-p", PROJECT, "-f", "deploy/compose/docker-compose.yml"])
            .args(["down", "--remove-orphans", "-t", "5"])
            .output();
    }
}

/// Predictions received until `done` says stop (or `timeout`), with their arrival times.
async fn collect(
    stream: &mut tonic::Streaming<Prediction>,
    timeout: Duration,
    mut done: impl FnMut(&[Prediction]) -> bool,
) -> Vec<Prediction> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + timeout;
    while !done(&seen) {
        match tokio::time::timeout_at(until, stream.message()).await {
            Ok(Ok(Some(p))) => seen.push(p),
            Ok(other) => panic!("prediction stream ended: {other:?}"),
            Err(_) => panic!(
                "timed out after {timeout:?}; last predictions: {:?}",
                seen.iter()
                    .rev()
                    .take(3)
                    .map(|p| (p.sequence, &p.views_used))
                    .collect::<Vec<_>>()
            ),
        }
    }
    seen
}

fn tail_with(seen: &[Prediction], n: usize, views: usize) -> bool {
    seen.len() >= n
        && seen[seen.len() - n..]
            .iter()
            .all(|p| p.views_used.len() == views)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_demo_degrades_and_recovers_when_a_sensor_container_stops() {
    daemons_bin_dir(); // builds the release binaries the image is made of
    let engine = run_ok(Command::new(root().join("scripts/docker-engine.sh")).current_dir(root()));
    let c = Compose {
        docker_host: engine.trim().to_string(),
        grpc_port: free_port(),
        admin_port: free_port(),
    };
    run_ok(&mut c.cmd("scripts/compose-image.sh"));
    // Up, sensors unbounded; the script waits for the aggregator's health before the rest.
    run_ok(
        c.cmd("scripts/compose-demo.sh")
            .args(["--keep", "--no-build"]),
    );
    let started = Instant::now();
    loop {
        let states: Vec<String> = SERVICES.iter().map(|s| c.health(s)).collect();
        if states.iter().all(|s| s == "healthy") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not all healthy after 90 s: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The demo runs mTLS; a watcher needs only the demo CA.
    let tls = splitnets_ops::tls::client_config(
        &root().join(".local/compose/certs/ca.pem"),
        None,
        "localhost",
    )
    .unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", c.grpc_port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("aggregator published on the host");
    let mut client = PredictionsClient::new(channel);
    let mut stream = client.watch(WatchRequest {}).await.unwrap().into_inner();
    let before = collect(&mut stream, Duration::from_secs(60), |s| {
        tail_with(s, 30, 4)
    })
    .await;

    // One camera goes away: the next frames fuse from three views at their deadline.
    c.compose(&["stop", "-t", "5", "sensor-3"]);
    let degraded = collect(&mut stream, Duration::from_secs(30), |s| {
        tail_with(s, 30, 3)
    })
    .await;
    let missing: Vec<&Prediction> = degraded
        .iter()
        .filter(|p| !p.views_missing.is_empty())
        .collect();
    assert!(missing.len() >= 30);
    let worst = missing
        .iter()
        .map(|p| p.end_to_end_ns as f64 / 1e6)
        .fold(0.0, f64::max);
    eprintln!(
        "{} degraded frames, end-to-end at most {worst:.1} ms (deadline {DEADLINE_MS} ms)",
        missing.len()
    );
    for p in &missing {
        assert_eq!(p.views_used, [0, 1, 2], "frame {}", p.sequence);
        assert_eq!(p.views_missing, [3], "frame {}", p.sequence);
        let e2e_ms = p.end_to_end_ns as f64 / 1e6;
        // Fused once the deadline passed, not held back until the camera returns. The bound is
        // loose on purpose: a 2-core CI host runs other tests (NAS training) at the same time,
        // and seen latencies are a benchmark's business (the worst is printed above).
        assert!(
            e2e_ms <= DEADLINE_MS + 500.0,
            "frame {} took {e2e_ms:.1} ms",
            p.sequence
        );
    }
    // No frame lost across the stop: every sequence from the last four-view frame on is there.
    let seqs: BTreeSet<u64> = before.iter().chain(&degraded).map(|p| p.sequence).collect();
    let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
    assert_eq!(
        seqs.len() as u64,
        last - first + 1,
        "frames lost between {first} and {last}"
    );

    // The camera comes back and rejoins at the current frame of the shared trigger.
    c.compose(&["start", "sensor-3"]);
    collect(&mut stream, Duration::from_secs(60), |s| {
        tail_with(s, 30, 4)
    })
    .await;
    assert_eq!(c.health("aggregator"), "healthy");

    c.compose(&["down", "--remove-orphans", "-t", "10"]);
    assert_eq!(
        c.project_containers().trim(),
        "",
        "containers left after down"
    );
}
