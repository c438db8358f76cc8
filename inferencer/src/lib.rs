//! MouthMap inferencer: sliding windows of mouth crops through a lip-reading
//! model, batched across streams.
//!
//! * [`model`]: loads a model through ONNX Runtime (CPU or CUDA) and checks
//!   it against the contract, reading vocabulary, blank and normalisation
//!   from its metadata; a model that breaks the contract is refused with the
//!   part it breaks.
//! * [`repository`]: a model repository in Triton's layout
//!   (`MODELS_DIR/NAME/VERSION/model.onnx`): versions listed and resolved.
//! * [`routing`]: which served version reads a stream (its `model` feature,
//!   else the model's canary route, else the live version), sticky per stream.
//! * [`split`]: a model that also comes as a front end and a back end
//!   (`front.onnx`, `back.onnx` beside `model.onnx`), so the stage computes
//!   each frame's front end once instead of once per window.
//! * [`stage`]: `mouths` events in, `logits` events out: per-stream buffers,
//!   75-frame windows every `hop` frames, an end-aligned last window, and a
//!   dynamic batcher (`max_batch`, `max_delay`). Free of transport.

pub mod model;
pub mod repository;
pub mod routing;
#[cfg(feature = "service")]
pub mod service;
pub mod split;
pub mod stage;
