"""Minimal reproduction, ready to file upstream (microsoft/onnxruntime):
the CPU execution provider crashes with SIGSEGV while creating a session for
a two-node float16 graph, Transpose -> MatMul (B an initializer), at graph
optimisation level ORT_ENABLE_ALL. ORT_ENABLE_EXTENDED runs it, and so does a
single float16 MatMul without the Transpose.

    python repro/ort_fp16_transpose_matmul.py ORT_ENABLE_EXTENDED   # prints "ran (1, 75, 28)"
    python repro/ort_fp16_transpose_matmul.py ORT_ENABLE_ALL        # Segmentation fault (exit 139)

Seen with onnxruntime 1.31.1 (PyPI wheel), Python 3.11, Linux x86_64, on an
Intel Xeon with AVX-512 FP16. Found by cutting MouthMap's float16 model
(`python -m mouthmap_model.quantize`) node by node: every prefix up to the
GRU's last Transpose runs, the first with the output layer's MatMul crashes.
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

level = sys.argv[1] if len(sys.argv) > 1 else "ORT_ENABLE_ALL"
graph = helper.make_graph(
    [
        helper.make_node("Transpose", ["x"], ["a"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["a", "b"], ["y"]),
    ],
    "transpose_matmul_fp16",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [75, 1, 512])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 75, 28])],
    [numpy_helper.from_array(np.random.rand(512, 28).astype(np.float16), "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
options = ort.SessionOptions()
options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
print("session created", flush=True)
out = session.run(None, {"x": np.random.rand(75, 1, 512).astype(np.float16)})[0]
print("ran", out.shape, "onnxruntime", ort.__version__)
