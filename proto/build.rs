//! Generates Rust from the project's `.proto` files with protox (pure Rust; no `protoc`).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let wire = root.join("splitnets/v1/splitnets.proto");
    println!("cargo:rerun-if-changed={}", wire.display());

    let wire_fds = protox::compile([&wire], [&root])?;
    // Served by the aggregator's reflection service (grpcurl-style discovery).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("splitnets_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&wire_fds),
    )?;
    tonic_prost_build::configure()
        // Feature payloads become `bytes::Bytes`: decoded as a slice of the receive buffer.
        .bytes(".splitnets.v1.FeatureFrame.payload")
        .build_client(true)
        .build_server(true)
        .compile_fds(wire_fds)?;

    Ok(())
}
