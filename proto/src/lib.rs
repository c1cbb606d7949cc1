//! The contracts: what crosses a process boundary, and nothing that executes a model.
//!
//! - [`wire`]: the gRPC schema `splitnets.v1` (sensor → aggregator feature link, predictions).
//! - [`codec`]: the feature codec: affine quantization to 2/4/6/8 bits, dense bit packing,
//!   float16/float32 passthrough.
//! - [`bundle`]: the split bundle on disk (`bundle.toml`, `head.onnx`, `tail.onnx`), its digest,
//!   and the camera rig it was trained for.
//! - [`bundle_set`]: variants of one network preloaded for live split switching.
//!
//! This crate builds without ONNX Runtime and without the ONNX schema: the daemons, the offline
//! search and foreign clients (the `.proto` compiles with Python's grpcio-tools) all meet here.

pub mod bundle;
pub mod bundle_set;
pub mod codec;
pub mod untrusted;
pub mod wire;
