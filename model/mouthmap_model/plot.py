"""Training curves from a run's log.

    python -m mouthmap_model.plot --run runs/lipnet --out training-curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/lipnet")
    p.add_argument("--out", default="training-curves.png")
    args = p.parse_args()
    rows = [json.loads(line) for line in (Path(args.run) / "log.jsonl").read_text().splitlines() if line.strip()]
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
