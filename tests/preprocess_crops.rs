//! The preprocessor on real GRID clips, through `mouthmap crops` (the same
//! ingest and preprocess code as the services), without a broker.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn crops_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mouthmap"));
    c.env("MOUTHMAP_FACE_MODEL", face_model())
        .env("MOUTHMAP_LOG", "warn")
        .arg("crops");
    c
}

/// Reads a uint8 .npy written by `mouthmap crops`: (shape, data).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '|u1'"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (shape, bytes[10 + hlen..].to_vec())
}

fn clips(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut clips: Vec<PathBuf> = std::fs::read_dir(shared().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    clips.sort();
    clips
}

/// Runs `mouthmap crops --check` and returns its report.
fn check(clips: &[PathBuf], out: &Path) -> Value {
    let status = crops_cmd()
        .arg("--check")
        .arg("--out")
        .arg(out)
        .args(clips)
        .status()
        .unwrap();
    assert!(status.success());
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["clips"], clips.len(), "{report}");
    assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{report}");
    // A face on at least 99% of frames. (A few s1 clips open with a dozen
    // corrupt frames with no face in them: those count against this.)
    assert!(report["face_share"].as_f64().unwrap() >= 0.99, "{report}");
    // Both mouth corners inside the box on every frame with a face.
    assert_eq!(
        report["corners_inside"], report["corners_checked"],
        "{report}"
    );
    assert!(
        report["corners_checked"].as_u64().unwrap() >= 74 * clips.len() as u64 * 99 / 100,
        "{report}"
    );
    report
}

#[test]
fn faces_are_found_and_mouth_corners_stay_inside_the_box() {
    // All 12 speaker clips (11 other speakers, two sizes), and every 45th clip of speaker 1.
    let speakers = clips("data/grid/speakers", "mpg");
    assert_eq!(speakers.len(), 12);
    check(&speakers, tempfile::tempdir().unwrap().path());
    let s1: Vec<PathBuf> = clips("data/grid/s1", "mp4")
        .into_iter()
        .step_by(45)
        .collect();
    assert_eq!(s1.len(), 20);
    let out = tempfile::tempdir().unwrap();
    check(&s1, out.path());

    // The arrays are what training reads: uint8 [frames, 46, 140].
    let (shape, data) = read_npy(&out.path().join("bbaf2n.npy"));
    assert_eq!(shape, [75, 46, 140]);
    assert_eq!(data.len(), 75 * 46 * 140);
    let record: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("bbaf2n.json")).unwrap()).unwrap();
    assert_eq!(record["per_frame"].as_array().unwrap().len(), 75);
    assert_eq!(record["quality"]["face_share"], 1.0);
}

#[test]
fn two_clips_with_one_name_are_refused() {
    let out = crops_cmd()
        .arg("--out")
        .arg(tempfile::tempdir().unwrap().path())
        .arg(grid_clip("bbaf2n.mp4"))
        .arg(shared().join("data/grid/speakers/bbaf2n.mpg"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("would both write bbaf2n.npy"));
}

/// The crop of frame 37 of bbaf2n is pinned: a change to decoding, the
/// detector's decoding, the box geometry or the resampling shows up here, so
/// the training and serving crops cannot drift apart unnoticed.
#[test]
fn crop_of_a_known_frame_matches_the_stored_one() {
    let out = tempfile::tempdir().unwrap();
    let status = crops_cmd()
        .args(["--detect-every", "1", "--pixel-format", "i420", "--out"])
        .arg(out.path())
        .arg(grid_clip("bbaf2n.mp4"))
        .status()
        .unwrap();
    assert!(status.success());
    let (_, data) = read_npy(&out.path().join("bbaf2n.npy"));
    let got = &data[37 * 46 * 140..38 * 46 * 140];
    let pgm = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bbaf2n-frame37-crop.pgm"),
    )
    .unwrap();
    let header = b"P5\n140 46\n255\n";
    assert_eq!(&pgm[..header.len()], header);
    let want = &pgm[header.len()..];
    let diffs: Vec<i32> = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let max = *diffs.iter().max().unwrap();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    assert!(
        max <= 3 && mean <= 0.5,
        "crop drifted: max diff {max}, mean {mean:.3}"
    );
}

/// By default crops are cut from JPEG frames at the quality ingest
/// publishes (what serving sees), the format is recorded, and the crops
/// differ from raw frames' by JPEG's noise alone.
#[test]
fn training_crops_are_cut_from_the_frames_serving_sees() {
    let dir = tempfile::tempdir().unwrap();
    let (jpeg, raw) = (dir.path().join("jpeg"), dir.path().join("raw"));
    for (out, format) in [(&jpeg, None), (&raw, Some("i420"))] {
        let mut cmd = crops_cmd();
        if let Some(f) = format {
            cmd.args(["--pixel-format", f]);
        }
        let status = cmd
            .arg("--out")
            .arg(out)
            .arg(grid_clip("bbaf2n.mp4"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let report = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
    };
    assert_eq!(report(&jpeg)["frame_format"], "jpeg q95");
    assert_eq!(report(&raw)["frame_format"], "i420");
    let clip: serde_json::Value =
        serde_json::from_slice(&std::fs::read(jpeg.join("bbaf2n.json")).unwrap()).unwrap();
    assert_eq!(clip["frame_format"], "jpeg q95");
    let (shape_j, a) = read_npy(&jpeg.join("bbaf2n.npy"));
    let (shape_r, b) = read_npy(&raw.join("bbaf2n.npy"));
    assert_eq!(shape_j, shape_r);
    assert_ne!(a, b, "the default must not be raw frames");
    let mean = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (x as i32 - y as i32).abs() as f64)
        .sum::<f64>()
        / a.len() as f64;
    assert!(
        mean < 3.0,
        "JPEG crops differ from raw by {mean:.2} on average"
    );
}

#[test]
fn preview_draws_a_contact_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("sheet.png");
    let status = crops_cmd()
        .arg("--preview")
        .arg(&png)
        .arg(grid_clip("bbaf2n.mp4"))
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!(
        (w, h),
        (724, 296 + 3 * 50 + 4),
        "frame on top, three rows of five crops"
    );
}

