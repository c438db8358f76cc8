"""Unit tests of `evaluate`'s CTC prefix beam search (numpy and ONNX Runtime installed)."""

import unittest

import numpy as np

from mouthmap_model.evaluate import beam_decode
from mouthmap_model.metrics import greedy_decode

VOCAB = [" ", "a", "b"]
BLANK = 3


class BeamSearch(unittest.TestCase):
    def test_it_finds_the_labelling_greedy_misses(self):
        # Two frames, each 0.4 "a", 0.6 blank: the best path is blank-blank
        # (0.36), but "a" has three paths (aa, a_, _a: 0.64).
        probs = np.array([[0.0, 0.4, 0.0, 0.6]] * 2, dtype=np.float32)
        self.assertEqual(greedy_decode(probs, VOCAB, BLANK), "")
        self.assertEqual(beam_decode(probs, VOCAB, BLANK), "a")

    def test_a_peaked_sequence_reads_as_greedy(self):
        best = [1, 1, 3, 1, 0, 2, 2, 3]
        probs = np.full((len(best), 4), 0.01, dtype=np.float32)
        probs[np.arange(len(best)), best] = 0.97
        self.assertEqual(beam_decode(probs, VOCAB, BLANK), greedy_decode(probs, VOCAB, BLANK))
        self.assertEqual(beam_decode(probs, VOCAB, BLANK), "aa b")


if __name__ == "__main__":
    unittest.main()
