//! The weight-sharing supernet, in burn (backend chosen by the device: burn-flex on the CPU).
//!
//! Every tensor has the space's maximal shape; a subnet ([`Arch`]) uses the first output and
//! input channels, the first blocks of each stage and the centre `k×k` of each depthwise kernel.
//! BatchNorm is functional: in training it normalises with the batch's statistics; before a
//! subnet is evaluated its own statistics are recalibrated ([`Supernet::calibrate`]) and then
//! used ([`BnMode::Use`]), since running statistics shared across subnets of different widths
//! would match none of them.
//!
//! Split module: `reduce` (1×1 conv with bias, no activation) → per-sample quantization (the
//! codec's: range widened to include 0, zero point) to `bits` with a straight-through estimator (what the sensor's codec does to the feature) →
//! `recover` (1×1 conv with bias) per view → fusion over the views present (mask).
//!
//! **Split-aware initialization.** For every split position the reduce weight's rows are
//! orthonormal (a random orthogonal matrix, Gram–Schmidt) and recover is its transpose, biases
//! zero. Then recover∘reduce is an orthogonal projection onto `c_red` directions, and because
//! subnets slice the *first* rows, the projections for smaller `c_red` are nested in the larger
//! ones: inserting the split module starts as (close to) the identity on the features it keeps
//! instead of a random bottleneck, so the stages after the split see, from the first step, the
//! distribution they would see without a split and the loss does not jump when the split moves.
//! [`InitScheme::Default`] (Kaiming-normal everywhere) is the ablation.
//!
//! **Split after the classifier** ([`Arch::after_classifier`]): the head runs every stage,
//! pooling and the classifier, and quantizes the logits; learned fusion appends the view's score
//! (`score_w · pooled + score_b` with the last split module's score layer, which after the last
//! stage scores the pooled *recovered* feature; here it scores the pooled stage feature itself).
//! The tail fuses the views' logits: max, mean, or the softmax of the scores over the views
//! present.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::Rng;
use crate::space::{Arch, Form, Fusion, SearchSpace};

const BN_EPS: f32 = 1e-5;

/// How reduce and recover are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// Orthonormal reduce, recover = reduceᵀ (see the module documentation).
    SplitAware,
    /// Kaiming-normal like every other convolution.
    Default,
}

#[derive(Module, Debug)]
pub struct Bn {
    gamma: Param<Tensor<1>>,
    beta: Param<Tensor<1>>,
}

#[derive(Module, Debug)]
pub struct Block {
    expand: Param<Tensor<4>>,
    expand_bn: Bn,
    depthwise: Param<Tensor<4>>,
    depthwise_bn: Bn,
    project: Param<Tensor<4>>,
    project_bn: Bn,
}

#[derive(Module, Debug)]
pub struct SplitModule {
    reduce_w: Param<Tensor<4>>,
    reduce_b: Param<Tensor<1>>,
    recover_w: Param<Tensor<4>>,
    recover_b: Param<Tensor<1>>,
    /// Learned fusion: a score per view from its pooled recovered feature.
    score_w: Param<Tensor<2>>,
    score_b: Param<Tensor<1>>,
}

#[derive(Module, Debug)]
pub struct Supernet {
    stem: Param<Tensor<4>>,
    stem_bn: Bn,
    /// Blocks of all stages, stage by stage, each stage's maximal depth.
    blocks: Vec<Block>,
    /// One split module per split position (after stage 1, 2, ...).
    splits: Vec<SplitModule>,
    classifier_w: Param<Tensor<2>>,
    classifier_b: Param<Tensor<1>>,
}

/// BatchNorm behaviour of one forward pass.
#[derive(Debug)]
pub enum BnMode {
    /// Batch statistics (training).
    Batch,
    /// Batch statistics, and their sums recorded (recalibration).
    Record(BnStats),
    /// Recalibrated statistics.
    Use(BnStats),
}

/// Per-BN-layer mean and variance of one subnet, in forward order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BnStats {
    pub mean: Vec<Vec<f32>>,
    pub var: Vec<Vec<f32>>,
    pub batches: usize,
}

/// State threaded through a forward pass.
#[derive(Debug)]
pub struct Ctx {
    pub mode: BnMode,
    layer: usize,
}

impl Ctx {
    pub fn new(mode: BnMode) -> Self {
        Self { mode, layer: 0 }
    }
}

