"""Where a model's word errors are: by GRID slot, and which letters it confuses.

    python -m mouthmap_model.errors [--report eval-report.json] [--model KEY]

Reads the per-clip and per-stream texts `evaluate` wrote (the sentences from
the data manifest) and aligns each hypothesis with its reference word by
word (Levenshtein). Single clips are
counted by the slot of the GRID sentence (command, colour, preposition,
letter, digit, adverb) a wrong word stands in; streams by where the error
sits: inside a sentence or at a join (the last word of a sentence or the
first of the next), and whether the clip read alone got that word right
(the stream's own errors). Letter confusions are marked where both letters'
names look alike on the lips (same visible articulation: "bee"/"pee",
"you"/"queue", "dee"/"tee", ...): a visual model cannot be expected to tell
those apart, which bounds what any decoding can reach on the letter slot.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from . import data as D
from .metrics import align

SLOTS = ("command", "colour", "preposition", "letter", "digit", "adverb")

# Letter names whose visible articulation is the same (lips, jaw, visible
# teeth and tongue tip): the consonant hidden behind the teeth or in the
# throat, the vowel alike. One group per look.
LOOK_ALIKE = [
    {"b", "p"},  # bee, pee: lips closed, then "ee"
    {"c", "d", "e", "g", "t", "z"},  # see, dee, ee, gee, tee, zee: "ee" with the consonant out of sight
    {"q", "u"},  # queue, you
    {"s", "x"},  # es, ex
    {"l", "n"},  # el, en
    {"a", "k"},  # ay, kay
]


def look_alike(a: str, b: str) -> bool:
    return any(a in g and b in g for g in LOOK_ALIKE)


def clip_errors(clips: list[dict], refs: dict[str, str]) -> dict:
    slots: collections.Counter = collections.Counter()
    confusions: collections.Counter = collections.Counter()
    words = 0
    for c in clips:
        ref = refs[c["clip"]].split()
        words += len(ref)
        for kind, r, h, i in align(ref, c["final"].split()):
            slots[SLOTS[min(i, len(SLOTS) - 1)]] += 1
            if kind == "S" and i == 3 and len(r) == 1 and len(h) == 1:
                confusions[(r, h)] += 1
    alike = sum(n for (r, h), n in confusions.items() if look_alike(r, h))
    return {"words": words, "errors": sum(slots.values()), "by_slot": dict(slots),
            "letter_confusions": {f"{r}->{h}": n for (r, h), n in confusions.most_common()},
            "letter_confusions_look_alike": alike}


def stream_errors(streams: list[dict], clip_texts: dict[str, str], refs: dict[str, str], key: str) -> dict:
    joins = inside = own = 0
    own_words = []
    for s in streams:
        ref = s["reference"].split()
        n = len(SLOTS)
        for kind, r, h, i in align(ref, s[key].split()):
            k, pos = divmod(min(i, len(ref) - 1), n)
            at_join = (pos == n - 1 and k < len(s["clips"]) - 1) or (pos == 0 and k > 0) or kind == "I" and pos == 0
            joins += at_join
            inside += not at_join
            clip = s["clips"][min(k, len(s["clips"]) - 1)]
            alone = clip_texts[clip].split()
            if pos >= len(alone) or alone[pos] != refs[clip].split()[pos] or kind == "I":
                continue  # the clip alone got this word wrong too (or an insertion: not attributable)
            own += 1
            own_words.append(f"{r or '-'}->{h or '-'}")
    words = sum(len(s["reference"].split()) for s in streams)
    return {"words": words, "errors": joins + inside, "at_joins": joins, "inside_sentences": inside,
            "right_in_the_clip_alone": own, "examples": own_words}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", default=str(D.REPO / "model" / "eval-report.json"))
    p.add_argument("--model", help="the report's key (default: its first)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--data", default=str(D.REPO / "model" / "data"),
                   help="the crops' folder whose manifest.json holds each clip's sentence (`data build`)")
    args = p.parse_args()
    report = json.loads(Path(args.report).read_text())
    key = args.model or next(iter(report))
    if key not in report:
        raise SystemExit(f"{args.report} has no model {key!r}; it has: {', '.join(report)}")
    r = report[key]
    refs = D.references(args.data)
    out = {}
    for mode in ("open", "lexicon", "grid"):
        if mode in r.get("serving", {}):
            out[f"clips_{mode}"] = clip_errors(r["serving"][mode]["clips"], refs)
    if "streaming" in r and "open" in r.get("serving", {}):
        texts = {c["clip"]: c["final"] for c in r["serving"]["open"]["clips"]}
        out["streams_open"] = stream_errors(r["streaming"]["streams"], texts, refs, "final")
        if "grid" in r["serving"]:
            texts = {c["clip"]: c["final"] for c in r["serving"]["grid"]["clips"]}
            out["streams_grid"] = stream_errors(r["streaming"]["streams"], texts, refs, "final_grid")
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{key}")
    for name, e in out.items():
        line = f"{name}: {e['errors']} word errors in {e['words']}"
        if "by_slot" in e:
            line += ", by slot: " + ", ".join(f"{s} {e['by_slot'].get(s, 0)}" for s in SLOTS)
            line += (f"; letters confused: {sum(e['letter_confusions'].values())}, of which look-alike names: "
                     f"{e['letter_confusions_look_alike']} ({', '.join(e['letter_confusions'])})")
        else:
            line += (f": {e['at_joins']} at joins, {e['inside_sentences']} inside sentences; "
                     f"{e['right_in_the_clip_alone']} of them right in the clip alone ({', '.join(e['examples'])})")
        print(line)


if __name__ == "__main__":
    main()
