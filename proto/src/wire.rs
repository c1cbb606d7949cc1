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

/// Most accepted frames one cumulative `FrameAck` covers (`Hello.ack_every` above it is taken
/// as this): bounds how long a sensor's count of delivered frames lags.
pub const MAX_ACK_EVERY: u32 = 64;

/// Default `Hello.ack_every` of the sensor daemon: at 30 fps, one acknowledgement per 267 ms
/// instead of one per frame (each wakes both ends' network tasks; measured by the latency
/// harness as part of the per-frame CPU overhead).
pub const DEFAULT_ACK_EVERY: u32 = 8;

/// What a stream's feature frames hold, fixed by the bundle: the tensors that cross the link, in
/// the bundle's order, each with its shape and codec. Most cuts send one tensor; a cut across a
/// residual or squeeze-excite block sends two or more.
///
/// A frame with several tensors concatenates them: the payload is each tensor's packed payload
/// in turn (each a whole number of bytes, so a tensor never shares a byte with the next), and the
/// `scale` / `zero_point` lists are each dynamic-range tensor's parameters in turn. Its size on
/// the wire therefore depends only on the layout, as for one tensor (exact link budgets).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameLayout {
    pub tensors: Vec<TensorLayout>,
}

/// One tensor of a [`FrameLayout`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorLayout {
    pub shape: Vec<usize>,
    pub codec: crate::codec::CodecSpec,
    /// Calibrated `[min, max]` per channel, for a codec that needs them (else empty).
    pub channel_ranges: Vec<[f32; 2]>,
}

impl TensorLayout {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn payload_bytes(&self) -> usize {
        self.codec.payload_bytes(self.elements())
    }
    pub fn parameter_pairs(&self) -> usize {
        self.codec.parameter_count(&self.shape)
    }
}

impl FrameLayout {
    /// A frame of one tensor.
    pub fn single(shape: &[usize], codec: crate::codec::CodecSpec) -> Self {
        Self {
            tensors: vec![TensorLayout {
                shape: shape.to_vec(),
                codec,
                channel_ranges: Vec::new(),
            }],
        }
    }

    /// Payload bytes of one frame (all tensors).
    pub fn payload_bytes(&self) -> usize {
        self.tensors.iter().map(TensorLayout::payload_bytes).sum()
    }

    /// (scale, zero point) pairs one frame carries (all tensors).
    pub fn parameter_pairs(&self) -> usize {
        self.tensors.iter().map(TensorLayout::parameter_pairs).sum()
    }

    /// Bytes one frame occupies on the stream (`in_set`: a bundle set's frame, which names its
    /// variant): exact (see [`splitnets_cost_model::feature_message_bytes`]).
    pub fn wire_bytes(&self, in_set: bool) -> usize {
        splitnets_cost_model::feature_message_bytes_in_set(
            self.parameter_pairs(),
            self.payload_bytes() as u64,
            in_set,
        ) as usize
    }

    /// The feature link's per-message decoding limit for frames of this layout: twice the
    /// largest legitimate frame, at least 64 KiB, at most [`MAX_MESSAGE_BYTES`]. Anything larger
    /// is not a frame of this bundle, so it is never buffered.
    pub fn message_limit(&self) -> usize {
        (2 * self.wire_bytes(true)).clamp(64 * 1024, MAX_MESSAGE_BYTES)
    }
}

/// The feature frame of one encoded view (`tensors` in the layout's order): only what changes
/// per frame. Quantization parameters travel only with a dynamic-range codec (a calibrated range
/// is pinned by the bundle). One tensor's payload is shared, not copied; several are
/// concatenated (one copy of the payload).
pub fn frame_to_wire(
    tensors: &[crate::codec::EncodedTensor],
    layout: &FrameLayout,
    sequence: u64,
    capture_time_unix_ns: u64,
    sensor_ns: u32,
) -> FeatureFrame {
    let mut scale = Vec::new();
    let mut zero_point = Vec::new();
    for (t, l) in tensors.iter().zip(&layout.tensors) {
        if l.parameter_pairs() > 0 {
            scale.extend_from_slice(&t.scale);
            zero_point.extend_from_slice(&t.zero_point);
        }
    }
    let payload = match tensors {
        [one] => one.payload.clone(),
        many => {
            let mut joined =
                bytes::BytesMut::with_capacity(many.iter().map(|t| t.payload.len()).sum());
            for t in many {
                joined.extend_from_slice(&t.payload);
            }
            joined.freeze()
        }
    };
    FeatureFrame {
        sequence: Some(sequence),
        capture_time_unix_ns: Some(capture_time_unix_ns),
        sensor_ns: Some(sensor_ns),
        // Stamped when the frame enters the stream.
        queue_ns: Some(0),
        scale,
        zero_point,
        payload,
        variant: None,
    }
}

