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


def align(ref: list, hyp: list) -> list[tuple[str, object, object, int]]:
    """A least-cost edit script turning `ref` into `hyp` (Levenshtein): each
    edit as (kind S/D/I, reference item, hypothesis item, reference index),
    "" for the side an insertion or deletion lacks."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    i, j, ops = n, m, []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] != hyp[j - 1]:
                ops.append(("S", ref[i - 1], hyp[j - 1], i - 1))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append(("D", ref[i - 1], "", i - 1))
            i -= 1
        else:
            ops.append(("I", "", hyp[j - 1], i))
            j -= 1
    return ops[::-1]


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance: the number of edits in [`align`]'s script."""
    return len(align(a, b))


def cer(hyps: list[str], refs: list[str]) -> float:
    return sum(edit_distance(list(h), list(r)) for h, r in zip(hyps, refs)) / max(1, sum(len(r) for r in refs))


def wer(hyps: list[str], refs: list[str]) -> float:
    return sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs)) / max(
        1, sum(len(r.split()) for r in refs)
    )
