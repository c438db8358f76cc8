//! Stitching overlapping windows into one posterior stream.
//!
//! A CTC model places its spikes where they fit the window it is given, and
//! a LipNet-family model trained on whole sentences places them with a bias
//! at the window's edges: a window that opens in the pause before a word
//! emits that word's first letter at its very first frame, and the last
//! letters of a word cut by the window's end crowd into its last frames.
//! The window's *text* is right; the *timing* of those edge letters is not.
//! Taking each frame from the window where it sits nearest the centre
//! therefore loses exactly the labels at sentence joins (the space and the
//! next sentence's first letter: "now bin" became "nowin").
//!
//! So each new window `b` takes over from the previous window `a` at a cut
//! chosen on the labels, not on the clock:
//! 1. [`repair_first_label`]: letters at the window's first frames (up to
//!    three) followed by blanks are moved to just before the window's next
//!    label (where the word starts).
//! 2. [`choose_cut`]: the cut is a word boundary (a space spike in either
//!    window) at which both windows have just finished the *same* word, the
//!    one nearest the midpoint between the two windows' centres. Cutting
//!    there keeps every label of the word on one side.
//! 3. With no such boundary, the cut falls where `b`'s first word starts
//!    (after the repair), and a space is put into `a`'s last pause before it
//!    when `a`'s part does not end with one; failing that, the midpoint.
//! 4. [`keep_last_word_whole`]: where `a`'s last word is a longer reading of
//!    the word `b` reads short before a pause ("now" against "no"), `b`
//!    takes over only at `a`'s end. A model reads a phrase's last letters
//!    at the end of what it sees; the window that ends just after the phrase
//!    reads them, a window with the phrase's end inside may not. Unless
//!    `b` reads the word whole later itself (every letter `a` read, in
//!    order): `a`'s last frames may be its crowded edge ("n.w").
//!
//! Measured on the 50 validation clips joined five at a time (the `model/`
//! evaluation's streams through `mouthmap transcribe`): word error 36.7%
//! open and 45.7% under the GRID grammar with nearest-centre stitching,
//! 16.3% and 14.7% with the cuts of 1-3. With 4 and the longer first-frame
//! repair (2026-12-03, `evaluate --streaming-only`): the reference model
//! 17.0% -> 16.7% open, 10.7% -> 10.0-10.3% GRID (two runs); the v2-long run's model (not
//! served), whose windows drop a sentence's last letters unless they end
//! there, 29.7% -> 21.3% open and 28.7% -> 20.3% GRID. With 4's whole-word
//! check (2026-12-04): version 4 14.0% -> 13.7% open (one word: "nwow"),
//! lexicon and GRID unchanged, version 3 unchanged. Every window's labels
//! and cut are in the trace (`--log mouthmap_decoder=trace`); the
//! `replay` example with `python -m mouthmap_model.replay` replays the
//! validation streams' windows through this code in seconds.
//!
//! Tried on those windows and not kept (2026-12-04): averaging the
//! overlapping windows' posteriors, weighted by distance from the window's
//! edge (linear or log): 33-37% open against 13.7%; choosing each word
//! among the readings of the windows that cover it by their summed CTC
//! likelihood: 19.7-26.7%, as each window places a word's letters
//! differently (a sentence's first letters early, its last ones late); a
//! wider crowded edge (4 or 6 frames instead of 2): up to 0.7 points worse
//! open and 4.7 under the grammar.

/// Class roles in the model's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classes {
    pub count: usize,
    pub blank: usize,
    /// The word separator (the vocabulary's `" "`), if the model has one.
    pub space: Option<usize>,
}

/// One window's posteriors: frames `first..first + len`, row-major.
#[derive(Debug, Clone)]
pub struct WindowRows {
    pub first: u64,
    pub rows: Vec<f32>,
    pub classes: usize,
}

