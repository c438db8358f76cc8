"""Rewrite an exported LipNet-family model's 3D-convolution front end as
per-frame 2D convolutions: the same numbers, in operators ONNX Runtime runs
faster (and in int8, which it cannot do for 3D convolutions).

    python -m mouthmap_model.frames2d --model ../models/mouthmap-lipnet-grid-s1/1/model.onnx \\
        --out /tmp/frames2d.onnx --version 1.1.0

Works from the ONNX file alone (no checkpoint): the three Conv nodes' weights
(batch norm already folded in by the export) become `FrameConv` blocks, the
new front end is exported and spliced in where the old one produced the
recurrent layers' input; everything after it is kept as it is. Checked
against the original on validation crops (max abs difference 1e-5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from . import data as D
from .export import set_metadata


class FoldedFrameConv(nn.Module):
    """A 3D convolution (temporal kernel 3, padding 1, batch norm folded)
    as a 2D one over each frame and its neighbours, then ReLU and a 2x2
    max-pool (the blocks of `net.LipNet`)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride: list[int], pads: list[int]):
        super().__init__()
        c_out, c_in, kt, kh, kw = weight.shape
        assert kt == 3 and stride[0] == 1 and pads[0] == 1 and pads[3] == 1, "temporal kernel 3, padding 1"
        self.conv = nn.Conv2d(c_in * kt, c_out, (kh, kw), stride=stride[1:], padding=(pads[1], pads[2]))
        with torch.no_grad():
            w = torch.from_numpy(weight.copy()).permute(0, 2, 1, 3, 4).reshape(c_out, kt * c_in, kh, kw)
            self.conv.weight.copy_(w)
            self.conv.bias.copy_(torch.from_numpy(bias.copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        pad = torch.zeros_like(x[:, :1])
        xp = torch.cat([pad, x, pad], dim=1)
        stacked = torch.cat([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], dim=2)
        y = self.conv(stacked.reshape(b * t, 3 * c, h, w))
        y = torch.nn.functional.max_pool2d(torch.relu(y), 2)
        return y.reshape(b, t, *y.shape[1:])


class Front(nn.Module):
    """frames [B, T, H, W, 1] -> features [B, T, C*h*w], as the 3D front end flattened them."""

    def __init__(self, blocks: list[FoldedFrameConv]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 1, 4, 2, 3)
        for block in self.blocks:
            x = block(x)
        b, t = x.shape[:2]
        return x.reshape(b, t, -1)


def convert(src: Path, out: Path, features: str, version: str | None) -> None:
    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 3, f"expected the three front-end convolutions, found {len(convs)}"
    blocks = []
    for n in convs:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        w, b = inits[n.input[1]], inits[n.input[2]]
        blocks.append(FoldedFrameConv(w, b, list(attrs.get("strides", [1, 1, 1])), list(attrs["pads"])))
    front = Front(blocks).eval()
    frames_name = g.input[0].name
    tmp = out.with_suffix(".front.onnx")
    torch.onnx.export(front, (torch.rand(2, 75, 46, 140, 1),), str(tmp), input_names=[frames_name],
                      output_names=[features], dynamic_axes={frames_name: {0: "batch"}, features: {0: "batch"}},
                      opset_version=17, dynamo=False)
    f = onnx.load(str(tmp))
    tmp.unlink()
    # Rename the front end's internals apart from the original's.
    rename = {}
    for n in f.graph.node:
        for i, o in enumerate(n.output):
            if o != features:
                rename[o] = "front2d/" + o
                n.output[i] = rename[o]
    for init in f.graph.initializer:
        rename[init.name] = "front2d/" + init.name
        init.name = rename[init.name]
    for n in f.graph.node:
        n.name = "front2d/" + n.name
        for i, x in enumerate(n.input):
            n.input[i] = rename.get(x, x)
    # The original's nodes still needed once `features` is given.
    producer = {o: n for n in g.node for o in n.output}
    keep, stack = set(), [o.name for o in g.output]
    while stack:
        t = stack.pop()
        if t == features or t not in producer or id(producer[t]) in keep:
            continue
        keep.add(id(producer[t]))
        stack.extend(x for x in producer[t].input if x)
    assert features in producer, f"no tensor {features!r} in the model: pass --features"
    kept = [n for n in g.node if id(n) in keep]
    used = {x for n in kept for x in n.input}
    new_inits = [i for i in g.initializer if i.name in used] + list(f.graph.initializer)
    del g.node[:]
    g.node.extend(list(f.graph.node) + kept)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    del g.value_info[:]
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    meta["graph"] = "frames2d"
    if version:
        meta["model_version"] = version
    set_metadata(out, meta)


def check(src: Path, out: Path) -> float:
    manifest, arrays = D.load(D.REPO / "model" / "data")
    sess_a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    sess_b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    norm = json.loads(sess_a.get_modelmeta().custom_metadata_map["normalization"])
    val = [e for e in manifest["clips"] if e["split"] == "validation"][:4]
    x = np.stack([arrays[e["clip"]][:75] for e in val]).astype(np.float32) / 255.0
    x = ((x - norm["mean"]) / norm["std"])[..., None].astype(np.float32)
    name = sess_a.get_inputs()[0].name
    return float(np.abs(sess_a.run(None, {name: x})[0] - sess_b.run(None, {name: x})[0]).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--features", default="/net/Reshape_output_0",
                   help="the tensor the front end hands the recurrent layers ([B, T, C*h*w])")
    p.add_argument("--version", help="model_version written into the metadata")
    args = p.parse_args()
    src, out = Path(args.model), Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(src, out, args.features, args.version)
    diff = check(src, out)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, max abs difference from {src.name} {diff:.2e}")
    if diff > 1e-5:
        raise SystemExit("the rewritten model differs from the original by more than 1e-5")


if __name__ == "__main__":
    main()
