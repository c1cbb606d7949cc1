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
use crate::{FrontMember, NasConfig, NasError};

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
