//! Retraining one searched network alone, for a longer budget than the search had.
//!
//! The search trains every subnet at once in the supernet, for a budget that has to fit the
//! search into hours (2,500 steps × 64 on Fashion-MNIST is under 3 epochs). Its front tells
//! *which* architecture, split, reduce width, bit width and fusion to deploy; how accurate that
//! network gets is then a question of training it. As after other one-shot searches (OFA,
//! BigNAS, DARTS), the chosen network is trained alone: here from scratch, with the search's
//! own settings (schedule, label smoothing, seed, view dropout, quantization-aware split) and
//! only the step count changed, so the figure belongs to the architecture the search found and
//! not to its shared weights. Checkpoints every `checkpoint_every` steps make a killed run
//! resume where it stopped.
//!
//! The result is not a baseline comparison: the baselines train for the search's budget, and
//! the front is compared with them at that budget (`baseline`).

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::baseline::{Job, test_accuracies, train_job};
use crate::cost::PredictedCost;
use crate::data::{self, DataKind};
use crate::space::{Arch, Form, SearchSpace};
use crate::train::calibrate;
use crate::{FrontMember, NasConfig, NasError, NasOutcome};

/// What [`retrain`] reports as it goes.
#[derive(Debug, Clone)]
pub enum RetrainProgress {
    Loaded {
        train_items: usize,
        test_items: usize,
    },
    Resumed {
        step: u64,
    },
    Step {
        step: u64,
        steps: u64,
        loss: f64,
    },
    Testing,
}

/// A retrained network, measured on the test split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetrainOutcome {
    pub data: DataKind,
    pub arch: Arch,
    pub cost: PredictedCost,
    pub steps: u64,
    pub batch: usize,
    /// Passes over the training split that `steps × batch` makes.
    pub epochs: f64,
    pub train_items: usize,
    /// Wall time of the steps this process ran (a resumed run's earlier steps are not in it).
    pub train_seconds_this_process: f64,
    pub test_items: usize,
    pub test_accuracy: f64,
    pub test_accuracy_one_view: f64,
    pub test_accuracy_one_missing: f64,
}

/// Trains `arch` (a split network of `space`) alone from scratch for `cfg.train.steps` steps,
/// checkpointing in `cfg.out_dir`, and measures it on the test split. Returns the outcome and
/// the network as a front member (weights included) for export as a bundle. With
/// `expect_test_items`, a test split of another size (another preset's data) is refused before
/// any training.
pub fn retrain(
    cfg: &NasConfig,
    space: &SearchSpace,
    arch: &Arch,
    cost: PredictedCost,
    expect_test_items: Option<usize>,
    progress: &mut dyn FnMut(RetrainProgress),
) -> Result<(RetrainOutcome, FrontMember), NasError> {
    space.validate().map_err(NasError::Config)?;
    if !arch.is_in(space) {
        return Err(NasError::Config(format!(
            "`{}` is not a network of the run's search space",
            arch.short()
        )));
    }
    if cfg.train.steps == 0 {
        return Err(NasError::Config(
            "retraining needs at least one step".into(),
        ));
    }
    let raw = data::load(&cfg.data)?;
    if (raw.side, raw.views) != (space.input_size, space.views) {
        return Err(NasError::Config(format!(
            "the data set gives {} view(s) of {}×{} pixels, the run's space expects {} of {}×{}",
            raw.views, raw.side, raw.side, space.views, space.input_size, space.input_size
        )));
    }
    if let Some(n) = expect_test_items
        && n != raw.test.len()
    {
        return Err(NasError::Config(format!(
            "the run was tested on {n} items, this data configuration's test split has {}: pass the run's preset (--preset)",
            raw.test.len()
        )));
    }
    progress(RetrainProgress::Loaded {
        train_items: raw.train.len(),
        test_items: raw.test.len(),
    });
    let t = Instant::now();
    let job = Job {
        id: "retrain",
        arch,
        form: Form::Split,
        data: &raw,
        jpeg: None,
        ckpt_prefix: "retrain",
    };
    let trained = train_job(cfg, space, &job, false, &mut |p| match p {
        crate::baseline::BaselineProgress::Resumed { step, .. } => {
            progress(RetrainProgress::Resumed { step });
        }
        crate::baseline::BaselineProgress::Step {
            step, steps, loss, ..
        } => progress(RetrainProgress::Step { step, steps, loss }),
        _ => {}
    })?;
    let Some((net, calib, _)) = trained else {
        unreachable!("train_job trains when not asked for finished networks only")
    };
    let train_seconds = t.elapsed().as_secs_f64();
    progress(RetrainProgress::Testing);
    let device = Device::flex();
    let stats = calibrate(&net, space, arch, &calib, &device);
    let (all, one, missing) = test_accuracies(
        &net,
        space,
        arch,
        Form::Split,
        &stats,
        &raw.test,
        cfg.eval_batch,
        &device,
    );
    let outcome = RetrainOutcome {
        data: raw.kind,
        arch: arch.clone(),
        cost,
        steps: cfg.train.steps,
        batch: cfg.train.batch,
        epochs: (cfg.train.steps * cfg.train.batch as u64) as f64 / raw.train.len().max(1) as f64,
        train_items: raw.train.len(),
        train_seconds_this_process: train_seconds,
        test_items: raw.test.len(),
        test_accuracy: all,
        test_accuracy_one_view: one,
        test_accuracy_one_missing: missing,
    };
    let member = FrontMember {
        arch: arch.clone(),
        cost,
        val_accuracy: f64::NAN,
        test_accuracy: all,
        test_accuracy_one_view: one,
        test_accuracy_one_missing: missing,
        finetune_steps: cfg.train.steps,
        test_accuracy_shared_weights: None,
        val_accuracy_finetuned: None,
        weights: net.export(space, arch, &stats),
    };
    Ok((outcome, member))
}

