//! The search's baselines (issue 12 item 6), under the same hardware profile and the same
//! training budget as the supernet: the same steps × batch, learning-rate schedule, label
//! smoothing, seed and view dropout, each network trained alone from the same space. They are
//! the placements a designer without SplitNets would choose:
//!
//! - **all on the sensor**: the whole network on each sensor; its logits cross the link as
//!   float32 and the aggregator averages the views' logits (late fusion).
//! - **all on the aggregator, raw frames**: each sensor sends its 8-bit frame; the aggregator
//!   runs the network once per view and fuses the views after the last stage (learned fusion).
//! - **all on the aggregator, JPEG frames**: the same network trained and tested on
//!   JPEG-decoded frames; the link carries the measured mean JPEG size and the encode is priced on
//!   the sensor (`cost_model::split::jpeg_encode_seconds`).
//! - **planner cuts of a fixed backbone**: the raw-frame network cut after each stage, the cut
//!   feature sent at 8 bits through the daemons' codec with no reduce module and no retraining,
//!   which is what `splitnets-search plan` does to an existing network; the planner's choice is
//!   the feasible cut with the lowest predicted latency.
//!
//! Each placement runs the largest network of the space (by multiply-accumulates) that it can
//! run at the target frame rate within the sensor's memory, found on predicted costs alone, so no
//! baseline is handicapped by a size its placement does not need.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cost::{Constraints, JpegLink, PredictedCost, predict_form};
use crate::data::{self, BatchStream, Data, ViewSet};
use crate::space::{Arch, Form, Fusion, SearchSpace};
use crate::supernet::{BnStats, Supernet};
use crate::train::{accuracy_form, calibrate_form, train_fixed};
use crate::{NasConfig, NasError, Rng, load_checkpoint, save_checkpoint};

/// One baseline, measured on the test split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineResult {
    /// Human-readable placement, e.g. "all on the aggregator (raw frames)".
    pub name: String,
    /// Short identifier: `sensor`, `aggregator-raw`, `aggregator-jpeg`, `planner-cut-K`.
    pub id: String,
    pub arch: Arch,
    pub form: Form,
    pub cost: PredictedCost,
    /// Fits the sensor's memory, the link and the frame rate (no latency target).
    pub feasible: bool,
    /// Why not, when not.
    pub why_not: Vec<String>,
    pub test_accuracy: f64,
    pub test_accuracy_one_view: f64,
    pub test_accuracy_one_missing: f64,
    /// The planner's pick among the cuts (feasible, lowest predicted latency).
    pub planner_choice: bool,
    /// The latency the network was sized for (the largest that fits it); `None`: sized for
    /// the frame rate and the sensor's memory alone.
    #[serde(default)]
    pub sized_for_latency_seconds: Option<f64>,
}

/// Every baseline of a data set, and how they were made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineOutcome {
    pub data: data::DataKind,
    pub steps: u64,
    pub batch: usize,
    pub test_items: usize,
    /// Cameras per sample.
    pub views: usize,
    /// `None`: the JPEG baseline was not run.
    pub jpeg_quality: Option<u8>,
    /// Mean JPEG bytes of one view's frame (test split) at `jpeg_quality`.
    pub jpeg_mean_bytes: Option<u64>,
    /// Median JPEG encode time of one frame on the machine that ran this (not the sensor).
    pub jpeg_encode_seconds_here: Option<f64>,
    /// Training wall time per network, by its identifier.
    pub train_seconds: Vec<(String, f64)>,
    /// Networks left out because their training had not finished (`trained_only`).
    #[serde(default)]
    pub not_trained: Vec<String>,
    pub total_seconds: f64,
    pub results: Vec<BaselineResult>,
}

/// What [`run_baselines`] reports as it goes.
#[derive(Debug, Clone)]
pub enum BaselineProgress {
    /// The architecture each placement runs, chosen on predicted costs.
    Chosen {
        placement: &'static str,
        arch: String,
        feasible: bool,
    },
    Step {
        network: String,
        step: u64,
        steps: u64,
        loss: f64,
        seconds: f64,
    },
    Resumed {
        network: String,
        step: u64,
    },
    Measured {
        id: String,
        test_accuracy: f64,
        end_to_end_seconds: f64,
        /// Read back from `baseline-measured.json`: the same weights, form, calibration and
        /// test split were measured by an earlier run.
        reused: bool,
    },
    /// Left out (`trained_only`): its checkpoint is missing or short of the final step.
    NotTrained {
        network: String,
        step: u64,
    },
}

