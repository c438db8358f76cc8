"""Replay the validation streams' windows through the Rust decode stage, in
seconds instead of a minute of `mouthmap transcribe`: for changing the
stitcher (`decoder/src/stitch.rs`) and measuring each change.

    cargo build --release -p mouthmap-decoder --example replay
    python -m mouthmap_model.replay --model ../models/mouthmap-lipnet-grid-s1/4/model.onnx \\
        --join reencode --out runs/replay/v4-reencode
    # after a change to the stitcher: rebuild the example, then
    python -m mouthmap_model.replay --out runs/replay/v4-reencode     # windows kept

The validation clips are joined five at a time as `evaluate`'s streams are.
`--join reencode` (evaluate's streams: ffmpeg concat, libx264 crf 18) and
`--join copy` (concat without re-encoding: the clips' own frames) crop the
joined videos with `mouthmap crops` (the serving code, as `data build`
does); `--join crops` joins the clips' own crops from `data build` (the
crops the clip-level figures read). Every 75-frame window (every 25
frames, the last one end-aligned: the inferencer's windows, less the
early growing ones the stage replaces) goes through ONNX Runtime; the
decoder's `replay` example feeds them to the decode stage (open, lexicon,
GRID grammar) and the transcripts are scored against the sentences.

With `--join reencode` and `--join copy` the replay gives the same finals
as `evaluate --streaming-only` (measured 2026-12-04 on version 4: 14.0 /
11.0 / 10.3% and 12.7 / 10.7 / 10.3% open / lexicon / GRID both ways).
`RUST_LOG=mouthmap_decoder=trace target/release/examples/replay DIR` shows
every window's labels and cut."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import data as D
from .evaluate import lexicon
from .metrics import cer, wer

HOP = 25
T = 75


def join(manifest: dict, data: Path, shared: Path, out: Path, how: str, binary: Path) -> list[np.ndarray]:
    """The validation streams' crops, joined `how`."""
    groups = D.stream_groups([e for e in manifest["clips"] if e["split"] == "validation"])
    if how == "crops":
        return [np.concatenate([np.load(data / "crops" / f"{e['clip']}.npy") for e in g]) for g in groups]
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, g in enumerate(groups):
        paths.append(videos / f"s{i}.mp4")
        D.join_videos([shared / e["video"] for e in g], paths[-1], reencode=how == "reencode")
    D.crop_videos(binary, shared, paths, videos / "crops")
    return [np.load(videos / "crops" / f"s{i}.npy") for i in range(len(groups))]


def dump(model: Path, manifest: dict, streams: list[np.ndarray], out: Path) -> None:
    """Every window's posteriors (`sN.f32`, little-endian [windows, 75, classes]) and `meta.json`."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    norm = json.loads(meta["normalization"])
    groups = D.stream_groups([e for e in manifest["clips"] if e["split"] == "validation"])
    rows = []
    for i, (crops, part) in enumerate(zip(streams, groups)):
        x = ((crops.astype(np.float32) / 255.0 - norm["mean"]) / norm["std"]).astype(np.float32)
        starts = list(range(0, len(x) - T + 1, HOP))
        if starts[-1] != len(x) - T:
            starts.append(len(x) - T)
        batch = np.stack([x[s : s + T] for s in starts])[..., None]
        probs = np.concatenate([sess.run(None, {"frames": batch[j : j + 8]})[0] for j in range(0, len(batch), 8)])
        probs.astype("<f4").tofile(out / f"s{i}.f32")
        rows.append({"name": f"s{i}", "starts": starts, "frames": len(x), "clips": [e["clip"] for e in part],
                     "reference": " ".join(e["text"] for e in part)})
    (out / "meta.json").write_text(json.dumps({
        "model": str(model), "vocabulary": json.loads(meta["vocabulary"]), "blank": int(meta["blank_index"]),
        "classes": int(probs.shape[-1]), "lexicon": lexicon(manifest), "streams": rows,
    }, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the windows (kept: a later call without --model replays them)")
    p.add_argument("--model", help="ONNX model whose windows to compute (omit to replay the windows in --out)")
    p.add_argument("--join", choices=("reencode", "copy", "crops"), default="reencode")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"))
    p.add_argument("--shared", default=str(D.REPO.parent / "shared"))
    p.add_argument("--mouthmap", default=str(D.REPO / "target" / "release" / "mouthmap"))
    p.add_argument("--replay", default=str(D.REPO / "target" / "release" / "examples" / "replay"))
    p.add_argument("--show", action="store_true", help="print each stream's reference and open transcript")
    args = p.parse_args()
    out = Path(args.out).resolve()
    if args.model:
        out.mkdir(parents=True, exist_ok=True)
        manifest, _ = D.load(Path(args.data))
        streams = join(manifest, Path(args.data), Path(args.shared).resolve(), out, args.join, Path(args.mouthmap))
        dump(Path(args.model), manifest, streams, out)
    elif not (out / "meta.json").exists():
        raise SystemExit(f"no windows in {out}: pass --model to compute them")
    if not Path(args.replay).exists():
        raise SystemExit(f"{args.replay} not found: cargo build --release -p mouthmap-decoder --example replay")
    meta = json.loads((out / "meta.json").read_text())
    refs = [s["reference"] for s in meta["streams"]]
    hyps = json.loads(subprocess.run([args.replay, str(out)], check=True, capture_output=True, text=True).stdout)
    print(f"{out.name}: " + ", ".join(f"{m} WER {wer(h, refs) * 100:.1f}% CER {cer(h, refs) * 100:.1f}%" for m, h in hyps.items()))
    if args.show:
        for r, h in zip(refs, hyps["open"]):
            print(f"  ref  {r}\n  open {h}")


if __name__ == "__main__":
    main()
