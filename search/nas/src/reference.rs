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
    let mut f = conv(&x, &w.reduce);
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

/// The aggregator side: the features of the views present to logits.
pub fn tail(w: &SubnetWeights, features: &[Map]) -> Vec<f32> {
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
            let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for (i, x) in fused.iter_mut().enumerate() {
                *x = rec.iter().zip(&e).map(|(r, a)| r.v[i] * a / z).sum();
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
    let hw = (x.h * x.w) as f32;
    let pooled: Vec<f32> = (0..x.c)
        .map(|c| x.v[c * x.h * x.w..(c + 1) * x.h * x.w].iter().sum::<f32>() / hw)
        .collect();
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
