//! One stream's decoding state: its stitched posterior, the window the
//! next one cuts into, and the words committed by bounded re-decoding.

use std::collections::BTreeMap;

use mouthmap_contracts::{FRAME_DURATION_NS, LogitsWindow, TimedWord};

use super::DecodeError;
use crate::stitch::{self, Classes, WindowRows};

pub(super) struct StreamState {
    /// frame index -> probabilities, stitched
    pub(super) frames: BTreeMap<u64, Vec<f32>>,
    /// The newest window (first label repaired), which the next one cuts into.
    last_window: Option<WindowRows>,
    /// Where the newest window's part of `frames` begins.
    last_cut: u64,
    pub(super) vocabulary: Vec<String>,
    pub(super) blank: usize,
    pub(super) model_name: String,
    pub(super) model_version: String,
    pub(super) served_version: u64,
    pub(super) newest_ingest_us: i64,
    /// Frames before this no later window can change.
    pub(super) settled_until: u64,
    /// The text of the last partial published ...
    pub(super) last_text: Option<String>,
    /// ... and one past the newest frame it covered.
    pub(super) published_until: u64,
    /// Words committed by bounded re-decoding; their frames are gone.
    pub(super) committed: Vec<TimedWord>,
    /// (sum of ln confidence per frame, frames) of the committed part.
    pub(super) committed_log_conf: (f64, u64),
    /// One past the newest frame seen.
    pub(super) covered_until: u64,
    /// Frames before this were committed and dropped; later windows' copies are ignored.
    dropped_until: u64,
    /// Windows stitched, and those of them with a face (see [`MIN_FACE_SHARE`]).
    pub(super) windows: u64,
    pub(super) faced_windows: u64,
}

/// A window whose frames are less than this share faces is read as silence
/// (blank at every frame): letters read off what is not a mouth are noise.
pub const MIN_FACE_SHARE: f32 = 0.5;

impl StreamState {
    /// The state of a stream whose first window is `w`.
    pub(super) fn new(w: &LogitsWindow) -> Self {
        Self {
            frames: BTreeMap::new(),
            last_window: None,
            last_cut: 0,
            vocabulary: w.vocabulary.clone(),
            blank: w.blank as usize,
            model_name: w.model_name.clone(),
            model_version: w.model_version.clone(),
            served_version: w.served_version,
            newest_ingest_us: 0,
            settled_until: 0,
            last_text: None,
            published_until: 0,
            committed: Vec::new(),
            committed_log_conf: (0.0, 0),
            covered_until: 0,
            dropped_until: 0,
            windows: 0,
            faced_windows: 0,
        }
    }

