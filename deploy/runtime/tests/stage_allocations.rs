//! What one frame allocates in the head and tail stages at steady state, counted with dhat's
//! heap profiler on the committed demo bundle. Our side (preprocess, codec, stacking, output
//! copies) reuses its buffers; what remains is the `ort` wrapper's per-run bookkeeping (input
//! value, output map and names), pinned here so a regression in our code shows up as a
//! difference. ONNX Runtime's own C++ allocations are not counted by a Rust allocator.

use std::path::PathBuf;

use splitnets_proto::bundle::Bundle;
use splitnets_runtime::{HeadStage, SessionOptions, TailStage};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn allocations() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// Allocations per `run` inside the `ort` wrapper, measured with ort 2.0.0-rc.15 for a
/// single-input, single-output session (input value, input list, output map and values): 4 for
/// the head and 4 for the tail here. See ARCHITECTURE.md, "what each frame costs".
const ORT_RUN_ALLOCATIONS: u64 = 4;

#[test]
fn a_frame_allocates_only_inside_the_ort_wrapper() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bundles/fashion-mnist-4view");
    let bundle = Bundle::load(&dir).unwrap();
    let m = &bundle.manifest;
    let mut head = HeadStage::new(&bundle, SessionOptions::default()).unwrap();
    let mut tail = TailStage::new(&bundle, SessionOptions::default()).unwrap();
    head.warm_up(3).unwrap();
    tail.warm_up().unwrap();
    let frames: Vec<Vec<u8>> = (0..8u8)
        .map(|k| {
            (0..m.input.raw_frame_bytes())
                .map(|i| (i as u8).wrapping_mul(k + 1))
                .collect()
        })
        .collect();
    let views = m.cameras.views as usize;
    let mut encoded = Vec::with_capacity(views);
    for f in frames.iter().take(views) {
        encoded.push(head.encode(f).unwrap().0.to_vec());
    }
    // Every payload arena takes its turn once before measuring (they grow on first use).
    for k in 0..64 {
        head.encode(&frames[k % frames.len()]).unwrap();
    }
    for _ in 0..4 {
        tail.run_encoded(encoded.iter().map(Vec::as_slice)).unwrap();
    }

    let before = allocations();
    let runs = 32u64;
    for k in 0..runs as usize {
        head.encode(&frames[k % frames.len()]).unwrap();
    }
    let head_per_frame = (allocations() - before) as f64 / runs as f64;
    let before = allocations();
    for _ in 0..runs {
        tail.run_encoded(encoded.iter().map(Vec::as_slice)).unwrap();
    }
    let tail_per_frame = (allocations() - before) as f64 / runs as f64;
    eprintln!("allocations per frame: head stage {head_per_frame}, tail stage {tail_per_frame}");
    assert!(
        head_per_frame <= ORT_RUN_ALLOCATIONS as f64,
        "head stage: {head_per_frame} allocations per frame"
    );
    assert!(
        tail_per_frame <= ORT_RUN_ALLOCATIONS as f64,
        "tail stage: {tail_per_frame} allocations per frame"
    );
}
