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
level, streams of five clips, re-timed clips) into `--report`, and says how
sure each difference is (`compare`, written beside the report as
`REPORT.compare.json`): the new version against the one it replaces (its
entry in the committed `model/eval-report.json`; `--against KEY` names
another, `--against none` skips it), and the INT8 model against the new
FP32 one with the INT8 target (every difference's upper bound at most +1
point). Each step is
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
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import compare as C
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


def previous_entry(committed: dict, version: str) -> str | None:
    """The committed report's entry of the newest FP32 version below
    `version` (`NAME/N/model.onnx`), or None when there is none."""
    below = []
    for key in committed:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == NAME and parts[1].isdigit() and int(parts[1]) < int(version):
            below.append((int(parts[1]), key))
    return max(below)[1] if below else None


def against_entry(committed_path: Path, against: str, version: str) -> tuple[str, dict] | None:
    """What the new version is compared with: (label, its report entry), None for `--against none`."""
    if against == "none":
        return None
    if not committed_path.exists():
        raise SystemExit(f"{committed_path}: no committed report to compare with; give --committed-report or --against none")
    committed = json.loads(committed_path.read_text())
    key = previous_entry(committed, version) if against == "previous" else against
    if key is None:
        raise SystemExit(f"{committed_path} has no earlier version of {NAME} below {version}: "
                         "name an entry with --against KEY or skip with --against none")
    if key not in committed:
        raise SystemExit(f"{committed_path} has no entry {key!r}; it has: {', '.join(committed)}")
    return f"{committed_path.name}#{key}", committed[key]


def comparisons(report: dict, fp32_key: str, int8_key: str, against: tuple[str, dict] | None,
                refs: dict[str, str], samples: int = 10000, seed: int = 0) -> list[dict]:
    """The release's two paired comparisons: the version it replaces -> the
    new FP32 model, and the new FP32 -> its INT8 model (held to the INT8
    target: at most 1 point more WER, upper bounds included)."""
    pairs = []
    if against is not None:
        pairs.append(("replaces", against, (fp32_key, report[fp32_key]), None))
    pairs.append(("int8", (fp32_key, report[fp32_key]), (int8_key, report[int8_key]), 0.01))
    out = []
    for what, (a_name, a), (b_name, b), at_most in pairs:
        rows = C.compare([a, b], refs, samples, seed)
        out.append({"comparison": what, "a": a_name, "b": b_name, "rows": rows,
                    "verdict": C.verdict(rows, at_most) if rows else "no figure in common",
                    "gaps": [C.gaps(r, refs, samples, seed) for r in (a, b)]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="a full checkpoint of `train` (best.pt or last.pt)")
    p.add_argument("--version", required=True, help="the repository version directory (a whole number)")
    p.add_argument("--model-version", help="model_version in the metadata (default VERSION.0.0)")
    p.add_argument("--int8-version", help="the INT8 model's version directory (default: one past its newest)")
    p.add_argument("--weights", choices=["ema", "last"], default="ema", help="as `export --weights`")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"), help="calibration crops for INT8 (training clips only)")
    p.add_argument("--report", default=str(D.REPO / "model" / "runs" / "release-eval.json"))
    p.add_argument("--no-evaluate", action="store_true", help="write the files only (and compare nothing)")
    p.add_argument("--against", default="previous",
                   help="the committed report's entry the new version is compared with: `previous` (default: the "
                        "newest version below --version), a key such as mouthmap-lipnet-grid-s1/4/model.onnx, or none")
    p.add_argument("--committed-report", type=Path, default=D.REPO / "model" / "eval-report.json",
                   help="the report the versions in the repository were measured into")
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
    # Before any file is written: what the new version will be compared with.
    against = None if args.no_evaluate else against_entry(args.committed_report, args.against, version)
    refs = None if args.no_evaluate else D.references(args.data)
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
        new = json.loads(Path(report).read_text())
        # evaluate's keys: the models' paths in the repository.
        fp32_key, int8_key = f"{NAME}/{version}/model.onnx", f"{NAME}-int8/{int8.name}/model.onnx"
        result = comparisons(new, fp32_key, int8_key, against, refs)
        out = Path(report).with_suffix(".compare.json")
        out.write_text(json.dumps(result, indent=1) + "\n")
        for c in result:
            print(f"\n{c['comparison']}:")
            print("\n".join(C.format_rows([c["a"], c["b"]], c["rows"], c["gaps"])))
            print(f"B against A: {c['verdict']}")
        print(f"comparisons: {out}", flush=True)
    print(f"written: {fp32} and {int8}; next: the model card (models/{NAME}/MODEL_CARD.md, model/MODEL_CARD.md), "
          "model/eval-report.json, tests/reference_model.rs's bounds")


if __name__ == "__main__":
    main()
