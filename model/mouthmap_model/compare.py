"""How sure a WER difference is: bootstrap intervals over the validation clips.

    python -m mouthmap_model.compare eval-report.json runs/eval-cand.json#runs/cand/model.onnx

Each argument is an `evaluate` report (its JSON), optionally followed by
`#KEY` to pick one of its models (default: the report's first). For every
figure both reports hold (clips through the serving path: open, lexicon,
GRID grammar; the clip-level greedy and beam reads; streams: open, lexicon,
GRID), it prints the WER of each, a 95% interval for each, and, for two
models, the paired difference (second minus first) with its 95% interval and
how often the second was better over the resamples.

The validation set is 50 clips, 300 words: one word is 0.33 points, and a
difference of a few words can be the clips drawn rather than the model. The
bootstrap (Efron and Tibshirani, 1993) resamples the clips (or streams) with
replacement, the same draw for both models (paired: both read the same
clips), and recomputes each WER as word errors over reference words of the
drawn items; the 2.5th and 97.5th percentiles of 10000 draws bound the
interval. A difference whose interval holds 0 is not shown by these clips;
that is the rule `release` decisions quote.

With one report it prints each figure's interval alone. For each model with
both clips and streams it also prints the streams' gap over the same clips
read alone (the streams target) with its interval, resampled by stream.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from . import data as D
from .metrics import edit_distance

# (section name, how to get (item id, reference, hypothesis) triples from a model's report).
SECTIONS = ("clips open", "clips lexicon", "clips grid", "clip greedy", "clip beam",
            "streams open", "streams lexicon", "streams grid")


def items(report: dict, section: str, refs: dict[str, str]) -> dict[str, tuple[int, int]] | None:
    """Each item's (word errors, reference words) for one section, or None if the report lacks it."""
    kind, mode = section.split()
    if kind == "clips":
        clips = report.get("serving", {}).get(mode, {}).get("clips")
        pairs = None if clips is None else [(c["clip"], refs[c["clip"]], c["final"]) for c in clips]
    elif kind == "clip":
        clips = report.get("clip", {}).get("clips")
        pairs = None if clips is None else [(c["clip"], c["reference"], c[mode]) for c in clips]
    else:
        streams = report.get("streaming", {}).get("streams")
        field = {"open": "final", "lexicon": "final_lexicon", "grid": "final_grid"}[mode]
        if streams is None or any(field not in s for s in streams):
            return None
        pairs = [("+".join(s["clips"]), s["reference"], s[field]) for s in streams]
    if pairs is None:
        return None
    return {name: (edit_distance(ref.split(), hyp.split()), len(ref.split())) for name, ref, hyp in pairs}


def bootstrap(errors: np.ndarray, words: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """WER of each resample: `errors` is (models, items), `words` (items,); returns (models, samples)."""
    n = errors.shape[1]
    draw = rng.integers(0, n, size=(samples, n))
    counts = np.stack([np.bincount(d, minlength=n) for d in draw])  # (samples, items)
    return (errors @ counts.T) / (counts @ words)


def interval(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)


def load(arg: str) -> tuple[str, dict]:
    path, _, key = arg.partition("#")
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"{path}: no such report; write one with `python -m mouthmap_model.evaluate --out {path}`")
    report = json.loads(p.read_text())
    if not report:
        raise SystemExit(f"{path} holds no model")
    key = key or next(iter(report))
    if key not in report:
        raise SystemExit(f"{path} has no model {key!r}; it has: {', '.join(report)}")
    return f"{path}#{key}", report[key]


