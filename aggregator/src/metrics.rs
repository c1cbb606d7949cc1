//! The aggregator's metrics, registered once per view (and per rejection reason) on the
//! daemon's own recorder: the frame path only increments handles.

use metrics::{Counter, Gauge, Histogram};
use splitnets_ops::{MetricKind, Metrics};

/// Why a frame was rejected: the `reason` label of `aggregator_frames_rejected_total`.
pub const REJECT_REASONS: [&str; 7] = [
    "hello",
    "empty",
    "no_sequence",
    "epoch",
    "sequence",
    "variant",
    "payload",
];

/// Handles of one view.
#[derive(Debug, Clone)]
pub struct ViewMetrics {
    pub frames_received: Counter,
    pub link_received_bytes: Counter,
    pub late_views: Counter,
    pub duplicate_views: Counter,
    /// Indexed like [`REJECT_REASONS`].
    pub frames_rejected: Vec<Counter>,
}

impl ViewMetrics {
    pub fn rejected(&self, reason: &str) -> &Counter {
        let i = REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REJECT_REASONS.len() - 1);
        &self.frames_rejected[i]
    }

    /// Handles that record nothing (unit tests of a single component).
    pub fn detached() -> Self {
        Self {
            frames_received: Counter::noop(),
            link_received_bytes: Counter::noop(),
            late_views: Counter::noop(),
            duplicate_views: Counter::noop(),
            frames_rejected: REJECT_REASONS.iter().map(|_| Counter::noop()).collect(),
        }
    }
}

/// Every handle the aggregator records.
#[derive(Debug, Clone)]
pub struct AggregatorMetrics {
    pub views: Vec<ViewMetrics>,
    pub connected_sensors: Gauge,
    pub pending_frames: Gauge,
    pub frames_evicted: Counter,
    pub partial_frames: Counter,
    pub tail_errors: Counter,
    pub implausible_timestamps: Counter,
    pub stale_epoch_views: Counter,
    /// Indexed by views used - 1.
    pub predictions: Vec<Counter>,
    pub tail_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub handshake_timeouts: Counter,
    pub idle_streams_closed: Counter,
    pub oversize_messages: Counter,
    pub log_lines_suppressed: Counter,
    /// Live split switching (bundle sets).
    pub split_switches: Counter,
    pub split_switch_seconds: Histogram,
    pub split_switch_frames_in_flight: Counter,
    pub split_variant: Gauge,
    pub variant_mismatched_views: Counter,
    /// Indexed like [`CONNECTION_REFUSALS`].
    connections_refused: Vec<Counter>,
    metrics: Metrics,
}

/// Why a connection was closed before any gRPC: the `reason` label of
/// `aggregator_connections_refused_total`.
pub const CONNECTION_REFUSALS: [&str; 3] = ["limit", "silent", "tls"];

