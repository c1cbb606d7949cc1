//! Bounded fuzzing in CI (issue 8, item 6): random and mutated bytes through what the aggregator
//! does with a message off the wire (protobuf decode, structural validation, dequantization) and
//! through the bundle manifest parser. Nothing may panic; what validates must decode to finite
//! values; what parses must be internally consistent. The long runs use cargo-fuzz on the same
//! paths (`fuzz/`, see its README).

use proptest::prelude::*;
use prost::Message;
use splitnets_proto::bundle::{Manifest, ManifestError};
use splitnets_proto::untrusted;
use splitnets_proto::wire::{FeatureFrame, SensorMessage, sensor_message};

const DEMO_MANIFEST: &str = include_str!("../../deploy/bundles/fashion-mnist-4view/bundle.toml");
/// A valid frame message to mutate.
fn seed_message(seed: u64) -> Vec<u8> {
    let payload: Vec<u8> = (0..196u64)
        .map(|i| (i.wrapping_mul(seed | 1) >> 3) as u8)
        .collect();
    SensorMessage {
        kind: Some(sensor_message::Kind::Frame(FeatureFrame {
            sequence: Some(seed),
            capture_time_unix_ns: Some(seed.wrapping_mul(7)),
            sensor_ns: Some(1),
            queue_ns: Some(2),
            scale: vec![0.01],
            zero_point: vec![3],
            payload: payload.into(),
            variant: None,
        })),
    }
    .encode_to_vec()
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    for &(at, v) in edits {
        if bytes.is_empty() {
            break;
        }
        let i = at % bytes.len();
        match v % 4 {
            0 => bytes[i] = v,
            1 => bytes[i] ^= 1 << (v % 8),
            2 => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, v),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_frame_path(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        untrusted::message(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic_the_frame_path(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
    ) {
        untrusted::message(&mutate(seed_message(seed), &edits));
    }

    #[test]
    fn arbitrary_frame_fields_never_panic(
        scale in proptest::collection::vec(any::<f32>(), 0..6),
        zero_point in proptest::collection::vec(any::<i32>(), 0..6),
        payload in proptest::collection::vec(any::<u8>(), 0..800),
    ) {
        untrusted::frame(&FeatureFrame { sequence: Some(1), scale, zero_point, payload: payload.into(), ..Default::default() });
    }

    #[test]
    fn mutated_manifests_are_parsed_or_refused_with_a_reason(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let bytes = mutate(DEMO_MANIFEST.as_bytes().to_vec(), &edits);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            match Manifest::parse(text) {
                Ok(m) => prop_assert!(m.validate().is_ok()),
                Err(ManifestError::Syntax(reason) | ManifestError::Invalid(reason)) => {
                    prop_assert!(!reason.is_empty());
                }
            }
        }
    }
}

#[test]
fn the_demo_manifest_parses() {
    Manifest::parse(DEMO_MANIFEST).expect("the demo manifest is valid");
}
