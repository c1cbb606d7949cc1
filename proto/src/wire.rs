//! The gRPC wire contract, package `splitnets.v1`, generated from `proto/splitnets/v1/splitnets.proto`.

#![allow(clippy::all, missing_docs, unreachable_pub, unused_qualifications)]

tonic::include_proto!("splitnets.v1");

/// Version of the wire protocol this build speaks; a sensor and an aggregator must agree.
pub const PROTOCOL_VERSION: u32 = 2;

/// The encoded `FileDescriptorSet` of the wire schema, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("splitnets_v1_descriptor");

/// Largest message either side accepts. A feature frame of a 1x3x224x224 float32 tensor is
/// ~600 KiB; 16 MiB leaves room for large uncompressed splits while bounding memory per stream.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The feature frame of one encoded view: only what changes per frame. Quantization parameters
/// travel only with a dynamic-range codec (a calibrated range is pinned by the bundle).
pub fn frame_to_wire(
    t: &crate::codec::EncodedTensor,
    spec: crate::codec::CodecSpec,
    sequence: u64,
    capture_time_unix_ns: u64,
    sensor_ns: u32,
) -> FeatureFrame {
    let dynamic = spec.parameter_count(&t.shape) > 0;
    FeatureFrame {
        sequence: Some(sequence),
        capture_time_unix_ns: Some(capture_time_unix_ns),
        sensor_ns: Some(sensor_ns),
        // Stamped when the frame enters the stream.
        queue_ns: Some(0),
        scale: if dynamic { t.scale.clone() } else { Vec::new() },
        zero_point: if dynamic {
            t.zero_point.clone()
        } else {
            Vec::new()
        },
        payload: t.payload.clone(),
        variant: None,
    }
}

/// The encoded tensor a frame carries, given the stream's constants (the bundle's feature
/// `shape` and codec). The payload is shared, not copied; structural checks happen in
/// [`crate::codec::validate`].
pub fn frame_tensor(
    f: &FeatureFrame,
    spec: crate::codec::CodecSpec,
    shape: &[usize],
) -> crate::codec::EncodedTensor {
    use crate::codec::{CodecSpec, EncodedTensor, Encoding};
    let (encoding, bits, channel_axis) = match spec {
        CodecSpec::Float32 => (Encoding::Float32, 32, -1),
        CodecSpec::Float16 => (Encoding::Float16, 16, -1),
        CodecSpec::Affine { bits, per_channel } => (
            Encoding::AffineUint,
            u32::from(bits),
            if per_channel && shape.len() >= 2 {
                1
            } else {
                -1
            },
        ),
        CodecSpec::AffineCalibrated { bits, .. } => (Encoding::AffineUint, u32::from(bits), -1),
    };
    let (scale, zero_point) = match spec.fixed_parameters() {
        Some((s, z)) => (vec![s], vec![z]),
        None => (f.scale.clone(), f.zero_point.clone()),
    };
    EncodedTensor {
        shape: shape.to_vec(),
        encoding,
        bits,
        scale,
        zero_point,
        channel_axis,
        payload: f.payload.clone(),
    }
}

/// Bytes gRPC puts in front of every message (compression flag + 4-byte length).
pub const GRPC_FRAME_PREFIX_BYTES: usize = 5;

/// Bytes one feature frame occupies on the stream: the `SensorMessage` plus gRPC's prefix.
pub fn sensor_message_wire_bytes(m: &SensorMessage) -> usize {
    prost::Message::encoded_len(m) + GRPC_FRAME_PREFIX_BYTES
}

/// Bytes a feature frame of `shape` encoded with `spec` occupies on the stream: exact (see
/// [`splitnets_cost_model::feature_message_bytes`]).
pub fn feature_frame_wire_bytes(shape: &[usize], spec: crate::codec::CodecSpec) -> usize {
    feature_frame_wire_bytes_in_set(shape, spec, false)
}

/// [`feature_frame_wire_bytes`] for a frame of a bundle set (`in_set`: it names its variant).
pub fn feature_frame_wire_bytes_in_set(
    shape: &[usize],
    spec: crate::codec::CodecSpec,
    in_set: bool,
) -> usize {
    let elements: usize = shape.iter().product();
    splitnets_cost_model::feature_message_bytes_in_set(
        spec.parameter_count(shape),
        spec.payload_bytes(elements) as u64,
        in_set,
    ) as usize
}

