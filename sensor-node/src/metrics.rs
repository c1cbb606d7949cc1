//! The sensor's metrics, registered once on the daemon's own recorder: the frame path only
//! increments handles.

use metrics::{Counter, Histogram};
use splitnets_ops::{MetricKind, Metrics};

/// Handles for every metric the sensor records.
#[derive(Debug, Clone)]
pub struct SensorMetrics {
    pub frames_captured: Counter,
    pub frames_dropped: Counter,
    pub frames_sent: Counter,
    pub frames_rejected: Counter,
    pub link_sent_bytes: Counter,
    pub reconnects: Counter,
    pub head_seconds: Histogram,
    pub encode_seconds: Histogram,
}

impl SensorMetrics {
    pub fn register(m: &Metrics) -> Self {
        use MetricKind::{Counter as C, Histogram as H};
        let described = [
            (
                C,
                "sensor_frames_captured_total",
                "Frames captured and run through the head.",
            ),
            (
                C,
                "sensor_frames_dropped_total",
                "Frames dropped because the link queue was full or the stream broke.",
            ),
            (
                C,
                "sensor_frames_sent_total",
                "Feature frames written to the aggregator stream.",
            ),
            (
                C,
                "sensor_frames_rejected_total",
                "Feature frames the aggregator acknowledged with an error.",
            ),
            (
                C,
                "sensor_link_sent_bytes_total",
                "Bytes of feature frames on the stream, gRPC prefix included.",
            ),
            (
                C,
                "sensor_reconnects_total",
                "Times the link to the aggregator was re-established after a failure.",
            ),
            (
                H,
                "sensor_head_seconds",
                "Time in the head model (ONNX Runtime) per frame.",
            ),
            (
                H,
                "sensor_encode_seconds",
                "Time quantizing and packing the split feature per frame.",
            ),
        ];
        for (kind, name, help) in described {
            m.describe(kind, name, help);
        }
        Self {
            frames_captured: m.counter("sensor_frames_captured_total", &[]),
            frames_dropped: m.counter("sensor_frames_dropped_total", &[]),
            frames_sent: m.counter("sensor_frames_sent_total", &[]),
            frames_rejected: m.counter("sensor_frames_rejected_total", &[]),
            link_sent_bytes: m.counter("sensor_link_sent_bytes_total", &[]),
            reconnects: m.counter("sensor_reconnects_total", &[]),
            head_seconds: m.histogram("sensor_head_seconds", &[]),
            encode_seconds: m.histogram("sensor_encode_seconds", &[]),
        }
    }
}
