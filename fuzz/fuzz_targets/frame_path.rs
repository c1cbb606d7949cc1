//! What the aggregator does with a message off the wire: protobuf decode, then for a feature
//! frame the structural validation and the dequantization, for each codec a bundle can pin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use splitnets_proto::codec::{self, CodecSpec};
use splitnets_proto::wire::{self, SensorMessage, sensor_message};

const SHAPE: [usize; 4] = [1, 4, 7, 7];

fuzz_target!(|bytes: &[u8]| {
    let Ok(m) = SensorMessage::decode(bytes) else {
        return;
    };
    let Some(sensor_message::Kind::Frame(f)) = m.kind else {
        return;
    };
    let mut out = [0f32; 196];
    for spec in [
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
    ] {
        let t = wire::frame_tensor(&f, spec, &SHAPE);
        if codec::validate(&t).is_ok() {
            codec::decode_to_slice(&t, &mut out).expect("a validated tensor decodes");
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
});
