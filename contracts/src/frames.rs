//! The `frames` topic (ingest -> preprocess): chunks of a few frames, as
//! JPEG (the default), I420 or Gray8.

use serde::{Deserialize, Serialize};

use crate::event::{at_most, expect_len};
use crate::limits::{MAX_FRAMES, MAX_SIDE};
use crate::{ContractError, StreamEnd, StreamStart, TopicKind};

/// Layout of the pixels in a frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Planar YUV 4:2:0: a full-size Y (luma) plane, then U and V at half
    /// width and height. The Y plane alone is the grayscale image.
    I420,
    /// One byte of luma per pixel.
    Gray8,
    /// A baseline JPEG (YCbCr) per frame; the chunk lists each one's size.
    Jpeg,
}

impl PixelFormat {
    /// Bytes of one raw `width` x `height` frame, tightly packed (no row
    /// padding); None for a compressed format, whose sizes the chunk lists.
    /// Saturates instead of overflowing (a checked chunk's sides are within
    /// [`MAX_SIDE`]).
    pub fn frame_bytes(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        let luma = w.saturating_mul(h);
        match self {
            PixelFormat::I420 => {
                Some(luma.saturating_add(2usize.saturating_mul(w.div_ceil(2) * h.div_ceil(2))))
            }
            PixelFormat::Gray8 => Some(luma),
            PixelFormat::Jpeg => None,
        }
    }
}

/// One frame's place in a chunk payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameInfo {
    /// Running frame number within the stream, from 0, one per 1/25 s.
    pub index: u64,
    /// Presentation timestamp relative to the stream's first frame, in ns.
    pub pts_ns: u64,
    /// Wall-clock time ingest received the frame, microseconds since the epoch;
    /// the start point of end-to-end latency measurements.
    pub ingest_us: i64,
}

/// Frame indexes of a chunk must increase.
pub(crate) fn check_frames(frames: &[FrameInfo]) -> Result<(), ContractError> {
    if frames.is_empty() {
        return Err(ContractError::Invalid("chunk holds no frames".into()));
    }
    at_most("frames in a chunk", frames.len() as u64, MAX_FRAMES)?;
    if frames.windows(2).any(|w| w[1].index <= w[0].index) {
        return Err(ContractError::Invalid(
            "frame indexes in a chunk must increase".into(),
        ));
    }
    Ok(())
}

/// Width and height of a frame or crop: not empty, within [`MAX_SIDE`].
pub(crate) fn check_sides(width: u32, height: u32) -> Result<(), ContractError> {
    if width == 0 || height == 0 {
        return Err(ContractError::Invalid(format!(
            "frame size {width}x{height} is empty"
        )));
    }
    at_most("width", width as u64, MAX_SIDE)?;
    at_most("height", height as u64, MAX_SIDE)
}

/// A few consecutive frames of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameChunk {
    pub stream_id: String,
    /// Chunk number within the stream, from 0 and without gaps.
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// The frames, in order; the payload holds their pixels back to back,
    /// each `format.frame_bytes(width, height)` long (raw formats) or
    /// `sizes[i]` long (jpeg).
    pub frames: Vec<FrameInfo>,
    /// Each frame's bytes in the payload, for a compressed format (jpeg);
    /// empty for raw formats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<u32>,
    /// True on the first chunk after the source reconnected: frames between
    /// the previous chunk and this one were not captured.
    #[serde(default)]
    pub discontinuity: bool,
}

impl FrameChunk {
    /// Where each frame lies in the payload (once [`validate`](Self::validate)d).
    pub fn frame_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut at = 0usize;
        (0..self.frames.len())
            .map(|i| {
                let n = match self.format.frame_bytes(self.width, self.height) {
                    Some(n) => n,
                    None => self.sizes.get(i).copied().unwrap_or(0) as usize,
                };
                at = at.saturating_add(n);
                at - n..at
            })
            .collect()
    }

    /// Checks the metadata against the payload it came with.
    pub fn validate(&self, payload: &[u8]) -> Result<(), ContractError> {
        crate::validate_stream_id(&self.stream_id)?;
        check_frames(&self.frames)?;
        check_sides(self.width, self.height)?;
        match self.format.frame_bytes(self.width, self.height) {
            Some(_) if !self.sizes.is_empty() => {
                return Err(ContractError::Invalid(format!(
                    "{:?} frames are all one size: `sizes` is only for jpeg",
                    self.format
                )));
            }
            None if self.sizes.len() != self.frames.len() || self.sizes.contains(&0) => {
                return Err(ContractError::Invalid(format!(
                    "a jpeg chunk of {} frames needs {} non-zero `sizes`, has {}",
                    self.frames.len(),
                    self.frames.len(),
                    self.sizes.len()
                )));
            }
            _ => {}
        }
        let expected = self.frame_ranges().last().map_or(0, |r| r.end);
        expect_len(payload, expected)
    }
}

