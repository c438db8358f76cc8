//! The edge every MouthMap service rides on: Kafka, telemetry, metrics.
//!
//! MouthMap is a chain of independent services joined by Kafka topics
//! (`frames` -> `mouths` -> `logits` -> `transcripts`). The messages
//! themselves are `mouthmap-contracts` (pure data); this crate moves them:
//!
//! * [`message`]: [`InMessage`](message::InMessage) and
//!   [`OutMessage`](message::OutMessage), detached from librdkafka, with the
//!   one builder of outgoing events and the one checked reader of incoming
//!   ones.
//! * [`kafka`]: an idempotent, compressed producer; topic creation; and the
//!   at-least-once consume loop ([`kafka::run_stage`]) that decodes every
//!   message as its stage's input type, stores an offset only after every
//!   downstream send of that message was acknowledged, and acts on a failure
//!   by its error's policy (dead letter, retry, stop).
//! * [`idle`]: when a stream is idle, by event time per partition (a
//!   backlog upstream never makes a live stream look idle).
//! * [`error`]: [`HandleError`](error::HandleError): a stage's error as
//!   itself, with its [`ErrorKind`](error::ErrorKind) (the metric label) and
//!   its [`Policy`](error::Policy).
//! * [`telemetry`]: `tracing` logs (text or JSON), OpenTelemetry spans over
//!   OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace-context
//!   propagation through Kafka headers.
//! * [`metrics`]: the Prometheus metrics every stage exports with the same
//!   names (messages in and out, errors by kind, processing latency).
//! * [`guard`]: the bearer token and same-origin checks of the HTTP APIs
//!   (ingest's and the gateway's).
//! * [`health`]: `/healthz` (the process serves) and `/readyz` (model
//!   loaded, broker reachable, group joined), served beside `/metrics`.
//!
//! Stage logic never touches this crate: each stage crate's `stage` module
//! turns input events into output events, and its `service` module wires it
//! here.

pub mod error;
pub mod guard;
pub mod health;
pub mod idle;
pub mod kafka;
pub mod message;
pub mod metrics;
pub mod telemetry;

pub use error::{ErrorKind, HandleError, Policy};
pub use message::{InMessage, OutMessage};
