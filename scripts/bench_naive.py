"""The naive way to serve the model, for comparison: one window per request,
a fresh input array each, sequential `session.run` calls in Python with
ONNX Runtime's defaults (what a per-request Python service does).

    python scripts/bench_naive.py MODEL.onnx CROP.pgm OUT.json [SECONDS]
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def pgm(path):
    data = open(path, "rb").read()
    parts = data.split(maxsplit=4)
    w, h = int(parts[1]), int(parts[2])
    return np.frombuffer(parts[4][: w * h], dtype=np.uint8).reshape(h, w)


def main():
    model, crop_path, out = sys.argv[1:4]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    norm = json.loads(meta["normalization"])
    frames = int(meta["frames_per_window"])
    name = session.get_inputs()[0].name
    crop = pgm(crop_path)
    session.run(None, {name: np.zeros((1, frames, *crop.shape, 1), np.float32)})
    n, start = 0, time.perf_counter()
    while n < 20 or time.perf_counter() - start < seconds:
        # A fresh request: the window arrives as bytes and is normalised anew.
        window = np.repeat(crop[None], frames, axis=0).astype(np.float32)
        x = ((window / 255.0 - norm["mean"]) / norm["std"]).reshape(1, frames, *crop.shape, 1)
        session.run(None, {name: x})
        n += 1
    elapsed = time.perf_counter() - start
    report = {
        "windows": n,
        "seconds": elapsed,
        "windows_per_s": n / elapsed,
        "onnxruntime": ort.__version__,
        "intra_op_threads": "default",
    }
    json.dump(report, open(out, "w"), indent=1)
    print(f"naive Python loop: {n / elapsed:.1f} windows/s ({n} windows in {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
