"""Export a checkpoint to ONNX with the serving contract and its metadata.

    python -m mouthmap_model.export --checkpoint runs/lipnet/last.pt --out ../models/mouthmap-lipnet-grid-s1/2/model.onnx

The weights exported are the checkpoint's moving average (`--weights ema`,
what training evaluated) when it has one, else its last weights.

Input `frames` float32 [batch, 75, 46, 140, 1], normalised as the metadata's
`normalization` says; output `probs` float32 [batch, 75, classes], CTC
probabilities. Checks ONNX Runtime against PyTorch (max abs difference 1e-4).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from . import data as D
from .carry import summary
from .net import Served, Served2D, lipnet_of, load_checkpoint

MODEL_NAME = "mouthmap-lipnet-grid-s1"
MODEL_VERSION = "2.0.0"


def metadata(ckpt: dict, extra: dict | None = None) -> dict[str, str]:
    meta = {
        "mouthmap.contract": "ctc-window/1",
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "vocabulary": json.dumps(D.VOCAB + ["<blank>"]),
        "blank_index": str(D.BLANK),
        "normalization": json.dumps(
            {"formula": "(pixel / 255 - mean) / std", "mean": ckpt["mean"], "std": ckpt["std"]}
        ),
        "frame_height": "46",
        "frame_width": "140",
        "frames_per_window": "75",
        "fps": str(D.FPS),
        "output": "probabilities",
        "training_data": json.dumps(
            {
                "corpus": "GRID speaker 1 (Cooke et al. 2006, CC BY 4.0)",
                "split": "model/split.json (850 train / 50 validation)",
                "manifest_sha256": ckpt["data_manifest_sha256"],
                # Trained (in part) on a lossy copy of those crops (`carry`).
                **({"carried": summary(ckpt["data_carried"])} if ckpt.get("data_carried") else {}),
            }
        ),
        "validation": json.dumps({"cer_greedy": round(ckpt["val_cer"], 4), "wer_greedy": round(ckpt["val_wer"], 4)}),
        "training": json.dumps({"steps": ckpt["step"], "minutes": round(ckpt["elapsed"] / 60, 1)}),
    }
    meta.update(extra or {})
    return meta


def set_metadata(path: Path, meta: dict[str, str]) -> None:
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "mouthmap-model"
    onnx.save(m, str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(D.REPO / "model/runs/lipnet/last.pt"))
    p.add_argument("--out", default=str(D.REPO / "models" / MODEL_NAME / "2" / "model.onnx"), help="where the model goes: a version of the model repository, models/NAME/VERSION/model.onnx")
    p.add_argument("--weights", choices=["ema", "last"], default="ema", help="the moving average of the weights (if the checkpoint has one) or the last weights")
    p.add_argument("--version", default=MODEL_VERSION, help="model_version written into the metadata")
    p.add_argument(
        "--graph",
        choices=["3d", "frames2d"],
        default="3d",
        help="3d: the network as trained (3D convolutions); frames2d: the same numbers with each 3D "
        "convolution as a 2D one over a frame and its neighbours, batch norm folded (the graph "
        "`quantize` makes the INT8 variant from)",
    )
    args = p.parse_args()
    ckpt = load_checkpoint(args.checkpoint, "--checkpoint")
    net = lipnet_of(ckpt, D.CLASSES)
    use_ema = args.weights == "ema" and ckpt.get("ema") is not None
    if args.weights == "ema" and not use_ema:
        # A weights-only checkpoint (`checkpoints/v3-wr.pt` holds its run's
        # moving average as its weights) has none beside them: the metadata
        # then says `weights: last`, and the model card says what they are.
        print(f"{args.checkpoint}: no moving average beside the weights; exporting its weights", file=sys.stderr)
    net.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    net.eval()
    served = (Served(net) if args.graph == "3d" else Served2D(net)).eval()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(2, 75, 46, 140, 1)
    torch.onnx.export(
        served,
        (dummy,),
        str(out),
        input_names=["frames"],
        output_names=["probs"],
        dynamic_axes={"frames": {0: "batch"}, "probs": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    set_metadata(out, metadata(ckpt, {"model_version": args.version, "weights": "ema" if use_ema else "last", "graph": args.graph}))
    onnx.checker.check_model(str(out))
    # Parity: ONNX Runtime against PyTorch on real validation crops.
    manifest, arrays = D.load(D.REPO / "model" / "data")
    val = [e for e in manifest["clips"] if e["split"] == "validation"][:4]
    x = np.stack([arrays[e["clip"]][:75] for e in val]).astype(np.float32) / 255.0
    x = ((x - ckpt["mean"]) / ckpt["std"])[..., None]
    with torch.no_grad():
        want = served(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"frames": x})[0]
    diff = float(np.abs(got - want).max())
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("ONNX output differs from PyTorch by more than 1e-4")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    Path(str(out) + ".sha256").write_text(f"{digest}  {out.name}\n")


if __name__ == "__main__":
    main()
