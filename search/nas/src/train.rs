//! Supernet training (sandwich rule, in-place distillation, split-aware sampling) and subnet
//! evaluation (BatchNorm recalibration, accuracy with any subset of views).

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use serde::{Deserialize, Serialize};

use crate::Rng;
use crate::data::{Batch, BatchStream, ViewSet};
use crate::space::{Arch, Form, SearchSpace};
use crate::supernet::{BnMode, BnStats, Ctx, InitScheme, Supernet, to_vec};

/// How the supernet is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub steps: u64,
    pub batch: usize,
    pub learning_rate: f64,
    /// Random subnets per step besides the largest and the smallest.
    pub random_subnets: usize,
    /// Probability a view is kept in a training item (view dropout; 1 = off).
    pub view_keep_prob: f64,
    /// Smaller subnets learn from the largest's soft outputs (else from the labels).
    pub distill: bool,
    /// With distillation, the share of the smaller subnets' loss taken from the labels (label
    /// smoothing applied) rather than from the largest's soft outputs. Pure in-place
    /// distillation (0) starves the small subnets while the teacher is still near uniform,
    /// which at short budgets is most of the run.
    #[serde(default)]
    pub distill_label_weight: f32,
    /// Split position, C_red and bits sampled with the architecture, and the split positions of
    /// the largest and smallest cycled so every split module is trained (else the largest and
    /// smallest always split after the last stage).
    pub split_aware_sampling: bool,
    pub init: InitScheme,
    pub label_smoothing: f32,
    pub seed: u64,
    /// Threads splitting each batch (data parallel: each runs the whole sandwich on its share,
    /// with its own BatchNorm batch statistics, and the gradients are summed).
    pub threads: usize,
}

/// What the trainer reports after each step.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: u64,
    pub steps: u64,
    pub loss_largest: f64,
    pub seconds: f64,
}

fn tensors(b: &Batch, views: usize, side: usize, device: &Device) -> (Tensor<5>, Tensor<2>) {
    let x = Tensor::<5>::from_data(
        TensorData::new(b.inputs.clone(), [b.batch, views, 1, side, side]),
        device,
    );
    let m = Tensor::<2>::from_data(
        TensorData::new(b.view_mask.clone(), [b.batch, views]),
        device,
    );
    (x, m)
}

/// The subnets of one sandwich step.
pub fn sandwich(space: &SearchSpace, s: &TrainSettings, step: u64, rng: &mut Rng) -> Vec<Arch> {
    // Cycled over every split position, the one after the classifier included.
    let n = space.split_positions() as u64;
    let last = space.stages.len();
    let (big_split, small_split) = if s.split_aware_sampling {
        ((step % n) as usize + 1, ((step + n / 2) % n) as usize + 1)
    } else {
        (last, last)
    };
    let mut v = vec![
        Arch::largest(space, big_split),
        Arch::smallest(space, small_split),
    ];
    for _ in 0..s.random_subnets {
        let mut a = Arch::random(space, rng);
        if !s.split_aware_sampling {
            a.split = last;
            a.c_red = space.max_reduce();
            a.bits = *space.bits.iter().max().unwrap_or(&8);
        }
        v.push(a);
    }
    v
}

/// Trains `net` (on an autodiff device) from `start_step` to `settings.steps`; `checkpoint` is
/// called every `checkpoint_every` steps with the step and the parameters.
#[allow(clippy::too_many_arguments)]
pub fn train_supernet(
    net: Supernet,
    space: &SearchSpace,
    s: &TrainSettings,
    stream: &BatchStream,
    device: &Device,
    start_step: u64,
    checkpoint_every: u64,
    checkpoint: &mut dyn FnMut(u64, &Supernet),
    on_step: &mut dyn FnMut(StepReport),
) -> Supernet {
    train_loop(
        net,
        space,
        s,
        None,
        stream,
        device,
        start_step,
        checkpoint_every,
        checkpoint,
        on_step,
    )
}

/// Trains one fixed network (`arch` laid out as `form`, a baseline) exactly as the supernet is
/// trained (same schedule, batches, label smoothing, threads), without the sandwich: the only
/// subnet is `arch`, learning from the labels.
#[allow(clippy::too_many_arguments)]
pub fn train_fixed(
    net: Supernet,
    space: &SearchSpace,
    s: &TrainSettings,
    arch: &Arch,
    form: Form,
    stream: &BatchStream,
    device: &Device,
    start_step: u64,
    checkpoint_every: u64,
    checkpoint: &mut dyn FnMut(u64, &Supernet),
    on_step: &mut dyn FnMut(StepReport),
) -> Supernet {
    train_loop(
        net,
        space,
        s,
        Some((arch, form)),
        stream,
        device,
        start_step,
        checkpoint_every,
        checkpoint,
        on_step,
    )
}

