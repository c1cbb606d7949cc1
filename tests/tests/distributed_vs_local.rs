//! The distributed pipeline (real aggregator and sensor processes on loopback) against the same
//! bundle run in one process, frame by frame.

use std::collections::BTreeMap;
use std::time::Duration;

use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::replay_frame;
use splitnets_proto::bundle::Bundle;
use splitnets_proto::codec::{self, CodecSpec};
use splitnets_proto::wire::Prediction;
use splitnets_runtime::onnx_runtime::SessionOptions;
use splitnets_runtime::{HeadStage, LocalPipeline};
use splitnets_tests::{bundle_with_codec, cluster, demo_bundle, sensor_args};

const FRAMES: u64 = 40;

/// Runs 4 sensors for FRAMES frames and returns the predictions by sequence.
async fn distributed_run(
    bundle: &std::path::Path,
    work: &std::path::Path,
) -> BTreeMap<u64, Prediction> {
    // A generous deadline: this test is about equality, not latency, and CI machines are busy.
    let mut c = cluster(bundle, work, 2000).await;
    let mut watch = c.watch().await.unwrap();
    let args = sensor_args(Some(FRAMES), 40.0, splitnets_tests::trigger_in(2500));
    for v in 0..4 {
        c.start_sensor(v, &args).unwrap();
    }
    let preds =
        splitnets_tests::collect_predictions(&mut watch, FRAMES, Duration::from_secs(60)).await;
    c.wait_sensors(Duration::from_secs(30)).await.unwrap();
    c.stop().await.unwrap();
    preds
}

fn check_against_local(bundle_dir: &std::path::Path, preds: &BTreeMap<u64, Prediction>) {
    let bundle = Bundle::load(bundle_dir).unwrap();
    let m = bundle.manifest.clone();
    let set = dataset::load(std::path::Path::new(dataset::DEFAULT_DIR), Split::Test).unwrap();
    // The cost model's prediction of one view's bytes per frame, from the head alone: the whole
    // head on the sensor, its output crossing.
    let head = splitnets_onnx::decode_model(&bundle.head_onnx, "head").unwrap();
    let g = splitnets_cost_model::graph::analyze(
        &splitnets_onnx::cost_graph(&head).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let s = splitnets_cost_model::split::summarize(&g, &vec![true; g.nodes.len()]).unwrap();
    let predicted = splitnets_cost_model::split::link_bytes(&s, m.codec.bits_per_element(), 0);
    let mut head = HeadStage::new(&bundle, SessionOptions::default()).unwrap();
    let mut local = LocalPipeline::new(bundle, SessionOptions::default()).unwrap();
    assert_eq!(preds.len() as u64, FRAMES);
    let mut all_views = 0;
    for (seq, p) in preds {
        assert_eq!(p.scores.len(), m.classes.len());
        all_views += usize::from(p.views_used.len() == 4);
        let pixels: Vec<Vec<u8>> = p
            .views_used
            .iter()
            .map(|&v| replay_frame(&m.cameras, &set, v, *seq))
            .collect();
        // The same views through the same codec in one process: bit for bit.
        let (expected, _) = local.run_frame(&pixels, true).unwrap();
        assert_eq!(
            p.scores, expected,
            "frame {seq}: distributed logits differ from one process"
        );
        // Each view's feature crossed the link within the codec's error bound, and the bytes on
        // the link stay within the bundle's link budget.
        for (v, px) in p.views.iter().zip(&pixels) {
            let float = head.features(px).unwrap().to_vec();
            let enc = head.encode_features().unwrap()[0].clone();
            let bound = codec::max_abs_error(&enc);
            let dec = codec::decode(&enc).unwrap();
            // A calibrated range clamps what lies outside it (the grid always includes 0).
            let (lo, hi) = match m.codec {
                CodecSpec::AffineCalibrated { min, max, .. } => (min.min(0.0), max.max(0.0)),
                _ => (f32::NEG_INFINITY, f32::INFINITY),
            };
            for (a, b) in float.iter().zip(&dec) {
                let a = a.clamp(lo, hi);
                assert!(
                    (a - b).abs() <= bound * (1.0 + 1e-4) + 1e-6,
                    "frame {seq}: |{a} - {b}| > {bound}"
                );
            }
            assert_eq!(
                v.payload_bytes as usize,
                m.codec.payload_bytes(m.split.feature_elements())
            );
            // Bytes on the link: exactly the bundle's budget and the cost model's prediction.
            assert_eq!(
                v.message_bytes as usize,
                m.link_budget.bytes_per_view_per_frame
            );
            // The cost model's frame size for this codec's parameters per frame.
            assert_eq!(
                v.message_bytes,
                splitnets_cost_model::feature_message_bytes(
                    m.codec.parameter_count(&m.split.feature_shape),
                    v.payload_bytes
                )
            );
            // The planner models dynamic per-tensor quantization (one parameter pair per frame).
            if matches!(
                m.codec,
                CodecSpec::Affine {
                    per_channel: false,
                    ..
                }
            ) {
                assert_eq!(
                    v.message_bytes, predicted,
                    "frame {seq}: cost model predicted {predicted} B"
                );
            }
        }
        if m.codec == CodecSpec::Float32 {
            let (float, _) = local.run_frame(&pixels, false).unwrap();
            assert_eq!(
                p.scores, float,
                "frame {seq}: float passthrough must be exact"
            );
        }
    }
    assert!(
        all_views as u64 >= FRAMES * 9 / 10,
        "only {all_views} of {FRAMES} frames had all 4 views"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_passthrough_equals_one_process_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle_with_codec(tmp.path(), CodecSpec::Float32);
    let preds = distributed_run(&bundle, tmp.path()).await;
    check_against_local(&bundle, &preds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantized_run_equals_one_process_through_the_same_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = demo_bundle();
    let preds = distributed_run(&bundle, tmp.path()).await;
    check_against_local(&bundle, &preds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_bit_per_channel_run_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle_with_codec(
        tmp.path(),
        CodecSpec::Affine {
            bits: 4,
            per_channel: true,
        },
    );
    let preds = distributed_run(&bundle, tmp.path()).await;
    check_against_local(&bundle, &preds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_made_bundle_runs_unchanged_and_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("at-pool2");
    let out =
        std::process::Command::new(splitnets_tests::daemons_bin_dir().join("splitnets-search"))
            .arg("split-bundle")
            .arg("--from")
            .arg(splitnets_tests::hand_designed_bundle())
            .args([
                "--cut",
                "pool2_out",
                "--bits",
                "4",
                "--calibrate-frames",
                "64",
                "--out",
            ])
            .arg(&bundle)
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = Bundle::load(&bundle).unwrap();
    assert_eq!(b.manifest.split.feature_shape, vec![1, 32, 7, 7]);
    assert!(b.manifest.predicted.is_some());
    assert!(
        matches!(
            b.manifest.codec,
            CodecSpec::AffineCalibrated { bits: 4, .. }
        ),
        "{:?}",
        b.manifest.codec
    );
    let preds = distributed_run(&bundle, tmp.path()).await;
    check_against_local(&bundle, &preds);
}