def compare(reports: list[dict], refs: dict[str, str], samples: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for section in SECTIONS:
        per = [items(r, section, refs) for r in reports]
        if any(p is None for p in per):
            continue
        names = sorted(set.intersection(*(set(p) for p in per)))
        if not names:
            continue
        errors = np.array([[p[n][0] for n in names] for p in per], dtype=np.float64)
        words = np.array([per[0][n][1] for n in names], dtype=np.float64)
        wers = errors.sum(axis=1) / words.sum()
        boot = bootstrap(errors, words, samples, rng)
        row = {"section": section, "items": len(names), "words": int(words.sum()),
               "wer": [float(w) for w in wers], "interval": [interval(b) for b in boot]}
        if len(reports) == 2:
            diff = boot[1] - boot[0]
            row["difference"] = float(wers[1] - wers[0])
            row["difference_interval"] = interval(diff)
            row["second_better"] = float((diff < 0).mean())
            row["word_errors"] = [int(e) for e in errors.sum(axis=1)]
        rows.append(row)
    return rows


def gaps(report: dict, refs: dict[str, str], samples: int, seed: int) -> list[dict]:
    """Streams against the same clips read alone (the streams target: within
    2 points): per stream, its word errors and its five clips' errors alone,
    resampled by stream."""
    rng = np.random.default_rng(seed)
    rows = []
    for mode in ("open", "lexicon", "grid"):
        streams = items(report, f"streams {mode}", refs)
        clips = items(report, f"clips {mode}", refs)
        if streams is None or clips is None:
            continue
        names = sorted(n for n in streams if all(c in clips for c in n.split("+")))
        if not names:
            continue
        alone = [sum(clips[c][0] for c in n.split("+")) for n in names]
        errors = np.array([alone, [streams[n][0] for n in names]], dtype=np.float64)
        words = np.array([streams[n][1] for n in names], dtype=np.float64)
        boot = bootstrap(errors, words, samples, rng)
        wers = errors.sum(axis=1) / words.sum()
        rows.append({"section": f"streams - clips {mode}", "items": len(names), "words": int(words.sum()),
                     "clips": float(wers[0]), "streams": float(wers[1]), "gap": float(wers[1] - wers[0]),
                     "gap_interval": interval(boot[1] - boot[0])})
    return rows


def shown(row: dict) -> str:
    """'better', 'worse' or 'not shown': whether the paired difference's
    95% interval excludes 0 (B minus A; below 0 is B better)."""
    lo, hi = row["difference_interval"]
    return "better" if hi < 0 else "worse" if lo > 0 else "not shown"


def format_rows(names: list[str], rows: list[dict], gap_rows: list[list[dict]]) -> list[str]:
    """The printed table: one line per figure, then each model's streams gaps
    (`gap_rows[i]` are model i's)."""
    lines = [f"{'AB'[i]}: {name}" for i, name in enumerate(names)]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    for r in rows:
        cells = [f"{'AB'[i]} {pct(w)}% [{pct(lo)}, {pct(hi)}]" for i, (w, (lo, hi)) in enumerate(zip(r["wer"], r["interval"]))]
        line = f"{r['section']:<16} ({r['items']} items, {r['words']} words): " + ", ".join(cells)
        if "difference" in r:
            lo, hi = r["difference_interval"]
            verdict = "not shown" if shown(r) == "not shown" else "shown"
            line += (f"; B-A {r['difference'] * 100:+.1f} points [{lo * 100:+.1f}, {hi * 100:+.1f}] "
                     f"({r['word_errors'][0]} -> {r['word_errors'][1]} words), B better in "
                     f"{100 * r['second_better']:.0f}% of resamples: {verdict}")
        lines.append(line)
    for i, model_gaps in enumerate(gap_rows):
        for g in model_gaps:
            lo, hi = g["gap_interval"]
            lines.append(f"{'AB'[i]} {g['section']:<22} ({g['items']} streams of the same clips): streams "
                         f"{pct(g['streams'])}% against the clips alone {pct(g['clips'])}%: {g['gap'] * 100:+.1f} points "
                         f"[{lo * 100:+.1f}, {hi * 100:+.1f}]")
    return lines


def verdict(rows: list[dict], at_most: float | None = None) -> str:
    """One sentence on a paired comparison (B against A): where B is shown
    better, where worse, where neither. With `at_most` (a WER fraction, the
    INT8 target's 0.01), also whether every difference's upper bound stays
    within it."""
    by = {"better": [], "worse": [], "not shown": []}
    for r in rows:
        by[shown(r)].append(r["section"])
    parts = [f"{k}: {', '.join(v)}" for k, v in (("shown better", by["better"]), ("shown worse", by["worse"]),
                                                  ("no difference shown", by["not shown"])) if v]
    text = "; ".join(parts)
    if at_most is not None:
        over = [r["section"] for r in rows if r["difference_interval"][1] > at_most + 1e-12]
        text += (f"; every upper bound at most {at_most * 100:+.1f} points" if not over else
                 f"; upper bound above {at_most * 100:+.1f} points on: {', '.join(over)}")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="REPORT.json or REPORT.json#MODEL_KEY (one or two)")
    p.add_argument("--samples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"),
                   help="the crops' folder whose manifest.json holds each clip's sentence (`data build`)")
    args = p.parse_args()
    if len(args.reports) > 2:
        p.error("give one report (intervals) or two (a paired comparison)")
    if args.samples < 100:
        p.error("--samples: at least 100 resamples")
    refs = D.references(args.data)
    loaded = [load(a) for a in args.reports]
    rows = compare([r for _, r in loaded], refs, args.samples, args.seed)
    if not rows:
        raise SystemExit("the reports share no figure with texts to resample (were they written by `evaluate`?)")
    gap_rows = [gaps(r, refs, args.samples, args.seed) for _, r in loaded]
    if args.json:
        print(json.dumps(rows + [g for gs in gap_rows for g in gs], indent=1))
        return
    print("\n".join(format_rows([n for n, _ in loaded], rows, gap_rows)))
    if len(loaded) == 2:
        print(f"B against A: {verdict(rows)}")


if __name__ == "__main__":
    main()
