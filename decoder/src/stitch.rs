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
//! 1. [`repair_first_label`]: a first-frame letter followed by blanks is
//!    moved to just before the window's next label (where the word starts).
//! 2. [`choose_cut`]: the cut is a word boundary (a space spike in either
//!    window) at which both windows have just finished the *same* word, the
//!    one nearest the midpoint between the two windows' centres. Cutting
//!    there keeps every label of the word on one side.
//! 3. With no such boundary, the cut falls where `b`'s first word starts
//!    (after the repair), and a space is put into `a`'s last pause before it
//!    when `a`'s part does not end with one; failing that, the midpoint.
//!
//! Measured on the 50 validation clips joined five at a time (the `model/`
//! evaluation's streams through `mouthmap transcribe`): word error 36.7%
//! open and 45.7% under the GRID grammar with nearest-centre stitching,
//! 16.3% and 14.7% with these cuts.

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

    fn swap_rows(&mut self, i: usize, j: usize) {
        for c in 0..self.classes {
            self.rows.swap(i * self.classes + c, j * self.classes + c);
        }
    }
}

/// Moves a letter spiked at the window's first frame, followed by blanks,
/// to the frame before the window's next label; returns that frame (where
/// the window's first word starts). Only for windows that do not open the
/// stream: a stream's first frame is where its first word may really be.
pub fn repair_first_label(w: &mut WindowRows, classes: Classes) -> Option<u64> {
    let best = w.argmax();
    let first = *best.first()?;
    if first == classes.blank || Some(first) == classes.space {
        return None;
    }
    let next = best.iter().skip(1).position(|&c| c != classes.blank)? + 1;
    if next < 2 {
        return None;
    }
    w.swap_rows(0, next - 1);
    Some(w.first + next as u64 - 1)
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