impl AggregatorMetrics {
    pub fn register(m: &Metrics, views: u32) -> Self {
        use MetricKind::{Counter as C, Gauge as G, Histogram as H};
        let described = [
            (
                C,
                "aggregator_frames_received_total",
                "Feature frames accepted from a sensor, per view.",
            ),
            (
                C,
                "aggregator_link_received_bytes_total",
                "Bytes of accepted feature frames on the stream (gRPC prefix included), per view.",
            ),
            (
                C,
                "aggregator_late_views_total",
                "Views that arrived after their frame was fused; dropped.",
            ),
            (
                C,
                "aggregator_duplicate_views_total",
                "Second copies of a view for a pending frame; dropped.",
            ),
            (
                C,
                "aggregator_frames_rejected_total",
                "Feature frames rejected with INVALID_ARGUMENT, per view and reason.",
            ),
            (
                C,
                "aggregator_sensors_rejected_total",
                "Sensor handshakes refused, per reason.",
            ),
            (
                G,
                "aggregator_connected_sensors",
                "Sensors with an open feature stream.",
            ),
            (
                G,
                "aggregator_pending_frames",
                "Frames waiting for more views.",
            ),
            (
                C,
                "aggregator_frames_evicted_total",
                "Frames fused early because too many were pending.",
            ),
            (
                C,
                "aggregator_partial_frames_total",
                "Frames fused at their deadline with views missing.",
            ),
            (
                C,
                "aggregator_tail_errors_total",
                "Frames the tail failed on.",
            ),
            (
                C,
                "aggregator_implausible_timestamps_total",
                "Frames whose capture time is far from the aggregator's clock (kept out of latency metrics).",
            ),
            (
                C,
                "aggregator_stale_epoch_views_total",
                "Views of an older trigger epoch dropped by fusion after the fleet moved on.",
            ),
            (
                C,
                "aggregator_predictions_total",
                "Predictions published, by number of views used.",
            ),
            (
                C,
                "aggregator_connections_refused_total",
                "Connections closed before any gRPC: over the connection limit, silent past the handshake timeout, or a failed TLS handshake (e.g. a certificate from another CA).",
            ),
            (
                C,
                "aggregator_handshake_timeouts_total",
                "Feature streams ended with DEADLINE_EXCEEDED because no Hello came within the handshake timeout.",
            ),
            (
                C,
                "aggregator_idle_streams_closed_total",
                "Admitted feature streams closed because their view sent no frame within the idle timeout (the view is freed).",
            ),
            (
                C,
                "aggregator_oversize_messages_total",
                "Messages over the feature link's size limit; their stream ended with RESOURCE_EXHAUSTED.",
            ),
            (
                C,
                "aggregator_log_lines_suppressed_total",
                "Warnings about rejected peers not written because they exceeded the log rate limit.",
            ),
            (
                C,
                "aggregator_split_switches_total",
                "Live split switches decided (bundle sets): the fleet moved to another variant.",
            ),
            (
                H,
                "aggregator_split_switch_seconds",
                "From a split switch's decision to the first frame fused with the new variant.",
            ),
            (
                C,
                "aggregator_split_switch_frames_in_flight_total",
                "Frames fused with the old variant after a switch was decided (made before the boundary; none lost).",
            ),
            (
                G,
                "aggregator_split_variant",
                "The variant of the bundle set the fleet was last told to run.",
            ),
            (
                C,
                "aggregator_variant_mismatched_views_total",
                "Views left out of a fused frame because they were made with another variant than the frame's other views.",
            ),
            (
                H,
                "aggregator_tail_seconds",
                "Time in the tail model (ONNX Runtime) per fused frame.",
            ),
            (
                H,
                "aggregator_end_to_end_seconds",
                "From the earliest view's capture to the prediction.",
            ),
        ];
        for (kind, name, help) in described {
            m.describe(kind, name, help);
        }
        let views_metrics = (0..views)
            .map(|v| {
                let view = [("view", v.to_string())];
                ViewMetrics {
                    frames_received: m.counter("aggregator_frames_received_total", &view),
                    link_received_bytes: m.counter("aggregator_link_received_bytes_total", &view),
                    late_views: m.counter("aggregator_late_views_total", &view),
                    duplicate_views: m.counter("aggregator_duplicate_views_total", &view),
                    frames_rejected: REJECT_REASONS
                        .iter()
                        .map(|r| {
                            m.counter(
                                "aggregator_frames_rejected_total",
                                &[("view", v.to_string()), ("reason", (*r).to_string())],
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            views: views_metrics,
            connected_sensors: m.gauge("aggregator_connected_sensors", &[]),
            pending_frames: m.gauge("aggregator_pending_frames", &[]),
            frames_evicted: m.counter("aggregator_frames_evicted_total", &[]),
            partial_frames: m.counter("aggregator_partial_frames_total", &[]),
            tail_errors: m.counter("aggregator_tail_errors_total", &[]),
            implausible_timestamps: m.counter("aggregator_implausible_timestamps_total", &[]),
            stale_epoch_views: m.counter("aggregator_stale_epoch_views_total", &[]),
            predictions: (1..=views)
                .map(|n| {
                    m.counter(
                        "aggregator_predictions_total",
                        &[("views_used", n.to_string())],
                    )
                })
                .collect(),
            tail_seconds: m.histogram("aggregator_tail_seconds", &[]),
            end_to_end_seconds: m.histogram("aggregator_end_to_end_seconds", &[]),
            handshake_timeouts: m.counter("aggregator_handshake_timeouts_total", &[]),
            idle_streams_closed: m.counter("aggregator_idle_streams_closed_total", &[]),
            oversize_messages: m.counter("aggregator_oversize_messages_total", &[]),
            log_lines_suppressed: m.counter("aggregator_log_lines_suppressed_total", &[]),
            split_switches: m.counter("aggregator_split_switches_total", &[]),
            split_switch_seconds: m.histogram("aggregator_split_switch_seconds", &[]),
            split_switch_frames_in_flight: m
                .counter("aggregator_split_switch_frames_in_flight_total", &[]),
            split_variant: m.gauge("aggregator_split_variant", &[]),
            variant_mismatched_views: m.counter("aggregator_variant_mismatched_views_total", &[]),
            connections_refused: CONNECTION_REFUSALS
                .iter()
                .map(|r| {
                    m.counter(
                        "aggregator_connections_refused_total",
                        &[("reason", (*r).to_string())],
                    )
                })
                .collect(),
            metrics: m.clone(),
        }
    }

    /// A connection closed before any gRPC, `reason` one of [`CONNECTION_REFUSALS`].
    pub fn connection_refused(&self, reason: &str) {
        let i = CONNECTION_REFUSALS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.connections_refused[i].increment(1);
    }

    /// Sensor handshakes refused (rare: registered when it happens).
    pub fn sensor_rejected(&self, reason: &'static str) {
        self.metrics
            .counter(
                "aggregator_sensors_rejected_total",
                &[("reason", reason.to_string())],
            )
            .increment(1);
    }
}
