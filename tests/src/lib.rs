//! Fixtures for the end-to-end tests: bundles, a cluster on loopback, and a raw gRPC sensor that
//! speaks the wire protocol directly (to send what a well-behaved sensor never would).

pub mod abuse;
pub mod browser;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use splitnets_deploy::{ClusterOptions, LocalCluster, default_bin_dir};
use splitnets_proto::bundle::Bundle;
use splitnets_proto::codec::CodecSpec;
use splitnets_proto::wire::{
    self, AggregatorMessage, FeatureFrame, Hello, HelloReply, SensorMessage, aggregator_message,
    feature_link_client::FeatureLinkClient, sensor_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The committed demo bundle (the architecture search's most accurate 4-view front member).
pub fn demo_bundle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/bundles/fashion-mnist-4view")
}

/// The hand-designed 4-view split CNN that was the demo before the search (its tensors have
/// documented names: `pool2_out`, ...).
pub fn hand_designed_bundle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/bundles/hand-designed-4view")
}

/// A copy of the demo bundle that sends its feature with `codec` (new digest).
pub fn bundle_with_codec(dir: &Path, codec: CodecSpec) -> PathBuf {
    bundle_with_codec_from(&demo_bundle(), dir, codec)
}

/// A copy of the bundle in `src` that sends its feature with `codec` (new digest).
pub fn bundle_with_codec_from(src: &Path, dir: &Path, codec: CodecSpec) -> PathBuf {
    let b = Bundle::load(src).expect("bundle loads");
    let out = dir.join(format!("bundle-{}", codec.to_string().replace(' ', "-")));
    Bundle::write(
        &out,
        b.manifest.with_codec(codec),
        &b.head_onnx,
        &b.tail_onnx,
    )
    .expect("bundle written");
    out
}

/// The next `n` distinct frames' predictions from `watch`, by sequence; panics if the stream
/// stalls for `stall` (no prediction at all) or closes first.
pub async fn collect_predictions(
    watch: &mut tonic::Streaming<wire::Prediction>,
    n: u64,
    stall: Duration,
) -> std::collections::BTreeMap<u64, wire::Prediction> {
    let mut preds = std::collections::BTreeMap::new();
    while (preds.len() as u64) < n {
        let p = tokio::time::timeout(stall, watch.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no prediction for {stall:?} ({} of {n} so far)",
                    preds.len()
                )
            })
            .expect("prediction stream")
            .expect("the prediction stream stays open");
        preds.insert(p.sequence, p);
    }
    preds
}

