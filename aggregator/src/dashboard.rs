//! The live dashboard: a static page and a server-sent-events feed on the admin HTTP server.
//!
//! Cost is bounded by construction. The frame path only ever (a) sends predictions on the
//! broadcast it already has (a lagging reader skips), (b) offers an event on a small broadcast
//! (dropped when full or unread), and (c) on the tail thread, at most [`FEATURE_SAMPLE_PERIOD`]
//! apart and only while a page is connected, copies the last fused frame's dequantized
//! features (a few kB) into a `watch` slot. Everything else (windows, percentiles, the JSON)
//! happens on one task, [`FEED_PERIOD`] apart, over fixed-size windows, and only while a page
//! is connected; each page receives the latest snapshot (a slow page skips, never queues).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::Stream;
use splitnets_ops::{Phase, PhaseWatch};
use splitnets_proto::wire::Prediction;
use tokio::sync::{broadcast, watch};

/// The page, served as is (no build step, nothing from a CDN).
const PAGE: &str = include_str!("dashboard.html");
/// How often connected pages get a snapshot.
pub const FEED_PERIOD: Duration = Duration::from_millis(250);
/// How often the tail thread copies features for the page (only while one is connected).
pub const FEATURE_SAMPLE_PERIOD: Duration = Duration::from_millis(250);
/// The closest two snapshots may be (a change of the views present is sent at once).
const URGENT_MIN_GAP: Duration = Duration::from_millis(40);
/// Predictions kept for the latency percentiles and histogram.
const LATENCY_WINDOW: usize = 600;
/// Events kept for the timeline.
const EVENTS_KEPT: usize = 40;

/// Something worth a mark on the timeline, from the frame path.
#[derive(Debug, Clone)]
pub enum DashEvent {
    FrameRejected {
        view: u32,
        reason: &'static str,
    },
    SensorRejected {
        reason: &'static str,
    },
    /// Live split switching moved the fleet to another variant of the bundle set.
    SplitSwitch {
        from: u32,
        to: u32,
        reason: &'static str,
        capacity_bps: f64,
        /// The new variant's link budget per view, bytes per second.
        budget_bytes_per_second: f64,
    },
}

/// One fused frame's dequantized features, as the tail saw them.
#[derive(Debug, Clone)]
pub struct FeatureSample {
    pub sequence: u64,
    pub views: Vec<u32>,
    /// `[views, C, H, W]`, views in `views` order.
    pub values: Vec<f32>,
    /// One view's feature shape `[1, C, H, W]` (variants of a bundle set differ).
    pub shape: Vec<usize>,
}

/// A sensor's debug thumbnail (only from sensors started with `--debug-preview`).
#[derive(Debug, Clone)]
pub struct Preview {
    pub sequence: u64,
    pub width: u32,
    pub height: u32,
    pub gray8: Vec<u8>,
    pub at: Instant,
}

/// The largest thumbnail side accepted.
pub const PREVIEW_MAX_SIDE: u32 = 32;
/// At most one thumbnail per view this often; more are dropped.
pub const PREVIEW_PERIOD: Duration = Duration::from_millis(900);

/// The handles the frame path holds; cheap to clone.
#[derive(Debug, Clone)]
pub struct DashboardTap {
    viewers: Arc<AtomicUsize>,
    features: Arc<watch::Sender<Option<Arc<FeatureSample>>>>,
    events: broadcast::Sender<DashEvent>,
    /// The latest thumbnail per view (bounded: one each).
    previews: Arc<std::sync::Mutex<Vec<Option<Preview>>>>,
}

impl DashboardTap {
    /// Whether any page is connected (the tail copies features only then).
    pub fn watched(&self) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
    }
    pub fn offer_features(&self, sample: FeatureSample) {
        self.features.send_replace(Some(Arc::new(sample)));
    }
    /// Never blocks; without a reader, or when full, the event is dropped.
    pub fn event(&self, e: DashEvent) {
        if self.watched() {
            let _ = self.events.send(e);
        }
    }
}

