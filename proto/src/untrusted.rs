//! The aggregator's handling of bytes from an untrusted peer, as one function for the fuzz
//! target (`fuzz/fuzz_targets/frame_path.rs`) and the bounded property tests in CI
//! (`tests/hostile_input.rs`): protobuf decode, then for a feature frame the structural
//! validation and dequantization the link and tail stage do, for each codec a bundle can pin.

use prost::Message;

use crate::codec::{self, CodecSpec};
use crate::wire::{self, FeatureFrame, SensorMessage, sensor_message};

/// The demo bundle's feature shape (1×4×7×7).
pub const SHAPE: [usize; 4] = [1, 4, 7, 7];

/// One codec of each kind a bundle can pin.
pub fn codecs() -> [CodecSpec; 5] {
    [
        CodecSpec::Float32,
        CodecSpec::Float16,
        CodecSpec::Affine {
            bits: 8,
            per_channel: false,
        },
        CodecSpec::Affine {
            bits: 4,
            per_channel: true,
        },
        CodecSpec::AffineCalibrated {
            bits: 2,
            min: -1.0,
            max: 3.0,
        },
    ]
}

/// Decodes `bytes` as a sensor message and runs a frame through [`frame`].
pub fn message(bytes: &[u8]) {
    if let Ok(SensorMessage {
        kind: Some(sensor_message::Kind::Frame(f)),
    }) = SensorMessage::decode(bytes)
    {
        frame(&f);
    }
}

/// Validates and decodes `f` as the link does, with each of [`codecs`] on the demo's shape and
/// with a two-tensor layout (a cut through a branchy block: a feature and a gate, mixed codecs);
/// panics if a validated tensor fails to decode or decodes to a non-finite value (the
/// invariants the tail relies on).
pub fn frame(f: &FeatureFrame) {
    let mut layouts: Vec<wire::FrameLayout> = codecs()
        .into_iter()
        .map(|spec| wire::FrameLayout::single(&SHAPE, spec))
        .collect();
    let [_, half, per_tensor, per_channel, calibrated] = codecs();
    layouts.push(wire::FrameLayout {
        tensors: vec![
            wire::TensorLayout {
                shape: SHAPE.to_vec(),
                codec: per_tensor,
                channel_ranges: Vec::new(),
            },
            wire::TensorLayout {
                shape: vec![1, 4, 1, 1],
                codec: calibrated,
                channel_ranges: Vec::new(),
            },
        ],
    });
    layouts.push(wire::FrameLayout {
        tensors: vec![
            wire::TensorLayout {
                shape: vec![1, 4, 1, 1],
                codec: per_channel,
                channel_ranges: Vec::new(),
            },
            wire::TensorLayout {
                shape: SHAPE.to_vec(),
                codec: half,
                channel_ranges: Vec::new(),
            },
        ],
    });
    let mut tensors = Vec::new();
    let mut out = Vec::new();
    for layout in &layouts {
        if wire::frame_tensors(f, layout, &mut tensors).is_err() {
            continue;
        }
        if tensors.iter().all(|t| codec::validate(t).is_ok()) {
            for t in &tensors {
                out.resize(t.shape.iter().product(), 0.0);
                codec::decode_to_slice(t, &mut out).expect("a validated tensor decodes");
                assert!(
                    out.iter().all(|v| v.is_finite()),
                    "validated but not finite"
                );
            }
        }
    }
}
