//! MouthMap preprocessor: finds the speaker's face and crops the mouth.
//!
//! From the pixels inwards:
//!
//! * [`detector`]: YuNet through `ort` (sessions from `mouthmap-onnx`): BGR input, decoding of the three
//!   strides, score threshold, non-maximum suppression.
//! * [`geometry`]: the mouth box from the landmarks: centred between the mouth
//!   corners, sized by the eye distance, rotated upright by the eye line.
//! * [`crop`]: area-filtered, rotation-aware resampling to the model's input
//!   size, and per-crop brightness and sharpness.
//! * [`jpeg`]: JPEG frames (ingest `--pixel-format jpeg`) back to I420.
//! * [`tracker`]: one stream's state: detector every N frames with a cheap
//!   change check between, smoothing, held boxes over short gaps, the
//!   `no_face` flag after long ones.
//! * [`stage`]: `frames` events in, `mouths` events out, a tracker per
//!   stream; free of transport, shared by the service and `mouthmap crops`.
//! * [`service`]: the Kafka edge (a `bus::kafka::Handler`), and the
//!   stage's errors mapped to their kind and retry policy.
//! * [`export`]: `.npy` files and contact-sheet previews for the offline command.

pub mod crop;
pub mod detector;
pub mod export;
pub mod geometry;
pub mod jpeg;
#[cfg(feature = "service")]
pub mod service;
pub mod stage;
pub mod tracker;
