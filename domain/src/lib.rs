//! Patron's facts, typed once, and what is derived from them. Pure: no I/O, no
//! storage, no network, so the edge, the hub and the sync core read and derive the
//! same way.
//!
//! - [`fact`]: the ledger entry as a tagged enum of kinds with a schema version,
//!   parsed once where a fact enters a process and written back byte for byte.
//! - [`points`]: a member's points as lots (earn, FIFO spend, reversal, expiry, debt).
//! - [`hlc`]: the stamp member facts carry for last-writer-wins profile fields.

pub mod fact;
pub mod hlc;
pub mod points;

pub use fact::{Detail, Entry, FactError, Header, Kind};
