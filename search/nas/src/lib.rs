//! Split-aware neural architecture search (SA-NAS), after SplitNets (CVPR 2022).
//!
//! - [`space`]: the search space (stages of inverted-residual blocks with per-stage depth, width,
//!   kernel and expansion; split position; reduce channels and bits; view fusion).
//! - [`supernet`]: the weight-sharing supernet in burn, with the split module (reduce, quantize
//!   with a straight-through estimator, recover, fuse) and its split-aware initialization.
//! - [`train`]: sandwich-rule training with in-place distillation, split-aware sampling and view
//!   dropout; BatchNorm recalibration and accuracy of a subnet with any subset of views.
//! - [`cost`]: a subnet's predicted costs under a hardware profile, by `splitnets-cost-model`.
//! - [`search`]: evolutionary search under the constraints, and the Pareto front.
//! - [`baseline`]: the placements the search is measured against (all on the sensor, all on the
//!   aggregator with raw or JPEG frames, planner cuts of a fixed backbone), trained alike.
//! - [`data`]: the data sets (Fashion-MNIST one view, Fashion-MNIST through the 4-camera rig,
//!   the rendered shapes), batches made off the training thread.
//!
//! [`run_nas`] does it all: train the supernet (resuming from a checkpoint), search at several
//! latency targets on the validation split, measure the test split for the final front only,
//! and return each front member's architecture, costs, accuracies and weights (BatchNorm folded).

pub mod baseline;
pub mod cost;
pub mod data;
pub mod onnx_export;
pub mod reference;
pub mod report;
pub mod retrain;
pub mod search;
pub mod space;
pub mod supernet;
pub mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use splitnets_cost_model::profile::HardwareProfile;

pub use splitnets_camera::rig::SplitMix64 as Rng;

use crate::cost::{Constraints, PredictedCost, predict};
use crate::data::{BatchStream, DataConfig, DataKind};
use crate::search::{Candidate, EvoSettings, evolve, pareto_front};
use crate::space::{Arch, SearchSpace};
use crate::supernet::{InitScheme, SubnetWeights, Supernet};
use crate::train::{StepReport, TrainSettings, accuracy, calibrate, train_fixed, train_supernet};

#[derive(Debug, thiserror::Error)]
pub enum NasError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Dataset(#[from] splitnets_camera::dataset::DatasetError),
    #[error(transparent)]
    Shapes(#[from] splitnets_camera::shapes::ShapeError),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error("the batch producer stopped")]
    Producer,
}

/// The size of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Under 5 minutes on a 2-core machine, well above chance.
    Quick,
    /// The full budget.
    Full,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct NasConfig {
    pub data: DataConfig,
    pub profile: HardwareProfile,
    pub train: TrainSettings,
    pub evo: EvoSettings,
    /// Latency targets as fractions of the way (geometrically) from the cheapest to the dearest
    /// subnet's predicted end-to-end latency.
    pub latency_fractions: Vec<f64>,
    pub target_fps: f64,
    /// Batches used to recalibrate BatchNorm before a subnet is evaluated.
    pub calibration_batches: usize,
    /// Validation items used to score a subnet during the search.
    pub val_items: usize,
    pub eval_batch: usize,
    /// Where checkpoints (and the shape cache, by default) go; `None`: no checkpoint.
    pub out_dir: Option<PathBuf>,
    pub checkpoint_every: u64,
    /// Overrides the standard space (e.g. for tests).
    pub space: Option<SearchSpace>,
    /// Narrows the space (standard or overridden) for ablations.
    pub restrict: SpaceRestriction,
    /// At most this many front members are measured on the test split and returned (each
    /// target's best first, the rest spread evenly over the front's latency range); `None`: all.
    pub front_max: Option<usize>,
    /// Steps each front member is trained alone, from the supernet's weights, before it is
    /// tested and exported (0: the supernet's shared weights as they are).
    pub finetune_steps: u64,
    /// With fine-tuning: besides the front, this many more of each latency target's best
    /// candidates (by shared-weight validation accuracy, which ranks small subnets poorly) are
    /// fine-tuned, and the front is drawn again on validation accuracy after fine-tuning.
    pub finetune_extra_per_target: usize,
    /// Fine-tuning's learning rate as a fraction of the supernet's (`0 < f ≤ 1`).
    pub finetune_lr_fraction: f64,
}

/// The default fine-tuning learning rate, as a fraction of the supernet's. Measured on the
/// quick 4-view search (`reports/quick/fashion-mnist-4view/seeded/`): the full rate (with its
/// warm-up and cosine) lifted the front by 2–16 points over 0.3 × it, most for small members,
/// whose shared weights are furthest from what they can reach.
pub const FINETUNE_LR_FRACTION: f64 = 1.0;

/// Outcomes written before the rate was an option were fine-tuned at 0.3 × the supernet's.
fn finetune_lr_fraction_before_the_option() -> f64 {
    0.3
}

/// Narrows a search space for an ablation: only these bit widths, only these fusions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpaceRestriction {
    pub bits: Option<Vec<u32>>,
    pub fusions: Option<Vec<space::Fusion>>,
}

