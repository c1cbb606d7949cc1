//! Fine-tuning the front on a tiny budget: every member is trained alone after the search,
//! its shared-weights accuracy kept beside, and a rerun in the finished directory trains no
//! supernet step and measures no subnet again (only the fine-tuning and the test run again).

use splitnets_cost_model::profile::HardwareProfile;
use splitnets_nas::data::DataKind;
use splitnets_nas::{NasConfig, Preset, Progress, run_nas};

fn config(dir: &std::path::Path, finetune_steps: u64) -> NasConfig {
    let profile: HardwareProfile =
        toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
    let mut cfg = NasConfig::preset(
        Preset::Quick,
        DataKind::FashionMnist,
        profile,
        Some(dir.to_path_buf()),
    );
    cfg.train.steps = 20;
    cfg.evo.population = 4;
    cfg.latency_fractions = vec![1.0];
    cfg.val_items = 200;
    cfg.calibration_batches = 2;
    cfg.data.test_limit = Some(300);
    cfg.front_max = Some(2);
    cfg.finetune_steps = finetune_steps;
    // The same front as the plain run, so the two can be compared member by member.
    cfg.finetune_extra_per_target = 0;
    cfg
}

#[derive(Default)]
struct Seen {
    supernet_steps: usize,
    finetune_steps: usize,
    evaluated: usize,
    resumed_evaluations: usize,
}

fn run(cfg: &NasConfig) -> (splitnets_nas::NasOutcome, Seen) {
    let mut seen = Seen::default();
    let o = run_nas(cfg, &mut |p| match p {
        Progress::Step(_) => seen.supernet_steps += 1,
        Progress::FineTuneStep { .. } => seen.finetune_steps += 1,
        Progress::Evaluated { .. } => seen.evaluated += 1,
        Progress::EvaluationsResumed { count } => seen.resumed_evaluations = count,
        _ => {}
    })
    .unwrap();
    (o, seen)
}

#[test]
fn front_members_are_fine_tuned_and_a_finished_run_only_redoes_that() {
    let dir = std::env::temp_dir().join(format!("nas-finetune-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let (plain, seen) = run(&config(&dir, 0));
    assert_eq!(seen.supernet_steps, 20);
    assert_eq!(seen.finetune_steps, 0);
    assert!(!plain.front.is_empty());
    for m in &plain.front {
        assert_eq!(m.finetune_steps, 0);
        assert_eq!(m.test_accuracy_shared_weights, None);
    }

    let (tuned, seen) = run(&config(&dir, 30));
    assert_eq!(
        seen.supernet_steps, 0,
        "the supernet is read back, not trained"
    );
    assert_eq!(tuned.steps_run, 20);
    assert_eq!(
        seen.resumed_evaluations, plain.evaluations,
        "every subnet's validation accuracy is read back"
    );
    let fronts = |o: &splitnets_nas::NasOutcome| -> Vec<String> {
        o.front.iter().map(|m| m.arch.short()).collect()
    };
    assert_eq!(
        fronts(&tuned),
        fronts(&plain),
        "the search retraces its steps"
    );
    assert_eq!(seen.finetune_steps, 30 * tuned.front.len());
    assert!(tuned.finetune_seconds > 0.0);
    for (t, p) in tuned.front.iter().zip(&plain.front) {
        assert_eq!(t.finetune_steps, 30);
        // The shared weights are measured exactly as the run without fine-tuning measured them
        // (the same BatchNorm calibration batches, although this run resumed).
        assert_eq!(t.test_accuracy_shared_weights, Some(p.test_accuracy));
        // 20 supernet steps leave the subnets near chance; 30 steps alone lift each well above.
        assert!(
            t.test_accuracy > p.test_accuracy + 0.1,
            "{}: fine-tuned {} vs shared {}",
            t.arch.short(),
            t.test_accuracy,
            p.test_accuracy
        );
        // The exported weights are the fine-tuned ones.
        assert_ne!(t.weights, p.weights);
    }

    // More candidates than the front: each target's best two are fine-tuned too, and the front
    // is drawn again on validation accuracy after fine-tuning.
    let mut wider = config(&dir, 30);
    wider.finetune_extra_per_target = 2;
    let (redrawn, seen) = run(&wider);
    assert_eq!(seen.supernet_steps, 0);
    assert!(
        seen.finetune_steps >= 30 * redrawn.front.len(),
        "{} steps for {} members",
        seen.finetune_steps,
        redrawn.front.len()
    );
    for m in &redrawn.front {
        assert!(m.val_accuracy_finetuned.is_some(), "{}", m.arch.short());
    }
    for a in &redrawn.front {
        for b in &redrawn.front {
            let dominates = b.cost.end_to_end_seconds <= a.cost.end_to_end_seconds
                && b.val_accuracy_finetuned > a.val_accuracy_finetuned;
            assert!(
                !dominates,
                "{} dominated after fine-tuning by {}",
                a.arch.short(),
                b.arch.short()
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
