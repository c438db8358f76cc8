//! Decoder: stitches windows and decodes CTC into transcripts (logits -> transcripts).
//!
//! Not built yet: this crate holds its place in the workspace. Its design and
//! acceptance criteria are in issue #5; the message contracts it reads and
//! writes are already fixed in `mouthmap-bus` and `docs/contracts.md`.
