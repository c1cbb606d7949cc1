//! Generates Rust from the project's `.proto` files with protox (pure Rust; no `protoc`).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let wire = root.join("splitnets/v1/splitnets.proto");
    let onnx = root.join("onnx/onnx.proto");
    for p in [&wire, &onnx] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let wire_fds = protox::compile([&wire], [&root])?;
    // Served by the aggregator's reflection service (grpcurl-style discovery).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("splitnets_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&wire_fds),
    )?;
    tonic_prost_build::configure()
        // Feature payloads become `bytes::Bytes`: decoded as a slice of the receive buffer.
        .bytes(".splitnets.v1.QuantizedTensor.payload")
        .build_client(true)
        .build_server(true)
        .compile_fds(wire_fds)?;

    let onnx_fds = protox::compile([&onnx], [&root])?;
    tonic_prost_build::configure()
        // Initializer bytes are large; keep them as `Bytes` to slice without copying.
        .bytes(".onnx.TensorProto.raw_data")
        .build_client(false)
        .build_server(false)
        .compile_fds(onnx_fds)?;
    Ok(())
}
