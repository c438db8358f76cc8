"""CTC decoding and error rates."""

from __future__ import annotations

import numpy as np


def greedy_decode(probs: np.ndarray, vocab: list[str], blank: int) -> str:
    """Best class per frame, repeats merged, blanks dropped. probs: [T, classes]."""
    best = probs.argmax(-1)
    out, prev = [], -1
    for k in best:
        if k != prev and k != blank:
            out.append(vocab[k])
        prev = k
    return " ".join("".join(out).split())


def edit_distance(a: list, b: list) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def cer(hyps: list[str], refs: list[str]) -> float:
    return sum(edit_distance(list(h), list(r)) for h, r in zip(hyps, refs)) / max(1, sum(len(r) for r in refs))


def wer(hyps: list[str], refs: list[str]) -> float:
    return sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs)) / max(
        1, sum(len(r.split()) for r in refs)
    )
