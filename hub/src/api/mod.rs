//! HTTP: parse, authenticate, call the hub, map errors to the shared error codes.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use patron_protocol::hub::{
    AuthorizeRequest, ClaimRelease, ClaimRequest, DocSync, EnrollRequest, LeaseRequest,
    LeaseReturn, LeaseReturned, PushRequest, RefetchRequest, StockRelease, StockRequest,
};
use patron_sync::pull::MemberFetch;
use patron_sync::session::Push;
use serde::de::DeserializeOwned;

pub mod error;
pub mod extract;

use self::error::{HubCode, err};
use self::extract::{AuthedStore, HqAdmin, PushingStore};
use crate::service::{Hub, HubError};

/// Largest sync request: a few full batches of 1,000 facts.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// SHA-256 of the HQ admin token (`None`: the admin endpoints are closed).
    pub admin_hash: Option<[u8; 32]>,
    /// Each store's request budget (a stolen credential floods no further).
    pub store_requests: Arc<StoreRequests>,
}

/// Requests each store may send: `per_second`, with bursts of [`BURST_SECS`] seconds'
/// worth. In this process (a hub of several processes splits it: docs/hub.md).
#[derive(Debug)]
pub struct StoreRequests {
    per_second: u32,
    buckets: patron_web::rate::Buckets<String>,
}

/// How many seconds' worth of requests a store may send at once.
pub const BURST_SECS: u32 = 5;

impl StoreRequests {
    /// `per_second` requests a store (0: no limit).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            buckets: patron_web::rate::Buckets::new(
                per_second.saturating_mul(BURST_SECS),
                std::time::Duration::from_secs(u64::from(BURST_SECS)),
            ),
        }
    }

    /// Counts one request of `store` at `now_ms`; refused beyond its budget.
    pub fn take(&self, store: &str, now_ms: i64) -> Result<(), crate::error::HubError> {
        self.buckets
            .take(&store.to_string(), now_ms)
            .map_err(|wait| crate::error::HubError::RateLimited {
                store: store.to_string(),
                per_second: self.per_second,
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            })
    }
}