impl NasConfig {
    /// The preset for `kind`: data from the usual places, the headset `profile`.
    pub fn preset(
        preset: Preset,
        kind: DataKind,
        profile: HardwareProfile,
        out_dir: Option<PathBuf>,
    ) -> Self {
        let cache = out_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join("shape-cache");
        let quick = preset == Preset::Quick;
        let shapes = splitnets_camera::shapes::ShapeSetConfig {
            size: if quick { 32 } else { 64 },
            train: if quick { 3_000 } else { 12_000 },
            val: if quick { 600 } else { 1_200 },
            ..Default::default()
        };
        let multi = kind != DataKind::FashionMnist;
        let steps = match (quick, multi) {
            (true, true) => 130,
            (true, false) => 500,
            // 64×64 frames cost ~4.9 s a step on 2 cores: 1,500 steps keep the
            // supernet near the 2-hour aim.
            (false, _) if kind == DataKind::Shapes => 1_500,
            (false, _) => 2_500,
        };
        Self {
            data: DataConfig {
                kind,
                fashion_mnist_dir: PathBuf::from(splitnets_camera::dataset::DEFAULT_DIR),
                cache_dir: cache,
                shapes,
                fashion_val: 5_000,
                test_limit: if quick { Some(400) } else { None },
            },
            profile,
            train: TrainSettings {
                steps,
                batch: if quick { 32 } else { 64 },
                learning_rate: 3e-3,
                random_subnets: if quick { 1 } else { 2 },
                view_keep_prob: if multi { 0.7 } else { 1.0 },
                distill: true,
                distill_label_weight: 0.5,
                split_aware_sampling: true,
                init: InitScheme::SplitAware,
                label_smoothing: 0.1,
                seed: 1,
                // Data parallel over the cores (each extra thread on a private replica: sharing
                // parameters between autodiff graphs on two threads deadlocks in burn 0.22).
                threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            evo: EvoSettings {
                population: if quick { 6 } else { 16 },
                generations: if quick { 1 } else { 4 },
                parents: if quick { 3 } else { 6 },
                mutation_prob: 0.15,
                crossover_fraction: 0.5,
                max_resample: 40,
                fill_draws: 400,
            },
            latency_fractions: if quick {
                vec![0.3, 0.6, 1.0]
            } else {
                vec![0.2, 0.4, 0.6, 0.8, 1.0]
            },
            target_fps: 30.0,
            calibration_batches: if quick { 4 } else { 16 },
            val_items: if quick { 400 } else { 2_000 },
            eval_batch: 100,
            out_dir,
            // A checkpoint is ~1 MB and a full step several seconds: lose at most minutes.
            checkpoint_every: 100,
            space: None,
            restrict: SpaceRestriction::default(),
            // Each target's best and a spread: testing and checking a member costs ~15 s here.
            front_max: Some(if quick { 5 } else { 12 }),
            // A tenth of the supernet's steps per member (a member's step costs a fraction of
            // a sandwich step); off in the quick preset, whose 5 minutes it would overrun.
            finetune_steps: if quick { 0 } else { steps / 10 },
            finetune_extra_per_target: 2,
            finetune_lr_fraction: FINETUNE_LR_FRACTION,
        }
    }
}

/// What [`run_nas`] reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    Loaded {
        train_items: usize,
        val_items: usize,
        test_items: usize,
        seconds: f64,
    },
    Resumed {
        step: u64,
    },
    Step(StepReport),
    Evaluated {
        evaluations: usize,
        arch: String,
        val_accuracy: f64,
        end_to_end_seconds: f64,
    },
    TargetDone {
        index: usize,
        targets: usize,
        latency_seconds: f64,
    },
    Testing {
        index: usize,
        of: usize,
    },
    /// Validation accuracies read back from an earlier run's evaluation log.
    EvaluationsResumed {
        count: usize,
    },
    /// The front was thinned to `front_max` members for the test split.
    FrontThinned {
        front: usize,
        kept: usize,
    },
    /// A step of fine-tuning front member `member` (of `of`).
    FineTuneStep {
        member: usize,
        of: usize,
        report: StepReport,
    },
}

/// One subnet of the final front, measured on the test split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontMember {
    pub arch: Arch,
    pub cost: PredictedCost,
    pub val_accuracy: f64,
    /// All views present.
    pub test_accuracy: f64,
    /// Each single view alone, averaged over the views (equals `test_accuracy` with one view).
    pub test_accuracy_one_view: f64,
    /// With one camera missing, the worst camera to lose (equals `test_accuracy` with one view).
    pub test_accuracy_one_missing: f64,
    /// Steps this member was trained alone after the search (`NasConfig::finetune_steps`); the
    /// accuracies above and the weights are after them.
    #[serde(default)]
    pub finetune_steps: u64,
    /// With fine-tuning: the all-views test accuracy of the supernet's shared weights, before.
    #[serde(default)]
    pub test_accuracy_shared_weights: Option<f64>,
    /// With fine-tuning: the validation accuracy after it (`val_accuracy` is the shared
    /// weights'), which chose the front among the candidates fine-tuned.
    #[serde(default)]
    pub val_accuracy_finetuned: Option<f64>,
    #[serde(skip)]
    pub weights: SubnetWeights,
}

