"""A training checkpoint from an exported LipNet ONNX file (the committed
version 1: 3D convolutions with batch norm folded in, ONNX GRUs), so a new
run can fine-tune the committed weights (`train --init`) on a machine that
does not have the run that made them.

    python -m mouthmap_model.from_onnx ../models/mouthmap-lipnet-grid-s1/1/model.onnx --out runs/v1-init.pt

Batch norm was folded into each convolution's weights and bias at export.
It is split out again so that training (batch statistics) starts where the
exported model is: each convolution keeps the folded weights, and its batch
norm gets the mean and spread of that convolution's output over training
crops as running statistics and as its affine scale and shift, so the
normalisation cancels out on data like the training data. The checkpoint's
output is checked against ONNX Runtime's on validation crops.
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

from . import data as D
from .net import LipNet, Served


def _gates(w: np.ndarray) -> np.ndarray:
    """ONNX orders a GRU's gates z, r, h; PyTorch r, z, n."""
    z, r, h = np.split(w, 3, axis=0)
    return np.concatenate([r, z, h], axis=0)


def convert(path: Path, arrays: list[np.ndarray]) -> dict:
    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    meta = {p.key: p.value for p in m.metadata_props}
    norm = json.loads(meta["normalization"])
    mean, std = float(norm["mean"]), float(norm["std"])
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    grus = [n for n in m.graph.node if n.op_type == "GRU"]
    matmul = [n for n in m.graph.node if n.op_type == "MatMul"]
    if len(convs) != 3 or len(grus) != 2 or len(matmul) != 1:
        raise SystemExit(f"{path}: not the reference LipNet graph (3 Conv, 2 GRU, 1 MatMul)")
    for g in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in g.attribute}
        if attrs.get("linear_before_reset", 0) != 1 or attrs.get("direction") != b"bidirectional":
            raise SystemExit(f"{path}: GRU {g.name} is not a bidirectional GRU with linear_before_reset=1")

    net = LipNet(D.CLASSES)
    conv_layers = [l for l in net.front if isinstance(l, torch.nn.Conv3d)]
    bn_layers = [l for l in net.front if isinstance(l, torch.nn.BatchNorm3d)]
    sample = np.stack([a[:75] for a in arrays if len(a) >= 75])
    x = (torch.from_numpy(sample).float() / 255.0 - mean) / std
    x = x.unsqueeze(1)  # [B, 1, T, H, W]
    net.eval()
    with torch.no_grad():
        for conv, bn, node in zip(conv_layers, bn_layers, convs):
            w, b = init[node.input[1]], init[node.input[2]]
            conv.weight.copy_(torch.from_numpy(w))
            # The folded convolution without its bias, on crops like the
            # training crops: its per-channel mean and spread.
            y = conv(_upto(net, conv, x))
            mu = y.mean(dim=(0, 2, 3, 4))
            var = y.var(dim=(0, 2, 3, 4), unbiased=False)
            s = torch.sqrt(var + bn.eps)
            bn.running_mean.copy_(mu)
            bn.running_var.copy_(var)
            bn.weight.copy_(s)
            bn.bias.copy_(torch.from_numpy(b) + mu)
        for layer, node in enumerate(grus):
            w, r, bias = init[node.input[1]], init[node.input[2]], init[node.input[3]]
            h = r.shape[-1]
            for d, suffix in enumerate(["", "_reverse"]):
                getattr(net.gru, f"weight_ih_l{layer}{suffix}").copy_(torch.from_numpy(_gates(w[d])))
                getattr(net.gru, f"weight_hh_l{layer}{suffix}").copy_(torch.from_numpy(_gates(r[d])))
                getattr(net.gru, f"bias_ih_l{layer}{suffix}").copy_(torch.from_numpy(_gates(bias[d, : 3 * h])))
                getattr(net.gru, f"bias_hh_l{layer}{suffix}").copy_(torch.from_numpy(_gates(bias[d, 3 * h :])))
        net.out.weight.copy_(torch.from_numpy(init[matmul[0].input[1]].T))
        net.out.bias.copy_(torch.from_numpy(init["net.out.bias"]))
    validation = json.loads(meta.get("validation", "{}"))
    return {
        "model": net.state_dict(),
        "mean": mean,
        "std": std,
        "step": json.loads(meta.get("training", "{}")).get("steps", 0),
        "val_wer": validation.get("wer_greedy", float("nan")),
        "from_onnx": str(path),
    }


def _upto(net: LipNet, stop: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The front end's input to layer `stop`."""
    for layer in net.front:
        if layer is stop:
            return x
        x = layer(x)
    raise ValueError("layer not in the front end")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", help="an exported LipNet (3D convolutions): models/NAME/1/model.onnx")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"), help="crops for the batch statistics and the check")
    p.add_argument("--out", required=True, help="checkpoint to write (train --init reads it)")
    p.add_argument("--clips", type=int, default=64, help="training clips whose crops set the batch statistics")
    args = p.parse_args()
    manifest, arrays = D.load(Path(args.data))
    train = [arrays[e["clip"]] for e in manifest["clips"] if e["split"] == "train"][: args.clips]
    val = [e for e in manifest["clips"] if e["split"] == "validation" and len(arrays[e["clip"]]) >= 75][:8]
    ckpt = convert(Path(args.onnx), train)
    net = LipNet(D.CLASSES)
    net.load_state_dict(ckpt["model"])
    net.eval()
    x = np.stack([arrays[e["clip"]][:75] for e in val]).astype(np.float32) / 255.0
    x = ((x - ckpt["mean"]) / ckpt["std"])[..., None]
    with torch.no_grad():
        ours = Served(net)(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    theirs = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(ours - theirs).max())
    print(f"largest difference from ONNX Runtime on {len(val)} validation clips: {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit("the converted weights do not reproduce the ONNX model")
    torch.save(ckpt, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
