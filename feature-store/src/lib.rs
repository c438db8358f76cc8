//! Feature store: online features per stream and speaker on Redis.
//!
//! Not built yet: this crate holds its place in the workspace. Its design and
//! acceptance criteria are in issue #6; the message contracts it reads and
//! writes are already fixed in `mouthmap-bus` and `docs/contracts.md`.
