//! ONNX Runtime for MouthMap, in one place: the face detector (preprocessor)
//! and the lip-reading model (inferencer) both load through here.
//!
//! * [`runtime`]: finds and loads `libonnxruntime.so` once per process
//!   (ort's `load-dynamic`, so one binary runs the CPU or the CUDA library).
//! * [`session`]: one session builder: optimisation level, threads, and the
//!   execution provider ([`Device`]), with no silent fallback from CUDA.
//! * [`default_model`]: where the committed reference model is found.

pub mod runtime;
pub mod session;

pub use runtime::{RuntimeError, find_in_checkout};
pub use session::{Device, OnnxError, SessionSettings, load_session};

/// The model repository in the checkout (`NAME/VERSION/model.onnx`).
pub const MODELS_DIR: &str = "models";

/// The model served when none is named: the committed reference model.
pub const DEFAULT_MODEL_NAME: &str = "mouthmap-lipnet-grid-s1";

/// Path of the committed reference model's latest version, relative to the
/// repository.
pub const DEFAULT_MODEL: &str = "models/mouthmap-lipnet-grid-s1/4/model.onnx";

/// The model repository: [`MODELS_DIR`] in the working directory or beside
/// an ancestor of the executable (the checkout), else the relative path.
pub fn default_models_dir() -> std::path::PathBuf {
    let rel = std::path::Path::new(MODELS_DIR);
    find_in_checkout(rel).unwrap_or_else(|| rel.to_path_buf())
}

/// The default model: [`DEFAULT_MODEL`] in the working directory or beside
/// an ancestor of the executable (the repository), else the relative path
/// (whose absence the loader then reports).
pub fn default_model() -> std::path::PathBuf {
    let rel = std::path::Path::new(DEFAULT_MODEL);
    find_in_checkout(rel).unwrap_or_else(|| rel.to_path_buf())
}
