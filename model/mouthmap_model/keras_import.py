"""Import a Keras LipNet (.h5) as a MouthMap model: an ONNX file that meets
the serving contract, written into a version of the model repository.

    python -m mouthmap_model.keras_import lipnet.h5 --out models/keras-lipnet/1/model.onnx \\
        --alphabet "abcdefghijklmnopqrstuvwxyz " --mean 0 --std 1

What a Keras LipNet looks like: input [T, H, W, C] (T = 75 frames at
25 fps; H x W any size; C = 1 gray or 3 RGB), output [T, classes] softmax
(or logits) over an alphabet plus the CTC blank, last by default as in
Keras' `ctc_batch_cost`. The import wraps it to the contract, inside the
graph, so nothing changes in the Rust server:

- input [batch, 75, 46, 140, 1], MouthMap's gray mouth crops, already
  normalised by the server as the metadata says (`--mean/--std` on
  pixel/255, or `--scale/--offset` on 0..255 pixels: what the Keras model
  was trained on);
- crops resized to the model's H x W (bilinear, half-pixel centres, as two
  fixed matrix products: tf2onnx's resize conversion is wrong here) and the
  gray channel repeated when the model takes RGB;
- output [batch, 75, classes]; `output` in the metadata says probabilities
  (a softmax last) or logits.

The metadata gets the vocabulary (the alphabet, then `<blank>` where the
blank is), `blank_index`, the normalisation, the window shape, fps, name,
version, and where it came from (file name and sha256). Then the converted
model is checked: ONNX Runtime (in a process of its own: TensorFlow and ONNX
Runtime in one process crash) against Keras on the same random crops, max
absolute difference at most `--tolerance` (1e-4), or nothing is written.

Needs TensorFlow and tf2onnx (`scripts/install-deps` puts them in
.stack/interop-venv).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FRAMES, HEIGHT, WIDTH = 75, 46, 140
CONTRACT = "ctc-window/1"


def bilinear(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: bilinear resampling with half-pixel centres."""
    m = np.zeros((n_out, n_in), np.float32)
    for o in range(n_out):
        c = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(c))
        hi = min(lo + 1, n_in - 1)
        w = c - lo
        m[o, lo] += 1 - w
        m[o, hi] += w
    return m


def wrap(model):
    """A tf.function from the contract's input to the Keras model's output."""
    import tensorflow as tf

    shape = model.input_shape
    if len(shape) != 5:
        raise SystemExit(f"the Keras model's input is {shape}; a LipNet takes [batch, T, H, W, C]")
    _, t, h, w, c = shape
    if t not in (None, FRAMES):
        raise SystemExit(f"the Keras model reads {t} frames; MouthMap windows are {FRAMES} frames at 25 fps")
    if c not in (1, 3) or h is None or w is None:
        raise SystemExit(f"the Keras model's frames are {h}x{w}x{c}; a fixed size with 1 or 3 channels is needed")
    out = model.output_shape
    if len(out) != 3:
        raise SystemExit(f"the Keras model's output is {out}; a LipNet gives [batch, T, classes]")
    ry = bilinear(HEIGHT, h)
    rx = bilinear(WIDTH, w).T.copy()
    resize = (h, w) != (HEIGHT, WIDTH)

    @tf.function(input_signature=[tf.TensorSpec([None, FRAMES, HEIGHT, WIDTH, 1], tf.float32, name="frames")])
    def served(frames):
        batch = tf.shape(frames)[0]
        x = frames
        if resize:
            x = tf.reshape(x, [-1, HEIGHT, WIDTH])
            x = tf.matmul(tf.matmul(tf.constant(ry), x), tf.constant(rx))
            x = tf.reshape(x, [batch, FRAMES, h, w, 1])
        if c == 3:
            x = tf.tile(x, [1, 1, 1, 1, 3])
        return {"probs": model(x, training=False)}

    return served


def is_softmax_last(model) -> bool:
    import keras

    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return act is keras.activations.softmax or getattr(act, "__name__", "") == "softmax"


def vocabulary(alphabet: str, classes: int, blank: str) -> tuple[list[str], int]:
    if len(set(alphabet)) != len(alphabet):
        raise SystemExit(f"--alphabet {alphabet!r} repeats a character")
    if len(alphabet) + 1 != classes:
        raise SystemExit(
            f"the Keras model has {classes} classes, the alphabet {len(alphabet)} characters plus the blank "
            f"makes {len(alphabet) + 1}: give the alphabet the model was trained on (--alphabet)"
        )
    index = {"last": classes - 1, "first": 0}.get(blank)
    if index is None:
        index = int(blank)
    if not 0 <= index < classes:
        raise SystemExit(f"--blank {blank}: outside the {classes} classes")
    chars = list(alphabet)
    return chars[:index] + ["<blank>"] + chars[index:], index


