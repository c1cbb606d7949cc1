//! Multi-view training batches: each sample is one Fashion-MNIST item seen by every camera.

use splitnets_camera::dataset::ImageSet;
use splitnets_camera::rig::{CameraRig, SplitMix64};
use splitnets_proto::bundle::InputSpec;

/// Seed salt for training captures, so training noise never equals the test replay's.
const TRAIN_SALT: u64 = 0x7EA1_7EA1;

/// One batch: `[batch, views, 1, H, W]` inputs, labels, and a `[batch, views]` keep mask.
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Vec<f32>,
    pub labels: Vec<i64>,
    pub view_mask: Vec<f32>,
    pub batch: usize,
}

/// Draws random batches from a training set.
#[derive(Debug)]
pub struct BatchSampler<'a> {
    set: &'a ImageSet,
    rig: CameraRig,
    input: InputSpec,
    rng: SplitMix64,
    order: Vec<usize>,
    cursor: usize,
    epoch: u64,
}

impl<'a> BatchSampler<'a> {
    pub fn new(set: &'a ImageSet, rig: &CameraRig, input: &InputSpec, seed: u64) -> Self {
        let mut s = Self {
            set,
            rig: CameraRig {
                seed: rig.seed ^ TRAIN_SALT,
                ..rig.clone()
            },
            input: input.clone(),
            rng: SplitMix64::new(seed),
            order: (0..set.len()).collect(),
            cursor: 0,
            epoch: 0,
        };
        s.shuffle();
        s
    }

    fn shuffle(&mut self) {
        for i in (1..self.order.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            self.order.swap(i, j);
        }
    }

    /// Next batch. `view_keep_prob < 1` drops views at random (at least one kept per sample),
    /// so the fused tail learns to answer from any subset of views.
    pub fn next_batch(&mut self, batch: usize, view_keep_prob: f64) -> Batch {
        let views = self.rig.views as usize;
        let px = self.set.pixels();
        let mut inputs = Vec::with_capacity(batch * views * px);
        let mut labels = Vec::with_capacity(batch);
        let mut view_mask = Vec::with_capacity(batch * views);
        let mut pre = Vec::with_capacity(px);
        for _ in 0..batch {
            if self.cursor == self.order.len() {
                self.cursor = 0;
                self.epoch += 1;
                self.shuffle();
            }
            let idx = self.order[self.cursor];
            self.cursor += 1;
            let frame = self.epoch * self.set.len() as u64 + idx as u64;
            for v in 0..views {
                let img = splitnets_camera::rig::capture(
                    &self.rig,
                    v as u32,
                    frame,
                    self.set.image(idx),
                    self.set.rows,
                    self.set.cols,
                );
                self.input.preprocess(&img, &mut pre);
                inputs.extend_from_slice(&pre);
            }
            let mut mask: Vec<f32> = (0..views)
                .map(|_| f32::from(u8::from(self.rng.next_f64() < view_keep_prob)))
                .collect();
            if mask.iter().all(|&m| m == 0.0) {
                mask[self.rng.below(views as u64) as usize] = 1.0;
            }
            view_mask.extend(mask);
            labels.push(i64::from(self.set.labels[idx]));
        }
        Batch {
            inputs,
            labels,
            view_mask,
            batch,
        }
    }

    pub fn epochs_completed(&self) -> f64 {
        self.epoch as f64 + self.cursor as f64 / self.order.len().max(1) as f64
    }
}