/// Why a cost fails the constraints (empty: it passes).
pub fn why_not(c: &PredictedCost, target_fps: f64) -> Vec<String> {
    let mut v = Vec::new();
    if !c.fits_sensor_memory {
        v.push(format!(
            "sensor memory {:.0} KB > {:.0} KB",
            c.sensor_memory_bytes as f64 / 1e3,
            c.sensor_memory_limit_bytes as f64 / 1e3
        ));
    }
    if c.link_bits_per_second > c.link_bandwidth_bits_per_second {
        v.push(format!(
            "link {:.2} Mbit/s > {:.2} Mbit/s",
            c.link_bits_per_second / 1e6,
            c.link_bandwidth_bits_per_second / 1e6
        ));
    }
    if c.sustained_fps < target_fps {
        v.push(format!(
            "sustains {:.1} fps < {target_fps}",
            c.sustained_fps
        ));
    }
    v
}

/// The largest architecture (most multiply-accumulates) that `form` runs within the constraints,
/// among the largest, the smallest and `draws` random subnets; the smallest if none fits.
fn largest_feasible(
    space: &SearchSpace,
    cost: &dyn Fn(&Arch) -> PredictedCost,
    target_fps: f64,
    latency_seconds: f64,
    draws: usize,
    seed: u64,
) -> (Arch, bool) {
    let last = space.stages.len();
    let fusion = if space.views > 1 {
        Fusion::Learned
    } else {
        Fusion::Max
    };
    let normalise = |mut a: Arch| {
        // Genes a baseline does not have: no split module, fusion fixed by the placement.
        a.split = last;
        a.c_red = space.max_reduce();
        a.bits = 8;
        a.fusion = fusion;
        a
    };
    let mut rng = Rng::new(seed ^ 0xBA5E_0001);
    let mut pool = vec![
        normalise(Arch::largest(space, last)),
        normalise(Arch::smallest(space, last)),
    ];
    pool.extend((0..draws).map(|_| normalise(Arch::random(space, &mut rng))));
    let limits = Constraints {
        latency_seconds,
        target_fps,
    };
    let smallest = pool[1].clone();
    match crate::search::most_compute_within(pool, &limits, &mut |a| cost(a)) {
        Some((a, _)) => (a, true),
        None => (smallest, false),
    }
}

/// Accuracy with all views, each view alone (mean) and the worst camera missing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn test_accuracies(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    form: Form,
    stats: &BnStats,
    test: &ViewSet,
    batch: usize,
    device: &Device,
) -> (f64, f64, f64) {
    let acc = |present: &[bool]| {
        accuracy_form(net, space, arch, form, stats, test, present, batch, device)
    };
    let all = acc(&vec![true; space.views]);
    if space.views == 1 {
        return (all, all, all);
    }
    let mut one = 0.0;
    let mut missing = f64::INFINITY;
    for v in 0..space.views {
        let only: Vec<bool> = (0..space.views).map(|k| k == v).collect();
        let but: Vec<bool> = (0..space.views).map(|k| k != v).collect();
        one += acc(&only);
        missing = missing.min(acc(&but));
    }
    (all, one / space.views as f64, missing)
}

/// One network to train: its identifier, form, architecture and data.
pub(crate) struct Job<'a> {
    pub(crate) id: &'a str,
    pub(crate) arch: &'a Arch,
    pub(crate) form: Form,
    pub(crate) data: &'a Data,
    pub(crate) jpeg: Option<u8>,
    /// Its checkpoint in the output directory is `{ckpt_prefix}-{key}.ckpt`.
    pub(crate) ckpt_prefix: &'static str,
}

