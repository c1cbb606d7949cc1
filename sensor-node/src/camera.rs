//! The camera: paces frames on the trigger clock, captures, runs the head stage and hands feature
//! frames to the link. Runs on its own thread (ONNX Runtime blocks) and never waits on the network:
//! a full link queue drops the frame, as a camera would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use splitnets_ops::{Phase, PhaseWatch};
use splitnets_proto::bundle_set::BundleSet;
use splitnets_proto::wire::{self, FeatureFrame};
use splitnets_runtime::{HeadStage, SessionOptions};
use tokio::sync::mpsc;

use crate::config::{Settings, SourceKind};
use crate::metrics::SensorMetrics;
use crate::source::FrameSource;
use crate::{Counters, unix_ns};

/// One variant's head on this camera.
struct VariantHead {
    head: HeadStage,
    layout: wire::FrameLayout,
    /// `--emulate-compute`: the sensor stage is padded to this (the profile's prediction).
    padded_to: Option<Duration>,
}

/// One camera's frame source and head stages (one per variant of a bundle set).
pub(crate) struct Camera {
    source: FrameSource,
    heads: Vec<VariantHead>,
    /// A bundle set: frames name their variant.
    switchable: bool,
    view: u32,
    pixels: Vec<u8>,
    height: usize,
    width: usize,
    /// Bytes per pixel of the frames (1: gray8, 3: rgb8).
    channels: usize,
    /// Frames to capture (`--frames`, capped by `--source-once`); `None`: until stopped.
    frame_limit: Option<u64>,
}

impl Camera {
    /// Opens the source and the head, and warms the head up (before the sensor reports ready).
    pub(crate) fn open(settings: &Settings, set: &BundleSet) -> anyhow::Result<Self> {
        let bundle = set.primary();
        let m = &bundle.manifest;
        if settings.view >= m.cameras.views {
            anyhow::bail!(
                "view {} does not exist: bundle {} has views 0..{}",
                settings.view,
                bundle.dir.display(),
                m.cameras.views
            );
        }
        if matches!(settings.source, SourceKind::Replay { .. }) && m.input.channels() != 1 {
            anyhow::bail!(
                "the replay source makes gray8 frames, but bundle {} wants {} frames: use --source folder:DIR",
                bundle.dir.display(),
                m.input.pixel_format
            );
        }
        let source = match &settings.source {
            SourceKind::Replay { .. } if m.scene.is_some() => {
                FrameSource::shapes(m.scene.as_ref().expect("checked"), settings.view)?
            }
            SourceKind::Replay { data_dir } => {
                FrameSource::replay(data_dir, m.cameras.clone(), settings.view)?
            }
            SourceKind::Folder(dir) => FrameSource::folder(dir, &m.input)?,
        };
        // `--source-once`: each image once, then the stream ends.
        let frame_limit = match (settings.frames, settings.source_once) {
            (limit, false) => limit,
            (limit, true) => {
                let images = source.distinct_frames().ok_or_else(|| {
                    anyhow::anyhow!("--source-once needs a folder source (--source folder:DIR)")
                })?;
                tracing::info!(
                    images,
                    "--source-once: the stream ends after the last image"
                );
                Some(limit.map_or(images, |l| l.min(images)))
            }
        };
        let mut heads = Vec::with_capacity(set.variants.len());
        for (i, b) in set.variants.iter().enumerate() {
            let mut head = HeadStage::new(
                b,
                SessionOptions {
                    intra_op_threads: settings.head_threads,
                },
            )?;
            // The first runs allocate and pick kernels; do them before reporting ready (every
            // variant: a switch must not stall the camera).
            head.warm_up(3)
                .with_context(|| format!("warming up the head of variant {i}"))?;
            let padded_to = if settings.emulate_compute {
                let p = b.manifest.predicted.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--emulate-compute: bundle {} has no predicted costs to pad to",
                        b.dir.display()
                    )
                })?;
                Some(Duration::from_secs_f64(p.sensor_seconds.max(0.0)))
            } else {
                None
            };
            heads.push(VariantHead {
                head,
                layout: b.manifest.frame_layout(),
                padded_to,
            });
        }
        Ok(Self {
            source,
            heads,
            switchable: set.switchable,
            view: settings.view,
            pixels: Vec::new(),
            height: m.input.height,
            width: m.input.width,
            channels: m.input.channels(),
            frame_limit,
        })
    }

    /// Frame `n` with `variant`: capture → head stage → a feature frame for the wire.
    fn capture(
        &mut self,
        n: u64,
        variant: u32,
        metrics: &SensorMetrics,
    ) -> anyhow::Result<FeatureFrame> {
        let capture_time_unix_ns = unix_ns();
        let t0 = Instant::now();
        self.source.frame_into(n, &mut self.pixels)?;
        let v = &mut self.heads[variant as usize];
        let (encoded, t) = v.head.encode(&self.pixels)?;
        metrics.head_seconds.record(t.head_ns as f64 * 1e-9);
        metrics.encode_seconds.record(t.encode_ns as f64 * 1e-9);
        let mut frame = wire::frame_to_wire(encoded, &v.layout, n, capture_time_unix_ns, 0);
        if let Some(until) = v.padded_to {
            // Spin-free padding: this machine is faster than the headset's sensor.
            let left = until.saturating_sub(t0.elapsed());
            if !left.is_zero() {
                std::thread::sleep(left);
            }
        }
        frame.sensor_ns = Some(u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX));
        if self.switchable {
            frame.variant = Some(variant);
        }
        Ok(frame)
    }
}