impl WindowRows {
    pub fn len(&self) -> usize {
        self.rows.len() / self.classes.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the last frame.
    pub fn end(&self) -> u64 {
        self.first + self.len() as u64
    }

    /// The row of stream frame `frame` (inside the window).
    pub fn row(&self, frame: u64) -> &[f32] {
        let j = (frame - self.first) as usize;
        &self.rows[j * self.classes..(j + 1) * self.classes]
    }

    fn centre(&self) -> f64 {
        self.first as f64 + self.len() as f64 / 2.0
    }

    fn argmax(&self) -> Vec<usize> {
        self.rows
            .chunks_exact(self.classes)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |best, (c, &p)| {
                            if p > best.1 { (c, p) } else { best }
                        },
                    )
                    .0
            })
            .collect()
    }

    fn row_mut(&mut self, frame: u64) -> &mut [f32] {
        let j = (frame - self.first) as usize;
        &mut self.rows[j * self.classes..(j + 1) * self.classes]
    }

    /// The best label of each frame as one character (`.` blank, `_`
    /// space, a label's first character otherwise): what a trace shows.
    pub fn best_path(&self, vocabulary: &[String], blank: usize) -> String {
        self.argmax()
            .into_iter()
            .map(|l| match vocabulary.get(l).map(String::as_str) {
                _ if l == blank => '.',
                Some(" ") => '_',
                Some(v) => v.chars().next().unwrap_or('?'),
                None => '?',
            })
            .collect()
    }

    fn swap_rows(&mut self, i: usize, j: usize) {
        for c in 0..self.classes {
            self.rows.swap(i * self.classes + c, j * self.classes + c);
        }
    }
}

/// Letters a window may spike at its first frames for a word that starts
/// later ("pl.......ace"): the reference model puts one there, the v2-long
/// run two.
const MAX_FIRST_LETTERS: usize = 3;

/// Moves the letters spiked at the window's first frames (at most
/// [`MAX_FIRST_LETTERS`]), followed by blanks, to the frames before the
/// window's next label; returns the first of them (where the window's first
/// word starts). Only for windows that do not open the
/// stream: a stream's first frame is where its first word may really be.
pub fn repair_first_label(w: &mut WindowRows, classes: Classes) -> Option<u64> {
    let best = w.argmax();
    let is_letter = |l: usize| l != classes.blank && Some(l) != classes.space;
    // The letters at the window's first frames (at most MAX_FIRST_LETTERS).
    let lead = best
        .iter()
        .take(MAX_FIRST_LETTERS + 1)
        .take_while(|&&l| is_letter(l))
        .count();
    if lead == 0 || lead > MAX_FIRST_LETTERS {
        return None;
    }
    let next = best.iter().skip(lead).position(|&c| c != classes.blank)? + lead;
    // Blanks between them, and room to move the letters without overlap.
    if next < 2 * lead {
        return None;
    }
    for i in 0..lead {
        w.swap_rows(i, next - lead + i);
    }
    Some(w.first + (next - lead) as u64)
}

/// Where `b` takes over from `a`, and a frame to make a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Frames from here on come from `b`.
    pub frame: u64,
    /// A pause frame of the stitched stream (from `a` before `frame`, from
    /// `b` after) that becomes the space between the two parts.
    pub space_at: Option<u64>,
}

