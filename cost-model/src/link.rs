//! Link budget of one split feature.

use serde::{Deserialize, Serialize};

/// What determines the bytes a view sends per frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkBudgetInput {
    /// Packed feature bytes of one view per frame (every crossing tensor): `ceil(elements ×
    /// bits / 8)` per tensor.
    pub payload_bytes: usize,
    /// (scale, zero point) pairs sent with each frame (0 for float passthrough).
    pub quantization_parameter_pairs: usize,
    /// Framing around the payload and parameters (protobuf message and gRPC prefix, sequence
    /// number, timestamps, timings): exact, see [`feature_message_bytes`].
    pub message_overhead_bytes: usize,
    /// Number of views (sensors).
    pub views: u32,
    /// Frame rate the budget is computed for.
    pub target_fps: f64,
    /// Bytes of one raw camera frame (what "everything on the aggregator" would send).
    pub raw_frame_bytes: usize,
}

/// The link cost of a split, per view and for the whole rig.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkBudget {
    /// Packed feature bytes of one view per frame: `ceil(elements × bits / 8)` per tensor.
    pub payload_bytes_per_view: usize,
    /// Quantization parameters: 8 bytes per (f32 scale, i32 zero point) pair.
    pub parameter_bytes_per_view: usize,
    /// Framing per view per frame.
    pub overhead_bytes_per_view: usize,
    /// Everything one view's stream carries per frame.
    pub bytes_per_view_per_frame: usize,
    /// All views together per frame.
    pub bytes_per_frame: usize,
    pub target_fps: f64,
    /// One view's link at the target rate, bits per second.
    pub bits_per_second_per_view: f64,
    /// All views on a shared bus at the target rate, bits per second.
    pub bits_per_second_total: f64,
    /// Raw frame bytes per view, for comparison.
    pub raw_frame_bytes_per_view: usize,
    /// `bytes_per_view_per_frame / raw_frame_bytes_per_view`.
    pub ratio_to_raw: f64,
}

/// Computes the link budget.
pub fn link_budget(i: &LinkBudgetInput) -> LinkBudget {
    let payload = i.payload_bytes;
    let params = i.quantization_parameter_pairs * 8;
    let per_view = payload + params + i.message_overhead_bytes;
    let bits_per_view = per_view as f64 * 8.0 * i.target_fps;
    LinkBudget {
        payload_bytes_per_view: payload,
        parameter_bytes_per_view: params,
        overhead_bytes_per_view: i.message_overhead_bytes,
        bytes_per_view_per_frame: per_view,
        bytes_per_frame: per_view * i.views as usize,
        target_fps: i.target_fps,
        bits_per_second_per_view: bits_per_view,
        bits_per_second_total: bits_per_view * f64::from(i.views),
        raw_frame_bytes_per_view: i.raw_frame_bytes,
        ratio_to_raw: if i.raw_frame_bytes == 0 {
            f64::NAN
        } else {
            per_view as f64 / i.raw_frame_bytes as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_bit_feature_budget() {
        let b = link_budget(&LinkBudgetInput {
            payload_bytes: 196,
            quantization_parameter_pairs: 1,
            message_overhead_bytes: 80,
            views: 4,
            target_fps: 30.0,
            raw_frame_bytes: 784,
        });
        assert_eq!(b.payload_bytes_per_view, 196);
        assert_eq!(b.bytes_per_view_per_frame, 196 + 8 + 80);
        assert_eq!(b.bytes_per_frame, 4 * 284);
        assert!((b.bits_per_second_per_view - 284.0 * 8.0 * 30.0).abs() < 1e-9);
    }
}

fn varint_len(v: u64) -> u64 {
    (64 - v.max(1).leading_zeros() as u64).div_ceil(7)
}

/// Bytes one feature frame occupies on the sensor's gRPC stream (the `splitnets.v1`
/// `SensorMessage` carrying it plus gRPC's 5-byte message prefix), with `parameter_pairs`
/// (scale, zero point) pairs sent per frame (0 for float and calibrated codecs) and
/// `payload_bytes` of payload.
///
/// Exact, because every field of a feature frame is fixed-width with explicit presence and the
/// stream's constants (shape, encoding, bit width) travel once, in the handshake; the proto crate
/// tests this formula against real encoded messages.
pub fn feature_message_bytes(parameter_pairs: usize, payload_bytes: u64) -> u64 {
    feature_message_bytes_in_set(parameter_pairs, payload_bytes, false)
}

/// [`feature_message_bytes`] for a frame of a bundle set, which names its variant
/// (`in_set`: a fixed32 field, 5 bytes).
pub fn feature_message_bytes_in_set(
    parameter_pairs: usize,
    payload_bytes: u64,
    in_set: bool,
) -> u64 {
    let len_field = |n: u64| if n == 0 { 0 } else { 1 + varint_len(n) + n };
    let pairs = parameter_pairs as u64;
    let frame = 9 // sequence (fixed64)
        + 9 // capture time (fixed64)
        + 5 // sensor time (fixed32)
        + 5 // queue time (fixed32)
        + len_field(4 * pairs) // scale, packed float
        + len_field(4 * pairs) // zero_point, packed sfixed32
        + len_field(payload_bytes)
        + if in_set { 5 } else { 0 }; // variant (fixed32)
    let message = 1 + varint_len(frame) + frame;
    message + 5
}

#[cfg(test)]
mod exact_tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(16_383), 2);
        assert_eq!(varint_len(16_384), 3);
    }
}