/// The result of a search at one latency target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetResult {
    pub latency_seconds: f64,
    pub best: Option<Candidate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NasOutcome {
    pub data: DataKind,
    pub space: SearchSpace,
    pub train: TrainSettings,
    /// Supernet steps trained in all, over every process of a resumed run.
    pub steps_run: u64,
    /// Of those, the steps this process ran (the rest came from the checkpoint).
    pub steps_this_process: u64,
    /// Supernet training wall time over every process of a resumed run (each process's time
    /// is kept beside the checkpoint, `supernet-time.json`).
    #[serde(deserialize_with = "null_as_nan")]
    pub train_seconds: f64,
    /// Mean wall time of a sandwich step (all its subnets, forward and backward).
    #[serde(deserialize_with = "null_as_nan")]
    pub step_seconds: f64,
    pub search_seconds: f64,
    /// Wall time of fine-tuning the front's members (0 without).
    #[serde(default)]
    pub finetune_seconds: f64,
    /// Fine-tuning's learning rate as a fraction of the supernet's.
    #[serde(default = "finetune_lr_fraction_before_the_option")]
    pub finetune_lr_fraction: f64,
    /// Non-zero when this front is not the supernet's but its members retrained alone from
    /// scratch (`retrain`), each for these steps: the accuracies are the retrained networks',
    /// `test_accuracy_shared_weights` the search's figure and `val_accuracy` the one that chose
    /// the member.
    #[serde(default)]
    pub front_retrained_steps: u64,
    pub total_seconds: f64,
    /// Process CPU time over wall time for the whole run (≈ cores kept busy).
    #[serde(deserialize_with = "null_as_nan")]
    pub cores_used: f64,
    pub cores_available: usize,
    pub evaluations: usize,
    /// Test frames the front's accuracies were measured on.
    pub test_items: usize,
    pub targets: Vec<TargetResult>,
    pub evaluated: Vec<Candidate>,
    pub front: Vec<FrontMember>,
    pub input_mean: f32,
    pub input_std: f32,
}

/// JSON has no NaN: serde_json writes it as `null`; read `null` back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn cpu_seconds() -> Option<f64> {
    // utime and stime (fields 14 and 15) in clock ticks of 1/100 s on Linux.
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let u: f64 = f.get(11)?.parse().ok()?;
    let k: f64 = f.get(12)?.parse().ok()?;
    Some((u + k) / 100.0)
}

const CKPT_MAGIC: &[u8; 8] = b"SNNASCK1";

fn config_key(space: &SearchSpace, t: &TrainSettings, kind: DataKind) -> u64 {
    hash_text(&format!("{space:?}{t:?}{kind:?}"))
}

/// FNV-1a of `text`: a stable key for checkpoints (not for security).
fn hash_text(text: &str) -> u64 {
    fnv1a(FNV_OFFSET, text.as_bytes())
}

/// FNV-1a's starting state.
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// FNV-1a: `h` continued over `bytes` (start from [`FNV_OFFSET`]).
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    h
}

/// Training wall time up to a checkpoint's step, kept beside it so that a resumed run reports
/// its whole training time, not only the last process's.
#[derive(Serialize, Deserialize)]
struct TimeLedger {
    step: u64,
    seconds: f64,
}

fn read_time_ledger(path: &Path) -> Option<TimeLedger> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Best effort: a missing ledger costs only the report's training time (shown as unknown).
fn write_time_ledger(path: &Path, step: u64, seconds: f64) {
    if let Ok(text) = serde_json::to_string(&TimeLedger { step, seconds }) {
        let _ = std::fs::write(path, text);
    }
}

