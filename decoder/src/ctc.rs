//! CTC decoding: greedy, and prefix beam search, with the frame where each
//! character was emitted (for word timings).

use std::collections::HashMap;

/// A decoded sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Class indexes of the characters, in order.
    pub labels: Vec<usize>,
    /// Frame (0-based, within the decoded span) of each character.
    pub frames: Vec<usize>,
    /// Per-frame geometric mean probability of the chosen path, 0..1.
    pub confidence: f32,
}

/// Posteriors of `t` frames by `classes`, row-major probabilities.
#[derive(Debug, Clone, Copy)]
pub struct Posteriors<'a> {
    pub probs: &'a [f32],
    pub classes: usize,
    pub blank: usize,
}

impl Posteriors<'_> {
    pub fn frames(&self) -> usize {
        self.probs.len() / self.classes
    }

    fn row(&self, t: usize) -> &[f32] {
        &self.probs[t * self.classes..(t + 1) * self.classes]
    }
}

/// Best class per frame; repeats merged, blanks dropped.
pub fn greedy(p: Posteriors<'_>) -> Decoded {
    let mut labels = Vec::new();
    let mut frames = Vec::new();
    let mut log_p = 0.0f64;
    let mut prev = usize::MAX;
    for t in 0..p.frames() {
        let row = p.row(t);
        let (k, &best) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one class");
        log_p += (best.max(1e-12) as f64).ln();
        if k != prev && k != p.blank {
            labels.push(k);
            frames.push(t);
        }
        prev = k;
    }
    let n = p.frames().max(1) as f64;
    Decoded {
        labels,
        frames,
        confidence: (log_p / n).exp() as f32,
    }
}