/// The training loop: the sandwich of subnets per step (`fixed: None`) or one fixed network.
#[allow(clippy::too_many_arguments)]
fn train_loop(
    mut net: Supernet,
    space: &SearchSpace,
    s: &TrainSettings,
    fixed: Option<(&Arch, Form)>,
    stream: &BatchStream,
    device: &Device,
    start_step: u64,
    checkpoint_every: u64,
    checkpoint: &mut dyn FnMut(u64, &Supernet),
    on_step: &mut dyn FnMut(StepReport),
) -> Supernet {
    let mut optim = AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut rng = Rng::new(s.seed ^ 0x5A4D_0001 ^ start_step.wrapping_mul(0x9E37));
    let started = Instant::now();
    let warmup = (s.steps / 20).max(1);
    for step in start_step + 1..=s.steps {
        let Some(batch) = stream.next() else { break };
        let (archs, form) = match fixed {
            None => (sandwich(space, s, step, &mut rng), Form::Split),
            Some((a, form)) => (vec![a.clone()], form),
        };
        let parts = split_batch(&batch, space.views, s.threads.clamp(1, batch.batch.max(1)));
        // The first share on this thread with the live parameters; the others on threads of
        // their own, each with a private replica (fresh parameter ids, so no autodiff graph is
        // shared between threads), their gradients added in parameter order.
        let params = if parts.len() > 1 {
            net.parameters()
        } else {
            Vec::new()
        };
        let (mut grads, mut loss_largest, others) = std::thread::scope(|sc| {
            // Collected so every thread starts before this one works and joins.
            #[allow(clippy::needless_collect)]
            let handles: Vec<_> = parts[1..]
                .iter()
                .map(|p| {
                    let (params, archs) = (&params, &archs);
                    sc.spawn(move || {
                        let replica =
                            Supernet::from_parameters(space, params.clone(), device).ok()?;
                        let (g, l) = sandwich_grads(&replica, space, s, archs, form, p, device);
                        let mut out = Vec::new();
                        replica.visit(&mut Extract {
                            from: g,
                            out: &mut out,
                        });
                        Some((out, l))
                    })
                })
                .collect();
            let (g, l) = sandwich_grads(&net, space, s, &archs, form, &parts[0], device);
            let others: Vec<_> = handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .collect();
            (g, l, others)
        });
        let n = 1.0 + others.len() as f64;
        for (g, l) in others {
            loss_largest += l;
            net.visit(&mut AddIn {
                into: &mut grads,
                add: g.into_iter(),
            });
        }
        loss_largest /= n;
        let progress = step as f64 / s.steps as f64;
        let lr = if step <= warmup {
            s.learning_rate * step as f64 / warmup as f64
        } else {
            s.learning_rate * (0.02 + 0.98 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
        };
        net = optim.step(lr, net, grads);
        on_step(StepReport {
            step,
            steps: s.steps,
            loss_largest,
            seconds: started.elapsed().as_secs_f64(),
        });
        if checkpoint_every > 0 && step % checkpoint_every == 0 && step < s.steps {
            checkpoint(step, &net);
        }
    }
    net
}

/// Takes a replica's gradients out as arrays, in parameter order.
struct Extract<'a> {
    from: GradientsParams,
    out: &'a mut Vec<Option<Vec<f32>>>,
}

impl ModuleVisitor for Extract<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.out.push(self.from.remove::<D>(p.id).map(to_vec));
    }
}

/// Adds arrays (in parameter order) to the gradients of the parameters that have one.
struct AddIn<'a> {
    into: &'a mut GradientsParams,
    add: std::vec::IntoIter<Option<Vec<f32>>>,
}

impl ModuleVisitor for AddIn<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(Some(v)) = self.add.next()
            && let Some(a) = self.into.remove::<D>(p.id)
        {
            let b = Tensor::<D>::from_data(TensorData::new(v, a.dims()), &a.device());
            self.into.register(p.id, a + b);
        }
    }
}

/// Splits a batch into `n` nearly equal parts.
fn split_batch(b: &Batch, views: usize, n: usize) -> Vec<Batch> {
    let per_item = b.inputs.len() / b.batch.max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let end = b.batch * (k + 1) / n;
        if end > start {
            out.push(Batch {
                inputs: b.inputs[start * per_item..end * per_item].to_vec(),
                labels: b.labels[start..end].to_vec(),
                view_mask: b.view_mask[start * views..end * views].to_vec(),
                batch: end - start,
            });
        }
        start = end;
    }
    out
}

