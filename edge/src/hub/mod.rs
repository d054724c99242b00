//! The edge's link to the hub: enrollment, the pinned TLS client, and the background
//! sync worker that pushes this store's facts.
//!
//! - [`link`]: what enrollment leaves on disk (`hub.json`, owner-only).
//! - [`tls`]: rustls client configs that trust only the hub's own CA.
//! - [`enroll`]: exchanging a one-time token for a credential.
//! - [`client`]: the HTTP calls.
//! - [`worker`]: push loop with backoff, heartbeat and watchdog; its status feeds
//!   `/healthz`.

pub mod client;
pub mod enroll;
pub mod link;
pub mod tls;
pub mod worker;

pub use worker::SyncStatus;

/// Failures talking to the hub.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Could not reach the hub or read its answer.
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    /// The hub answered with an error.
    #[error("hub refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The hub's message.
        message: String,
    },
    /// Local setup (files, TLS, token format).
    #[error("{0}")]
    Setup(String),
}
