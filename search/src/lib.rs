//! Offline design of split networks.
//!
//! This slice trains one multi-view split CNN on Fashion-MNIST seen by simulated cameras,
//! exports its head and tail to ONNX, checks ONNX Runtime against the training framework, and
//! writes a split bundle the daemons load. The training loop sits behind [`train::train`] so the
//! architecture search reuses it and another burn backend can be switched in.

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