/// Trains `job` (resuming from its checkpoint in `out_dir`), returns the network (inference
/// device), its BatchNorm statistics for `form` and the training wall time; `None` when
/// `trained_only` and its training has not finished.
pub(crate) fn train_job(
    cfg: &NasConfig,
    space: &SearchSpace,
    job: &Job<'_>,
    trained_only: bool,
    progress: &mut dyn FnMut(BaselineProgress),
) -> Result<Option<(Supernet, Vec<data::Batch>, f64)>, NasError> {
    let base = Device::flex();
    base.seed(cfg.train.seed);
    let device = base.autodiff();
    let key = crate::config_key(space, &cfg.train, job.data.kind)
        ^ crate::hash_text(&format!("{:?}{:?}{:?}", job.form, job.arch, job.jpeg));
    // Named by what the network is (its key), so that two placements running the same
    // function (one view: late fusion and the aggregator's network) share one training.
    let ckpt: Option<PathBuf> = cfg
        .out_dir
        .as_ref()
        .map(|d| d.join(format!("{}-{key:016x}.ckpt", job.ckpt_prefix)));
    // Checkpoints written before that were named by placement.
    let by_id = cfg
        .out_dir
        .as_ref()
        .map(|d| d.join(format!("baseline-{}.ckpt", job.id)));
    let mut net = Supernet::new(space, cfg.train.init, cfg.train.seed, &device);
    let mut start = 0;
    if let Some((step, params)) = ckpt
        .as_deref()
        .and_then(|p| load_checkpoint(p, key))
        .or_else(|| by_id.as_deref().and_then(|p| load_checkpoint(p, key)))
    {
        net = Supernet::from_parameters(space, params, &device).map_err(|reason| {
            NasError::Checkpoint {
                path: ckpt_name(ckpt.as_deref()),
                reason,
            }
        })?;
        start = step;
        progress(BaselineProgress::Resumed {
            network: job.id.to_string(),
            step,
        });
    }
    if trained_only && start < cfg.train.steps {
        progress(BaselineProgress::NotTrained {
            network: job.id.to_string(),
            step: start,
        });
        return Ok(None);
    }
    let stream = BatchStream::spawn(
        job.data.train.clone(),
        cfg.train.batch,
        cfg.train.view_keep_prob,
        cfg.train.seed ^ start.wrapping_mul(0x9E37_79B9),
    );
    let t = Instant::now();
    let mut ckpt_err = None;
    let mut save = |step: u64, n: &Supernet| {
        if let Some(p) = ckpt.as_deref()
            && let Err(e) = save_checkpoint(p, key, step, &n.parameters())
        {
            ckpt_err.get_or_insert(e);
        }
    };
    let id = job.id;
    let net = train_fixed(
        net,
        space,
        &cfg.train,
        job.arch,
        job.form,
        &stream,
        &device,
        start,
        cfg.checkpoint_every,
        &mut save,
        &mut |r| {
            progress(BaselineProgress::Step {
                network: id.to_string(),
                step: r.step,
                steps: r.steps,
                loss: r.loss_largest,
                seconds: r.seconds,
            });
        },
    );
    if let Some(e) = ckpt_err {
        return Err(e);
    }
    if let Some(p) = ckpt.as_deref() {
        save_checkpoint(p, key, cfg.train.steps, &net.parameters())?;
    }
    drop(stream);
    let calib = crate::calibration_batches(&job.data.train, cfg, 0xCA11_B007)?;
    Ok(Some((net.valid(), calib, t.elapsed().as_secs_f64())))
}

/// Test accuracies (all views, one view, one camera missing) already measured, kept in
/// `baseline-measured.json` in the output directory: an interim comparison and the final one
/// measure the same finished networks, and on 64×64 shapes that is minutes per network. Keyed
/// by everything the figures depend on (weights, space, subnet, form, calibration batches, test
/// split, evaluation batch), so a stale entry is never read; a lost or unreadable file only
/// costs the measurements again.
struct MeasuredCache {
    path: Option<PathBuf>,
    entries: std::cell::RefCell<std::collections::BTreeMap<String, (f64, f64, f64)>>,
}

