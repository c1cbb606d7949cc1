//! The gRPC wire contract, package `splitnets.v1`, generated from `proto/splitnets/v1/splitnets.proto`.

#![allow(clippy::all, missing_docs, unreachable_pub, unused_qualifications)]

tonic::include_proto!("splitnets.v1");

/// Version of the wire protocol this build speaks; a sensor and an aggregator must agree.
pub const PROTOCOL_VERSION: u32 = 1;

/// The encoded `FileDescriptorSet` of the wire schema, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("splitnets_v1_descriptor");

/// Largest message either side accepts. A feature frame of a 1x3x224x224 float32 tensor is
/// ~600 KiB; 16 MiB leaves room for large uncompressed splits while bounding memory per stream.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Converts an encoded tensor to its wire message (the payload is shared, not copied).
pub fn tensor_to_wire(t: &crate::codec::EncodedTensor) -> QuantizedTensor {
    use crate::codec::Encoding;
    QuantizedTensor {
        shape: t.shape.iter().map(|&d| d as u32).collect(),
        encoding: match t.encoding {
            Encoding::Float32 => ElementEncoding::Float32,
            Encoding::Float16 => ElementEncoding::Float16,
            Encoding::AffineUint => ElementEncoding::AffineUint,
        } as i32,
        bits: Some(t.bits),
        scale: t.scale.clone(),
        zero_point: t.zero_point.clone(),
        channel_axis: Some(t.channel_axis),
        payload: t.payload.clone(),
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
        bits: q.bits.unwrap_or(0),
        scale: q.scale.clone(),
        zero_point: q.zero_point.clone(),
        channel_axis: q.channel_axis.unwrap_or(-1),
        payload: q.payload.clone(),
    })
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
    let elements: usize = shape.iter().product();
    splitnets_cost_model::feature_message_bytes(
        shape.len(),
        spec.parameter_count(shape),
        spec.payload_bytes(elements) as u64,
    ) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
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
                    let m = SensorMessage {
                        kind: Some(sensor_message::Kind::Frame(FeatureFrame {
                            sequence: Some(v),
                            capture_time_unix_ns: Some(v),
                            timings: Some(SensorTimings {
                                capture_ns: Some(v),
                                preprocess_ns: Some(v),
                                head_ns: Some(v),
                                encode_ns: Some(v),
                                send_time_unix_ns: Some(v),
                            }),
                            tensor: Some(tensor_to_wire(&t)),
                        })),
                    };
                    assert_eq!(
                        sensor_message_wire_bytes(&m),
                        feature_frame_wire_bytes(&shape, spec),
                        "shape {shape:?} {spec} value {v}"
                    );
                }
            }
        }
    }
}
