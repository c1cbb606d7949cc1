//! The gRPC wire contract, package `splitnets.v1`, generated from `proto/splitnets/v1/splitnets.proto`.

#![allow(clippy::all, missing_docs, unreachable_pub)]

tonic::include_proto!("splitnets.v1");

/// Version of the wire protocol this build speaks; a sensor and an aggregator must agree.
pub const PROTOCOL_VERSION: u32 = 1;

/// The encoded `FileDescriptorSet` of the wire schema, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("splitnets_v1_descriptor");

/// Largest message either side accepts. A feature frame of a 1x3x224x224 float32 tensor is
/// ~600 KiB; 16 MiB leaves room for large uncompressed splits while bounding memory per stream.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Converts an encoded tensor to its wire message.
pub fn tensor_to_wire(t: crate::codec::EncodedTensor) -> QuantizedTensor {
    use crate::codec::Encoding;
    QuantizedTensor {
        shape: t.shape.iter().map(|&d| d as u32).collect(),
        encoding: match t.encoding {
            Encoding::Float32 => ElementEncoding::Float32,
            Encoding::Float16 => ElementEncoding::Float16,
            Encoding::AffineUint => ElementEncoding::AffineUint,
        } as i32,
        bits: t.bits,
        scale: t.scale,
        zero_point: t.zero_point,
        channel_axis: t.channel_axis,
        payload: t.payload,
    }
}

/// Converts a wire tensor back; the payload is shared, not copied. Structural checks happen in
/// [`crate::codec::decode_into`].
pub fn tensor_from_wire(
    q: &QuantizedTensor,
) -> Result<crate::codec::EncodedTensor, crate::codec::CodecError> {
    use crate::codec::Encoding;
    let encoding = match ElementEncoding::try_from(q.encoding) {
        Ok(ElementEncoding::Float32) => Encoding::Float32,
        Ok(ElementEncoding::Float16) => Encoding::Float16,
        Ok(ElementEncoding::AffineUint) => Encoding::AffineUint,
        _ => return Err(crate::codec::CodecError::UnspecifiedEncoding),
    };
    Ok(crate::codec::EncodedTensor {
        shape: q.shape.iter().map(|&d| d as usize).collect(),
        encoding,
        bits: q.bits,
        scale: q.scale.clone(),
        zero_point: q.zero_point.clone(),
        channel_axis: q.channel_axis,
        payload: q.payload.clone(),
    })
}

/// Bytes gRPC puts in front of every message (compression flag + 4-byte length).
pub const GRPC_FRAME_PREFIX_BYTES: usize = 5;

/// Bytes one feature frame occupies on the stream: the `SensorMessage` plus gRPC's prefix.
pub fn sensor_message_wire_bytes(m: &SensorMessage) -> usize {
    prost::Message::encoded_len(m) + GRPC_FRAME_PREFIX_BYTES
}

/// An upper bound of a feature frame's bytes on the stream for a feature of `shape` encoded with
/// `spec`: every varint at its widest. The link budget uses it; tests check real frames stay under.
pub fn feature_frame_wire_bytes_upper_bound(
    shape: &[usize],
    spec: crate::codec::CodecSpec,
) -> usize {
    let pairs = spec.parameter_count(shape);
    let elements: usize = shape.iter().product();
    let worst = SensorMessage {
        kind: Some(sensor_message::Kind::Frame(FeatureFrame {
            sequence: u64::MAX,
            capture_time_unix_ns: u64::MAX,
            timings: Some(SensorTimings {
                capture_ns: u64::MAX,
                preprocess_ns: u64::MAX,
                head_ns: u64::MAX,
                encode_ns: u64::MAX,
                send_time_unix_ns: u64::MAX,
            }),
            tensor: Some(QuantizedTensor {
                shape: shape.iter().map(|_| u32::MAX).collect(),
                encoding: ElementEncoding::AffineUint as i32,
                bits: u32::MAX,
                scale: vec![1.0; pairs],
                zero_point: vec![-1; pairs],
                channel_axis: -1,
                payload: bytes::Bytes::from(vec![0u8; spec.payload_bytes(elements)]),
            }),
        })),
    };
    sensor_message_wire_bytes(&worst)
}
