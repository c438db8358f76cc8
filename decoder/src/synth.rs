//! Synthetic per-frame posteriors that spell a text, and the `logits`
//! windows a 75-frame, hop-`h` inferencer would cut from them: for tests
//! and benchmarks of the decoder without a model.

use mouthmap_contracts::{EndReason, LogitsEvent, LogitsWindow, StreamEnd};

/// LipNet's classes: `a`-`z`, space, blank (last).
pub fn vocabulary() -> Vec<String> {
    ('a'..='z')
        .map(String::from)
        .chain([" ".to_string(), "<blank>".to_string()])
        .collect()
}

/// Posteriors (frames x 28, row-major) spelling `text`: each character two
/// frames, a blank between characters, silence (blank) of `pause` frames
/// between sentences separated by `|`. `peak` is the top class's probability;
/// the rest is spread evenly.
pub fn posteriors(text: &str, pause: usize, peak: f32) -> Vec<f32> {
    let classes = 28;
    let blank = 27;
    let mut labels: Vec<usize> = vec![blank; pause];
    for (i, sentence) in text.split('|').enumerate() {
        if i > 0 {
            labels.extend(std::iter::repeat_n(blank, pause));
            labels.extend([26, 26, blank]);
        }
        for ch in sentence.trim().chars() {
            let l = if ch == ' ' {
                26
            } else {
                ch as usize - 'a' as usize
            };
            labels.extend([l, l, blank]);
        }
    }
    labels.extend(std::iter::repeat_n(blank, pause));
    let rest = (1.0 - peak) / (classes - 1) as f32;
    labels
        .iter()
        .flat_map(|&l| (0..classes).map(move |c| if c == l { peak } else { rest }))
        .collect()
}

/// A stream's end event (it ended normally).
pub fn end(stream_id: &str) -> LogitsEvent {
    LogitsEvent::End(StreamEnd {
        stream_id: stream_id.into(),
        reason: EndReason::Eos,
        error: None,
        frames: 0,
        chunks: 0,
        ended_at_ms: 0,
        frames_lost: 0,
        gaps: Vec::new(),
        cancelled: false,
    })
}

/// The windows (75 frames, every `hop` frames, the last one end-aligned) of
/// a stream with these posteriors, each with its payload.
pub fn windows(stream_id: &str, probs: &[f32], hop: usize) -> Vec<(LogitsEvent, Vec<u8>)> {
    let classes = 28;
    let frames = probs.len() / classes;
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * hop)
        .take_while(|s| s + 75 <= frames)
        .collect();
    if frames >= 75 && starts.last() != Some(&(frames - 75)) {
        starts.push(frames - 75);
    }
    starts
        .into_iter()
        .map(|s| {
            let w = LogitsWindow {
                stream_id: stream_id.into(),
                first_frame: s as u64,
                frames: 75,
                valid_frames: 75,
                classes: classes as u32,
                vocabulary: vocabulary(),
                blank: 27,
                model_name: "synthetic".into(),
                model_version: "0".into(),
                served_version: 0,
                shadow: false,
                newest_ingest_us: 0,
                face_share: 1.0,
            };
            let payload = probs[s * classes..(s + 75) * classes]
                .iter()
                .flat_map(|p| p.to_le_bytes())
                .collect();
            (LogitsEvent::Window(w), payload)
        })
        .collect()
}