/// Chooses the cut between the previous window `a` and the new window `b`
/// (see the module documentation). `a_from` is where `a`'s part of the
/// stitched stream begins (the previous cut); `floor` is the first frame
/// the cut may change (past the previous cut and the dropped and settled
/// frames); `b_word` is where `b`'s first word starts, from
/// [`repair_first_label`].
pub fn choose_cut(
    a: &WindowRows,
    a_from: u64,
    b: &WindowRows,
    b_word: Option<u64>,
    floor: u64,
    classes: Classes,
) -> Cut {
    let lo = floor.max(b.first + 1);
    // The last two frames of `a` hold its crowded edge letters.
    let hi = a.end().saturating_sub(2).min(b.end());
    let target = (a.centre() + b.centre()) / 2.0;
    let nearest = |lo: u64, hi: u64| (target.round() as u64).clamp(lo, hi.max(lo));
    let Some(space) = classes.space else {
        return Cut {
            frame: nearest(lo, hi),
            space_at: None,
        };
    };
    if lo >= hi {
        return Cut {
            frame: lo.min(b.end()),
            space_at: None,
        };
    }
    let (best_a, best_b) = (a.argmax(), b.argmax());
    let label_a = |f: u64| best_a[(f - a.first) as usize];
    let label_b = |f: u64| best_b[(f - b.first) as usize];
    let a_from = a_from.max(a.first);
    let blank = classes.blank;
    // A cut at `c` after a word both windows finished: the frame to make a
    // space when neither part brings one (None: no space needed), or no cut.
    let at_word_end = |c: u64| -> Option<Option<u64>> {
        let before_a = collapse((a_from..c).map(label_a), blank);
        let wa = last_word(&before_a, space);
        if wa.is_empty() || wa != last_word(&collapse((b.first..c).map(label_b), blank), space) {
            return None;
        }
        let b_opens_with_space = (c..b.end()).map(label_b).find(|&l| l != blank) == Some(space);
        if before_a.last() == Some(&space) || b_opens_with_space {
            Some(None)
        } else if label_b(c) == blank {
            Some(Some(c))
        } else if c > floor && label_a(c - 1) == blank {
            Some(Some(c - 1))
        } else {
            None
        }
    };
    let space_starts = |label: &dyn Fn(u64) -> usize, first: u64, f: u64| {
        label(f) == space && (f == first || label(f - 1) != space)
    };
    let best = (lo..hi)
        .filter(|&f| space_starts(&label_a, a.first, f) || space_starts(&label_b, b.first, f))
        .filter_map(|c| at_word_end(c).map(|space_at| Cut { frame: c, space_at }))
        .min_by(|x, y| {
            (x.frame as f64 - target)
                .abs()
                .total_cmp(&(y.frame as f64 - target).abs())
        });
    if let Some(cut) = best {
        return cut;
    }
    if let Some(start) = b_word.filter(|s| (lo..=hi).contains(s)) {
        // `b`'s part opens a word: a space before it unless `a`'s part
        // already ends with one.
        let before_a = collapse((a_from..start).map(label_a), blank);
        let space_at = match before_a.last() {
            Some(&last) if last != space => (floor.max(a_from)..start)
                .rev()
                .find(|&f| label_a(f) == blank && (f == a_from || label_a(f - 1) != space)),
            _ => None,
        };
        return Cut {
            frame: start,
            space_at,
        };
    }
    Cut {
        frame: nearest(lo, hi),
        space_at: None,
    }
}

/// Frames after the earlier window's end in which the later one must say
/// nothing new for the earlier one's last word to be taken whole.
const PAUSE_AFTER: u64 = 5;

