//! One session builder for every model MouthMap runs.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::runtime::{self, RuntimeError};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

/// How a session is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Intra-op threads (at least 1).
    pub threads: usize,
    pub device: Device,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            threads: 1,
            device: Device::Cpu,
        }
    }
}

/// Why a session could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error(
        "CUDA was asked for but cannot be used: {0} (install the onnxruntime-gpu library and point ORT_DYLIB_PATH at it, or use --device cpu)"
    )]
    Cuda(String),
}

/// Loads the model at `path` into a session: full graph optimisation,
/// `settings.threads` intra-op threads that sleep when idle (no spinning), and CUDA when asked for (an error,
/// never a silent fallback to the CPU, when it cannot be used).
pub fn load_session(path: &Path, settings: SessionSettings) -> Result<Session, OnnxError> {
    let env = runtime::environment()?;
    let load = |reason: String| OnnxError::Load {
        path: path.to_path_buf(),
        reason,
    };
    if !path.exists() {
        return Err(OnnxError::Missing {
            path: path.to_path_buf(),
        });
    }
    let mut builder = Session::builder(env)
        .map_err(|e| load(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load(e.to_string()))?
        .with_intra_threads(settings.threads.max(1))
        .map_err(|e| load(e.to_string()))?
        // Idle pool threads sleep instead of spinning: on a box whose cores
        // the other stages share, a spinning pool burns a core between runs
        // (measured in docs/benchmarks.md).
        .with_intra_op_spinning(false)
        .map_err(|e| load(e.to_string()))?
        .with_inter_op_spinning(false)
        .map_err(|e| load(e.to_string()))?;
    if settings.device == Device::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| OnnxError::Cuda(e.to_string()))?;
    }
    let session = builder
        .commit_from_file(path)
        .map_err(|e| load(e.to_string()))?;
    tracing::debug!(path = %path.display(), threads = settings.threads, device = ?settings.device, "ONNX session ready");
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let err = load_session(
            Path::new("/nonexistent/model.onnx"),
            SessionSettings::default(),
        );
        // Without the runtime library the runtime error comes first; with
        // it, the missing file is named. Either names what to fix.
        let text = err.err().unwrap().to_string();
        assert!(
            text.contains("/nonexistent/model.onnx") || text.contains("ORT_DYLIB_PATH"),
            "{text}"
        );
    }
}
