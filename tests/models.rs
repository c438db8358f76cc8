//! The model repository through the `mouthmap models` command a user runs:
//! list, show, validate (every broken part named) and the Triton export,
//! parsed by Triton's own model-config protobuf.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::pipeline::model;
use common::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

fn models(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mouthmap"))
        .arg("models")
        .arg("--models-dir")
        .arg(repo)
        .args(args)
        .env_remove("MOUTHMAP_MODEL")
        .output()
        .expect("mouthmap runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `mouthmap transcribe --json` of a validation clip with `model` from `repo`.
fn transcribe(repo: &Path, model: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mouthmap"))
        .env("MOUTHMAP_FACE_MODEL", face_model())
        .args(["transcribe", "--json", "--models-dir"])
        .arg(repo)
        .args(["--model", model])
        .arg(grid_clip("bbie8n.mp4"))
        .output()
        .expect("mouthmap runs")
}

/// The last line `transcribe --json` printed, which must be the final.
fn final_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "final", "{stdout}");
    last
}

/// A repository of three versions of `lipnet` (the reference model, the
/// tiny contract model, a model breaking three parts of the contract) and
/// one stray file.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (version, file) in [
        ("1", model()),
        ("2", fixture("tiny-contract.onnx")),
        ("3", fixture("tiny-many-problems.onnx")),
    ] {
        let v = dir.path().join("lipnet").join(version);
        std::fs::create_dir_all(&v).unwrap();
        std::os::unix::fs::symlink(file, v.join("model.onnx")).unwrap();
    }
    std::fs::write(dir.path().join("stray.onnx"), b"x").unwrap();
    dir
}

#[test]
fn list_shows_every_version_checked_and_what_does_not_fit() {
    let repo = repository();
    let o = models(repo.path(), &["list"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let line = |spec: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(spec))
            .unwrap_or_else(|| panic!("{spec} listed: {out}"))
            .to_string()
    };
    assert!(line("lipnet:1 ").contains("1.0.0") && line("lipnet:1 ").ends_with("ok"));
    assert!(line("lipnet:2 ").contains("0.0.1"), "{out}");
    assert!(line("lipnet:3 ").contains("broken: "), "{out}");
    assert!(out.contains("stray.onnx (a model is a directory"), "{out}");
}