/// Where the initial values come from: random, or a checkpoint's arrays in parameter order.
struct Source<'a> {
    rng: Rng,
    device: &'a Device,
    loaded: Option<std::vec::IntoIter<Vec<f32>>>,
    error: Option<String>,
}

impl Source<'_> {
    fn take<const D: usize>(
        &mut self,
        dims: [usize; D],
        init: impl FnOnce(&mut Rng) -> Vec<f32>,
    ) -> Param<Tensor<D>> {
        let n: usize = dims.iter().product();
        let data = match self.loaded.as_mut() {
            Some(it) => match it.next() {
                Some(v) if v.len() == n => v,
                other => {
                    self.error.get_or_insert(format!(
                        "checkpoint parameter of {} values where {n} ({dims:?}) expected",
                        other.map_or(0, |v| v.len())
                    ));
                    vec![0.0; n]
                }
            },
            None => init(&mut self.rng),
        };
        Param::from_tensor(Tensor::from_data(TensorData::new(data, dims), self.device))
    }
    fn normal<const D: usize>(&mut self, dims: [usize; D], std: f64) -> Param<Tensor<D>> {
        let n: usize = dims.iter().product();
        self.take(dims, |r| {
            (0..n).map(|_| (r.normal() * std) as f32).collect()
        })
    }
    fn constant<const D: usize>(&mut self, dims: [usize; D], v: f32) -> Param<Tensor<D>> {
        let n: usize = dims.iter().product();
        self.take(dims, |_| vec![v; n])
    }
    fn bn(&mut self, c: usize) -> Bn {
        Bn {
            gamma: self.constant([c], 1.0),
            beta: self.constant([c], 0.0),
        }
    }
}

