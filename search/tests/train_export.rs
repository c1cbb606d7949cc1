//! The training path, briefly: a few hundred steps must lower the loss, and the exported ONNX
//! must reproduce the training framework's logits and pass `onnx.checker` (full check).

use std::process::Command;

use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::CameraRig;
use splitnets_proto::bundle::{Bundle, InputSpec};
use splitnets_proto::codec::CodecSpec;
use splitnets_search::data::BatchSampler;
use splitnets_search::make_bundle::{BundleJob, tail_mean, write_bundle};
use splitnets_search::train::{TrainConfig, train};

#[test]
fn short_training_lowers_the_loss_and_exports_faithful_onnx() {
    let dir = std::path::Path::new(dataset::DEFAULT_DIR);
    let train_set =
        dataset::load(dir, Split::Train).expect("Fashion-MNIST (scripts/setup.sh installs it)");
    let test_set = dataset::load(dir, Split::Test).unwrap();
    let rig = CameraRig::default();
    let input = InputSpec {
        height: 28,
        width: 28,
        pixel_format: "gray8".into(),
        mean: 0.0.into(),
        std: 1.0.into(),
        ..Default::default()
    };
    let cfg = TrainConfig {
        steps: 300,
        batch_size: 32,
        ..TrainConfig::default()
    };
    let mut sampler = BatchSampler::new(&train_set, &rig, &input, cfg.seed);
    let trained = train(&cfg, &mut sampler, 4, 28, 28, |_| {});
    let first = tail_mean(&trained.losses[..50], 50);
    let last = tail_mean(&trained.losses, 50);
    assert!(
        last < first - 0.3,
        "loss did not fall: first 50 steps {first:.3}, last 50 {last:.3}"
    );

    let out = tempfile::tempdir().unwrap();
    let bundle_dir = out.path().join("bundle");
    let outcome = write_bundle(&BundleJob {
        out_dir: bundle_dir.clone(),
        name: "test".into(),
        rig,
        input,
        codec: CodecSpec::Affine {
            bits: 8,
            per_channel: false,
        },
        target_fps: 30.0,
        trained: &trained,
        train_config: &cfg,
        test_set: &test_set,
        eval_samples: 500,
        check_samples: 128,
        command: "test".into(),
    })
    .unwrap();
    let e = &outcome.evaluation;
    assert!(
        e.onnx_max_abs_diff < 1e-4,
        "ONNX Runtime differs from burn by {}",
        e.onnx_max_abs_diff
    );
    assert!(
        e.accuracy_fused > 0.4,
        "fused accuracy {} after 300 steps",
        e.accuracy_fused
    );

    let bundle = Bundle::load(&bundle_dir).unwrap();
    assert_eq!(bundle.digest, outcome.digest);

    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import onnx, sys\n\
             for p in sys.argv[1:]:\n\
             \x20   m = onnx.load(p)\n\
             \x20   onnx.checker.check_model(m, full_check=True)\n\
             \x20   assert m.ir_version <= 10 and m.opset_import[0].version == 17, (m.ir_version, m.opset_import)\n\
             print('ok')",
        )
        .arg(bundle_dir.join("head.onnx"))
        .arg(bundle_dir.join("tail.onnx"))
        .output()
        .expect("python3 runs");
    assert!(
        check.status.success(),
        "onnx.checker rejected the export: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}
