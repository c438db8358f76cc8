"""Training curves from a run's log, or several runs' validation WER side by side.

    python -m mouthmap_model.plot --run runs/lipnet --out training-curves.png
    python -m mouthmap_model.plot --compare training-log.jsonl=v1 \\
        checkpoints/v2-long.log.jsonl=v2-long --out training-compare.png

`--compare` plots each log's greedy validation WER and CER of the last
weights (comparable across runs with and without a moving average) against
training steps, so runs timed on different machines can be read together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(logs: list[str], out: str, wer_max: float = 100.0) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for spec in logs:
        path, _, label = spec.partition("=")
        rows = rows_of(Path(path))
        label = label or Path(path).stem
        steps = [r["step"] for r in rows]
        a.plot(steps, [100 * r.get("val_wer_last_weights", r["val_wer"]) for r in rows], label=label)
        b.plot(steps, [100 * r.get("val_cer_last_weights", r["val_cer"]) for r in rows], label=label)
    for ax, what in ((a, "WER"), (b, "CER")):
        ax.set_xlabel("training steps (16 samples each)")
        ax.set_ylabel(f"validation {what}, greedy, last weights (%)")
        ax.set_ylim(0, wer_max if what == "WER" else min(60.0, wer_max))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("MouthMap LipNet on GRID speaker 1: runs compared (50 validation clips)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/lipnet")
    p.add_argument("--out", default="training-curves.png")
    p.add_argument("--compare", nargs="+", metavar="LOG[=LABEL]", help="logs to plot together")
    p.add_argument(
        "--wer-max",
        type=float,
        default=100.0,
        help="top of the compared plots' axes in percent (e.g. 25 for runs that start from a trained model)",
    )
    args = p.parse_args()
    if args.compare:
        compare(args.compare, args.out, args.wer_max)
        return
    rows = rows_of(Path(args.run) / "log.jsonl")
    minutes = [r["minutes"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(minutes, [r["loss"] for r in rows], color="tab:blue")
    a.set_xlabel("training minutes (2 CPU cores)")
    a.set_ylabel("CTC loss (train, mean since last point)")
    a.set_yscale("log")
    a.grid(alpha=0.3)
    b.plot(minutes, [100 * r["val_cer"] for r in rows], label="validation CER (greedy)")
    b.plot(minutes, [100 * r["val_wer"] for r in rows], label="validation WER (greedy)")
    b.set_xlabel("training minutes (2 CPU cores)")
    b.set_ylabel("%")
    b.set_ylim(0, 100)
    b.grid(alpha=0.3)
    b.legend()
    fig.suptitle("MouthMap LipNet on GRID speaker 1: 850 training clips, 50 validation clips")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
