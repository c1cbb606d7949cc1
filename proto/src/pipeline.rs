//! The whole split model in one process: heads, codec round trip, fusion, tail. It is the
//! reference the distributed pipeline must reproduce, and the baseline its latency is compared to.

use std::time::Instant;

use crate::bundle::Bundle;
use crate::codec::{self, CodecError, EncodedTensor};
use crate::runtime::{OnnxModel, RuntimeError, SessionOptions};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("feature codec: {0}")]
    Codec(#[from] CodecError),
    #[error("{0}")]
    Shape(String),
}

/// Per-stage time of one frame, nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalTimings {
    pub head_ns: u64,
    pub encode_ns: u64,
    pub decode_ns: u64,
    pub tail_ns: u64,
}

/// The bundle's head and tail in ONNX Runtime sessions.
#[derive(Debug)]
pub struct LocalPipeline {
    pub bundle: Bundle,
    head: OnnxModel,
    tail: OnnxModel,
    input: Vec<f32>,
}

impl LocalPipeline {
    pub fn new(bundle: Bundle, opts: SessionOptions) -> Result<Self, PipelineError> {
        let head = OnnxModel::from_bytes(
            &format!("{}/head", bundle.dir.display()),
            &bundle.head_onnx,
            opts,
        )?;
        let tail = OnnxModel::from_bytes(
            &format!("{}/tail", bundle.dir.display()),
            &bundle.tail_onnx,
            opts,
        )?;
        Ok(Self {
            bundle,
            head,
            tail,
            input: Vec::new(),
        })
    }

    /// Pixels of one camera frame → the split feature (float).
    pub fn head(&mut self, pixels: &[u8]) -> Result<Vec<f32>, PipelineError> {
        let spec = &self.bundle.manifest.input;
        if pixels.len() != spec.raw_frame_bytes() {
            return Err(PipelineError::Shape(format!(
                "frame has {} pixels, the bundle's input is {}x{}",
                pixels.len(),
                spec.height,
                spec.width
            )));
        }
        spec.preprocess(pixels, &mut self.input);
        let shape = spec.head_input_shape();
        let (out_shape, out) = self.head.run(&shape, &self.input)?;
        if out_shape != self.bundle.manifest.split.feature_shape {
            return Err(PipelineError::Shape(format!(
                "head produced {out_shape:?}, manifest says {:?}",
                self.bundle.manifest.split.feature_shape
            )));
        }
        Ok(out)
    }

    /// Encodes a feature with the bundle's codec.
    pub fn encode(&self, feature: &[f32]) -> Result<EncodedTensor, PipelineError> {
        Ok(codec::encode(
            self.bundle.manifest.codec,
            &self.bundle.manifest.split.feature_shape,
            feature,
        )?)
    }

    /// Runs the tail on `[views_present, C, H, W]` stacked features (views ascending).
    pub fn tail(
        &mut self,
        stacked: &[f32],
        views_present: usize,
    ) -> Result<Vec<f32>, PipelineError> {
        let f = &self.bundle.manifest.split.feature_shape;
        let shape = [views_present, f[1], f[2], f[3]];
        let (_, logits) = self.tail.run(&shape, stacked)?;
        Ok(logits)
    }

    /// One frame end to end: each view's pixels (ascending view order) → logits. With
    /// `through_codec`, every feature is encoded and decoded as on the link.
    pub fn run_frame(
        &mut self,
        views: &[Vec<u8>],
        through_codec: bool,
    ) -> Result<(Vec<f32>, LocalTimings), PipelineError> {
        let mut t = LocalTimings::default();
        let mut stacked =
            Vec::with_capacity(views.len() * self.bundle.manifest.split.feature_elements());
        let mut decoded = Vec::new();
        for pixels in views {
            let s = Instant::now();
            let f = self.head(pixels)?;
            t.head_ns += s.elapsed().as_nanos() as u64;
            if through_codec {
                let s = Instant::now();
                let enc = self.encode(&f)?;
                t.encode_ns += s.elapsed().as_nanos() as u64;
                let s = Instant::now();
                codec::decode_into(&enc, &mut decoded)?;
                t.decode_ns += s.elapsed().as_nanos() as u64;
                stacked.extend_from_slice(&decoded);
            } else {
                stacked.extend_from_slice(&f);
            }
        }
        let s = Instant::now();
        let logits = self.tail(&stacked, views.len())?;
        t.tail_ns = s.elapsed().as_nanos() as u64;
        Ok((logits, t))
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}
