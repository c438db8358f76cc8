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

/// Path of the committed reference model, relative to the repository.
pub const DEFAULT_MODEL: &str = "models/mouthmap-lipnet-grid-s1.onnx";

/// The default model: [`DEFAULT_MODEL`] in the working directory or beside
/// an ancestor of the executable (the repository), else the relative path
/// (whose absence the loader then reports).
pub fn default_model() -> std::path::PathBuf {
    let rel = std::path::Path::new(DEFAULT_MODEL);
    find_in_checkout(rel).unwrap_or_else(|| rel.to_path_buf())
}
