//! The two halves of a split bundle as reusable stages: the only implementation of "run the
//! head" and "run the tail" in the project. The sensor daemon, the aggregator, the in-process
//! reference pipeline ([`crate::pipeline`]), the bundle evaluation in `search` and the demo's
//! reference run all call these, so "distributed equals one process" holds by construction.
//!
//! Both stages block (ONNX Runtime `run`): call them on a dedicated thread or `spawn_blocking`.
//! Every buffer is owned by the stage and reused, so a steady stream of frames allocates nothing
//! on this side of ONNX Runtime (what ONNX Runtime and the `ort` wrapper allocate per run is
//! listed in ARCHITECTURE.md).

use std::time::Instant;

use bytes::BytesMut;
use splitnets_proto::bundle::{Bundle, InputSpec};
use splitnets_proto::codec::{self, CodecError, CodecSpec, EncodedTensor};

use crate::onnx_runtime::{OnnxModel, RuntimeError, SessionOptions};

/// Why a stage could not process a frame.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("feature codec: {0}")]
    Codec(#[from] CodecError),
    #[error(
        "frame has {actual} bytes, the bundle's input is {height}x{width} {pixel_format} ({expected} bytes)"
    )]
    FrameSize {
        actual: usize,
        expected: usize,
        height: usize,
        width: usize,
        pixel_format: String,
    },
    #[error("head produced shape {actual:?}, the bundle's split feature is {expected:?}")]
    FeatureShape {
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("the tail needs 1..={max} views, got {actual}")]
    ViewCount { actual: usize, max: usize },
}

/// Time spent in each part of the head stage, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadTimings {
    pub preprocess_ns: u64,
    pub head_ns: u64,
    pub encode_ns: u64,
}

/// Preprocess → head session → encode, on one camera's frames.
#[derive(Debug)]
pub struct HeadStage {
    model: OnnxModel,
    input_spec: InputSpec,
    feature_shape: Vec<usize>,
    codec: CodecSpec,
    input: Vec<f32>,
    out_shape: Vec<usize>,
    feature: Vec<f32>,
    encoded: EncodedTensor,
    /// Payload arenas used in turn: a payload still in flight (queued for the link) keeps its
    /// arena busy, so with enough arenas each one is free again when its turn comes and the
    /// stream allocates nothing.
    arenas: Vec<BytesMut>,
    next_arena: usize,
}

/// Memory the head stage's payload arenas may hold together.
const ARENA_BUDGET_BYTES: usize = 8 << 20;

fn arena_count(codec: CodecSpec, feature_shape: &[usize]) -> usize {
    let payload = codec.payload_bytes(feature_shape.iter().product()).max(1);
    (ARENA_BUDGET_BYTES / payload).clamp(2, 32)
}

impl HeadStage {
    /// Loads the bundle's head into an ONNX Runtime session (not yet warmed up: see
    /// [`HeadStage::warm_up`]).
    pub fn new(bundle: &Bundle, opts: SessionOptions) -> Result<Self, StageError> {
        let m = &bundle.manifest;
        Self::from_parts(
            &format!("{}/{}", bundle.dir.display(), m.files.head.path),
            &bundle.head_onnx,
            &m.input,
            &m.split.feature_shape,
            m.codec,
            opts,
        )
    }

    /// A head stage from a model not yet written as a bundle (the search evaluates its exports
    /// before writing them). `name` is used in errors.
    pub fn from_parts(
        name: &str,
        head_onnx: &[u8],
        input: &InputSpec,
        feature_shape: &[usize],
        codec: CodecSpec,
        opts: SessionOptions,
    ) -> Result<Self, StageError> {
        let model = OnnxModel::from_bytes(name, head_onnx, opts)?;
        Ok(Self {
            model,
            input_spec: input.clone(),
            feature_shape: feature_shape.to_vec(),
            codec,
            input: Vec::new(),
            out_shape: Vec::new(),
            feature: Vec::new(),
            encoded: EncodedTensor::empty(),
            arenas: vec![BytesMut::new(); arena_count(codec, feature_shape)],
            next_arena: 0,
        })
    }

    /// Runs the head `runs` times on a blank frame: the first runs allocate and pick kernels, so
    /// a daemon does this before it reports ready.
    pub fn warm_up(&mut self, runs: usize) -> Result<(), StageError> {
        let blank = vec![0u8; self.input_spec.raw_frame_bytes()];
        for _ in 0..runs {
            self.encode(&blank)?;
        }
        Ok(())
    }

    /// Pixels of one frame → the split feature (float, as the head computed it).
    pub fn features(&mut self, pixels: &[u8]) -> Result<&[f32], StageError> {
        self.run_head(pixels)?;
        Ok(&self.feature)
    }

    /// Pixels of one frame → the encoded split feature, in a buffer reused by the next call.
    /// The payload is a frozen slice of the stage's arena: cloning the tensor's `payload` is a
    /// reference count, not a copy.
    pub fn encode(&mut self, pixels: &[u8]) -> Result<(&EncodedTensor, HeadTimings), StageError> {
        let mut t = self.run_head(pixels)?;
        let s = Instant::now();
        self.encode_features()?;
        t.encode_ns = s.elapsed().as_nanos() as u64;
        Ok((&self.encoded, t))
    }

    /// Encodes the features of the last frame [`HeadStage::features`] computed.
    pub fn encode_features(&mut self) -> Result<&EncodedTensor, StageError> {
        let turn = self.next_arena;
        self.next_arena = (turn + 1) % self.arenas.len();
        let arena = &mut self.arenas[turn];
        codec::encode_into(
            self.codec,
            &self.feature_shape,
            &self.feature,
            &mut self.encoded,
            arena,
        )?;
        Ok(&self.encoded)
    }

