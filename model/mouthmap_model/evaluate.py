"""Evaluate exported models on the validation clips, clip by clip and as
continuous streams through the Rust serving path.

    python -m mouthmap_model.evaluate --models ../models/*.onnx --report runs/eval.json

Clip level: each validation clip's crops (the ones `data build` made with the
serving code) through ONNX Runtime, greedy and prefix-beam decoding.
Streaming: validation clips joined five at a time into one video (ffmpeg),
transcribed by `mouthmap transcribe` (ingest, preprocess, sliding windows,
stitching, beam search: the serving path), scored against the joined
sentences. Also: latency per window at batch 1 and 16 on this CPU, file size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import data as D
from .metrics import cer, greedy_decode, wer


def beam_decode(probs: np.ndarray, vocab: list[str], blank: int, width: int = 8) -> str:
    """CTC prefix beam search (the same algorithm as the Rust decoder)."""
    beams = {(): (0.0, -math.inf)}  # prefix -> (log p ending in blank, log p ending in label)

    def lse(a, b):
        if a == -math.inf:
            return b
        if b == -math.inf:
            return a
        m = max(a, b)
        return m + math.log1p(math.exp(min(a, b) - m))

    for row in np.log(np.maximum(probs, 1e-12)):
        nxt: dict = {}

        def add(prefix, pb, pl):
            ob, ol = nxt.get(prefix, (-math.inf, -math.inf))
            nxt[prefix] = (lse(ob, pb), lse(ol, pl))

        for prefix, (pb, pl) in beams.items():
            total = lse(pb, pl)
            add(prefix, total + row[blank], -math.inf)
            if prefix:
                add(prefix, -math.inf, pl + row[prefix[-1]])
            for k in np.nonzero(row > math.log(1e-4))[0]:
                if k == blank:
                    continue
                src = pb if prefix and prefix[-1] == k else total
                add(prefix + (int(k),), -math.inf, src + row[k])
        beams = dict(sorted(nxt.items(), key=lambda kv: (-lse(*kv[1]), kv[0]))[:width])
    best = max(beams.items(), key=lambda kv: lse(*kv[1]))[0]
    return " ".join("".join(vocab[k] for k in best).split())


def clip_window(frames: np.ndarray, norm: dict) -> tuple[np.ndarray, int]:
    """A clip's crops as the model's input window ([1, 75, H, W, 1],
    normalised as the model's metadata says, zero-padded past the clip's
    end) and how many of its frames are the clip's."""
    x = frames[:75].astype(np.float32) / 255.0
    n = len(x)
    if n < 75:
        x = np.concatenate([x, np.zeros((75 - n, *x.shape[1:]), np.float32)])
    return ((x - norm["mean"]) / norm["std"])[None, ..., None].astype(np.float32), n


def clip_level(model: Path, manifest: dict, arrays: dict, flip: bool = False) -> dict:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    vocab, blank = json.loads(meta["vocabulary"]), int(meta["blank_index"])
    norm = json.loads(meta["normalization"])
    val = [e for e in manifest["clips"] if e["split"] == "validation"]
    rows, hyps_g, hyps_b, refs = [], [], [], []
    hyps_fg, hyps_fb, ms_one, ms_flip = [], [], [], []
    labels = [v if v != "<blank>" else "" for v in vocab]
    for e in val:
        x, n = clip_window(arrays[e["clip"]], norm)
        t0 = time.perf_counter()
        probs = sess.run(None, {"frames": x})[0][0, :n]
        ms_one.append((time.perf_counter() - t0) * 1e3)
        g = greedy_decode(probs, vocab, blank)
        b = beam_decode(probs, labels, blank)
        hyps_g.append(g)
        hyps_b.append(b)
        refs.append(e["text"])
        row = {"clip": e["clip"], "reference": e["text"], "greedy": g, "beam": b}
        if flip:
            # Test-time flip averaging: the mirrored crops (training flips
            # half its samples) through the model too, probabilities averaged.
            t0 = time.perf_counter()
            mirrored = sess.run(None, {"frames": np.ascontiguousarray(x[:, :, :, ::-1])})[0][0, :n]
            ms_flip.append((time.perf_counter() - t0) * 1e3 + ms_one[-1])
            avg = (probs + mirrored) / 2
            row["greedy_flip"], row["beam_flip"] = greedy_decode(avg, vocab, blank), beam_decode(avg, labels, blank)
            hyps_fg.append(row["greedy_flip"])
            hyps_fb.append(row["beam_flip"])
        rows.append(row)
    out = {
        "greedy": {"cer": cer(hyps_g, refs), "wer": wer(hyps_g, refs)},
        "beam": {"cer": cer(hyps_b, refs), "wer": wer(hyps_b, refs)},
        "clips": rows,
    }
    if flip:
        out["flip"] = {
            "greedy": {"cer": cer(hyps_fg, refs), "wer": wer(hyps_fg, refs)},
            "beam": {"cer": cer(hyps_fb, refs), "wer": wer(hyps_fb, refs)},
            "ms_per_window": round(float(np.median(ms_flip)), 2),
            "ms_per_window_without": round(float(np.median(ms_one)), 2),
        }
    return out


