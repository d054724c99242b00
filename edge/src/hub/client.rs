//! HTTP calls to the hub over the pinned TLS client.

use std::time::Duration;

use patron_protocol::hub::{
    AuthorizeRequest, AuthorizeResponse, ClaimRelease, ClaimReleased, ClaimRequest, ClaimResponse,
    DocSync, EnrollRequest, EnrollResponse, LeaseRequest, LeaseResponse, LeaseReturn,
    LeaseReturned, PushAnswer, PushRequest, RefetchRequest, StockRelease, StockReleased,
    StockRequest, StockResponse,
};
use patron_sync::pull::{FetchedMember, MemberFetch};
use patron_sync::session::{Batch, Push, PushAck};
use patron_sync::stream::{StreamAnswer, StreamRequest};
use serde::de::DeserializeOwned;

use super::SyncError;
use super::link::HubLink;
use crate::service::hub_port::{HubCall, HubCallError, HubPort};

/// The hub's answer to a refetch.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RefetchAnswer {
    /// The facts (possibly none: nothing after that point).
    pub batch: Batch,
    /// The hub's high for that origin.
    pub high: u64,
}

/// A client for one hub.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    url: String,
    credential: String,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Makes ring the process's TLS crypto provider (reqwest is built without one, so
/// that the whole workspace uses ring, as DESIGN.md names). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long an idle connection to the hub is kept for reuse: half the hub's default
/// kept-alive idle limit (`[http] header_timeout_ms`, 10 s).
pub const HUB_CONNECTION_IDLE: Duration = Duration::from_secs(5);

/// Builds a reqwest client with this TLS config (`None`: plain HTTP, development only).
pub fn http_client(
    tls: Option<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<reqwest::Client, SyncError> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // The hub closes a kept-alive connection idle for its header timeout (10 s by
        // default); reusing one at that moment loses the request to the close. Idle
        // connections are dropped well before, so the edge never races the hub's close.
        .pool_idle_timeout(HUB_CONNECTION_IDLE);
    match tls {
        Some(cfg) => b = b.tls_backend_preconfigured(cfg).https_only(true),
        None => b = b.https_only(false),
    }
    b.build()
        .map_err(|e| SyncError::Setup(format!("HTTP client: {e}")))
}

/// An error with its causes (`reqwest` says "error sending request" and keeps the
/// reason, a refused certificate or a reset, in its sources): what IT needs to read.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

async fn answer<T: DeserializeOwned>(
    r: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, SyncError> {
    let r = r.map_err(|e| SyncError::Unreachable(with_causes(&e)))?;
    let status = r.status();
    let bytes = r
        .bytes()
        .await
        .map_err(|e| SyncError::Unreachable(with_causes(&e)))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| SyncError::Unreachable(format!("unreadable answer: {e}")));
    }
    // The hub's own error table (its codes are not the POS API's): only the message
    // and the status matter here.
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
    Err(SyncError::Refused {
        status: status.as_u16(),
        message,
    })
}

/// Posts an enrollment.
pub async fn enroll(
    http: &reqwest::Client,
    url: &str,
    req: &EnrollRequest,
) -> Result<EnrollResponse, SyncError> {
    answer(http.post(format!("{url}/v1/enroll")).json(req).send().await).await
}

impl HubClient {
    /// A client for the enrolled hub.
    pub fn new(link: &HubLink, timeout: Duration) -> Result<Self, SyncError> {
        let tls = if link.url.starts_with("https://") {
            Some(super::tls::pinned_ca(&link.ca_pem)?)
        } else {
            None
        };
        Ok(Self {
            http: http_client(tls, timeout)?,
            url: link.url.trim_end_matches('/').to_string(),
            credential: link.credential.clone(),
        })
    }

    /// Facts of one of this store's own origins after `after`, back from the hub.
    pub async fn refetch(&self, req: &RefetchRequest) -> Result<RefetchAnswer, SyncError> {
        self.post("/v1/sync/refetch", req).await
    }

    /// One step of an HQ document's sync: sends our message (if any), returns the hub's.
    pub async fn doc_sync(
        &self,
        doc: &str,
        message: Option<&[u8]>,
        fresh: bool,
    ) -> Result<Option<Vec<u8>>, SyncError> {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD as B64;
        let answer: DocSync = answer(
            self.http
                .post(format!("{}/v1/docs/sync", self.url))
                .bearer_auth(&self.credential)
                .json(&DocSync {
                    doc: doc.to_string(),
                    message: message.map(|m| B64.encode(m)),
                    fresh,
                })
                .send()
                .await,
        )
        .await?;
        answer
            .message
            .map(|m| B64.decode(m))
            .transpose()
            .map_err(|_| SyncError::Unreachable("the hub's document message is not base64".into()))
    }