/// The run `run` with its front replaced by members retrained alone (`retrained`: each the
/// index of the run's front member and its [`RetrainOutcome`]), for comparing the searched
/// architectures with the baselines at the baselines' own budget. Every retrained network must
/// be the run's member it names, on the run's data and test split, and all must have had the
/// same steps (`front_retrained_steps`). A member keeps the search's validation accuracy (which
/// chose it) and its predicted costs; the search's test figure goes to
/// `test_accuracy_shared_weights`. The front is ordered by predicted end-to-end latency.
pub fn front_of_retrained(
    run: &NasOutcome,
    retrained: &[(usize, RetrainOutcome)],
) -> Result<NasOutcome, NasError> {
    let Some((_, first)) = retrained.first() else {
        return Err(NasError::Config("no retrained member given".into()));
    };
    let mut front = Vec::with_capacity(retrained.len());
    for (index, r) in retrained {
        let searched = run.front.get(*index).ok_or_else(|| {
            NasError::Config(format!(
                "member {index}: the run's front has {} members",
                run.front.len()
            ))
        })?;
        if r.arch != searched.arch {
            return Err(NasError::Config(format!(
                "member {index}: retrained `{}` is not the run's `{}`",
                r.arch.short(),
                searched.arch.short()
            )));
        }
        if (r.data, r.test_items) != (run.data, run.test_items) {
            return Err(NasError::Config(format!(
                "member {index}: retrained on {} and tested on {} items, the run is {} with {}",
                r.data.name(),
                r.test_items,
                run.data.name(),
                run.test_items
            )));
        }
        if r.steps != first.steps {
            return Err(NasError::Config(format!(
                "member {index} had {} steps, another {}: compare equal budgets",
                r.steps, first.steps
            )));
        }
        if front.iter().any(|m: &FrontMember| m.arch == r.arch) {
            return Err(NasError::Config(format!("member {index} given twice")));
        }
        front.push(FrontMember {
            arch: r.arch.clone(),
            cost: searched.cost,
            val_accuracy: searched.val_accuracy,
            test_accuracy: r.test_accuracy,
            test_accuracy_one_view: r.test_accuracy_one_view,
            test_accuracy_one_missing: r.test_accuracy_one_missing,
            finetune_steps: 0,
            test_accuracy_shared_weights: Some(searched.test_accuracy),
            val_accuracy_finetuned: None,
            weights: Default::default(),
        });
    }
    front.sort_by(|a, b| {
        a.cost
            .end_to_end_seconds
            .total_cmp(&b.cost.end_to_end_seconds)
    });
    Ok(NasOutcome {
        front,
        front_retrained_steps: first.steps,
        finetune_seconds: 0.0,
        ..run.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Preset, cost::predict};
    use splitnets_cost_model::profile::{HardwareProfile, presets};

    fn member(space: &SearchSpace, arch: Arch, test: f64) -> FrontMember {
        let profile: HardwareProfile = toml::from_str(presets::HEADSET).unwrap();
        FrontMember {
            cost: predict(space, &arch, &profile, 30.0),
            arch,
            val_accuracy: 0.5,
            test_accuracy: test,
            test_accuracy_one_view: test,
            test_accuracy_one_missing: test,
            finetune_steps: 0,
            test_accuracy_shared_weights: None,
            val_accuracy_finetuned: None,
            weights: Default::default(),
        }
    }

    fn retrained(m: &FrontMember, steps: u64, test: f64) -> RetrainOutcome {
        RetrainOutcome {
            data: DataKind::FashionMnist,
            arch: m.arch.clone(),
            cost: m.cost,
            steps,
            batch: 32,
            epochs: 1.0,
            train_items: 100,
            train_seconds_this_process: 1.0,
            test_items: 300,
            test_accuracy: test,
            test_accuracy_one_view: test,
            test_accuracy_one_missing: test,
        }
    }

    #[test]
    fn retrained_front_keeps_the_search_figures_beside_and_refuses_mismatches() {
        let profile: HardwareProfile = toml::from_str(presets::HEADSET).unwrap();
        let space = SearchSpace::standard(28, 1, 10);
        let cfg = NasConfig::preset(Preset::Quick, DataKind::FashionMnist, profile, None);
        let large = member(&space, Arch::largest(&space, 2), 0.8);
        let small = member(&space, Arch::smallest(&space, 2), 0.6);
        assert!(small.cost.end_to_end_seconds < large.cost.end_to_end_seconds);
        let run = NasOutcome {
            data: DataKind::FashionMnist,
            space,
            train: cfg.train,
            steps_run: 100,
            steps_this_process: 100,
            train_seconds: 1.0,
            step_seconds: 0.01,
            search_seconds: 1.0,
            finetune_seconds: 0.0,
            finetune_lr_fraction: 1.0,
            front_retrained_steps: 0,
            total_seconds: 2.0,
            cores_used: 1.0,
            cores_available: 2,
            evaluations: 2,
            test_items: 300,
            targets: vec![],
            evaluated: vec![],
            front: vec![large.clone(), small.clone()],
            input_mean: 0.0,
            input_std: 1.0,
        };
        let out = front_of_retrained(
            &run,
            &[
                (0, retrained(&large, 500, 0.9)),
                (1, retrained(&small, 500, 0.7)),
            ],
        )
        .unwrap();
        assert_eq!(out.front_retrained_steps, 500);
        // Fastest first; the retrained figure replaces the search's, which is kept beside.
        assert_eq!(out.front[0].arch, small.arch);
        assert_eq!(
            (
                out.front[0].test_accuracy,
                out.front[0].test_accuracy_shared_weights
            ),
            (0.7, Some(0.6))
        );
        assert_eq!(out.front[1].test_accuracy, 0.9);
        assert_eq!(out.front[1].val_accuracy, 0.5);

        let refused = |r: &[(usize, RetrainOutcome)], what: &str| {
            let err = front_of_retrained(&run, r).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        };
        refused(&[(0, retrained(&small, 500, 0.7))], "is not the run's");
        refused(&[(2, retrained(&small, 500, 0.7))], "front has 2 members");
        refused(
            &[
                (0, retrained(&large, 500, 0.9)),
                (1, retrained(&small, 400, 0.7)),
            ],
            "compare equal budgets",
        );
        let mut other_split = retrained(&large, 500, 0.9);
        other_split.test_items = 10_000;
        refused(&[(0, other_split)], "tested on 10000 items");
        refused(
            &[
                (0, retrained(&large, 500, 0.9)),
                (0, retrained(&large, 500, 0.9)),
            ],
            "given twice",
        );
        refused(&[], "no retrained member");
    }
}