def transcribe(binary: Path, model: Path, video: Path, env: dict, grammar: str | None) -> dict:
    cmd = [str(binary), "transcribe", "--json", "--model", str(model), str(video)]
    if grammar:
        cmd += ["--grammar", grammar]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL).stdout.strip().splitlines()
    final = json.loads(out[-1])
    assert final["kind"] == "final", final
    final["partials"] = len(out) - 1
    return final


def lexicon(manifest: dict) -> str:
    """The word-lexicon grammar: letters constrained to the words seen in training."""
    words = sorted({w for e in manifest["clips"] if e["split"] == "train" for w in e["text"].split()})
    return "lexicon:" + " ".join(words)


def grammar_of(mode: str, manifest: dict) -> str | None:
    """open: none; lexicon: the training words; grid: the GRID grammar."""
    return {"open": None, "lexicon": lexicon(manifest), "grid": "grid"}[mode]


def serving_clip_level(model: Path, manifest: dict, shared: Path, binary: Path, modes=("open", "grid"),
                       videos: dict | None = None) -> dict:
    """Each validation video through `mouthmap transcribe` (the serving path), decoded each way in
    `modes`. `videos`: clip -> another video of it (re-timed copies), else the corpus file."""
    env = dict(os.environ, MOUTHMAP_FACE_MODEL=str(shared / "models/yunet/face_detection_yunet_2026may.onnx"))
    val = [e for e in manifest["clips"] if e["split"] == "validation"]
    result = {}
    for mode in modes:
        grammar = grammar_of(mode, manifest)
        hyps = [transcribe(binary, model, (videos or {}).get(e["clip"], shared / e["video"]), env, grammar)["text"]
                for e in val]
        refs = [e["text"] for e in val]
        result[mode] = {"cer": cer(hyps, refs), "wer": wer(hyps, refs),
                        "clips": [{"clip": e["clip"], "final": h} for e, h in zip(val, hyps)]}
    return result


# Re-timed copies of the validation clips, as jittery sources deliver them:
# fewer or more frames per second than the 25 the model was trained on (so
# ingest's 25 fps conversion repeats or drops frames), and speech 10% faster.
TIMINGS = {
    "20 fps (frames repeated)": ["-vf", "fps=20"],
    "30 fps (frames dropped)": ["-vf", "fps=30"],
    "10% faster": ["-vf", "setpts=PTS/1.1", "-r", "25"],
}


def timing(model: Path, manifest: dict, shared: Path, binary: Path) -> dict:
    """Open decoding through the serving path on re-timed copies of the validation clips."""
    val = [e for e in manifest["clips"] if e["split"] == "validation"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, vf in TIMINGS.items():
            videos = {}
            for e in val:
                dst = Path(tmp) / f"{e['clip']}-{len(out)}.mp4"
                subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(shared / e["video"]),
                                *vf, "-an", "-c:v", "libx264", "-crf", "18", str(dst)], check=True)
                videos[e["clip"]] = dst
            r = serving_clip_level(model, manifest, shared, binary, ("open",), videos)["open"]
            out[name] = {"cer": r["cer"], "wer": r["wer"]}
    return out


def streaming(model: Path, manifest: dict, shared: Path, binary: Path, group: int = 5) -> dict:
    val = [e for e in manifest["clips"] if e["split"] == "validation"]
    hyps, hyps_grid, hyps_lex, refs, rows = [], [], [], [], []
    env = dict(os.environ, MOUTHMAP_FACE_MODEL=str(shared / "models/yunet/face_detection_yunet_2026may.onnx"))
    with tempfile.TemporaryDirectory() as tmp:
        for i, part in enumerate(D.stream_groups(val, group)):
            joined = Path(tmp) / f"joined{i}.mp4"
            D.join_videos([shared / e["video"] for e in part], joined)
            final = transcribe(binary, model, joined, env, None)
            final_grid = transcribe(binary, model, joined, env, "grid")
            final_lex = transcribe(binary, model, joined, env, lexicon(manifest))
            ref = " ".join(e["text"] for e in part)
            hyps.append(final["text"])
            hyps_grid.append(final_grid["text"])
            hyps_lex.append(final_lex["text"])
            refs.append(ref)
            rows.append({"clips": [e["clip"] for e in part], "reference": ref, "final": final["text"],
                         "final_grid": final_grid["text"], "final_lexicon": final_lex["text"],
                         "partials": final["partials"]})
    return {"cer": cer(hyps, refs), "wer": wer(hyps, refs), "grid_cer": cer(hyps_grid, refs),
            "grid_wer": wer(hyps_grid, refs), "lexicon_cer": cer(hyps_lex, refs), "lexicon_wer": wer(hyps_lex, refs),
            "streams": rows}


