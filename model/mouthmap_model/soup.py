"""Average the weights of checkpoints that share an ancestor (a "model soup":
runs fine-tuned or warm-restarted from the same weights), at no cost at
inference:

    python -m mouthmap_model.soup checkpoints/v3-wr.pt runs/v4-a/last.pt runs/v4-b/last.pt --out runs/soup.pt

Each checkpoint contributes its moving average when it has one, else its
weights. Batch-norm statistics do not average (the mean of two variances is
not the variance of the averaged network's activations): they are measured
again, in one pass over the training crops, unaugmented. The soup's greedy
validation CER and WER are printed beside each ingredient's (the same
`train.evaluate`) and written into the checkpoint, which `release` takes
like any other (`--checkpoint`).

Only checkpoints of one lineage average into a working network: two runs
from different random starts land in different basins, and their mean is
worse than either (the printed figures show it)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from . import data as D
from .carry import summary
from .net import lipnet_of, load_checkpoint
from .train import T, batch, evaluate


def weights_of(ckpt: dict) -> dict[str, torch.Tensor]:
    return ckpt.get("ema") or ckpt["model"]


def carried(ckpts: list[dict]) -> dict | None:
    seen = [c["data_carried"] for c in ckpts if c.get("data_carried")]
    if not seen:
        return None
    return {**summary(seen[0]), "ingredients": len(seen), "of": len(ckpts)}


@torch.no_grad()
def refresh_batch_norm(net, manifest: dict, arrays: dict, mean: float, std: float, size: int = 16) -> None:
    """Batch-norm running statistics measured again over every training clip
    (cumulative averages: momentum None), the network otherwise in eval mode."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.eval()
    for m in bns:
        m.train()
    train = [e for e in manifest["clips"] if e["split"] == "train"]
    for i in range(0, len(train), size):
        part = train[i : i + size]
        x, _, _, _ = batch([(arrays[e["clip"]][:T], e["text"]) for e in part], mean, std, None)
        net(x)
    net.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, help="training checkpoints of one lineage (two or more)")
    p.add_argument("--out", required=True, type=Path, help="where the averaged checkpoint is written")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if len(args.checkpoints) < 2:
        raise SystemExit("give two or more checkpoints to average")
    torch.set_num_threads(args.threads)
    ckpts = []
    for path in args.checkpoints:
        ckpts.append(load_checkpoint(path))
    first = ckpts[0]
    keys = set(weights_of(first))
    for path, c in zip(args.checkpoints[1:], ckpts[1:]):
        if set(weights_of(c)) != keys or any(
            weights_of(c)[k].shape != weights_of(first)[k].shape for k in keys
        ):
            raise SystemExit(f"{path}: not the network {args.checkpoints[0]} holds (other layers or widths)")
    mean, std = first["mean"], first["std"]
    if any(abs(c["mean"] - mean) > 1e-6 or abs(c["std"] - std) > 1e-6 for c in ckpts[1:]):
        raise SystemExit("the checkpoints normalise their input differently: not one lineage")

    manifest, arrays = D.load(Path(args.data))
    for path, c in zip(args.checkpoints, ckpts):
        net = lipnet_of(c, D.CLASSES)
        net.load_state_dict(weights_of(c))
        cer, wer, _ = evaluate(net, manifest, arrays, mean, std)
        print(f"{path}: greedy validation CER {cer:.4f} WER {wer:.4f}", flush=True)

    soup = {}
    for k, v in weights_of(first).items():
        if v.is_floating_point():
            soup[k] = torch.stack([weights_of(c)[k].float() for c in ckpts]).mean(0).to(v.dtype)
        else:
            soup[k] = v.clone()
    net = lipnet_of(first, D.CLASSES)
    net.load_state_dict(soup)
    refresh_batch_norm(net, manifest, arrays, mean, std)
    cer, wer, _ = evaluate(net, manifest, arrays, mean, std)
    print(f"soup of {len(ckpts)}: greedy validation CER {cer:.4f} WER {wer:.4f}", flush=True)
    out = {
        "model": net.state_dict(),
        "ema": None,
        # The training that went into the soup: every ingredient's steps and
        # minutes (what the metadata's `training` then reports).
        "step": int(sum(c.get("step", 0) for c in ckpts)),
        "total_steps": int(sum(c.get("step", 0) for c in ckpts)),
        "best_wer": wer,
        "elapsed": float(np.sum([c.get("elapsed", 0.0) for c in ckpts])),
        "mean": mean,
        "std": std,
        "val_cer": cer,
        "val_wer": wer,
        # Each ingredient's training data (runs on machines whose crop builds
        # differ name different manifests): all of them, in order, once each.
        "data_manifest_sha256": " + ".join(
            dict.fromkeys(h for c in ckpts for h in str(c.get("data_manifest_sha256")).split(" + "))
        ),
        # Ingredients trained on a lossy copy of the crops (`carry`, a lent
        # GPU): how it travelled, and how many of the ingredients saw it.
        "data_carried": carried(ckpts),
        "init": first.get("init"),
        "recipe": first.get("recipe"),
        "soup": [str(p) for p in args.checkpoints],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
