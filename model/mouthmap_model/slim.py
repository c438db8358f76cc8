"""Slim a training checkpoint to what resuming it needs across sessions.

    python -m mouthmap_model.slim runs/v2-long/last.pt checkpoints/v2-long.pt

A run longer than one session is committed between sessions (a session's
machine may not be kept), so its checkpoint is kept small: the weights and
their moving average in float16 (half the size; upcast when loaded), the
schedule's position, the normalisation and the data hash; no optimiser
state (`train --resume` starts a fresh one, ramped in over 200 steps).
`--no-ema` leaves the moving average out too (half again: a resumed run
starts it afresh from the weights, which it follows within about a
thousand steps at decay 0.999). `--ema-as-weights` keeps the moving
average alone, stored as the weights: the form a run is committed in for
`release` and `--init` (`checkpoints/v3-wr.pt`, 6.5 MB; its metadata then
says `weights: last`).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from .net import load_checkpoint

# What a resumed run reads besides the weights.
KEEP = (
    "step",
    "total_steps",
    "best_wer",
    "elapsed",
    "mean",
    "std",
    "val_cer",
    "val_wer",
    "data_manifest_sha256",
    "alt_data_manifest_sha256",
    "data_carried",
    "init",
    "recipe",
    "rng",
    "soup",
)


def half(state: dict | None) -> dict | None:
    if state is None:
        return None
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def slim(src: Path, dst: Path, ema: bool = True, ema_as_weights: bool = False) -> dict:
    ckpt = load_checkpoint(src)
    out = {k: ckpt.get(k) for k in KEEP}
    if ema_as_weights:
        if ckpt.get("ema") is None:
            raise SystemExit(f"{src}: no moving average to keep as the weights (the run had --ema 0)")
        out["model"] = half(ckpt["ema"])
        out["ema"] = None
    else:
        out["model"] = half(ckpt["model"])
        out["ema"] = half(ckpt.get("ema")) if ema else None
    out["opt"] = None
    out["sched"] = None
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="a checkpoint train wrote (RUN/last.pt)")
    p.add_argument("dst", type=Path, help="where the slim one goes")
    p.add_argument("--no-ema", action="store_true", help="leave out the weights' moving average")
    p.add_argument(
        "--ema-as-weights",
        action="store_true",
        help="keep the moving average alone, as the weights (the form committed for release and --init)",
    )
    args = p.parse_args()
    if args.no_ema and args.ema_as_weights:
        raise SystemExit("--no-ema and --ema-as-weights contradict each other: give one")
    out = slim(args.src, args.dst, ema=not args.no_ema, ema_as_weights=args.ema_as_weights)
    digest = hashlib.sha256(args.dst.read_bytes()).hexdigest()
    print(
        f"{args.dst}: step {out['step']} of {out['total_steps']}, validation WER {out['val_wer']:.4f}, "
        f"{args.dst.stat().st_size / 1e6:.1f} MB (from {args.src.stat().st_size / 1e6:.1f} MB), sha256 {digest}"
    )


if __name__ == "__main__":
    main()