/// Rows of an `r × c` matrix (r ≤ c) made orthonormal by Gram–Schmidt from Gaussian draws.
fn orthonormal_rows(r: usize, c: usize, rng: &mut Rng) -> Vec<f32> {
    let mut m: Vec<Vec<f64>> = Vec::with_capacity(r);
    while m.len() < r {
        let mut v: Vec<f64> = (0..c).map(|_| rng.normal()).collect();
        for u in &m {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            for (x, y) in v.iter_mut().zip(u) {
                *x -= d * y;
            }
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-6 {
            m.push(v.into_iter().map(|x| x / n).collect());
        }
    }
    m.into_iter().flatten().map(|x| x as f32).collect()
}

/// Input channels of block `b` of stage `s` at the maximal widths.
fn max_in(space: &SearchSpace, s: usize, b: usize) -> usize {
    if b > 0 {
        space.stages[s].max_width()
    } else if s == 0 {
        space.max_stem()
    } else {
        space.stages[s - 1].max_width()
    }
}

fn kaiming(fan_in: usize) -> f64 {
    (2.0 / fan_in.max(1) as f64).sqrt()
}

impl Supernet {
    /// A new supernet for `space` on `device`, initialised from `seed`.
    pub fn new(space: &SearchSpace, init: InitScheme, seed: u64, device: &Device) -> Self {
        Self::build(space, init, seed, None, device).0
    }

    /// A supernet whose parameters are `params` (from [`Supernet::parameters`]).
    pub fn from_parameters(
        space: &SearchSpace,
        params: Vec<Vec<f32>>,
        device: &Device,
    ) -> Result<Self, String> {
        let want = params.len();
        let (net, err) = Self::build(space, InitScheme::Default, 0, Some(params), device);
        if let Some(e) = err {
            return Err(e);
        }
        let got = net.parameters().len();
        if got != want {
            return Err(format!("checkpoint has {want} parameters, the space {got}"));
        }
        Ok(net)
    }

    fn build(
        space: &SearchSpace,
        init: InitScheme,
        seed: u64,
        loaded: Option<Vec<Vec<f32>>>,
        device: &Device,
    ) -> (Self, Option<String>) {
        let mut src = Source {
            rng: Rng::new(seed),
            device,
            loaded: loaded.map(|v| v.into_iter()),
            error: None,
        };
        let stem_c = space.max_stem();
        let stem = src.normal([stem_c, 1, 3, 3], kaiming(9));
        let stem_bn = src.bn(stem_c);
        let mut blocks = Vec::new();
        for (s, st) in space.stages.iter().enumerate() {
            for b in 0..st.max_depth() {
                let cin = max_in(space, s, b);
                let hidden = cin * st.max_expansion();
                let k = st.max_kernel();
                let expand = src.normal([hidden, cin, 1, 1], kaiming(cin));
                let expand_bn = src.bn(hidden);
                let depthwise = src.normal([hidden, 1, k, k], kaiming(9));
                let depthwise_bn = src.bn(hidden);
                let project = src.normal([st.max_width(), hidden, 1, 1], kaiming(hidden));
                let project_bn = src.bn(st.max_width());
                blocks.push(Block {
                    expand,
                    expand_bn,
                    depthwise,
                    depthwise_bn,
                    project,
                    project_bn,
                });
            }
        }
        let cred = space.max_reduce();
        let mut splits = Vec::new();
        for st in &space.stages {
            let c = st.max_width();
            let (rows, t) = match init {
                InitScheme::SplitAware => {
                    // Orthonormal rows need c_red ≤ C; beyond C the extra rows are Gaussian.
                    let r = cred.min(c);
                    let mut rows = orthonormal_rows(r, c, &mut src.rng);
                    let extra = (cred - r) * c;
                    rows.extend((0..extra).map(|_| (src.rng.normal() / (c as f64).sqrt()) as f32));
                    let mut t = vec![0.0f32; c * cred];
                    for i in 0..cred {
                        for j in 0..c {
                            t[j * cred + i] = rows[i * c + j];
                        }
                    }
                    (rows, t)
                }
                InitScheme::Default => {
                    let (s1, s2) = (kaiming(c), kaiming(cred));
                    let rows = (0..cred * c)
                        .map(|_| (src.rng.normal() * s1) as f32)
                        .collect();
                    let t = (0..c * cred)
                        .map(|_| (src.rng.normal() * s2) as f32)
                        .collect();
                    (rows, t)
                }
            };
            // Taken in field order (the order `parameters` lists them).
            let reduce_w = src.take([cred, c, 1, 1], |_| rows);
            let reduce_b = src.constant([cred], 0.0);
            let recover_w = src.take([c, cred, 1, 1], |_| t);
            let recover_b = src.constant([c], 0.0);
            let score_w = src.normal([c, 1], 0.01);
            let score_b = src.constant([1], 0.0);
            splits.push(SplitModule {
                reduce_w,
                reduce_b,
                recover_w,
                recover_b,
                score_w,
                score_b,
            });
        }
        let last = space.stages.last().map_or(1, |s| s.max_width());
        let classifier_w = src.normal([last, space.classes], (1.0 / last as f64).sqrt());
        let classifier_b = src.constant([space.classes], 0.0);
        let err = src.error.take().or_else(|| {
            src.loaded.as_mut().and_then(|it| {
                it.next()
                    .map(|_| "checkpoint has extra parameters".to_string())
            })
        });
        (
            Self {
                stem,
                stem_bn,
                blocks,
                splits,
                classifier_w,
                classifier_b,
            },
            err,
        )
    }

    /// Every parameter as a flat array, in the order [`Supernet::from_parameters`] reads them.
    pub fn parameters(&self) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        let bn = |b: &Bn, out: &mut Vec<Vec<f32>>| {
            out.push(to_vec(b.gamma.val()));
            out.push(to_vec(b.beta.val()));
        };
        out.push(to_vec(self.stem.val()));
        bn(&self.stem_bn, &mut out);
        for b in &self.blocks {
            out.push(to_vec(b.expand.val()));
            bn(&b.expand_bn, &mut out);
            out.push(to_vec(b.depthwise.val()));
            bn(&b.depthwise_bn, &mut out);
            out.push(to_vec(b.project.val()));
            bn(&b.project_bn, &mut out);
        }
        for s in &self.splits {
            out.push(to_vec(s.reduce_w.val()));
            out.push(to_vec(s.reduce_b.val()));
            out.push(to_vec(s.recover_w.val()));
            out.push(to_vec(s.recover_b.val()));
            out.push(to_vec(s.score_w.val()));
            out.push(to_vec(s.score_b.val()));
        }
        out.push(to_vec(self.classifier_w.val()));
        out.push(to_vec(self.classifier_b.val()));
        out
    }

    fn bn(&self, x: Tensor<4>, p: &Bn, c: usize, ctx: &mut Ctx) -> Tensor<4> {
        let gamma = p.gamma.val().narrow(0, 0, c).reshape([1, c, 1, 1]);
        let beta = p.beta.val().narrow(0, 0, c).reshape([1, c, 1, 1]);
        let i = ctx.layer;
        ctx.layer += 1;
        let (mean, var) = if let BnMode::Use(stats) = &ctx.mode {
            let dev = x.device();
            let n = stats.batches.max(1) as f32;
            let avg = |v: Option<&Vec<f32>>, d: f32| -> Vec<f32> {
                v.map_or_else(|| vec![d; c], |v| v.iter().map(|x| x / n).collect())
            };
            let m = avg(stats.mean.get(i), 0.0);
            let v = avg(stats.var.get(i), 1.0);
            (
                Tensor::<1>::from_data(TensorData::new(m, [c]), &dev).reshape([1, c, 1, 1]),
                Tensor::<1>::from_data(TensorData::new(v, [c]), &dev).reshape([1, c, 1, 1]),
            )
        } else {
            let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
            let d = x.clone() - mean.clone();
            let var = (d.clone() * d).mean_dim(0).mean_dim(2).mean_dim(3);
            if let BnMode::Record(stats) = &mut ctx.mode {
                let m = to_vec(mean.clone());
                let v = to_vec(var.clone());
                if stats.mean.len() <= i {
                    stats.mean.push(m);
                    stats.var.push(v);
                } else {
                    for (a, b) in stats.mean[i].iter_mut().zip(m) {
                        *a += b;
                    }
                    for (a, b) in stats.var[i].iter_mut().zip(v) {
                        *a += b;
                    }
                }
            }
            (mean, var)
        };
        (x - mean) / (var + BN_EPS).sqrt() * gamma + beta
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        x: Tensor<4>,
        arch: &Arch,
        s: usize,
        b: usize,
        cin: usize,
        ctx: &mut Ctx,
        offset: usize,
    ) -> Tensor<4> {
        let st = arch.stages[s];
        let p = &self.blocks[offset + b];
        let hidden = cin * st.expansion;
        let stride = if b == 0 { 2 } else { 1 };
        let kmax = p.depthwise.val().dims()[2];
        let o = (kmax - st.kernel) / 2;
        let w = p.expand.val().slice([0..hidden, 0..cin, 0..1, 0..1]);
        let h = conv2d(
            x.clone(),
            w,
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        let h = relu(self.bn(h, &p.expand_bn, hidden, ctx));
        let w = p
            .depthwise
            .val()
            .slice([0..hidden, 0..1, o..o + st.kernel, o..o + st.kernel]);
        let pad = st.kernel / 2;
        let h = conv2d(
            h,
            w,
            None,
            ConvOptions::new([stride, stride], [pad, pad], [1, 1], hidden),
        );
        let h = relu(self.bn(h, &p.depthwise_bn, hidden, ctx));
        let w = p.project.val().slice([0..st.width, 0..hidden, 0..1, 0..1]);
        let h = conv2d(h, w, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
        let h = self.bn(h, &p.project_bn, st.width, ctx);
        if b > 0 && cin == st.width { h + x } else { h }
    }

    fn stage_offset(space: &SearchSpace, s: usize) -> usize {
        space.stages[..s].iter().map(|st| st.max_depth()).sum()
    }

    fn stages(
        &self,
        space: &SearchSpace,
        arch: &Arch,
        range: std::ops::Range<usize>,
        mut x: Tensor<4>,
        mut c: usize,
        ctx: &mut Ctx,
    ) -> (Tensor<4>, usize) {
        for s in range {
            let off = Self::stage_offset(space, s);
            for b in 0..arch.stages[s].depth {
                x = self.block(x, arch, s, b, c, ctx, off);
                c = arch.stages[s].width;
            }
        }
        (x, c)
    }

    /// The stem convolution, BatchNorm and ReLU.
    fn stem_forward(
        &self,
        space: &SearchSpace,
        arch: &Arch,
        x: Tensor<4>,
        ctx: &mut Ctx,
    ) -> Tensor<4> {
        let c0 = arch.stem_width;
        let w = self.stem.val().slice([0..c0, 0..1, 0..3, 0..3]);
        let st = space.stem_stride;
        let x = conv2d(x, w, None, ConvOptions::new([st, st], [1, 1], [1, 1], 1));
        relu(self.bn(x, &self.stem_bn, c0, ctx))
    }

    /// Fuses `[B·V, c, h, w]` per-view features over the views present (`[B, V]` mask) with
    /// `fusion`; learned fusion scores with split module `module`'s score layer.
    fn fuse(&self, r: Tensor<4>, mask: Tensor<2>, fusion: Fusion, module: usize) -> Tensor<4> {
        let [b, v] = mask.dims();
        let [_, c, h, w] = r.dims();
        if v == 1 {
            return r;
        }
        let sp = &self.splits[module];
        let r = r.reshape([b, v, c, h, w]);
        let m = mask.clone().reshape([b, v, 1, 1, 1]);
        match fusion {
            Fusion::Max => (r + (m - 1.0) * 1e4).max_dim(1).reshape([b, c, h, w]),
            Fusion::Mean => {
                let n = mask.sum_dim(1).reshape([b, 1, 1, 1]);
                (r * m).sum_dim(1).reshape([b, c, h, w]) / n
            }
            Fusion::Learned => {
                let pooled = r.clone().mean_dim(4).mean_dim(3).reshape([b * v, c]);
                let sw = sp.score_w.val().slice([0..c, 0..1]);
                let score = (pooled.matmul(sw) + sp.score_b.val().reshape([1, 1])).reshape([b, v]);
                let score = score + (mask - 1.0) * 1e4;
                let a = softmax(score, 1).reshape([b, v, 1, 1, 1]);
                (r * a).sum_dim(1).reshape([b, c, h, w])
            }
        }
    }

    /// Global average pooling and the classifier: `[N, c, h, w]` to `[N, classes]`.
    fn classify(&self, space: &SearchSpace, x: Tensor<4>) -> Tensor<2> {
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        let cw = self.classifier_w.val().slice([0..c, 0..space.classes]);
        pooled.matmul(cw) + self.classifier_b.val().reshape([1, space.classes])
    }

    /// Sensor side: `[N, 1, H, W]` frames to `[N, c_red, h, w]` split features, quantized
    /// (straight-through) to `arch.bits`.
    ///
    /// Split after the classifier: `[N, k, 1, 1]`, the logits (and the learned fusion's score).
    pub fn head(&self, space: &SearchSpace, arch: &Arch, x: Tensor<4>, ctx: &mut Ctx) -> Tensor<4> {
        let x = self.stem_forward(space, arch, x, ctx);
        let last = arch.stages.len();
        let (x, c) = self.stages(
            space,
            arch,
            0..arch.split.min(last),
            x,
            arch.stem_width,
            ctx,
        );
        if arch.after_classifier() {
            let [n, _, _, _] = x.dims();
            let pooled = x.clone().mean_dim(3).mean_dim(2).reshape([n, c]);
            let logits = self.classify(space, x);
            let out = if space.views > 1 && arch.fusion == Fusion::Learned {
                let sp = &self.splits[last - 1];
                let sw = sp.score_w.val().slice([0..c, 0..1]);
                let score = pooled.matmul(sw) + sp.score_b.val().reshape([1, 1]);
                Tensor::cat(vec![logits, score], 1)
            } else {
                logits
            };
            let k = out.dims()[1];
            return fake_quantize(out.reshape([n, k, 1, 1]), arch.bits);
        }
        let sp = &self.splits[arch.split - 1];
        let w = sp.reduce_w.val().slice([0..arch.c_red, 0..c, 0..1, 0..1]);
        let b = sp.reduce_b.val().narrow(0, 0, arch.c_red);
        let f = conv2d(x, w, Some(b), ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
        fake_quantize(f, arch.bits)
    }

    /// Aggregator side: `[B·V, c_red, h, w]` features and a `[B, V]` mask of the views present
    /// to `[B, classes]` logits.
    pub fn tail(
        &self,
        space: &SearchSpace,
        arch: &Arch,
        f: Tensor<4>,
        mask: Tensor<2>,
        ctx: &mut Ctx,
    ) -> Tensor<2> {
        if arch.after_classifier() {
            return fuse_logits(f, mask, arch.fusion, space.classes);
        }
        let c = arch.stages[arch.split - 1].width;
        let sp = &self.splits[arch.split - 1];
        let rw = sp.recover_w.val().slice([0..c, 0..arch.c_red, 0..1, 0..1]);
        let rb = sp.recover_b.val().narrow(0, 0, c);
        let r = conv2d(f, rw, Some(rb), ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
        let x = self.fuse(r, mask, arch.fusion, arch.split - 1);
        let (x, _) = self.stages(space, arch, arch.split..arch.stages.len(), x, c, ctx);
        self.classify(space, x)
    }

    /// The whole subnet: `[B, V, 1, H, W]` frames and a `[B, V]` view mask to logits.
    pub fn forward(
        &self,
        space: &SearchSpace,
        arch: &Arch,
        x: Tensor<5>,
        mask: Tensor<2>,
        ctx: &mut Ctx,
    ) -> Tensor<2> {
        let [b, v, ch, h, w] = x.dims();
        let f = self.head(space, arch, x.reshape([b * v, ch, h, w]), ctx);
        self.tail(space, arch, f, mask, ctx)
    }

    /// `arch` laid out as `form` (the search's split form or a baseline's): `[B, V, 1, H, W]`
    /// frames and a `[B, V]` view mask to logits.
    pub fn forward_form(
        &self,
        space: &SearchSpace,
        arch: &Arch,
        form: Form,
        x: Tensor<5>,
        mask: Tensor<2>,
        ctx: &mut Ctx,
    ) -> Tensor<2> {
        let last = arch.stages.len();
        let cut = match form {
            Form::Split => return self.forward(space, arch, x, mask, ctx),
            Form::LateFusion => None,
            Form::Whole { cut_after } => cut_after.filter(|&k| (1..=last).contains(&k)),
        };
        let [b, v, ch, h, w] = x.dims();
        let mut x = self.stem_forward(space, arch, x.reshape([b * v, ch, h, w]), ctx);
        let mut c = arch.stem_width;
        for s in 0..last {
            (x, c) = self.stages(space, arch, s..s + 1, x, c, ctx);
            if cut == Some(s + 1) {
                x = fake_quantize(x, 8);
            }
        }
        if form == Form::LateFusion {
            let logits = self.classify(space, x);
            if v == 1 {
                return logits;
            }
            let k = space.classes;
            let m = mask.clone().reshape([b, v, 1]);
            let n = mask.sum_dim(1).reshape([b, 1]);
            return (logits.reshape([b, v, k]) * m).sum_dim(1).reshape([b, k]) / n;
        }
        let x = self.fuse(x, mask, arch.fusion, last - 1);
        self.classify(space, x)
    }
}

/// Fuses `[B·V, k, 1, 1]` per-view logits (`k = classes`, or `classes + 1` with learned fusion's
/// score last) over the views present (`[B, V]` mask) to `[B, classes]`.
fn fuse_logits(f: Tensor<4>, mask: Tensor<2>, fusion: Fusion, classes: usize) -> Tensor<2> {
    let [b, v] = mask.dims();
    let k = f.dims()[1];
    let f = f.reshape([b, v, k]);
    let logits = f.clone().narrow(2, 0, classes);
    if v == 1 {
        return logits.reshape([b, classes]);
    }
    let m = mask.clone().reshape([b, v, 1]);
    match fusion {
        Fusion::Max => (logits + (m - 1.0) * 1e4).max_dim(1).reshape([b, classes]),
        Fusion::Mean => {
            let n = mask.sum_dim(1).reshape([b, 1]);
            (logits * m).sum_dim(1).reshape([b, classes]) / n
        }
        Fusion::Learned => {
            let score = f.narrow(2, classes, 1).reshape([b, v]) + (mask - 1.0) * 1e4;
            let a = softmax(score, 1).reshape([b, v, 1]);
            (logits * a).sum_dim(1).reshape([b, classes])
        }
    }
}

/// Per-sample quantization to `bits` exactly as the sensor's codec does it
/// (`splitnets_proto::codec`, dynamic per-tensor affine): the range `[min(lo, 0), max(hi, 0)]`
/// mapped onto `0 ..= 2^bits - 1` with a zero point, so 0 is exact; gradients pass straight
/// through. Training with the deployed quantizer keeps low bit widths honest.
pub fn fake_quantize(x: Tensor<4>, bits: u32) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let flat = x.reshape([n, c * h * w]);
    let lo = flat.clone().min_dim(1).detach().clamp_max(0.0);
    let hi = flat.clone().max_dim(1).detach().clamp_min(0.0);
    let levels = ((1u32 << bits.min(16)) - 1) as f32;
    let scale = (hi - lo.clone()).clamp_min(1e-8) / levels;
    let zero_point = (lo.neg() / scale.clone()).round().clamp(0.0, levels);
    let q = ((flat.clone() / scale.clone()).round() + zero_point.clone()).clamp(0.0, levels);
    let deq = (q - zero_point) * scale;
    let out = flat.clone() + (deq - flat).detach();
    out.reshape([n, c, h, w])
}

pub(crate) fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap_or_default()
}

/// A convolution with BatchNorm folded in: `weight` is `[out, in / groups, k, k]` row-major as
/// ONNX `Conv` wants it; `relu` tells whether a ReLU follows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvLayer {
    pub out_channels: usize,
    pub in_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub relu: bool,
}

/// An inverted-residual block.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlockLayers {
    pub expand: ConvLayer,
    pub depthwise: ConvLayer,
    pub project: ConvLayer,
    /// Adds the block's input to its output.
    pub residual: bool,
}

