//! Execution of split bundles: ONNX Runtime loading and sessions ([`onnx_runtime`]), the head and
//! tail stages every process runs ([`stage`]), and the in-process reference pipeline built from
//! them ([`pipeline`]).
//!
//! The contracts (`splitnets-proto`) build without this crate; this crate adds ONNX Runtime.
//! Everything here blocks: keep it off async worker threads.

pub mod onnx_runtime;
pub mod pipeline;
pub mod stage;

pub use onnx_runtime::{OnnxModel, RuntimeError, SessionOptions};
pub use pipeline::{LocalPipeline, LocalTimings};
pub use stage::{HeadStage, HeadTimings, StageError, StageTensor, TailStage, TailTimings, argmax};