def latency(model: Path, threads: int = 2) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    out = {}
    for batch in (1, 16):
        x = np.random.rand(batch, 75, 46, 140, 1).astype(np.float32)
        sess.run(None, {"frames": x})
        reps = 20 if batch == 1 else 5
        t0 = time.perf_counter()
        for _ in range(reps):
            sess.run(None, {"frames": x})
        per_batch = (time.perf_counter() - t0) / reps * 1000
        out[f"batch{batch}_ms_per_window"] = per_batch / batch
        out[f"batch{batch}_ms_per_batch"] = per_batch
    return out


def report_key(model: Path) -> str:
    """A model's entry in the report: its path in the model repository
    (`NAME/VERSION/model.onnx`, so two versions' files do not collide), else
    the path as given (two candidates' `model.onnx` in different folders
    must not overwrite each other's entry)."""
    try:
        return str(model.resolve().relative_to((D.REPO / "models").resolve()))
    except ValueError:
        return str(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--data", default=str(D.REPO / "model" / "data"))
    p.add_argument("--shared", default=str(D.REPO.parent / "shared"))
    p.add_argument("--mouthmap", default=str(D.REPO / "target" / "release" / "mouthmap"))
    p.add_argument("--report", default=str(D.REPO / "model" / "runs" / "eval.json"))
    p.add_argument("--no-streaming", action="store_true", help="clip level and latency only")
    p.add_argument("--modes", default="open,lexicon,grid", help="serving-path decodings, comma-separated")
    p.add_argument("--timing", action="store_true", help="also the re-timed validation clips (open decoding)")
    p.add_argument("--no-joined", action="store_true", help="serving path per clip, but no joined streams")
    p.add_argument("--flip", action="store_true",
                   help="also test-time flip averaging at clip level (each window and its mirror image, "
                   "probabilities averaged): its WER beside its cost, median ms a window with and without")
    p.add_argument("--streaming-only", action="store_true",
                   help="only the joined streams through the serving path (the figure a serving change must hold)")
    args = p.parse_args()
    manifest, arrays = D.load(Path(args.data))
    report = {}
    if args.streaming_only:
        for m in map(Path, args.models):
            s = streaming(m, manifest, Path(args.shared).resolve(), Path(args.mouthmap))
            report[report_key(m)] = {"streaming": s}
            print(f"{m}: streaming WER open {s['wer']:.3f} (CER {s['cer']:.3f}), grid {s['grid_wer']:.3f}, "
                  f"lexicon {s['lexicon_wer']:.3f}")
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
        return
    for m in map(Path, args.models):
        t0 = time.time()
        r = {"size_mb": round(m.stat().st_size / 1e6, 2), "clip": clip_level(m, manifest, arrays, args.flip), "latency": latency(m)}
        if not args.no_streaming:
            shared = Path(args.shared).resolve()
            r["serving"] = serving_clip_level(m, manifest, shared, Path(args.mouthmap), tuple(args.modes.split(",")))
            if not args.no_joined:
                r["streaming"] = streaming(m, manifest, shared, Path(args.mouthmap))
            if args.timing:
                r["timing"] = timing(m, manifest, shared, Path(args.mouthmap))
        report[report_key(m)] = r
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
        c = r["clip"]
        s = r.get("streaming", {})
        if "flip" in c:
            f = c["flip"]
            print(f"{m}: flip averaging: greedy CER {f['greedy']['cer']:.3f} WER {f['greedy']['wer']:.3f}, beam CER "
                  f"{f['beam']['cer']:.3f} WER {f['beam']['wer']:.3f} (without: greedy WER {c['greedy']['wer']:.3f}, "
                  f"beam {c['beam']['wer']:.3f}); {f['ms_per_window']:.1f} ms a window against "
                  f"{f['ms_per_window_without']:.1f}", flush=True)
        print(
            f"{m.name}: {r['size_mb']} MB | clip greedy CER {c['greedy']['cer']:.3f} WER {c['greedy']['wer']:.3f} | "
            f"beam CER {c['beam']['cer']:.3f} WER {c['beam']['wer']:.3f} | "
            f"serving open WER {r.get('serving', {}).get('open', {}).get('wer', float('nan')):.3f}, "
            f"grid WER {r.get('serving', {}).get('grid', {}).get('wer', float('nan')):.3f} | "
            f"streaming WER {s.get('wer', float('nan')):.3f}, grid {s.get('grid_wer', float('nan')):.3f} | "
            f"{r['latency']['batch1_ms_per_window']:.1f} ms/window at batch 1, "
            f"{r['latency']['batch16_ms_per_window']:.1f} at 16 ({time.time() - t0:.0f} s)",
            flush=True,
        )
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
