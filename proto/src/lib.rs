//! The contracts below both the daemons and the offline search.
//!
//! - [`wire`]: the gRPC schema `splitnets.v1` (sensor → aggregator feature link, predictions).
//! - [`onnx`]: ONNX IR types from the project's own schema, model file I/O and graph builders.
//! - [`codec`]: the feature codec: affine quantization to 2/4/6/8 bits, dense bit packing,
//!   float16/float32 passthrough.
//! - [`bundle`]: the split bundle on disk (`bundle.toml`, `head.onnx`, `tail.onnx`) and its digest.
//! - [`camera`]: the simulated cameras (occlusion and sensor noise per view), bit-identical in
//!   training and at run time.
//! - [`dataset`]: Fashion-MNIST in IDX format.
//! - [`pipeline`]: head, codec and tail in one process: the reference the distributed run must equal.
//! - [`runtime`]: loading ONNX Runtime and running single-input, single-output models.
//!
//! Nothing here links the training code; the search crate depends on this crate, never the
//! other way round.

pub mod bundle;
pub mod camera;
pub mod codec;
pub mod dataset;
pub mod onnx;
pub mod pipeline;
pub mod runtime;
pub mod wire;
