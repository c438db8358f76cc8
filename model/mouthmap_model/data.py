"""The dataset: GRID speaker 1, cropped by `mouthmap crops` (the serving code),
labelled from the word alignments, split deterministically.

    python -m mouthmap_model.data build --shared ../../shared --out data

writes data/crops/*.npy (uint8 [frames, 46, 140]) and data/manifest.json: each
clip's video file and sha256, each crop array's sha256, the split, and the
manifest's own hash (which the model's metadata names).

    python -m mouthmap_model.data streams --data data --out data-streams

writes the same clips cut from streams of five joined and re-encoded clips
(the crops serving cuts from a live stream), for `train --alt-data`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SPLIT_FILE = REPO / "model" / "split.json"

# Characters the model writes; the CTC blank is the last class.
VOCAB = list(" abcdefghijklmnopqrstuvwxyz")
BLANK = len(VOCAB)
CLASSES = len(VOCAB) + 1
CHAR_TO_ID = {c: i for i, c in enumerate(VOCAB)}
FPS = 25


def encode(text: str) -> list[int]:
    return [CHAR_TO_ID[c] for c in text if c in CHAR_TO_ID]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


VALIDATION_CLIPS = 50


def validation_set(names: list[str]) -> set[str]:
    """The 50 clips whose names hash lowest: stable across machines and runs."""
    return set(sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:VALIDATION_CLIPS])


@dataclass
class Word:
    word: str
    start: int  # first frame
    end: int  # one past the last frame


def read_alignment(path: Path) -> list[Word]:
    words = []
    for line in path.read_text().split("\n"):
        parts = line.split()
        if len(parts) != 3 or parts[2] in ("sil", "sp"):
            continue
        start, end = int(parts[0]) // 1000, int(parts[1]) // 1000
        words.append(Word(parts[2], start, max(end, start + 1)))
    return words


def references(data: str | Path) -> dict[str, str]:
    """Each clip's sentence, from the crops' manifest (`data build`)."""
    manifest = Path(data) / "manifest.json"
    if not manifest.exists():
        raise SystemExit(f"{manifest} is missing: build it with `python -m mouthmap_model.data build` (or give --data)")
    return {e["clip"]: e["text"] for e in json.loads(manifest.read_text())["clips"]}


def build(args: argparse.Namespace) -> None:
    shared = Path(args.shared).resolve()
    out = Path(args.out).resolve()
    crops = out / "crops"
    clips = sorted((shared / "data/grid/s1").glob("*.mp4"))
    if not clips:
        sys.exit(f"no clips in {shared / 'data/grid/s1'}: pass --shared")
    t0 = time.time()
    if not args.reuse_crops:
        binary = Path(args.mouthmap)
        if not binary.exists():
            sys.exit(f"{binary} not found: build it with `cargo build --release` first")
        print(f"cropping {len(clips)} clips with {binary} crops (the serving code path)", flush=True)
        extra = ["--detect-every", str(args.detect_every), "--boxes-between", args.boxes_between,
                 "--frames-per-chunk", str(args.frames_per_chunk)]
        crop_videos(binary, shared, clips, crops, extra)
    validation = validation_set([c.stem for c in clips])
    split = {"validation": [], "train": []}
    entries = []
    for clip in clips:
        name = clip.stem
        npy = crops / f"{name}.npy"
        align = shared / "data/grid/s1/align" / f"{name}.align"
        if not npy.exists() or not align.exists():
            print(f"skipping {name}: missing {npy if not npy.exists() else align}", file=sys.stderr)
            continue
        part = "validation" if name in validation else "train"
        split[part].append(name)
        words = read_alignment(align)
        entries.append(
            {
                "clip": name,
                "video": str(clip.relative_to(shared)),
                "video_sha256": sha256(clip),
                "crops_sha256": sha256(npy),
                "split": part,
                "text": " ".join(w.word for w in words),
                "words": [[w.word, w.start, w.end] for w in words],
            }
        )
    SPLIT_FILE.write_text(json.dumps(split, indent=1) + "\n")
    # What the crops were cut from (`jpeg q95` by default: the frames ingest
    # publishes), as `mouthmap crops` recorded it.
    report = json.loads((crops / "report.json").read_text()) if (crops / "report.json").exists() else {}
    manifest = {
        "source": "GRID corpus speaker 1 (Cooke et al. 2006, CC BY 4.0)",
        "frame_format": report.get("frame_format", "unknown"),
        # 1: the face detected on every frame; N: every Nth (preprocess
        # --detect-every), the box between interpolated or held
        # (--boxes-between; recorded only then, so the hash of an
        # every-frame manifest is what it was before the option).
        "detect_every": args.detect_every,
        "clips": entries,
    }
    if args.detect_every > 1:
        manifest["boxes_between"] = args.boxes_between
        # Boxes are interpolated within a chunk; chunks of 3 before 2026-12-03
        # (recorded from then on, as `mouthmap crops` reports it when reused).
        manifest["frames_per_chunk"] = report.get("frames_per_chunk", args.frames_per_chunk)
    body = json.dumps(manifest, sort_keys=True).encode()
    manifest["manifest_sha256"] = hashlib.sha256(body).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(
        f"{len(entries)} clips ({len(split['train'])} train, {len(split['validation'])} validation) "
        f"in {time.time() - t0:.0f} s; manifest {manifest['manifest_sha256'][:16]}",
        flush=True,
    )


def load(data_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    arrays = {e["clip"]: np.load(data_dir / "crops" / f"{e['clip']}.npy") for e in manifest["clips"]}
    return manifest, arrays


STREAM_CLIPS = 5


def stream_groups(clips: list[dict], size: int = STREAM_CLIPS) -> list[list[dict]]:
    """Clips `size` at a time, in order: the streams `evaluate` and `replay` join."""
    return [clips[i : i + size] for i in range(0, len(clips), size)]


def crop_videos(binary: Path, shared: Path, videos: list[Path], out: Path, extra: list[str] = ()) -> None:
    """`mouthmap crops` (the serving code) over `videos` into `out`: per
    video its `.npy` and `.json`, and `report.json`."""
    env = dict(os.environ, MOUTHMAP_FACE_MODEL=str(shared / "models/yunet/face_detection_yunet_2026may.onnx"))
    subprocess.run([str(binary), "crops", "--out", str(out), *extra, *map(str, videos)], check=True, env=env)


def frame_words(n: int, words: list, offset: int, vocab: dict[str, int]) -> np.ndarray:
    """Which word each of `n` frames from `offset` on shows, by the
    alignments `words` ((word, first, end) frames): 1 + its index in
    `vocab`, 0 for frames between words (silence and pauses)."""
    out = np.zeros(n, dtype=np.int64)
    for w, s, e in words:
        out[max(s - offset, 0) : max(min(e - offset, n), 0)] = vocab[w] + 1
    return out


def join_videos(videos: list[Path], dst: Path, reencode: bool = True) -> None:
    """The videos back to back in one file, as `evaluate`'s streams are made:
    ffmpeg's concat demuxer, re-encoded (libx264 crf 18, 25 fps) or, with
    `reencode=False`, the clips' own frames copied. The listing is written
    beside `dst`."""
    listing = dst.with_suffix(".txt")
    listing.write_text("".join(f"file '{v}'\n" for v in videos))
    codec = ["-c:v", "libx264", "-crf", "18", "-r", str(FPS)] if reencode else ["-c:v", "copy"]
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-an", *codec, str(dst)], check=True)


def streams(args: argparse.Namespace) -> None:
    """The same clips as `--data`, each cut from a stream of five clips
    joined and re-encoded as `evaluate`'s streams are (ffmpeg concat,
    libx264 crf 18, 25 fps) and cropped by `mouthmap crops` there: the crops
    serving cuts from a live stream (the detector's frames fall elsewhere
    in the clip, the box carries over from the previous sentence, and the
    pixels are a second H.264 generation). Training clips are grouped by a
    seeded shuffle; validation clips five at a time in reverse order, so
    that no group is one of `evaluate`'s streams (its figures stay off the
    data a checkpoint may be chosen on)."""
    import random

    data, out, shared = Path(args.data).resolve(), Path(args.out).resolve(), Path(args.shared).resolve()
    manifest = json.loads((data / "manifest.json").read_text())
    binary = Path(args.mouthmap)
    if not binary.exists():
        sys.exit(f"{binary} not found: build it with `cargo build --release` first")
    train = [e for e in manifest["clips"] if e["split"] == "train"]
    random.Random(args.seed).shuffle(train)
    val = [e for e in manifest["clips"] if e["split"] == "validation"][::-1]
    groups = stream_groups(train) + stream_groups(val)
    videos, crops = out / "videos", out / "crops"
    videos.mkdir(parents=True, exist_ok=True)
    crops.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    paths = []
    for i, g in enumerate(groups):
        paths.append(videos / f"stream{i:03d}.mp4")
        if not paths[-1].exists():
            join_videos([shared / e["video"] for e in g], paths[-1])
    print(f"{len(groups)} streams joined in {time.time() - t0:.0f} s; cropping with {binary} crops", flush=True)
    crop_videos(binary, shared, paths, videos / "crops")
    by_clip = {}
    for i, g in enumerate(groups):
        x = np.load(videos / "crops" / f"stream{i:03d}.npy")
        lengths = [len(np.load(data / "crops" / f"{e['clip']}.npy", mmap_mode="r")) for e in g]
        if len(x) != sum(lengths):
            sys.exit(f"stream{i:03d}: {len(x)} frames cropped, its clips hold {sum(lengths)}: the join changed the frame count")
        at = 0
        for e, n in zip(g, lengths):
            np.save(crops / f"{e['clip']}.npy", x[at : at + n])
            by_clip[e["clip"]] = sha256(crops / f"{e['clip']}.npy")
            at += n
    entries = [dict(e, crops_sha256=by_clip[e["clip"]]) for e in manifest["clips"]]
    derived = {k: v for k, v in manifest.items() if k not in ("clips", "manifest_sha256")}
    derived.update({
        "clips": entries,
        "cut_from_streams": {"clips_per_stream": STREAM_CLIPS, "seed": args.seed, "codec": "libx264 crf 18",
                             "from_manifest": manifest["manifest_sha256"]},
    })
    body = json.dumps(derived, sort_keys=True).encode()
    derived["manifest_sha256"] = hashlib.sha256(body).hexdigest()
    (out / "manifest.json").write_text(json.dumps(derived, indent=1) + "\n")
    print(f"{len(entries)} clips cut from {len(groups)} streams in {time.time() - t0:.0f} s; "
          f"manifest {derived['manifest_sha256'][:16]}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("streams", help="the same clips cut from joined, re-encoded streams (train --alt-data)")
    st.add_argument("--data", default=str(REPO / "model" / "data"), help="the clips' data (its manifest and split)")
    st.add_argument("--out", default=str(REPO / "model" / "data-streams"))
    st.add_argument("--shared", default=str(REPO.parent / "shared"))
    st.add_argument("--mouthmap", default=str(REPO / "target" / "release" / "mouthmap"))
    st.add_argument("--seed", type=int, default=1, help="how the training clips are grouped")
    b = sub.add_parser("build", help="crop the clips and write the manifest and split")
    b.add_argument("--shared", default=str(REPO.parent / "shared"))
    b.add_argument("--out", default=str(REPO / "model" / "data"))
    b.add_argument("--mouthmap", default=str(REPO / "target" / "release" / "mouthmap"))
    b.add_argument("--reuse-crops", action="store_true", help="use crops already in OUT/crops")
    b.add_argument(
        "--detect-every",
        type=int,
        default=6,
        help="crop as `preprocess --detect-every N` does: the face detected on every Nth frame "
        "and each chunk's last (6, with the boxes between interpolated: serving's default; 1: every "
        "frame, the crops the committed model was trained on)",
    )
    b.add_argument(
        "--frames-per-chunk",
        type=int,
        default=6,
        help="frames per chunk, as `ingest --frames-per-chunk` (6: serving's default); the detector "
        "also runs on each chunk's last frame",
    )
    b.add_argument(
        "--boxes-between",
        choices=["interpolate", "hold"],
        default="interpolate",
        help="the box on frames between detections, as `preprocess --boxes-between` "
        "(interpolate: serving's default)",
    )
    args = p.parse_args()
    if args.cmd == "streams":
        streams(args)
    else:
        build(args)


if __name__ == "__main__":
    main()
