//! Properties of the feature codec.

use proptest::prelude::*;
use splitnets_proto::codec::{self, CodecError, CodecSpec, Encoding, pack_codes, unpack_codes};

fn bits() -> impl Strategy<Value = u8> {
    prop_oneof![Just(2u8), Just(4), Just(6), Just(8)]
}

proptest! {
    #[test]
    fn packing_is_exact(b in bits(), seed in any::<u64>(), n in 0usize..600) {
        let mask = (1u64 << b) - 1;
        let mut s = seed;
        let codes: Vec<u32> = (0..n).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) & mask) as u32 }).collect();
        let packed = pack_codes(&codes, u32::from(b));
        prop_assert_eq!(packed.len(), (n * b as usize).div_ceil(8));
        prop_assert_eq!(unpack_codes(&packed, u32::from(b), n), codes);
    }

    #[test]
    fn round_trip_error_is_at_most_half_a_step(
        b in bits(),
        per_channel in any::<bool>(),
        c in 1usize..6, h in 1usize..5, w in 1usize..5,
        values in proptest::collection::vec(-50.0f32..50.0, 150),
    ) {
        let shape = [1, c, h, w];
        let n = c * h * w;
        let x = &values[..n];
        let spec = CodecSpec::Affine { bits: b, per_channel };
        let t = codec::encode(spec, &shape, x).unwrap();
        prop_assert_eq!(t.payload.len(), spec.payload_bytes(n));
        prop_assert_eq!(t.payload.len(), (n * b as usize).div_ceil(8));
        let y = codec::decode(&t).unwrap();
        prop_assert_eq!(y.len(), n);
        for (i, (a, r)) in x.iter().zip(&y).enumerate() {
            let g = if per_channel { i / (h * w) } else { 0 };
            let half_step = t.scale[g] * 0.5;
            // f32 arithmetic adds a few ulps on top of the ideal bound.
            prop_assert!((a - r).abs() <= half_step * (1.0 + 1e-4) + 1e-6,
                "element {} value {} decoded {} half step {}", i, a, r, half_step);
        }
    }

    #[test]
    fn calibrated_range_clamps_outside_and_is_within_half_a_step_inside(
        b in bits(),
        lo in -10.0f32..0.0, width in 0.5f32..20.0,
        values in proptest::collection::vec(-40.0f32..40.0, 1..200),
    ) {
        let hi = lo + width;
        let spec = CodecSpec::AffineCalibrated { bits: b, min: lo, max: hi };
        let shape = [1, values.len(), 1, 1];
        let t = codec::encode(spec, &shape, &values).unwrap();
        prop_assert_eq!(t.scale.len(), 1);
        let half_step = t.scale[0] * 0.5;
        let y = codec::decode(&t).unwrap();
        // The grid covers [min(lo, 0), max(hi, 0)] (zero always exact).
        let (glo, ghi) = (lo.min(0.0), hi.max(0.0));
        for (a, r) in values.iter().zip(&y) {
            let target = a.clamp(glo, ghi);
            prop_assert!((target - r).abs() <= half_step * (1.0 + 1e-4) + 1e-5, "{} -> {} (half step {})", a, r, half_step);
        }
    }

    #[test]
    fn calibrated_ranges_per_channel_clamp_each_channel_to_its_own_range(
        b in bits(),
        c in 1usize..6, hw in 1usize..8,
        ranges in proptest::collection::vec((-10.0f32..0.0, 0.5f32..20.0), 6),
        values in proptest::collection::vec(-40.0f32..40.0, 48),
    ) {
        let spec = CodecSpec::AffineCalibratedPerChannel { bits: b };
        let shape = [1, c, hw];
        let n = c * hw;
        let channel_ranges: Vec<[f32; 2]> =
            ranges[..c].iter().map(|&(lo, w)| [lo, lo + w]).collect();
        let t = codec::encode_with_ranges(spec, &channel_ranges, &shape, &values[..n]).unwrap();
        prop_assert_eq!(t.payload.len(), spec.payload_bytes(n));
        // Nothing per frame travels: the aggregator rebuilds the parameters from the ranges.
        prop_assert_eq!(spec.parameter_count(&shape), 0);
        let (scale, zero_point) = codec::channel_parameters(u32::from(b), &channel_ranges);
        prop_assert_eq!(&t.scale, &scale);
        prop_assert_eq!(&t.zero_point, &zero_point);
        let y = codec::decode(&t).unwrap();
        for (i, (a, r)) in values[..n].iter().zip(&y).enumerate() {
            let g = i / hw;
            let [lo, hi] = channel_ranges[g];
            let target = a.clamp(lo.min(0.0), hi.max(0.0));
            prop_assert!((target - r).abs() <= scale[g] * 0.5 * (1.0 + 1e-4) + 1e-5,
                "channel {} {} -> {} (step {})", g, a, r, scale[g]);
        }
        // The wrong number of ranges is refused, naming the counts.
        let err = codec::encode_with_ranges(spec, &channel_ranges[1..], &shape, &values[..n]).unwrap_err();
        prop_assert!(err.to_string().contains("calibrated channel ranges"), "{}", err);
    }

    #[test]
    fn float_passthrough(values in proptest::collection::vec(-1e6f32..1e6, 1..64)) {
        let shape = [1, values.len(), 1, 1];
        let t = codec::encode(CodecSpec::Float32, &shape, &values).unwrap();
        prop_assert_eq!(t.payload.len(), values.len() * 4);
        prop_assert_eq!(codec::decode(&t).unwrap(), values);
    }

    #[test]
    fn float16_rounds_to_nearest_and_saturates(
        values in proptest::collection::vec(
            prop_oneof![-65504.0f32..65504.0, -1.0f32..1.0, -1e-4f32..1e-4, -1e6f32..1e6],
            1..64,
        )
    ) {
        let shape = [1, values.len(), 1, 1];
        let h = codec::encode(CodecSpec::Float16, &shape, &values).unwrap();
        prop_assert_eq!(h.payload.len(), values.len() * 2);
        for (a, r) in values.iter().zip(codec::decode(&h).unwrap()) {
            if a.abs() >= 65504.0 {
                // Beyond float16's largest finite value: saturated, never infinity.
                prop_assert_eq!(r, 65504.0 * a.signum(), "{} -> {}", a, r);
            } else {
                // Round to nearest: half a unit in the last place, 2^-11 relative for normal
                // values, 2^-25 absolute below the smallest normal (2^-14).
                let bound = (a.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
                prop_assert!((a - r).abs() <= bound, "{} -> {} (bound {})", a, r, bound);
            }
        }
    }
}

