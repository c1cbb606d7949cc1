//! A plain-Rust forward pass of exported [`SubnetWeights`] (one item, no burn): the reference
//! an ONNX export is checked against, and the check that BatchNorm folding is exact.

use crate::space::Fusion;
use crate::supernet::{BlockLayers, ConvLayer, SubnetWeights};

/// A `[C, H, W]` feature map.
#[derive(Debug, Clone)]
pub struct Map {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub v: Vec<f32>,
}

fn conv(x: &Map, l: &ConvLayer) -> Map {
    let (k, s, p, g) = (l.kernel, l.stride, l.padding, l.groups.max(1));
    let ho = (x.h + 2 * p - k) / s + 1;
    let wo = (x.w + 2 * p - k) / s + 1;
    let cin_g = x.c / g;
    let cout_g = l.out_channels / g;
    let mut out = vec![0.0f32; l.out_channels * ho * wo];
    for o in 0..l.out_channels {
        let grp = o / cout_g;
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = l.bias[o];
                for ci in 0..cin_g {
                    let c = grp * cin_g + ci;
                    for ky in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (ox * s + kx) as isize - p as isize;
                            if ix < 0 || ix >= x.w as isize {
                                continue;
                            }
                            acc += l.weight[((o * cin_g + ci) * k + ky) * k + kx]
                                * x.v[(c * x.h + iy as usize) * x.w + ix as usize];
                        }
                    }
                }
                out[(o * ho + oy) * wo + ox] = if l.relu { acc.max(0.0) } else { acc };
            }
        }
    }
    Map {
        c: l.out_channels,
        h: ho,
        w: wo,
        v: out,
    }
}

fn block(x: &Map, b: &BlockLayers) -> Map {
    let h = conv(&conv(&conv(x, &b.expand), &b.depthwise), &b.project);
    if b.residual {
        Map {
            v: h.v.iter().zip(&x.v).map(|(a, b)| a + b).collect(),
            ..h
        }
    } else {
        h
    }
}

/// The sensor side: one normalised `side × side` frame to the quantized split feature.
pub fn head(w: &SubnetWeights, frame: &[f32], side: usize) -> Map {
    let mut x = conv(
        &Map {
            c: 1,
            h: side,
            w: side,
            v: frame.to_vec(),
        },
        &w.stem,
    );
    for b in &w.head_blocks {
        x = block(&x, b);
    }
    let mut f = if w.after_classifier {
        let pooled = pool(&x);
        let mut v = classify(w, &pooled);
        if w.fusion == Some(Fusion::Learned) {
            let score: f32 = pooled.iter().zip(&w.score_weight).map(|(p, s)| p * s).sum();
            v.push(score + w.score_bias);
        }
        Map {
            c: v.len(),
            h: 1,
            w: 1,
            v,
        }
    } else {
        conv(&x, &w.reduce)
    };
    // The codec's dynamic per-tensor affine quantization (range widened to include 0).
    let lo = f.v.iter().copied().fold(0.0f32, f32::min);
    let hi = f.v.iter().copied().fold(0.0f32, f32::max);
    let levels = ((1u32 << w.bits.min(16)) - 1) as f32;
    let scale = (hi - lo).max(1e-8) / levels;
    let zero_point = (-lo / scale).round().clamp(0.0, levels);
    for v in &mut f.v {
        let q = ((*v / scale).round() + zero_point).clamp(0.0, levels);
        *v = (q - zero_point) * scale;
    }
    f
}

/// Global average pooling of a map.
fn pool(x: &Map) -> Vec<f32> {
    let hw = (x.h * x.w) as f32;
    (0..x.c)
        .map(|c| x.v[c * x.h * x.w..(c + 1) * x.h * x.w].iter().sum::<f32>() / hw)
        .collect()
}

/// The classifier on pooled features.
fn classify(w: &SubnetWeights, pooled: &[f32]) -> Vec<f32> {
    (0..w.classifier_outputs)
        .map(|o| {
            w.classifier_bias[o]
                + pooled
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p * w.classifier_weight[i * w.classifier_outputs + o])
                    .sum::<f32>()
        })
        .collect()
}

/// Softmax weights of `scores`.
fn softmax(scores: &[f32]) -> Vec<f32> {
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f32 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

/// The aggregator side of a split after the classifier: the views' logits fused.
fn fuse_logits(w: &SubnetWeights, features: &[Map]) -> Vec<f32> {
    let k = w.classifier_outputs;
    (0..k)
        .map(|i| {
            let at = |f: &Map| f.v[i];
            match w.fusion {
                None => at(&features[0]),
                Some(Fusion::Max) => features.iter().map(at).fold(f32::NEG_INFINITY, f32::max),
                Some(Fusion::Mean) => features.iter().map(at).sum::<f32>() / features.len() as f32,
                Some(Fusion::Learned) => {
                    let a = softmax(&features.iter().map(|f| f.v[k]).collect::<Vec<_>>());
                    features.iter().zip(&a).map(|(f, a)| f.v[i] * a).sum()
                }
            }
        })
        .collect()
}

/// The aggregator side: the features of the views present to logits.
pub fn tail(w: &SubnetWeights, features: &[Map]) -> Vec<f32> {
    if w.after_classifier {
        return fuse_logits(w, features);
    }
    let rec: Vec<Map> = features.iter().map(|f| conv(f, &w.recover)).collect();
    let first = &rec[0];
    let n = first.v.len();
    let mut fused = vec![0.0f32; n];
    match w.fusion {
        None => fused.copy_from_slice(&first.v),
        Some(Fusion::Max) => {
            for (i, x) in fused.iter_mut().enumerate() {
                *x = rec.iter().map(|r| r.v[i]).fold(f32::NEG_INFINITY, f32::max);
            }
        }
        Some(Fusion::Mean) => {
            for (i, x) in fused.iter_mut().enumerate() {
                *x = rec.iter().map(|r| r.v[i]).sum::<f32>() / rec.len() as f32;
            }
        }
        Some(Fusion::Learned) => {
            let hw = (first.h * first.w) as f32;
            let scores: Vec<f32> = rec
                .iter()
                .map(|r| {
                    (0..r.c)
                        .map(|c| {
                            r.v[c * r.h * r.w..(c + 1) * r.h * r.w].iter().sum::<f32>() / hw
                                * w.score_weight[c]
                        })
                        .sum::<f32>()
                        + w.score_bias
                })
                .collect();
            let a = softmax(&scores);
            for (i, x) in fused.iter_mut().enumerate() {
                *x = rec.iter().zip(&a).map(|(r, a)| r.v[i] * a).sum();
            }
        }
    }
    let mut x = Map {
        v: fused,
        ..first.clone()
    };
    for b in &w.tail_blocks {
        x = block(&x, b);
    }
    classify(w, &pool(&x))
}