#[test]
fn validate_names_every_broken_part_and_fails() {
    let repo = repository();
    let o = models(repo.path(), &["validate"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("ok      lipnet:1: mouthmap-lipnet-grid-s1 1.0.0, 28 classes"),
        "{out}"
    );
    for part in [
        "- blank_index 99 is outside the 28-class vocabulary",
        "- metadata has no `normalization`",
        "- the model was trained at 30 fps",
    ] {
        assert!(out.contains(part), "{part}: {out}");
    }
    assert!(out.contains("1 of 3 models break the contract"), "{out}");

    // One good version, and a file by its path, pass.
    let o = models(repo.path(), &["validate", "lipnet:2"]);
    assert!(o.status.success(), "{}", text(&o));
    let path = fixture("tiny-contract.onnx");
    let o = models(repo.path(), &["validate", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // A name that is not there says what is.
    let o = models(repo.path(), &["validate", "lipnet:9"]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("versions: 1, 2, 3"),
        "{out}"
    );
}

#[test]
fn show_describes_a_version_and_the_checkout_serves_the_reference_model() {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let o = models(&checkout, &["show", "mouthmap-lipnet-grid-s1"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for part in [
        "mouthmap-lipnet-grid-s1:4",
        "model:         mouthmap-lipnet-grid-s1 4.0.0",
        "window:        75 frames of 140x46 at 25 fps",
        "28 classes, blank at 27",
        "front.onnx + back.onnx: each frame's front end computed once (3 frames of context each side, 1024 features a frame)",
        "card:          ",
        "MODEL_CARD.md",
        "manifest_sha256",
    ] {
        assert!(out.contains(part), "{part}: {out}");
    }
}

#[test]
fn a_triton_export_parses_with_tritons_own_model_config() {
    if !available(&[Need::Interop]) {
        return;
    }
    let repo = repository();
    let out = tempfile::tempdir().unwrap();
    let o = models(
        repo.path(),
        &[
            "export-triton",
            out.path().to_str().unwrap(),
            "lipnet:1",
            "--max-batch",
            "8",
            "--max-queue-delay",
            "5ms",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let config = out.path().join("lipnet/config.pbtxt");
    assert!(out.path().join("lipnet/1/model.onnx").is_file());
    let check = r#"
import json, sys
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
c = text_format.Parse(open(sys.argv[1]).read(), model_config_pb2.ModelConfig())
print(json.dumps({
    "name": c.name, "backend": c.backend, "max_batch_size": c.max_batch_size,
    "input": [[i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)] for i in c.input],
    "output": [[o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims)] for o in c.output],
    "delay_us": c.dynamic_batching.max_queue_delay_microseconds,
    "kind": model_config_pb2.ModelInstanceGroup.Kind.Name(c.instance_group[0].kind),
    "vocabulary": json.loads(c.parameters["vocabulary"].string_value),
}))
"#;
    let o = Command::new(interop_python())
        .args(["-c", check])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Triton's protobuf parses it: {}",
        text(&o)
    );
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["name"], "lipnet");
    assert_eq!(got["backend"], "onnxruntime");
    assert_eq!(got["max_batch_size"], 8);
    assert_eq!(got["input"][0][1], "TYPE_FP32");
    assert_eq!(got["input"][0][2], serde_json::json!([75, 46, 140, 1]));
    assert_eq!(got["output"][0][2], serde_json::json!([75, 28]));
    assert_eq!(got["delay_us"], 5000);
    assert_eq!(got["kind"], "KIND_CPU");
    assert_eq!(got["vocabulary"].as_array().map(Vec::len), Some(28));
}

/// `transcribe` (and `infer`, which shares the flags) serves a version
/// named in the repository, and a name that is not there says what is.
#[test]
fn transcribe_serves_a_named_version_from_the_repository() {
    let repo = repository();
    let run = |model: &str| transcribe(repo.path(), model);
    let last = final_of(&run("lipnet:1"));
    let words = last["text"].as_str().unwrap();
    assert!(
        common::pipeline::word_errors(words, "bin blue in e eight now") <= 1,
        "{words}"
    );
    let o = run("lipnet:3");
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("no `normalization`"),
        "{out}"
    );
    let o = run("nope");
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("no model named \"nope\"") && out.contains("lipnet"),
        "{out}"
    );
}

/// A Keras LipNet as users have them (input [75, 50, 100, 3] RGB, softmax
/// over a-z, space and the blank last), built with random weights, imported
/// by `model/mouthmap_model/keras_import.py` into a repository version:
/// ONNX Runtime matches Keras within 1e-4 (the importer checks it and
/// reports the difference), the contract check passes with the metadata the
/// importer wrote, and `transcribe` serves it from the repository.
#[test]
fn a_keras_lipnet_is_imported_matches_keras_and_is_served() {
    if !available(&[Need::Interop]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("lipnet.h5");
    let repo = dir.path().join("models");
    let python = |module: &str, args: &[&std::ffi::OsStr]| {
        let o = Command::new(interop_python())
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("model"))
            .args(["-m", module])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{module}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    python(
        "mouthmap_model.keras_lipnet",
        &["--small".as_ref(), "--out".as_ref(), h5.as_os_str()],
    );
    let out = repo.join("keras-lipnet/1/model.onnx");
    let report = python(
        "mouthmap_model.keras_import",
        &[
            h5.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--mean".as_ref(),
            "0.5".as_ref(),
            "--std".as_ref(),
            "0.25".as_ref(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(report.lines().last().unwrap()).unwrap();
    let diff = report["max_abs_diff"].as_f64().unwrap();
    assert!(diff <= 1e-4, "ONNX Runtime vs Keras: {diff}");
    assert_eq!(report["input"], serde_json::json!([75, 50, 100, 3]));

    let o = models(&repo, &["validate"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = models(&repo, &["show", "keras-lipnet"]);
    let shown = text(&o);
    for part in [
        "blank at 27",
        r#"["a","b","c""#,
        r#"" ","<blank>"]"#,
        "imported_from",
        "input = pixel * 0.015686",
    ] {
        assert!(shown.contains(part), "{part}: {shown}");
    }
    let last = final_of(&transcribe(&repo, "keras-lipnet"));
    assert_eq!(
        (last["model"].as_str(), last["model_version"].as_str()),
        (Some("keras-lipnet"), Some("1.0.0")),
        "{last}"
    );
}
