"""Tiny ONNX models for MouthMap's tests: one that meets the serving contract
and several that each break one part of it. A few kilobytes each, committed
under tests/data/models/.

    python -m mouthmap_model.fixtures

The contract model is deterministic and easy to reason about: class k's score
for a frame is the mean brightness of the frame's k-th column band, so the
tests can check windowing and batching without a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import data as D

OUT = D.REPO / "tests" / "data" / "models"


def contract_model(classes: int = D.CLASSES, frames: int = 75, in_rank: int = 5, meta: dict | None = None) -> onnx.ModelProto:
    h, w = 46, 140
    shape_in = ["batch", frames, h, w, 1][:in_rank]
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, shape_in)
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", frames, 28])
    # [B, T, H, W(,1)] -> mean over H -> [B, T, W] -> MatMul [W, classes] band means -> softmax
    bands = np.zeros((w, 28), dtype=np.float32)
    for k in range(28):
        lo, hi = k * w // 28, (k + 1) * w // 28
        bands[lo:hi, k] = 1.0 / (hi - lo)
    nodes = []
    src = "frames"
    if in_rank == 5:
        nodes.append(helper.make_node("Squeeze", ["frames", "axis4"], ["sq"]))
        src = "sq"
    nodes += [
        helper.make_node("ReduceMean", [src, "axis2"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "bands"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.array([4], dtype=np.int64), "axis4"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(bands, "bands"),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    base = {
        "vocabulary": json.dumps(D.VOCAB + ["<blank>"]),
        "blank_index": str(D.BLANK),
        "normalization": json.dumps({"mean": 0.0, "std": 1.0}),
        "frames_per_window": str(frames),
        "frame_height": "46",
        "frame_width": "140",
        "fps": "25",
        "model_name": "tiny-contract",
        "model_version": "0.0.1",
    }
    base.update(meta or {})
    for k, v in base.items():
        if v is None:
            continue
        p = m.metadata_props.add()
        p.key, p.value = k, v
    return m


def fails_at_run() -> onnx.ModelProto:
    """The contract model with its output reshaped to 76 frames at the end:
    shapes as declared pass the contract check, the run fails."""
    m = contract_model(meta={"model_name": "tiny-fails-at-run"})
    for n in m.graph.node:
        if n.output[0] == "probs":
            n.output[0] = "probs_ok"
    m.graph.initializer.append(numpy_helper.from_array(np.array([-1, 76, 28], dtype=np.int64), "bad_shape"))
    m.graph.node.append(helper.make_node("Reshape", ["probs_ok", "bad_shape"], ["probs"]))
    return m


def fails_in_batches() -> onnx.ModelProto:
    """The contract model with its output reshaped to one batch row: a
    window at a time runs (its trial run passes), two or more at once give
    an output of the wrong shape, which the server refuses: a model that
    fails under load."""
    m = contract_model(meta={"model_name": "tiny-fails-in-batches"})
    for n in m.graph.node:
        if n.output[0] == "probs":
            n.output[0] = "probs_ok"
    m.graph.initializer.append(numpy_helper.from_array(np.array([1, -1, 28], dtype=np.int64), "one_row"))
    m.graph.node.append(helper.make_node("Reshape", ["probs_ok", "one_row"], ["probs"]))
    return m


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    models = {
        "tiny-contract.onnx": contract_model(),
        "tiny-no-vocabulary.onnx": contract_model(meta={"vocabulary": None}),
        "tiny-four-dim-input.onnx": contract_model(in_rank=4),
        "tiny-vocabulary-mismatch.onnx": contract_model(meta={"vocabulary": json.dumps(list("abc")), "blank_index": "2"}),
        "tiny-bad-blank.onnx": contract_model(meta={"blank_index": "99"}),
        # Its declared shapes pass; its graph fails when it runs.
        "tiny-fails-at-run.onnx": fails_at_run(),
        "tiny-fails-in-batches.onnx": fails_in_batches(),
        # Three broken parts at once: validation names every one.
        "tiny-many-problems.onnx": contract_model(meta={"blank_index": "99", "normalization": None, "fps": "30"}),
    }
    for name, m in models.items():
        onnx.checker.check_model(m)
        onnx.save(m, str(OUT / name))
        print(OUT / name)


if __name__ == "__main__":
    main()