    /// Posts `req` to `path` with the store's credential and reads the answer.
    async fn post<Q: serde::Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
    ) -> Result<A, SyncError> {
        answer(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(&self.credential)
                .json(req)
                .send()
                .await,
        )
        .await
    }

    /// Asks the hub to authorize a redemption.
    pub async fn authorize(&self, req: &AuthorizeRequest) -> Result<AuthorizeResponse, SyncError> {
        self.post("/v1/redeem/authorize", req).await
    }

    /// Asks the hub to count a claim of a limited entitlement.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse, SyncError> {
        self.post("/v1/claims", req).await
    }

    /// Gives back a claim the hub granted that this store did not record.
    pub async fn release_claim(&self, req: &ClaimRelease) -> Result<ClaimReleased, SyncError> {
        self.post("/v1/claims/release", req).await
    }

    /// Asks for a lease on a member's points.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<LeaseResponse, SyncError> {
        self.post("/v1/leases", req).await
    }

    /// The facts of the member registered under a phone (chain-wide blind index).
    pub async fn fetch_member(&self, req: &MemberFetch) -> Result<FetchedMember, SyncError> {
        self.post("/v1/members/fetch", req).await
    }

    /// Reserves a sale's units of catalogue items with a chain-wide stock.
    pub async fn reserve_stock(&self, req: &StockRequest) -> Result<StockResponse, SyncError> {
        self.post("/v1/stock/reserve", req).await
    }

    /// Gives back units reserved for a sale this store did not record.
    pub async fn release_stock(&self, req: &StockRelease) -> Result<StockReleased, SyncError> {
        self.post("/v1/stock/release", req).await
    }

    /// Gives a lease back.
    pub async fn return_lease(&self, req: &LeaseReturn) -> Result<LeaseReturned, SyncError> {
        self.post("/v1/leases/return", req).await
    }

    /// Pushes facts (possibly none: a heartbeat) with this store's report.
    pub async fn push(&self, req: &PushRequest<Push>) -> Result<PushAnswer<PushAck>, SyncError> {
        self.post("/v1/sync/push", req).await
    }

    /// Polls the hub's stream of this store's members (protocol 2).
    pub async fn stream(&self, req: &StreamRequest) -> Result<StreamAnswer, SyncError> {
        self.post("/v1/sync/stream", req).await
    }
}

impl From<SyncError> for HubCallError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Refused { status, message } => HubCallError::Refused { status, message },
            SyncError::Unreachable(m) | SyncError::Setup(m) => HubCallError::Unreachable(m),
        }
    }
}

impl HubPort for HubClient {
    fn authorize<'a>(&'a self, req: &'a AuthorizeRequest) -> HubCall<'a, AuthorizeResponse> {
        Box::pin(async move { Ok(HubClient::authorize(self, req).await?) })
    }

    fn claim<'a>(&'a self, req: &'a ClaimRequest) -> HubCall<'a, ClaimResponse> {
        Box::pin(async move { Ok(HubClient::claim(self, req).await?) })
    }

    fn release_claim<'a>(&'a self, req: &'a ClaimRelease) -> HubCall<'a, ClaimReleased> {
        Box::pin(async move { Ok(HubClient::release_claim(self, req).await?) })
    }

    fn lease<'a>(&'a self, req: &'a LeaseRequest) -> HubCall<'a, LeaseResponse> {
        Box::pin(async move { Ok(HubClient::lease(self, req).await?) })
    }

    fn reserve_stock<'a>(&'a self, req: &'a StockRequest) -> HubCall<'a, StockResponse> {
        Box::pin(async move { Ok(HubClient::reserve_stock(self, req).await?) })
    }

    fn release_stock<'a>(&'a self, req: &'a StockRelease) -> HubCall<'a, StockReleased> {
        Box::pin(async move { Ok(HubClient::release_stock(self, req).await?) })
    }

    fn return_lease<'a>(&'a self, req: &'a LeaseReturn) -> HubCall<'a, LeaseReturned> {
        Box::pin(async move { Ok(HubClient::return_lease(self, req).await?) })
    }

    fn fetch_member<'a>(&'a self, req: &'a MemberFetch) -> HubCall<'a, FetchedMember> {
        Box::pin(async move { Ok(HubClient::fetch_member(self, req).await?) })
    }
}
