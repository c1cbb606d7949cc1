//! ONNX models: the IR types (generated from this crate's `onnx.proto`), file I/O,
//! and small builders for writing models that ONNX Runtime 1.31 loads.

use std::path::Path;

use prost::Message;

#[allow(clippy::all, missing_docs, unreachable_pub, unused_qualifications)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
pub use generated::*;

/// The IR version this project writes: ONNX Runtime 1.31 accepts ≤ 13; 10 is widely supported.
pub const WRITE_IR_VERSION: i64 = 10;
/// The default-domain opset this project writes.
pub const WRITE_OPSET: i64 = 17;

/// An ONNX file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read ONNX model {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("cannot write ONNX model {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error("{path} is not an ONNX model (protobuf decode failed: {cause})")]
    Decode {
        path: String,
        cause: prost::DecodeError,
    },
    #[error("ONNX model {0}")]
    Invalid(String),
}

/// Decodes a model from bytes.
pub fn decode_model(bytes: &[u8], origin: &str) -> Result<ModelProto, OnnxError> {
    ModelProto::decode(bytes).map_err(|cause| OnnxError::Decode {
        path: origin.to_string(),
        cause,
    })
}

/// Reads and decodes a model file.
pub fn read_model(path: &Path) -> Result<ModelProto, OnnxError> {
    let bytes = std::fs::read(path).map_err(|cause| OnnxError::Read {
        path: path.display().to_string(),
        cause,
    })?;
    decode_model(&bytes, &path.display().to_string())
}

/// Encodes and writes a model file.
pub fn write_model(model: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    std::fs::write(path, model.encode_to_vec()).map_err(|cause| OnnxError::Write {
        path: path.display().to_string(),
        cause,
    })
}

/// A tensor's element type as ONNX numbers it.
pub const FLOAT: i32 = tensor_proto::DataType::Float as i32;
pub const INT64: i32 = tensor_proto::DataType::Int64 as i32;
pub const INT32: i32 = tensor_proto::DataType::Int32 as i32;

/// A dimension of a value's shape: fixed or symbolic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
}

