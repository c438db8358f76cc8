//! A lip-reading model that meets MouthMap's contract, loaded through ONNX Runtime.
//!
//! The contract (LipNet family): one float32 input `[batch, T, H, W, 1]` of
//! normalised grayscale mouth crops, one float32 output `[batch, T, classes]`
//! of CTC probabilities. Everything else a server needs is in the model's
//! metadata: `vocabulary` (JSON list of class strings in index order),
//! `blank_index`, `normalization` (JSON `{"mean", "std"}`: `(pixel/255 - mean)
//! / std`, or `{"scale", "offset"}`: `pixel * scale + offset`), and optionally
//! `frames_per_window`, `frame_height`, `frame_width`, `fps`, `model_name`,
//! `model_version`, `output` (`probabilities`, the default, or `logits`, then
//! a softmax is applied).

use std::path::{Path, PathBuf};

pub use mouthmap_onnx::Device;
use mouthmap_onnx::{OnnxError, SessionSettings, load_session};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};
use serde::Deserialize;

use crate::split::FrontBack;

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load the model {0}")]
    Load(#[from] OnnxError),
    /// Every part of the contract the model breaks, each in its own words.
    #[error("the model {path} breaks the MouthMap contract: {}", problems.join("; "))]
    Contract {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("inference failed: {0}")]
    Run(String),
}

/// What the metadata says (and the shapes confirm).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub vocabulary: Vec<String>,
    pub blank: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub fps: u32,
    /// pixel (0..255) -> model input: `pixel * scale + offset`.
    pub scale: f32,
    pub offset: f32,
    pub outputs_logits: bool,
}

impl ModelInfo {
    pub fn classes(&self) -> usize {
        self.vocabulary.len()
    }
}

#[derive(Deserialize)]
struct Normalization {
    mean: Option<f32>,
    std: Option<f32>,
    scale: Option<f32>,
    offset: Option<f32>,
}

/// A graph input or output: its name and declared shape (-1: dynamic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
}

/// What a model file declares, beyond [`ModelInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub input: Tensor,
    pub output: Tensor,
    /// Every metadata entry, by key.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// A loaded model.
pub struct Model {
    session: Session,
    info: ModelInfo,
    input: String,
    path: PathBuf,
    scratch: Vec<f32>,
    /// The model's front end and back end, when its folder has them.
    split: Option<FrontBack>,
}

fn dims(vt: &ort::value::ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    Some((
        vt.tensor_type()?,
        vt.tensor_shape()?.iter().copied().collect(),
    ))
}

impl Model {
    /// Loads and checks a model. `threads` are ONNX Runtime intra-op threads.
    pub fn load(path: &Path, device: Device, threads: usize) -> Result<Self, ModelError> {
        let settings = SessionSettings { threads, device };
        let session = load_session(path, settings)?;
        let info = check_contract(&session, path)?;
        let input = session.inputs()[0].name().to_string();
        let split = FrontBack::load_beside(path, &info, settings)?;
        let mut model = Self {
            session,
            info,
            input,
            path: path.to_path_buf(),
            scratch: Vec::new(),
            split,
        };
        // A trial run on one window of zeros: a model whose declared shapes
        // pass but whose graph fails when it runs is refused here, not on
        // the first stream.
        let window = model.info.frames * model.info.height * model.info.width;
        if let Err(e) = model.run(&vec![0u8; window], 1) {
            return Err(ModelError::Contract {
                path: path.to_path_buf(),
                problems: vec![format!("a trial run on one window of zeros failed: {e}")],
            });
        }
        if model.split.is_some() {
            model.check_split()?;
        }
        Ok(model)
    }

