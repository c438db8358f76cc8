"""Unit tests of `errors`: where a word error sits (numpy only)."""

import unittest

from mouthmap_model.errors import clip_errors, look_alike, stream_errors

REFS = {"a": "bin blue at f two now", "b": "lay red in b five please"}


class ClipErrors(unittest.TestCase):
    def test_errors_are_counted_by_grid_slot(self):
        clips = [{"clip": "a", "final": "bin blue in s two now"}, {"clip": "b", "final": "lay red in p five"}]
        e = clip_errors(clips, REFS)
        self.assertEqual(e["words"], 12)
        self.assertEqual(e["errors"], 4)
        self.assertEqual(e["by_slot"], {"preposition": 1, "letter": 2, "adverb": 1})
        self.assertEqual(e["letter_confusions"], {"f->s": 1, "b->p": 1})
        self.assertEqual(e["letter_confusions_look_alike"], 1)

    def test_look_alike_names_go_both_ways(self):
        self.assertTrue(look_alike("b", "p") and look_alike("p", "b"))
        self.assertTrue(look_alike("u", "q"))
        self.assertFalse(look_alike("h", "x"))


class StreamErrors(unittest.TestCase):
    def test_a_join_error_the_clip_alone_got_right_is_the_streams_own(self):
        stream = {"clips": ["a", "b"], "reference": f"{REFS['a']} {REFS['b']}",
                  "final": "bin blue at f two nowlay red in d five please"}
        alone = {"a": REFS["a"], "b": "lay red in d five please"}
        e = stream_errors([stream], alone, REFS, "final")
        self.assertEqual(e["words"], 12)
        # "now lay" read as one word: an error at the join, and a deletion
        # beside it; the letter b read d inside the sentence, as alone.
        self.assertEqual(e["errors"], 3)
        self.assertEqual(e["at_joins"], 2)
        self.assertEqual(e["inside_sentences"], 1)
        self.assertEqual(e["right_in_the_clip_alone"], 2)


if __name__ == "__main__":
    unittest.main()
