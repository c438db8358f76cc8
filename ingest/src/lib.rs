//! MouthMap ingest: any video source in, 25 fps frame chunks out.
//!
//! Layout, from the source inwards:
//!
//! * [`source`]: what a user names (a path, `rtmp://`, `rtsp://`, `http(s)://`,
//!   `file://`, `v4l2://`) and what kind of source that is.
//! * [`capture`]: the GStreamer pipeline (decode, convert, scale, 25 fps) and
//!   its appsink, one decoded I420 frame at a time.
//! * [`chunker`]: frames grouped into chunk messages under a byte budget.
//! * [`stream`]: one stream's life on its own thread: start event, chunks,
//!   reconnection with backoff for live sources, drain, end event.
//! * [`policy`]: which sources a caller of the API may name (media root,
//!   devices, no internal addresses).
//! * [`manager`]: the streams of one process, at most `--max-streams`;
//!   start, stop, list.
//! * [`api`]: the HTTP API and nginx-rtmp's publish callbacks.
//! * [`publish`]: the Kafka edge: events to the `frames` topic, in order,
//!   with trace context, every acknowledgement awaited.
//! * [`resume`]: where a stream an earlier ingest process carried left off,
//!   read back from the topic (a restarted ingest goes on with it).
//! * [`service`]: all of the above wired together for `mouthmap ingest`.
//!
//! Everything up to [`manager`] is free of Kafka: a stream hands its events
//! to an [`stream::Emitter`].

#[cfg(feature = "service")]
pub mod api;
pub mod capture;
pub mod chunker;
#[cfg(feature = "service")]
pub mod manager;
pub mod policy;
#[cfg(feature = "service")]
pub mod publish;
#[cfg(feature = "service")]
pub mod resume;
#[cfg(feature = "service")]
pub mod service;
pub mod source;
pub mod stream;
