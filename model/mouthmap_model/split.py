"""Split a per-frame 2D model (`frames2d`) into its front end and its back end.

The front end (three convolution blocks) reads each frame with its
neighbours, three on each side at most (each block's temporal kernel is 3);
the back end (GRU and classifier) reads a window of the front end's
per-frame features. In a stream, windows overlap (75 frames at a hop of 25:
each frame is in three windows), so running the front end once per frame
and only the back end per window cuts the compute per frame; this module
writes the two graphs and measures what that changes:

    python -m mouthmap_model.split --model ../models/mouthmap-lipnet-grid-s1/2/model.onnx \
        --out runs/split

writes `front.onnx` (frames `[batch, T, 46, 140, 1]` -> features
`[batch, T, F]`, any T) and `back.onnx` (features `[batch, 75, F]` ->
probabilities `[batch, 75, classes]`), checks that back(front(window)) is
the single graph's output on validation windows, and reports the speed of
each part and how much a stream's windows change when each frame's features
come from its real neighbours instead of the window's zero padding.

Written beside the model (`--out ../models/mouthmap-lipnet-grid-s1/2`, as
the reference model's version 2 has them, each with its `.sha256`), the two
parts let the inferencer compute each frame's front end once per stream
instead of once per window (`mouthmap infer --front-end once`, the default
when they are there; inferencer/src/split.rs). It reproduces the single
graph's windows exactly: a window's first and last frames, which see the
window's edges, are computed from the window's own crops.

Written beside the model, `back.onnx` holds no weights of its own: its GRU
and classifier tensors are ONNX external data pointing at the same bytes
inside `model.onnx` (each tensor's offset found by content, so it is exact),
which keeps a version directory at the size of one network (13.5 MB, not
26 MB). `model.onnx` itself is untouched and still complete on its own; a
`back.onnx` copied away from its `model.onnx` does not load, and one beside
another `model.onnx` is refused by the inferencer's check of back(front(x))
against the model. `--no-borrow` writes a self-contained `back.onnx`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort

from . import data as D

#: The front end's output in graphs that `frames2d` wrote.
FEATURES = "/net/Reshape_output_0"
#: Frames of context on each side a frame's features depend on.
CONTEXT = 3


#: Tensors smaller than this stay inside back.onnx (biases of a few bytes
#: are not worth an external reference).
BORROW_MIN_BYTES = 1024


def borrow_weights(part: onnx.ModelProto, model_path: Path) -> int:
    """Points `part`'s large initializers at the identical bytes inside
    `model_path` (ONNX external data, location relative to the part, which
    must sit beside the model): returns the bytes no longer stored twice.
    A tensor is found by its little-endian content, which is how both raw
    and packed float fields lay it out in the serialised model."""
    whole = model_path.read_bytes()
    moved = 0
    for t in part.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        raw = onnx.numpy_helper.to_array(t)
        raw = raw.astype(raw.dtype.newbyteorder("<")).tobytes()
        if len(raw) < BORROW_MIN_BYTES:
            continue
        offset = whole.find(raw)
        if offset < 0:
            continue
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
            t.ClearField(field)
        del t.external_data[:]
        for key, value in (("location", model_path.name), ("offset", str(offset)), ("length", str(len(raw)))):
            t.external_data.add(key=key, value=value)
        t.data_location = onnx.TensorProto.EXTERNAL
        moved += len(raw)
    return moved


def split(model_path: Path, out: Path, borrow: bool = True) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_path))
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("graph") != "frames2d":
        raise SystemExit(f"{model_path}: not a frames2d graph (metadata graph={meta.get('graph')!r})")
    names = {o for n in model.graph.node for o in n.output}
    if FEATURES not in names:
        raise SystemExit(f"{model_path}: no tensor {FEATURES} (the front end's output) in the graph")
    front, back = out / "front.onnx", out / "back.onnx"
    onnx.utils.extract_model(str(model_path), str(front), ["frames"], [FEATURES])
    onnx.utils.extract_model(str(model_path), str(back), [FEATURES], ["probs"])
    for path, part in ((front, "front"), (back, "back")):
        m = onnx.load(str(path))
        del m.metadata_props[:]
        for k, v in {**meta, "graph": f"frames2d-{part}", "context_frames": str(CONTEXT)}.items():
            m.metadata_props.add(key=k, value=v)
        if part == "front":
            # Any number of frames: the blocks take their sizes from Shape.
            del m.graph.value_info[:]
            for t in (m.graph.input[0], m.graph.output[0]):
                dim = t.type.tensor_type.shape.dim[1]
                dim.ClearField("dim_value")
                dim.dim_param = "time"
        onnx.checker.check_model(m)
        if part == "back" and borrow and out.resolve() == model_path.parent.resolve():
            moved = borrow_weights(m, model_path)
            m.metadata_props.add(key="weights_in", value=model_path.name)
            print(f"{path}: {moved / 1e6:.1f} MB of weights read from {model_path.name} beside it (ONNX external data)")
        onnx.save(m, str(path))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        Path(str(path) + ".sha256").write_text(f"{digest}  {path.name}\n")
    return front, back


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def parts_difference(whole, front, back, windows) -> float:
    """The largest |back(front(x)) - whole(x)| over normalised windows x."""
    worst = 0.0
    for x in windows:
        want = whole.run(None, {"frames": x})[0]
        got = back.run(None, {FEATURES: front.run(None, {"frames": x})[0]})[0]
        worst = max(worst, float(np.abs(want - got).max()))
    return worst


def normalise(frames: np.ndarray, meta: dict) -> np.ndarray:
    n = json.loads(meta["normalization"])
    return ((frames.astype(np.float32) / 255.0 - n["mean"]) / n["std"])[..., None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", default=Path("runs/split"), type=Path)
    p.add_argument("--data", default=str(D.REPO / "model" / "data"))
    p.add_argument("--hop", type=int, default=25, help="frames between a stream's windows")
    p.add_argument(
        "--no-borrow",
        action="store_true",
        help="store back.onnx's weights in it even beside the model (by default, written beside model.onnx, "
        "it reads them from model.onnx as ONNX external data: one copy in the version directory)",
    )
    args = p.parse_args()
    front_path, back_path = split(args.model, args.out, borrow=not args.no_borrow)
    whole, front, back = session(args.model), session(front_path), session(back_path)
    meta = {p.key: p.value for p in onnx.load(str(args.model), load_external_data=False).metadata_props}
    manifest, arrays = D.load(Path(args.data))
    val = [c for c in manifest["clips"] if c["split"] == "validation"]

    # 1. The two parts are the single graph, window by window.
    worst = parts_difference(whole, front, back, (normalise(arrays[c["clip"]][:75], meta)[None] for c in val[:10]))
    print(f"back(front(window)) vs the single graph: max |diff| {worst:.2e} over 10 validation windows")

    # 2. Speed per window and per frame, one thread.
    x = normalise(arrays[val[0]["clip"]][:75], meta)[None]
    feats = front.run(None, {"frames": x})[0]

    def ms(f, n=20):
        f()
        t = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t) * 1000 / n

    whole_ms = ms(lambda: whole.run(None, {"frames": x}))
    front_ms = ms(lambda: front.run(None, {"frames": x}))
    back_ms = ms(lambda: back.run(None, {FEATURES: feats}))
    hop = args.hop
    seg = normalise(arrays[val[0]["clip"]][: hop + 2 * CONTEXT], meta)[None]
    seg_ms = ms(lambda: front.run(None, {"frames": seg}))
    per_frame_now = whole_ms / hop
    per_frame_split = (seg_ms + back_ms) / hop
    print(
        f"one thread: single graph {whole_ms:.1f} ms a window; front end {front_ms:.1f} ms on 75 frames, "
        f"{seg_ms:.1f} ms on {hop} new frames with {CONTEXT} of context each side; back end {back_ms:.1f} ms a window"
    )
    print(
        f"per frame of a stream at hop {hop}: {per_frame_now:.2f} ms windowed, {per_frame_split:.2f} ms split "
        f"({per_frame_now / per_frame_split:.2f}x)"
    )

    # 3. What real neighbours change: the validation clips joined into one
    # stream, windows at the hop, each window's probabilities from its own
    # padded front end against features computed once over the stream.
    stream = np.concatenate([arrays[c["clip"]] for c in val[:10]])
    xs = normalise(stream, meta)[None]
    stream_feats = front.run(None, {"frames": xs})[0]
    changed, total, diffs = 0, 0, []
    for start in range(0, len(stream) - 75 + 1, hop):
        win = xs[:, start : start + 75]
        a = whole.run(None, {"frames": win})[0][0]
        b = back.run(None, {FEATURES: stream_feats[:, start : start + 75]})[0][0]
        diffs.append(float(np.abs(a - b).max()))
        changed += int((a.argmax(-1) != b.argmax(-1)).sum())
        total += 75
    print(
        f"{len(diffs)} windows over {len(stream)} frames: frames whose most likely class changes with real "
        f"neighbours {changed}/{total} ({100 * changed / total:.2f}%), max |diff| {max(diffs):.3f}"
    )


if __name__ == "__main__":
    main()
