//! Frames in, chunk messages out: pure logic, no transport.

use mouthmap_contracts::{FrameChunk, FrameInfo, PixelFormat};

/// One decoded frame, tightly packed (no row padding).
#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    pub index: u64,
    pub pts_ns: u64,
    pub ingest_us: i64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Vec<u8>,
}

/// How many frames go into one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// Frames per chunk at most (a chunk's latency is this many 40 ms frames).
    pub frames_per_chunk: usize,
    /// Payload bytes per chunk at most; large frames make smaller chunks.
    pub max_payload_bytes: usize,
}

impl ChunkPolicy {
    /// Payload bytes per chunk at most where chunks go to the broker
    /// (Kafka's default message limit is 1 MB).
    pub const MAX_PAYLOAD_BYTES: usize = 600_000;
    /// Where frame chunks never reach the broker (ingest's chained crop,
    /// transcribe, crops): four times as much, so raw I420 GRID frames
    /// (155 520 bytes) make chunks of 6 as JPEG ones do and a 640x480 stream
    /// chunks of 5, while the memory queued chunks can hold stays bounded.
    pub const IN_PROCESS_PAYLOAD_BYTES: usize = 4 * Self::MAX_PAYLOAD_BYTES;
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        Self {
            frames_per_chunk: 6,
            max_payload_bytes: Self::MAX_PAYLOAD_BYTES,
        }
    }
}

/// A frame that cannot fit any chunk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "one {width}x{height} frame is {bytes} bytes, over the {limit}-byte chunk limit: lower --max-width or raise --max-chunk-bytes"
)]
pub struct FrameTooLarge {
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
    pub limit: usize,
}

impl ChunkPolicy {
    /// Frames per chunk for frames of `frame_bytes` each.
    pub fn frames_for(&self, frame_bytes: usize) -> usize {
        (self.max_payload_bytes / frame_bytes.max(1)).clamp(1, self.frames_per_chunk.max(1))
    }
}

/// Groups a stream's frames into chunks with running sequence numbers.
#[derive(Debug)]
pub struct Chunker {
    stream_id: String,
    policy: ChunkPolicy,
    seq: u64,
    frames: Vec<FrameInfo>,
    /// Each pending frame's bytes (listed in chunks of compressed frames).
    sizes: Vec<u32>,
    payload: Vec<u8>,
    shape: Option<(u32, u32, PixelFormat)>,
    discontinuity: bool,
}

impl Chunker {
    pub fn new(stream_id: impl Into<String>, policy: ChunkPolicy) -> Self {
        Self {
            stream_id: stream_id.into(),
            policy,
            seq: 0,
            frames: Vec::new(),
            sizes: Vec::new(),
            payload: Vec::new(),
            shape: None,
            discontinuity: false,
        }
    }