impl MeasuredCache {
    fn open(out_dir: Option<&Path>) -> Self {
        let path = out_dir.map(|d| d.join("baseline-measured.json"));
        let entries = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path,
            entries: std::cell::RefCell::new(entries),
        }
    }

    fn get(&self, key: &str) -> Option<(f64, f64, f64)> {
        self.entries.borrow().get(key).copied()
    }

    /// Records a measurement and rewrites the file (atomically: a killed run leaves the old
    /// one). A write failure is not an error: the figures are in the outcome anyway.
    fn put(&self, key: String, acc: (f64, f64, f64)) {
        self.entries.borrow_mut().insert(key, acc);
        let Some(p) = &self.path else {
            return;
        };
        let Ok(text) = serde_json::to_vec_pretty(&*self.entries.borrow()) else {
            return;
        };
        let tmp = p.with_extension("json.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
}

/// FNV-1a over everything a baseline's test accuracies depend on.
fn measurement_key(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    form: Form,
    calib: &[data::Batch],
    test: &ViewSet,
    eval_batch: usize,
) -> String {
    struct Fnv(u64);
    impl Fnv {
        fn bytes(&mut self, b: &[u8]) {
            self.0 = crate::fnv1a(self.0, b);
        }
        fn floats(&mut self, v: &[f32]) {
            for x in v {
                self.bytes(&x.to_bits().to_le_bytes());
            }
        }
    }
    let mut h = Fnv(crate::FNV_OFFSET);
    for p in net.parameters() {
        h.floats(&p);
    }
    h.bytes(format!("{space:?}|{arch:?}|{form:?}|{eval_batch}").as_bytes());
    for b in calib {
        h.floats(&b.inputs);
        h.floats(&b.view_mask);
        for l in &b.labels {
            h.bytes(&l.to_le_bytes());
        }
    }
    h.bytes(&[test.side as u8, test.views as u8]);
    h.bytes(&test.frames);
    h.bytes(&test.labels);
    format!("{:016x}", h.0)
}

fn ckpt_name(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string()).unwrap_or_default()
}

