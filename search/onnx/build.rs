//! Generates the ONNX IR types from `onnx.proto` with protox (pure Rust; no `protoc`).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let onnx = root.join("onnx.proto");
    println!("cargo:rerun-if-changed={}", onnx.display());
    let fds = protox::compile([&onnx], [&root])?;
    tonic_prost_build::configure()
        // Initializer bytes are large; keep them as `Bytes` to slice without copying.
        .bytes(".onnx.TensorProto.raw_data")
        .build_client(false)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
