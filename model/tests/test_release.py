"""Unit tests of `release`'s comparisons (numpy only; nothing is exported)."""

import json
import os
import tempfile
import unittest
from pathlib import Path

from mouthmap_model import release as R

MODEL = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MOUTHMAP_SHARED", MODEL.parent.parent / "shared"))


def grid_sentences() -> dict[str, str]:
    """Each speaker-1 clip's sentence from the corpus manifest (the texts the
    crops' manifest.json carries)."""
    tsv = SHARED / "data/grid/manifest.tsv"
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    return {Path(r[0]).stem: r[5] for r in rows if r[0].startswith("s1/")}


class PreviousVersion(unittest.TestCase):
    KEYS = {f"{R.NAME}/2/model.onnx": {}, f"{R.NAME}/4/model.onnx": {}, f"{R.NAME}-int8/4/model.onnx": {},
            f"{R.NAME}/3/model.onnx": {}, "runs/cand/model.onnx": {}}

    def test_the_newest_fp32_version_below_is_the_one_replaced(self):
        self.assertEqual(R.previous_entry(self.KEYS, "5"), f"{R.NAME}/4/model.onnx")
        self.assertEqual(R.previous_entry(self.KEYS, "4"), f"{R.NAME}/3/model.onnx")
        self.assertIsNone(R.previous_entry(self.KEYS, "2"))

    def test_a_missing_entry_or_report_stops_before_anything_is_written(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "eval-report.json"
            with self.assertRaisesRegex(SystemExit, "no committed report"):
                R.against_entry(path, "previous", "5")
            path.write_text(json.dumps(self.KEYS))
            with self.assertRaisesRegex(SystemExit, "no earlier version"):
                R.against_entry(path, "previous", "1")
            with self.assertRaisesRegex(SystemExit, "no entry 'x/9/model.onnx'"):
                R.against_entry(path, "x/9/model.onnx", "5")
            self.assertIsNone(R.against_entry(path, "none", "5"))
            label, _ = R.against_entry(path, "previous", "5")
            self.assertEqual(label, f"eval-report.json#{R.NAME}/4/model.onnx")


class CommittedVersions(unittest.TestCase):
    """Version 4 released as if now, from the committed report: the
    comparisons the model card quotes."""

    def test_version_4_against_3_and_its_int8(self):
        committed = json.loads((MODEL / "eval-report.json").read_text())
        against = (f"#{R.NAME}/3/model.onnx", committed[f"{R.NAME}/3/model.onnx"])
        result = R.comparisons(committed, f"{R.NAME}/4/model.onnx", f"{R.NAME}-int8/4/model.onnx", against,
                               grid_sentences(), samples=2000, seed=0)
        replaces, int8 = result
        rows = {r["section"]: r for r in replaces["rows"]}
        # 300 words: version 4 reads 9 fewer wrong on clips (open), which the draw of clips does not explain.
        self.assertEqual(rows["clips open"]["word_errors"], [40, 31])
        self.assertLess(rows["clips open"]["difference_interval"][1], 0)
        self.assertIn("shown better: clips open", replaces["verdict"])
        self.assertIn("streams grid", replaces["verdict"].split("no difference shown:")[1])
        # The INT8 target: no figure's upper bound above +1 point.
        self.assertTrue(all(r["difference_interval"][1] <= 0.01 + 1e-9 for r in int8["rows"]), int8["verdict"])
        self.assertIn("every upper bound at most +1.0 points", int8["verdict"])
        self.assertEqual(len(int8["gaps"][1]), 3)


if __name__ == "__main__":
    unittest.main()
