//! ONNX Runtime, loaded dynamically from the library `scripts/setup.sh` unpacks from the PyPI
//! wheel, and small wrappers for the stages' float models (reused buffers) and multi-I/O models
//! (graph cutting, calibration).
//!
//! `run` blocks: callers keep it off async worker threads (a dedicated thread or
//! `spawn_blocking`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

/// Environment variable naming the ONNX Runtime shared library.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// How to fix a missing library, in one line.
pub const SETUP_HINT: &str = "run scripts/setup.sh (it unpacks libonnxruntime.so.1.31.1 from the PyPI onnxruntime wheel into .local/onnxruntime/) and `source scripts/env.sh`, or set ORT_DYLIB_PATH to that file";

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found: {0}; {SETUP_HINT}")]
    LibraryMissing(String),
    #[error("ONNX Runtime library {path} failed to load: {reason}; {SETUP_HINT}")]
    LibraryLoad { path: String, reason: String },
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
}

fn ort_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ort(e.to_string())
}

/// The library path: `$ORT_DYLIB_PATH`, else the repository-local default next to the executable's
/// workspace (`.local/onnxruntime/libonnxruntime.so.1.31.1` found by walking up from the cwd).
pub fn library_path() -> Result<PathBuf, RuntimeError> {
    if let Some(p) = std::env::var_os(ORT_DYLIB_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(RuntimeError::LibraryMissing(format!(
                "{ORT_DYLIB_ENV}={} is not a file",
                p.display()
            )))
        };
    }
    let rel = Path::new(".local/onnxruntime/libonnxruntime.so.1.31.1");
    let mut dir = std::env::current_dir().ok();
    while let Some(d) = dir {
        if d.join(rel).is_file() {
            return Ok(d.join(rel));
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Err(RuntimeError::LibraryMissing(format!(
        "{ORT_DYLIB_ENV} is not set and no {} above the current directory",
        rel.display()
    )))
}

static ENVIRONMENT: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// Loads ONNX Runtime once per process and returns its environment.
pub fn environment() -> Result<Environment, RuntimeError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = library_path()?;
            let builder = ort::init_from(&path).map_err(|e| RuntimeError::LibraryLoad {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            builder
                .with_name("splitnets")
                .build()
                .map_err(|e| RuntimeError::LibraryLoad {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
        })
        .clone()
}

/// Options for a session. One intra-op thread gives a sensor predictable latency.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    pub intra_op_threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            intra_op_threads: 1,
        }
    }
}

/// One session configuration for every model this project runs.
fn build_session(
    name: &str,
    bytes: &[u8],
    opts: SessionOptions,
    level: GraphOptimizationLevel,
) -> Result<Session, RuntimeError> {
    let env = environment()?;
    let model_err = |e: &dyn std::fmt::Display| RuntimeError::Model {
        model: name.to_string(),
        message: e.to_string(),
    };
    Session::builder(&env)
        .map_err(ort_err)?
        .with_optimization_level(level)
        .map_err(|e| model_err(&e))?
        .with_intra_threads(opts.intra_op_threads)
        .map_err(|e| model_err(&e))?
        .with_inter_threads(1)
        .map_err(|e| model_err(&e))?
        // Spinning burns a core between frames; frames arrive at camera rate, not back to back.
        .with_intra_op_spinning(false)
        .map_err(|e| model_err(&e))?
        .commit_from_memory(bytes)
        .map_err(|e| model_err(&e))
}