/// What the feed task needs besides the tap.
#[derive(Debug, Clone)]
pub struct DashboardSetup {
    pub bundle_name: String,
    pub classes: Vec<String>,
    pub views: u32,
    pub feature_shape: Vec<usize>,
    /// The link budget per view, bytes per second at the bundle's target frame rate.
    pub budget_bytes_per_second: f64,
    pub fusion_deadline: Duration,
}

#[derive(Debug)]
pub struct Dashboard {
    tap: DashboardTap,
    snapshot: watch::Sender<Arc<String>>,
}

impl Dashboard {
    pub fn new(views: u32) -> Self {
        let (features, _) = watch::channel(None);
        let (events, _) = broadcast::channel(64);
        let (snapshot, _) = watch::channel(Arc::new(String::from("{}")));
        Self {
            tap: DashboardTap {
                viewers: Arc::new(AtomicUsize::new(0)),
                features: Arc::new(features),
                events,
                previews: Arc::new(std::sync::Mutex::new(vec![None; views as usize])),
            },
            snapshot,
        }
    }

    pub fn tap(&self) -> DashboardTap {
        self.tap.clone()
    }

    /// The routes to add to the admin server: `/` (the page) and `/events` (the feed, which
    /// ends at [`Phase::Stopped`] so the admin server can stop).
    pub fn routes(&self, phase: PhaseWatch) -> Router {
        let (tap, snapshot) = (self.tap.clone(), self.snapshot.clone());
        Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/dashboard", get(|| async { Html(PAGE) }))
            .route(
                "/events",
                get(move || {
                    let rx = snapshot.subscribe();
                    let guard = ViewerGuard::new(tap.viewers.clone());
                    let phase = phase.clone();
                    async move { feed(rx, guard, phase).into_response() }
                }),
            )
    }

