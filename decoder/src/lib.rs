//! MouthMap decoder: from per-window CTC probabilities to transcripts.
//!
//! * [`ctc`]: greedy decoding and CTC prefix beam search (optionally under a
//!   [`ctc::Constraint`], for grammars and lexicons), with the frame of every
//!   character.
//! * [`grammar`]: cyclic word-slot grammars (the GRID grammar ships) as
//!   beam-search constraints.
//! * [`stitch`]: overlapping windows into one posterior stream, cut at word
//!   boundaries both windows agree on (the model's edge letters mistimed).
//! * [`stage`]: `logits` events in, partial and final transcripts out:
//!   windows stitched, a stable prefix, word times, confidence, latency, and exactly
//!   one final per stream; bounded re-decoding for long streams. Free of
//!   transport.
//! * [`service`]: the Kafka edge, with feature-store enrichment.
//! * [`synth`]: synthetic posteriors and windows, for tests and benchmarks.

pub mod ctc;
pub mod grammar;
#[cfg(feature = "service")]
pub mod service;
pub mod stage;
pub mod stitch;
pub mod synth;
