"""Unit tests of the decoding and error-rate helpers (numpy only).

    python -m unittest discover -s model/tests -t model
"""

import functools
import random
import unittest

import numpy as np

from mouthmap_model.metrics import align, cer, edit_distance, greedy_decode, wer


@functools.lru_cache(maxsize=None)
def levenshtein(a: tuple, b: tuple) -> int:
    if not a or not b:
        return len(a) + len(b)
    return min(levenshtein(a[1:], b) + 1, levenshtein(a, b[1:]) + 1, levenshtein(a[1:], b[1:]) + (a[0] != b[0]))


class GreedyDecode(unittest.TestCase):
    VOCAB = [" ", "a", "b", "_"]  # blank last, as the exported models put it

    def decode(self, best: list[int]) -> str:
        probs = np.eye(len(self.VOCAB), dtype=np.float32)[best]
        return greedy_decode(probs, self.VOCAB, blank=3)

    def test_repeats_merge_and_blanks_split_them(self):
        self.assertEqual(self.decode([1, 1, 3, 1, 2, 2]), "aab")

    def test_spaces_collapse_and_trim(self):
        self.assertEqual(self.decode([0, 1, 0, 3, 0, 2, 0]), "a b")

    def test_all_blank_is_empty(self):
        self.assertEqual(self.decode([3, 3, 3]), "")


class EditDistance(unittest.TestCase):
    def test_known_distances(self):
        self.assertEqual(edit_distance(list("kitten"), list("sitting")), 3)
        self.assertEqual(edit_distance([], list("abc")), 3)
        self.assertEqual(edit_distance(list("abc"), []), 3)
        self.assertEqual(edit_distance("bin blue at f two now".split(), "bin blue at f two now".split()), 0)

    def test_align_is_a_script_from_ref_to_hyp(self):
        rng = random.Random(7)
        for _ in range(300):
            ref = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
            hyp = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
            ops = align(ref, hyp)
            # Applying the script right to left (indices stay valid) gives hyp.
            out = list(ref)
            for kind, r, h, i in reversed(ops):
                if kind == "S":
                    self.assertEqual(out[i], r)
                    out[i] = h
                elif kind == "D":
                    self.assertEqual(out[i], r)
                    del out[i]
                else:
                    out.insert(i, h)
            self.assertEqual(out, hyp, (ref, hyp, ops))
            # And a shortest one: as long as the distance by plain recursion.
            self.assertEqual(len(ops), levenshtein(tuple(ref), tuple(hyp)))

    def test_rates_count_over_reference_words(self):
        self.assertAlmostEqual(wer(["bin blue at f two now"], ["bin blue at f two now"]), 0.0)
        self.assertAlmostEqual(wer(["bin blue f two"], ["bin blue at f two now"]), 2 / 6)
        self.assertAlmostEqual(cer(["ab"], ["abcd"]), 0.5)


if __name__ == "__main__":
    unittest.main()
