//! Patron's store edge node.
//!
//! It answers the store's POS over the LAN — members, points, tiers, checkout — from
//! its own SQLite file, and keeps doing so with the internet down.
//!
//! - [`config`]: the one configuration, layered from defaults, file and environment.
//! - [`crypto`]: the key file, encryption of personal data, blind and request hashes.
//! - [`keys`]: the key directory, outside the data directory.
//! - [`lan_tls`]: the POS API's HTTPS key and certificates.
//! - [`domain`]: pure rules — validation, points lots, tiers, pricing, refunds.
//! - [`store`]: SQLite — migrations, the group-commit writer, readers, tables.
//! - [`service`]: each POS operation's rules, run in one durable transaction.
//! - [`api`]: the POS API v1 over axum; handlers only parse and map errors.
//! - [`hub`]: enrollment and the background sync with the hub.
//! - [`demo`]: demo data for the README's start command.
//! - [`app`]: the composition root: `run(config, listener, shutdown)`.

pub mod api;
pub mod app;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod hub;
pub mod keys;
pub mod lan_tls;
pub mod member_codes;
pub mod service;
pub mod store;
pub mod telemetry;

pub use app::run;
pub use config::Config;
pub use service::Edge;
