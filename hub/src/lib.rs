//! Patron's hub: enrollment of stores, the sync server, and every store's facts.
//!
//! - [`config`]: the hub's configuration (defaults, file, environment, flags).
//! - [`app`]: the composition root: `run(config, listener, shutdown)`.
//! - [`store`]: storage behind the [`store::HubStore`] trait (SQLite now).
//! - [`service`]: the hub composed of its components, and the sync server (pushes,
//!   streams, refetches, projections).
//! - [`enrollment`]: stores joining, their credentials, protocol negotiation.
//! - [`directory`]: members across stores (fetch by phone, profiles, activity).
//! - [`documents`]: HQ documents (rule sets, settings) and the stores' sync of them.
//! - [`error`]: what can go wrong, for every component.
//! - [`clock`]: the shared clock.
//! - [`authority`]: the redemption authority's rules (grants, overdraws, leases), pure.
//! - [`redemption`]: authorizations, leases and overdraw reports, served over storage.
//! - [`claims`]: chain-wide claims of limited entitlements (check-ins, once-only
//!   rewards, quotas, per-member offers), served over storage.
//! - [`recall`]: which stores are online, and leases asked back from them.
//! - [`ingest`]: what a push may carry, each fact typed once, and what it projects.
//! - [`projections`]: projections behind the ingest cursor, and their runner.
//! - [`activity`]: members' activity, the first of them (pure rules).
//! - [`api`]: HTTP handlers and error mapping.
//! - [`tls`]: the hub's CA, server certificate and rustls config.
//! - [`keys`]: the key directory, outside the data directory.
//! - [`keyring`]: the chain's and the stores' member keys, and the translation between
//!   stores.

pub mod activity;
pub mod api;
pub mod app;
pub mod authority;
pub mod chain_keys;
pub mod claims;
pub mod clock;
pub mod config;
pub mod directory;
pub mod documents;
pub mod enrollment;
pub mod error;
pub mod ingest;
pub mod keyring;
pub mod keys;
pub mod projections;
pub mod recall;
pub mod redemption;
pub mod service;
pub mod stock;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tls;
