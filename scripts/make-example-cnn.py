#!/usr/bin/env python3
"""Writes a stand-in for "your own model": a small MobileNetV3-style ImageNet-shaped classifier as
PyTorch's exporter writes it, with the quirks that trip simple planners:

  - input `input` of shape [batch_size, 3, 224, 224] (symbolic batch);
  - HardSwish / HardSigmoid activations, a squeeze-excite block (GlobalAveragePool, 1x1 convs,
    HardSigmoid, Mul), inverted residual blocks with Add;
  - the flatten written as Shape -> Gather -> Unsqueeze -> Concat -> Reshape;
  - a MatMul + Add classifier with 1000 outputs, plus `labels.txt`.

Weights are seeded random (He-scaled, BatchNorm folded): it is not trained, so its classes mean
nothing, but every number the split tools check (float exactness, quantized agreement with the
whole model, link bytes) is as real as with a trained model.

    python3 scripts/make-example-cnn.py OUT_DIR    # writes OUT_DIR/model.onnx, OUT_DIR/labels.txt
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
nodes, inits = [], []
count = [0]


def name(p):
    count[0] += 1
    return f"{p}_{count[0]}"


def const(arr, p="w"):
    n = name(p)
    inits.append(numpy_helper.from_array(np.asarray(arr), n))
    return n


def conv(x, cin, cout, k, stride=1, group=1, act=None):
    w = rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k)).astype(np.float32)
    b = rng.normal(0, 0.05, cout).astype(np.float32)
    y = name("conv")
    nodes.append(helper.make_node("Conv", [x, const(w), const(b, "b")], [y], kernel_shape=[k, k],
                                  strides=[stride, stride], pads=[k // 2] * 4, group=group, name=y))
    return activation(y, act)


def activation(x, act):
    if act is None:
        return x
    y = name(act.lower())
    nodes.append(helper.make_node(act, [x], [y], name=y))
    return y


def block(x, cin, exp, cout, k, stride, act, se):
    h = conv(x, cin, exp, 1, act=act)
    h = conv(h, exp, exp, k, stride=stride, group=exp, act=act)
    if se:
        s = name("gap")
        nodes.append(helper.make_node("GlobalAveragePool", [h], [s], name=s))
        s = conv(s, exp, max(8, exp // 4), 1, act="Relu")
        s = conv(s, max(8, exp // 4), exp, 1, act="HardSigmoid")
        m = name("se_mul")
        nodes.append(helper.make_node("Mul", [h, s], [m], name=m))
        h = m
    h = conv(h, exp, cout, 1)
    if stride == 1 and cin == cout:
        y = name("add")
        nodes.append(helper.make_node("Add", [x, h], [y], name=y))
        return y
    return h


x = conv("input", 3, 16, 3, stride=2, act="HardSwish")
for cin, exp, cout, k, s, act, se in [
    (16, 16, 16, 3, 2, "Relu", True),
    (16, 64, 24, 3, 2, "Relu", False),
    (24, 72, 24, 3, 1, "Relu", False),
    (24, 96, 40, 5, 2, "HardSwish", True),
    (40, 240, 40, 5, 1, "HardSwish", True),
    (40, 240, 48, 5, 1, "HardSwish", True),
    (48, 288, 96, 5, 2, "HardSwish", True),
    (96, 576, 96, 5, 1, "HardSwish", True),
]:
    x = block(x, cin, exp, cout, k, s, act, se)
x = conv(x, 96, 576, 1, act="HardSwish")
g = name("gap")
nodes.append(helper.make_node("GlobalAveragePool", [x], [g], name=g))
# PyTorch's `x.view(x.size(0), -1)`.
shp, n, n1, tgt, flat = name("shape"), name("gather"), name("unsqueeze"), name("concat"), name("flatten")
nodes += [
    helper.make_node("Shape", [g], [shp], name=shp),
    helper.make_node("Gather", [shp, const(np.array(0, dtype=np.int64), "zero")], [n], axis=0, name=n),
    helper.make_node("Unsqueeze", [n, const(np.array([0], dtype=np.int64), "axes")], [n1], name=n1),
    helper.make_node("Concat", [n1, const(np.array([-1], dtype=np.int64), "minus1")], [tgt], axis=0, name=tgt),
    helper.make_node("Reshape", [g, tgt], [flat], name=flat),
]
h = name("fc1")
nodes.append(helper.make_node("MatMul", [flat, const(rng.normal(0, np.sqrt(2 / 576), (576, 1024)).astype(np.float32))], [h], name=h))
hb = name("fc1_bias")
nodes.append(helper.make_node("Add", [h, const(np.zeros(1024, np.float32), "b")], [hb], name=hb))
h = activation(hb, "HardSwish")
o = name("fc2")
nodes.append(helper.make_node("MatMul", [h, const(rng.normal(0, np.sqrt(1 / 1024), (1024, 1000)).astype(np.float32))], [o], name=o))
nodes.append(helper.make_node("Add", [o, const(rng.normal(0, 0.01, 1000).astype(np.float32), "b")], ["logits"], name="logits"))

graph = helper.make_graph(
    nodes, "example_cnn",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, 224, 224])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 1000])],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="splitnets-example")
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
out = sys.argv[1] if len(sys.argv) > 1 else "out/example-model"
os.makedirs(out, exist_ok=True)
onnx.save(model, os.path.join(out, "model.onnx"))
with open(os.path.join(out, "labels.txt"), "w") as f:
    f.writelines(f"class {i:03d}\n" for i in range(1000))
print(f"wrote {out}/model.onnx ({len(nodes)} nodes) and {out}/labels.txt")
