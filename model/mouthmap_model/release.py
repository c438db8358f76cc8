"""A trained checkpoint into the model repository, as the reference model ships:

    python -m mouthmap_model.release --checkpoint runs/v2-long/best.pt --version 3

writes, each with its `.sha256`:

- `models/mouthmap-lipnet-grid-s1/VERSION/model.onnx`: the network as
  per-frame 2D convolutions (`export`, then `frames2d` over its ONNX file, as
  version 2 was made: the tensor names `split` cuts at), with `front.onnx`
  and `back.onnx` beside it (`split`: the inferencer computes each frame's
  front end once);
- `models/mouthmap-lipnet-grid-s1-int8/INT8_VERSION/model.onnx`: static
  INT8 of that graph (`quantize --split`), with its own front end and back
  end;

then measures both through the serving path (`evaluate --timing`: clip
level, streams of five clips, re-timed clips) into `--report`. Each step is
the module it names, run as a subprocess and printed first, so a step that
fails can be run again by hand. The versions are written into hidden
folders (`.N.partial`, which the model repository skips) and renamed into
place only when every file is there, so a server watching `models/` never
sees half a version. A version that exists is replaced only with `--force`
(and then the INT8 version must be named: `--int8-version`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import data as D

NAME = "mouthmap-lipnet-grid-s1"


def run(args: list[str]) -> None:
    cmd = [sys.executable, "-m", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=D.REPO / "model")


def version_number(text: str, flag: str) -> str:
    try:
        n = int(text)
    except ValueError:
        raise SystemExit(f"{flag} {text!r}: a repository version is a whole number above 0 (models/NAME/N)") from None
    if n < 1:
        raise SystemExit(f"{flag} {text!r}: a repository version is a whole number above 0 (models/NAME/N)")
    return str(n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="a full checkpoint of `train` (best.pt or last.pt)")
    p.add_argument("--version", required=True, help="the repository version directory (a whole number)")
    p.add_argument("--model-version", help="model_version in the metadata (default VERSION.0.0)")
    p.add_argument("--int8-version", help="the INT8 model's version directory (default: one past its newest)")
    p.add_argument("--weights", choices=["ema", "last"], default="ema", help="as `export --weights`")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"), help="calibration crops for INT8 (training clips only)")
    p.add_argument("--report", default=str(D.REPO / "model" / "runs" / "release-eval.json"))
    p.add_argument("--no-evaluate", action="store_true", help="write the files only")
    p.add_argument("--force", action="store_true", help="overwrite version directories that exist")
    args = p.parse_args()

    version = version_number(args.version, "--version")
    if not args.checkpoint.exists():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint")
    if args.force and not args.int8_version:
        raise SystemExit("--force replaces versions: name the INT8 one too (--int8-version N)")
    models = D.REPO / "models"
    fp32 = models / NAME / version
    int8_root = models / f"{NAME}-int8"
    if args.int8_version:
        int8 = int8_root / version_number(args.int8_version, "--int8-version")
    else:
        taken = [int(d.name) for d in int8_root.iterdir() if d.name.isdigit()] if int8_root.exists() else []
        int8 = int8_root / str(max(taken, default=0) + 1)
    for d in (fp32, int8):
        if d.exists() and not args.force:
            raise SystemExit(f"{d} exists: pick another version or pass --force")
    model_version = args.model_version or f"{version}.0.0"
    data, report = str(Path(args.data).resolve()), str(Path(args.report).resolve())
    # Hidden while written: the repository scan skips dot-named folders.
    fp32_tmp, int8_tmp = fp32.parent / f".{fp32.name}.partial", int8.parent / f".{int8.name}.partial"
    for d in (fp32_tmp, int8_tmp):
        shutil.rmtree(d, ignore_errors=True)

    with tempfile.TemporaryDirectory() as tmp:
        graph3d = Path(tmp) / "model.onnx"
        run(["mouthmap_model.export", "--checkpoint", str(args.checkpoint.resolve()), "--out", str(graph3d),
             "--weights", args.weights, "--version", model_version])
        run(["mouthmap_model.frames2d", "--model", str(graph3d), "--out", str(fp32_tmp / "model.onnx"),
             "--version", model_version])
    digest = hashlib.sha256((fp32_tmp / "model.onnx").read_bytes()).hexdigest()
    (fp32_tmp / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    run(["mouthmap_model.split", "--model", str(fp32_tmp / "model.onnx"), "--out", str(fp32_tmp)])
    run(["mouthmap_model.quantize", "--model", str(fp32_tmp / "model.onnx"), "--out", str(int8_tmp / "model.onnx"),
         "--data", data, "--split"])
    for tmp_dir, final in ((fp32_tmp, fp32), (int8_tmp, int8)):
        # The model card every version links to, as the committed ones do.
        card = final.parent / "1" / "MODEL_CARD.md"
        if card.is_symlink():
            os.symlink(os.readlink(card), tmp_dir / "MODEL_CARD.md")
        if final.exists():
            shutil.rmtree(final)
        tmp_dir.rename(final)
        print(f"in place: {final}", flush=True)
    if not args.no_evaluate:
        run(["mouthmap_model.evaluate", "--timing", "--models", str(fp32 / "model.onnx"), str(int8 / "model.onnx"),
             "--report", report])
    print(f"written: {fp32} and {int8}; next: the model card (models/{NAME}/MODEL_CARD.md, model/MODEL_CARD.md), "
          "model/eval-report.json, tests/reference_model.rs's bounds")


if __name__ == "__main__":
    main()
