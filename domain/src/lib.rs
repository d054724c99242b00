//! Patron's facts, typed once, and what is derived from them. Pure: no I/O, no
//! storage, no network, so the edge, the hub and the sync core read and derive the
//! same way.
//!
//! - [`fact`]: the ledger entry as a tagged enum of kinds with a schema version,
//!   parsed once where a fact enters a process and written back byte for byte.
//! - [`points`]: a member's points as lots (earn, FIFO spend, reversal, expiry, debt).
//! - [`ledger`]: a member's points and qualifying spend kept as a snapshot, read in
//!   constant time, with the derivation from the facts as its reference.
//! - [`settings`]: chain-wide points settings (earn and redeem rates, expiry), an HQ
//!   document, and where a store's settings in force came from.
//! - [`tiers`]: tier thresholds (an HQ document) and the tier a qualifying spend reaches.
//! - [`rules`]: the rule-set schema and its validation (the hub validates what it
//!   publishes, the edge what it loads).
//! - [`adjustment`]: manual points adjustments: reason codes and the two-person rule.
//! - [`claims`]: limited entitlements as chain-wide counters: who allows a claim, the
//!   offline policies and their worst case.
//! - [`referral`]: referral codes unique across the chain, and how the hub settles a
//!   referral the store could not credit.
//! - [`hlc`]: the stamp member facts carry for last-writer-wins profile fields.

pub mod adjustment;
pub mod claims;
pub mod fact;
pub mod hlc;
pub mod ledger;
pub mod member_code;
pub mod points;
pub mod referral;
pub mod rules;
pub mod settings;
pub mod stock;
pub mod tiers;

pub use fact::{Detail, Entry, FactError, Header, Kind};
