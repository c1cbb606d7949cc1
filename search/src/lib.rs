//! Offline design of split networks.
//!
//! - Training a hand-designed split network: [`data`] (multi-view batches from the simulated
//!   cameras), [`model`] (the split CNN in burn), [`train`] (the loop, backend behind
//!   [`train::TrainBackend`]), [`export`] (weights → ONNX head and tail), [`make_bundle`]
//!   (evaluate with the runtime's head and tail stages, check ONNX Runtime against burn, write
//!   the bundle).
//! - Cutting existing networks: [`cuts`] (every down-closed node set), [`onnx_cut`] (head and
//!   tail ONNX of a cut), [`plan`] (costs under a profile, Pareto set, table, CSV, SVG, the JPEG
//!   baseline), [`rebundle`] (a bundle re-split at another tensor or with another codec).
//! - Measuring the machine: [`calibrate`] (ONNX Runtime micro-benchmarks → a host profile).
//!
//! The split-aware architecture search is the `splitnets-nas` crate (`search/nas`).

pub mod calibrate;
pub mod cuts;
pub mod data;
pub mod export;
pub mod make_bundle;
pub mod model;
pub mod onnx_cut;
pub mod plan;
pub mod rebundle;
pub mod train;
pub mod user_model;
