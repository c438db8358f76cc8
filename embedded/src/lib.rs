//! MouthMap's stages chained in one process, with no broker and no Redis:
//! the same stage code the services run (each crate's transport-free
//! `stage` module; this crate depends on none of their Kafka edges), over
//! in-memory hand-offs.
//!
//! * [`transcribe`]: one source through ingest, preprocess, infer and
//!   decode (`mouthmap transcribe`).
//! * [`crops`]: mouth crops of video files for training, cut from frames
//!   exactly as ingest publishes them (JPEG at the serving quality by
//!   default), and contact-sheet previews (`mouthmap crops`).

pub mod crops;
pub mod transcribe;
