//! The SplitNets sensor node: one camera's frames through the head of a split bundle (ONNX
//! Runtime, on a dedicated thread), quantized, streamed to the aggregator over gRPC; reconnects
//! with exponential backoff when the aggregator goes away.
//!
//! A frame's path, top to bottom: `camera` (trigger clock, capture from a [`source`], head
//! stage, encode) → `link` (handshake, pump, reconnect). [`run`] takes a bound admin listener,
//! the daemon's [`Metrics`] and a shutdown future; the binary is a thin shell.

mod camera;
pub mod config;
pub mod emulation;
mod link;
pub mod metrics;
pub mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use splitnets_ops::{Lifecycle, Metrics, Phase, Readiness};
use splitnets_proto::bundle_set::BundleSet;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use camera::{Camera, CameraShared, Flow};
pub use config::{Args, Command, Settings, SourceKind};
use link::LinkShared;
use metrics::SensorMetrics;

pub(crate) use splitnets_ops::unix_ns;

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
    /// Frames still queued when the sensor gave up delivering (stopped, or flush timeout with
    /// no aggregator); included in `frames_dropped`.
    pub frames_unsent: u64,
    /// Headset emulation: frames the emulated link lost (counted as sent).
    pub frames_lost_on_emulated_link: u64,
}

#[derive(Debug)]
pub(crate) struct Counters {
    captured: AtomicU64,
    dropped: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    bytes: AtomicU64,
    connections: AtomicU64,
    unsent: AtomicU64,
    emulated_lost: AtomicU64,
    connected: std::sync::atomic::AtomicBool,
    flush_timeout: std::time::Duration,
    camera_finished_at: std::sync::OnceLock<std::time::Instant>,
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
            frames_unsent: self.unsent.load(Ordering::Relaxed),
            frames_lost_on_emulated_link: self.emulated_lost.load(Ordering::Relaxed),
        }
    }

    fn new(flush_timeout: std::time::Duration) -> Self {
        Self {
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            emulated_lost: AtomicU64::new(0),
            connected: std::sync::atomic::AtomicBool::new(false),
            flush_timeout,
            camera_finished_at: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Marks the link connected until the guard is dropped.
    pub(crate) fn connected_guard(&self) -> impl Drop + '_ {
        struct Guard<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Relaxed);
            }
        }
        self.connected.store(true, Ordering::Relaxed);
        Guard(&self.connected)
    }

    /// The camera has captured its last frame: the flush clock starts.
    pub(crate) fn camera_finished(&self) {
        let _ = self.camera_finished_at.set(std::time::Instant::now());
    }

    /// When delivery gives up, once the camera has finished.
    pub(crate) fn flush_deadline(&self) -> Option<std::time::Instant> {
        self.camera_finished_at
            .get()
            .map(|t| *t + self.flush_timeout)
    }
}

/// Runs the sensor until its frames are done or `shutdown` resolves. `bundle`: a bundle, or a
/// bundle set whose variants the aggregator may switch between.
pub async fn run(
    settings: Settings,
    bundle: impl Into<BundleSet>,
    admin: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SensorReport> {
    let bundle: BundleSet = bundle.into();
    let started = std::time::Instant::now();
    let handles = SensorMetrics::register(&metrics);
    let lifecycle = Lifecycle::new();
    let readiness = Readiness::default();
    let admin_addr = admin.local_addr()?;
    let admin_task = tokio::spawn(splitnets_ops::serve_admin(
        admin,
        readiness.clone(),
        metrics,
        lifecycle.watch().until(Phase::Stopped),
    ));

    let cam = {
        let (s, b) = (settings.clone(), bundle.clone());
        tokio::task::spawn_blocking(move || Camera::open(&s, &b)).await??
    };
    let counters = Arc::new(Counters::new(settings.flush_timeout));
    let flow = Arc::new(Flow::new());
    let fps_bits = Arc::new(AtomicU64::new(settings.fps.to_bits()));
    let (frame_tx, mut frame_rx) = mpsc::channel(settings.queue);
    if settings.tls.is_none() {
        tracing::warn!(
            "plaintext link to the aggregator: no TLS, no sensor identity (local development only; see --tls-ca, --tls-cert, --tls-key)"
        );
    }
    let preview = if settings.debug_preview {
        tracing::warn!(
            "debug preview ON: a thumbnail (at most 32×32 grey pixels) of this camera's frames leaves the sensor once a second, on its own stream (--debug-preview)"
        );
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(link::run_preview(
            settings.clone(),
            bundle.digest.clone(),
            rx,
            lifecycle.watch(),
        ));
        Some(tx)
    } else {
        tracing::info!("debug preview off: no pixels leave this sensor");
        None
    };
    let shaper = settings.emulate_link.clone().map(|e| {
        tracing::warn!(emulation = %e.describe(), "headset link emulation ON");
        std::sync::Mutex::new(emulation::Shaper::new(e))
    });
    if settings.emulate_compute {
        tracing::warn!(
            "headset compute emulation ON: the sensor stage is padded to the bundle's predicted time"
        );
    }
    readiness.set(true);
    tracing::info!(
        view = settings.view,
        aggregator = %settings.aggregator,
        admin = %admin_addr,
        fps = settings.fps,
        codec = %bundle.primary().manifest.codec,
        variants = bundle.variants.len(),
        "sensor ready"
    );
    let camera = {
        let shared = CameraShared {
            fps_bits: fps_bits.clone(),
            phase: lifecycle.watch(),
            counters: counters.clone(),
            metrics: handles.clone(),
            flow: flow.clone(),
            runtime: tokio::runtime::Handle::current(),
            preview,
        };
        let s = settings.clone();
        std::thread::Builder::new()
            .name(format!("camera-{}", settings.view))
            .spawn(move || camera::camera_loop(cam, s, shared, frame_tx))?
    };
    let lifecycle = Arc::new(lifecycle);
    {
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stopping the camera");
            lifecycle.advance(Phase::Draining);
        });
    }

    let phase = lifecycle.watch();
    let shared = LinkShared {
        settings: &settings,
        digest: &bundle.digest,
        counters: &counters,
        metrics: &handles,
        fps_bits: &fps_bits,
        flow: &flow,
        phase: &phase,
        variants: bundle.variants.len(),
        shaper: shaper.as_ref(),
        started,
    };
    let result = link::run_link(&shared, &mut frame_rx).await;
    lifecycle.advance(Phase::Draining);
    drop(frame_rx);
    let _ = tokio::task::spawn_blocking(move || camera.join()).await;
    readiness.set(false);
    lifecycle.advance(Phase::Stopped);
    let _ = admin_task.await;
    let report = counters.report();
    tracing::info!(?report, "sensor stopped");
    result.map(|()| report)
}