/// The feature link's per-message decoding limit for a bundle whose frames are `shape` encoded
/// with `spec`: twice the largest legitimate frame, at least 64 KiB, at most
/// [`MAX_MESSAGE_BYTES`]. Anything larger is not a frame of this bundle, so it is never buffered.
pub fn feature_link_message_limit(shape: &[usize], spec: crate::codec::CodecSpec) -> usize {
    (2 * feature_frame_wire_bytes(shape, spec)).clamp(64 * 1024, MAX_MESSAGE_BYTES)
}

/// At most this many bytes of a peer-supplied string (sensor id) are echoed into replies, logs
/// and metrics.
pub const MAX_ECHOED_ID_BYTES: usize = 128;

/// A peer-supplied identifier made safe to echo: at most [`MAX_ECHOED_ID_BYTES`] bytes (cut at a
/// character boundary), control characters (newlines included) replaced by `?`.
pub fn sanitize_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len().min(MAX_ECHOED_ID_BYTES));
    for c in id.chars() {
        if out.len() + c.len_utf8() > MAX_ECHOED_ID_BYTES {
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m_frame(m: &SensorMessage) -> FeatureFrame {
        match &m.kind {
            Some(sensor_message::Kind::Frame(f)) => f.clone(),
            _ => unreachable!("a frame"),
        }
    }

    #[test]
    fn ids_are_bounded_and_single_line() {
        assert_eq!(sanitize_id("sensor-1"), "sensor-1");
        assert_eq!(sanitize_id("a\nb\rc\u{1b}"), "a?b?c?");
        let long = "é".repeat(1000);
        let s = sanitize_id(&long);
        assert!(s.len() <= MAX_ECHOED_ID_BYTES && s.len() >= MAX_ECHOED_ID_BYTES - 1);
    }

    /// Framing of the demo's split (4×7×7, 8 bits): at most 40 bytes per frame with a fixed
    /// (calibrated) range, everything on the stream counted (gRPC prefix included).
    #[test]
    fn lean_framing() {
        let shape = [1, 4, 7, 7];
        let calibrated = CodecSpec::AffineCalibrated {
            bits: 8,
            min: 0.0,
            max: 4.0,
        };
        let framing = feature_frame_wire_bytes(&shape, calibrated) - calibrated.payload_bytes(196);
        assert!(framing <= 40, "{framing} bytes of framing");
    }
    use crate::codec::{self, CodecSpec};

    /// The cost model's formula against real messages, for many shapes, codecs and values
    /// (including zeros and the largest values, which a varint encoding would size differently).
    #[test]
    fn predicted_frame_bytes_equal_encoded_bytes() {
        let specs = [
            CodecSpec::Float32,
            CodecSpec::Float16,
            CodecSpec::Affine {
                bits: 2,
                per_channel: false,
            },
            CodecSpec::Affine {
                bits: 6,
                per_channel: true,
            },
            CodecSpec::Affine {
                bits: 8,
                per_channel: true,
            },
            CodecSpec::AffineCalibrated {
                bits: 4,
                min: 0.0,
                max: 7.5,
            },
        ];
        for shape in [
            vec![1, 4, 7, 7],
            vec![1, 32, 7, 7],
            vec![1, 256, 56, 56],
            vec![1, 3],
            vec![1, 1, 1, 1],
        ] {
            for spec in specs {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 4.0).collect();
                let t = codec::encode(spec, &shape, &values).unwrap();
                for v in [0u64, 1, u64::MAX] {
                    let mut frame = frame_to_wire(&t, spec, v, v, v as u32);
                    frame.queue_ns = Some(v as u32);
                    let m = SensorMessage {
                        kind: Some(sensor_message::Kind::Frame(frame)),
                    };
                    assert_eq!(
                        sensor_message_wire_bytes(&m),
                        feature_frame_wire_bytes(&shape, spec),
                        "shape {shape:?} {spec} value {v}"
                    );
                    // The frame carries what the decoder needs, with the bundle's constants.
                    let back = frame_tensor(&m_frame(&m), spec, &shape);
                    assert_eq!(back, t, "shape {shape:?} {spec}");
                    // A bundle set's frame names its variant: exactly 5 bytes more.
                    let mut tagged = m_frame(&m);
                    tagged.variant = Some(v as u32);
                    let tagged = SensorMessage {
                        kind: Some(sensor_message::Kind::Frame(tagged)),
                    };
                    assert_eq!(
                        sensor_message_wire_bytes(&tagged),
                        feature_frame_wire_bytes_in_set(&shape, spec, true),
                        "shape {shape:?} {spec} value {v} in a set"
                    );
                }
            }
        }
    }
}
