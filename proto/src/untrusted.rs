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

/// Validates and decodes `f` with each of [`codecs`]; panics if a validated tensor fails to
/// decode or decodes to a non-finite value (the invariants the tail relies on).
pub fn frame(f: &FeatureFrame) {
    let mut out = [0f32; 196];
    for spec in codecs() {
        let t = wire::frame_tensor(f, spec, &SHAPE);
        if codec::validate(&t).is_ok() {
            codec::decode_to_slice(&t, &mut out).expect("a validated tensor decodes");
            assert!(
                out.iter().all(|v| v.is_finite()),
                "validated but not finite"
            );
        }
    }
}