/// One sandwich on one batch: the summed loss's gradients and the largest subnet's loss.
fn sandwich_grads(
    net: &Supernet,
    space: &SearchSpace,
    s: &TrainSettings,
    archs: &[Arch],
    form: Form,
    batch: &Batch,
    device: &Device,
) -> (GradientsParams, f64) {
    let ce_smooth = CrossEntropyLossConfig::new()
        .with_smoothing(Some(s.label_smoothing))
        .init(device);
    let ce = CrossEntropyLossConfig::new().init(device);
    let (x, m) = tensors(batch, space.views, space.input_size, device);
    let y =
        Tensor::<1, Int>::from_data(TensorData::new(batch.labels.clone(), [batch.batch]), device);
    let mut total: Option<Tensor<1>> = None;
    let mut teacher: Option<Tensor<2>> = None;
    let mut loss_largest = 0.0;
    for (i, arch) in archs.iter().enumerate() {
        let mut ctx = Ctx::new(BnMode::Batch);
        let logits = net.forward_form(space, arch, form, x.clone(), m.clone(), &mut ctx);
        let loss = if i == 0 {
            teacher = Some(softmax(logits.clone().detach(), 1));
            let l = ce_smooth.forward(logits, y.clone());
            loss_largest = f64::from(l.clone().into_scalar::<f32>());
            l
        } else if let (true, Some(t)) = (s.distill, teacher.as_ref()) {
            let a = s.distill_label_weight.clamp(0.0, 1.0);
            let lp = log_softmax(logits.clone(), 1);
            let kd = (t.clone() * lp).sum_dim(1).mean().neg();
            if a > 0.0 {
                kd * (1.0 - a) + ce_smooth.forward(logits, y.clone()) * a
            } else {
                kd
            }
        } else {
            ce.forward(logits, y.clone())
        };
        total = Some(match total {
            Some(t) => t + loss,
            None => loss,
        });
    }
    let grads = match total {
        Some(t) => GradientsParams::from_grads(t.backward(), net),
        None => GradientsParams::new(),
    };
    (grads, loss_largest)
}

/// BatchNorm statistics of `arch`, recalibrated on `batches` (all views present).
pub fn calibrate(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    batches: &[Batch],
    device: &Device,
) -> BnStats {
    calibrate_form(net, space, arch, Form::Split, batches, device)
}

/// [`calibrate`] for `arch` laid out as `form`.
pub fn calibrate_form(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    form: Form,
    batches: &[Batch],
    device: &Device,
) -> BnStats {
    let mut stats = BnStats::default();
    for b in batches {
        let mut full = b.clone();
        full.view_mask.iter_mut().for_each(|m| *m = 1.0);
        let (x, m) = tensors(&full, space.views, space.input_size, device);
        let mut ctx = Ctx::new(BnMode::Record(std::mem::take(&mut stats)));
        let _ = net.forward_form(space, arch, form, x, m, &mut ctx);
        if let BnMode::Record(s) = ctx.mode {
            stats = s;
        }
        stats.batches += 1;
    }
    stats
}

/// Accuracy of `arch` with `stats` on `set`, with only the views whose flag is set present;
/// the items are shared among the machine's cores.
#[allow(clippy::too_many_arguments)]
pub fn accuracy(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    stats: &BnStats,
    set: &ViewSet,
    present: &[bool],
    batch: usize,
    device: &Device,
) -> f64 {
    accuracy_form(
        net,
        space,
        arch,
        Form::Split,
        stats,
        set,
        present,
        batch,
        device,
    )
}

/// [`accuracy`] for `arch` laid out as `form`.
#[allow(clippy::too_many_arguments)]
pub fn accuracy_form(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    form: Form,
    stats: &BnStats,
    set: &ViewSet,
    present: &[bool],
    batch: usize,
    device: &Device,
) -> f64 {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let n = set.len();
    let correct: usize = std::thread::scope(|sc| {
        // Collected so every thread starts before the first join.
        #[allow(clippy::needless_collect)]
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let range = n * k / threads..n * (k + 1) / threads;
                sc.spawn(move || {
                    correct_in(
                        net, space, arch, form, stats, set, present, batch, device, range,
                    )
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).sum()
    });
    correct as f64 / n.max(1) as f64
}

#[allow(clippy::too_many_arguments)]
fn correct_in(
    net: &Supernet,
    space: &SearchSpace,
    arch: &Arch,
    form: Form,
    stats: &BnStats,
    set: &ViewSet,
    present: &[bool],
    batch: usize,
    device: &Device,
    range: std::ops::Range<usize>,
) -> usize {
    let mut correct = 0usize;
    let mut start = range.start;
    while start < range.end {
        let end = (start + batch.max(1)).min(range.end);
        let mut b = set.batch(start..end);
        for (i, m) in b.view_mask.iter_mut().enumerate() {
            *m = f32::from(u8::from(present[i % set.views]));
        }
        let (x, m) = tensors(&b, space.views, space.input_size, device);
        let mut ctx = Ctx::new(BnMode::Use(stats.clone()));
        let logits = net.forward_form(space, arch, form, x, m, &mut ctx);
        let pred = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap_or_default();
        correct += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
        start = end;
    }
    correct
}
