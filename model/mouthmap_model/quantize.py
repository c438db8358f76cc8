"""INT8 and FP16 variants of an exported model.

    python -m mouthmap_model.frames2d --model ../models/mouthmap-lipnet-grid-s1/1/model.onnx --out m2d.onnx
    python -m mouthmap_model.quantize --model m2d.onnx --out ../models/mouthmap-lipnet-grid-s1-int8/1/model.onnx
    python -m mouthmap_model.quantize --model ../models/mouthmap-lipnet-grid-s1/2/model.onnx \
        --out DIR/model.onnx --split     # and DIR/front.onnx + DIR/back.onnx

`--split` also cuts the INT8 graph into its front end and back end beside it
(`split.py`: the int8 convolutions as `front.onnx`, the GRU, still FP32, and
the classifier as `back.onnx`), so the inferencer computes each frame's front
end once; the two parts give the INT8 graph's output exactly. Measured on an
Intel Xeon (2026-12-03): 0.80 ms of CPU a stream frame at hop 25 against
1.29 ms for FP32 computed once (`cargo bench -p mouthmap-inferencer --bench
batching -- --model DIR/model.onnx --front-end-only`).

INT8: static quantisation in QDQ form of the per-frame 2D graph
(`frames2d`; ONNX Runtime has no int8 3D convolution, so the 3D graph only
gets slower): the convolutions and the output layer get int8 weights (per
channel), and activations stay int8 from one convolution to the next
(ReLU, max-pool, the neighbour stacking), with ranges from a calibration set
of training windows (never validation clips), cut the way serving cuts
them. ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear
into an int8 convolution. The GRU stays FP32 (ONNX Runtime has no int8 GRU).

FP16: every weight and activation in half precision, inputs and outputs kept
float32 so the serving contract holds. ONNX Runtime 1.31.1's CPU provider
crashes (SIGSEGV, while creating the session) on a float16 Transpose followed
by a MatMul at graph optimisation level ORT_ENABLE_ALL
(`model/repro/ort_fp16_transpose_matmul.py`); at ORT_ENABLE_EXTENDED it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from . import data as D
from . import split as S


def variants(model: Path) -> dict[str, Path]:
    stem = model.with_suffix("")
    return {"fp16": Path(f"{stem}-fp16.onnx"), "int8": Path(f"{stem}-int8.onnx")}


class Windows(CalibrationDataReader):
    """Calibration windows: 75 frames of training clips, normalised as the
    model's metadata says; some whole clips, some across two joined clips."""

    def __init__(self, data_dir: Path, meta: dict, count: int, seed: int = 7):
        manifest, arrays = D.load(data_dir)
        norm = json.loads(meta["normalization"])
        train = [e for e in manifest["clips"] if e["split"] == "train"]
        rng = random.Random(seed)
        self.items = []
        for i in range(count):
            a, b = rng.choice(train), rng.choice(train)
            joined = np.concatenate([arrays[a["clip"]], arrays[b["clip"]]])
            o = 0 if i % 2 == 0 else rng.randint(1, len(arrays[a["clip"]]) - 1)
            x = joined[o : o + 75].astype(np.float32) / 255.0
            x = ((x - norm["mean"]) / norm["std"])[None, ..., None].astype(np.float32)
            self.items.append({"frames": x})
        self.it = iter(self.items)

    def get_next(self):
        return next(self.it, None)


def with_metadata(path: Path, meta: dict[str, str], kind: str) -> None:
    q = onnx.load(str(path))
    del q.metadata_props[:]
    for k, v in {**meta, "model_version": f"{meta.get('model_version', '0')}-{kind}", "precision": kind}.items():
        e = q.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(q, str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=str(D.REPO / "model" / "data"), help="crops and manifest from `data build`")
    p.add_argument("--calibration", type=int, default=128, help="calibration windows from the training clips (128 since version 3: its streams read one word better open and one worse under the grammar than with 64, noise; 256 ran out of 24 GiB of memory)")
    p.add_argument("--out", help="INT8 file (default: MODEL-int8.onnx beside it)")
    p.add_argument("--fp16", help="also write the FP16 variant here (runs at ORT_ENABLE_EXTENDED only, see above)")
    p.add_argument(
        "--split",
        action="store_true",
        help="also write front.onnx and back.onnx beside the INT8 file (split.py), and its .sha256",
    )
    p.add_argument(
        "--ops",
        default="Conv,MatMul,MaxPool,Concat,Relu,Reshape,Slice,Transpose",
        help="operator types quantised (comma-separated); the default keeps activations int8 between the convolutions",
    )
    args = p.parse_args()
    src = Path(args.model)
    out = {"int8": Path(args.out) if args.out else variants(src)["int8"]}
    if args.fp16:
        out["fp16"] = Path(args.fp16)
    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}

    if "fp16" in out:
        fp16 = convert_float_to_float16(m, keep_io_types=True)
        onnx.save(fp16, str(out["fp16"]))
        with_metadata(out["fp16"], meta, "fp16")

    if args.split and out["int8"].name != "model.onnx":
        raise SystemExit(f"--split: name the INT8 file model.onnx (a model version's layout), not {out['int8'].name}")
    out["int8"].parent.mkdir(parents=True, exist_ok=True)
    prepared = out["int8"].with_suffix(".prep.onnx")
    windows = Windows(Path(args.data), meta, args.calibration)
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out["int8"]),
            windows,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=args.ops.split(","),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.99},
        )
    finally:
        prepared.unlink(missing_ok=True)
    with_metadata(out["int8"], meta, "int8")
    if args.split:
        front, back = S.split(out["int8"], out["int8"].parent)
        # The parts must be the INT8 graph, window by window.
        sessions = (S.session(out["int8"]), S.session(front), S.session(back))
        worst = S.parts_difference(*sessions, (item["frames"] for item in windows.items[:4]))
        print(f"back(front(window)) vs the INT8 graph: max |diff| {worst:.2e} over 4 calibration windows")
        if worst > 1e-4:
            raise SystemExit("the INT8 front end and back end do not reproduce the INT8 graph (over 1e-4)")
        digest = hashlib.sha256(out["int8"].read_bytes()).hexdigest()
        Path(f"{out['int8']}.sha256").write_text(f"{digest}  model.onnx\n")
        out["front"], out["back"] = out["int8"].parent / "front.onnx", out["int8"].parent / "back.onnx"
    for kind, path in out.items():
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
