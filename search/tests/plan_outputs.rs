//! The planner end to end on a real topology: ranked Pareto set, baselines, table, CSV, SVG.

use std::process::Command;

use splitnets_cost_model::graph::analyze;
use splitnets_cost_model::profile::{HardwareProfile, presets};
use splitnets_search::{cuts, plan};

#[test]
fn plan_of_squeezenet_has_a_front_baselines_and_a_plot() {
    let out = Command::new("python3")
        .args(["-c", "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend/test/data/light/light_squeezenet.onnx'))"])
        .output()
        .unwrap();
    let path = String::from_utf8(out.stdout).unwrap();
    let model = splitnets_onnx::read_model(std::path::Path::new(path.trim())).unwrap();
    let g = analyze(
        &splitnets_onnx::cost_graph(&model).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let cs = cuts::enumerate(&g, 2, 1_000_000).unwrap();
    let sums = plan::summaries(&g, &cs);
    let mut profile: HardwareProfile = toml::from_str(presets::HEADSET).unwrap();
    profile.sensor.memory_bytes = 64_000_000;
    let opts = plan::PlanOptions {
        bits: 8,
        fps: 10.0,
        latency_seconds: None,
        jpeg_frame_bytes: Some(2000),
        jpeg_frame_samples: Some(224 * 224 * 3),
    };
    let p = plan::plan("squeezenet", &g, &cs, &sums, &profile, &opts);
    let front: Vec<_> = p.rows.iter().filter(|r| r.pareto).collect();
    assert!(!front.is_empty());
    // No cut on the front is dominated by another cut on the front.
    for a in &front {
        for b in &front {
            let (x, y) = (&a.cost, &b.cost);
            let dominated = x.end_to_end_seconds <= y.end_to_end_seconds
                && x.link_bytes_per_view <= y.link_bytes_per_view
                && x.sensor_memory_bytes <= y.sensor_memory_bytes
                && (x.end_to_end_seconds < y.end_to_end_seconds
                    || x.link_bytes_per_view < y.link_bytes_per_view
                    || x.sensor_memory_bytes < y.sensor_memory_bytes);
            assert!(
                !dominated || std::ptr::eq(*a, *b),
                "front contains dominated cuts"
            );
        }
    }
    assert_eq!(p.baselines.len(), 3);
    // The JPEG baseline sends its measured bytes plus the link overhead.
    assert_eq!(
        p.baselines[2].cost.link_bytes_per_view,
        2000 + profile.link.message_overhead_bytes
    );
    // Its encoder runs on the sensor: the raw-frame baseline's sensor time plus the encode.
    let enc = plan::jpeg_encode_seconds(&profile, 224 * 224 * 3);
    assert!(enc > 0.0);
    assert!(
        (p.baselines[2].cost.sensor_seconds - p.baselines[1].cost.sensor_seconds - enc).abs()
            < 1e-12
    );
    let table = plan::table(&p, 10);
    assert!(
        table.contains("all on aggregator (JPEG frame size measured, encode on the sensor)"),
        "{table}"
    );
    assert_eq!(plan::csv(&p).lines().count(), p.rows.len() + 1);
    let svg = plan::svg(&p);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.matches("<circle").count() >= p.rows.len());
}
