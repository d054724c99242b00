//! What can go wrong in a hub operation, for every component; the HTTP edge maps it
//! once (`api/error.rs`).

use crate::store::StoreError;

/// What can go wrong in a hub operation.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No or a bad credential.
    #[error("unknown or missing store credential")]
    Unauthorized,
    /// The store asked about a member it neither registered nor served.
    #[error("{}", crate::ingest::NOT_SERVED)]
    NotServed,
    /// The store was revoked by HQ: it is refused everything (its pushes are kept in
    /// quarantine for review).
    #[error("store {0} was revoked by HQ")]
    Revoked(String),
    /// A store pushed facts of another origin.
    #[error("store {store} may not push facts of origin {claimed}")]
    Forged {
        /// The authenticated store.
        store: String,
        /// The origin its facts claimed.
        claimed: String,
    },
    /// Enrollment refused.
    #[error("{0}")]
    Enrollment(&'static str),
    /// The store speaks a sync protocol this hub no longer serves.
    #[error(
        "sync protocol {asked} is no longer served (this hub serves {min} to {newest}): upgrade the store"
    )]
    Protocol {
        /// What the store speaks.
        asked: u32,
        /// The oldest served.
        min: u32,
        /// The newest served.
        newest: u32,
    },
    /// A store with this id exists.
    #[error("store {0} exists already")]
    Exists(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(StoreError),
    /// The system could not produce random bytes.
    #[error("no randomness available")]
    Random,
    /// The store sent requests faster than its budget allows.
    #[error(
        "store {store} sends more than {per_second} requests a second; retry in {retry_after_secs} s"
    )]
    RateLimited {
        /// The store.
        store: String,
        /// Its budget.
        per_second: u32,
        /// When it may send again.
        retry_after_secs: u64,
    },
    /// The store used up its member-fetch budget.
    #[error("member fetches are limited to {per_minute} a minute per store")]
    FetchLimit {
        /// The limit.
        per_minute: u32,
    },
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Enrollment(m) => HubError::Enrollment(m),
            StoreError::StoreExists(s) => HubError::Exists(s),
            StoreError::Conflict(m) => HubError::Invalid(m.into()),
            other => HubError::Store(other),
        }
    }
}
