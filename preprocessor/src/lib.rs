//! Preprocessor: finds the face with YuNet and crops the mouth (frames -> mouths).
//!
//! Not built yet: this crate holds its place in the workspace. Its design and
//! acceptance criteria are in issue #3; the message contracts it reads and
//! writes are already fixed in `mouthmap-bus` and `docs/contracts.md`.