    fn run_head(&mut self, pixels: &[u8]) -> Result<HeadTimings, StageError> {
        let spec = &self.input_spec;
        if pixels.len() != spec.raw_frame_bytes() {
            return Err(StageError::FrameSize {
                actual: pixels.len(),
                expected: spec.raw_frame_bytes(),
                height: spec.height,
                width: spec.width,
                pixel_format: spec.pixel_format.clone(),
            });
        }
        let mut t = HeadTimings::default();
        let s = Instant::now();
        spec.preprocess(pixels, &mut self.input);
        let shape = spec.head_input_shape();
        let s2 = Instant::now();
        t.preprocess_ns = (s2 - s).as_nanos() as u64;
        self.model
            .run_into(&shape, &self.input, &mut self.out_shape, &mut self.feature)?;
        t.head_ns = s2.elapsed().as_nanos() as u64;
        if self.out_shape != self.feature_shape {
            return Err(StageError::FeatureShape {
                actual: self.out_shape.clone(),
                expected: self.feature_shape.clone(),
            });
        }
        Ok(t)
    }
}

/// Time spent in each part of the tail stage, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailTimings {
    pub decode_ns: u64,
    pub tail_ns: u64,
}

/// Decode each view straight into the stacked tail input → tail session → logits.
#[derive(Debug)]
pub struct TailStage {
    model: OnnxModel,
    feature_shape: Vec<usize>,
    max_views: usize,
    stacked: Vec<f32>,
    out_shape: Vec<usize>,
    logits: Vec<f32>,
}

impl TailStage {
    /// Loads the bundle's tail into an ONNX Runtime session.
    pub fn new(bundle: &Bundle, opts: SessionOptions) -> Result<Self, StageError> {
        let m = &bundle.manifest;
        Self::from_parts(
            &format!("{}/{}", bundle.dir.display(), m.files.tail.path),
            &bundle.tail_onnx,
            &m.split.feature_shape,
            m.cameras.views as usize,
            opts,
        )
    }

    /// A tail stage from a model not yet written as a bundle. `name` is used in errors.
    pub fn from_parts(
        name: &str,
        tail_onnx: &[u8],
        feature_shape: &[usize],
        max_views: usize,
        opts: SessionOptions,
    ) -> Result<Self, StageError> {
        let model = OnnxModel::from_bytes(name, tail_onnx, opts)?;
        let elements: usize = feature_shape.iter().product();
        Ok(Self {
            model,
            feature_shape: feature_shape.to_vec(),
            max_views,
            stacked: Vec::with_capacity(max_views * elements),
            out_shape: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// Runs the tail with one view and with all views (the first runs allocate and pick kernels).
    pub fn warm_up(&mut self) -> Result<(), StageError> {
        for n in [1, self.max_views] {
            let zeros = vec![0.0f32; n * self.view_elements()];
            self.run_stacked(&zeros, n)?;
        }
        Ok(())
    }

    fn view_elements(&self) -> usize {
        self.feature_shape.iter().skip(1).product()
    }

    /// The present views' encoded features (ascending view order) → logits. Each view is
    /// validated and dequantized straight into its slot of the stacked `[views, C, H, W]` input.
    pub fn run_encoded<'a>(
        &mut self,
        views: impl ExactSizeIterator<Item = &'a EncodedTensor>,
    ) -> Result<(&[f32], TailTimings), StageError> {
        let n = views.len();
        if n == 0 || n > self.max_views {
            return Err(StageError::ViewCount {
                actual: n,
                max: self.max_views,
            });
        }
        let per_view = self.view_elements();
        let s = Instant::now();
        let mut stacked = std::mem::take(&mut self.stacked);
        stacked.resize(n * per_view, 0.0);
        let mut decoded = Ok(());
        for (slot, t) in stacked.chunks_exact_mut(per_view).zip(views) {
            if t.shape != self.feature_shape {
                decoded = Err(StageError::FeatureShape {
                    actual: t.shape.clone(),
                    expected: self.feature_shape.clone(),
                });
                break;
            }
            if let Err(e) = codec::decode_to_slice(t, slot) {
                decoded = Err(e.into());
                break;
            }
        }
        let decode_ns = s.elapsed().as_nanos() as u64;
        let result = decoded.and_then(|()| self.run_stacked(&stacked, n));
        self.stacked = stacked;
        let tail_ns = result?;
        Ok((&self.logits, TailTimings { decode_ns, tail_ns }))
    }

    /// The dequantized features of the last [`Self::run_encoded`]: `[views, C, H, W]`, views
    /// as they were given.
    pub fn stacked_features(&self) -> &[f32] {
        &self.stacked
    }

    /// Runs the tail on already stacked float features `[views, C, H, W]` (views ascending).
    pub fn run_floats(&mut self, stacked: &[f32], views: usize) -> Result<&[f32], StageError> {
        if views == 0 || views > self.max_views {
            return Err(StageError::ViewCount {
                actual: views,
                max: self.max_views,
            });
        }
        self.run_stacked(stacked, views)?;
        Ok(&self.logits)
    }

    fn run_stacked(&mut self, stacked: &[f32], views: usize) -> Result<u64, StageError> {
        let f = &self.feature_shape;
        let shape = [views, f[1], f[2], f[3]];
        let s = Instant::now();
        self.model
            .run_into(&shape, stacked, &mut self.out_shape, &mut self.logits)?;
        Ok(s.elapsed().as_nanos() as u64)
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
