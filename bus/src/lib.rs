//! The bus every MouthMap stage rides on.
//!
//! MouthMap is a chain of independent services joined by Kafka topics
//! (`frames` -> `mouths` -> `logits` -> `transcripts`). This crate holds what
//! all of them share, and nothing stage-specific:
//!
//! * [`contract`]: the versioned message contracts: event types per topic,
//!   the binary envelope (JSON metadata + binary payload) and the header names.
//!   `docs/contracts.md` is the prose version of this module.
//! * [`kafka`]: the Kafka edge: an idempotent, compressed producer; topic
//!   creation; and the at-least-once consume loop that stores an offset only
//!   after every downstream send of that message was acknowledged, and routes
//!   messages that cannot be parsed to the dead-letter topic.
//! * [`telemetry`]: `tracing` logs (text or JSON), OpenTelemetry spans over
//!   OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace-context
//!   propagation through Kafka headers.
//! * [`metrics`]: the Prometheus metrics every stage exports with the same
//!   names (messages in and out, errors by stage, processing latency).
//!
//! Stage logic never touches this crate's transport types: stages turn input
//! events into output events, and the binary wires them to Kafka at the edge.

pub mod contract;
pub mod kafka;
pub mod metrics;
pub mod telemetry;
