//! The multi-view split CNN, in burn, and its weights as plain arrays (for ONNX export).
//!
//! Head (on each sensor): conv3x3 → ReLU → maxpool2 → conv3x3 → ReLU → maxpool2 → 1x1 *reduce*
//! conv → ReLU: the split feature, few channels, non-negative (cheap to quantize).
//! Tail (on the aggregator): shared 1x1 *recover* conv → ReLU per view, element-wise max over the
//! views present (fusion), conv3x3 → ReLU → global average pool → linear classifier.
//!
//! Because the recovered features are ReLU outputs (≥ 0), a missing view can be replaced by zeros
//! without changing the max: training masks views that way, and the exported tail simply takes
//! the views that arrived.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

/// Widths of the split CNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCnnSpec {
    pub conv1: usize,
    pub conv2: usize,
    /// Channels of the split feature (the reduce operator's output).
    pub split_channels: usize,
    pub recover: usize,
    pub conv3: usize,
    pub classes: usize,
}

impl Default for SplitCnnSpec {
    fn default() -> Self {
        Self {
            conv1: 16,
            conv2: 32,
            split_channels: 4,
            recover: 32,
            conv3: 64,
            classes: 10,
        }
    }
}

#[derive(Module, Debug)]
pub struct SplitCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    reduce: Conv2d,
    recover: Conv2d,
    conv3: Conv2d,
    classifier: Linear,
    pool: MaxPool2d,
}

fn conv(cin: usize, cout: usize, k: usize, device: &Device) -> Conv2d {
    let pad = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

impl SplitCnn {
    pub fn new(spec: &SplitCnnSpec, device: &Device) -> Self {
        Self {
            conv1: conv(1, spec.conv1, 3, device),
            conv2: conv(spec.conv1, spec.conv2, 3, device),
            reduce: conv(spec.conv2, spec.split_channels, 1, device),
            recover: conv(spec.split_channels, spec.recover, 1, device),
            conv3: conv(spec.recover, spec.conv3, 3, device),
            classifier: LinearConfig::new(spec.conv3, spec.classes).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    /// Head: `[N, 1, H, W]` images to `[N, C, H/4, W/4]` split features.
    pub fn head(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.pool.forward(relu(self.conv1.forward(x)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        relu(self.reduce.forward(x))
    }

    /// Tail: `[B, V, C, h, w]` features and a `[B, V]` mask of present views to `[B, classes]` logits.
    pub fn tail(&self, features: Tensor<5>, view_mask: Tensor<2>) -> Tensor<2> {
        let [b, v, c, h, w] = features.dims();
        let r = relu(self.recover.forward(features.reshape([b * v, c, h, w])));
        let rc = r.dims()[1];
        let r = r.reshape([b, v, rc, h, w]) * view_mask.reshape([b, v, 1, 1, 1]);
        let fused = r.max_dim(1).reshape([b, rc, h, w]);
        let x = relu(self.conv3.forward(fused));
        let pooled = x
            .mean_dim(3)
            .mean_dim(2)
            .reshape([b, self.classifier_inputs()]);
        self.classifier.forward(pooled)
    }

    fn classifier_inputs(&self) -> usize {
        self.classifier.weight.dims()[0]
    }

    /// Whole model: `[B, V, 1, H, W]` → logits.
    pub fn forward(&self, images: Tensor<5>, view_mask: Tensor<2>) -> Tensor<2> {
        let [b, v, ch, h, w] = images.dims();
        let f = self.head(images.reshape([b * v, ch, h, w]));
        let [_, c, fh, fw] = f.dims();
        self.tail(f.reshape([b, v, c, fh, fw]), view_mask)
    }

    /// The trained weights as plain arrays.
    pub fn weights(&self) -> SplitCnnWeights {
        SplitCnnWeights {
            conv1: ConvWeights::of(&self.conv1),
            conv2: ConvWeights::of(&self.conv2),
            reduce: ConvWeights::of(&self.reduce),
            recover: ConvWeights::of(&self.recover),
            conv3: ConvWeights::of(&self.conv3),
            classifier: LinearWeights::of(&self.classifier),
        }
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .as_slice::<f32>()
        .expect("float32 parameters")
        .to_vec()
}

/// A convolution's weights: `weight` is `[out, in, k, k]` row-major, as ONNX `Conv` wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    pub out_channels: usize,
    pub in_channels: usize,
    pub kernel: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvWeights {
    fn of(c: &Conv2d) -> Self {
        let [o, i, k, _] = c.weight.dims();
        Self {
            out_channels: o,
            in_channels: i,
            kernel: k,
            weight: to_vec(c.weight.val()),
            bias: c
                .bias
                .as_ref()
                .map(|b| to_vec(b.val()))
                .unwrap_or_else(|| vec![0.0; o]),
        }
    }
}

/// A linear layer's weights: `weight` is `[in, out]` row-major (ONNX `Gemm` with transB = 0).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWeights {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LinearWeights {
    fn of(l: &Linear) -> Self {
        let [i, o] = l.weight.dims();
        Self {
            inputs: i,
            outputs: o,
            weight: to_vec(l.weight.val()),
            bias: l
                .bias
                .as_ref()
                .map(|b| to_vec(b.val()))
                .unwrap_or_else(|| vec![0.0; o]),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SplitCnnWeights {
    pub conv1: ConvWeights,
    pub conv2: ConvWeights,
    pub reduce: ConvWeights,
    pub recover: ConvWeights,
    pub conv3: ConvWeights,
    pub classifier: LinearWeights,
}
