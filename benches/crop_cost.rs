//! What cropping costs per frame on this machine, detector frames and
//! tracked frames apart, and how many 25 fps streams one core can crop.
//!
//!     cargo bench --bench crop_cost
//!
//! Reads GRID clips from MOUTHMAP_SHARED (default ../shared) and writes
//! target/bench/preprocessor.md (and prints it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mouthmap_contracts::FrameEvent;
use mouthmap_ingest::source::Source;
use mouthmap_ingest::stream::{Emitter, StreamControl, StreamSettings, run_stream};
use mouthmap_preprocessor::detector::{Detector, DetectorSettings};
use mouthmap_preprocessor::tracker::{MouthTracker, TrackerSettings};

struct Frames(Vec<(Vec<u8>, u32, u32)>);

impl Emitter for Frames {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, _: tracing::Span) -> bool {
        if let FrameEvent::Chunk(c) = event {
            for r in c.frame_ranges() {
                self.0.push((payload[r].to_vec(), c.width, c.height));
            }
        }
        true
    }
}

fn decode(path: &std::path::Path) -> Vec<(Vec<u8>, u32, u32)> {
    let source = Source::parse(path.to_str().unwrap()).unwrap();
    let mut f = Frames(Vec::new());
    run_stream(
        "bench",
        &source,
        &StreamSettings::default(),
        &Arc::new(StreamControl::default()),
        &mut f,
    );
    f.0
}

/// Mean ms per frame of `tracker` over `frames` in chunks of `chunk`
/// frames, `rounds` times, and the frames the detector ran on (the first
/// chunk, which always detects, untimed and uncounted).
fn time_tracker(
    det: &mut Detector,
    settings: TrackerSettings,
    frames: &[(Vec<u8>, u32, u32)],
    chunk: usize,
    rounds: usize,
) -> (f64, usize) {
    let (w, h) = (frames[0].1, frames[0].2);
    let chunks: Vec<Vec<&[u8]>> = frames
        .chunks(chunk)
        .map(|c| c.iter().map(|f| f.0.as_slice()).collect())
        .collect();
    let mut total = 0.0;
    let mut detected = 0;
    for _ in 0..rounds {
        let mut t = MouthTracker::new(settings);
        // The first chunk always detects; time the rest.
        t.process_chunk(det, &chunks[0], w, h).unwrap();
        let start = Instant::now();
        for c in &chunks[1..] {
            for crop in t.process_chunk(det, c, w, h).unwrap() {
                detected += crop.quality.detected as usize;
            }
        }
        total += start.elapsed().as_secs_f64() * 1000.0 / (frames.len() - chunks[0].len()) as f64;
    }
    (total / rounds as f64, detected / rounds)
}

fn main() {
    // Ingest's default frames per chunk (the default crop detects on each
    // chunk's last frame).
    let chunk = mouthmap_ingest::chunker::ChunkPolicy::default().frames_per_chunk;
    let shared = std::env::var_os("MOUTHMAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let clips = [
        shared.join("data/grid/s1/bbaf2n.mp4"),
        shared.join("data/grid/speakers/lbax4n.mpg"),
        shared.join("data/grid/speakers/id2_6000_swwp2s.mpg"),
    ];
    let model = shared.join("models/yunet/face_detection_yunet_2026may.onnx");
    let mut det = Detector::load(&model, DetectorSettings::default()).expect("YuNet loads");
    let rounds = 5;
    let mut rows = Vec::new();
    for clip in &clips {
        let frames = decode(clip);
        let (w, h) = (frames[0].1, frames[0].2);
        // Detector alone.
        let start = Instant::now();
        for _ in 0..rounds {
            for (f, w, h) in &frames {
                det.detect_i420(f, *w as usize, *h as usize).unwrap();
            }
        }
        let detector_ms = start.elapsed().as_secs_f64() * 1000.0 / (rounds * frames.len()) as f64;
        let every = TrackerSettings {
            detect_every: 1,
            interpolate: false,
            ..TrackerSettings::default()
        };
        let (detect_ms, _) = time_tracker(&mut det, every, &frames, chunk, rounds);
        let tracked = TrackerSettings {
            detect_every: u32::MAX,
            recheck_threshold: f32::INFINITY,
            ..every
        };
        let (track_ms, n) = time_tracker(&mut det, tracked, &frames, chunk, rounds);
        assert_eq!(n, 0, "tracked frames ran no detector");
        let five = TrackerSettings {
            detect_every: 5,
            ..every
        };
        let (five_ms, five_detected) = time_tracker(&mut det, five, &frames, chunk, rounds);
        // The default before 2026-12-03: chunks of 3, every 3rd frame.
        let third = TrackerSettings {
            detect_every: 3,
            ..TrackerSettings::default()
        };
        let (third_ms, third_detected) = time_tracker(&mut det, third, &frames, 3, rounds);
        let interpolated = TrackerSettings::default();
        assert!(interpolated.interpolate, "the default interpolates");
        let (inter_ms, inter_detected) =
            time_tracker(&mut det, interpolated, &frames, chunk, rounds);
        let timed = frames.len() - chunk;
        let timed3 = frames.len() - 3;
        rows.push(format!(
            "| {} | {w}x{h} | {detector_ms:.2} | {detect_ms:.2} | {track_ms:.3} | {five_ms:.2} ({five_detected}/{timed}) | {third_ms:.2} ({third_detected}/{timed3}) | {inter_ms:.2} ({inter_detected}/{timed}) | {:.0} | {:.0} |",
            clip.file_name().unwrap().to_string_lossy(),
            1000.0 / (25.0 * detect_ms),
            1000.0 / (25.0 * inter_ms),
        ));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap().trim().to_string())
        })
        .unwrap_or_default();
    let report = format!(
        "Preprocessor cost per frame, one thread, {rounds} rounds per clip, on {cpu}.\n\
         Command: `cargo bench --bench crop_cost`\n\n\
         Frames in ingest's default chunks of {chunk} unless said. Columns: the detector alone; \
         every frame detected; no detection (the crop alone); the box held, detected on every 5th \
         frame; detected on each 3-frame chunk's last frame, the boxes between interpolated (the \
         default until 2026-12-03); the default, detected on each {chunk}-frame chunk's last \
         frame, the boxes between interpolated.\n\n\
         | clip | size | YuNet alone ms | every frame detected ms | crop only ms | held, every 5th detected ms (frames detected) | interpolated, every 3rd, chunks of 3 ms (frames detected) | interpolated, every {chunk}th (default) ms (frames detected) | streams/core, every frame | streams/core, default |\n\
         |---|---|---|---|---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    print!("{report}");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("preprocessor.md"), report).unwrap();
}
