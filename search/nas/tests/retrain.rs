//! Retraining a searched network alone: trained from scratch with the run's settings, measured
//! on the test split, resumed from its checkpoint to the same weights, and refused for a
//! network outside the space.

use splitnets_cost_model::profile::HardwareProfile;
use splitnets_nas::cost::predict;
use splitnets_nas::data::DataKind;
use splitnets_nas::retrain::{RetrainProgress, retrain};
use splitnets_nas::space::{Arch, SearchSpace};
use splitnets_nas::{NasConfig, NasError, Preset};

#[test]
fn retrains_from_scratch_resumes_and_refuses_foreign_networks() {
    let profile: HardwareProfile =
        toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
    let dir = std::env::temp_dir().join(format!("nas-retrain-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = NasConfig::preset(
        Preset::Quick,
        DataKind::FashionMnist,
        profile.clone(),
        Some(dir.clone()),
    );
    cfg.train.steps = 30;
    cfg.data.test_limit = Some(300);
    cfg.calibration_batches = 2;
    let space = SearchSpace::standard(28, 1, 10);
    let arch = Arch::smallest(&space, 2);
    let cost = predict(&space, &arch, &profile, cfg.target_fps);

    let mut steps = Vec::new();
    let mut resumed = None;
    let run = |steps: &mut Vec<u64>, resumed: &mut Option<u64>| {
        retrain(&cfg, &space, &arch, cost, Some(300), &mut |p| match p {
            RetrainProgress::Step { step, .. } => steps.push(step),
            RetrainProgress::Resumed { step } => *resumed = Some(step),
            _ => {}
        })
        .unwrap()
    };
    let (first, member) = run(&mut steps, &mut resumed);
    assert_eq!(steps, (1..=30).collect::<Vec<_>>());
    assert_eq!(resumed, None);
    assert_eq!((first.steps, first.test_items), (30, 300));
    assert!((first.epochs - 30.0 * 32.0 / first.train_items as f64).abs() < 1e-9);
    // 30 steps lift the smallest network well above chance (10 %).
    assert!(first.test_accuracy > 0.3, "{}", first.test_accuracy);
    assert_eq!(member.arch, arch);
    assert_eq!(member.finetune_steps, 30);

    // The final checkpoint is read back: no step runs again, and the figure is the same.
    steps.clear();
    let (again, _) = run(&mut steps, &mut resumed);
    assert!(steps.is_empty(), "{steps:?}");
    assert_eq!(resumed, Some(30));
    assert_eq!(again.test_accuracy, first.test_accuracy);

    // A network of another space (wider than any stage allows) is refused before training.
    let mut foreign = arch.clone();
    foreign.stages[0].width = 1_000;
    let err = retrain(&cfg, &space, &foreign, cost, None, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, NasError::Config(m) if m.contains("not a network of the run's search space")),
        "{err}"
    );
    // Another preset's test split is refused before any step runs.
    steps.clear();
    let err = retrain(&cfg, &space, &arch, cost, Some(10_000), &mut |p| {
        if let RetrainProgress::Step { step, .. } = p {
            steps.push(step);
        }
    })
    .unwrap_err();
    assert!(
        matches!(&err, NasError::Config(m) if m.contains("pass the run's preset")),
        "{err}"
    );
    assert!(steps.is_empty(), "{steps:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
