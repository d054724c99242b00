//! Patron's replication core, pure and transport-free.
//!
//! - [`version_vector`]: a replica's knowledge, `origin → highest contiguous sequence`.
//! - [`session`]: facts, batches with checksums, the receive/ack state machine.
//! - [`docs`]: HQ-authored documents (rule sets) as automerge documents, per ring.
//! - [`hlc`]: hybrid logical clock for last-writer-wins profile fields.
//! - [`profile`]: member profiles as LWW registers and an add-wins tag set.
//! - [`pull`]: fetching a member the store does not hold, by phone.
//! - [`sender`]: the pushing side as a state machine (what to send, what an answer teaches).
//! - [`receiver`]: the hub's check that repeated facts are the ones it holds.
//! - [`stream`]: the hub-to-store stream of the facts of the members a store holds.
//! - [`rights`]: leases on a member's points that stores spend offline (bounded counter).
//!
//! The version vector is a replica's knowledge of the ledger as
//! `origin → highest contiguous sequence`. The edge assigns gap-free sequences per
//! origin in the same SQLite transaction as each fact; a receiver accepts a batch only
//! if it continues that origin without a gap, so a lost message is noticed instead of
//! hidden behind a larger maximum. The sync session, hybrid logical clock and merge
//! rules build on this (see `shared/DESIGN.md`).

pub mod docs;
pub mod hlc;
pub mod profile;
pub mod pull;
pub mod receiver;
pub mod rights;
pub mod sender;
pub mod session;
pub mod stream;
pub mod version_vector;

pub use hlc::{Hlc, Observed, Stamp};
pub use profile::{AddWinsSet, Lww, Profile, ProfileOp};
pub use session::{Batch, Fact, Judgement, Push, PushAck, Verdict, judge};
pub use version_vector::{Accept, VersionVector};
