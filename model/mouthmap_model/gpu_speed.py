"""The reference network's speed on a GPU (or any PyTorch device): how many
real-time streams one device's inference carries.

    python -m mouthmap_model.gpu_speed --device cuda --out gpu-speed.json

Serving runs the model in ONNX Runtime (`mouthmap infer --device cuda` needs
the `onnxruntime-gpu` build, whose wheel is too large to carry to the lent
GPU machines here); this measures the same network in PyTorch, which those
machines have, so the figures are PyTorch's kernels (cuDNN), not ONNX
Runtime's. Speed does not depend on the weights: they are random.

Measured, each at several batch sizes, FP32 and BF16 (autocast):
- the whole graph on a 75-frame window (`--front-end per-window`): windows/s;
- the front end once per frame (`--front-end once`): 25 new frames with 3 of
  context each side per stream per hop, then the back end (GRU + classifier)
  per window: stream-hops/s.
At hop 25 a real-time stream needs one window per second, so windows/s (or
stream-hops/s) is the number of streams the device keeps up with, before
everything around the model (decoding, the broker, the crop).

The median of `--reps` timed runs after warm-up, synchronised.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from . import data as D
from .net import LipNet

T, H, W = 75, 46, 140
HOP, CONTEXT = 25, 3


def timed(fn, reps: int, sync) -> float:
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batches", default="1,8,32,128,512", help="batch sizes, comma-separated")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", help="where the JSON report goes")
    args = p.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: PyTorch sees no CUDA device here; use --device cpu to try the script")
        torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    net = LipNet(D.CLASSES).to(dev).eval()
    report = {
        "device": torch.cuda.get_device_name(dev) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "hop": HOP,
        "reps": args.reps,
        "rows": [],
    }
    print(f"{report['device']}, torch {torch.__version__}", flush=True)
    print("precision  batch  whole graph: windows/s  front once: stream-hops/s  (ms a batch: whole / front+back)")
    for precision in ("fp32", "bf16"):
        auto = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        for batch in [int(b) for b in args.batches.split(",")]:
            window = torch.randn(batch, 1, T, H, W, device=dev)
            hop_frames = torch.randn(batch, 1, HOP + 2 * CONTEXT, H, W, device=dev)

            @torch.no_grad()
            def whole():
                with auto:
                    net(window)

            @torch.no_grad()
            def front_back():
                with auto:
                    y = net.front(hop_frames)  # [B, C, t, h, w]
                    b, c, t, h, w = y.shape
                    # The back end reads a window of cached features: 75 of them.
                    feats = y.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w)
                    feats = feats.repeat(1, (T + t - 1) // t, 1)[:, :T]
                    out, _ = net.gru(feats)
                    net.out(out)

            try:
                t_whole = timed(whole, args.reps, sync)
                t_split = timed(front_back, args.reps, sync)
            except torch.OutOfMemoryError:
                print(f"{precision:9}  {batch:5}  out of memory", flush=True)
                break
            row = {
                "precision": precision,
                "batch": batch,
                "whole_ms": round(t_whole * 1000, 3),
                "split_ms": round(t_split * 1000, 3),
                "windows_per_s": round(batch / t_whole, 1),
                "stream_hops_per_s": round(batch / t_split, 1),
            }
            report["rows"].append(row)
            print(
                f"{precision:9}  {batch:5}  {row['windows_per_s']:>22}  {row['stream_hops_per_s']:>26}"
                f"  ({row['whole_ms']} / {row['split_ms']})",
                flush=True,
            )
    if cuda:
        report["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    best = max(report["rows"], key=lambda r: r["stream_hops_per_s"])
    print(
        f"best: {best['stream_hops_per_s']} real-time streams at hop {HOP} "
        f"(front end once, {best['precision']}, batch {best['batch']}); the model alone",
        flush=True,
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
