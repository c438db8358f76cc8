//! The `logits` topic (infer -> decode): one window's per-frame CTC
//! probabilities, with everything the decoder needs to read them.

use serde::{Deserialize, Serialize};

use crate::event::{at_most, expect_len};
use crate::limits::{MAX_CLASSES, MAX_FRAMES};
use crate::{ContractError, StreamEnd, StreamStart, TopicKind, bytes_of};

/// One window's per-frame CTC probabilities (topic `logits`).
/// Payload: `frames` x `classes` little-endian f32, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsWindow {
    pub stream_id: String,
    /// Index of the window's first frame in the stream.
    pub first_frame: u64,
    /// Frames in the window (the model's window length, usually 75).
    pub frames: u32,
    /// Frames of the window that are real; the rest is padding. Fewer than
    /// `frames` in a stream's end window when the stream is shorter than a
    /// window, and in the early windows a new stream gets before its first
    /// whole one (`infer --early-windows`): those share their first frame,
    /// each with more valid frames, and each replaces the one before.
    pub valid_frames: u32,
    pub classes: u32,
    /// The classes in index order (from the model's metadata), so the
    /// decoder needs nothing but the message.
    pub vocabulary: Vec<String>,
    /// Index of the CTC blank class.
    pub blank: u32,
    /// The model that read the window: its name (the model repository's
    /// directory, or the file's `model_name` metadata) and the version
    /// string in its metadata ...
    pub model_name: String,
    pub model_version: String,
    /// ... and the repository version that served it (0: a model from a
    /// file, outside any repository).
    #[serde(default)]
    pub served_version: u64,
    /// A shadow window: the same frames read by a candidate version that
    /// does not speak to users (`infer --shadow`). The decoder keeps it
    /// apart from the stream's own windows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// Ingest wall-clock time of the newest frame in the window (µs since epoch).
    pub newest_ingest_us: i64,
    /// Share of the window's valid frames in which a face was found, 0..1
    /// (a producer that does not say means all of them). The decoder reads
    /// no letters off a window that is mostly not a face.
    #[serde(default = "all_faces")]
    pub face_share: f32,
}

fn all_faces() -> f32 {
    1.0
}

impl LogitsWindow {
    /// Checks the metadata against the payload it came with.
    pub fn validate(&self, payload: &[u8]) -> Result<(), ContractError> {
        crate::validate_stream_id(&self.stream_id)?;
        at_most("frames in a window", self.frames as u64, MAX_FRAMES)?;
        at_most("classes", self.classes as u64, MAX_CLASSES)?;
        if self.vocabulary.len() != self.classes as usize || self.blank >= self.classes {
            return Err(ContractError::Invalid(format!(
                "{} classes, a vocabulary of {} and blank {}",
                self.classes,
                self.vocabulary.len(),
                self.blank
            )));
        }
        if !(0.0..=1.0).contains(&self.face_share) {
            return Err(ContractError::Invalid(format!(
                "face_share {} is not a share (0 to 1)",
                self.face_share
            )));
        }
        if self.frames == 0
            || self.classes < 2
            || self.valid_frames == 0
            || self.valid_frames > self.frames
        {
            return Err(ContractError::Invalid(format!(
                "window of {} frames ({} valid) and {} classes is not usable",
                self.frames, self.valid_frames, self.classes
            )));
        }
        let expected = bytes_of(
            "window of probabilities",
            &[self.frames as u64, self.classes as u64, 4],
        )?;
        expect_len(payload, expected)
    }
}

/// Events on the `logits` topic (an envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogitsEvent {
    Start(StreamStart),
    Window(LogitsWindow),
    End(StreamEnd),
}

crate::event::stream_event!(LogitsEvent, TopicKind::Logits, Window => "window");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::decode;

    fn window(frames: u32, classes: u32) -> LogitsWindow {
        LogitsWindow {
            stream_id: "w".into(),
            first_frame: 0,
            frames,
            valid_frames: frames.min(1),
            classes,
            vocabulary: (0..classes.min(8)).map(|c| c.to_string()).collect(),
            blank: 0,
            model_name: "m".into(),
            model_version: "1".into(),
            served_version: 0,
            shadow: false,
            newest_ingest_us: 0,
            face_share: 1.0,
        }
    }

    #[test]
    fn windows_round_trip() {
        let w = window(3, 2);
        let bytes = LogitsEvent::Window(w.clone()).encode(&[0; 24]);
        let (event, payload) =
            decode::<LogitsEvent>(&bytes, Some(b"w"), Some("logits/v1")).unwrap();
        assert_eq!(event, LogitsEvent::Window(w));
        assert_eq!(payload.len(), 24);
    }

    #[test]
    fn a_size_product_that_wraps_is_refused() {
        // 2^31 frames x 2 classes x 4 bytes wraps a u32 to 0: an empty
        // payload must not pass.
        let w = window(1 << 31, 2);
        let bytes = LogitsEvent::Window(w).encode(&[]);
        assert!(matches!(
            decode::<LogitsEvent>(&bytes, None, None),
            Err(ContractError::OutOfRange {
                field: "frames in a window",
                ..
            })
        ));
    }

    #[test]
    fn the_vocabulary_names_every_class() {
        let mut w = window(3, 2);
        w.vocabulary.pop();
        assert!(matches!(
            w.validate(&[0; 24]),
            Err(ContractError::Invalid(_))
        ));
    }
}
