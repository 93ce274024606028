"""MobileNetV2 written straight to ONNX, for benchmarks of the offload server.

The offload server runs ONNX and batches; the benchmark model in ``bench/convnet224.tflite`` is
LiteRT-only and fixed at batch 1. This builds the same architecture (MobileNetV2, 224x224x3, 1,000
logits) as an ONNX graph with a dynamic batch dimension, from NumPy alone: no TensorFlow, no
converter, so the bytes depend only on NumPy's seeded generator and the ``onnx`` package.

Weights are random (He-normal, batch normalisation folded away: meaningless answers, realistic
cost) and stored as float16 to halve the file; a ``Cast`` after each initialiser makes the graph
compute in float32, and ONNX Runtime folds those casts once when it loads the model. The input is
NHWC float32 like the LiteRT models' (a ``Transpose`` to NCHW comes first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20240611
OPSET = 17
# MobileNetV2's inverted residual blocks: (expansion, channels, repeats, first stride).
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: to a multiple of 8, never more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def weight(self, shape: tuple[int, ...], std: float) -> str:
        """A float16 initialiser, cast to float32 in the graph."""
        stored = self.name("w16")
        values = (self.rng.standard_normal(shape) * std).astype(np.float16)
        self.initializers.append(numpy_helper.from_array(values, stored))
        out = self.name("w")
        self.nodes.append(helper.make_node("Cast", [stored], [out], to=TensorProto.FLOAT))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        *,
        k: int = 1,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        fan_in = cin // groups * k * k
        w = self.weight((cout, cin // groups, k, k), np.sqrt((2.0 if relu6 else 1.0) / fan_in))
        bias = self.name("b")
        self.initializers.append(numpy_helper.from_array(np.zeros(cout, np.float32), bias))
        out = self.name("conv")
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, bias],
                [out],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
        )
        if not relu6:
            return out
        clipped = self.name("relu6")
        lo, hi = self.name("lo"), self.name("hi")
        self.initializers += [
            numpy_helper.from_array(np.array(0.0, np.float32), lo),
            numpy_helper.from_array(np.array(6.0, np.float32), hi),
        ]
        self.nodes.append(helper.make_node("Clip", [out, lo, hi], [clipped]))
        return clipped

    def add(self, a: str, b: str) -> str:
        out = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out


def mobilenet_v2(alpha: float = 1.0, classes: int = 1000, seed: int = SEED) -> onnx.ModelProto:
    """MobileNetV2 (width ``alpha``) as an ONNX model: ``input`` FP32 ``[N, 224, 224, 3]`` to
    ``logits`` FP32 ``[N, classes]``."""
    g = _Graph(seed)
    nchw = g.name("nchw")
    g.nodes.append(helper.make_node("Transpose", ["input"], [nchw], perm=[0, 3, 1, 2]))
    channels = _divisible(32 * alpha)
    x = g.conv(nchw, 3, channels, k=3, stride=2)
    for expansion, c, repeats, first_stride in BLOCKS:
        out_channels = _divisible(c * alpha)
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            hidden = channels * expansion
            y = x if expansion == 1 else g.conv(x, channels, hidden)
            y = g.conv(y, hidden, hidden, k=3, stride=stride, groups=hidden)
            y = g.conv(y, hidden, out_channels, relu6=False)
            x = g.add(x, y) if stride == 1 and channels == out_channels else y
            channels = out_channels
    last = _divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = g.conv(x, channels, last)
    pooled, flat = g.name("pool"), g.name("flat")
    g.nodes += [
        helper.make_node("GlobalAveragePool", [x], [pooled]),
        helper.make_node("Flatten", [pooled], [flat], axis=1),
    ]
    w = g.weight((last, classes), np.sqrt(1.0 / last))
    bias = g.name("b")
    g.initializers.append(numpy_helper.from_array(np.zeros(classes, np.float32), bias))
    matmul = g.name("matmul")
    g.nodes += [
        helper.make_node("MatMul", [flat, w], [matmul]),
        helper.make_node("Add", [matmul, bias], ["logits"]),
    ]
    graph = helper.make_graph(
        g.nodes,
        f"mobilenet_v2_{alpha}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 224, 224, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgefleet"
    )
    model.ir_version = 8  # readable by every ONNX Runtime from 1.10 on
    onnx.checker.check_model(model)
    return model


def write(path: Path, alpha: float = 1.0) -> Path:
    path.write_bytes(mobilenet_v2(alpha).SerializeToString())
    return path


if __name__ == "__main__":
    import sys

    out = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parent / "bench" / "convnet224.onnx"
    )
    print(write(out, float(sys.argv[2]) if len(sys.argv) > 2 else 1.0))
