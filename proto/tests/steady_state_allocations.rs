//! The codec's per-frame path allocates nothing once its buffers have grown: encoding into a
//! reused tensor and arena (the sensor), validating and decoding into a slice of the stacked tail
//! input (the aggregator). Counted with dhat's heap profiler (every allocation is a block).

use bytes::BytesMut;
use splitnets_proto::codec::{self, CodecSpec, EncodedTensor};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn allocations() -> u64 {
    dhat::HeapStats::get().total_blocks
}

#[test]
fn encode_and_decode_allocate_nothing_at_steady_state() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let shape = [1usize, 4, 7, 7];
    let n: usize = shape.iter().product();
    let specs = [
        CodecSpec::Affine {
            bits: 8,
            per_channel: false,
        },
        CodecSpec::Affine {
            bits: 4,
            per_channel: false,
        },
        CodecSpec::AffineCalibrated {
            bits: 6,
            min: 0.0,
            max: 3.0,
        },
        CodecSpec::Float16,
        CodecSpec::Float32,
    ];
    for spec in specs {
        let mut tensor = EncodedTensor::empty();
        let mut arena = BytesMut::new();
        let mut stacked = vec![0.0f32; 4 * n];
        let frame =
            |k: usize| -> Vec<f32> { (0..n).map(|i| ((i + k) % 13) as f32 * 0.2).collect() };
        let frames: Vec<Vec<f32>> = (0..64).map(frame).collect();
        // Warm-up: buffers grow to their steady size.
        for f in frames.iter().take(4) {
            codec::encode_into(spec, &shape, f, &mut tensor, &mut arena).unwrap();
            codec::decode_to_slice(&tensor, &mut stacked[..n]).unwrap();
        }
        let before = allocations();
        for (k, f) in frames.iter().enumerate() {
            codec::encode_into(spec, &shape, f, &mut tensor, &mut arena).unwrap();
            // The previous payload is dropped before the next encode (as once tonic has written
            // it), so the arena reclaims its memory.
            let slot = k % 4;
            codec::decode_to_slice(&tensor, &mut stacked[slot * n..(slot + 1) * n]).unwrap();
        }
        let allocated = allocations() - before;
        assert_eq!(allocated, 0, "{spec}: {allocated} allocations in 64 frames");
        // And the result is what the allocating API computes.
        let last = frames.last().unwrap();
        assert_eq!(tensor, codec::encode(spec, &shape, last).unwrap());
        let slot = 63 % 4;
        assert_eq!(
            &stacked[slot * n..(slot + 1) * n],
            codec::decode(&tensor).unwrap().as_slice()
        );
    }
}
