//! The hub as the service layer sees it: a port this layer owns. `crate::hub` (the
//! enrolled link over HTTPS) implements it and reports into [`SyncStatus`]; the
//! service layer never imports `crate::hub`, and unit tests can hand it a fake hub.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use patron_protocol::hub::{
    AuthorizeRequest, AuthorizeResponse, ClaimRelease, ClaimReleased, ClaimRequest, ClaimResponse,
    LeaseRequest, LeaseResponse, LeaseReturn, LeaseReturned, StockRelease, StockReleased,
    StockRequest, StockResponse,
};
use patron_sync::pull::{FetchedMember, MemberFetch};

use crate::domain::clock::Millis;

/// A call to the hub in flight.
pub type HubCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, HubCallError>> + Send + 'a>>;

/// Why a call to the hub gave no answer to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubCallError {
    /// No answer: the hub is offline, slow, or the answer was unreadable.
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
}

/// What the service layer asks of the hub.
pub trait HubPort: Send + Sync {
    /// Asks the hub to authorize (and hold) a redemption.
    fn authorize<'a>(&'a self, req: &'a AuthorizeRequest) -> HubCall<'a, AuthorizeResponse>;
    /// Asks the hub to count (and hold) a claim of a limited entitlement.
    fn claim<'a>(&'a self, req: &'a ClaimRequest) -> HubCall<'a, ClaimResponse>;
    /// Gives back a claim the hub granted that this store did not record.
    fn release_claim<'a>(&'a self, req: &'a ClaimRelease) -> HubCall<'a, ClaimReleased>;
    /// Asks for a lease on a member's points.
    fn lease<'a>(&'a self, req: &'a LeaseRequest) -> HubCall<'a, LeaseResponse>;
    /// Gives a lease back.
    fn return_lease<'a>(&'a self, req: &'a LeaseReturn) -> HubCall<'a, LeaseReturned>;
    /// The facts of the members registered under a phone (chain-wide blind index).
    fn fetch_member<'a>(&'a self, req: &'a MemberFetch) -> HubCall<'a, FetchedMember>;
    /// Reserves a sale's units of catalogue items with a chain-wide stock.
    fn reserve_stock<'a>(&'a self, req: &'a StockRequest) -> HubCall<'a, StockResponse>;
    /// Gives back units reserved for a sale this store did not record.
    fn release_stock<'a>(&'a self, req: &'a StockRelease) -> HubCall<'a, StockReleased>;
}

/// What `/healthz` shows of sync: the hub link reports into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// A hub link exists.
    pub enrolled: bool,
    /// The last request reached the hub and got an answer.
    pub reachable: bool,
    /// When the last push or heartbeat succeeded (unix ms).
    pub last_sync_at: Option<Millis>,
    /// Highest own sequence the hub acknowledged.
    pub acked: i64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// An alert that needs a person (watchdog, refusal).
    pub alert: Option<String>,
    /// The protocol agreed with the hub at the last push.
    pub negotiated: Option<patron_protocol::hub::Negotiated>,
    /// The last stream poll was answered.
    pub streaming: bool,
    /// When the last stream answer was stored (unix ms, this store's clock): the other
    /// stores' facts are here up to then.
    pub streamed_at: Option<Millis>,
}

/// Shared handle to the status.
pub type StatusCell = Arc<Mutex<SyncStatus>>;