/// A loaded float model whose inputs and outputs the stages name: one in and one out for most
/// bundles, several when more than one tensor crosses the split.
pub struct OnnxModel {
    session: Session,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl OnnxModel {
    /// Builds a session from model bytes; `name` is used in errors.
    pub fn from_bytes(
        name: &str,
        bytes: &[u8],
        opts: SessionOptions,
    ) -> Result<Self, RuntimeError> {
        let session = build_session(name, bytes, opts, GraphOptimizationLevel::Level3)?;
        if session.inputs().is_empty() || session.outputs().is_empty() {
            return Err(RuntimeError::Model {
                model: name.into(),
                message: format!(
                    "expected inputs and outputs, found {} and {}",
                    session.inputs().len(),
                    session.outputs().len()
                ),
            });
        }
        let inputs = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(Self {
            session,
            name: name.to_string(),
            inputs,
            outputs,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's input names, in its order.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    /// The model's output names, in its order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs a one-input, one-output model on one float tensor; returns the output's shape and
    /// values.
    pub fn run(
        &mut self,
        shape: &[usize],
        data: &[f32],
    ) -> Result<(Vec<usize>, Vec<f32>), RuntimeError> {
        let mut out = [(Vec::new(), Vec::new())];
        self.run_all_into(&[(shape, data)], &mut out)?;
        let [(shape, values)] = out;
        Ok((shape, values))
    }

    /// Runs the model on its inputs (`inputs[i]` is input `i`: shape and values), writing every
    /// output (`outputs[j]` is output `j`: shape and values) into reused vectors, cleared first:
    /// once they have grown, this side allocates nothing per call but the input list.
    pub fn run_all_into(
        &mut self,
        inputs: &[(&[usize], &[f32])],
        outputs: &mut [(Vec<usize>, Vec<f32>)],
    ) -> Result<(), RuntimeError> {
        let name = &self.name;
        let model_err = |e: &dyn std::fmt::Display| RuntimeError::Model {
            model: name.clone(),
            message: e.to_string(),
        };
        if inputs.len() != self.inputs.len() || outputs.len() != self.outputs.len() {
            return Err(model_err(&format!(
                "has {} inputs and {} outputs; called with {} and {}",
                self.inputs.len(),
                self.outputs.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        let outs = if let [(shape, data)] = inputs {
            let input = TensorRef::from_array_view((*shape, *data)).map_err(|e| model_err(&e))?;
            self.session
                .run(ort::inputs![self.inputs[0].as_str() => input])
                .map_err(|e| model_err(&e))?
        } else {
            let mut values: Vec<(
                std::borrow::Cow<'_, str>,
                ort::session::SessionInputValue<'_>,
            )> = Vec::with_capacity(inputs.len());
            for (n, (shape, data)) in self.inputs.iter().zip(inputs) {
                let v = TensorRef::from_array_view((*shape, *data)).map_err(|e| model_err(&e))?;
                values.push((n.as_str().into(), v.into()));
            }
            self.session.run(values).map_err(|e| model_err(&e))?
        };
        for (n, (out_shape, out)) in self.outputs.iter().zip(outputs.iter_mut()) {
            let (shape, values) = outs[n.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| model_err(&e))?;
            out_shape.clear();
            out_shape.extend(shape.iter().map(|&d| d as usize));
            out.clear();
            out.extend_from_slice(values);
        }
        Ok(())
    }
}

/// A named float tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A model with any number of float inputs and outputs (graph cutting, calibration).
pub struct MultiIoModel {
    session: Session,
    name: String,
}

impl std::fmt::Debug for MultiIoModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiIoModel")
            .field("name", &self.name)
            .finish()
    }
}

impl MultiIoModel {
    /// `optimize: false` runs the graph exactly as written (no fusions, no constant folding), so
    /// a model cut in two computes exactly what the whole model computes.
    pub fn from_bytes(
        name: &str,
        bytes: &[u8],
        opts: SessionOptions,
        optimize: bool,
    ) -> Result<Self, RuntimeError> {
        let level = if optimize {
            GraphOptimizationLevel::Level3
        } else {
            GraphOptimizationLevel::Disable
        };
        let session = build_session(name, bytes, opts, level)?;
        Ok(Self {
            session,
            name: name.to_string(),
        })
    }

    pub fn output_names(&self) -> Vec<String> {
        self.session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect()
    }

    /// Runs on the given inputs; returns every output in the model's output order.
    pub fn run(&mut self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, RuntimeError> {
        let err = |e: &dyn std::fmt::Display| RuntimeError::Model {
            model: self.name.clone(),
            message: e.to_string(),
        };
        let mut values: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::new();
        for t in inputs {
            let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let v = TensorRef::from_array_view((dims, t.data.as_slice())).map_err(|e| err(&e))?;
            values.push((t.name.as_str().into(), v.into()));
        }
        let names = self.output_names();
        let outputs = self.session.run(values).map_err(|e| RuntimeError::Model {
            model: self.name.clone(),
            message: e.to_string(),
        })?;
        let mut out = Vec::new();
        for n in names {
            let (shape, data) = outputs[n.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(|e| RuntimeError::Model {
                    model: self.name.clone(),
                    message: e.to_string(),
                })?;
            out.push(NamedTensor {
                name: n,
                shape: shape.iter().map(|&d| d as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(out)
    }
}
