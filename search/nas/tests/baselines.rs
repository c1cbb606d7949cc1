//! The baselines end to end on Fashion-MNIST with a tiny budget: every placement trained,
//! measured and priced, the planner's pick among the cuts, and the JPEG link measured.

use splitnets_cost_model::profile::HardwareProfile;
use splitnets_nas::baseline::run_baselines;
use splitnets_nas::data::DataKind;
use splitnets_nas::space::Form;
use splitnets_nas::{NasConfig, Preset};

#[test]
fn every_baseline_is_trained_measured_and_priced() {
    let profile: HardwareProfile =
        toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
    let dir = std::env::temp_dir().join(format!("nas-baselines-test-{}", std::process::id()));
    let mut cfg = NasConfig::preset(
        Preset::Quick,
        DataKind::FashionMnist,
        profile,
        Some(dir.clone()),
    );
    cfg.train.steps = 30;
    cfg.data.test_limit = Some(300);
    cfg.calibration_batches = 2;
    let mut steps = 0;
    let budget = 0.5e-3;
    let out = run_baselines(&cfg, Some(75), &[budget], false, &mut |p| {
        if matches!(p, splitnets_nas::baseline::BaselineProgress::Step { .. }) {
            steps += 1;
        }
    })
    .unwrap();
    let ids: Vec<&str> = out.results.iter().map(|r| r.id.as_str()).collect();
    for want in [
        "aggregator-raw",
        "planner-cut-1",
        "planner-cut-2",
        "planner-cut-3",
        "sensor",
        "aggregator-jpeg",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    // One view, and the largest network fits the headset sensor: the sensor and aggregator
    // placements share one trained network, the JPEG one is trained on its own; the networks
    // sized for the budget come on top, a shared one trained once.
    let sized: Vec<_> = out
        .results
        .iter()
        .filter(|r| r.sized_for_latency_seconds.is_some())
        .collect();
    assert!(!sized.is_empty(), "{ids:?}");
    for r in &sized {
        assert!(r.id.ends_with("@0.500ms"), "{}", r.id);
        assert!(
            r.cost.end_to_end_seconds <= budget,
            "{}: {:?}",
            r.id,
            r.cost
        );
        assert!(r.feasible);
    }
    let distinct_sized = if sized.len() == 2 && sized[0].arch == sized[1].arch {
        1
    } else {
        sized.len()
    };
    assert_eq!(steps, (2 + distinct_sized) * 30, "{:?}", out.train_seconds);
    assert_eq!(out.test_items, 300);
    for r in &out.results {
        // 30 steps lift every network well above chance (10 %).
        assert!(r.test_accuracy > 0.3, "{}: {}", r.id, r.test_accuracy);
        assert_eq!(r.feasible, r.why_not.is_empty());
    }
    let get = |id: &str| out.results.iter().find(|r| r.id == id).unwrap();
    let raw = get("aggregator-raw");
    assert_eq!(raw.cost.sensor_macs, 0);
    assert!(raw.cost.link_bytes_per_view >= 28 * 28);
    let jpeg = get("aggregator-jpeg");
    let jpeg_bytes = out.jpeg_mean_bytes.unwrap();
    assert!(jpeg_bytes > 100 && jpeg_bytes < 28 * 28 * 2);
    assert!(jpeg.cost.sensor_seconds > 0.0);
    assert_eq!(jpeg.form, Form::Whole { cut_after: None });
    let sensor = get("sensor");
    assert_eq!(sensor.cost.aggregator_macs, 0);
    assert!(sensor.cost.link_bytes_per_view < raw.cost.link_bytes_per_view);
    // Exactly one planner's choice: the fastest feasible cut.
    let cuts: Vec<_> = out
        .results
        .iter()
        .filter(|r| r.id.starts_with("planner-cut"))
        .collect();
    let chosen: Vec<_> = cuts.iter().filter(|r| r.planner_choice).collect();
    assert_eq!(chosen.len(), 1);
    let fastest = cuts
        .iter()
        .filter(|r| r.feasible)
        .map(|r| r.cost.end_to_end_seconds)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(chosen[0].cost.end_to_end_seconds, fastest);
    // A rerun finds the trained networks' checkpoints and only measures again.
    // Nor are they measured again: the figures are read back from `baseline-measured.json`.
    let (mut steps_again, mut measured_again, mut reused) = (0, 0, 0);
    let again = run_baselines(&cfg, Some(75), &[budget], false, &mut |p| match p {
        splitnets_nas::baseline::BaselineProgress::Step { .. } => steps_again += 1,
        splitnets_nas::baseline::BaselineProgress::Measured { reused: r, .. } => {
            measured_again += 1;
            reused += usize::from(r);
        }
        _ => {}
    })
    .unwrap();
    assert_eq!(steps_again, 0);
    assert_eq!(measured_again, out.results.len());
    assert_eq!(
        reused,
        out.results.len(),
        "every network read back, none measured"
    );
    assert_eq!(
        again
            .results
            .iter()
            .map(|r| r.test_accuracy)
            .collect::<Vec<_>>(),
        out.results
            .iter()
            .map(|r| r.test_accuracy)
            .collect::<Vec<_>>()
    );
    assert!(again.not_trained.is_empty());

    // --trained-only: nothing trained. A network whose checkpoint is short of the final step
    // (here: the same configuration asking for more steps) is listed, not measured.
    let mut longer = cfg.clone();
    longer.train.steps = 31;
    let mut steps_interim = 0;
    let interim = run_baselines(&longer, Some(75), &[budget], true, &mut |p| {
        if matches!(p, splitnets_nas::baseline::BaselineProgress::Step { .. }) {
            steps_interim += 1;
        }
    })
    .unwrap();
    assert_eq!(steps_interim, 0);
    assert!(interim.results.is_empty(), "{:?}", interim.results);
    assert!(
        interim
            .not_trained
            .iter()
            .any(|n| n.starts_with("aggregator-raw"))
            && interim.not_trained.iter().any(|n| n == "aggregator-jpeg"),
        "{:?}",
        interim.not_trained
    );
    // The finished ones are measured as a full run measures them.
    let finished = run_baselines(&cfg, Some(75), &[budget], true, &mut |_| {}).unwrap();
    assert!(finished.not_trained.is_empty());
    assert_eq!(finished.results.len(), out.results.len());
    let _ = std::fs::remove_dir_all(dir);
}
