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

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load the model {0}")]
    Load(#[from] OnnxError),
    #[error("the model {path} breaks the MouthMap contract: {reason}")]
    Contract { path: PathBuf, reason: String },
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

/// A loaded model.
pub struct Model {
    session: Session,
    info: ModelInfo,
    input: String,
    path: PathBuf,
    scratch: Vec<f32>,
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
        let session = load_session(path, SessionSettings { threads, device })?;
        let info = check_contract(&session, path)?;
        let input = session.inputs()[0].name().to_string();
        Ok(Self {
            session,
            info,
            input,
            path: path.to_path_buf(),
            scratch: Vec::new(),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `batch` windows of crops (`batch * frames * height * width`
    /// bytes, 0..255) and returns `batch * frames * classes` probabilities.
    pub fn run(&mut self, crops: &[u8], batch: usize) -> Result<Vec<f32>, ModelError> {
        let i = &self.info;
        let per = i.frames * i.height * i.width;
        if crops.len() != batch * per {
            return Err(ModelError::Run(format!(
                "{} bytes for {batch} windows of {per}",
                crops.len()
            )));
        }
        self.scratch.clear();
        self.scratch
            .extend(crops.iter().map(|&p| p as f32 * i.scale + i.offset));
        let shape = [batch, i.frames, i.height, i.width, 1];
        let tensor = TensorRef::from_array_view((shape, &self.scratch[..]))
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let (out_shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let want = [batch as i64, i.frames as i64, i.classes() as i64];
        if out_shape.iter().copied().collect::<Vec<_>>() != want {
            return Err(ModelError::Run(format!(
                "output shape {out_shape:?}, expected {want:?}"
            )));
        }
        let mut probs = data.to_vec();
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

fn check_contract(session: &Session, path: &Path) -> Result<ModelInfo, ModelError> {
    let bad = |reason: String| ModelError::Contract {
        path: path.to_path_buf(),
        reason,
    };
    if session.inputs().len() != 1 || session.outputs().is_empty() {
        return Err(bad(format!(
            "it has {} inputs and {} outputs; one input [batch, frames, height, width, 1] and one output [batch, frames, classes] are expected",
            session.inputs().len(),
            session.outputs().len()
        )));
    }
    let (ity, ishape) =
        dims(session.inputs()[0].dtype()).ok_or_else(|| bad("the input is not a tensor".into()))?;
    if ity != TensorElementType::Float32 {
        return Err(bad(format!("the input is {ity:?}, not float32")));
    }
    if ishape.len() != 5 || (ishape[4] != 1 && ishape[4] != -1) {
        return Err(bad(format!(
            "the input shape is {ishape:?}, not [batch, frames, height, width, 1]"
        )));
    }
    let (oty, oshape) = dims(session.outputs()[0].dtype())
        .ok_or_else(|| bad("the output is not a tensor".into()))?;
    if oty != TensorElementType::Float32 {
        return Err(bad(format!("the output is {oty:?}, not float32")));
    }
    if oshape.len() != 3 {
        return Err(bad(format!(
            "the output shape is {oshape:?}, not [batch, frames, classes]"
        )));
    }
    let meta = session.metadata().map_err(|e| bad(e.to_string()))?;
    let get = |k: &str| meta.custom(k);
    let vocab_text = get("vocabulary").ok_or_else(|| {
        bad("metadata has no `vocabulary` (a JSON list of the classes in index order)".into())
    })?;
    let vocabulary: Vec<String> = serde_json::from_str(&vocab_text).map_err(|e| {
        bad(format!(
            "metadata `vocabulary` is not a JSON list of strings: {e}"
        ))
    })?;
    let blank: usize = get("blank_index")
        .ok_or_else(|| bad("metadata has no `blank_index`".into()))?
        .trim()
        .parse()
        .map_err(|e| bad(format!("metadata `blank_index` is not a number: {e}")))?;
    if blank >= vocabulary.len() {
        return Err(bad(format!(
            "blank_index {blank} is outside the {}-class vocabulary",
            vocabulary.len()
        )));
    }
    if oshape[2] != -1 && oshape[2] as usize != vocabulary.len() {
        return Err(bad(format!(
            "the output has {} classes but the vocabulary {}",
            oshape[2],
            vocabulary.len()
        )));
    }
    let norm_text =
        get("normalization").ok_or_else(|| bad("metadata has no `normalization`".into()))?;
    let norm: Normalization = serde_json::from_str(&norm_text)
        .map_err(|e| bad(format!("metadata `normalization` is not JSON: {e}")))?;
    let (scale, offset) = match norm {
        Normalization {
            mean: Some(m),
            std: Some(s),
            ..
        } if s > 0.0 => (1.0 / (255.0 * s), -m / s),
        Normalization {
            scale: Some(sc),
            offset,
            ..
        } => (sc, offset.unwrap_or(0.0)),
        _ => {
            return Err(bad(
                "metadata `normalization` needs {\"mean\", \"std\"} or {\"scale\", \"offset\"}"
                    .into(),
            ));
        }
    };
    let dim = |key: &str, shape_value: i64, default: usize| -> Result<usize, ModelError> {
        let from_meta = get(key)
            .map(|v| v.trim().parse::<usize>())
            .transpose()
            .map_err(|e| bad(format!("metadata `{key}`: {e}")))?;
        match (from_meta, shape_value) {
            (Some(m), s) if s > 0 && s as usize != m => Err(bad(format!(
                "metadata says {key} = {m} but the input shape says {s}"
            ))),
            (Some(m), _) => Ok(m),
            (None, s) if s > 0 => Ok(s as usize),
            (None, _) => Ok(default),
        }
    };
    let frames = dim("frames_per_window", ishape[1], 75)?;
    let height = dim("frame_height", ishape[2], 46)?;
    let width = dim("frame_width", ishape[3], 140)?;
    if oshape[1] > 0 && oshape[1] as usize != frames {
        return Err(bad(format!(
            "the output has {} frames per window, the input {frames}",
            oshape[1]
        )));
    }
    let fps = get("fps").and_then(|v| v.trim().parse().ok()).unwrap_or(25);
    if fps != 25 {
        return Err(bad(format!(
            "the model was trained at {fps} fps; MouthMap streams are 25 fps"
        )));
    }
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
}
