//! Checkout promotions: rule sets as data, and the pure engine that applies them.
//!
//! - [`ruleset`]: the rule-set format (JSON), parsing and validation. A published
//!   version is immutable; every committed sale records the version it was priced with.
//! - [`engine`]: prices a basket under a rule set — a pure function of (basket, the
//!   member's derived state, the rule set, usage so far, time). Quote and commit call it
//!   with the same inputs and agree.
//! - [`alloc`]: splitting an amount over lines without losing a fen.
//!
//! `docs/rules.md` documents the format and the evaluation order with examples.

pub mod alloc;
pub mod engine;
pub mod ruleset;