/// A subnet's trained weights as plain arrays, BatchNorm folded (for ONNX export).
///
/// Head (sensor): `stem` → `head_blocks` → `reduce` (then quantization to `bits`).
/// Tail (aggregator): `recover` per view → fusion over the views present (`fusion`;
/// for learned fusion `score_weight · mean_hw(recovered) + score_bias` per view, softmax over
/// views, weighted sum) → `tail_blocks` → global average pool → `classifier` (`[in, out]`).
///
/// `after_classifier`: the head is `stem` → `head_blocks` (all of them) → global average pool →
/// `classifier` (→ learned fusion's score, `score_weight · pooled + score_bias`, appended), then
/// quantization; the tail fuses the views' logits. `reduce`, `recover` and `tail_blocks` are
/// empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubnetWeights {
    pub after_classifier: bool,
    pub stem: ConvLayer,
    pub head_blocks: Vec<BlockLayers>,
    pub reduce: ConvLayer,
    pub bits: u32,
    pub recover: ConvLayer,
    pub fusion: Option<Fusion>,
    pub score_weight: Vec<f32>,
    pub score_bias: f32,
    pub tail_blocks: Vec<BlockLayers>,
    pub classifier_inputs: usize,
    pub classifier_outputs: usize,
    /// `[inputs, outputs]` row-major.
    pub classifier_weight: Vec<f32>,
    pub classifier_bias: Vec<f32>,
}