    /// Stitches a (checked) window into the posterior: it takes over from
    /// the previous window at a word boundary both agree on. A window
    /// already stitched (redelivered) or older changes nothing, except a
    /// longer copy of the stream's only window so far (an early window grown),
    /// which replaces it.
    pub(super) fn add_window(
        &mut self,
        w: &LogitsWindow,
        payload: &[u8],
    ) -> Result<(), DecodeError> {
        if self.vocabulary != w.vocabulary || self.blank != w.blank as usize {
            return Err(DecodeError::VocabularyChanged {
                stream_id: w.stream_id.clone(),
                model: w.model_name.clone(),
                version: w.model_version.clone(),
            });
        }
        let classes = Classes {
            count: w.classes as usize,
            blank: self.blank,
            space: self.vocabulary.iter().position(|v| v == " "),
        };
        if self.windows == 1
            && self
                .last_window
                .as_ref()
                .is_some_and(|p| p.first == w.first_frame && p.len() < w.valid_frames as usize)
        {
            // The stream's first window grew (the inferencer's early windows,
            // each over more of the frames so far): it replaces the last.
            for f in self.last_cut.max(self.dropped_until)..self.covered_until {
                self.frames.remove(&f);
            }
            self.last_window = None;
            self.last_cut = 0;
            self.windows = 0;
            self.faced_windows = 0;
        }
        let prev_first = self.last_window.as_ref().map(|p| p.first);
        if prev_first.is_some_and(|p| w.first_frame <= p) {
            // A window already stitched (redelivered) or older: nothing new.
            return Ok(());
        }
        let mut rows = WindowRows {
            first: w.first_frame,
            rows: payload[..w.valid_frames as usize * classes.count * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            classes: classes.count,
        };
        self.windows += 1;
        if w.face_share >= MIN_FACE_SHARE {
            self.faced_windows += 1;
        } else {
            for row in rows.rows.chunks_mut(classes.count) {
                row.fill(0.0);
                row[classes.blank] = 1.0;
            }
        }
        let word = if w.first_frame > 0 {
            stitch::repair_first_label(&mut rows, classes)
        } else {
            None
        };
        let floor = self
            .last_cut
            .max(self.dropped_until)
            .max(self.settled_until);
        let cut = match &self.last_window {
            Some(a) => {
                let cut = stitch::choose_cut(a, self.last_cut, &rows, word, floor, classes);
                stitch::keep_last_word_whole(a, &mut rows, cut, floor, classes)
            }
            None => stitch::Cut {
                frame: w.first_frame,
                space_at: None,
            },
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(
                stream_id = %w.stream_id,
                first_frame = w.first_frame,
                best = %rows.best_path(&self.vocabulary, self.blank),
                cut = cut.frame,
                space_at = ?cut.space_at,
                floor,
                "window stitched"
            );
        }
        for f in cut.frame.max(self.dropped_until)..rows.end() {
            self.frames.insert(f, rows.row(f).to_vec());
        }
        if let Some(row) = cut
            .space_at
            .filter(|&f| f >= floor)
            .and_then(|f| self.frames.get_mut(&f))
        {
            stitch::make_space(row, classes);
        }
        if let Some(p) = prev_first {
            // The next window starts a hop later and cannot cut before that.
            let hop = w.first_frame - p;
            self.settled_until = self.settled_until.max(w.first_frame + hop);
        }
        self.last_cut = cut.frame;
        self.last_window = Some(rows);
        self.newest_ingest_us = self.newest_ingest_us.max(w.newest_ingest_us);
        self.covered_until = self
            .covered_until
            .max(w.first_frame + w.valid_frames as u64);
        self.model_name = w.model_name.clone();
        self.model_version = w.model_version.clone();
        self.served_version = w.served_version;
        Ok(())
    }

    /// Bounded re-decoding: past `max` frames, commits the settled words
    /// before the last settled gap between two words and drops their
    /// frames. `words` is the stream's transcript just decoded.
    pub(super) fn commit_settled(&mut self, max: usize, words: &[TimedWord], rest_confidence: f32) {
        if max == 0 || self.frames.len() <= max {
            return;
        }
        let Some(&first) = self.frames.keys().next() else {
            return;
        };
        let frame = |ms: u64| ms * 1_000_000 / FRAME_DURATION_NS;
        let rest = &words[self.committed.len().min(words.len())..];
        let settled = self.settled_until;
        let mut cut = None;
        for k in 0..rest.len().saturating_sub(1) {
            let gap_end = frame(rest[k + 1].start_ms);
            if gap_end + 2 > settled {
                break;
            }
            cut = Some((k + 1, (frame(rest[k].end_ms) + gap_end) / 2));
        }
        let (n_commit, cut_frame) = match cut {
            Some(c) => c,
            // Nothing said in the settled part: drop it, but a margin.
            None if rest.first().is_none_or(|w| frame(w.start_ms) > settled) => (
                0,
                rest.first()
                    .map_or(settled, |w| frame(w.start_ms).min(settled))
                    .saturating_sub(10),
            ),
            None => return,
        };
        if cut_frame <= first {
            return;
        }
        self.committed.extend(rest[..n_commit].iter().cloned());
        let kept = self.frames.split_off(&cut_frame);
        let dropped = self.frames.len() as u64;
        self.frames = kept;
        self.committed_log_conf.0 += (rest_confidence.max(1e-9) as f64).ln() * dropped as f64;
        self.committed_log_conf.1 += dropped;
        self.dropped_until = cut_frame;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;
    use mouthmap_contracts::LogitsEvent;

    fn windows() -> Vec<(LogitsWindow, Vec<u8>)> {
        let probs = synth::posteriors("bin blue at f two now", 12, 0.9);
        synth::windows("s", &probs, 25)
            .into_iter()
            .filter_map(|(ev, p)| match ev {
                LogitsEvent::Window(w) => Some((w, p)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_redelivered_window_changes_nothing() {
        let ws = windows();
        assert!(ws.len() >= 2);
        let mut s = StreamState::new(&ws[0].0);
        s.add_window(&ws[0].0, &ws[0].1).unwrap();
        s.add_window(&ws[1].0, &ws[1].1).unwrap();
        let before = s.frames.clone();
        s.add_window(&ws[0].0, &ws[0].1).unwrap();
        s.add_window(&ws[1].0, &ws[1].1).unwrap();
        assert_eq!(s.frames, before);
        assert_eq!(
            s.covered_until,
            ws[1].0.first_frame + ws[1].0.valid_frames as u64
        );
    }

    #[test]
    fn early_windows_are_replaced_by_the_first_whole_one() {
        let ws = windows();
        let mut plain = StreamState::new(&ws[0].0);
        plain.add_window(&ws[0].0, &ws[0].1).unwrap();
        plain.add_window(&ws[1].0, &ws[1].1).unwrap();
        // Early windows of the same first frame, shorter, read something
        // else (another window's rows): the whole window leaves no trace of them.
        let mut early = StreamState::new(&ws[0].0);
        for valid in [25, 50] {
            let mut w = ws[0].0.clone();
            w.valid_frames = valid;
            early.add_window(&w, &ws[1].1).unwrap();
            assert_eq!(early.covered_until, valid as u64);
            assert_eq!(early.frames.len(), valid as usize);
        }
        early.add_window(&ws[0].0, &ws[0].1).unwrap();
        early.add_window(&ws[1].0, &ws[1].1).unwrap();
        assert_eq!(early.frames, plain.frames);
        assert_eq!(early.windows, plain.windows);
        assert_eq!(early.settled_until, plain.settled_until);
        // A shorter copy of a whole window is a redelivery: nothing changes.
        let mut short = ws[1].0.clone();
        short.valid_frames = 10;
        early.add_window(&short, &ws[0].1).unwrap();
        assert_eq!(early.frames, plain.frames);
    }

    #[test]
    fn a_vocabulary_change_mid_stream_is_refused() {
        let ws = windows();
        let mut s = StreamState::new(&ws[0].0);
        s.add_window(&ws[0].0, &ws[0].1).unwrap();
        let mut other = ws[1].0.clone();
        other.vocabulary.swap(0, 1);
        assert!(matches!(
            s.add_window(&other, &ws[1].1),
            Err(DecodeError::VocabularyChanged { .. })
        ));
    }
}