fn log_add(a: f32, b: f32) -> f32 {
    if a == f32::NEG_INFINITY {
        return b;
    }
    if b == f32::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

#[derive(Clone)]
struct Beam {
    /// log P(prefix, ending in blank), log P(prefix, ending in its last label).
    blank: f32,
    label: f32,
    /// Character frames of the most probable path into this prefix.
    frames: Vec<usize>,
    best_path: f32,
}

impl Beam {
    fn total(&self) -> f32 {
        log_add(self.blank, self.label)
    }
}

/// Restricts which label may extend a prefix (a lexicon or grammar).
pub trait Constraint {
    /// May `prefix` be extended with `label`?
    fn allows(&self, prefix: &[usize], label: usize) -> bool;
    /// May decoding end with `prefix`?
    fn complete(&self, _prefix: &[usize]) -> bool {
        true
    }
    /// Every label that may extend `prefix`, at once (None: ask [`allows`]
    /// label by label). A constraint that answers is searched without
    /// pruning by probability: a grammar must be able to reach an unlikely
    /// but allowed label (a space the model missed between two sentences),
    /// or its beams would die there and lose the rest of the stream.
    ///
    /// [`allows`]: Constraint::allows
    fn allowed(&self, _prefix: &[usize], _classes: usize) -> Option<Vec<bool>> {
        None
    }
    /// The label that separates words, when the constraint refuses it at
    /// the start (a grammar: no leading space). Before the first word it is
    /// then read as silence, like a blank, instead of forcing the frames
    /// that are mostly space onto their next likeliest label: a decode that
    /// starts in the gap between two words (a stream's re-decoding after
    /// its settled words were committed) would otherwise read a letter the
    /// model hardly gave there (a stray "n" after "seven") as a word.
    fn separator(&self) -> Option<usize> {
        None
    }
}

/// No constraint: any character sequence.
pub struct Open;

impl Constraint for Open {
    fn allows(&self, _: &[usize], _: usize) -> bool {
        true
    }
}

/// CTC prefix beam search keeping `width` prefixes. Classes whose probability
/// is below `prune` at a frame are not tried there, unless the constraint
/// lists its allowed labels (see [`Constraint::allowed`]).
pub fn beam_search(
    p: Posteriors<'_>,
    width: usize,
    prune: f32,
    constraint: &dyn Constraint,
) -> Decoded {
    // Kept sorted (score, then prefix) so ties break the same way every run.
    let mut beams: Vec<(Vec<usize>, Beam)> = vec![(
        Vec::new(),
        Beam {
            blank: 0.0,
            label: f32::NEG_INFINITY,
            frames: Vec::new(),
            best_path: 0.0,
        },
    )];
    for t in 0..p.frames() {
        let row = p.row(t);
        let lp = |k: usize| row[k].max(1e-12).ln();
        let mut next: HashMap<Vec<usize>, Beam> = HashMap::with_capacity(beams.len() * 4);
        let mut add =
            |prefix: Vec<usize>, blank: f32, label: f32, frames: &dyn Fn() -> Vec<usize>| {
                let e = next.entry(prefix).or_insert_with(|| Beam {
                    blank: f32::NEG_INFINITY,
                    label: f32::NEG_INFINITY,
                    frames: Vec::new(),
                    best_path: f32::NEG_INFINITY,
                });
                let path = log_add(blank, label);
                if path > e.best_path {
                    e.best_path = path;
                    e.frames = frames();
                }
                e.blank = log_add(e.blank, blank);
                e.label = log_add(e.label, label);
            };
        // Before the first word, a separator the constraint refuses there
        // is silence too (see [`Constraint::separator`]).
        let silence_first = match constraint.separator() {
            Some(s) if s != p.blank && s < row.len() => log_add(lp(p.blank), lp(s)),
            _ => lp(p.blank),
        };
        for (prefix, b) in &beams {
            let total = b.total();
            // Stay: a blank, or the last label repeated.
            let silence = if prefix.is_empty() {
                silence_first
            } else {
                lp(p.blank)
            };
            add(prefix.clone(), total + silence, f32::NEG_INFINITY, &|| {
                b.frames.clone()
            });
            if let Some(&last) = prefix.last() {
                add(
                    prefix.clone(),
                    f32::NEG_INFINITY,
                    b.label + lp(last),
                    &|| b.frames.clone(),
                );
            }
            let allowed = constraint.allowed(prefix, row.len());
            for (k, &pk) in row.iter().enumerate() {
                let skip = match &allowed {
                    Some(a) => !a.get(k).copied().unwrap_or(false),
                    None => pk < prune || !constraint.allows(prefix, k),
                };
                if k == p.blank || skip {
                    continue;
                }
                let mut extended = prefix.clone();
                extended.push(k);
                // A repeated label needs a blank between the two.
                let from = if prefix.last() == Some(&k) {
                    b.blank
                } else {
                    total
                };
                let frames = || {
                    let mut f = b.frames.clone();
                    f.push(t);
                    f
                };
                add(extended, f32::NEG_INFINITY, from + lp(k), &frames);
            }
        }
        let mut ranked: Vec<(Vec<usize>, Beam)> = next.into_iter().collect();
        ranked.sort_by(|a, b| {
            b.1.total()
                .total_cmp(&a.1.total())
                .then_with(|| a.0.cmp(&b.0))
        });
        ranked.truncate(width.max(1));
        beams = ranked;
    }
    let n = p.frames().max(1) as f32;
    // The best complete hypothesis; when every beam is inside a word (the
    // frames end mid-word, as a live stream's do), the best beam with that
    // unfinished word taken off, so a partial never loses what came before.
    let best = match beams
        .iter()
        .filter(|(prefix, _)| constraint.complete(prefix))
        .max_by(|a, b| a.1.total().total_cmp(&b.1.total()))
    {
        Some(found) => Some(found.clone()),
        None => beams.first().map(|(prefix, b)| {
            let mut prefix = prefix.clone();
            let mut b = b.clone();
            while !prefix.is_empty() && !constraint.complete(&prefix) {
                prefix.pop();
                b.frames.pop();
            }
            (prefix, b)
        }),
    };
    match best {
        Some((labels, b)) => Decoded {
            labels,
            confidence: (b.total() / n).exp(),
            frames: b.frames,
        },
        None => Decoded {
            labels: Vec::new(),
            frames: Vec::new(),
            confidence: 0.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Posteriors that put `p` on the given class per frame, the rest spread.
    fn post(path: &[usize], classes: usize, p: f32) -> Vec<f32> {
        path.iter()
            .flat_map(|&k| {
                (0..classes).map(move |c| {
                    if c == k {
                        p
                    } else {
                        (1.0 - p) / (classes - 1) as f32
                    }
                })
            })
            .collect()
    }

    #[test]
    fn greedy_merges_repeats_and_drops_blanks() {
        // classes: 0 'a', 1 'b', 2 blank
        let probs = post(&[0, 0, 2, 0, 1, 1, 2], 3, 0.9);
        let d = greedy(Posteriors {
            probs: &probs,
            classes: 3,
            blank: 2,
        });
        assert_eq!(d.labels, [0, 0, 1]);
        assert_eq!(d.frames, [0, 3, 4]);
        assert!((d.confidence - 0.9).abs() < 1e-4);
    }

    #[test]
    fn beam_search_finds_what_greedy_misses() {
        // Per frame: 'a' 0.4, 'b' 0.0, blank 0.6 twice. Greedy says "" (blank,
        // blank: 0.36), but "a" is more likely overall: 1 - 0.36 = 0.64.
        let probs = vec![0.4, 0.0, 0.6, 0.4, 0.0, 0.6];
        let p = Posteriors {
            probs: &probs,
            classes: 3,
            blank: 2,
        };
        assert!(greedy(p).labels.is_empty());
        let d = beam_search(p, 4, 0.0, &Open);
        assert_eq!(d.labels, [0]);
        assert!((d.confidence - 0.64f32.sqrt()).abs() < 1e-4);
    }

    #[test]
    fn beam_search_keeps_double_letters_apart_only_with_a_blank() {
        let probs = post(&[0, 2, 0, 1], 3, 0.98);
        let d = beam_search(
            Posteriors {
                probs: &probs,
                classes: 3,
                blank: 2,
            },
            8,
            0.0,
            &Open,
        );
        assert_eq!(d.labels, [0, 0, 1]);
        assert_eq!(d.frames, [0, 2, 3]);
    }

    struct OnlyB;
    impl Constraint for OnlyB {
        fn allows(&self, _: &[usize], label: usize) -> bool {
            label == 1
        }
    }

    #[test]
    fn constraints_limit_the_labels() {
        let probs = post(&[0, 1, 2], 3, 0.6);
        let d = beam_search(
            Posteriors {
                probs: &probs,
                classes: 3,
                blank: 2,
            },
            8,
            0.0,
            &OnlyB,
        );
        assert_eq!(d.labels, [1]);
    }
}
