//! MouthMap decoder: from per-window CTC probabilities to transcripts.
//!
//! * [`ctc`]: greedy decoding and CTC prefix beam search (optionally under a
//!   [`ctc::Constraint`], for grammars and lexicons), with the frame of every
//!   character.
//! * [`grammar`]: cyclic word-slot grammars (the GRID grammar ships) as
//!   beam-search constraints.
//! * [`stage`]: `logits` events in, partial and final transcripts out:
//!   windows stitched (each frame from the window where it sits nearest the
//!   centre), a stable prefix, word times, confidence, latency, and exactly
//!   one final per stream. Free of transport.

pub mod ctc;
pub mod grammar;
pub mod service;
pub mod stage;