/// A `Predictions/Watch` stream on the aggregator at `endpoint`, retried until it is up (open it
/// before the sensors start, so no prediction is missed).
pub async fn watch_predictions(endpoint: &str) -> tonic::Streaming<wire::Prediction> {
    use wire::{WatchRequest, predictions_client::PredictionsClient};
    loop {
        if let Ok(mut c) = PredictionsClient::connect(endpoint.to_string()).await
            && let Ok(r) = c.watch(WatchRequest {}).await
        {
            return r.into_inner();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The directory of the project's release executables (daemons, demo, search), rebuilt first (once per test process) so
/// that an end-to-end test never runs a stale binary: `cargo build` is a no-op when they are
/// current, and a test that cannot build them fails here with cargo's output.
pub fn daemons_bin_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut build = std::process::Command::new(cargo);
        // Not the variables cargo sets for this test process: ring's build script tracks
        // CARGO_MANIFEST_DIR, so passing it on would rebuild ring and everything above it.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_PKG_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&k.as_ref())
            {
                build.env_remove(k.as_ref());
            }
        }
        let out = build
            .current_dir(&root)
            // Exactly the build `scripts/test.sh` does (all workspace binaries): a subset of
            // packages would unify dependency features differently and rebuild everything.
            .args(["build", "--release", "--quiet", "--workspace", "--bins"])
            .output()
            .map_err(|e| format!("running cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = built {
        panic!("building the daemons for an end-to-end test failed:\n{e}");
    }
    let dir = default_bin_dir();
    assert!(
        dir.ends_with("release"),
        "end-to-end tests run the release daemons; run them with --release (found {})",
        dir.display()
    );
    dir
}

/// Runs a project binary to completion from the repository root; fails the test with its
/// stdout and stderr unless it exits successfully, and returns its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Starts an aggregator on loopback (OS-chosen port) for `bundle`.
pub async fn cluster(bundle: &Path, work: &Path, deadline_ms: u64) -> LocalCluster {
    LocalCluster::start(ClusterOptions {
        bin_dir: daemons_bin_dir(),
        bundle: bundle.to_path_buf(),
        work_dir: work.to_path_buf(),
        fusion_deadline_ms: deadline_ms,
        listen: "127.0.0.1:0".parse().unwrap(),
        aggregator_args: vec![],
        sensor_args: vec![],
    })
    .await
    .expect("aggregator starts")
}

/// A shared camera trigger `lead_ms` from now (Unix ms).
pub fn trigger_in(lead_ms: u64) -> u64 {
    unix_ms() + lead_ms
}

/// The frame a fleet on `trigger` at `fps` is capturing now.
pub fn current_frame(trigger: u64, fps: f64) -> u64 {
    (unix_ms().saturating_sub(trigger) as f64 * fps / 1000.0) as u64
}

/// Arguments for a sensor that captures `frames` frames at `fps` on the shared `trigger`.
pub fn sensor_args(frames: Option<u64>, fps: f64, trigger: u64) -> Vec<String> {
    let mut a = vec![
        "--fps".to_string(),
        fps.to_string(),
        "--start-at-unix-ms".into(),
        trigger.to_string(),
    ];
    if let Some(f) = frames {
        a.extend(["--frames".into(), f.to_string()]);
    }
    a
}

/// A sensor speaking the wire protocol by hand.
#[derive(Debug)]
pub struct RawSensor {
    tx: mpsc::Sender<SensorMessage>,
    inbound: tonic::Streaming<AggregatorMessage>,
    pub reply: HelloReply,
}

impl RawSensor {
    /// Connects with no shared trigger (epoch 0) at 30 fps.
    pub async fn connect(endpoint: &str, view: u32, digest: &str) -> anyhow::Result<Self> {
        Self::connect_on(endpoint, view, digest, 0, 30.0).await
    }

    /// Connects as a sensor of a fleet on `trigger` (Unix ms) at `fps`, each frame acknowledged.
    pub async fn connect_on(
        endpoint: &str,
        view: u32,
        digest: &str,
        trigger: u64,
        fps: f64,
    ) -> anyhow::Result<Self> {
        Self::connect_acking(endpoint, view, digest, trigger, fps, 1).await
    }

    /// Connects asking for one cumulative acknowledgement per `ack_every` accepted frames.
    pub async fn connect_acking(
        endpoint: &str,
        view: u32,
        digest: &str,
        trigger: u64,
        fps: f64,
        ack_every: u32,
    ) -> anyhow::Result<Self> {
        let mut client = FeatureLinkClient::connect(endpoint.to_string()).await?;
        let (tx, rx) = mpsc::channel(1024);
        tx.send(SensorMessage {
            kind: Some(sensor_message::Kind::Hello(Hello {
                sensor_id: "raw-test-sensor".into(),
                view_index: view,
                bundle_digest: digest.into(),
                protocol_version: wire::PROTOCOL_VERSION,
                trigger_epoch_unix_ms: trigger,
                frames_per_second: fps,
                ack_every,
            })),
        })
        .await?;
        let mut inbound = client
            .stream_features(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no hello reply"))?;
        let Some(aggregator_message::Kind::HelloReply(reply)) = first.kind else {
            anyhow::bail!("first reply is not a HelloReply: {first:?}");
        };
        Ok(Self { tx, inbound, reply })
    }

    /// Sends a frame and waits for its acknowledgement (skipping control messages; a stream
    /// opened with `ack_every` 1).
    pub async fn send(&mut self, frame: FeatureFrame) -> anyhow::Result<wire::FrameAck> {
        self.push(frame).await?;
        self.next_ack().await
    }

    /// Sends a frame without waiting for anything.
    pub async fn push(&mut self, frame: FeatureFrame) -> anyhow::Result<()> {
        self.tx
            .send(SensorMessage {
                kind: Some(sensor_message::Kind::Frame(frame)),
            })
            .await?;
        Ok(())
    }

    /// Half-closes the stream and returns every acknowledgement that comes before its end.
    pub async fn finish(self) -> anyhow::Result<Vec<wire::FrameAck>> {
        let Self {
            tx, mut inbound, ..
        } = self;
        drop(tx);
        let mut acks = Vec::new();
        while let Some(m) =
            tokio::time::timeout(Duration::from_secs(10), inbound.message()).await??
        {
            if let Some(aggregator_message::Kind::Ack(a)) = m.kind {
                acks.push(a);
            }
        }
        Ok(acks)
    }

    /// Waits for the next acknowledgement (skipping control messages).
    pub async fn next_ack(&mut self) -> anyhow::Result<wire::FrameAck> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
                .await??
                .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
            if let Some(aggregator_message::Kind::Ack(a)) = m.kind {
                return Ok(a);
            }
        }
    }
}
