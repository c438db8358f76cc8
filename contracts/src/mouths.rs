//! The `mouths` topic (preprocess -> infer): Gray8 mouth crops, one per
//! frame of the `frames` chunk they came from, with each crop's quality.

use serde::{Deserialize, Serialize};

use crate::event::expect_len;
use crate::frames::{FrameInfo, check_frames, check_sides};
use crate::{ContractError, StreamEnd, StreamStart, TopicKind, bytes_of};

/// Per-frame crop quality, published with each mouth crop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CropQuality {
    /// Score of the face detection behind this crop's box (0 when none).
    pub face_score: f32,
    /// False when no face was found and an earlier box was held (or none
    /// was ever found and a default box was used).
    pub face_found: bool,
    /// True when the face detector ran on this frame; false on tracked frames.
    pub detected: bool,
    /// Mouth box width in source pixels.
    pub box_width: f32,
    /// Mean luma of the crop, 0..255.
    pub brightness: f32,
    /// Variance of the Laplacian of the crop (higher is sharper).
    pub sharpness: f32,
}

/// A stream's crop quality so far (carried by the `mouths` end event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamQuality {
    pub frames: u64,
    /// Share of frames with a face, 0..1.
    pub face_share: f32,
    pub mean_brightness: f32,
    pub mean_sharpness: f32,
    pub mean_box_width: f32,
    /// True when the face has been missing longer than the allowed gap
    /// (or was never found).
    pub no_face: bool,
}

/// A few consecutive mouth crops of one stream (topic `mouths`).
/// Payload: `frames.len()` crops of `width` x `height` Gray8, back to back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MouthChunk {
    pub stream_id: String,
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub frames: Vec<FrameInfo>,
    pub quality: Vec<CropQuality>,
    /// The stream currently has no face (see [`StreamQuality::no_face`]).
    #[serde(default)]
    pub no_face: bool,
    #[serde(default)]
    pub discontinuity: bool,
}

impl MouthChunk {
    /// Checks the metadata against the payload it came with.
    pub fn validate(&self, payload: &[u8]) -> Result<(), ContractError> {
        crate::validate_stream_id(&self.stream_id)?;
        check_frames(&self.frames)?;
        if self.frames.len() != self.quality.len() {
            return Err(ContractError::Invalid(format!(
                "chunk has {} frames and {} quality records",
                self.frames.len(),
                self.quality.len()
            )));
        }
        check_sides(self.width, self.height)?;
        let expected = bytes_of(
            "mouth crops",
            &[
                self.width as u64,
                self.height as u64,
                self.frames.len() as u64,
            ],
        )?;
        expect_len(payload, expected)
    }
}

/// The end of a stream on `mouths`: the stream's end plus its crop quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MouthEnd {
    #[serde(flatten)]
    pub end: StreamEnd,
    pub quality: StreamQuality,
}

impl MouthEnd {
    pub fn stream_id(&self) -> &str {
        &self.end.stream_id
    }
}

/// Events on the `mouths` topic (an envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MouthEvent {
    Start(StreamStart),
    Chunk(MouthChunk),
    End(MouthEnd),
}

crate::event::stream_event!(MouthEvent, TopicKind::Mouths, Chunk => "chunk");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::decode;

    fn chunk(frames: usize) -> MouthChunk {
        let quality = CropQuality {
            face_score: 0.9,
            face_found: true,
            detected: true,
            box_width: 60.0,
            brightness: 100.0,
            sharpness: 10.0,
        };
        MouthChunk {
            stream_id: "m".into(),
            seq: 0,
            width: 4,
            height: 2,
            frames: crate::frames::tests::chunk(frames).frames,
            quality: vec![quality; frames],
            no_face: false,
            discontinuity: false,
        }
    }

    #[test]
    fn chunks_round_trip_and_sizes_are_checked() {
        let c = chunk(3);
        let bytes = MouthEvent::Chunk(c.clone()).encode(&[1; 24]);
        let (event, payload) = decode::<MouthEvent>(&bytes, Some(b"m"), Some("mouths/v1")).unwrap();
        assert_eq!(event, MouthEvent::Chunk(c.clone()));
        assert_eq!(payload.len(), 24);
        let bytes = MouthEvent::Chunk(c).encode(&[1; 23]);
        assert!(matches!(
            decode::<MouthEvent>(&bytes, None, None),
            Err(ContractError::PayloadSize { .. })
        ));
    }

    #[test]
    fn a_quality_record_per_frame() {
        let mut c = chunk(3);
        c.quality.pop();
        assert!(matches!(
            c.validate(&[0; 24]),
            Err(ContractError::Invalid(_))
        ));
    }

    #[test]
    fn sides_that_would_overflow_are_refused() {
        let mut c = chunk(1);
        c.width = 1 << 31;
        c.height = 2;
        assert!(matches!(
            c.validate(&[]),
            Err(ContractError::OutOfRange { .. })
        ));
    }
}