/// Trains and measures every baseline for `cfg`'s data set (the JPEG one at `jpeg_quality`,
/// skipped when `None`). With `trained_only`, nothing is trained: the networks whose training
/// finished (final checkpoint in `out_dir`) are measured and the others listed in
/// `not_trained`, for an interim comparison while a long run goes on elsewhere. See the module
/// documentation.
pub fn run_baselines(
    cfg: &NasConfig,
    jpeg_quality: Option<u8>,
    latency_budgets: &[f64],
    trained_only: bool,
    progress: &mut dyn FnMut(BaselineProgress),
) -> Result<BaselineOutcome, NasError> {
    let t0 = Instant::now();
    cfg.profile
        .validate()
        .map_err(|e| NasError::Config(e.to_string()))?;
    if let Some(q) = jpeg_quality
        && !(1..=100).contains(&q)
    {
        return Err(NasError::Config(format!(
            "JPEG quality {q} is outside 1..=100"
        )));
    }
    let raw = data::load(&cfg.data)?;
    let space = cfg
        .space
        .clone()
        .unwrap_or_else(|| SearchSpace::standard(raw.side, raw.views, raw.classes));
    space.validate().map_err(NasError::Config)?;
    let mut profile = cfg.profile.clone();
    profile.sensors = raw.views as u32;
    let fps = cfg.target_fps;
    let cost =
        |a: &Arch, form: Form, j: Option<JpegLink>| predict_form(&space, a, form, &profile, fps, j);
    let whole = Form::Whole { cut_after: None };
    let (sensor_arch, sensor_fits) = largest_feasible(
        &space,
        &|a| cost(a, Form::LateFusion, None),
        fps,
        f64::INFINITY,
        4_000,
        cfg.train.seed,
    );
    progress(BaselineProgress::Chosen {
        placement: "all on the sensor",
        arch: sensor_arch.short_network(space.views),
        feasible: sensor_fits,
    });
    let (agg_arch, agg_fits) = largest_feasible(
        &space,
        &|a| cost(a, whole, None),
        fps,
        f64::INFINITY,
        4_000,
        cfg.train.seed,
    );
    progress(BaselineProgress::Chosen {
        placement: "all on the aggregator",
        arch: agg_arch.short_network(space.views),
        feasible: agg_fits,
    });

    let base = Device::flex();
    let mut results = Vec::new();
    let mut train_seconds = Vec::new();
    let measured = MeasuredCache::open(cfg.out_dir.as_deref());
    let measure = |net: &Supernet,
                   calib: &[data::Batch],
                   test: &ViewSet,
                   arch: &Arch,
                   form: Form,
                   j: Option<JpegLink>,
                   id: String,
                   name: String,
                   progress: &mut dyn FnMut(BaselineProgress)| {
        let key = measurement_key(net, &space, arch, form, calib, test, cfg.eval_batch);
        let (reused, (all, one, missing)) = match measured.get(&key) {
            Some(acc) => (true, acc),
            None => {
                let stats = calibrate_form(net, &space, arch, form, calib, &base);
                let acc =
                    test_accuracies(net, &space, arch, form, &stats, test, cfg.eval_batch, &base);
                measured.put(key, acc);
                (false, acc)
            }
        };
        let c = cost(arch, form, j);
        progress(BaselineProgress::Measured {
            id: id.clone(),
            test_accuracy: all,
            end_to_end_seconds: c.end_to_end_seconds,
            reused,
        });
        let why = why_not(&c, fps);
        BaselineResult {
            name,
            id,
            arch: arch.clone(),
            form,
            cost: c,
            feasible: why.is_empty(),
            why_not: why,
            test_accuracy: all,
            test_accuracy_one_view: one,
            test_accuracy_one_missing: missing,
            planner_choice: false,
            sized_for_latency_seconds: None,
        }
    };

    // All on the aggregator, raw frames: also the backbone the planner cuts.
    let mut not_trained = Vec::new();
    let agg = train_job(
        cfg,
        &space,
        &Job {
            id: "aggregator-raw",
            arch: &agg_arch,
            form: whole,
            data: &raw,
            jpeg: None,
            ckpt_prefix: "baseline",
        },
        trained_only,
        progress,
    )?;
    if agg.is_none() {
        not_trained.push("aggregator-raw (and the planner's cuts of it)".to_string());
    }
    if let Some((agg_net, agg_calib, secs)) = &agg {
        train_seconds.push(("aggregator-raw".to_string(), *secs));
        results.push(measure(
            agg_net,
            agg_calib,
            &raw.test,
            &agg_arch,
            whole,
            None,
            "aggregator-raw".into(),
            "all on the aggregator (raw 8-bit frames)".into(),
            progress,
        ));
    }
    let mut cuts = Vec::new();
    for k in 1..=space.stages.len() {
        let Some((agg_net, agg_calib, _)) = &agg else {
            break;
        };
        cuts.push(measure(
            agg_net,
            agg_calib,
            &raw.test,
            &agg_arch,
            Form::Whole { cut_after: Some(k) },
            None,
            format!("planner-cut-{k}"),
            format!("planner cut after stage {k} of the raw-frame backbone (8-bit feature, no retraining)"),
            progress,
        ));
    }
    if let Some(best) = cuts.iter_mut().filter(|r| r.feasible).min_by(|a, b| {
        a.cost
            .end_to_end_seconds
            .total_cmp(&b.cost.end_to_end_seconds)
    }) {
        best.planner_choice = true;
    }
    results.extend(cuts);

    // All on the sensor, late fusion of logits. One view with the same architecture is the
    // same network as the aggregator's (no fusion either way): not trained twice.
    if let (1, true, Some((agg_net, agg_calib, _))) = (space.views, sensor_arch == agg_arch, &agg) {
        results.push(measure(
            agg_net,
            agg_calib,
            &raw.test,
            &sensor_arch,
            Form::LateFusion,
            None,
            "sensor".into(),
            "all on the sensor (logits on the link)".into(),
            progress,
        ));
    } else if let Some((net, calib, secs)) = train_job(
        cfg,
        &space,
        &Job {
            id: "sensor",
            arch: &sensor_arch,
            form: Form::LateFusion,
            data: &raw,
            jpeg: None,
            ckpt_prefix: "baseline",
        },
        trained_only,
        progress,
    )? {
        train_seconds.push(("sensor".to_string(), secs));
        results.push(measure(
            &net,
            &calib,
            &raw.test,
            &sensor_arch,
            Form::LateFusion,
            None,
            "sensor".into(),
            if space.views > 1 {
                "all on the sensor (logits on the link, late fusion)".into()
            } else {
                "all on the sensor (logits on the link)".into()
            },
            progress,
        ));
    } else {
        not_trained.push("sensor".to_string());
    }
    drop(agg);

    // Each placement again at every latency budget: the largest network that meets it, so the
    // front meets a baseline sized for each target, not only the largest one.
    for &budget in latency_budgets {
        for (form, id, name) in [
            (Form::LateFusion, "sensor", "all on the sensor"),
            (
                whole,
                "aggregator-raw",
                "all on the aggregator (raw frames)",
            ),
        ] {
            let (arch, fits) = largest_feasible(
                &space,
                &|a| cost(a, form, None),
                fps,
                budget,
                4_000,
                cfg.train.seed,
            );
            if !fits || results.iter().any(|r| r.form == form && r.arch == arch) {
                continue;
            }
            let tag = format!("{id}@{:.3}ms", budget * 1e3);
            progress(BaselineProgress::Chosen {
                placement: id,
                arch: format!(
                    "{} (for {:.3} ms)",
                    arch.short_network(space.views),
                    budget * 1e3
                ),
                feasible: fits,
            });
            // One view: late fusion and the aggregator's network are the same function, so
            // they are trained as one (the checkpoint is named by what is trained).
            let train_form = if space.views == 1 { whole } else { form };
            let Some((net, calib, secs)) = train_job(
                cfg,
                &space,
                &Job {
                    id: &tag,
                    arch: &arch,
                    form: train_form,
                    data: &raw,
                    jpeg: None,
                    ckpt_prefix: "baseline",
                },
                trained_only,
                progress,
            )?
            else {
                not_trained.push(tag);
                continue;
            };
            train_seconds.push((tag.clone(), secs));
            let mut r = measure(
                &net,
                &calib,
                &raw.test,
                &arch,
                form,
                None,
                tag,
                format!("{name}, sized for {:.3} ms", budget * 1e3),
                progress,
            );
            r.sized_for_latency_seconds = Some(budget);
            results.push(r);
        }
    }

    // All on the aggregator, JPEG frames: trained and tested on what the decoder gives back.
    // Last, because it is the slowest placement and competes at no latency target: a run
    // stopped early has already measured the baselines that decide the comparison.
    let mut jpeg_stats = None;
    if let Some(quality) = jpeg_quality {
        let (jpeg, stats) = data::jpeg_degraded(&raw, quality).map_err(NasError::Config)?;
        let jpeg_link = JpegLink {
            mean_bytes: stats.mean_bytes,
        };
        if let Some((net, calib, secs)) = train_job(
            cfg,
            &space,
            &Job {
                id: "aggregator-jpeg",
                arch: &agg_arch,
                form: whole,
                data: &jpeg,
                jpeg: Some(quality),
                ckpt_prefix: "baseline",
            },
            trained_only,
            progress,
        )? {
            train_seconds.push(("aggregator-jpeg".to_string(), secs));
            results.push(measure(
                &net,
                &calib,
                &jpeg.test,
                &agg_arch,
                whole,
                Some(jpeg_link),
                "aggregator-jpeg".into(),
                format!("all on the aggregator (JPEG frames, quality {quality})"),
                progress,
            ));
            jpeg_stats = Some((quality, stats));
        } else {
            not_trained.push("aggregator-jpeg".to_string());
        }
    }

    Ok(BaselineOutcome {
        data: raw.kind,
        steps: cfg.train.steps,
        batch: cfg.train.batch,
        test_items: raw.test.len(),
        views: raw.views,
        jpeg_quality: jpeg_stats.map(|(q, _)| q),
        jpeg_mean_bytes: jpeg_stats.map(|(_, s)| s.mean_bytes),
        jpeg_encode_seconds_here: jpeg_stats.map(|(_, s)| s.median_encode_seconds),
        train_seconds,
        not_trained,
        total_seconds: t0.elapsed().as_secs_f64(),
        results,
    })
}