/// `ValueInfoProto` of a float tensor with the given dimensions.
pub fn float_value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Symbolic(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// The dimensions of a tensor-typed value, `None` where a dimension is symbolic or unknown.
pub fn value_dims(info: &ValueInfoProto) -> Option<Vec<Option<i64>>> {
    let Some(type_proto::Value::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// A float32 initializer stored as little-endian `raw_data`.
pub fn float_initializer(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    debug_assert_eq!(dims.iter().product::<i64>() as usize, values.len());
    let mut raw = Vec::with_capacity(values.len() * 4);
    for v in values {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        name: Some(name.to_string()),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// An int64 initializer (shapes, axes).
pub fn int64_initializer(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(INT64),
        name: Some(name.to_string()),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// Attribute constructors.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

/// A node in the default domain.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(name.into()),
        op_type: Some(op_type.into()),
        attribute: attributes,
        ..Default::default()
    }
}

/// Wraps a graph into a model with this project's IR version and opset.
pub fn model(graph: GraphProto, doc: &str) -> ModelProto {
    ModelProto {
        ir_version: Some(WRITE_IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(WRITE_OPSET),
        }],
        producer_name: Some("splitnets".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(doc.into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// Checks the few structural facts the runtime relies on: a graph, exactly one input that is not
/// an initializer, exactly one output, every node input produced somewhere.
pub fn check_single_io(model: &ModelProto, origin: &str) -> Result<(String, String), OnnxError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Invalid(format!("{origin} has no graph")))?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|v| v.name())
        .filter(|n| !inits.contains(n))
        .collect();
    if inputs.len() != 1 || graph.output.len() != 1 {
        return Err(OnnxError::Invalid(format!(
            "{origin} must have exactly one data input and one output, has inputs {inputs:?} and {} outputs",
            graph.output.len()
        )));
    }
    Ok((inputs[0].to_string(), graph.output[0].name().to_string()))
}

/// Bytes per element of an ONNX data type (0 when not fixed-size).
pub fn elem_bytes(data_type: i32) -> usize {
    use tensor_proto::DataType as D;
    match D::try_from(data_type).unwrap_or(D::Undefined) {
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 | D::Complex64 => 8,
        D::Float16 | D::Bfloat16 | D::Int16 | D::Uint16 => 2,
        D::Uint8
        | D::Int8
        | D::Bool
        | D::Float8e4m3fn
        | D::Float8e5m2
        | D::Float8e4m3fnuz
        | D::Float8e5m2fnuz => 1,
        D::Complex128 => 16,
        _ => 0,
    }
}

/// Integer values of a small integer tensor (shapes, axes), where present.
pub fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    use tensor_proto::DataType as D;
    match D::try_from(t.data_type()).ok()? {
        D::Int64 => {
            if !t.int64_data.is_empty() {
                Some(t.int64_data.clone())
            } else {
                let raw = t.raw_data.as_ref()?;
                Some(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                )
            }
        }
        D::Int32 => {
            if !t.int32_data.is_empty() {
                Some(t.int32_data.iter().map(|&v| i64::from(v)).collect())
            } else {
                let raw = t.raw_data.as_ref()?;
                Some(
                    raw.chunks_exact(4)
                        .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
                        .collect(),
                )
            }
        }
        _ => None,
    }
}

fn const_tensor(t: &TensorProto) -> splitnets_cost_model::graph::ConstTensor {
    splitnets_cost_model::graph::ConstTensor {
        dims: t.dims.iter().map(|&d| d.max(0) as usize).collect(),
        elem_bytes: elem_bytes(t.data_type()).max(1),
        int_values: int_values(t),
        float_values: float_values(t),
    }
}

/// Values of a small float32 tensor (at most 64 elements: scales, not weights).
pub fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type() != FLOAT || t.dims.iter().product::<i64>() > 64 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    let raw = t.raw_data.as_ref()?;
    Some(
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    )
}

/// The model's graph in the cost model's neutral form.
pub fn cost_graph(model: &ModelProto) -> Result<splitnets_cost_model::graph::GraphSpec, OnnxError> {
    use splitnets_cost_model::graph::{Attr, GraphSpec, NodeSpec};
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Invalid("has no graph".into()))?;
    let constants: std::collections::HashMap<String, _> = g
        .initializer
        .iter()
        .map(|t| (t.name().to_string(), const_tensor(t)))
        .collect();
    let mut inputs = Vec::new();
    let mut input_elem_bytes = Vec::new();
    for v in &g.input {
        if constants.contains_key(v.name()) {
            continue;
        }
        let dims = value_dims(v).ok_or_else(|| {
            OnnxError::Invalid(format!("input {:?} is not a tensor with a shape", v.name()))
        })?;
        let et = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => elem_bytes(t.elem_type()),
            _ => 4,
        };
        inputs.push((
            v.name().to_string(),
            dims.iter()
                .map(|d| d.and_then(|x| usize::try_from(x).ok()))
                .collect(),
        ));
        input_elem_bytes.push(et.max(1));
    }
    let nodes = g
        .node
        .iter()
        .map(|n| {
            let attrs = n
                .attribute
                .iter()
                .map(|a| {
                    use attribute_proto::AttributeType as T;
                    let v = match a.r#type() {
                        T::Int => Attr::Int(a.i()),
                        T::Ints => Attr::Ints(a.ints.clone()),
                        T::Float => Attr::Float(a.f()),
                        T::Floats => Attr::Floats(a.floats.clone()),
                        T::String => Attr::Str(String::from_utf8_lossy(a.s()).into_owned()),
                        T::Tensor => {
                            a.t.as_ref()
                                .map_or(Attr::Other, |t| Attr::Tensor(const_tensor(t)))
                        }
                        _ => Attr::Other,
                    };
                    (a.name().to_string(), v)
                })
                .collect();
            NodeSpec {
                name: n.name().to_string(),
                op_type: n.op_type().to_string(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs,
            }
        })
        .collect();
    Ok(GraphSpec {
        inputs,
        input_elem_bytes,
        outputs: g.output.iter().map(|o| o.name().to_string()).collect(),
        constants,
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_round_trip_through_bytes() {
        let g = GraphProto {
            node: vec![node("Relu", "r", &["x"], &["y"], vec![])],
            name: Some("g".into()),
            input: vec![float_value_info(
                "x",
                &[Dim::Symbolic("n".into()), Dim::Fixed(3)],
            )],
            output: vec![float_value_info(
                "y",
                &[Dim::Symbolic("n".into()), Dim::Fixed(3)],
            )],
            initializer: vec![float_initializer("w", &[2], &[1.0, -2.5])],
            ..Default::default()
        };
        let m = model(g, "test");
        let bytes = m.encode_to_vec();
        let back = decode_model(&bytes, "mem").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode_to_vec(), bytes);
        let io = check_single_io(&back, "mem").unwrap();
        assert_eq!(io, ("x".to_string(), "y".to_string()));
        assert_eq!(
            value_dims(&back.graph.as_ref().unwrap().input[0]),
            Some(vec![None, Some(3)])
        );
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_file() {
        let err = decode_model(&[0xff, 0xff, 0xff], "bad.onnx").unwrap_err();
        assert!(err.to_string().contains("bad.onnx"), "{err}");
    }
}
