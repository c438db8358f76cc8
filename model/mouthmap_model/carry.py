"""Carry the training crops to another machine (a lent GPU) in a few tens of
megabytes, and unpack them there.

    python -m mouthmap_model.carry pack --data data --out carry/ [--crf 8]
    python -m mouthmap_model.carry unpack --src carry/ --out data

The crops (uint8 [frames, 46, 140] per clip, 433 MB for GRID speaker 1)
compress only about 3.4 times losslessly (lzma of frame differences, or
H.264 with `-qp 0`), too much for a 64 MiB transfer. `pack` joins every
clip's frames, in the manifest's order, into one grey H.264 video at a
constant quality (`--crf`: 8 by default, about 11 times smaller), decodes it
again and records the error it made (mean and largest absolute difference in
grey levels, and its 99th percentile) in the manifest it writes beside the
video under `carried`. `unpack` decodes the video (OpenCV, which the GPU
machines have, or ffmpeg) back into data/crops/*.npy and that manifest:
training records `carried` in its checkpoints, so a model trained on a lossy
copy says so. The manifest hash stays the original build's: it names what
was cropped, and `carried` names how it travelled.

Measured on 60 clips (`crf`: compression, mean / 99th percentile / largest
error in grey levels): lossless 3.3x, 0 / 0 / 0; crf 4 6.5x, 0.30 / 1 / 4;
crf 8 10.9x, 0.48 / 2 / 7; crf 12 18.9x, 0.68 / 3 / 9. Serving's own JPEG
frames (q95) are lossy on the same scale.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import data as D

H, W = 46, 140
VIDEO = "crops.mkv"


def summary(carried: dict | None) -> dict | None:
    """What a checkpoint and a model's metadata say of a carried copy: the
    codec and its measured error, without the per-clip frame counts that only
    `unpack` needs."""
    return {k: v for k, v in carried.items() if k != "frames"} if carried else None


def ffmpeg_encode(frames: np.ndarray, out: Path, crf: int) -> None:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{W}x{H}", "-r", "25", "-i", "-",
           "-c:v", "libx264", "-preset", "slow", *(["-qp", "0"] if crf == 0 else ["-crf", str(crf)]),
           "-pix_fmt", "gray", "-color_range", "pc", str(out)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)


def decode(video: Path, frames: int) -> np.ndarray:
    """The video's frames as uint8 [n, 46, 140], by OpenCV where it is
    installed, else by ffmpeg."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        cap = cv2.VideoCapture(str(video))
        out = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            out.append(f[:, :, 0] if f.ndim == 3 else f)
        x = np.stack(out) if out else np.zeros((0, H, W), np.uint8)
    elif shutil.which("ffmpeg"):
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                             check=True, capture_output=True).stdout
        x = np.frombuffer(raw, np.uint8).reshape(-1, H, W)
    else:
        sys.exit("unpack needs OpenCV (`pip install opencv-python-headless`) or ffmpeg to decode the crops")
    if x.shape != (frames, H, W):
        sys.exit(f"{video}: decoded {tuple(x.shape)}, the manifest expects {frames} frames of {H}x{W}")
    return x


def pack(args: argparse.Namespace) -> None:
    manifest, arrays = D.load(Path(args.data))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [e["clip"] for e in manifest["clips"]]
    for n in names:
        if arrays[n].shape[1:] != (H, W):
            sys.exit(f"{n}: crops of {arrays[n].shape[1:]}, not {H}x{W}")
    frames = np.concatenate([arrays[n] for n in names])
    ffmpeg_encode(frames, out / VIDEO, args.crf)
    back = decode(out / VIDEO, len(frames))
    err = np.abs(back.astype(np.int16) - frames.astype(np.int16))
    carried = {
        "codec": "h264 gray " + ("lossless" if args.crf == 0 else f"crf {args.crf}"),
        "bytes": (out / VIDEO).stat().st_size,
        "mean_abs_error": round(float(err.mean()), 4),
        "p99_abs_error": float(np.percentile(err, 99)),
        "max_abs_error": int(err.max()),
        "frames": [int(len(arrays[n])) for n in names],
    }
    (out / "manifest.json").write_text(json.dumps({**manifest, "carried": carried}) + "\n")
    print(f"{len(names)} clips, {len(frames)} frames: {frames.nbytes / 1e6:.0f} MB -> {carried['bytes'] / 1e6:.1f} MB; "
          f"error mean {carried['mean_abs_error']}, p99 {carried['p99_abs_error']}, max {carried['max_abs_error']} grey levels",
          flush=True)


def unpack(args: argparse.Namespace) -> None:
    src, out = Path(args.src), Path(args.out)
    manifest = json.loads((src / "manifest.json").read_text())
    counts = manifest["carried"]["frames"]
    x = decode(src / VIDEO, sum(counts))
    (out / "crops").mkdir(parents=True, exist_ok=True)
    o = 0
    for e, n in zip(manifest["clips"], counts):
        np.save(out / "crops" / f"{e['clip']}.npy", x[o : o + n])
        o += n
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(counts)} clips unpacked into {out} (carried as {manifest['carried']['codec']})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="the crops as one H.264 video and a manifest")
    a.add_argument("--data", default=str(D.REPO / "model" / "data"))
    a.add_argument("--out", required=True)
    a.add_argument("--crf", type=int, default=8, help="x264's constant quality (0: lossless, about 3.3x)")
    b = sub.add_parser("unpack", help="a packed copy back into crops/*.npy and manifest.json")
    b.add_argument("--src", required=True)
    b.add_argument("--out", required=True)
    args = p.parse_args()
    pack(args) if args.cmd == "pack" else unpack(args)


if __name__ == "__main__":
    main()