/// Events on the `frames` topic (an envelope; chunks carry pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FrameEvent {
    Start(StreamStart),
    Chunk(FrameChunk),
    End(StreamEnd),
}

crate::event::stream_event!(FrameEvent, TopicKind::Frames, Chunk => "chunk");

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Event;
    use crate::{FRAME_DURATION_NS, decode};

    pub(crate) fn chunk(frames: usize) -> FrameChunk {
        FrameChunk {
            stream_id: "s-1".into(),
            seq: 3,
            width: 4,
            height: 2,
            format: PixelFormat::I420,
            frames: (0..frames as u64)
                .map(|i| FrameInfo {
                    index: 10 + i,
                    pts_ns: (10 + i) * FRAME_DURATION_NS,
                    ingest_us: 1,
                })
                .collect(),
            sizes: Vec::new(),
            discontinuity: false,
        }
    }

    #[test]
    fn chunks_round_trip() {
        let c = chunk(2);
        let payload = vec![7u8; c.frame_ranges()[1].end];
        let bytes = FrameEvent::Chunk(c.clone()).encode(&payload);
        let (event, body) = decode::<FrameEvent>(&bytes, Some(b"s-1"), Some("frames/v1")).unwrap();
        assert_eq!(event, FrameEvent::Chunk(c));
        assert_eq!(body, &payload[..]);
    }

    #[test]
    fn i420_size_counts_half_size_chroma_rounded_up() {
        assert_eq!(PixelFormat::I420.frame_bytes(360, 288), Some(155_520));
        assert_eq!(PixelFormat::I420.frame_bytes(3, 3), Some(9 + 2 * 4));
        assert_eq!(PixelFormat::Gray8.frame_bytes(140, 46), Some(6_440));
        assert_eq!(PixelFormat::Jpeg.frame_bytes(360, 288), None);
    }

    #[test]
    fn jpeg_chunks_list_each_frames_size() {
        let mut c = chunk(3);
        c.format = PixelFormat::Jpeg;
        c.sizes = vec![5, 7, 2];
        c.validate(&[0; 14]).unwrap();
        assert_eq!(c.frame_ranges(), vec![0..5, 5..12, 12..14]);
        assert_eq!(
            c.validate(&[0; 13]).unwrap_err(),
            ContractError::PayloadSize {
                expected: 14,
                actual: 13
            }
        );
        c.sizes = vec![5, 7];
        assert!(matches!(
            c.validate(&[0; 12]),
            Err(ContractError::Invalid(_))
        ));
        c.sizes = vec![5, 0, 9];
        assert!(matches!(
            c.validate(&[0; 14]),
            Err(ContractError::Invalid(_))
        ));
        // A raw chunk has no sizes.
        let mut raw = chunk(1);
        raw.sizes = vec![24];
        assert!(matches!(
            raw.validate(&[0; 24]),
            Err(ContractError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_payload_that_disagrees_with_metadata() {
        let c = chunk(2);
        let one = c.frame_ranges()[0].len();
        let bytes = FrameEvent::Chunk(c.clone()).encode(&vec![0; one]);
        assert_eq!(
            decode::<FrameEvent>(&bytes, None, None).unwrap_err(),
            ContractError::PayloadSize {
                expected: one * 2,
                actual: one
            }
        );
    }

    #[test]
    fn huge_sides_are_refused_before_any_size_is_computed() {
        let mut c = chunk(1);
        c.width = u32::MAX;
        c.height = u32::MAX;
        assert!(matches!(
            c.validate(&[]),
            Err(ContractError::OutOfRange { field: "width", .. })
        ));
        c.width = 640;
        c.height = 100_000;
        assert!(matches!(
            c.validate(&[]),
            Err(ContractError::OutOfRange {
                field: "height",
                ..
            })
        ));
    }

    #[test]
    fn rejects_unknown_events() {
        let bytes = crate::encode_envelope(&serde_json::json!({"event": "nope"}), &[]);
        assert!(matches!(
            decode::<FrameEvent>(&bytes, None, None).unwrap_err(),
            ContractError::BadMetadata(_)
        ));
    }

    #[test]
    fn events_serialise_with_a_type_tag() {
        let end = FrameEvent::End(crate::stream::tests::end("s"));
        let json = serde_json::to_value(&end).unwrap();
        assert_eq!(json["event"], "end");
        assert_eq!(TopicKind::Frames.schema_header(), "frames/v1");
    }
}
