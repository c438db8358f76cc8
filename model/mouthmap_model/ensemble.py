"""Whether averaging several models' posteriors beats each alone (clip level):

    python -m mouthmap_model.ensemble ../models/mouthmap-lipnet-grid-s1/{2,3,4}/model.onnx

Every validation clip through each model in ONNX Runtime (its crops as
`evaluate`'s clip level takes them), then every pair and larger set of the
models with their posteriors averaged per frame, arithmetically and
geometrically (renormalised), each read greedily and by the CTC beam
search; prints greedy and beam WER and CER of each. The models must share
a vocabulary. An ensemble costs each member's inference time.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import data as D
from .evaluate import beam_decode, clip_window
from .metrics import cer, greedy_decode, wer


def posteriors(model: str, val: list[dict], arrays: dict, threads: int) -> tuple[list[np.ndarray], list[str], int]:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    vocab, blank = json.loads(meta["vocabulary"]), int(meta["blank_index"])
    norm = json.loads(meta["normalization"])
    out = []
    for e in val:
        x, n = clip_window(arrays[e["clip"]], norm)
        out.append(sess.run(None, {"frames": x})[0][0, :n])
    return out, vocab, blank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="two or more exported models (model.onnx)")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if len(args.models) < 2:
        p.error("give two or more models")
    manifest, arrays = D.load(Path(args.data))
    val = [e for e in manifest["clips"] if e["split"] == "validation"]
    refs = [e["text"] for e in val]
    probs, vocab = {}, None
    for m in args.models:
        probs[m], v, blank = posteriors(m, val, arrays, args.threads)
        if vocab is not None and v != vocab:
            raise SystemExit(f"{m}: its vocabulary differs from {args.models[0]}'s; posteriors cannot be averaged")
        vocab = v
    labels = [v if v != "<blank>" else "" for v in vocab]

    def score(name: str, ps: list[np.ndarray]) -> None:
        g = [greedy_decode(x, vocab, blank) for x in ps]
        b = [beam_decode(x, labels, blank) for x in ps]
        print(f"{name}: greedy WER {100 * wer(g, refs):.1f}% CER {100 * cer(g, refs):.2f}%; "
              f"beam WER {100 * wer(b, refs):.1f}% CER {100 * cer(b, refs):.2f}%", flush=True)

    for m in args.models:
        score(m, probs[m])
    for k in range(2, len(args.models) + 1):
        for combo in itertools.combinations(args.models, k):
            label = " + ".join(combo)
            score(f"mean of {label}", [np.mean([probs[c][i] for c in combo], 0) for i in range(len(val))])
            geo = [np.exp(np.mean([np.log(probs[c][i] + 1e-8) for c in combo], 0)) for i in range(len(val))]
            score(f"geometric mean of {label}", [x / x.sum(-1, keepdims=True) for x in geo])


if __name__ == "__main__":
    main()