/// The encoded tensor a one-tensor frame carries, given the stream's constants (the bundle's
/// feature `shape` and codec). The payload is shared, not copied; structural checks happen in
/// [`crate::codec::validate`].
pub fn frame_tensor(
    f: &FeatureFrame,
    spec: crate::codec::CodecSpec,
    shape: &[usize],
) -> crate::codec::EncodedTensor {
    tensor_from_parts(spec, &[], shape, &f.scale, &f.zero_point, f.payload.clone())
}

fn tensor_from_parts(
    spec: crate::codec::CodecSpec,
    channel_ranges: &[[f32; 2]],
    shape: &[usize],
    scale: &[f32],
    zero_point: &[i32],
    payload: bytes::Bytes,
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
        CodecSpec::AffineCalibratedPerChannel { bits } => {
            (Encoding::AffineUint, u32::from(bits), 1)
        }
    };
    let (scale, zero_point) = match (spec, spec.fixed_parameters()) {
        (_, Some((s, z))) => (vec![s], vec![z]),
        (CodecSpec::AffineCalibratedPerChannel { bits }, None) => {
            crate::codec::channel_parameters(u32::from(bits), channel_ranges)
        }
        _ => (scale.to_vec(), zero_point.to_vec()),
    };
    EncodedTensor {
        shape: shape.to_vec(),
        encoding,
        bits,
        scale,
        zero_point,
        channel_axis,
        payload,
    }
}

/// The encoded tensors a frame carries (cleared first), given the stream's [`FrameLayout`]:
/// the payload is cut into each tensor's share (slices of the frame's buffer, not copies) and
/// the parameters likewise. A frame whose payload length or parameter count does not add up to
/// the layout's is refused here, naming both; each tensor still needs
/// [`crate::codec::validate`].
pub fn frame_tensors(
    f: &FeatureFrame,
    layout: &FrameLayout,
    out: &mut Vec<crate::codec::EncodedTensor>,
) -> Result<(), crate::codec::CodecError> {
    use crate::codec::CodecError;
    out.clear();
    if let [one] = layout.tensors.as_slice() {
        out.push(tensor_from_parts(
            one.codec,
            &one.channel_ranges,
            &one.shape,
            &f.scale,
            &f.zero_point,
            f.payload.clone(),
        ));
        return Ok(());
    }
    let payload = layout.payload_bytes();
    if f.payload.len() != payload {
        return Err(CodecError::Parameter(format!(
            "frame payload is {} bytes; the bundle's {} tensors need exactly {payload}",
            f.payload.len(),
            layout.tensors.len()
        )));
    }
    let pairs = layout.parameter_pairs();
    if f.scale.len() != pairs || f.zero_point.len() != pairs {
        return Err(CodecError::ParameterCount {
            expected: pairs,
            scales: f.scale.len(),
            zero_points: f.zero_point.len(),
        });
    }
    let (mut at, mut p) = (0, 0);
    for l in &layout.tensors {
        let (n, k) = (l.payload_bytes(), l.parameter_pairs());
        out.push(tensor_from_parts(
            l.codec,
            &l.channel_ranges,
            &l.shape,
            &f.scale[p..p + k],
            &f.zero_point[p..p + k],
            f.payload.slice(at..at + n),
        ));
        at += n;
        p += k;
    }
    Ok(())
}

/// Bytes gRPC puts in front of every message (compression flag + 4-byte length).
pub const GRPC_FRAME_PREFIX_BYTES: usize = 5;

