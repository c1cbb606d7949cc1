//! Bring your own model, end to end as the README runs it: an exported ImageNet-shaped CNN
//! (dynamic batch, HardSwish, squeeze-excite, a Shape→Gather→Unsqueeze→Concat→Reshape flatten, a
//! MatMul classifier) is planned with bundles written; a bundle runs in a real aggregator and
//! sensor reading a folder of PNG/JPEG images of several sizes; every prediction equals the
//! in-process pipeline on the same frames, and the bytes on the link equal the planner's. The
//! same holds for a cut where two tensors cross (a squeeze-excite block's feature and gate),
//! written by `split --cut A,B` with calibrated 4-bit ranges per channel of each tensor.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use splitnets_camera::images::{FrameFormat, load_folder};
use splitnets_proto::bundle::Bundle;
use splitnets_runtime::LocalPipeline;
use splitnets_runtime::onnx_runtime::SessionOptions;
use splitnets_tests::{cluster, daemons_bin_dir, run_ok, sensor_args};

/// Images of several sizes and kinds (RGB PNG, gray PNG, JPEG), smooth enough to compress like
/// pictures rather than noise.
fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, (w, h)) in [
        (320u32, 240u32),
        (200, 300),
        (640, 480),
        (224, 224),
        (500, 375),
    ]
    .into_iter()
    .enumerate()
    {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let fx = x as f32 / w as f32;
            let fy = y as f32 / h as f32;
            image::Rgb([
                (255.0 * (fx * (1.0 + i as f32)).fract()) as u8,
                (255.0 * fy) as u8,
                (128.0 + 127.0 * ((fx + fy) * 6.0 + i as f32).sin()) as u8,
            ])
        });
        match i % 3 {
            0 => img.save(dir.join(format!("img{i}.png"))).unwrap(),
            1 => image::DynamicImage::ImageRgb8(img)
                .to_luma8()
                .save(dir.join(format!("img{i}.png")))
                .unwrap(),
            _ => img.save(dir.join(format!("img{i}.jpg"))).unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_exported_model_plans_bundles_and_runs_in_the_daemons() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let images = tmp.path().join("images");
    let plan_dir = tmp.path().join("plan");
    write_images(&images);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run_ok(
        Command::new("python3")
            .arg(root.join("scripts/make-example-cnn.py"))
            .arg(&model_dir),
    );
    let bin = daemons_bin_dir();
    let out = run_ok(
        Command::new(bin.join("splitnets-search"))
            .args(["plan", "--profile", "headset", "--fps", "30", "--bits", "8"])
            .arg("--model")
            .arg(model_dir.join("model.onnx"))
            .arg("--labels")
            .arg(model_dir.join("labels.txt"))
            .arg("--images")
            .arg(&images)
            .args(["--bundles", "2", "--out"])
            .arg(&plan_dir),
    );
    assert!(out.contains("Bundles (2 written"), "{out}");
    assert!(
        out.contains("Top-1 agreement with the whole model on 5 images, every cut"),
        "{out}"
    );

    // The planner's rows and the written bundles.
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plan_dir.join("plan.json")).unwrap()).unwrap();
    let written: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(plan_dir.join("bundles.json")).unwrap()).unwrap();
    assert_eq!(written.len(), 2);
    for b in &written {
        // Head then tail reproduces the whole model bit for bit (checked before writing).
        assert_eq!(b["float_max_abs_diff"].as_f64(), Some(0.0), "{b}");
        assert_eq!(b["check_inputs"].as_u64(), Some(5));
    }
    assert!(plan_dir.join("agreement.csv").exists());
    let first = &written[0];
    let bundle_dir = Path::new(first["dir"].as_str().unwrap()).to_path_buf();
    let crossing: Vec<&str> = first["crossing"].as_str().unwrap().split('+').collect();
    let planned_bytes = planned_link_bytes(&plan, &crossing);

    let bundle = Bundle::load(&bundle_dir).unwrap();
    let m = bundle.manifest.clone();
    assert_eq!(m.cameras.views, 1);
    assert_eq!(m.split.fusion, "none");
    assert_eq!(m.input.pixel_format, "rgb8");
    assert_eq!((m.input.height, m.input.width), (224, 224));
    assert_eq!(m.classes.len(), 1000);
    assert_eq!(m.classes[7], "class 007");
    assert_eq!(m.link_budget.bytes_per_view_per_frame as u64, planned_bytes);
    run_in_daemons(
        &bundle_dir,
        &images,
        &tmp.path().join("run-plan"),
        planned_bytes,
    )
    .await;

    // A cut where two tensors cross: the best-ranked one of the plan, as a bundle with
    // calibrated 4-bit ranges per channel (the planner prices 8 bits: compare at the bundle's).
    let rows = plan["rows"].as_array().unwrap();
    let two = rows
        .iter()
        .find(|r| {
            r["crossing"].as_array().unwrap().len() == 2
                && r["crossing"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|t| t != "input")
        })
        .expect("the example model has cuts where two tensors cross");
    let names: Vec<&str> = two["crossing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let split_dir = tmp.path().join("split-two");
    let out = run_ok(
        Command::new(bin.join("splitnets-search"))
            .args(["split", "--bits", "4", "--cut", &names.join(",")])
            .arg("--model")
            .arg(model_dir.join("model.onnx"))
            .arg("--images")
            .arg(&images)
            .arg("--calibrate-images")
            .arg(&images)
            .arg("--calibrate-per-channel")
            .arg("--out")
            .arg(&split_dir),
    );
    let bundle = Bundle::load(&split_dir).unwrap_or_else(|e| panic!("{e}: {out}"));
    let m = &bundle.manifest;
    assert_eq!(m.split.extra_features.len(), 1, "{out}");
    let layout = m.frame_layout();
    assert_eq!(layout.tensors.len(), 2);
    // Ranges calibrated per channel of each tensor, held by the bundle.
    for t in &layout.tensors {
        assert_eq!(
            t.codec,
            splitnets_proto::codec::CodecSpec::AffineCalibratedPerChannel { bits: 4 }
        );
        assert_eq!(t.channel_ranges.len(), t.shape[1], "{:?}", t.shape);
    }
    let expected_bytes = splitnets_cost_model::feature_message_bytes(
        0,
        layout
            .tensors
            .iter()
            .map(|t| (t.elements() as u64 * 4).div_ceil(8))
            .sum(),
    );
    assert_eq!(
        m.link_budget.bytes_per_view_per_frame as u64,
        expected_bytes
    );
    run_in_daemons(
        &split_dir,
        &images,
        &tmp.path().join("run-split"),
        expected_bytes,
    )
    .await;
}

