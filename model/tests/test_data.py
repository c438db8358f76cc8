"""Unit tests of the data helpers that need no video tools (numpy only)."""

import json
import tempfile
import unittest
from pathlib import Path

from mouthmap_model import data as D

MODEL = Path(__file__).resolve().parent.parent


class Split(unittest.TestCase):
    def test_the_committed_split_is_the_one_the_names_give(self):
        split = json.loads((MODEL / "split.json").read_text())
        names = split["validation"] + split["train"]
        self.assertEqual(len(set(names)), 900)
        self.assertEqual(D.validation_set(names), set(split["validation"]))
        # Order does not matter: the set is the names hashing lowest.
        self.assertEqual(D.validation_set(list(reversed(names))), set(split["validation"]))

    def test_streams_are_the_clips_five_at_a_time_in_order(self):
        clips = [{"clip": str(i)} for i in range(12)]
        groups = D.stream_groups(clips)
        self.assertEqual([len(g) for g in groups], [5, 5, 2])
        self.assertEqual([c["clip"] for g in groups for c in g], [str(i) for i in range(12)])


class Alignment(unittest.TestCase):
    def test_silence_and_short_pauses_are_dropped_and_times_become_frames(self):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "x.align"
            p.write_text("0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 34500 sp\n34500 35000 at\n"
                         "35000 74500 sil\n")
            words = D.read_alignment(p)
        self.assertEqual([(w.word, w.start, w.end) for w in words], [("bin", 23, 29), ("blue", 29, 34), ("at", 34, 35)])

    def test_frame_words_mark_each_aligned_frame_from_the_offset_on(self):
        vocab = {"at": 0, "bin": 1, "blue": 2}
        words = [("bin", 23, 29), ("blue", 29, 34), ("at", 34, 35)]
        # A window from frame 25: bin's last four frames, blue's five, at's one, then nothing.
        got = D.frame_words(14, words, 25, vocab)
        self.assertEqual(got.tolist(), [2] * 4 + [3] * 5 + [1] + [0] * 4)
        # A window past every word, and one before them, are all silence.
        self.assertEqual(D.frame_words(5, words, 40, vocab).tolist(), [0] * 5)
        self.assertEqual(D.frame_words(5, words, 0, vocab).tolist(), [0] * 5)

    def test_labels_drop_what_the_vocabulary_lacks(self):
        self.assertEqual(len(D.encode("bin blue")), 8)
        self.assertEqual(D.encode("a!a"), D.encode("aa"))
        self.assertEqual(D.CLASSES, len(D.VOCAB) + 1)


if __name__ == "__main__":
    unittest.main()