    /// The front end and back end must be this model: back(front(window))
    /// equals the single graph's output on a trial window with a pattern.
    fn check_split(&mut self) -> Result<(), ModelError> {
        let px = self.info.height * self.info.width;
        let window: Vec<u8> = (0..self.info.frames * px)
            .map(|i| ((i % px) * 7 + (i / px) * 13) as u8)
            .collect();
        let whole = self.run(&window, 1)?;
        let features = self.frame_features(&window)?;
        let parts = self.run_features(&features, 1)?;
        let worst = whole
            .iter()
            .zip(&parts)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if whole.len() != parts.len() || worst > 1e-4 {
            return Err(ModelError::Contract {
                path: self.path.clone(),
                problems: vec![format!(
                    "front.onnx and back.onnx beside it do not compute what it computes (largest difference {worst:e} on a trial window): cut them again from this model (model/mouthmap_model/split.py) or remove them"
                )],
            });
        }
        Ok(())
    }

    /// The front end and back end, when the model has them: the stage then
    /// computes each frame once (see [`crate::split`]).
    pub fn front_back(&self) -> Option<&FrontBack> {
        self.split.as_ref()
    }

    /// The front end over consecutive crops of one stream (`n * height *
    /// width` bytes, 0..255): `n * feature_size` features.
    pub fn frame_features(&mut self, crops: &[u8]) -> Result<Vec<f32>, ModelError> {
        let px = self.info.height * self.info.width;
        let n = crops.len() / px.max(1);
        self.normalise(crops);
        let Some(split) = self.split.as_mut() else {
            return Err(ModelError::Run(
                "the model has no front end of its own (no front.onnx beside it)".into(),
            ));
        };
        split.front(&self.scratch, n)
    }

    /// The back end over `batch` windows of features: probabilities, as
    /// [`Model::run`] gives them for the same windows' crops.
    pub fn run_features(&mut self, features: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let Some(split) = self.split.as_mut() else {
            return Err(ModelError::Run(
                "the model has no back end of its own (no back.onnx beside it)".into(),
            ));
        };
        let data = split.back(features, batch)?;
        self.probabilities(data, batch)
    }