/// Bytes one feature frame occupies on the stream: the `SensorMessage` plus gRPC's prefix.
pub fn sensor_message_wire_bytes(m: &SensorMessage) -> usize {
    prost::Message::encoded_len(m) + GRPC_FRAME_PREFIX_BYTES
}

/// Bytes a one-tensor feature frame of `shape` encoded with `spec` occupies on the stream:
/// exact (see [`splitnets_cost_model::feature_message_bytes`]).
pub fn feature_frame_wire_bytes(shape: &[usize], spec: crate::codec::CodecSpec) -> usize {
    FrameLayout::single(shape, spec).wire_bytes(false)
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
                    let layout = FrameLayout::single(&shape, spec);
                    let mut frame =
                        frame_to_wire(std::slice::from_ref(&t), &layout, v, v, v as u32);
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
                        layout.wire_bytes(true),
                        "shape {shape:?} {spec} value {v} in a set"
                    );
                }
            }
        }
    }

    /// Several tensors in one frame (a cut through a residual or squeeze-excite block): the
    /// frame's size is the layout's, exactly, and the tensors come back as they were encoded,
    /// for mixed codecs and odd bit widths; a frame with a tensor's worth of payload missing is
    /// refused before any tensor is built.
    #[test]
    fn multi_tensor_frames_are_exact_and_split_back() {
        let layouts = [
            vec![
                (
                    vec![1, 16, 14, 14],
                    CodecSpec::Affine {
                        bits: 6,
                        per_channel: false,
                    },
                ),
                (
                    vec![1, 16, 1, 1],
                    CodecSpec::Affine {
                        bits: 6,
                        per_channel: false,
                    },
                ),
            ],
            vec![
                (
                    vec![1, 5, 3],
                    CodecSpec::Affine {
                        bits: 4,
                        per_channel: true,
                    },
                ),
                (
                    vec![1, 7],
                    CodecSpec::AffineCalibrated {
                        bits: 2,
                        min: 0.0,
                        max: 1.0,
                    },
                ),
                (vec![1, 3, 2, 2], CodecSpec::Float16),
                (
                    vec![1, 3, 2],
                    CodecSpec::AffineCalibratedPerChannel { bits: 6 },
                ),
            ],
        ];
        let ranges = |shape: &[usize], codec: CodecSpec| -> Vec<[f32; 2]> {
            if codec.needs_channel_ranges() {
                (0..shape[1])
                    .map(|c| [-0.1 * c as f32, 0.5 + c as f32])
                    .collect()
            } else {
                Vec::new()
            }
        };
        for tensors in layouts {
            let layout = FrameLayout {
                tensors: tensors
                    .iter()
                    .map(|(shape, codec)| TensorLayout {
                        shape: shape.clone(),
                        codec: *codec,
                        channel_ranges: ranges(shape, *codec),
                    })
                    .collect(),
            };
            let encoded: Vec<_> = tensors
                .iter()
                .enumerate()
                .map(|(k, (shape, spec))| {
                    let n: usize = shape.iter().product();
                    let values: Vec<f32> = (0..n)
                        .map(|i| ((i * (k + 3)) % 11) as f32 * 0.1 - 0.2)
                        .collect();
                    codec::encode_with_ranges(*spec, &ranges(shape, *spec), shape, &values).unwrap()
                })
                .collect();
            for in_set in [false, true] {
                let mut frame = frame_to_wire(&encoded, &layout, 7, 8, 9);
                if in_set {
                    frame.variant = Some(1);
                }
                let m = SensorMessage {
                    kind: Some(sensor_message::Kind::Frame(frame)),
                };
                assert_eq!(sensor_message_wire_bytes(&m), layout.wire_bytes(in_set));
                let mut back = Vec::new();
                frame_tensors(&m_frame(&m), &layout, &mut back).unwrap();
                assert_eq!(back, encoded);
                for t in &back {
                    codec::validate(t).unwrap();
                }
            }
            let mut short = frame_to_wire(&encoded, &layout, 7, 8, 9);
            short.payload = short.payload.slice(..short.payload.len() - 1);
            let err = frame_tensors(&short, &layout, &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("need exactly"), "{err}");
        }
    }
}