/// The planner's bytes per view for the cut sending exactly `crossing`, without the profile's
/// transport overhead (what the gRPC stream carries).
fn planned_link_bytes(plan: &serde_json::Value, crossing: &[&str]) -> u64 {
    let row = plan["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["crossing"] == serde_json::json!(crossing))
        .expect("the bundle's cut is a plan row");
    let headset: splitnets_cost_model::profile::HardwareProfile =
        toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
    row["cost"]["link_bytes_per_view"].as_u64().unwrap() - headset.link.message_overhead_bytes
}

/// Runs `bundle_dir` in a real aggregator and sensor on the folder once; every prediction must
/// equal the in-process pipeline's and every frame must be `frame_bytes` on the link.
async fn run_in_daemons(bundle_dir: &Path, images: &Path, tmp: &Path, frame_bytes: u64) {
    std::fs::create_dir_all(tmp).unwrap();
    let bundle = Bundle::load(bundle_dir).unwrap();
    let m = bundle.manifest.clone();
    let frames = load_folder(images, &FrameFormat::of(&m.input)).unwrap();
    let n = frames.len() as u64;
    let mut c = cluster(bundle_dir, tmp, 2000).await;
    let mut watch = c.watch().await.unwrap();
    let mut args = sensor_args(Some(n), 10.0, splitnets_tests::trigger_in(2500));
    args.extend(["--source".into(), format!("folder:{}", images.display())]);
    c.start_sensor(0, &args).unwrap();
    let preds = splitnets_tests::collect_predictions(&mut watch, n, Duration::from_secs(60)).await;
    c.wait_sensors(Duration::from_secs(30)).await.unwrap();
    c.stop().await.unwrap();
    assert_eq!(preds.len() as u64, n, "every image predicted");

    let mut local = LocalPipeline::new(bundle, SessionOptions::default()).unwrap();
    for (seq, p) in &preds {
        let frame = &frames[(*seq % n) as usize];
        let (expected, _) = local.run_frame(std::slice::from_ref(frame), true).unwrap();
        assert_eq!(
            p.scores, expected,
            "image {seq}: the daemons' logits differ from one process"
        );
        assert_eq!(p.views_used, vec![0]);
        // Bytes on the link: the bundle's budget and the planner's figure.
        assert_eq!(p.views[0].message_bytes, frame_bytes, "image {seq}");
    }
}
