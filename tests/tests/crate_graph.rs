//! The crate graph keeps its promises: the daemons never link the training code or the ONNX
//! schema, and the contracts build without ONNX Runtime.

use std::collections::BTreeSet;
use std::process::Command;

fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn daemons_link_neither_training_nor_onnx_schema_and_contracts_need_no_onnx_runtime() {
    for daemon in ["sensor-node", "aggregator"] {
        let deps = normal_dependencies(daemon);
        assert!(deps.contains("splitnets-runtime"), "{daemon}: {deps:?}");
        for forbidden in [
            "burn",
            "splitnets-search",
            "splitnets-nas",
            "splitnets-onnx",
        ] {
            assert!(!deps.contains(forbidden), "{daemon} depends on {forbidden}");
        }
    }
    let contracts = normal_dependencies("splitnets-proto");
    for forbidden in ["ort", "splitnets-runtime", "splitnets-onnx", "burn"] {
        assert!(
            !contracts.contains(forbidden),
            "splitnets-proto depends on {forbidden}"
        );
    }
}