struct Folder<'a> {
    stats: &'a BnStats,
    layer: usize,
}

impl Folder<'_> {
    /// Folds BN layer `self.layer` (gamma, beta) into conv weight `w` `[out, ...]`.
    fn fold(&mut self, w: Vec<f32>, bn: &Bn, out: usize) -> (Vec<f32>, Vec<f32>) {
        let n = self.stats.batches.max(1) as f32;
        let mean = self
            .stats
            .mean
            .get(self.layer)
            .cloned()
            .unwrap_or_else(|| vec![0.0; out]);
        let var = self
            .stats
            .var
            .get(self.layer)
            .cloned()
            .unwrap_or_else(|| vec![n; out]);
        self.layer += 1;
        let gamma = to_vec(bn.gamma.val());
        let beta = to_vec(bn.beta.val());
        let per = w.len() / out.max(1);
        let mut w = w;
        let mut bias = vec![0.0; out];
        for o in 0..out {
            let s = gamma[o] / (var[o] / n + BN_EPS).sqrt();
            for x in &mut w[o * per..(o + 1) * per] {
                *x *= s;
            }
            bias[o] = beta[o] - mean[o] / n * s;
        }
        (w, bias)
    }
}

impl Supernet {
    fn block_layers(
        &self,
        arch: &Arch,
        s: usize,
        b: usize,
        cin: usize,
        off: usize,
        f: &mut Folder<'_>,
    ) -> BlockLayers {
        let st = arch.stages[s];
        let p = &self.blocks[off + b];
        let hidden = cin * st.expansion;
        let kmax = p.depthwise.val().dims()[2];
        let o = (kmax - st.kernel) / 2;
        let conv = |w: Tensor<4>,
                    bn: &Bn,
                    out: usize,
                    inc: usize,
                    k: usize,
                    stride: usize,
                    groups: usize,
                    relu: bool,
                    f: &mut Folder<'_>| {
            let (weight, bias) = f.fold(to_vec(w), bn, out);
            ConvLayer {
                out_channels: out,
                in_channels: inc,
                kernel: k,
                stride,
                padding: k / 2,
                groups,
                weight,
                bias,
                relu,
            }
        };
        let expand = conv(
            p.expand.val().slice([0..hidden, 0..cin, 0..1, 0..1]),
            &p.expand_bn,
            hidden,
            cin,
            1,
            1,
            1,
            true,
            f,
        );
        let depthwise = conv(
            p.depthwise
                .val()
                .slice([0..hidden, 0..1, o..o + st.kernel, o..o + st.kernel]),
            &p.depthwise_bn,
            hidden,
            hidden,
            st.kernel,
            if b == 0 { 2 } else { 1 },
            hidden,
            true,
            f,
        );
        let project = conv(
            p.project.val().slice([0..st.width, 0..hidden, 0..1, 0..1]),
            &p.project_bn,
            st.width,
            hidden,
            1,
            1,
            1,
            false,
            f,
        );
        BlockLayers {
            expand,
            depthwise,
            project,
            residual: b > 0 && cin == st.width,
        }
    }

    /// The weights of subnet `arch` with its recalibrated BatchNorm statistics folded in.
    pub fn export(&self, space: &SearchSpace, arch: &Arch, stats: &BnStats) -> SubnetWeights {
        let mut f = Folder { stats, layer: 0 };
        let c0 = arch.stem_width;
        let (w, b) = f.fold(
            to_vec(self.stem.val().slice([0..c0, 0..1, 0..3, 0..3])),
            &self.stem_bn,
            c0,
        );
        let stem = ConvLayer {
            out_channels: c0,
            in_channels: 1,
            kernel: 3,
            stride: space.stem_stride,
            padding: 1,
            groups: 1,
            weight: w,
            bias: b,
            relu: true,
        };
        let mut c = c0;
        let mut head_blocks = Vec::new();
        let mut tail_blocks = Vec::new();
        for s in 0..arch.stages.len() {
            let off = Self::stage_offset(space, s);
            for b in 0..arch.stages[s].depth {
                let l = self.block_layers(arch, s, b, c, off, &mut f);
                c = arch.stages[s].width;
                if s < arch.split {
                    head_blocks.push(l);
                } else {
                    tail_blocks.push(l);
                }
            }
        }
        let after = arch.after_classifier();
        let cs = arch.stages[arch.split.min(arch.stages.len()) - 1].width;
        let sp = &self.splits[arch.split.min(arch.stages.len()) - 1];
        let plain = |w: Tensor<4>, b: Tensor<1>, out: usize, inc: usize| ConvLayer {
            out_channels: out,
            in_channels: inc,
            kernel: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            weight: to_vec(w),
            bias: to_vec(b),
            relu: false,
        };
        let (reduce, recover) = if after {
            (ConvLayer::default(), ConvLayer::default())
        } else {
            (
                plain(
                    sp.reduce_w.val().slice([0..arch.c_red, 0..cs, 0..1, 0..1]),
                    sp.reduce_b.val().narrow(0, 0, arch.c_red),
                    arch.c_red,
                    cs,
                ),
                plain(
                    sp.recover_w.val().slice([0..cs, 0..arch.c_red, 0..1, 0..1]),
                    sp.recover_b.val().narrow(0, 0, cs),
                    cs,
                    arch.c_red,
                ),
            )
        };
        let learned = space.views > 1 && arch.fusion == Fusion::Learned;
        SubnetWeights {
            after_classifier: after,
            stem,
            head_blocks,
            reduce,
            bits: arch.bits,
            recover,
            fusion: (space.views > 1).then_some(arch.fusion),
            score_weight: if learned {
                to_vec(sp.score_w.val().slice([0..cs, 0..1]))
            } else {
                Vec::new()
            },
            score_bias: if learned {
                to_vec(sp.score_b.val()).first().copied().unwrap_or(0.0)
            } else {
                0.0
            },
            tail_blocks,
            classifier_inputs: c,
            classifier_outputs: space.classes,
            classifier_weight: to_vec(self.classifier_w.val().slice([0..c, 0..space.classes])),
            classifier_bias: to_vec(self.classifier_b.val()),
        }
    }
}
