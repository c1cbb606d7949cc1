//! The training loop: Adam on cross-entropy over multi-view batches, with view dropout.
//!
//! The backend is chosen by [`TrainBackend`]; burn's `flex` (pure-Rust CPU) is the default and
//! the only one compiled in. A GPU backend is a new variant plus a cargo feature, nothing else.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;

use crate::data::{Batch, BatchSampler};
use crate::model::{SplitCnn, SplitCnnSpec};

/// Which burn backend trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrainBackend {
    /// burn-flex: pure-Rust CPU, multi-threaded with rayon and SIMD.
    #[default]
    Flex,
}

impl TrainBackend {
    fn device(self) -> Device {
        match self {
            TrainBackend::Flex => Device::flex(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub spec: SplitCnnSpec,
    pub steps: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Probability that a view is kept in a training sample (≥ 1 view always kept).
    pub view_keep_prob: f64,
    pub seed: u64,
    pub backend: TrainBackend,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            spec: SplitCnnSpec::default(),
            steps: 3000,
            batch_size: 64,
            learning_rate: 2e-3,
            view_keep_prob: 0.7,
            seed: 1,
            backend: TrainBackend::Flex,
        }
    }
}

/// What the loop reports after each step.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub epochs: f64,
    pub seconds: f64,
}

/// A trained model, on the inference (non-autodiff) side.
#[derive(Debug)]
pub struct Trained {
    pub model: SplitCnn,
    pub device: Device,
    pub losses: Vec<f64>,
    pub seconds: f64,
}

fn batch_tensors(
    b: &Batch,
    views: usize,
    h: usize,
    w: usize,
    device: &Device,
) -> (Tensor<5>, Tensor<2>) {
    let x = Tensor::<5>::from_data(
        TensorData::new(b.inputs.clone(), [b.batch, views, 1, h, w]),
        device,
    );
    let m = Tensor::<2>::from_data(
        TensorData::new(b.view_mask.clone(), [b.batch, views]),
        device,
    );
    (x, m)
}

/// Trains from scratch; `on_step` sees every step (progress bars, logs).
pub fn train(
    cfg: &TrainConfig,
    sampler: &mut BatchSampler<'_>,
    views: usize,
    height: usize,
    width: usize,
    mut on_step: impl FnMut(StepReport),
) -> Trained {
    let base = cfg.backend.device();
    base.seed(cfg.seed);
    let device = base.clone().autodiff();
    let mut model = SplitCnn::new(&cfg.spec, &device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let started = Instant::now();
    let mut losses = Vec::with_capacity(cfg.steps as usize);
    for step in 1..=cfg.steps {
        let batch = sampler.next_batch(cfg.batch_size, cfg.view_keep_prob);
        let (x, m) = batch_tensors(&batch, views, height, width, &device);
        let y = Tensor::<1, Int>::from_data(
            TensorData::new(batch.labels.clone(), [batch.batch]),
            &device,
        );
        let logits = model.forward(x, m);
        let loss = loss_fn.forward(logits, y);
        let loss_value: f64 = loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // Cosine decay to 5 % of the base rate: stable late steps without tuning a schedule.
        let progress = step as f64 / cfg.steps as f64;
        let lr = cfg.learning_rate
            * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        model = optim.step(lr, model, grads);
        losses.push(loss_value);
        on_step(StepReport {
            step,
            loss: loss_value,
            epochs: sampler.epochs_completed(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Trained {
        model: model.valid(),
        device: base,
        losses,
        seconds: started.elapsed().as_secs_f64(),
    }
}

impl Trained {
    /// Logits of the inference model for `[B, V, 1, H, W]` inputs and a view mask.
    pub fn logits(
        &self,
        inputs: Vec<f32>,
        mask: Vec<f32>,
        b: usize,
        v: usize,
        h: usize,
        w: usize,
    ) -> Vec<f32> {
        let x = Tensor::<5>::from_data(TensorData::new(inputs, [b, v, 1, h, w]), &self.device);
        let m = Tensor::<2>::from_data(TensorData::new(mask, [b, v]), &self.device);
        self.model
            .forward(x, m)
            .into_data()
            .as_slice::<f32>()
            .expect("float32 logits")
            .to_vec()
    }
}
