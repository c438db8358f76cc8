//! The committed reference model: intact, meets the contract through the Rust
//! inferencer, and reads a validation clip (one it never trained on).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use mouthmap_inferencer::model::{Device, Model};

fn model_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mouthmap-lipnet-grid-s1.onnx")
}

#[test]
fn committed_model_matches_its_checksum_and_the_contract() {
    let path = model_path();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let want = std::fs::read_to_string(path.with_extension("onnx.sha256")).unwrap();
    assert_eq!(
        got,
        want.split_whitespace().next().unwrap(),
        "model file differs from its checksum"
    );

    let m = Model::load(&path, Device::Cpu, 1).unwrap();
    let i = m.info();
    assert_eq!(
        (i.name.as_str(), i.version.as_str()),
        ("mouthmap-lipnet-grid-s1", "1.0.0")
    );
    assert_eq!((i.frames, i.height, i.width, i.fps), (75, 46, 140, 25));
    assert_eq!(i.classes(), 28);
    assert_eq!(i.vocabulary[i.blank], "<blank>");
    assert_eq!(i.vocabulary[0], " ");
}

#[test]
fn reads_a_validation_clip() {
    let split: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("model/split.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        split["validation"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "bbie8n"),
        "bbie8n is a validation clip"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mouthmap"))
        .env(
            "MOUTHMAP_FACE_MODEL",
            shared().join("models/yunet/face_detection_yunet_2026may.onnx"),
        )
        .args(["transcribe", "--grammar", "grid", "--model"])
        .arg(model_path())
        .arg(grid_clip("bbie8n.mp4"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("final: bin blue in e eight now"),
        "{stdout}"
    );
}
