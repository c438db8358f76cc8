//! A model that also comes as two graphs, so each frame is computed once.
//!
//! A LipNet-family model is a front end (convolutions that read each frame
//! with a few neighbours: `context_frames` on each side) and a back end (a
//! recurrent network and classifier over a window of the front end's
//! per-frame features). Windows overlap (75 frames every 25: each frame is in
//! three), so a server that runs the whole graph per window computes each
//! frame's front end three times. A model version may carry, beside its
//! `model.onnx`, the two parts as `front.onnx` (frames `[batch, T, H, W, 1]`
//! -> features `[batch, T, F]`, any T) and `back.onnx` (features
//! `[batch, frames_per_window, F]` -> the contract's output); their metadata
//! says `graph: frames2d-front` / `frames2d-back` and `context_frames`
//! (`model/mouthmap_model/split.py` writes them). The stage then runs the
//! front end once per frame of a stream and the back end per window
//! (`stage.rs`).
//!
//! The pair is checked when it loads: the same name and version as the
//! single graph, and back(front(window)) equal to the single graph's output
//! on trial windows, so a pair that does not belong to its model is refused.

use std::path::Path;

use mouthmap_onnx::{OnnxError, SessionSettings, load_session};
use ort::session::Session;
use ort::value::TensorRef;

use crate::model::{ModelError, ModelInfo};

/// The two parts, loaded.
pub struct FrontBack {
    front: Session,
    back: Session,
    front_input: String,
    back_input: String,
    context: usize,
    features: usize,
    frames: usize,
    height: usize,
    width: usize,
}

fn run_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Run(e.to_string())
}

impl FrontBack {
    /// Loads `front.onnx` and `back.onnx` from the folder of `model`: None
    /// when neither is there (the model is served as one graph); an error
    /// naming the problem when only one is, or when they do not belong to
    /// the model (metadata, shapes).
    pub fn load_beside(
        model: &Path,
        info: &ModelInfo,
        settings: SessionSettings,
    ) -> Result<Option<Self>, ModelError> {
        let dir = model.parent().unwrap_or(Path::new("."));
        let (front_path, back_path) = (dir.join("front.onnx"), dir.join("back.onnx"));
        let refuse = |path: &Path, problem: String| ModelError::Contract {
            path: path.to_path_buf(),
            problems: vec![problem],
        };
        match (front_path.exists(), back_path.exists()) {
            (false, false) => return Ok(None),
            (true, false) | (false, true) => {
                return Err(refuse(
                    dir,
                    "front.onnx and back.onnx go together (a model computed once per frame needs both); remove the one left or add the other".into(),
                ));
            }
            (true, true) => {}
        }
        let front = load_session(&front_path, settings)?;
        let back = load_session(&back_path, settings).map_err(|e| match e {
            // A back.onnx cut beside its model reads the GRU's weights from
            // that model.onnx (ONNX external data, see split.py): beside any
            // other file it cannot load, and the runtime's words alone
            // ("offset out of bounds") do not say why.
            OnnxError::Load { reason, .. } => refuse(
                &back_path,
                format!(
                    "it does not load ({reason}); a back.onnx cut beside its model reads its weights from that model.onnx, so it only loads beside the model it was cut from: cut front.onnx and back.onnx again from this model (model/mouthmap_model/split.py) or remove them"
                ),
            ),
            other => other.into(),
        })?;
        let mut context = None;
        for (path, session, part) in [
            (&front_path, &front, "frames2d-front"),
            (&back_path, &back, "frames2d-back"),
        ] {
            let meta = session
                .metadata()
                .map_err(|e| refuse(path, e.to_string()))?;
            let get = |k: &str| meta.custom(k);
            if get("graph").as_deref() != Some(part) {
                return Err(refuse(
                    path,
                    format!(
                        "metadata `graph` is {:?}, not {part:?}",
                        get("graph").unwrap_or_default()
                    ),
                ));
            }
            let (name, version) = (
                get("model_name").unwrap_or_default(),
                get("model_version").unwrap_or_default(),
            );
            if (name.as_str(), version.as_str()) != (info.name.as_str(), info.version.as_str()) {
                return Err(refuse(
                    path,
                    format!(
                        "it is {name} {version}, but model.onnx beside it is {} {}: the parts must be cut from that model (model/mouthmap_model/split.py)",
                        info.name, info.version
                    ),
                ));
            }
            let c = get("context_frames")
                .and_then(|c| c.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    refuse(
                        path,
                        "metadata `context_frames` (frames of context on each side the front end reads) is missing or not a number".into(),
                    )
                })?;
            if context.is_some_and(|prev| prev != c) {
                return Err(refuse(
                    path,
                    "the two parts disagree on `context_frames`".into(),
                ));
            }
            context = Some(c);
            if session.inputs().len() != 1 || session.outputs().is_empty() {
                return Err(refuse(path, "one input and one output are expected".into()));
            }
        }
        let mut pair = Self {
            front_input: front.inputs()[0].name().to_string(),
            back_input: back.inputs()[0].name().to_string(),
            front,
            back,
            context: context.unwrap_or(0),
            features: 0,
            frames: info.frames,
            height: info.height,
            width: info.width,
        };
        // The feature size, from one frame through the front end.
        let one = pair
            .front(&vec![0.0; info.height * info.width], 1)
            .map_err(|e| refuse(&front_path, format!("a trial run on one frame failed: {e}")))?;
        pair.features = one.len();
        if pair.features == 0 {
            return Err(refuse(
                &front_path,
                "the front end gives no features".into(),
            ));
        }
        Ok(Some(pair))
    }

    /// Frames of context the front end reads on each side of a frame.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Features per frame.
    pub fn feature_size(&self) -> usize {
        self.features
    }

    /// The front end over `n` consecutive normalised frames of one stream
    /// (`n * height * width` values): `n * feature_size()` features. The
    /// graph pads the run's edges as it pads a window's.
    pub fn front(&mut self, frames: &[f32], n: usize) -> Result<Vec<f32>, ModelError> {
        let frame_px = self.height * self.width;
        if frames.len() != n * frame_px || n == 0 {
            return Err(ModelError::Run(format!(
                "{} values for {n} frames of {frame_px}",
                frames.len(),
            )));
        }
        let shape = [1, n, self.height, self.width, 1];
        let tensor = TensorRef::from_array_view((shape, frames)).map_err(run_err)?;
        let outputs = self
            .front
            .run(ort::inputs![self.front_input.as_str() => tensor])
            .map_err(run_err)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(run_err)?;
        if shape.len() != 3 || shape[0] != 1 || shape[1] as usize != n {
            return Err(ModelError::Run(format!(
                "front end output shape {shape:?} for {n} frames"
            )));
        }
        Ok(data.to_vec())
    }

    /// The back end over `batch` windows of features (`batch *
    /// frames_per_window * feature_size()` values): the model's output.
    pub fn back(&mut self, features: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let per = self.frames * self.features;
        if features.len() != batch * per {
            return Err(ModelError::Run(format!(
                "{} features for {batch} windows of {per}",
                features.len()
            )));
        }
        let shape = [batch, self.frames, self.features];
        let tensor = TensorRef::from_array_view((shape, features)).map_err(run_err)?;
        let outputs = self
            .back
            .run(ort::inputs![self.back_input.as_str() => tensor])
            .map_err(run_err)?;
        let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(run_err)?;
        Ok(data.to_vec())
    }
}