fn save_checkpoint(path: &Path, key: u64, step: u64, params: &[Vec<f32>]) -> Result<(), NasError> {
    let err = |e: std::io::Error| NasError::Checkpoint {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut buf = Vec::new();
    buf.extend_from_slice(CKPT_MAGIC);
    buf.extend_from_slice(&key.to_le_bytes());
    buf.extend_from_slice(&step.to_le_bytes());
    buf.extend_from_slice(&(params.len() as u64).to_le_bytes());
    for p in params {
        buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
        for v in p {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &buf).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Whether `path` holds a checkpoint of another configuration (space, training or data).
fn checkpoint_of_another_configuration(path: &Path, key: u64) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    b.get(..8) == Some(CKPT_MAGIC) && b.get(8..16) != Some(&key.to_le_bytes()[..])
}

/// A checkpoint's step and parameters, if it exists and belongs to this configuration.
fn load_checkpoint(path: &Path, key: u64) -> Option<(u64, Vec<Vec<f32>>)> {
    let b = std::fs::read(path).ok()?;
    let u64_at =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    if b.get(..8)? != CKPT_MAGIC || u64_at(8)? != key {
        return None;
    }
    let step = u64_at(16)?;
    let n = u64_at(24)? as usize;
    let mut at = 32;
    let mut params = Vec::with_capacity(n.min(10_000));
    for _ in 0..n {
        let len = u64_at(at)? as usize;
        at += 8;
        let bytes = b.get(at..at.checked_add(len.checked_mul(4)?)?)?;
        params.push(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
        at += len * 4;
    }
    Some((step, params))
}

const EVAL_LOG: &str = "search-evaluated.csv";
const EVAL_LOG_TAG: &str = "# splitnets-nas evaluations; resumable while this matches: config ";

/// What a subnet's validation accuracy depends on: the training, the calibration and the
/// validation items (not the hardware profile, which only prices it).
fn evaluation_key(train_key: u64, cfg: &NasConfig) -> String {
    format!(
        "{train_key:016x} val {} calib {} batch {}",
        cfg.val_items, cfg.calibration_batches, cfg.eval_batch
    )
}

/// The accuracies logged by an earlier run with the same evaluation key, and the lines that
/// held them (empty otherwise).
fn read_evaluation_log(path: &Path, key: &str) -> (HashMap<Arch, f64>, Vec<String>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Default::default();
    };
    let mut lines = text.lines();
    if lines.next().and_then(|l| l.strip_prefix(EVAL_LOG_TAG)) != Some(key) {
        return Default::default();
    }
    lines
        .skip(1) // the column header
        .filter_map(|l| {
            // evaluation,"arch",val_accuracy,predicted_ms
            let mut q = l.split('"');
            let arch = q.nth(1)?.parse::<Arch>().ok()?;
            let acc = q.next()?.split(',').nth(1)?.parse::<f64>().ok()?;
            Some(((arch, acc), l.to_string()))
        })
        .unzip()
}

/// `cfg.calibration_batches` BatchNorm calibration batches from a stream of their own, seeded
/// apart from training's (whose seed depends on the step a run resumed at), so that a run
/// resumed or rerun from its final checkpoint measures exactly what the first run measured.
pub(crate) fn calibration_batches(
    train: &std::sync::Arc<data::TrainSource>,
    cfg: &NasConfig,
    salt: u64,
) -> Result<Vec<data::Batch>, NasError> {
    let stream = BatchStream::spawn(train.clone(), cfg.train.batch, 1.0, cfg.train.seed ^ salt);
    (0..cfg.calibration_batches)
        .map(|_| stream.next().ok_or(NasError::Producer))
        .collect()
}

/// Keeps at most `max` members: each target's best first, then members evenly spaced (by
/// position along the latency-sorted front), the result sorted by latency again.
fn thin_front(front: Vec<Candidate>, targets: &[TargetResult], max: usize) -> Vec<Candidate> {
    if front.len() <= max {
        return front;
    }
    let mut keep = vec![false; front.len()];
    let mut kept = 0;
    for t in targets.iter().filter_map(|t| t.best.as_ref()) {
        if let Some(i) = front.iter().position(|c| c.arch == t.arch)
            && !keep[i]
            && kept < max
        {
            keep[i] = true;
            kept += 1;
        }
    }
    let spare = max - kept;
    for j in 0..spare {
        // Positions 0, …, len-1 spread over `spare` slots; a taken one moves to the next free.
        let mut i = if spare == 1 {
            0
        } else {
            j * (front.len() - 1) / (spare - 1)
        };
        while i < front.len() && keep[i] {
            i += 1;
        }
        if i == front.len() {
            // Past the end: the nearest free one below instead.
            i = (0..front.len())
                .rev()
                .find(|&k| !keep[k])
                .unwrap_or(front.len());
        }
        if i < front.len() {
            keep[i] = true;
        }
    }
    front
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

/// What fine-tuning trains: the (thinned) front, and each target's best `extra` feasible
/// candidates by shared-weight validation accuracy (0: the front alone); sorted by latency.
fn finetune_pool(
    front: &[Candidate],
    feasible: &[Candidate],
    targets: &[TargetResult],
    extra: usize,
) -> Vec<Candidate> {
    let mut pool: Vec<Candidate> = front.to_vec();
    for t in targets {
        let mut under: Vec<&Candidate> = feasible
            .iter()
            .filter(|c| c.cost.end_to_end_seconds <= t.latency_seconds)
            .collect();
        under.sort_by(|a, b| b.val_accuracy.total_cmp(&a.val_accuracy));
        for c in under.into_iter().take(extra) {
            if !pool.iter().any(|p| p.arch == c.arch) {
                pool.push(c.clone());
            }
        }
    }
    pool.sort_by(|a, b| {
        a.cost
            .end_to_end_seconds
            .total_cmp(&b.cost.end_to_end_seconds)
    });
    pool
}

/// Trains the supernet, searches, and measures the front. See the crate documentation.
pub fn run_nas(
    cfg: &NasConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<NasOutcome, NasError> {
    let progress = std::cell::RefCell::new(progress);
    let progress = |p: Progress| (progress.borrow_mut())(p);
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    cfg.profile
        .validate()
        .map_err(|e| NasError::Config(e.to_string()))?;
    if !(cfg.finetune_lr_fraction > 0.0 && cfg.finetune_lr_fraction <= 1.0) {
        return Err(NasError::Config(format!(
            "fine-tuning learning-rate fraction {} is outside (0, 1]",
            cfg.finetune_lr_fraction
        )));
    }
    let data = data::load(&cfg.data)?;
    progress(Progress::Loaded {
        train_items: data.train.len(),
        val_items: data.val.len(),
        test_items: data.test.len(),
        seconds: t0.elapsed().as_secs_f64(),
    });
    let mut space = cfg
        .space
        .clone()
        .unwrap_or_else(|| SearchSpace::standard(data.side, data.views, data.classes));
    if let Some(bits) = &cfg.restrict.bits {
        space.bits.clone_from(bits);
    }
    if let Some(fusions) = &cfg.restrict.fusions {
        space.fusions.clone_from(fusions);
    }
    space.validate().map_err(NasError::Config)?;
    if space.input_size != data.side || space.views != data.views || space.classes != data.classes {
        return Err(NasError::Config(format!(
            "space is for {}px × {} views × {} classes, data {}px × {} × {}",
            space.input_size, space.views, space.classes, data.side, data.views, data.classes
        )));
    }
    // The profile's sensor count is the rig's camera count.
    let mut profile = cfg.profile.clone();
    profile.sensors = data.views as u32;

    // --- Supernet training (resumable).
    let base = Device::flex();
    base.seed(cfg.train.seed);
    let device = base.clone().autodiff();
    let key = config_key(&space, &cfg.train, data.kind);
    let ckpt = cfg.out_dir.as_ref().map(|d| d.join("supernet.ckpt"));
    // Hours of training are not overwritten by a run of another configuration.
    if let Some(p) = ckpt.as_deref()
        && checkpoint_of_another_configuration(p, key)
    {
        return Err(NasError::Checkpoint {
            path: p.display().to_string(),
            reason: "written by a run of another configuration (search space, data set, or \
                     training settings: steps, batch, seed, recipe, and the thread count, which \
                     is the machine's core count); use another --out directory, or delete it \
                     to start over"
                .into(),
        });
    }
    let mut start = 0;
    let mut net = Supernet::new(&space, cfg.train.init, cfg.train.seed, &device);
    if let Some((step, params)) = ckpt.as_deref().and_then(|p| load_checkpoint(p, key)) {
        net = Supernet::from_parameters(&space, params, &device).map_err(|reason| {
            NasError::Checkpoint {
                path: ckpt
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                reason,
            }
        })?;
        start = step;
        progress(Progress::Resumed { step });
    }
    let time_ledger = cfg.out_dir.as_ref().map(|d| d.join("supernet-time.json"));
    // Training time spent before the checkpoint, by the processes that wrote it.
    let earlier_seconds = match (start, time_ledger.as_deref()) {
        (0, _) | (_, None) => 0.0,
        (s, Some(p)) => read_time_ledger(p)
            .filter(|l| l.step == s)
            .map_or(f64::NAN, |l| l.seconds),
    };
    let stream = BatchStream::spawn(
        data.train.clone(),
        cfg.train.batch,
        cfg.train.view_keep_prob,
        cfg.train.seed ^ start.wrapping_mul(0x9E37_79B9),
    );
    let t_train = Instant::now();
    let mut ckpt_err = None;
    let mut steps_run = 0;
    let mut save = |step: u64, n: &Supernet| {
        if let Some(p) = ckpt.as_deref()
            && let Err(e) = save_checkpoint(p, key, step, &n.parameters())
        {
            ckpt_err.get_or_insert(e);
        }
        if let Some(p) = time_ledger.as_deref() {
            write_time_ledger(p, step, earlier_seconds + t_train.elapsed().as_secs_f64());
        }
    };
    let net = train_supernet(
        net,
        &space,
        &cfg.train,
        &stream,
        &device,
        start,
        cfg.checkpoint_every,
        &mut save,
        &mut |r| {
            steps_run += 1;
            progress(Progress::Step(r));
        },
    );
    if let Some(e) = ckpt_err {
        return Err(e);
    }
    if start + steps_run < cfg.train.steps {
        return Err(NasError::Producer);
    }
    let train_seconds_here = t_train.elapsed().as_secs_f64();
    let train_seconds = earlier_seconds + train_seconds_here;
    if let Some(p) = ckpt.as_deref() {
        save_checkpoint(p, key, cfg.train.steps, &net.parameters())?;
    }
    if let Some(p) = time_ledger.as_deref() {
        write_time_ledger(p, cfg.train.steps, train_seconds);
    }
    // Fine-tuning starts every front member from these weights, drawing batches the supernet
    // has not trained on from the rest of its stream.
    let finetune_from = (cfg.finetune_steps > 0).then(|| (net.parameters(), stream));
    let net = net.valid();

    // --- Search on the validation split.
    let t_search = Instant::now();
    let calib = calibration_batches(&data.train, cfg, 0xCA1B_0001)?;
    let mut val = data.val.clone();
    let nv = cfg.val_items.min(val.len());
    val.frames.truncate(nv * val.views * val.side * val.side);
    val.labels.truncate(nv);
    let all_views = vec![true; space.views];
    // A killed search resumes: every evaluation is appended to a log, and a rerun with the same
    // training, calibration and validation reads the accuracies back instead of measuring them
    // again (the evolution is seeded, so it retraces its steps and carries on where it stopped).
    let eval_key = evaluation_key(key, cfg);
    let log_path = cfg.out_dir.as_ref().map(|d| d.join(EVAL_LOG));
    let (logged, logged_lines) = log_path
        .as_deref()
        .map(|p| read_evaluation_log(p, &eval_key))
        .unwrap_or_default();
    if !logged.is_empty() {
        progress(Progress::EvaluationsResumed {
            count: logged.len(),
        });
    }
    let mut log = match log_path.as_deref() {
        Some(p) => {
            use std::io::Write as _;
            let io = |e: std::io::Error| NasError::Checkpoint {
                path: p.display().to_string(),
                reason: e.to_string(),
            };
            // Rewritten from what was read back (a torn last line from a kill is dropped).
            let mut f = std::io::BufWriter::new(std::fs::File::create(p).map_err(io)?);
            writeln!(f, "{EVAL_LOG_TAG}{eval_key}").map_err(io)?;
            writeln!(f, "evaluation,arch,val_accuracy,predicted_end_to_end_ms").map_err(io)?;
            for l in &logged_lines {
                writeln!(f, "{l}").map_err(io)?;
            }
            f.flush().map_err(io)?;
            Some(f)
        }
        None => None,
    };
    let mut cache: HashMap<Arch, f64> = HashMap::new();
    let mut evaluated: Vec<Candidate> = Vec::new();
    let mut cost_of = |a: &Arch| predict(&space, a, &profile, cfg.target_fps);
    let mut evaluate = |a: &Arch| -> f64 {
        if let Some(&acc) = cache.get(a) {
            return acc;
        }
        let c = predict(&space, a, &profile, cfg.target_fps);
        let acc = match logged.get(a) {
            Some(&acc) => acc,
            None => {
                let stats = calibrate(&net, &space, a, &calib, &base);
                let acc = accuracy(
                    &net,
                    &space,
                    a,
                    &stats,
                    &val,
                    &all_views,
                    cfg.eval_batch,
                    &base,
                );
                if let Some(f) = log.as_mut() {
                    use std::io::Write as _;
                    // A failed log write loses only resumability, never the run.
                    let _ = writeln!(
                        f,
                        "{},\"{}\",{acc:.4},{:.4}",
                        evaluated.len() + 1,
                        a.short(),
                        c.end_to_end_seconds * 1e3
                    )
                    .and_then(|()| f.flush());
                }
                acc
            }
        };
        cache.insert(a.clone(), acc);
        evaluated.push(Candidate {
            arch: a.clone(),
            cost: c,
            val_accuracy: acc,
        });
        progress(Progress::Evaluated {
            evaluations: evaluated.len(),
            arch: a.short(),
            val_accuracy: acc,
            end_to_end_seconds: c.end_to_end_seconds,
        });
        acc
    };
    // Latency range: the cheapest and dearest corners of the space.
    let mut lo = f64::INFINITY;
    let mut hi: f64 = 0.0;
    for split in 1..=space.split_positions() {
        lo = lo.min(cost_of(&Arch::smallest(&space, split)).end_to_end_seconds);
        hi = hi.max(cost_of(&Arch::largest(&space, split)).end_to_end_seconds);
    }
    let mut rng = Rng::new(cfg.train.seed ^ 0xE7_0001);
    let mut targets = Vec::new();
    for (i, f) in cfg.latency_fractions.iter().enumerate() {
        let latency = lo * (hi / lo).powf(f.clamp(0.0, 1.0));
        let limits = Constraints {
            latency_seconds: latency,
            target_fps: cfg.target_fps,
        };
        let best = evolve(
            &space,
            &cfg.evo,
            &limits,
            &mut rng,
            &mut cost_of,
            &mut evaluate,
        );
        targets.push(TargetResult {
            latency_seconds: latency,
            best,
        });
        progress(Progress::TargetDone {
            index: i,
            targets: cfg.latency_fractions.len(),
            latency_seconds: latency,
        });
    }
    let search_seconds = t_search.elapsed().as_secs_f64();
    let evaluations = evaluated.len();
    let feasible: Vec<Candidate> = evaluated
        .iter()
        .filter(|c| {
            c.cost.satisfies(&Constraints {
                latency_seconds: f64::INFINITY,
                target_fps: cfg.target_fps,
            })
        })
        .cloned()
        .collect();
    let mut front = pareto_front(&feasible);
    if let Some(max) = cfg.front_max
        && front.len() > max
    {
        let n = front.len();
        front = thin_front(front, &targets, max);
        progress(Progress::FrontThinned {
            front: n,
            kept: front.len(),
        });
    }

    // --- Fine-tuning (optional), then the test split for the final front only.
    let finetune = TrainSettings {
        steps: cfg.finetune_steps,
        learning_rate: cfg.train.learning_rate * cfg.finetune_lr_fraction,
        ..cfg.train.clone()
    };
    let mut finetune_seconds = 0.0;
    // All views, BatchNorm recalibrated for the subnet first.
    let calibrated_accuracy = |net: &_, arch: &Arch, split: &data::ViewSet| {
        let stats = calibrate(net, &space, arch, &calib, &base);
        accuracy(
            net,
            &space,
            arch,
            &stats,
            split,
            &all_views,
            cfg.eval_batch,
            &base,
        )
    };
    // Fine-tuned weights by architecture, with their validation accuracy.
    let mut tuned: HashMap<Arch, (_, f64)> = HashMap::new();
    if let Some((params, stream)) = &finetune_from {
        let pool = finetune_pool(&front, &feasible, &targets, cfg.finetune_extra_per_target);
        let of = pool.len();
        for (i, c) in pool.iter().enumerate() {
            let t = Instant::now();
            let start = Supernet::from_parameters(&space, params.clone(), &device)
                .map_err(NasError::Config)?;
            let trained = train_fixed(
                start,
                &space,
                &finetune,
                &c.arch,
                space::Form::Split,
                stream,
                &device,
                0,
                0,
                &mut |_, _| {},
                &mut |report| {
                    progress(Progress::FineTuneStep {
                        member: i,
                        of,
                        report,
                    });
                },
            )
            .valid();
            finetune_seconds += t.elapsed().as_secs_f64();
            let val_acc = calibrated_accuracy(&trained, &c.arch, &val);
            tuned.insert(c.arch.clone(), (trained, val_acc));
        }
        // The front again, on validation accuracy after fine-tuning; each target's best
        // re-chosen the same way before thinning.
        let redrawn: Vec<Candidate> = pool
            .iter()
            .map(|c| Candidate {
                val_accuracy: tuned[&c.arch].1,
                ..c.clone()
            })
            .collect();
        let tuned_targets: Vec<TargetResult> = targets
            .iter()
            .map(|t| TargetResult {
                latency_seconds: t.latency_seconds,
                best: redrawn
                    .iter()
                    .filter(|c| c.cost.end_to_end_seconds <= t.latency_seconds)
                    .max_by(|a, b| a.val_accuracy.total_cmp(&b.val_accuracy))
                    .cloned(),
            })
            .collect();
        let shared: HashMap<&Arch, f64> = pool.iter().map(|c| (&c.arch, c.val_accuracy)).collect();
        front = pareto_front(&redrawn);
        if let Some(max) = cfg.front_max {
            front = thin_front(front, &tuned_targets, max);
        }
        // Candidates keep their shared-weight validation accuracy; the tuned one is reported.
        for c in &mut front {
            c.val_accuracy = shared[&c.arch];
        }
    }
    let mut members = Vec::with_capacity(front.len());
    for (i, c) in front.iter().enumerate() {
        progress(Progress::Testing {
            index: i,
            of: front.len(),
        });
        let (member_net, shared_weights_accuracy, val_accuracy_finetuned) = match tuned.get(&c.arch)
        {
            Some((trained, val_acc)) => {
                let shared = calibrated_accuracy(&net, &c.arch, &data.test);
                (trained, Some(shared), Some(*val_acc))
            }
            None => (&net, None, None),
        };
        let stats = calibrate(member_net, &space, &c.arch, &calib, &base);
        let (test_accuracy, one, missing) = baseline::test_accuracies(
            member_net,
            &space,
            &c.arch,
            space::Form::Split,
            &stats,
            &data.test,
            cfg.eval_batch,
            &base,
        );
        members.push(FrontMember {
            arch: c.arch.clone(),
            cost: c.cost,
            val_accuracy: c.val_accuracy,
            test_accuracy,
            test_accuracy_one_view: one,
            test_accuracy_one_missing: missing,
            finetune_steps: cfg.finetune_steps,
            test_accuracy_shared_weights: shared_weights_accuracy,
            val_accuracy_finetuned,
            weights: member_net.export(&space, &c.arch, &stats),
        });
    }
    drop(finetune_from);
    let total_seconds = t0.elapsed().as_secs_f64();
    let cores_used = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if total_seconds > 0.0 => (b - a) / total_seconds,
        _ => f64::NAN,
    };
    Ok(NasOutcome {
        data: data.kind,
        space,
        train: cfg.train.clone(),
        steps_run: start + steps_run,
        steps_this_process: steps_run,
        train_seconds,
        step_seconds: if steps_run > 0 {
            train_seconds_here / steps_run as f64
        } else {
            train_seconds / cfg.train.steps.max(1) as f64
        },
        search_seconds,
        finetune_seconds,
        finetune_lr_fraction: cfg.finetune_lr_fraction,
        front_retrained_steps: 0,
        total_seconds,
        cores_used,
        cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
        evaluations,
        test_items: data.test.len(),
        targets,
        evaluated,
        front: members,
        input_mean: data::MEAN,
        input_std: data::STD,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::PredictedCost;

    fn cand(space: &SearchSpace, split: usize, ms: f64, acc: f64) -> Candidate {
        let mut arch = Arch::smallest(space, split);
        arch.stem_width = space.stem_widths[(ms as usize) % space.stem_widths.len()];
        arch.c_red = space.reduce_channels[(ms as usize / 3) % space.reduce_channels.len()];
        Candidate {
            arch,
            cost: PredictedCost {
                end_to_end_seconds: ms * 1e-3,
                ..PredictedCost::default()
            },
            val_accuracy: acc,
        }
    }

    #[test]
    fn a_thinned_front_keeps_every_targets_best_and_spans_the_range() {
        let space = SearchSpace::standard(28, 4, 10);
        let front: Vec<Candidate> = (0..9)
            .map(|i| cand(&space, 1 + i % 3, i as f64, 0.5 + 0.01 * i as f64))
            .collect();
        let targets = vec![TargetResult {
            latency_seconds: 4.5e-3,
            best: Some(front[4].clone()),
        }];
        let thin = thin_front(front.clone(), &targets, 4);
        assert_eq!(thin.len(), 4);
        // The dearest taken by a target: the even spread still fills every slot.
        let last = vec![TargetResult {
            latency_seconds: 9e-3,
            best: Some(front[8].clone()),
        }];
        assert_eq!(thin_front(front.clone(), &last, 4).len(), 4);
        assert!(thin.contains(&front[4]), "the target's best is kept");
        assert_eq!(thin.first(), front.first(), "the cheapest is kept");
        assert!(
            thin.windows(2)
                .all(|w| w[0].cost.end_to_end_seconds < w[1].cost.end_to_end_seconds)
        );
        assert_eq!(
            thin_front(front.clone(), &targets, 20),
            front,
            "a short front is kept whole"
        );
    }

    #[test]
    fn the_finetuning_pool_adds_each_targets_next_best_candidates_once() {
        let space = SearchSpace::standard(28, 4, 10);
        // Distinct architectures at 1..=9 ms; accuracy not monotone in latency.
        let all: Vec<Candidate> = [0.30, 0.50, 0.40, 0.45, 0.70, 0.60, 0.65, 0.80, 0.75]
            .iter()
            .enumerate()
            .map(|(i, &acc)| cand(&space, 1 + i % 3, (i + 1) as f64, acc))
            .collect();
        let front = pareto_front(&all);
        let targets = vec![
            TargetResult {
                latency_seconds: 4.5e-3,
                best: Some(all[1].clone()),
            },
            TargetResult {
                latency_seconds: 9.5e-3,
                best: Some(all[7].clone()),
            },
        ];
        let pool = finetune_pool(&front, &all, &targets, 2);
        // Under 4.5 ms: the best two by accuracy are 2 ms (0.50) and 4 ms (0.45); the latter
        // is dominated (by 2 ms), so only the pool gives it its chance after fine-tuning.
        assert!(pool.iter().any(|c| c.arch == all[3].arch), "{pool:?}");
        // Under 9.5 ms: 8 ms (0.80, on the front) and 9 ms (0.75).
        assert!(pool.iter().any(|c| c.arch == all[8].arch));
        assert!(
            !pool.iter().any(|c| c.arch == all[2].arch),
            "not among any target's best two"
        );
        for f in &front {
            assert!(pool.contains(f), "the whole front is fine-tuned");
        }
        let mut archs: Vec<_> = pool.iter().map(|c| c.arch.short()).collect();
        archs.dedup();
        assert_eq!(archs.len(), pool.len(), "each candidate once");
        assert!(
            pool.windows(2)
                .all(|w| w[0].cost.end_to_end_seconds <= w[1].cost.end_to_end_seconds)
        );
        assert_eq!(finetune_pool(&front, &all, &targets, 0).len(), front.len());
    }

    #[test]
    fn the_evaluation_log_is_read_back_only_under_its_own_key() {
        let dir = std::env::temp_dir().join(format!("nas-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(EVAL_LOG);
        let a = "s8|d1w16k3e2|d1w24k3e2|SPLIT c2 b2 max|d1w40k3e2";
        std::fs::write(
            &p,
            format!(
                "{EVAL_LOG_TAG}k1\nevaluation,arch,val_accuracy,predicted_end_to_end_ms\n1,\"{a}\",0.7875,0.3680\n2,\"s8|torn"
            ),
        )
        .unwrap();
        let (map, lines) = read_evaluation_log(&p, "k1");
        assert_eq!(map.len(), 1, "the torn last line is dropped");
        assert_eq!(map[&a.parse::<Arch>().unwrap()], 0.7875);
        assert_eq!(lines.len(), 1);
        assert!(
            read_evaluation_log(&p, "k2").0.is_empty(),
            "another configuration's log is ignored"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