/// The hub's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/enroll", post(enroll))
        .route(
            "/v1/sync/push",
            post(push).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/sync/refetch", post(refetch))
        .route("/v1/sync/stream", post(stream))
        .route("/v1/docs/sync", post(doc_sync))
        .route("/v1/stores", get(stores))
        .route("/v1/redeem/authorize", post(authorize))
        .route("/v1/claims", post(claim))
        .route("/v1/claims/release", post(release_claim))
        .route("/v1/stock/reserve", post(reserve_stock))
        .route("/v1/stock/release", post(release_stock))
        .route("/v1/leases", post(grant_lease))
        .route("/v1/members/fetch", post(fetch_member))
        .route("/v1/leases/return", post(return_lease))
        .route("/v1/overdraws", get(overdraws))
        .route("/v1/projections", get(projections))
        .route("/v1/members/{member}/activity", get(activity))
        .fallback(|| async { err(HubCode::NotFound, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, HubError> {
    serde_json::from_slice(body).map_err(|e| HubError::Invalid(format!("malformed body: {e}")))
}

/// Runs a blocking hub call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(IntoResponse::into_response),
        Err(_) => Err(err(HubCode::Internal, error::INTERNAL)),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    let hub = s.hub.clone();
    // Two counts, not the stores' report: monitoring polls this, and the benchmarks
    // take it as the ceiling of any hub request.
    match blocking(move || hub.enrollment.store_counts()).await {
        Ok((stores, enrolled)) => axum::Json(serde_json::json!({
            "status": "ok",
            "stores": stores,
            "enrolled": enrolled,
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn enroll(State(s): State<AppState>, body: Bytes) -> Response {
    let req: EnrollRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let hub = s.hub.clone();
    match blocking(move || {
        hub.enrollment.enroll(
            &req.secret,
            &req.store_id,
            req.protocol,
            req.lan_csr.as_deref(),
        )
    })
    .await
    {
        Ok(r) => (StatusCode::CREATED, axum::Json(r)).into_response(),
        Err(r) => r,
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes. A larger one is read to its end (up to
/// a bound) before the 413 goes out: a server that answers mid-upload and closes makes
/// the client see a reset instead of the answer.
async fn read_limited(body: Body) -> Result<Bytes, Response> {
    use http_body_util::BodyExt;
    const DRAIN_MAX: usize = 4 * MAX_BODY;
    let mut body = body;
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(err(HubCode::InvalidRequest, "the request body broke off"));
        };
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if total > DRAIN_MAX {
                break;
            }
        }
    }
    if total > MAX_BODY {
        let mut r = err(
            HubCode::PayloadTooLarge,
            format!("a sync request holds at most {MAX_BODY} bytes"),
        );
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return Err(r);
    }
    Ok(Bytes::from(buf))
}

async fn push(
    State(s): State<AppState>,
    PushingStore(store): PushingStore,
    body: Body,
) -> Response {
    let body = match read_limited(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: PushRequest<Push> = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let hub = s.hub.clone();
    match blocking(move || hub.push_negotiated(&store, req)).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(r) => r,
    }
}

/// `POST /v1/sync/stream`: the store's stream after its cursor. With nothing new and a
/// `wait_ms`, the answer waits for a push that applies facts (long poll), so a sale at
/// one store shows at the others holding the member within a round trip.
async fn stream(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    use patron_sync::stream::{MAX_WAIT_MS, StreamAnswer, StreamRequest};
    let mut req: StreamRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(req.wait_ms.min(MAX_WAIT_MS));
    // The store is online while it polls: leases may be recalled from it.
    let _open = s.hub.recalls.poll_open(&store.store_id);
    loop {
        // Subscribed before the read: a push that lands between the read and the wait
        // still wakes this poll.
        let changed = s.hub.stream_changed(&store.store_id);
        let (hub, st, r) = (s.hub.clone(), store.clone(), req.clone());
        let answer = match blocking(move || hub.stream(&st, &r)).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        // Members are released once, not again on every wake-up.
        req.release.clear();
        let answer = s.hub.with_recalls(&store.store_id, answer);
        // What the page carries besides facts (recalls, coupons moved) was taken for
        // this answer: a page with any of it goes now, or it would be lost.
        let empty = matches!(&answer,
            StreamAnswer::Page { facts, more: false, recall, coupons_moved, .. }
                if facts.is_empty() && recall.is_empty() && coupons_moved.is_empty());
        if !empty || s.hub.is_closing() || tokio::time::timeout_at(deadline, changed).await.is_err()
        {
            return axum::Json(answer).into_response();
        }
    }
}

/// The answer to a refetch.
#[derive(serde::Serialize)]
struct RefetchAnswer {
    batch: patron_sync::Batch,
    high: u64,
}

async fn refetch(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    let req: RefetchRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let hub = s.hub.clone();
    match blocking(move || hub.refetch(&store, &req)).await {
        // Serialized from the struct: a detour through serde_json::Value would re-encode
        // the raw fact bodies (sorted keys) and break their checksum.
        Ok((batch, high)) => axum::Json(RefetchAnswer { batch, high }).into_response(),
        Err(r) => r,
    }
}

async fn doc_sync(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    let req: DocSync = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let message = match req.message.as_deref().map(|m| B64.decode(m)).transpose() {
        Ok(m) => m,
        Err(_) => return HubError::Invalid("message: not base64".into()).into_response(),
    };
    let hub = s.hub.clone();
    match blocking(move || {
        hub.documents
            .doc_sync(&store, &req.doc, message.as_deref(), req.fresh)
    })
    .await
    {
        Ok(answer) => axum::Json(DocSync {
            doc: String::new(),
            message: answer.map(|a| B64.encode(a)),
            fresh: false,
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn stores(State(s): State<AppState>, _: HqAdmin) -> Response {
    let hub = s.hub.clone();
    match blocking(move || hub.enrollment.stores()).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(r) => r,
    }
}

async fn overdraws(State(s): State<AppState>, _: HqAdmin) -> Response {
    let hub = s.hub.clone();
    match blocking(move || hub.overdraw_report()).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(r) => r,
    }
}

/// Where each projection behind the ingest cursor stands (HQ).
async fn projections(State(s): State<AppState>, _: HqAdmin) -> Response {
    let hub = s.hub.clone();
    match blocking(move || hub.projections()).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(r) => r,
    }
}

/// A member's activity over every id merged into them (HQ): 404 when none of their
/// facts has been folded in.
async fn activity(
    State(s): State<AppState>,
    _: HqAdmin,
    member: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(axum::extract::Path(member)) = member else {
        return HubError::Invalid("the path names no member".into()).into_response();
    };
    let hub = s.hub.clone();
    match blocking(move || hub.directory.activity(&member)).await {
        Ok(Some(a)) => axum::Json(a).into_response(),
        Ok(None) => err(HubCode::NotFound, "no activity of this member yet"),
        Err(r) => r,
    }
}

/// A store's JSON call: parse the body, run `call` off the runtime, answer its result
/// as JSON.
async fn store_call<Q, A>(
    s: &AppState,
    store: crate::store::StoreRow,
    body: &Bytes,
    call: impl FnOnce(&Hub, &crate::store::StoreRow, &Q) -> Result<A, HubError> + Send + 'static,
) -> Response
where
    Q: DeserializeOwned + Send + 'static,
    A: serde::Serialize + Send + 'static,
{
    let req: Q = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let hub = s.hub.clone();
    match blocking(move || call(&hub, &store, &req)).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(r) => r,
    }
}

/// The hot path of every redeeming sale: no blocking thread at all. The credential is a
/// point read on a reader connection (microseconds, never behind a commit), and the
/// authorization waits for the authorizer's group commit as a future.
async fn authorize(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    let req: AuthorizeRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match s.hub.authorize_async(&store, &req).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A claim of a limited entitlement: like an authorization, no blocking thread.
async fn claim(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    let req: ClaimRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match s.hub.authorize_claim(&store, &req).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn reserve_stock(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    store_call(&s, store, &body, |hub, store, req: &StockRequest| {
        hub.reserve_stock(store, req)
    })
    .await
}

async fn release_stock(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    store_call(&s, store, &body, |hub, store, req: &StockRelease| {
        hub.release_stock(store, req)
            .map(|released| patron_protocol::hub::StockReleased { released })
    })
    .await
}

async fn release_claim(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    store_call(&s, store, &body, |hub, store, req: &ClaimRelease| {
        hub.release_claim(store, req)
            .map(|released| patron_protocol::hub::ClaimReleased { released })
    })
    .await
}

async fn grant_lease(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    store_call(&s, store, &body, |hub, store, req: &LeaseRequest| {
        hub.grant_lease(store, req)
    })
    .await
}

async fn fetch_member(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    store_call(&s, store, &body, |hub, store, req: &MemberFetch| {
        hub.directory.fetch_member(store, req)
    })
    .await
}

async fn return_lease(
    State(s): State<AppState>,
    AuthedStore(store): AuthedStore,
    body: Bytes,
) -> Response {
    store_call(&s, store, &body, |hub, store, req: &LeaseReturn| {
        Ok(LeaseReturned {
            returned: hub.return_lease(store, req)?,
        })
    })
    .await
}
