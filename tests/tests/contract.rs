//! The wire contract is not Rust-only: Python's standard gRPC tooling compiles it, and a message
//! Python encodes decodes in Rust with every field intact.

use std::process::Command;

use prost::Message;
use splitnets_proto::wire::{SensorMessage, sensor_message};

#[test]
fn python_grpc_tools_compile_the_contract_and_interoperate() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let out = tempfile::tempdir().unwrap();
    let codegen = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", root.display()))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg("splitnets/v1/splitnets.proto")
        .output()
        .expect("python3 runs");
    assert!(
        codegen.status.success(),
        "grpc_tools.protoc failed (scripts/setup.sh installs grpcio-tools): {}",
        String::from_utf8_lossy(&codegen.stderr)
    );
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
from splitnets.v1 import splitnets_pb2 as pb, splitnets_pb2_grpc as rpc
assert hasattr(rpc, "FeatureLinkStub") and hasattr(rpc, "PredictionsStub")
m = pb.SensorMessage(frame=pb.FeatureFrame(
    sequence=42, capture_time_unix_ns=7, sensor_ns=900, queue_ns=11,
    scale=[0.5], zero_point=[3], payload=b"\x01\x02\x03"))
sys.stdout.buffer.write(m.SerializeToString())
"#;
    let py = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let m = SensorMessage::decode(py.stdout.as_slice()).unwrap();
    let Some(sensor_message::Kind::Frame(f)) = m.kind else {
        panic!("not a frame: {m:?}")
    };
    assert_eq!(f.sequence, Some(42));
    assert_eq!(f.capture_time_unix_ns, Some(7));
    assert_eq!((f.sensor_ns, f.queue_ns), (Some(900), Some(11)));
    assert_eq!(
        (f.scale.clone(), f.zero_point.clone()),
        (vec![0.5], vec![3])
    );
    assert_eq!(&f.payload[..], b"\x01\x02\x03");
}
