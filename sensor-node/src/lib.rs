//! The SplitNets sensor node: one camera's frames through the head of a split bundle (ONNX
//! Runtime, on a dedicated thread), quantized, streamed to the aggregator over gRPC; reconnects
//! with exponential backoff when the aggregator goes away.
//!
//! [`run`] takes a bound admin listener and a shutdown future; the binary is a thin shell.

pub mod config;
pub mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use splitnets_ops::Readiness;
use splitnets_proto::bundle::Bundle;
use splitnets_proto::codec;
use splitnets_proto::runtime::{OnnxModel, SessionOptions};
use splitnets_proto::wire::{
    self, FeatureFrame, Hello, SensorMessage, SensorTimings, aggregator_message, control,
    feature_link_client::FeatureLinkClient, sensor_message,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use config::{Args, Settings, SourceKind};
use source::FrameSource;

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Counts of one sensor run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SensorReport {
    pub frames_captured: u64,
    pub frames_dropped: u64,
    pub frames_sent: u64,
    pub frames_acked: u64,
    pub frames_rejected: u64,
    pub bytes_sent: u64,
    pub connections: u64,
}

#[derive(Debug, Default)]
struct Counters {
    captured: AtomicU64,
    dropped: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    bytes: AtomicU64,
    connections: AtomicU64,
}

impl Counters {
    fn report(&self) -> SensorReport {
        SensorReport {
            frames_captured: self.captured.load(Ordering::Relaxed),
            frames_dropped: self.dropped.load(Ordering::Relaxed),
            frames_sent: self.sent.load(Ordering::Relaxed),
            frames_acked: self.acked.load(Ordering::Relaxed),
            frames_rejected: self.rejected.load(Ordering::Relaxed),
            bytes_sent: self.bytes.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

/// The camera: paces frames, runs the head, encodes. Owns the ONNX Runtime session.
struct Camera {
    bundle: Bundle,
    source: FrameSource,
    head: OnnxModel,
    view: u32,
}

impl Camera {
    fn capture(&mut self, n: u64, input: &mut Vec<f32>) -> anyhow::Result<FeatureFrame> {
        let m = &self.bundle.manifest;
        let capture_time_unix_ns = unix_ns();
        let t0 = Instant::now();
        let pixels = self.source.frame(n);
        let t1 = Instant::now();
        m.input.preprocess(&pixels, input);
        let t2 = Instant::now();
        let (shape, feature) = self.head.run(&m.input.head_input_shape(), input)?;
        let t3 = Instant::now();
        if shape != m.split.feature_shape {
            anyhow::bail!(
                "head produced {shape:?}, bundle says {:?}",
                m.split.feature_shape
            );
        }
        let encoded = codec::encode(m.codec, &shape, &feature)?;
        let t4 = Instant::now();
        metrics::histogram!("sensor_head_seconds").record((t3 - t2).as_secs_f64());
        metrics::histogram!("sensor_encode_seconds").record((t4 - t3).as_secs_f64());
        Ok(FeatureFrame {
            sequence: Some(n),
            capture_time_unix_ns: Some(capture_time_unix_ns),
            timings: Some(SensorTimings {
                capture_ns: Some((t1 - t0).as_nanos() as u64),
                preprocess_ns: Some((t2 - t1).as_nanos() as u64),
                head_ns: Some((t3 - t2).as_nanos() as u64),
                encode_ns: Some((t4 - t3).as_nanos() as u64),
                // Stamped when the frame enters the stream.
                send_time_unix_ns: Some(0),
            }),
            tensor: Some(wire::tensor_to_wire(encoded)),
        })
    }
}

fn open_camera(settings: &Settings, bundle: &Bundle) -> anyhow::Result<Camera> {
    let m = &bundle.manifest;
    if settings.view >= m.cameras.views {
        anyhow::bail!(
            "view {} does not exist: bundle {} has views 0..{}",
            settings.view,
            bundle.dir.display(),
            m.cameras.views
        );
    }
    let source = match &settings.source {
        SourceKind::Replay { data_dir } => {
            FrameSource::replay(data_dir, m.cameras.clone(), settings.view)?
        }
        SourceKind::Folder(dir) => FrameSource::folder(dir, m.input.height, m.input.width)?,
    };
    let head = OnnxModel::from_bytes(
        &format!("{}/{}", bundle.dir.display(), m.files.head.path),
        &bundle.head_onnx,
        SessionOptions {
            intra_op_threads: settings.head_threads,
        },
    )?;
    let mut cam = Camera {
        bundle: bundle.clone(),
        source,
        head,
        view: settings.view,
    };
    // Warm-up: the first runs allocate and pick kernels; do them before reporting ready.
    let mut input = Vec::new();
    for _ in 0..3 {
        cam.capture(settings.start_frame, &mut input)
            .context("warming up the head")?;
    }
    Ok(cam)
}

/// The camera loop on its own thread: frames go into `out` until `frames` are done or `stop`.
fn camera_loop(
    mut cam: Camera,
    settings: Settings,
    fps_bits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    out: mpsc::Sender<FeatureFrame>,
) {
    let mut input = Vec::new();
    let end = settings.frames.map(|f| settings.start_frame + f);
    // The schedule: frame `start_frame + k` at `epoch + k / fps`, with the epoch on the shared
    // trigger's clock when there is one.
    let epoch = match settings.start_at_unix_ms {
        Some(ms) => {
            let now_ms = unix_ns() / 1_000_000;
            if ms >= now_ms {
                Instant::now() + Duration::from_millis(ms - now_ms)
            } else {
                Instant::now()
                    .checked_sub(Duration::from_millis(now_ms - ms))
                    .unwrap_or_else(Instant::now)
            }
        }
        None => Instant::now(),
    };
    let mut n = settings.start_frame;
    while !stop.load(Ordering::Relaxed) && end.is_none_or(|e| n < e) {
        let fps = f64::from_bits(fps_bits.load(Ordering::Relaxed));
        if fps > 0.0 {
            let slot =
                |n: u64| epoch + Duration::from_secs_f64((n - settings.start_frame) as f64 / fps);
            let now = Instant::now();
            // Behind by more than a frame (late start, stall): a camera skips the frames it missed.
            if now > slot(n) + Duration::from_secs_f64(1.0 / fps) {
                let behind = (now - epoch).as_secs_f64() * fps;
                n = settings.start_frame + behind.ceil() as u64;
                if end.is_some_and(|e| n >= e) {
                    break;
                }
            }
            let due = slot(n);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let frame = match cam.capture(n, &mut input) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(view = cam.view, frame = n, error = %e, "frame failed");
                n += 1;
                continue;
            }
        };
        counters.captured.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("sensor_frames_captured_total").increment(1);
        let sent = if fps > 0.0 {
            out.try_send(frame)
                .map_err(|e| matches!(e, mpsc::error::TrySendError::Closed(_)))
        } else {
            out.blocking_send(frame).map_err(|_| true)
        };
        match sent {
            Ok(()) => {}
            Err(true) => break,
            Err(false) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sensor_frames_dropped_total").increment(1);
            }
        }
        n += 1;
    }
    tracing::info!(
        view = cam.view,
        frames = n - settings.start_frame,
        "camera stopped"
    );
}

/// Why one connection ended.
enum LinkEnd {
    /// The camera is done and every frame was sent (and acknowledged, within a timeout).
    Finished,
    /// The aggregator asked us to stop (draining); reconnect later.
    Drained,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("aggregator rejected this sensor: {0}")]
    Rejected(String),
    #[error("{0}")]
    Transient(String),
}

async fn one_connection(
    settings: &Settings,
    digest: &str,
    frames: &mut mpsc::Receiver<FeatureFrame>,
    counters: &Counters,
    fps_bits: &AtomicU64,
) -> Result<LinkEnd, LinkError> {
    let t = |e: &dyn std::fmt::Display| LinkError::Transient(e.to_string());
    let endpoint = tonic::transport::Endpoint::from_shared(settings.aggregator.clone())
        .map_err(|e| {
            LinkError::Rejected(format!("aggregator address {:?}: {e}", settings.aggregator))
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| t(&format!("connect {}: {e}", settings.aggregator)))?;
    let mut client = FeatureLinkClient::new(channel)
        .max_decoding_message_size(wire::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(wire::MAX_MESSAGE_BYTES);
    let (out_tx, out_rx) = mpsc::channel::<SensorMessage>(settings.queue.max(4));
    out_tx
        .send(SensorMessage {
            kind: Some(sensor_message::Kind::Hello(Hello {
                sensor_id: settings.id.clone(),
                view_index: settings.view,
                bundle_digest: digest.to_string(),
                protocol_version: wire::PROTOCOL_VERSION,
            })),
        })
        .await
        .map_err(|e| t(&e))?;
    let mut inbound = client
        .stream_features(ReceiverStream::new(out_rx))
        .await
        .map_err(|s| t(&format!("open stream: {s}")))?
        .into_inner();
    match inbound.message().await.map_err(|s| t(&s))? {
        Some(m) => match m.kind {
            Some(aggregator_message::Kind::HelloReply(r)) if r.accepted => {
                tracing::info!(view = settings.view, aggregator = %r.aggregator_id, "connected");
            }
            Some(aggregator_message::Kind::HelloReply(r)) => {
                let reason = wire::RejectReason::try_from(r.reason)
                    .unwrap_or(wire::RejectReason::Unspecified);
                // A draining aggregator or a view still held by our previous stream is transient.
                return Err(match reason {
                    wire::RejectReason::Draining | wire::RejectReason::ViewAlreadyConnected => {
                        LinkError::Transient(r.detail)
                    }
                    _ => LinkError::Rejected(format!("{} ({})", r.detail, reason.as_str_name())),
                });
            }
            _ => return Err(t(&"first reply was not a HelloReply")),
        },
        None => return Err(t(&"aggregator closed the stream before replying")),
    }
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let mut camera_done = false;
    let mut in_flight = 0u64;
    let mut out_tx = Some(out_tx);
    loop {
        tokio::select! {
            f = frames.recv(), if !camera_done => match f {
                Some(mut frame) => {
                    if let Some(t) = frame.timings.as_mut() {
                        t.send_time_unix_ns = Some(unix_ns());
                    }
                    let m = SensorMessage { kind: Some(sensor_message::Kind::Frame(frame)) };
                    let bytes = wire::sensor_message_wire_bytes(&m) as u64;
                    let Some(tx) = out_tx.as_ref() else { break };
                    if tx.send(m).await.is_err() {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        return Err(t(&"stream closed while sending"));
                    }
                    in_flight += 1;
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                    metrics::counter!("sensor_frames_sent_total").increment(1);
                    metrics::counter!("sensor_link_sent_bytes_total").increment(bytes);
                }
                None => {
                    camera_done = true;
                    // Half-close: the aggregator acknowledges what is in flight, then ends.
                    out_tx = None;
                    if in_flight == 0 {
                        return Ok(LinkEnd::Finished);
                    }
                }
            },
            m = tokio::time::timeout(Duration::from_secs(10), inbound.message()), if camera_done || !frames.is_closed() || in_flight > 0 => {
                let m = match m {
                    Ok(m) => m.map_err(|s| t(&s))?,
                    Err(_) if camera_done => return Ok(LinkEnd::Finished),
                    Err(_) => continue,
                };
                let Some(m) = m else {
                    return if camera_done { Ok(LinkEnd::Finished) } else { Err(t(&"aggregator ended the stream")) };
                };
                match m.kind {
                    Some(aggregator_message::Kind::Ack(a)) => {
                        in_flight = in_flight.saturating_sub(1);
                        if a.code == 0 {
                            counters.acked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.rejected.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("sensor_frames_rejected_total").increment(1);
                            tracing::warn!(sequence = a.sequence, code = a.code, message = %a.message, "frame rejected by the aggregator");
                        }
                        if camera_done && in_flight == 0 {
                            return Ok(LinkEnd::Finished);
                        }
                    }
                    Some(aggregator_message::Kind::Control(c)) => match c.kind {
                        Some(control::Kind::Drain(d)) => {
                            tracing::info!(reason = %d.reason, "aggregator is draining; disconnecting");
                            return Ok(LinkEnd::Drained);
                        }
                        Some(control::Kind::SetFrameRate(r)) if r.frames_per_second >= 0.0 => {
                            tracing::info!(fps = r.frames_per_second, "frame rate changed by the aggregator");
                            fps_bits.store(r.frames_per_second.to_bits(), Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(LinkEnd::Finished)
}

/// Runs the sensor until its frames are done or `shutdown` resolves.
pub async fn run(
    settings: Settings,
    bundle: Bundle,
    admin: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SensorReport> {
    let metrics_handle = splitnets_ops::install_metrics()?;
    let readiness = Readiness::default();
    let admin_addr = admin.local_addr()?;
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(splitnets_ops::serve_admin(
        admin,
        readiness.clone(),
        metrics_handle,
        async {
            let _ = admin_stop_rx.await;
        },
    ));

    let cam = {
        let (s, b) = (settings.clone(), bundle.clone());
        tokio::task::spawn_blocking(move || open_camera(&s, &b)).await??
    };
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let fps_bits = Arc::new(AtomicU64::new(settings.fps.to_bits()));
    let (frame_tx, mut frame_rx) = mpsc::channel(settings.queue);
    readiness.set(true);
    tracing::info!(
        view = settings.view,
        aggregator = %settings.aggregator,
        admin = %admin_addr,
        fps = settings.fps,
        codec = %bundle.manifest.codec,
        "sensor ready"
    );
    let camera = {
        let (s, f, st, c) = (
            settings.clone(),
            fps_bits.clone(),
            stop.clone(),
            counters.clone(),
        );
        std::thread::Builder::new()
            .name(format!("camera-{}", settings.view))
            .spawn(move || camera_loop(cam, s, f, st, c, frame_tx))?
    };
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stopping the camera");
            stop.store(true, Ordering::Relaxed);
        });
    }

    let mut backoff = settings.reconnect_min;
    let result = loop {
        match one_connection(
            &settings,
            &bundle.digest,
            &mut frame_rx,
            &counters,
            &fps_bits,
        )
        .await
        {
            Ok(LinkEnd::Finished) => break Ok(()),
            Ok(LinkEnd::Drained) => {
                if stop.load(Ordering::Relaxed) {
                    break Ok(());
                }
                tokio::time::sleep(backoff).await;
            }
            Err(LinkError::Rejected(reason)) => {
                break Err(anyhow::anyhow!("aggregator rejected this sensor: {reason}"));
            }
            Err(LinkError::Transient(reason)) => {
                if stop.load(Ordering::Relaxed) && frame_rx.is_closed() && frame_rx.is_empty() {
                    break Ok(());
                }
                metrics::counter!("sensor_reconnects_total").increment(1);
                tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "link down; reconnecting");
                // Frames captured meanwhile queue up to `queue`, then the camera drops them.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.reconnect_max);
                continue;
            }
        }
        backoff = settings.reconnect_min;
    };
    stop.store(true, Ordering::Relaxed);
    drop(frame_rx);
    let _ = tokio::task::spawn_blocking(move || camera.join()).await;
    readiness.set(false);
    let _ = admin_stop_tx.send(());
    let _ = admin_task.await;
    let report = counters.report();
    tracing::info!(?report, "sensor stopped");
    result.map(|()| report)
}