impl Camera {
    /// The last captured frame shrunk (box filter) to at most 32 pixels a side, in grey (the
    /// mean of an RGB pixel's channels): the debug thumbnail.
    fn thumbnail(&self, sequence: u64) -> wire::PreviewFrame {
        let (h, w, c) = (self.height, self.width, self.channels.max(1));
        let f = h.max(w).div_ceil(32).max(1);
        let (th, tw) = (h / f, w / f);
        let mut gray8 = Vec::with_capacity(th * tw);
        for y in 0..th {
            for x in 0..tw {
                let mut sum = 0u32;
                for dy in 0..f {
                    for dx in 0..f {
                        let at = ((y * f + dy) * w + x * f + dx) * c;
                        sum += self
                            .pixels
                            .get(at..at + c)
                            .map_or(0, |px| px.iter().map(|&v| u32::from(v)).sum());
                    }
                }
                gray8.push((sum / (f * f * c) as u32) as u8);
            }
        }
        wire::PreviewFrame {
            view_index: self.view,
            bundle_digest: String::new(),
            sequence,
            width: tw as u32,
            height: th as u32,
            gray8,
        }
    }
}

/// The frame schedule: frame `start + k` is due at `epoch + k / fps`, with the epoch on the
/// shared trigger's clock when there is one.
fn trigger_epoch(start_at_unix_ms: Option<u64>) -> Instant {
    let Some(ms) = start_at_unix_ms else {
        return Instant::now();
    };
    let now_ms = unix_ns() / 1_000_000;
    if ms >= now_ms {
        Instant::now() + Duration::from_millis(ms - now_ms)
    } else {
        Instant::now()
            .checked_sub(Duration::from_millis(now_ms - ms))
            .unwrap_or_else(Instant::now)
    }
}

/// What the camera thread shares with the rest of the sensor.
pub(crate) struct CameraShared {
    pub fps_bits: Arc<AtomicU64>,
    pub phase: PhaseWatch,
    pub counters: Arc<Counters>,
    pub metrics: SensorMetrics,
    /// The link's view of flow control (credits, where the fleet is).
    pub flow: Arc<Flow>,
    /// `--debug-preview`: where a thumbnail goes once a second (`None`: no pixels leave).
    pub preview: Option<mpsc::Sender<wire::PreviewFrame>>,
    /// To wait on async signals (credits, shutdown) from this plain thread.
    pub runtime: tokio::runtime::Handle,
}

/// Flow control between the aggregator and this camera, set by the link.
#[derive(Debug)]
pub(crate) struct Flow {
    /// Max-rate mode: frames with sequence < this may be sent (0: nothing yet; u64::MAX: no
    /// limit). Raised by the aggregator's credits as the fleet's frames are fused.
    pub credit: tokio::sync::watch::Sender<u64>,
    /// Where the fleet is: a camera behind it (late join, no shared trigger) jumps ahead
    /// instead of sending stale frames.
    pub next_sequence: AtomicU64,
    /// Bundle sets: which variant makes which frame, as the aggregator last said.
    pub variant: std::sync::Mutex<VariantSchedule>,
}

/// Frames from `from_sequence` on use `variant`; earlier ones `previous`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VariantSchedule {
    pub variant: u32,
    pub from_sequence: u64,
    pub previous: u32,
}

impl VariantSchedule {
    pub fn variant_for(&self, sequence: u64) -> u32 {
        if sequence >= self.from_sequence {
            self.variant
        } else {
            self.previous
        }
    }
}

impl Flow {
    pub fn new() -> Self {
        Self {
            credit: tokio::sync::watch::Sender::new(0),
            next_sequence: AtomicU64::new(0),
            variant: std::sync::Mutex::new(VariantSchedule::default()),
        }
    }

