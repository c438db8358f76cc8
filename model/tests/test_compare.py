"""Unit tests of `compare`'s paired bootstrap (numpy only)."""

import unittest

import numpy as np

from mouthmap_model.compare import bootstrap, compare, gaps

REFS = {f"c{i}": "bin blue at f two now" for i in range(40)}


def report(wrong: set[int]) -> dict:
    """A report whose clip i reads one word wrong when i is in `wrong`."""
    clips = [{"clip": c, "final": ("pin" if i in wrong else "bin") + " blue at f two now"} for i, c in enumerate(REFS)]
    return {"serving": {"open": {"clips": clips}}}


class PairedBootstrap(unittest.TestCase):
    def test_the_same_texts_differ_by_nothing(self):
        a = report({1, 5, 9})
        (row,) = compare([a, a], REFS, samples=500, seed=1)
        self.assertEqual(row["section"], "clips open")
        self.assertAlmostEqual(row["wer"][0], 3 / 240)
        self.assertEqual(row["difference_interval"], (0.0, 0.0))
        self.assertEqual(row["second_better"], 0.0)

    def test_a_model_better_on_many_clips_is_shown(self):
        (row,) = compare([report(set(range(20))), report({0})], REFS, samples=2000, seed=1)
        lo, hi = row["difference_interval"]
        self.assertLess(hi, 0)
        self.assertGreater(row["second_better"], 0.99)
        self.assertEqual(row["word_errors"], [20, 1])

    def test_one_word_is_not_shown(self):
        (row,) = compare([report({3}), report(set())], REFS, samples=2000, seed=1)
        lo, hi = row["difference_interval"]
        self.assertLessEqual(lo, 0)
        self.assertGreaterEqual(hi, 0)

    def test_interval_holds_the_wer_of_all_the_clips(self):
        (row,) = compare([report(set(range(0, 40, 3)))], REFS, samples=2000, seed=2)
        lo, hi = row["interval"][0]
        self.assertLess(lo, row["wer"][0])
        self.assertGreater(hi, row["wer"][0])

    def test_resamples_weight_items_by_their_words(self):
        errors = np.array([[1.0, 0.0]])
        words = np.array([1.0, 9.0])
        w = bootstrap(errors, words, samples=400, rng=np.random.default_rng(0))
        # Only three resamples exist: both items (1/10), the first twice (1), the second twice (0).
        self.assertEqual(set(np.round(w[0], 6)), {0.1, 1.0, 0.0})


class StreamsGap(unittest.TestCase):
    def test_the_gap_is_the_streams_errors_over_their_clips_alone(self):
        r = report({0})
        names = list(REFS)
        r["streaming"] = {"streams": [
            {"clips": names[i:i + 2], "reference": " ".join(REFS[c] for c in names[i:i + 2]),
             # Every stream reads its second clip's last word wrong.
             "final": " ".join(REFS[c] for c in names[i:i + 2])[: -len("now")] + "how"}
            for i in range(0, 40, 2)]}
        (g,) = gaps(r, REFS, samples=1000, seed=3)
        self.assertEqual(g["section"], "streams - clips open")
        self.assertEqual(g["items"], 20)
        self.assertAlmostEqual(g["clips"], 1 / 240)
        self.assertAlmostEqual(g["streams"], 20 / 240)
        lo, hi = g["gap_interval"]
        self.assertAlmostEqual(g["gap"], 19 / 240)
        self.assertLessEqual(lo, 19 / 240)
        self.assertGreater(lo, 0)


if __name__ == "__main__":
    unittest.main()
