//! MouthMap's front doors: what people and applications talk to, built on
//! the same topics as every stage (it reads `transcripts` and `mouths`,
//! and writes `frames`), and scaled the same way, by replicas.
//!
//! Layout, from the topics outwards:
//!
//! * [`hub`]: each stream's latest transcript and mouth crop, read from the
//!   topics and fanned out to whoever watches.
//! * [`intake`]: video into the pipeline through ingest's own code: an
//!   uploaded file through its stream (GStreamer), a gRPC caller's JPEG
//!   frames through its chunker (resampled to 25 fps, paced by their
//!   timestamps); admission control (`--max-streams`, then 429).
//! * [`upload`]: one uploaded file: size limit, checked to be a video,
//!   followed until its final.
//! * [`http`]: the web view (compiled in from `web/`), the upload API and
//!   the Server-Sent Events feed the page uses.
//! * [`grpc`]: `mouthmap.v1.Transcriber` (`proto/mouthmap.proto`), health
//!   and reflection.
//! * [`service`]: all of it wired together for `mouthmap gateway`.
//!
//! Auth: one bearer token (the setting ingest's API uses) on every door;
//! the gateway refuses to listen beyond loopback without one.

pub mod grpc;
pub mod http;
pub mod hub;
pub mod intake;
pub mod service;
pub mod upload;
