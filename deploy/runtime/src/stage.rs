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
    /// The model's inputs or outputs do not match the bundle's crossing tensors.
    #[error("{0}")]
    Binding(String),
}

/// Time spent in each part of the head stage, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadTimings {
    pub preprocess_ns: u64,
    pub head_ns: u64,
    pub encode_ns: u64,
}

/// One tensor crossing the split, as a stage sees it: the model's input or output that carries
/// it (by name; a one-tensor bundle uses its model's only input or output whatever its name),
/// one view's shape and the codec.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub codec: CodecSpec,
    /// Calibrated ranges per channel, for a codec that needs them (else empty).
    pub channel_ranges: Vec<[f32; 2]>,
}

impl StageTensor {
    fn view_elements(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}

/// Index of each crossing tensor among the model's `names` (inputs or outputs).
fn bind(
    model: &OnnxModel,
    names: &[String],
    tensors: &[StageTensor],
    what: &str,
) -> Result<Vec<usize>, StageError> {
    if let ([_], [_]) = (names, tensors) {
        return Ok(vec![0]);
    }
    if names.len() != tensors.len() {
        return Err(StageError::Binding(format!(
            "{}: the model has {} {what}s {names:?}, the bundle names {} crossing tensors",
            model.name(),
            names.len(),
            tensors.len()
        )));
    }
    tensors
        .iter()
        .map(|t| {
            names.iter().position(|n| *n == t.name).ok_or_else(|| {
                StageError::Binding(format!(
                    "{}: no {what} named {:?} (it has {names:?})",
                    model.name(),
                    t.name
                ))
            })
        })
        .collect()
}

/// Preprocess → head session → encode, on one camera's frames.
#[derive(Debug)]
pub struct HeadStage {
    model: OnnxModel,
    input_spec: InputSpec,
    tensors: Vec<StageTensor>,
    /// `outputs[output_of[i]]` holds crossing tensor `i`.
    output_of: Vec<usize>,
    input: Vec<f32>,
    outputs: Vec<(Vec<usize>, Vec<f32>)>,
    encoded: Vec<EncodedTensor>,
    /// Payload arenas used in turn (one per crossing tensor in each turn): a payload still in
    /// flight (queued for the link) keeps its arena busy, so with enough arenas each one is free
    /// again when its turn comes and the stream allocates nothing.
    arenas: Vec<Vec<BytesMut>>,
    next_arena: usize,
}

/// Memory the head stage's payload arenas may hold together.
const ARENA_BUDGET_BYTES: usize = 8 << 20;

fn arena_count(tensors: &[StageTensor]) -> usize {
    let payload: usize = tensors
        .iter()
        .map(|t| t.codec.payload_bytes(t.shape.iter().product()))
        .sum();
    (ARENA_BUDGET_BYTES / payload.max(1)).clamp(2, 32)
}

/// The bundle's crossing tensors as the head (`head: true`) or the tail names them.
fn stage_tensors(bundle: &Bundle, head: bool) -> Vec<StageTensor> {
    bundle
        .manifest
        .crossing_tensors()
        .into_iter()
        .map(|t| StageTensor {
            name: if head { t.head_output } else { t.tail_input },
            shape: t.shape,
            codec: t.codec,
            channel_ranges: t.channel_ranges,
        })
        .collect()
}

impl HeadStage {
    /// Loads the bundle's head into an ONNX Runtime session (not yet warmed up: see
    /// [`HeadStage::warm_up`]).
    pub fn new(bundle: &Bundle, opts: SessionOptions) -> Result<Self, StageError> {
        let m = &bundle.manifest;
        Self::with_tensors(
            &format!("{}/{}", bundle.dir.display(), m.files.head.path),
            &bundle.head_onnx,
            &m.input,
            stage_tensors(bundle, true),
            opts,
        )
    }

    /// A one-tensor head stage from a model not yet written as a bundle (the search evaluates
    /// its exports before writing them). `name` is used in errors.
    pub fn from_parts(
        name: &str,
        head_onnx: &[u8],
        input: &InputSpec,
        feature_shape: &[usize],
        codec: CodecSpec,
        opts: SessionOptions,
    ) -> Result<Self, StageError> {
        let tensor = StageTensor {
            name: String::new(),
            shape: feature_shape.to_vec(),
            codec,
            channel_ranges: Vec::new(),
        };
        Self::with_tensors(name, head_onnx, input, vec![tensor], opts)
    }