    /// Builds snapshots while pages are connected; ends at [`Phase::Stopped`].
    pub async fn run(
        self,
        setup: DashboardSetup,
        predictions: broadcast::Sender<Prediction>,
        mut phase: PhaseWatch,
    ) {
        let mut state = FeedState::new(&setup);
        let mut preds = predictions.subscribe();
        let mut events = self.tap.events.subscribe();
        let features = self.tap.features.subscribe();
        let mut tick = tokio::time::interval(FEED_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_sent = Instant::now();
        loop {
            let mut urgent = false;
            tokio::select! {
                () = phase.wait_for(Phase::Stopped) => return,
                r = preds.recv() => match r {
                    // Without a page only the counters move: no windows, no copies.
                    Ok(p) if !self.tap.watched() => state.count(&p),
                    Ok(p) => {
                        // A camera lost or back: the page hears of it now, not at the next
                        // tick (at most every URGENT_MIN_GAP).
                        urgent = state.last.as_ref().is_some_and(|l| l.views_missing != p.views_missing);
                        state.prediction(&p);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => state.skipped += n,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                r = events.recv() => match r {
                    Ok(e) => state.event(e),
                    Err(broadcast::error::RecvError::Lagged(n)) => state.events_dropped += n,
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = tick.tick() => urgent = true,
            }
            if urgent && self.tap.watched() && last_sent.elapsed() >= URGENT_MIN_GAP {
                last_sent = Instant::now();
                let f = features.borrow().clone();
                let previews = self.tap.previews.lock().expect("previews lock").clone();
                self.snapshot.send_replace(Arc::new(state.snapshot(
                    &setup,
                    f.as_deref(),
                    &previews,
                )));
            }
        }
    }
}

/// The `DebugPreview` service: checks each thumbnail, keeps the latest per view.
#[derive(Debug, Clone)]
pub struct PreviewService {
    pub tap: DashboardTap,
    pub bundle_digest: String,
    pub views: u32,
    /// mTLS: as on the feature link, only the identity allowed for a view may send its
    /// thumbnail.
    pub view_identities: Option<Vec<String>>,
}

#[tonic::async_trait]
impl splitnets_proto::wire::debug_preview_server::DebugPreview for PreviewService {
    async fn send(
        &self,
        request: tonic::Request<tonic::Streaming<splitnets_proto::wire::PreviewFrame>>,
    ) -> Result<tonic::Response<splitnets_proto::wire::PreviewAck>, tonic::Status> {
        let certificate = request
            .extensions()
            .get::<crate::front_door::PeerInfo>()
            .and_then(|p| p.certificate.clone());
        let mut inbound = request.into_inner();
        while let Some(f) = inbound.message().await? {
            if let Some(ids) = &self.view_identities {
                let allowed = ids.get(f.view_index as usize);
                let ok = allowed
                    .zip(certificate.as_ref())
                    .is_some_and(|(id, cert)| splitnets_ops::tls::certificate_valid_for(cert, id));
                if !ok {
                    return Err(tonic::Status::permission_denied(format!(
                        "preview for view {}: no certificate valid for the identity allowed for it",
                        f.view_index
                    )));
                }
            }
            if f.bundle_digest != self.bundle_digest {
                return Err(tonic::Status::failed_precondition(
                    "preview: bundle digest mismatch",
                ));
            }
            if f.view_index >= self.views
                || f.width == 0
                || f.height == 0
                || f.width > PREVIEW_MAX_SIDE
                || f.height > PREVIEW_MAX_SIDE
                || f.gray8.len() != (f.width * f.height) as usize
            {
                return Err(tonic::Status::invalid_argument(format!(
                    "preview: view {} of {}, {}×{} px (at most {PREVIEW_MAX_SIDE}×{PREVIEW_MAX_SIDE}), {} bytes",
                    f.view_index,
                    self.views,
                    f.width,
                    f.height,
                    f.gray8.len()
                )));
            }
            let mut previews = self.tap.previews.lock().expect("previews lock");
            let slot = &mut previews[f.view_index as usize];
            if slot
                .as_ref()
                .is_some_and(|p| p.at.elapsed() < PREVIEW_PERIOD)
            {
                continue; // faster than allowed: dropped
            }
            *slot = Some(Preview {
                sequence: f.sequence,
                width: f.width,
                height: f.height,
                gray8: f.gray8.to_vec(),
                at: Instant::now(),
            });
        }
        Ok(tonic::Response::new(splitnets_proto::wire::PreviewAck {}))
    }
}

/// Counts a connected page for as long as its feed lives.
struct ViewerGuard(Arc<AtomicUsize>);
impl ViewerGuard {
    fn new(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}
impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn feed(
    rx: watch::Receiver<Arc<String>>,
    guard: ViewerGuard,
    phase: PhaseWatch,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(
        (rx, guard, phase),
        |(mut rx, guard, mut phase)| async move {
            tokio::select! {
                r = rx.changed() => r.ok()?,
                () = phase.wait_for(Phase::Stopped) => return None,
            }
            let data = rx.borrow_and_update().clone();
            Some((Ok(Event::default().data(data.as_str())), (rx, guard, phase)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

struct Recent {
    at: Instant,
    e2e_ms: f64,
    sensor_ms: f64,
    link_ms: f64,
    wait_ms: f64,
    tail_ms: f64,
}

struct FeedState {
    started: Instant,
    latency: VecDeque<Recent>,
    /// (when, view, message bytes) over the last second, for bytes/s per view.
    bytes: VecDeque<(Instant, u32, u64)>,
    /// When each view last contributed to a fused frame.
    last_used: Vec<Option<Instant>>,
    events: VecDeque<serde_json::Value>,
    last: Option<Prediction>,
    predictions: u64,
    degraded: u64,
    rejected: u64,
    skipped: u64,
    events_dropped: u64,
    /// The link budget of the variant the fleet switched to last (bundle sets).
    budget_now: Option<f64>,
}

impl FeedState {
    fn new(setup: &DashboardSetup) -> Self {
        Self {
            started: Instant::now(),
            latency: VecDeque::with_capacity(LATENCY_WINDOW),
            bytes: VecDeque::new(),
            last_used: vec![None; setup.views as usize],
            events: VecDeque::with_capacity(EVENTS_KEPT),
            last: None,
            predictions: 0,
            degraded: 0,
            rejected: 0,
            skipped: 0,
            events_dropped: 0,
            budget_now: None,
        }
    }

    fn push_event(&mut self, v: serde_json::Value) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(v);
    }

    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// What is kept while no page is connected.
    fn count(&mut self, p: &Prediction) {
        self.predictions += 1;
        if !p.views_missing.is_empty() {
            self.degraded += 1;
        }
    }

    fn prediction(&mut self, p: &Prediction) {
        let now = Instant::now();
        let ms = |ns: u64| ns as f64 / 1e6;
        self.predictions += 1;
        let slowest = |f: fn(&splitnets_proto::wire::ViewReport) -> u64| {
            p.views.iter().map(f).max().map_or(0.0, ms)
        };
        if self.latency.len() == LATENCY_WINDOW {
            self.latency.pop_front();
        }
        self.latency.push_back(Recent {
            at: now,
            e2e_ms: ms(p.end_to_end_ns),
            sensor_ms: slowest(|v| v.sensor_ns),
            link_ms: slowest(|v| v.queue_ns + v.link_ns),
            wait_ms: ms(p.wait_ns),
            tail_ms: ms(p.decode_ns + p.tail_ns),
        });
        for v in &p.views {
            self.bytes.push_back((now, v.view_index, v.message_bytes));
            if let Some(slot) = self.last_used.get_mut(v.view_index as usize) {
                *slot = Some(now);
            }
        }
        while self
            .bytes
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.bytes.pop_front();
        }
        if !p.views_missing.is_empty() {
            self.degraded += 1;
            let t = self.t();
            let missing = format!("{:?}", p.views_missing);
            // A run of frames missing the same views is one line on the timeline.
            if let Some(last) = self.events.back_mut()
                && last["kind"] == "degraded"
                && last["missing"] == missing.as_str()
            {
                let first = last["first"].as_u64().unwrap_or(p.sequence);
                let count = last["count"].as_u64().unwrap_or(1) + 1;
                last["count"] = count.into();
                last["t"] = t.into();
                last["text"] = format!(
                    "frames {first}–{} fused without view(s) {missing}",
                    p.sequence
                )
                .into();
                self.last = Some(p.clone());
                return;
            }
            self.push_event(serde_json::json!({
                "t": t, "kind": "degraded", "first": p.sequence, "missing": missing, "count": 1,
                "text": format!("frame {} fused without view(s) {missing}", p.sequence),
            }));
        }
        self.last = Some(p.clone());
    }

    fn event(&mut self, e: DashEvent) {
        let t = self.t();
        if let DashEvent::SplitSwitch {
            from,
            to,
            reason,
            capacity_bps,
            budget_bytes_per_second,
        } = e
        {
            self.budget_now = Some(budget_bytes_per_second);
            self.push_event(serde_json::json!({
                "t": t, "kind": "switch", "count": 1,
                "text": format!(
                    "split switch: variant {from} → {to} ({reason}; link ≈ {:.0} kbit/s)",
                    capacity_bps / 1e3
                ),
            }));
            return;
        }
        self.rejected += 1;
        let text = match e {
            DashEvent::FrameRejected { view, reason } => {
                format!("frame from view {view} rejected: {reason}")
            }
            DashEvent::SensorRejected { reason } => format!("sensor refused: {reason}"),
            DashEvent::SplitSwitch { .. } => unreachable!("handled above"),
        };
        // Collapse a burst of the same rejection into one line with a count.
        if let Some(last) = self.events.back_mut()
            && last["text"] == text.as_str()
        {
            last["count"] = (last["count"].as_u64().unwrap_or(1) + 1).into();
            last["t"] = t.into();
            return;
        }
        self.push_event(serde_json::json!({"t": t, "kind": "rejected", "text": text, "count": 1}));
    }

    fn snapshot(
        &self,
        setup: &DashboardSetup,
        f: Option<&FeatureSample>,
        previews: &[Option<Preview>],
    ) -> String {
        let now = Instant::now();
        let pct = |mut v: Vec<f64>| -> serde_json::Value {
            v.retain(|x| *x > 0.0);
            if v.is_empty() {
                return serde_json::Value::Null;
            }
            v.sort_by(f64::total_cmp);
            let at =
                |p: f64| v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
            serde_json::json!({"p50": at(50.0), "p90": at(90.0), "p99": at(99.0), "max": v[v.len() - 1]})
        };
        let col = |f: fn(&Recent) -> f64| self.latency.iter().map(f).collect::<Vec<f64>>();
        // Histogram of end to end: 24 log-spaced buckets from 0.1 ms to 100 ms.
        let mut hist = vec![0u32; 24];
        for r in &self.latency {
            if r.e2e_ms > 0.0 {
                let b = ((r.e2e_ms / 0.1).log10() / 3.0 * 24.0)
                    .floor()
                    .clamp(0.0, 23.0) as usize;
                hist[b] += 1;
            }
        }
        let window = self
            .latency
            .front()
            .map_or(0.0, |r| now.duration_since(r.at).as_secs_f64());
        let fps = if window > 0.0 {
            (self.latency.len() as f64 - 1.0) / window
        } else {
            0.0
        };
        let fresh = setup.fusion_deadline + Duration::from_millis(250);
        let views: Vec<serde_json::Value> = (0..setup.views)
            .map(|v| {
                let bytes: u64 = self
                    .bytes
                    .iter()
                    .filter(|(_, view, _)| *view == v)
                    .map(|(_, _, b)| b)
                    .sum();
                let last = self.last_used[v as usize];
                let missing_now = self
                    .last
                    .as_ref()
                    .is_some_and(|p| p.views_missing.contains(&v));
                let present = !missing_now && last.is_some_and(|t| now.duration_since(t) <= fresh);
                let feature = f.and_then(|s| {
                    let i = s.views.iter().position(|x| *x == v)?;
                    let per: usize = s.shape.iter().skip(1).product();
                    let vals = &s.values[i * per..(i + 1) * per];
                    // Per channel, scaled to 0..255 for the heat map.
                    let hw: usize = s.shape.iter().skip(2).product();
                    let channels: Vec<Vec<u8>> = vals
                        .chunks(hw.max(1))
                        .map(|c| {
                            let (lo, hi) = c
                                .iter()
                                .fold((f32::MAX, f32::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
                            let span = (hi - lo).max(1e-12);
                            c.iter().map(|x| ((x - lo) / span * 255.0) as u8).collect()
                        })
                        .collect();
                    Some(serde_json::json!({"sequence": s.sequence, "channels": channels}))
                });
                // A thumbnail older than 5 s is gone (the sensor stopped sending).
                let preview = previews
                    .get(v as usize)
                    .and_then(Option::as_ref)
                    .filter(|p| p.at.elapsed() < Duration::from_secs(5))
                    .map(|p| {
                        serde_json::json!({
                            "sequence": p.sequence, "width": p.width, "height": p.height,
                            "gray8": p.gray8,
                        })
                    });
                serde_json::json!({
                    "view": v,
                    "present": present,
                    "preview": preview,
                    "last_seen_s": last.map(|t| now.duration_since(t).as_secs_f64()),
                    "bytes_per_s": bytes,
                    "budget_bytes_per_s": self.budget_now.unwrap_or(setup.budget_bytes_per_second),
                    "feature": feature,
                })
            })
            .collect();
        let prediction = self.last.as_ref().map(|p| {
            serde_json::json!({
                "sequence": p.sequence,
                "class": p.class_name,
                "scores": p.scores,
                "views_used": p.views_used,
                "views_missing": p.views_missing,
                "end_to_end_ms": p.end_to_end_ns as f64 / 1e6,
            })
        });
        serde_json::json!({
            "bundle": setup.bundle_name,
            "classes": setup.classes,
            "feature_shape": f.map_or(&setup.feature_shape, |s| &s.shape),
            "fusion_deadline_ms": setup.fusion_deadline.as_secs_f64() * 1e3,
            "uptime_s": self.t(),
            "fused_per_s": fps,
            "predictions": self.predictions,
            "degraded": self.degraded,
            "rejected": self.rejected,
            "skipped_by_dashboard": self.skipped,
            "events_dropped": self.events_dropped,
            "prediction": prediction,
            "latency_ms": {
                "end_to_end": pct(col(|r| r.e2e_ms)),
                "sensor": pct(col(|r| r.sensor_ms)),
                "link": pct(col(|r| r.link_ms)),
                "wait": pct(col(|r| r.wait_ms)),
                "tail": pct(col(|r| r.tail_ms)),
                "window": self.latency.len(),
                "histogram": {"from_ms": 0.1, "to_ms": 100.0, "counts": hist},
            },
            "views": views,
            "events": self.events,
        })
        .to_string()
    }
}
