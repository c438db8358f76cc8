"""FP16 and INT8 variants of an exported model.

    python -m mouthmap_model.quantize --model ../models/mouthmap-lipnet-grid-s1/1/model.onnx

FP16: every weight and activation in half precision, inputs and outputs kept
float32 (so the serving contract holds). INT8: dynamic quantisation of the
recurrent and matrix layers (GRU, MatMul, Gemm: weights int8, activations
quantised per batch at run time); the 3D convolutions stay FP32, because ONNX
Runtime has no ConvInteger kernel for 3D convolutions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16


def variants(model: Path) -> dict[str, Path]:
    stem = model.with_suffix("")
    return {"fp16": Path(f"{stem}-fp16.onnx"), "int8": Path(f"{stem}-int8.onnx")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    src = Path(args.model)
    out = variants(src)
    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}

    fp16 = convert_float_to_float16(m, keep_io_types=True)
    onnx.save(fp16, str(out["fp16"]))

    quantize_dynamic(
        str(src),
        str(out["int8"]),
        op_types_to_quantize=["GRU", "MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
    )
    for kind, path in out.items():
        q = onnx.load(str(path))
        del q.metadata_props[:]
        for k, v in {**meta, "model_version": f"{meta.get('model_version', '0')}-{kind}", "precision": kind}.items():
            e = q.metadata_props.add()
            e.key, e.value = k, v
        onnx.save(q, str(path))
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