#[test]
fn a_missing_face_model_is_a_clear_error() {
    let out = crops_cmd()
        .env("MOUTHMAP_FACE_MODEL", "/nonexistent/yunet.onnx")
        .arg("--out")
        .arg(std::env::temp_dir())
        .arg(grid_clip("bbaf2n.mp4"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot load the face model /nonexistent/yunet.onnx: no such file"),
        "{stderr}"
    );
}

/// Detection near the last face (`--detect-region 0.5`) finds the face the
/// whole frame gives: landmarks within 1.5 pixels, 0.4 on average, on every
/// 5th frame of three clips (a region off YuNet's 32-pixel grid moved them
/// by up to 2.4 pixels, which cost 3 points of streaming word error).
#[test]
fn a_face_found_near_the_last_one_has_the_whole_frames_landmarks() {
    use mouthmap_preprocessor::detector::{Detector, DetectorSettings, Region};
    let mut detector = Detector::load(&face_model(), DetectorSettings::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut compared, mut sum, mut worst) = (0, 0.0f32, 0.0f32);
    for clip in ["bbaf2n", "lgbf8n", "bras6n"] {
        let raw = dir.path().join(format!("{clip}.yuv"));
        let ok = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(grid_clip(&format!("{clip}.mp4")))
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p"])
            .arg(&raw)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg decodes {clip}");
        let bytes = std::fs::read(&raw).unwrap();
        let (w, h) = (360, 288);
        let size = w * h * 3 / 2;
        for (i, frame) in bytes.chunks_exact(size).enumerate().step_by(5) {
            let full = detector.detect_i420(frame, w, h).unwrap();
            let Some(face) = full.first() else { continue };
            let region = Region::around(face, 0.5, w, h).expect("a region smaller than the frame");
            let near = detector.detect_i420_in(frame, w, h, Some(region)).unwrap();
            let got = near
                .first()
                .unwrap_or_else(|| panic!("{clip} frame {i}: no face in {region:?}"));
            for (a, b) in face.landmarks.iter().zip(&got.landmarks) {
                let d = a.dist(*b);
                assert!(d < 1.5, "{clip} frame {i}: {a:?} vs {b:?} in {region:?}");
                (sum, worst) = (sum + d, worst.max(d));
            }
            compared += 1;
        }
    }
    let mean = sum / (5 * compared) as f32;
    println!("{compared} frames: landmarks {mean:.3} px apart on average, {worst:.3} at most");
    assert!(compared > 30, "{compared} frames compared");
    assert!(mean < 0.4, "landmarks {mean} px apart on average");
}

/// The default crop: the detector on each 6-frame chunk's last frame, the
/// boxes between interpolated. The mouth corners stay inside the box on
/// every frame, the detector runs on about a sixth of them, and each box
/// between two detections lies on the line between theirs.
#[test]
fn interpolated_boxes_run_the_detector_on_a_sixth_of_the_frames_and_keep_the_mouth_inside() {
    // The 12 speaker clips and 10 of speaker 1 (none named like a speaker clip).
    let mut clips_used = clips("data/grid/speakers", "mpg");
    clips_used.extend(clips("data/grid/s1", "mp4").into_iter().skip(7).step_by(90));
    let out = tempfile::tempdir().unwrap();
    let status = crops_cmd()
        .args(["--detect-every", "6", "--boxes-between", "interpolate"])
        .args(["--check", "--out"])
        .arg(out.path())
        .args(&clips_used)
        .status()
        .unwrap();
    assert!(status.success());
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        report["corners_inside"], report["corners_checked"],
        "{report}"
    );
    // Chunks of six frames (75 frames: 13 chunks), the detector on each
    // one's last frame (and on every frame of a chunk where a face was lost
    // or found again).
    let (frames, detected) = (
        report["frames"].as_u64().unwrap(),
        report["detector_frames"].as_u64().unwrap(),
    );
    assert!(
        detected * 100 <= frames * 26 && detected * 100 >= frames * 15,
        "detector on {detected} of {frames} frames"
    );
    // Each box between two detections lies on the line between their boxes.
    let mut between = 0;
    for clip in &clips_used {
        let name = clip.file_stem().unwrap().to_string_lossy();
        let record: Value = serde_json::from_slice(
            &std::fs::read(out.path().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let frames = record["per_frame"].as_array().unwrap();
        let anchors: Vec<usize> = (0..frames.len())
            .filter(|&i| frames[i]["detected"].as_bool().unwrap())
            .collect();
        for pair in anchors.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b - a < 2 || !frames[a]["face_found"].as_bool().unwrap() {
                continue;
            }
            let cx = |i: usize| frames[i]["mouth_box"]["cx"].as_f64().unwrap();
            for i in a + 1..b {
                let t = (i - a) as f64 / (b - a) as f64;
                let want = cx(a) + t * (cx(b) - cx(a));
                assert!(
                    (cx(i) - want).abs() < 1e-3,
                    "{name} frame {i}: box centre {} off the line {want}",
                    cx(i)
                );
                between += 1;
            }
        }
    }
    assert!(
        between as u64 * 100 >= frames * 60,
        "{between} boxes interpolated"
    );
}