/// Keeps the last word of the previous window `a` whole when `b` read the
/// same words up to `a`'s end but the last one shorter: `a`'s reading
/// extends `b`'s ("now" against "no", "soon" against "soo") and `b` says
/// nothing new for [`PAUSE_AFTER`] frames past `a`'s end (a pause after
/// the word, not a word that runs on). Then `b` takes over only at `a`'s
/// end; the rest of `b`'s reading of that word (a run of letters into the
/// pause) is blanked in `b`, and a space starts `b`'s part unless `b`
/// brings one. Otherwise `cut` stands.
///
/// Why: a model reads a phrase's last letters at the end of what it sees.
/// Measured on the 10 joined validation streams (the trace of every
/// window, `mouthmap transcribe --log mouthmap_decoder=trace`): the window
/// that ends where a sentence ends read the sentence's last word whole 50
/// times in 50 for both the reference model and the v2-long run, windows
/// with the sentence's end inside 41 and 1 times in 80; the cut, chosen
/// between the windows' centres, took that word from the later window.
pub fn keep_last_word_whole(
    a: &WindowRows,
    b: &mut WindowRows,
    cut: Cut,
    floor: u64,
    classes: Classes,
) -> Cut {
    let Some(space) = classes.space else {
        return cut;
    };
    let end = a.end();
    if cut.frame >= end || end < floor.max(b.first + 1) || end + PAUSE_AFTER > b.end() {
        return cut;
    }
    let (best_a, best_b) = (a.argmax(), b.argmax());
    let label_a = |f: u64| best_a[(f - a.first) as usize];
    let b_first = b.first;
    let label_b = |f: u64| best_b[(f - b_first) as usize];
    let blank = classes.blank;
    let words = |seq: Vec<usize>| -> Vec<Vec<usize>> {
        seq.split(|&l| l == space)
            .filter(|w| !w.is_empty())
            .map(<[usize]>::to_vec)
            .collect()
    };
    // `a` must itself end a word at the cut: otherwise the cut's word
    // boundary is `b`'s, which taking `a`'s frames would lose ("k eight").
    let c = cut.frame;
    if label_a(c) != space && (c == a.first || label_a(c - 1) != space) {
        return cut;
    }
    let words_a = words(collapse((c..end).map(label_a), blank));
    let words_b = words(collapse((c..end).map(label_b), blank));
    let (Some((last_a, before_a)), Some((last_b, before_b))) =
        (words_a.split_last(), words_b.split_last())
    else {
        return cut;
    };
    if before_a != before_b || last_a.len() <= last_b.len() || !last_a.starts_with(last_b) {
        return cut;
    }
    // Nor does `b` read the word whole later: the model may hold a word's
    // last letters until well into the pause ("n.......ow"). Whole: every
    // letter `a` read, in order (`a`'s last frames may be its crowded edge:
    // "n.w" against `b`'s "n....ow" gave "nwow").
    let word_end = (end..b.end())
        .find(|&f| label_b(f) == space)
        .unwrap_or(b.end());
    let words_b_on = words(collapse((c..word_end).map(label_b), blank));
    if words_b_on
        .get(before_b.len())
        .is_some_and(|w| is_subsequence(last_a, w))
    {
        return cut;
    }
    // `b` must start nothing in the pause: only blanks, spaces, or the run
    // of letters it was in at `a`'s end.
    let starts_run = |f: u64| {
        let l = label_b(f);
        l != blank && l != space && l != label_b(f - 1)
    };
    if (end..end + PAUSE_AFTER).any(starts_run) {
        return cut;
    }
    let b_opens_with_space = (end..b.end()).map(label_b).find(|&l| l != blank) == Some(space);
    // The run `b` was in at `a`'s end becomes blank (each row's letter and
    // blank swapped: the row stays a distribution).
    for f in (end..b.end()).take_while(|&f| label_b(f) != blank && label_b(f) != space) {
        b.row_mut(f).swap(label_b(f), blank);
    }
    Cut {
        frame: end,
        space_at: (!b_opens_with_space).then_some(end),
    }
}

/// Turns `row` into a space spike: the space takes the blank's probability
/// and the blank the space's (the row stays a distribution).
pub fn make_space(row: &mut [f32], classes: Classes) {
    if let Some(space) = classes.space {
        row.swap(space, classes.blank);
    }
}

/// CTC collapse: repeats merged, blanks removed.
fn collapse(labels: impl Iterator<Item = usize>, blank: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev = None;
    for l in labels {
        if Some(l) != prev && l != blank {
            out.push(l);
        }
        prev = Some(l);
    }
    out
}

/// Whether `part`'s labels all occur in `whole`, in order.
fn is_subsequence(part: &[usize], whole: &[usize]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|l| rest.any(|w| w == l))
}