#[test]
fn zero_is_exact_and_constant_tensors_survive() {
    let x = [0.0f32, 0.0, 3.0, 0.0, 1.5];
    let t = codec::encode(
        CodecSpec::Affine {
            bits: 4,
            per_channel: false,
        },
        &[1, 5, 1, 1],
        &x,
    )
    .unwrap();
    let y = codec::decode(&t).unwrap();
    assert_eq!(y[0], 0.0);
    assert_eq!(y[3], 0.0);
    let zeros = codec::encode(
        CodecSpec::Affine {
            bits: 2,
            per_channel: false,
        },
        &[1, 1, 2, 2],
        &[0.0; 4],
    )
    .unwrap();
    assert_eq!(codec::decode(&zeros).unwrap(), vec![0.0; 4]);
}

#[test]
fn malformed_tensors_are_named_errors() {
    let spec = CodecSpec::Affine {
        bits: 6,
        per_channel: false,
    };
    let good = codec::encode(spec, &[1, 2, 3, 3], &[1.0; 18]).unwrap();
    assert_eq!(good.encoding, Encoding::AffineUint);

    let mut truncated = good.clone();
    truncated.payload = truncated.payload.slice(..truncated.payload.len() - 1);
    let e = codec::decode(&truncated).unwrap_err();
    assert!(
        matches!(
            e,
            CodecError::PayloadLength {
                expected: 14,
                actual: 13,
                ..
            }
        ),
        "{e}"
    );

    let mut bad_zp = good.clone();
    bad_zp.zero_point = vec![64];
    assert!(
        codec::decode(&bad_zp)
            .unwrap_err()
            .to_string()
            .contains("zero point 64")
    );

    let mut bad_scale = good.clone();
    bad_scale.scale = vec![f32::NAN];
    assert!(matches!(
        codec::decode(&bad_scale).unwrap_err(),
        CodecError::Parameter(_)
    ));

    let mut bad_bits = good.clone();
    bad_bits.bits = 5;
    assert_eq!(
        codec::decode(&bad_bits).unwrap_err(),
        CodecError::UnsupportedBits(5)
    );

    let mut missing = good;
    missing.scale.clear();
    assert!(matches!(
        codec::decode(&missing).unwrap_err(),
        CodecError::ParameterCount { .. }
    ));

    assert!(matches!(
        codec::encode(spec, &[1, 2], &[1.0]).unwrap_err(),
        CodecError::ElementCount { .. }
    ));
    assert!(matches!(
        codec::encode(spec, &[1, 1], &[f32::INFINITY]).unwrap_err(),
        CodecError::NonFinite(0)
    ));
}