    /// The aggregator's word: `variant` from `from_sequence` on (a variant this sensor does not
    /// have is ignored and logged: the aggregator checked the set's digest, so it is a bug).
    pub fn switch_variant(&self, variant: u32, from_sequence: u64, variants: usize) {
        if variant as usize >= variants {
            tracing::error!(
                variant,
                variants,
                "switch to a variant this set does not have ignored"
            );
            return;
        }
        let mut s = self.variant.lock().expect("variant schedule lock");
        if s.variant != variant || s.from_sequence != from_sequence {
            let previous = s.variant;
            *s = VariantSchedule {
                variant,
                from_sequence,
                previous,
            };
            tracing::info!(
                variant,
                from_sequence,
                previous,
                "split variant switch scheduled"
            );
        }
    }
}

/// Max-rate mode: blocks until the aggregator's credit allows frame `n` (false: stopping).
fn wait_for_credit(shared: &CameraShared, n: u64) -> bool {
    let mut credit = shared.flow.credit.subscribe();
    if n < *credit.borrow() {
        return true;
    }
    let mut phase = shared.phase.clone();
    shared.runtime.block_on(async {
        tokio::select! {
            r = credit.wait_for(|c| n < *c) => r.is_ok(),
            () = phase.wait_for(Phase::Draining) => false,
        }
    })
}

/// Sets this thread's timer slack to 1 ns (Linux, `/proc/<tid>/timerslack_ns`; a thread may
/// set its own). The default 50 µs slack made the emulated sensor stage overshoot its padding:
/// a 0.5 ms sleep ended 83 µs late at the median on the development VM, 32 µs with 1 ns.
fn tighten_timer_slack() -> std::io::Result<()> {
    let me = std::fs::read_link("/proc/thread-self")?; // "<pid>/task/<tid>"
    let tid = me
        .file_name()
        .ok_or_else(|| std::io::Error::other("/proc/thread-self names no thread"))?;
    std::fs::write(
        std::path::Path::new("/proc")
            .join(tid)
            .join("timerslack_ns"),
        "1",
    )
}

/// The camera loop: frames go into `out` until `frames` are done or the sensor stops.
pub(crate) fn camera_loop(
    mut cam: Camera,
    settings: Settings,
    shared: CameraShared,
    out: mpsc::Sender<FeatureFrame>,
) {
    if cam.heads.iter().any(|h| h.padded_to.is_some())
        && let Err(e) = tighten_timer_slack()
    {
        // Only the padding's precision suffers.
        tracing::warn!(error = %e, "could not tighten the camera thread's timer slack");
    }
    let end = cam.frame_limit.map(|f| settings.start_frame + f);
    let mut epoch = trigger_epoch(settings.start_at_unix_ms);
    let mut n = settings.start_frame;
    let mut last_preview: Option<Instant> = None;
    while !shared.phase.reached(Phase::Draining) && end.is_none_or(|e| n < e) {
        let fps = f64::from_bits(shared.fps_bits.load(Ordering::Relaxed));
        let fleet_at = shared.flow.next_sequence.load(Ordering::Relaxed);
        if fleet_at > n {
            // Joining a fleet that is further on: continue from its frame. Without a shared
            // trigger the schedule is re-anchored so that frame is due now (no long sleep).
            if fps > 0.0 && settings.start_at_unix_ms.is_none() {
                let ahead = Duration::from_secs_f64((fleet_at - settings.start_frame) as f64 / fps);
                epoch = Instant::now()
                    .checked_sub(ahead)
                    .unwrap_or_else(Instant::now);
            }
            n = fleet_at;
        }
        if end.is_some_and(|e| n >= e) {
            break;
        }
        if fps <= 0.0 && !wait_for_credit(&shared, n) {
            break;
        }
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
        let variant = shared
            .flow
            .variant
            .lock()
            .expect("variant schedule lock")
            .variant_for(n);
        let frame = match cam.capture(n, variant, &shared.metrics) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(view = cam.view, frame = n, error = %e, "frame failed");
                n += 1;
                continue;
            }
        };
        shared.counters.captured.fetch_add(1, Ordering::Relaxed);
        shared.metrics.frames_captured.increment(1);
        if let Some(tx) = &shared.preview
            && last_preview.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            last_preview = Some(Instant::now());
            let _ = tx.try_send(cam.thumbnail(n));
        }
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
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                shared.metrics.frames_dropped.increment(1);
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_can_tighten_its_own_timer_slack() {
        std::thread::spawn(|| {
            super::tighten_timer_slack().expect("own timer slack");
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            let tid = me.file_name().unwrap().to_owned();
            let now = std::fs::read_to_string(
                std::path::Path::new("/proc")
                    .join(tid)
                    .join("timerslack_ns"),
            )
            .unwrap();
            assert_eq!(now.trim(), "1");
        })
        .join()
        .unwrap();
    }
}