/// The last word of a collapsed label sequence (the labels after the last
/// space, trailing spaces skipped).
fn last_word(seq: &[usize], space: usize) -> Vec<usize> {
    let mut word: Vec<usize> = seq
        .iter()
        .rev()
        .skip_while(|&&l| l == space)
        .take_while(|&&l| l != space)
        .copied()
        .collect();
    word.reverse();
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSES: Classes = Classes {
        count: 28,
        blank: 27,
        space: Some(26),
    };

    /// A window whose best label at each frame is given by `spell`:
    /// letters, `_` for a space, `.` for blank.
    fn window(first: u64, spell: &str) -> WindowRows {
        let rows = spell
            .chars()
            .flat_map(|ch| {
                let l = match ch {
                    '.' => 27,
                    '_' => 26,
                    c => c as usize - 'a' as usize,
                };
                (0..28).map(move |c| if c == l { 0.9 } else { 0.1 / 27.0 })
            })
            .collect();
        WindowRows {
            first,
            rows,
            classes: 28,
        }
    }

    fn best(w: &WindowRows) -> String {
        w.argmax()
            .iter()
            .map(|&l| match l {
                27 => '.',
                26 => '_',
                c => (b'a' + c as u8) as char,
            })
            .collect()
    }

    #[test]
    fn a_first_frame_letter_moves_to_its_word() {
        let mut w = window(50, "b.....in_g");
        assert_eq!(repair_first_label(&mut w, CLASSES), Some(55));
        assert_eq!(best(&w), ".....bin_g");
        // Nothing to move: a blank or a space first, or a letter right
        // before the next label.
        for spell in ["..bin", "_.bin", "bi.n"] {
            let mut w = window(50, spell);
            assert_eq!(repair_first_label(&mut w, CLASSES), None, "{spell}");
            assert_eq!(best(&w), spell);
        }
    }

    #[test]
    fn first_frame_letters_move_to_their_word() {
        let mut w = window(50, "pl.....ace_g");
        assert_eq!(repair_first_label(&mut w, CLASSES), Some(55));
        assert_eq!(best(&w), ".....place_g");
        // More letters than a first-frame spike: the end of a word the
        // window opened in, left where it is.
        let mut w = window(50, "plea.....bin");
        assert_eq!(repair_first_label(&mut w, CLASSES), None);
    }

    /// `a` ends where the sentence ends and reads "now" whole, its last
    /// letters at its end; `b` reads the word short and then pauses.
    fn a_reads_the_last_word_whole() -> (WindowRows, Cut) {
        //               frame 0    5    10   15   20
        let a = window(0, "eight_nn.........ow");
        (
            a,
            Cut {
                frame: 5,
                space_at: None,
            },
        )
    }

    #[test]
    fn a_whole_last_word_is_kept_over_bs_shorter_reading() {
        let (a, cut) = a_reads_the_last_word_whole();
        // `b` from frame 3: "no", a pause from `a`'s end (19), then "bin".
        let mut b = window(3, "ht_nn..o...................bin");
        let kept = keep_last_word_whole(&a, &mut b, cut, 1, CLASSES);
        assert_eq!(
            kept,
            Cut {
                frame: 19,
                space_at: Some(19)
            }
        );
        // The rest of `b`'s reading of the word, if it ran past `a`'s end,
        // is blanked: `b` from 19 on adds nothing to "now".
        let spell = format!("ht_nn{}oo{}bin", ".".repeat(10), ".".repeat(12));
        let mut b = window(3, &spell);
        let kept = keep_last_word_whole(&a, &mut b, cut, 1, CLASSES);
        assert_eq!(kept.frame, 19);
        // Frame 19 (index 16) was the run's second `o`.
        assert_eq!(&best(&b)[15..], format!("o{}bin", ".".repeat(13)));
    }

    #[test]
    fn bs_reading_stands_when_it_is_whole_or_the_word_runs_on() {
        let (a, cut) = a_reads_the_last_word_whole();
        for spell in [
            // `b` reads "now" whole, later ("n.....ow"), as `a` does.
            "ht_nn....................ow__bin",
            // `b` reads the same.
            "ht_nn.........ow____________bin",
            // `b` starts a letter right after `a`'s end: the word runs on.
            "ht_nn..o..........s.........bin",
            // `b` reads a different word.
            "ht_mm..o....................bin",
        ] {
            let mut b = window(3, spell);
            assert_eq!(
                keep_last_word_whole(&a, &mut b, cut, 1, CLASSES),
                cut,
                "{spell}"
            );
            assert_eq!(best(&b), spell);
        }
        // `a` does not end a word at the cut (the boundary is `b`'s).
        let a = window(0, "eightxnn.........ow");
        let mut b = window(3, "ht_nn..o...................bin");
        assert_eq!(keep_last_word_whole(&a, &mut b, cut, 1, CLASSES), cut);
    }

    #[test]
    fn bs_reading_stands_when_it_reads_the_word_on_after_as_end() {
        // `a` crowds the word's end into its last frames ("n.w"); `b` holds
        // the word's last letters into the pause and reads "now" itself.
        let a = window(0, "eight_.........n.w");
        let cut = Cut {
            frame: 5,
            space_at: None,
        };
        let spell = format!("ht_nn{}ow_bin", ".".repeat(22));
        let mut b = window(3, &spell);
        assert_eq!(keep_last_word_whole(&a, &mut b, cut, 1, CLASSES), cut);
        assert_eq!(best(&b), spell);
    }

    #[test]
    fn the_cut_keeps_a_word_both_windows_finished_on_one_side() {
        // The join "now bin green": `a` saw it whole; `b` opened in the
        // pause and put the `b` of "bin" at its first frame (moved here to
        // frame 11, one frame off `a`'s timing, as windows are).
        let a = window(0, "..now...._bin_green");
        let mut b = window(4, "b.......in_green_at");
        let word = repair_first_label(&mut b, CLASSES);
        assert_eq!(word, Some(11));
        // Frame 13 is `a`'s space but `b` has not finished "bin" there;
        // at 14 both have: `a` gives "now bin ", `b` "green at".
        assert_eq!(
            choose_cut(&a, 0, &b, word, 1, CLASSES),
            Cut {
                frame: 14,
                space_at: None
            }
        );
    }

    #[test]
    fn a_shared_word_without_a_space_gets_one() {
        // At `a`'s space (frame 5) both have finished "bin", but `b` put no
        // space there: `b`'s blank at the cut becomes one.
        let a = window(0, "..bin_.green");
        let b = window(1, ".bin..green");
        assert_eq!(
            choose_cut(&a, 0, &b, None, 1, CLASSES),
            Cut {
                frame: 5,
                space_at: Some(5)
            }
        );
    }

    #[test]
    fn without_a_shared_word_the_cut_opens_bs_first_word_after_a_space() {
        // `a` ends in the pause after "now" and knows nothing of "lay".
        let a = window(0, "..now........");
        let mut b = window(4, "l.......ay_blue");
        let word = repair_first_label(&mut b, CLASSES);
        assert_eq!(word, Some(11));
        assert_eq!(
            choose_cut(&a, 0, &b, word, 1, CLASSES),
            Cut {
                frame: 11,
                space_at: Some(10)
            }
        );
        // `a`'s part already ends with a space: none is added.
        let a = window(0, "..now_.......");
        assert_eq!(choose_cut(&a, 0, &b, word, 1, CLASSES).space_at, None);
    }

    #[test]
    fn without_a_space_class_the_cut_is_the_midpoint() {
        let no_space = Classes {
            space: None,
            ..CLASSES
        };
        let a = window(0, "..........");
        let b = window(4, "..........");
        assert_eq!(choose_cut(&a, 0, &b, None, 1, no_space).frame, 7);
    }
}