    /// A head stage whose model outputs `tensors` (in frame order).
    pub fn with_tensors(
        name: &str,
        head_onnx: &[u8],
        input: &InputSpec,
        tensors: Vec<StageTensor>,
        opts: SessionOptions,
    ) -> Result<Self, StageError> {
        let model = OnnxModel::from_bytes(name, head_onnx, opts)?;
        if model.input_names().len() != 1 {
            return Err(StageError::Binding(format!(
                "{name}: a head takes one input (the frame), this one has {:?}",
                model.input_names()
            )));
        }
        let output_of = bind(&model, model.output_names(), &tensors, "output")?;
        let outputs = vec![(Vec::new(), Vec::new()); model.output_names().len()];
        let encoded = vec![EncodedTensor::empty(); tensors.len()];
        let arenas = vec![vec![BytesMut::new(); tensors.len()]; arena_count(&tensors)];
        Ok(Self {
            model,
            input_spec: input.clone(),
            tensors,
            output_of,
            input: Vec::new(),
            outputs,
            encoded,
            arenas,
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

    /// The crossing tensors, in frame order.
    pub fn tensors(&self) -> &[StageTensor] {
        &self.tensors
    }

    /// Pixels of one frame → the split feature (float, as the head computed it), for a bundle
    /// with one crossing tensor; see [`HeadStage::feature_tensors`] for any number.
    pub fn features(&mut self, pixels: &[u8]) -> Result<&[f32], StageError> {
        if self.tensors.len() != 1 {
            return Err(StageError::Binding(format!(
                "{}: {} tensors cross this split; ask for feature_tensors",
                self.model.name(),
                self.tensors.len()
            )));
        }
        self.run_head(pixels)?;
        Ok(&self.outputs[self.output_of[0]].1)
    }

    /// Pixels of one frame → every crossing tensor (float), in frame order.
    pub fn feature_tensors(
        &mut self,
        pixels: &[u8],
    ) -> Result<impl ExactSizeIterator<Item = &[f32]>, StageError> {
        self.run_head(pixels)?;
        let outputs = &self.outputs;
        Ok(self.output_of.iter().map(move |&o| outputs[o].1.as_slice()))
    }

    /// Pixels of one frame → the encoded crossing tensors (frame order), in buffers reused by
    /// the next call. Each payload is a frozen slice of the stage's arena: cloning a tensor's
    /// `payload` is a reference count, not a copy.
    pub fn encode(&mut self, pixels: &[u8]) -> Result<(&[EncodedTensor], HeadTimings), StageError> {
        let mut t = self.run_head(pixels)?;
        let s = Instant::now();
        self.encode_features()?;
        t.encode_ns = s.elapsed().as_nanos() as u64;
        Ok((&self.encoded, t))
    }

    /// Encodes the crossing tensors of the last frame the head ran on.
    pub fn encode_features(&mut self) -> Result<&[EncodedTensor], StageError> {
        let turn = self.next_arena;
        self.next_arena = (turn + 1) % self.arenas.len();
        for (i, t) in self.tensors.iter().enumerate() {
            codec::encode_into_with_ranges(
                t.codec,
                &t.channel_ranges,
                &t.shape,
                &self.outputs[self.output_of[i]].1,
                &mut self.encoded[i],
                &mut self.arenas[turn][i],
            )?;
        }
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
            .run_all_into(&[(&shape[..], &self.input[..])], &mut self.outputs)?;
        t.head_ns = s2.elapsed().as_nanos() as u64;
        for (i, tensor) in self.tensors.iter().enumerate() {
            let got = &self.outputs[self.output_of[i]].0;
            if *got != tensor.shape {
                return Err(StageError::FeatureShape {
                    actual: got.clone(),
                    expected: tensor.shape.clone(),
                });
            }
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

/// Decode each view straight into the stacked tail inputs → tail session → logits.
#[derive(Debug)]
pub struct TailStage {
    model: OnnxModel,
    tensors: Vec<StageTensor>,
    /// Crossing tensor `i` is the model's input `input_of[i]`.
    input_of: Vec<usize>,
    max_views: usize,
    /// Per model input: `[views, ...]` of its crossing tensor.
    stacked: Vec<Vec<f32>>,
    shapes: Vec<Vec<usize>>,
    outputs: Vec<(Vec<usize>, Vec<f32>)>,
}

impl TailStage {
    /// Loads the bundle's tail into an ONNX Runtime session.
    pub fn new(bundle: &Bundle, opts: SessionOptions) -> Result<Self, StageError> {
        let m = &bundle.manifest;
        Self::with_tensors(
            &format!("{}/{}", bundle.dir.display(), m.files.tail.path),
            &bundle.tail_onnx,
            stage_tensors(bundle, false),
            m.cameras.views as usize,
            opts,
        )
    }

    /// A one-tensor tail stage from a model not yet written as a bundle. `name` is used in
    /// errors.
    pub fn from_parts(
        name: &str,
        tail_onnx: &[u8],
        feature_shape: &[usize],
        max_views: usize,
        opts: SessionOptions,
    ) -> Result<Self, StageError> {
        let tensor = StageTensor {
            name: String::new(),
            shape: feature_shape.to_vec(),
            // Not used by the tail: each view's tensor says how it is encoded.
            codec: CodecSpec::Float32,
            channel_ranges: Vec::new(),
        };
        Self::with_tensors(name, tail_onnx, vec![tensor], max_views, opts)
    }

    /// A tail stage whose model takes `tensors` (frame order) stacked over the views present.
    pub fn with_tensors(
        name: &str,
        tail_onnx: &[u8],
        tensors: Vec<StageTensor>,
        max_views: usize,
        opts: SessionOptions,
    ) -> Result<Self, StageError> {
        let model = OnnxModel::from_bytes(name, tail_onnx, opts)?;
        if model.output_names().len() != 1 {
            return Err(StageError::Binding(format!(
                "{name}: a tail has one output (the scores), this one has {:?}",
                model.output_names()
            )));
        }
        let input_of = bind(&model, model.input_names(), &tensors, "input")?;
        let mut stacked = vec![Vec::new(); tensors.len()];
        let mut shapes = vec![Vec::new(); tensors.len()];
        for (i, t) in tensors.iter().enumerate() {
            stacked[input_of[i]] = Vec::with_capacity(max_views * t.view_elements());
            shapes[input_of[i]] = t.shape.clone();
        }
        Ok(Self {
            model,
            tensors,
            input_of,
            max_views,
            stacked,
            shapes,
            outputs: vec![(Vec::new(), Vec::new())],
        })
    }

    /// Runs the tail with one view and with all views (the first runs allocate and pick kernels).
    pub fn warm_up(&mut self) -> Result<(), StageError> {
        for n in [1, self.max_views] {
            let mut stacked = std::mem::take(&mut self.stacked);
            for (buf, shape) in stacked.iter_mut().zip(&self.shapes) {
                buf.clear();
                buf.resize(n * shape.iter().skip(1).product::<usize>(), 0.0);
            }
            let r = self.run_stacked(&stacked, n);
            self.stacked = stacked;
            r?;
        }
        Ok(())
    }

    fn check_views(&self, n: usize) -> Result<(), StageError> {
        if n == 0 || n > self.max_views {
            return Err(StageError::ViewCount {
                actual: n,
                max: self.max_views,
            });
        }
        Ok(())
    }

    /// The present views' encoded crossing tensors (ascending view order; each view's tensors
    /// in frame order) → logits. Each tensor is validated and dequantized straight into its
    /// view's slot of its stacked `[views, ...]` input.
    pub fn run_encoded<'a>(
        &mut self,
        views: impl ExactSizeIterator<Item = &'a [EncodedTensor]>,
    ) -> Result<(&[f32], TailTimings), StageError> {
        let n = views.len();
        self.check_views(n)?;
        let s = Instant::now();
        let mut stacked = std::mem::take(&mut self.stacked);
        let mut decoded = Ok(());
        for (i, t) in self.tensors.iter().enumerate() {
            stacked[self.input_of[i]].resize(n * t.view_elements(), 0.0);
        }
        'views: for (v, view) in views.enumerate() {
            if view.len() != self.tensors.len() {
                decoded = Err(StageError::Binding(format!(
                    "a view brought {} tensors, the split has {}",
                    view.len(),
                    self.tensors.len()
                )));
                break;
            }
            for (i, (t, want)) in view.iter().zip(&self.tensors).enumerate() {
                if t.shape != want.shape {
                    decoded = Err(StageError::FeatureShape {
                        actual: t.shape.clone(),
                        expected: want.shape.clone(),
                    });
                    break 'views;
                }
                let per_view = want.view_elements();
                let slot = &mut stacked[self.input_of[i]][v * per_view..(v + 1) * per_view];
                if let Err(e) = codec::decode_to_slice(t, slot) {
                    decoded = Err(e.into());
                    break 'views;
                }
            }
        }
        let decode_ns = s.elapsed().as_nanos() as u64;
        let result = decoded.and_then(|()| self.run_stacked(&stacked, n));
        self.stacked = stacked;
        let tail_ns = result?;
        Ok((&self.outputs[0].1, TailTimings { decode_ns, tail_ns }))
    }

    /// The dequantized first crossing tensor of the last [`Self::run_encoded`]: `[views, ...]`,
    /// views as they were given.
    pub fn stacked_features(&self) -> &[f32] {
        &self.stacked[self.input_of[0]]
    }

    /// Runs a one-tensor tail on already stacked float features `[views, C, H, W]` (views
    /// ascending).
    pub fn run_floats(&mut self, stacked: &[f32], views: usize) -> Result<&[f32], StageError> {
        self.run_floats_all(&[stacked], views)
    }

    /// Runs the tail on already stacked float tensors (`stacked[i]`: crossing tensor `i` of
    /// every view, `[views, ...]`, views ascending).
    pub fn run_floats_all(
        &mut self,
        stacked: &[&[f32]],
        views: usize,
    ) -> Result<&[f32], StageError> {
        self.check_views(views)?;
        if stacked.len() != self.tensors.len() {
            return Err(StageError::Binding(format!(
                "{} stacked tensors given, the split has {}",
                stacked.len(),
                self.tensors.len()
            )));
        }
        let mut inputs: Vec<&[f32]> = vec![&[]; stacked.len()];
        for (i, s) in stacked.iter().enumerate() {
            inputs[self.input_of[i]] = s;
        }
        let shapes: Vec<Vec<usize>> = self.stacked_shapes(views);
        let list: Vec<(&[usize], &[f32])> = shapes
            .iter()
            .map(Vec::as_slice)
            .zip(inputs.iter().copied())
            .collect();
        self.model.run_all_into(&list, &mut self.outputs)?;
        Ok(&self.outputs[0].1)
    }

    fn stacked_shapes(&self, views: usize) -> Vec<Vec<usize>> {
        self.shapes
            .iter()
            .map(|s| {
                std::iter::once(views)
                    .chain(s.iter().skip(1).copied())
                    .collect()
            })
            .collect()
    }

    fn run_stacked(&mut self, stacked: &[Vec<f32>], views: usize) -> Result<u64, StageError> {
        let s = Instant::now();
        if let ([one], true) = (stacked, self.shapes[0].len() <= 8) {
            // One crossing tensor (every project network): no per-frame allocation.
            let f = &self.shapes[0];
            let mut shape = [0usize; 8];
            let rank = f.len().min(8);
            shape[0] = views;
            shape[1..rank].copy_from_slice(&f[1..rank]);
            self.model
                .run_all_into(&[(&shape[..rank], one)], &mut self.outputs)?;
        } else {
            let shapes = self.stacked_shapes(views);
            let list: Vec<(&[usize], &[f32])> = shapes
                .iter()
                .map(Vec::as_slice)
                .zip(stacked.iter().map(Vec::as_slice))
                .collect();
            self.model.run_all_into(&list, &mut self.outputs)?;
        }
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
