//! Loading ONNX Runtime once per process.
//!
//! MouthMap loads `libonnxruntime.so` at run time (ort's `load-dynamic`), so
//! one binary runs with the CPU library or the CUDA one. The library is
//! looked for, in order: `ORT_DYLIB_PATH`; `.stack/onnxruntime/` (where
//! `scripts/install-deps` puts it) in the working directory or next to any
//! ancestor of the executable; then the system's library path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// ONNX Runtime could not be loaded.
#[derive(Debug, thiserror::Error, Clone)]
#[error(
    "cannot load ONNX Runtime from {path}: {reason} (run scripts/install-deps, or point ORT_DYLIB_PATH at libonnxruntime.so)"
)]
pub struct RuntimeError {
    pub path: String,
    pub reason: String,
}

/// `rel` in the working directory or beside any ancestor of the executable
/// (so a binary under `target/` finds the repository's files), if it exists.
pub fn find_in_checkout(rel: &Path) -> Option<PathBuf> {
    let mut candidates = vec![rel.to_path_buf()];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join(rel)));
    }
    candidates.into_iter().find(|c| c.exists())
}

/// Where the library will be loaded from.
pub fn library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    find_in_checkout(Path::new(".stack/onnxruntime/libonnxruntime.so"))
        .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"))
}

/// The process-wide ONNX Runtime environment.
pub fn environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    static ENV: OnceLock<Result<ort::environment::Environment, RuntimeError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path();
        let err = |reason: String| RuntimeError {
            path: path.display().to_string(),
            reason,
        };
        ort::init_from(&path)
            .map_err(|e| err(e.to_string()))?
            .with_name("mouthmap")
            .build()
            .map_err(|e| err(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}
