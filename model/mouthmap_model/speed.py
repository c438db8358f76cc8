"""Windows per second of exported models in ONNX Runtime, side by side.

    python -m mouthmap_model.speed ../models/mouthmap-lipnet-grid-s1/1/model.onnx \\
        ../models/mouthmap-lipnet-grid-s1/2/model.onnx ../models/mouthmap-lipnet-grid-s1-int8/1/model.onnx

Random input, two warm-up runs, then the median of 30 runs at batch 1 and 6
at batch 16, with `--threads` intra-op threads (default 2; `mouthmap infer`
runs one per model unless `--model-threads` says more). Run it on an idle
machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true",
                   help="also each model's time by operator type at batch 1 (ONNX Runtime's profiler, "
                        "a separate session so the timings above are not slowed by it)")
    args = p.parse_args()
    base = None
    for path in args.models:
        o = ort.SessionOptions()
        o.intra_op_num_threads = args.threads
        s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        per_window = []
        for batch, reps in ((1, 30), (16, 6)):
            x = np.random.rand(batch, 75, 46, 140, 1).astype(np.float32)
            for _ in range(2):
                s.run(None, {name: x})
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                s.run(None, {name: x})
                times.append(time.perf_counter() - t0)
            per_window.append(float(np.median(times)) / batch * 1000)
        base = base or per_window
        print(
            f"{path}: {per_window[0]:.1f} ms per window at batch 1 ({base[0] / per_window[0]:.2f}x the first), "
            f"{per_window[1]:.1f} at batch 16 ({base[1] / per_window[1]:.2f}x)",
            flush=True,
        )
        if args.profile:
            for op, share, ms in profile(path, args.threads)[:8]:
                print(f"    {op:<20} {100 * share:5.1f}%  {ms:6.2f} ms per window", flush=True)


def profile(path: str, threads: int, runs: int = 20) -> list[tuple[str, float, float]]:
    """(operator type, share of the kernels' time, ms per window) at batch 1,
    largest first, from ONNX Runtime's profiler over `runs` runs after two
    warm-up runs (which the profile also holds: shares, not totals, are
    what it is for)."""
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.enable_profiling = True
    o.profile_file_prefix = os.path.join(tempfile.gettempdir(), "mouthmap-speed")
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    x = np.random.rand(1, 75, 46, 140, 1).astype(np.float32)
    name = s.get_inputs()[0].name
    for _ in range(runs + 2):
        s.run(None, {name: x})
    trace = s.end_profiling()
    by = collections.Counter()
    with open(trace) as f:
        for e in json.load(f):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by[e["args"]["op_name"]] += e["dur"]
    os.remove(trace)
    total = sum(by.values()) or 1
    return [(op, d / total, d / (runs + 2) / 1000) for op, d in by.most_common()]


if __name__ == "__main__":
    main()