    /// Chunks emitted so far.
    /// Numbers chunks from `seq` on: a stream resumed where it left off.
    pub fn starting_at(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    pub fn chunks(&self) -> u64 {
        self.seq
    }

    /// Adds a frame; returns the chunks completed by it (a size change closes
    /// the pending chunk first).
    pub fn push(&mut self, frame: RawFrame) -> Result<Vec<(FrameChunk, Vec<u8>)>, FrameTooLarge> {
        if frame.data.len() > self.policy.max_payload_bytes {
            return Err(FrameTooLarge {
                width: frame.width,
                height: frame.height,
                bytes: frame.data.len(),
                limit: self.policy.max_payload_bytes,
            });
        }
        let mut out = Vec::new();
        let shape = (frame.width, frame.height, frame.format);
        // A new shape, or a compressed frame the pending chunk has no room
        // for, closes the pending chunk first.
        if self.shape.is_some_and(|s| s != shape)
            || self.payload.len() + frame.data.len() > self.policy.max_payload_bytes
        {
            out.extend(self.flush());
        }
        self.shape = Some(shape);
        self.frames.push(FrameInfo {
            index: frame.index,
            pts_ns: frame.pts_ns,
            ingest_us: frame.ingest_us,
        });
        self.sizes.push(frame.data.len() as u32);
        self.payload.extend_from_slice(&frame.data);
        if self.frames.len() >= self.policy.frames_for(frame.data.len()) {
            out.extend(self.flush());
        }
        Ok(out)
    }

    /// The next chunk will say frames were missed before it.
    pub fn mark_discontinuity(&mut self) {
        self.discontinuity = true;
    }

    /// Closes the pending chunk, if any.
    pub fn flush(&mut self) -> Option<(FrameChunk, Vec<u8>)> {
        if self.frames.is_empty() {
            return None;
        }
        let (width, height, format) = self.shape.expect("frames imply a shape");
        let chunk = FrameChunk {
            stream_id: self.stream_id.clone(),
            seq: self.seq,
            width,
            height,
            format,
            frames: std::mem::take(&mut self.frames),
            sizes: match format.frame_bytes(width, height) {
                Some(_) => {
                    self.sizes.clear();
                    Vec::new()
                }
                None => std::mem::take(&mut self.sizes),
            },
            discontinuity: std::mem::take(&mut self.discontinuity),
        };
        self.seq += 1;
        Some((chunk, std::mem::take(&mut self.payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(index: u64, w: u32, h: u32) -> RawFrame {
        let format = PixelFormat::I420;
        RawFrame {
            index,
            pts_ns: index * 40_000_000,
            ingest_us: 0,
            width: w,
            height: h,
            format,
            data: vec![index as u8; format.frame_bytes(w, h).unwrap()],
        }
    }

    #[test]
    fn groups_frames_and_numbers_chunks() {
        let mut c = Chunker::new(
            "s",
            ChunkPolicy {
                frames_per_chunk: 3,
                max_payload_bytes: 1 << 20,
            },
        );
        let mut chunks = Vec::new();
        for i in 0..7 {
            chunks.extend(c.push(frame(i, 8, 4)).unwrap());
        }
        chunks.extend(c.flush());
        let sizes: Vec<usize> = chunks.iter().map(|(m, _)| m.frames.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        let seqs: Vec<u64> = chunks.iter().map(|(m, _)| m.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        for (meta, payload) in &chunks {
            meta.validate(payload).unwrap();
        }
        assert_eq!(chunks[1].1[0], 3, "payload holds frame 3 first");
        assert!(c.flush().is_none());
    }

    #[test]
    fn large_frames_make_smaller_chunks_and_huge_ones_fail() {
        let one = PixelFormat::I420.frame_bytes(360, 288).unwrap();
        let policy = ChunkPolicy {
            frames_per_chunk: 5,
            max_payload_bytes: 2 * one + 10,
        };
        assert_eq!(policy.frames_for(one), 2);
        let mut c = Chunker::new("s", policy);
        assert!(c.push(frame(0, 360, 288)).unwrap().is_empty());
        assert_eq!(c.push(frame(1, 360, 288)).unwrap().len(), 1);
        let err = c.push(frame(2, 720, 576)).unwrap_err();
        assert_eq!(err.bytes, PixelFormat::I420.frame_bytes(720, 576).unwrap());
    }

    #[test]
    fn size_change_and_discontinuity_close_the_chunk() {
        let mut c = Chunker::new("s", ChunkPolicy::default());
        assert!(c.push(frame(0, 8, 4)).unwrap().is_empty());
        let out = c.push(frame(1, 16, 8)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.width, 8);
        let (pending, _) = c.flush().unwrap();
        assert!(!pending.discontinuity);
        c.mark_discontinuity();
        c.push(frame(9, 16, 8)).unwrap();
        let (next, _) = c.flush().unwrap();
        assert!(next.discontinuity);
        assert_eq!(next.seq, 2);
    }

    #[test]
    fn compressed_frames_list_their_sizes_and_fill_chunks_by_bytes() {
        let policy = ChunkPolicy {
            frames_per_chunk: 3,
            max_payload_bytes: 100,
        };
        let mut c = Chunker::new("s", policy);
        let jpeg = |index: u64, n: usize| RawFrame {
            index,
            pts_ns: index * 40_000_000,
            ingest_us: 0,
            width: 360,
            height: 288,
            format: PixelFormat::Jpeg,
            data: vec![index as u8; n],
        };
        let mut chunks = Vec::new();
        for (i, n) in [40, 50, 30, 20, 10, 5].into_iter().enumerate() {
            chunks.extend(c.push(jpeg(i as u64, n)).unwrap());
        }
        chunks.extend(c.flush());
        // Two frames of about 50 bytes fill 100; then three smaller ones.
        let sizes: Vec<Vec<u32>> = chunks.iter().map(|(m, _)| m.sizes.clone()).collect();
        assert_eq!(sizes, [vec![40, 50], vec![30, 20, 10], vec![5]]);
        for (meta, payload) in &chunks {
            meta.validate(payload).unwrap();
        }
    }
}