CHECK = r"""
import sys, numpy as np, onnxruntime as ort
data = np.load(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
got = s.run(None, {s.get_inputs()[0].name: data["x"]})[0]
print(float(np.abs(got - data["y"]).max()) if got.shape == data["y"].shape else f"shape {got.shape} vs {data['y'].shape}")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("h5", help="the Keras model (.h5: architecture and weights)")
    p.add_argument("--out", required=True, help="the ONNX file to write: a repository version, models/NAME/VERSION/model.onnx")
    p.add_argument("--alphabet", default="abcdefghijklmnopqrstuvwxyz ",
                   help="the characters of the model's classes in index order, without the blank "
                        "(default: rizkiarm/LipNet's: a-z, then space)")
    p.add_argument("--blank", default="last", help="where the CTC blank is: last (Keras), first, or an index")
    p.add_argument("--mean", type=float, help="input = (pixel/255 - mean) / std, as the model was trained")
    p.add_argument("--std", type=float)
    p.add_argument("--scale", type=float, help="or input = pixel * scale + offset (0..255 pixels)")
    p.add_argument("--offset", type=float, default=0.0)
    p.add_argument("--name", help="model_name in the metadata (default: the repository directory's name)")
    p.add_argument("--version", default="1.0.0", help="model_version in the metadata")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX Runtime - Keras| allowed")
    a = p.parse_args()

    if (a.mean is None) == (a.scale is None) or (a.mean is not None and not (a.std and a.std > 0)):
        raise SystemExit("give the model's input normalisation: --mean M --std S (S > 0), or --scale K [--offset B]")
    normalization = ({"formula": "(pixel / 255 - mean) / std", "mean": a.mean, "std": a.std} if a.mean is not None
                     else {"formula": "pixel * scale + offset", "scale": a.scale, "offset": a.offset})
    src = Path(a.h5)
    out = Path(a.out)
    name = a.name or (out.parent.parent.name if out.name == "model.onnx" else out.stem)

    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(src, compile=False)
    classes = model.output_shape[-1]
    vocab, blank = vocabulary(a.alphabet, classes, a.blank)
    served = wrap(model)
    proto, _ = tf2onnx.convert.from_function(served, input_signature=served.input_signature, opset=17)
    meta = {
        "vocabulary": json.dumps(vocab),
        "blank_index": str(blank),
        "normalization": json.dumps(normalization),
        "frames_per_window": str(FRAMES),
        "frame_height": str(HEIGHT),
        "frame_width": str(WIDTH),
        "fps": "25",
        "model_name": name,
        "model_version": a.version,
        "output": "probabilities" if is_softmax_last(model) else "logits",
        "mouthmap.contract": CONTRACT,
        "imported_from": json.dumps({
            "file": src.name,
            "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
            "format": "keras h5",
            "input": list(model.input_shape[1:]),
            "converter": f"tf2onnx {tf2onnx.__version__}, TensorFlow {tf.__version__}",
        }),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v

    rng = np.random.default_rng(0)
    x = rng.random((2, FRAMES, HEIGHT, WIDTH, 1), dtype=np.float32)
    y = served(tf.constant(x))["probs"].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_tmp = Path(tmp) / "model.onnx"
        onnx_tmp.write_bytes(proto.SerializeToString())
        np.savez(Path(tmp) / "check.npz", x=x, y=y)
        res = subprocess.run([sys.executable, "-c", CHECK, str(onnx_tmp), str(Path(tmp) / "check.npz")],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"ONNX Runtime cannot run the converted model:\n{res.stderr[-2000:]}")
        verdict = res.stdout.strip().splitlines()[-1]
        try:
            diff = float(verdict)
        except ValueError:
            raise SystemExit(f"the converted model's output differs from Keras': {verdict}") from None
        if not diff <= a.tolerance:
            raise SystemExit(f"ONNX Runtime differs from Keras by {diff:.2e} (> {a.tolerance:.0e}): not written")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(onnx_tmp.read_bytes())
    print(json.dumps({"out": str(out), "name": name, "classes": classes, "blank_index": blank,
                      "input": list(model.input_shape[1:]), "max_abs_diff": diff, "output": meta["output"]}))


if __name__ == "__main__":
    main()
