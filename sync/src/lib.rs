//! Patron's replication core, pure and transport-free.
//!
//! Today it holds the [`VersionVector`]: a replica's knowledge of the ledger as
//! `origin → highest contiguous sequence`. The edge assigns gap-free sequences per
//! origin in the same SQLite transaction as each fact; a receiver accepts a batch only
//! if it continues that origin without a gap, so a lost message is noticed instead of
//! hidden behind a larger maximum. The sync session, hybrid logical clock and merge
//! rules build on this (see `shared/DESIGN.md`).

pub mod version_vector;

pub use version_vector::{Accept, VersionVector};