    fn normalise(&mut self, crops: &[u8]) {
        let (scale, offset) = (self.info.scale, self.info.offset);
        self.scratch.clear();
        self.scratch
            .extend(crops.iter().map(|&p| p as f32 * scale + offset));
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The graph's input and output as declared (names, shapes with -1 for
    /// a dynamic axis) and every metadata entry, for `mouthmap models show`
    /// and the Triton export.
    pub fn describe(&self) -> Description {
        let tensor = |name: &str, vt: &ort::value::ValueType| Tensor {
            name: name.to_string(),
            shape: dims(vt).map(|(_, s)| s).unwrap_or_default(),
        };
        let input = &self.session.inputs()[0];
        let output = &self.session.outputs()[0];
        let mut metadata = std::collections::BTreeMap::new();
        if let Ok(meta) = self.session.metadata() {
            for key in meta.custom_keys().unwrap_or_default() {
                if let Some(value) = meta.custom(&key) {
                    metadata.insert(key, value);
                }
            }
        }
        Description {
            input: tensor(input.name(), input.dtype()),
            output: tensor(output.name(), output.dtype()),
            metadata,
        }
    }

    /// Runs `batch` windows of crops (`batch * frames * height * width`
    /// bytes, 0..255) and returns `batch * frames * classes` probabilities.
    pub fn run(&mut self, crops: &[u8], batch: usize) -> Result<Vec<f32>, ModelError> {
        let (frames, height, width, classes) = (
            self.info.frames,
            self.info.height,
            self.info.width,
            self.info.classes(),
        );
        let per = frames * height * width;
        if crops.len() != batch * per {
            return Err(ModelError::Run(format!(
                "{} bytes for {batch} windows of {per}",
                crops.len()
            )));
        }
        let shape = [batch, frames, height, width, 1];
        self.normalise(crops);
        let tensor = TensorRef::from_array_view((shape, &self.scratch[..]))
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let (out_shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let want = [batch as i64, frames as i64, classes as i64];
        if out_shape.iter().copied().collect::<Vec<_>>() != want {
            return Err(ModelError::Run(format!(
                "output shape {out_shape:?}, expected {want:?}"
            )));
        }
        let probs = data.to_vec();
        drop(outputs);
        self.probabilities(probs, batch)
    }

    /// The model's output as probabilities (a softmax when it gives logits),
    /// checked for its size.
    fn probabilities(&self, mut probs: Vec<f32>, batch: usize) -> Result<Vec<f32>, ModelError> {
        let want = batch * self.info.frames * self.info.classes();
        if probs.len() != want {
            return Err(ModelError::Run(format!(
                "{} output values, expected {want} ({batch} windows of {} frames of {} classes)",
                probs.len(),
                self.info.frames,
                self.info.classes()
            )));
        }
        if self.info.outputs_logits {
            for row in probs.chunks_mut(self.info.classes()) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row
                    .iter_mut()
                    .map(|v| {
                        *v = (*v - m).exp();
                        *v
                    })
                    .sum();
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
        Ok(probs)
    }
}

/// Checks a loaded session against the contract, and names every part
/// that breaks it (not just the first), so one run of `mouthmap models
/// validate` shows all that a model's exporter has to fix.
fn check_contract(session: &Session, path: &Path) -> Result<ModelInfo, ModelError> {
    let mut problems: Vec<String> = Vec::new();
    let fail = |problems: Vec<String>| ModelError::Contract {
        path: path.to_path_buf(),
        problems,
    };
    if session.inputs().len() != 1 || session.outputs().is_empty() {
        problems.push(format!(
            "it has {} inputs and {} outputs; one input [batch, frames, height, width, 1] and one output [batch, frames, classes] are expected",
            session.inputs().len(),
            session.outputs().len()
        ));
    }
    let input = session.inputs().first().and_then(|i| dims(i.dtype()));
    let output = session.outputs().first().and_then(|o| dims(o.dtype()));
    let mut ishape = vec![-1i64; 5];
    match input {
        None => problems.push("the input is not a tensor".into()),
        Some((ty, shape)) => {
            if ty != TensorElementType::Float32 {
                problems.push(format!("the input is {ty:?}, not float32"));
            }
            if shape.len() != 5 || (shape[4] != 1 && shape[4] != -1) {
                problems.push(format!(
                    "the input shape is {shape:?}, not [batch, frames, height, width, 1]"
                ));
            } else {
                ishape = shape;
            }
        }
    }
    let mut oshape = vec![-1i64; 3];
    match output {
        None => problems.push("the output is not a tensor".into()),
        Some((ty, shape)) => {
            if ty != TensorElementType::Float32 {
                problems.push(format!("the output is {ty:?}, not float32"));
            }
            if shape.len() != 3 {
                problems.push(format!(
                    "the output shape is {shape:?}, not [batch, frames, classes]"
                ));
            } else {
                oshape = shape;
            }
        }
    }
    let meta = session.metadata().map_err(|e| fail(vec![e.to_string()]))?;
    let get = |k: &str| meta.custom(k);
    let vocabulary: Option<Vec<String>> = match get("vocabulary") {
        None => {
            problems.push(
                "metadata has no `vocabulary` (a JSON list of the classes in index order)".into(),
            );
            None
        }
        Some(text) => match serde_json::from_str(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(format!(
                    "metadata `vocabulary` is not a JSON list of strings: {e}"
                ));
                None
            }
        },
    };
    let blank: Option<usize> = match get("blank_index").map(|b| b.trim().parse::<usize>()) {
        None => {
            problems.push("metadata has no `blank_index`".into());
            None
        }
        Some(Err(e)) => {
            problems.push(format!("metadata `blank_index` is not a number: {e}"));
            None
        }
        Some(Ok(b)) => Some(b),
    };
    if let (Some(v), Some(b)) = (&vocabulary, blank)
        && b >= v.len()
    {
        problems.push(format!(
            "blank_index {b} is outside the {}-class vocabulary",
            v.len()
        ));
    }
    if let Some(v) = &vocabulary
        && oshape[2] != -1
        && oshape[2] as usize != v.len()
    {
        problems.push(format!(
            "the output has {} classes but the vocabulary {}",
            oshape[2],
            v.len()
        ));
    }
    let norm = match get("normalization").map(|t| serde_json::from_str::<Normalization>(&t)) {
        None => {
            problems.push("metadata has no `normalization`".into());
            None
        }
        Some(Err(e)) => {
            problems.push(format!("metadata `normalization` is not JSON: {e}"));
            None
        }
        Some(Ok(n)) => match n {
            Normalization {
                mean: Some(m),
                std: Some(s),
                ..
            } if s > 0.0 => Some((1.0 / (255.0 * s), -m / s)),
            Normalization {
                scale: Some(sc),
                offset,
                ..
            } => Some((sc, offset.unwrap_or(0.0))),
            _ => {
                problems.push(
                    "metadata `normalization` needs {\"mean\", \"std\"} or {\"scale\", \"offset\"}"
                        .into(),
                );
                None
            }
        },
    };
    let mut dim = |key: &str, shape_value: i64, default: usize| -> usize {
        let from_meta = get(key).map(|v| v.trim().parse::<usize>());
        match (from_meta, shape_value) {
            (Some(Err(e)), _) => {
                problems.push(format!("metadata `{key}`: {e}"));
                default
            }
            (Some(Ok(m)), s) if s > 0 && s as usize != m => {
                problems.push(format!(
                    "metadata says {key} = {m} but the input shape says {s}"
                ));
                m
            }
            (Some(Ok(m)), _) => m,
            (None, s) if s > 0 => s as usize,
            (None, _) => default,
        }
    };
    let frames = dim("frames_per_window", ishape[1], 75);
    let height = dim("frame_height", ishape[2], 46);
    let width = dim("frame_width", ishape[3], 140);
    if oshape[1] > 0 && oshape[1] as usize != frames {
        problems.push(format!(
            "the output has {} frames per window, the input {frames}",
            oshape[1]
        ));
    }
    let fps = get("fps").and_then(|v| v.trim().parse().ok()).unwrap_or(25);
    if fps != 25 {
        problems.push(format!(
            "the model was trained at {fps} fps; MouthMap streams are 25 fps"
        ));
    }
    let (Some(vocabulary), Some(blank), Some((scale, offset)), true) =
        (vocabulary, blank, norm, problems.is_empty())
    else {
        return Err(fail(problems));
    };
    Ok(ModelInfo {
        name: get("model_name").unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        version: get("model_version").unwrap_or_else(|| "unknown".into()),
        vocabulary,
        blank,
        frames,
        height,
        width,
        fps,
        scale,
        offset,
        outputs_logits: get("output").is_some_and(|o| o.trim() == "logits"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/models")
            .join(name)
    }

    #[test]
    fn reads_the_contract_from_shapes_and_metadata() {
        let m = Model::load(&fixture("tiny-contract.onnx"), Device::Cpu, 1).unwrap();
        let i = m.info();
        assert_eq!(
            (i.frames, i.height, i.width, i.classes(), i.blank),
            (75, 46, 140, 28, 27)
        );
        assert_eq!(i.vocabulary[1], "a");
        assert_eq!(
            (i.name.as_str(), i.version.as_str()),
            ("tiny-contract", "0.0.1")
        );
        assert!((i.scale - 1.0 / 255.0).abs() < 1e-9 && i.offset == 0.0);
    }

    #[test]
    fn refuses_models_that_break_the_contract_and_says_which_part() {
        for (name, part) in [
            ("tiny-no-vocabulary.onnx", "no `vocabulary`"),
            (
                "tiny-four-dim-input.onnx",
                "not [batch, frames, height, width, 1]",
            ),
            (
                "tiny-vocabulary-mismatch.onnx",
                "the output has 28 classes but the vocabulary 3",
            ),
            ("tiny-bad-blank.onnx", "blank_index 99 is outside"),
        ] {
            let err = Model::load(&fixture(name), Device::Cpu, 1)
                .err()
                .expect(name)
                .to_string();
            assert!(
                err.contains("breaks the MouthMap contract") && err.contains(part),
                "{name}: {err}"
            );
        }
        let err = Model::load(&fixture("nope.onnx"), Device::Cpu, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
    }

    #[test]
    fn names_every_broken_part_not_just_the_first() {
        let err = Model::load(&fixture("tiny-many-problems.onnx"), Device::Cpu, 1)
            .err()
            .expect("refused")
            .to_string();
        for part in [
            "blank_index 99 is outside",
            "no `normalization`",
            "trained at 30 fps",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }

    #[test]
    fn a_model_that_fails_when_it_runs_is_refused_at_load() {
        let err = Model::load(&fixture("tiny-fails-at-run.onnx"), Device::Cpu, 1)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("breaks the MouthMap contract")
                && err.contains("a trial run on one window of zeros failed"),
            "{err}"
        );
    }

    #[test]
    fn runs_a_batch_and_returns_probabilities() {
        let mut m = Model::load(&fixture("tiny-contract.onnx"), Device::Cpu, 1).unwrap();
        let per = 75 * 46 * 140;
        let mut crops = vec![0u8; 2 * per];
        // Window 1, every frame: column band 5 bright.
        for f in 0..75 {
            for y in 0..46 {
                for x in 25..30 {
                    crops[per + f * 46 * 140 + y * 140 + x] = 255;
                }
            }
        }
        let probs = m.run(&crops, 2).unwrap();
        assert_eq!(probs.len(), 2 * 75 * 28);
        let row = &probs[75 * 28..75 * 28 + 28];
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(best, 5);
        assert!(m.run(&crops[..10], 1).is_err());
    }

    #[test]
    fn a_front_end_and_back_end_that_are_not_the_model_beside_them_are_refused() {
        let reference =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mouthmap-lipnet-grid-s1/2");
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::copy(fixture("tiny-contract.onnx"), &model).unwrap();
        // One part alone.
        std::fs::copy(reference.join("front.onnx"), dir.path().join("front.onnx")).unwrap();
        let err = Model::load(&model, Device::Cpu, 1)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("front.onnx and back.onnx go together"),
            "{err}"
        );
        // Both, cut from another model.
        std::fs::copy(reference.join("back.onnx"), dir.path().join("back.onnx")).unwrap();
        let err = Model::load(&model, Device::Cpu, 1)
            .err()
            .expect("refused")
            .to_string();
        // The reference back.onnx reads its weights from its own model.onnx
        // (ONNX external data): beside another model it does not load, and
        // says so.
        assert!(
            err.contains("only loads beside the model it was cut from"),
            "{err}"
        );
        // Parts of another version of the model, beside a model they can
        // read their bytes from: refused by name and version.
        let fp32 = dir.path().join("fp32");
        std::fs::create_dir(&fp32).unwrap();
        std::fs::copy(reference.join("model.onnx"), fp32.join("model.onnx")).unwrap();
        std::fs::copy(reference.join("front.onnx"), fp32.join("front.onnx")).unwrap();
        let int8 = reference.join("../../mouthmap-lipnet-grid-s1-int8/2");
        std::fs::copy(int8.join("back.onnx"), fp32.join("back.onnx")).unwrap();
        let err = Model::load(&fp32.join("model.onnx"), Device::Cpu, 1)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("but model.onnx beside it is mouthmap-lipnet-grid-s1 1.1.0"),
            "{err}"
        );
        // Without them the model is served as one graph.
        std::fs::remove_file(dir.path().join("front.onnx")).unwrap();
        std::fs::remove_file(dir.path().join("back.onnx")).unwrap();
        assert!(
            Model::load(&model, Device::Cpu, 1)
                .unwrap()
                .front_back()
                .is_none()
        );
        // The reference model's own parts load.
        let m = Model::load(&reference.join("model.onnx"), Device::Cpu, 1).unwrap();
        let fb = m.front_back().expect("the reference model has its parts");
        assert_eq!((fb.context(), fb.feature_size()), (3, 1024));
    }
}
