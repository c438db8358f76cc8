//! GStreamer decoding without a broker: real clips through `run_stream`.

mod common;

use std::sync::Arc;

use common::*;
use mouthmap_contracts::{EndReason, FrameEvent, PixelFormat};
use mouthmap_ingest::source::Source;
use mouthmap_ingest::stream::{Emitter, StreamControl, StreamSettings, run_stream};

#[derive(Default)]
struct Collect(Vec<(FrameEvent, Vec<u8>)>);

impl Emitter for Collect {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, _span: tracing::Span) -> bool {
        self.0.push((event, payload));
        true
    }
}

fn capture(path: &std::path::Path) -> Vec<(FrameEvent, Vec<u8>)> {
    let source = Source::parse(path.to_str().unwrap()).unwrap();
    let mut out = Collect::default();
    let end = run_stream(
        "t",
        &source,
        &StreamSettings::default(),
        &Arc::new(StreamControl::default()),
        &mut out,
    );
    assert_eq!(end.reason, EndReason::Eos, "{:?}", end.error);
    out.0
}

fn frames(events: &[(FrameEvent, Vec<u8>)]) -> Vec<(u32, u32, u64)> {
    events
        .iter()
        .filter_map(|(e, p)| match e {
            FrameEvent::Chunk(c) => {
                c.validate(p).unwrap();
                assert_eq!(c.format, PixelFormat::I420);
                Some(
                    c.frames
                        .iter()
                        .map(|f| (c.width, c.height, f.index))
                        .collect::<Vec<_>>(),
                )
            }
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn grid_h264_clip_gives_75_frames_at_native_size() {
    let events = capture(&grid_clip("bbaf2n.mp4"));
    let f = frames(&events);
    assert_eq!(f.len(), 75);
    assert!(
        f.iter()
            .enumerate()
            .all(|(i, &(w, h, idx))| (w, h, idx) == (360, 288, i as u64))
    );
    // The luma plane is a real picture, not a blank: its values spread.
    let (_, payload) = events
        .iter()
        .find(|(e, _)| matches!(e, FrameEvent::Chunk(_)))
        .unwrap();
    let luma = &payload[..360 * 288];
    let (min, max) = (luma.iter().min().unwrap(), luma.iter().max().unwrap());
    assert!(max - min > 100, "luma range {min}..{max}");
}

#[test]
fn mpeg1_clip_with_audio_is_decoded_and_large_frames_are_scaled() {
    let dir = shared().join("data/grid/speakers");
    // The 720x576 clip of speaker 2 is scaled to the 640-pixel default width.
    let f = frames(&capture(&dir.join("id2_6000_swwp2s.mpg")));
    assert_eq!(f.len(), 75, "ffprobe counts 75 frames");
    assert!(
        f.iter().all(|&(w, h, _)| (w, h) == (640, 512)),
        "{:?}",
        f[0]
    );
    let f = frames(&capture(&dir.join("bbaf2n.mpg")));
    assert_eq!(f.len(), 75);
    assert_eq!((f[0].0, f[0].1), (360, 288));
}

/// The corpus's original MPEG-1 clips carry container timestamp jumps (about
/// 0.45 s mid-clip in some): every clip still gives exactly the 75 frames
/// ffprobe counts, and no frame is a repeat of the one before (a jump once
/// became up to 16 repeated, frozen frames at the 25 fps conversion).
#[test]
fn every_original_mpeg1_clip_gives_its_75_frames_and_none_frozen() {
    let dir = shared().join("data/grid/speakers");
    let mut clips: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mpg"))
        .collect();
    clips.sort();
    assert_eq!(clips.len(), 12);
    for clip in clips {
        let events = capture(&clip);
        let mut lumas: Vec<Vec<u8>> = Vec::new();
        for (e, p) in &events {
            if let FrameEvent::Chunk(c) = e {
                let luma = (c.width * c.height) as usize;
                for r in c.frame_ranges() {
                    lumas.push(p[r][..luma].to_vec());
                }
            }
        }
        assert_eq!(
            lumas.len(),
            75,
            "{}: {} frames",
            clip.display(),
            lumas.len()
        );
        let repeats = lumas.windows(2).filter(|w| w[0] == w[1]).count();
        assert_eq!(repeats, 0, "{}: {repeats} repeated frames", clip.display());
    }
}
