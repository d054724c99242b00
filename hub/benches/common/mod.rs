#![allow(dead_code)] // Shared by several benches; each uses a part.
//! What the hub benchmarks share: a real hub server in process over TLS with enrolled
//! stores, realistic ledger entries, and pushes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_hub::api::{AppState, router};
use patron_hub::service::Hub;
use patron_hub::store::sqlite::SqliteStore;
use patron_hub::tls;
use patron_protocol::Origin;
use patron_protocol::hub::{PushRequest, SyncReport};
use patron_sync::session::{Fact, Push, batch};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A numeric knob from the environment.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh directory under `target/tmp` (the same disk as the build).
pub fn bench_dir(name: &str) -> Result<PathBuf, BoxError> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tmp/patron-hub-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The facts' time base (2025-11-24), and a lot expiry no bench run reaches (2100).
const AT0: i64 = 1_764_000_000_000;
const NEVER: i64 = 4_102_444_800_000;

/// Member `n` of store `store`'s own members. Each store writes facts only of its own
/// members, as in a chain: the hub quarantines a store's fact of a member another store
/// registered unless the hub let it hold them (a fetch), so a pool shared by every
/// store would have most facts quarantined and the benchmarks would measure that.
pub fn member(store: usize, n: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 + ((store as u128) << 32) + u128::from(n),
    )
}

/// Members of each store in the real mix: 5,000 over the 8 stores of the default run,
/// as many facts each as when they were one pool.
pub const REAL_MEMBERS_PER_STORE: u64 = 625;

/// What facts a store pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Member purchases only, spread over the store's first `per_store` members
    /// (the authorization benchmark's seed).
    Purchases {
        /// How many members of each store the purchases spread over.
        per_store: u64,
    },
    /// A store's day as the edge writes it, per 100 facts: 60 member sales and 10
    /// walk-in sales, 3 refunds, 3 redemptions, 5 registrations (new members, each
    /// under its own phone index), 4 profile changes, 8 check-ins, 3 coupons issued,
    /// 2 claimed and 2 benefit uses.
    Real,
}

/// Fact `seq` of store `store` under `mix`, as its edge would push it.
pub fn entry(store: usize, seq: u64, mix: Mix) -> String {
    use patron_domain::Kind;
    let m = match mix {
        Mix::Purchases { per_store } => member(store, seq % per_store.max(1)),
        Mix::Real => member(store, seq % REAL_MEMBERS_PER_STORE),
    };
    let at = AT0 + seq as i64;
    let txn = uuid::Uuid::now_v7();
    let sale = |member: Option<uuid::Uuid>| {
        let body = format!(
            r#"{{"receipt_id":"S{store:03}-R{seq}","lines":[{{"sku":"SKIN-001","category":"skincare","qty":1,"unit_price":9900}},{{"sku":"TEA-7","qty":1,"unit_price":2400}}],"subtotal":12300,"discounts":[],"points_value":0,"total":12300,"rules_version":null,"applied":[],"coupons_used":[]}}"#
        );
        let mut e = serde_json::json!({"kind": "purchase", "at": at, "txn": txn,
                                       "body": serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()});
        if let Some(m) = member {
            e["member"] = serde_json::json!(m);
            e["earn"] = 123.into();
            e["expires_at"] = NEVER.into();
            e["qual_spend"] = 12_300.into();
            e["qual_at"] = at.into();
        }
        e
    };
    let kind_of = |k: Kind, body: serde_json::Value| serde_json::json!({"kind": k.as_str(), "at": at, "member": m, "txn": txn, "body": body});
    let e = match (mix, seq % 100) {
        (Mix::Purchases { .. }, _) | (Mix::Real, 0..60) => sale(Some(m)),
        (Mix::Real, 60..70) => sale(None),
        (Mix::Real, 70..73) => {
            let mut e = kind_of(
                Kind::Refund,
                serde_json::json!({"receipt_id": format!("S{store:03}-R{}", seq - 3),
                                   "per_line": [1, 0], "gross": 9900, "amount": 9900}),
            );
            e["reverse"] = 99.into();
            e["reverse_lot"] = serde_json::json!(uuid::Uuid::now_v7());
            e["qual_spend"] = (-9900).into();
            e["qual_at"] = at.into();
            e
        }
        (Mix::Real, 73..76) => {
            let mut e = kind_of(
                Kind::Redemption,
                serde_json::json!({"reason": "gift", "auth": "hub"}),
            );
            e["spend"] = 50.into();
            e
        }
        (Mix::Real, 76..81) => {
            // A new member, under a phone index of their own.
            let new = uuid::Uuid::from_u128(u128::from(store as u64) << 64 | u128::from(seq));
            let mut idx = [0u8; 32];
            idx[..8].copy_from_slice(&(store as u64).to_be_bytes());
            idx[8..16].copy_from_slice(&seq.to_be_bytes());
            let b64 =
                |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
            let mut e = kind_of(
                Kind::MemberRegistered,
                serde_json::json!({"birthday": b64(&[7; 38]), "channel": "pos",
                    "consents": {"marketing": true, "policy_version": "2026-01", "terms": true},
                    "hlc": {"counter": 0, "node": format!("S{store:03}"), "wall": at},
                    "home_store": format!("S{store:03}"), "name": b64(&[5; 34]),
                    "phone": b64(&[3; 39]), "phone_idx": b64(&idx), "referral_code": "QD2XPP",
                    "referrer_code": null, "wrapped_key": b64(&[9; 60])}),
            );
            e["member"] = serde_json::json!(new);
            e["txn"] = serde_json::json!(new);
            e
        }
        (Mix::Real, 81..85) => kind_of(
            Kind::MemberUpdated,
            serde_json::json!({"hlc": {"counter": 0, "node": format!("S{store:03}"), "wall": at},
                               "marketing": true, "tags_add": ["skincare"], "tags_remove": []}),
        ),
        (Mix::Real, 85..93) => {
            let mut e = kind_of(
                Kind::Event,
                serde_json::json!({"type": "check_in", "ref": null}),
            );
            e["earn"] = 10.into();
            e["expires_at"] = NEVER.into();
            e
        }
        (Mix::Real, 93..96) => kind_of(
            Kind::CouponIssued,
            serde_json::json!({"active": false, "code": format!("C{store:03}{seq:010}"),
                               "coupon_id": txn.simple().to_string(), "expires_at": NEVER,
                               "label": "¥10 off", "min_spend": 0, "off": 1000, "source": "cashier"}),
        ),
        (Mix::Real, 96..98) => kind_of(
            Kind::CouponClaimed,
            serde_json::json!({"code": format!("C{store:03}{:010}", seq - 3)}),
        ),
        (Mix::Real, _) => kind_of(
            Kind::BenefitUsed,
            serde_json::json!({"code": "dry_cleaning", "month": "2025-11"}),
        ),
    };
    e.to_string()
}

/// The origin of store `store`.
pub fn origin(store: usize) -> Origin {
    Origin {
        node: format!("S{store:03}"),
        incarnation: uuid::Uuid::from_u128(store as u128 + 1),
    }
}

/// Serialized push bodies for one store: its facts in batches of 1,000.
pub fn bodies(store: usize, facts: u64, mix: Mix) -> Result<Vec<Vec<u8>>, BoxError> {
    let o = origin(store);
    let mut out = Vec::new();
    let mut seq = 1;
    while seq <= facts {
        let last = (seq + 999).min(facts);
        let fs: Vec<Fact> = (seq..=last)
            .map(|s| Fact {
                origin: o.clone(),
                seq: s,
                body: entry(store, s, mix),
            })
            .collect();
        let req = PushRequest {
            report: SyncReport {
                origin: Some(o.clone()),
                last_seq: facts,
                ..Default::default()
            },
            push: Push {
                from: o.node.clone(),
                batches: vec![batch(o.clone(), fs)],
            },
        };
        out.push(serde_json::to_vec(&req)?);
        seq = last + 1;
    }
    Ok(out)
}

/// A hub serving on loopback, with a client that trusts its CA.
pub struct Running {
    /// Base URL (`https://127.0.0.1:port`).
    pub base: String,
    /// The push URL.
    pub url: String,
    /// A client trusting the hub's CA.
    pub http: reqwest::Client,
    /// Store credentials, by store index.
    pub creds: Vec<String>,
    /// The hub's storage.
    pub store: Arc<SqliteStore>,
    /// The hub service.
    pub hub: Arc<Hub>,
    /// The projections behind the ingest cursor, following pushes as in `serve`.
    pub runner: patron_hub::projections::Runner,
}

/// Starts a hub with `stores` enrolled stores.
pub async fn start_hub(name: &str, stores: usize) -> Result<Running, BoxError> {
    let dir = bench_dir(name)?;
    tls::init(&dir, &dir, &["localhost".into(), "127.0.0.1".into()])?;
    let store = Arc::new(SqliteStore::open(&dir)?);
    let (pem, fp) = tls::ca(&dir)?;
    // A store-day budget the load never reaches: every fact is counted, none withheld.
    let limits = patron_hub::ingest::FactLimits {
        max_points_per_store_day: i64::MAX,
        ..Default::default()
    };
    let hub = Arc::new(Hub::new(store.clone(), pem.clone(), fp).with_fact_limits(limits));
    let mut creds = Vec::new();
    for s in 0..stores {
        let token = hub.enrollment.add_store(
            &origin(s).node,
            "bench",
            "all",
            patron_hub::enrollment::TOKEN_VALID_MS,
        )?;
        let secret = token.rsplit_once('.').map(|(a, _)| a).unwrap_or_default();
        creds.push(
            hub.enrollment
                .enroll(secret, &origin(s).node, None, None)?
                .credential,
        );
    }
    let app = router(AppState {
        hub: hub.clone(),
        admin_hash: None,
        // A budget the load never reaches: every request pays for counting, none waits.
        store_requests: std::sync::Arc::new(patron_hub::api::StoreRequests::new(1_000_000)),
    });
    let cfg = tls::server_config(&dir, &dir)?;
    // The hub serves from its own runtime, as its own process would: on the client's
    // runtime, every stall of the load generator would count as the hub's.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hub-server")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("hub-server".into())
        .spawn(move || {
            server.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(listener) => {
                        let _ = patron_web::serve::serve(
                            listener,
                            app,
                            Some(cfg),
                            patron_web::serve::Limits::default(),
                            std::future::pending(),
                        )
                        .await;
                    }
                    Err(e) => eprintln!("hub listener: {e}"),
                }
            })
        })?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pem.as_bytes())?)?;
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls)
        .timeout(Duration::from_secs(120))
        .build()?;
    // As `patron-hub serve` runs it: the projections behind the cursor compete with
    // ingest for the writer and the CPU.
    let runner = patron_hub::projections::Runner::spawn(
        hub.behind(),
        hub.projection_waker(),
        Duration::from_secs(5),
    )?;
    Ok(Running {
        runner,
        base: format!("https://{addr}"),
        hub,
        url: format!("https://{addr}/v1/sync/push"),
        http,
        creds,
        store,
    })
}

/// Every store pushes its bodies in order, all stores at once; returns the elapsed time.
pub async fn push_all(hub: &Running, per_store: Vec<Vec<Vec<u8>>>) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (s, bodies) in per_store.into_iter().enumerate() {
        let http = hub.http.clone();
        let url = hub.url.clone();
        let cred = hub.creds[s].clone();
        set.spawn(async move {
            for b in bodies {
                let r = http
                    .post(&url)
                    .bearer_auth(&cred)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                if !status.is_success() || !text.contains("Applied") {
                    return Err::<(), BoxError>(format!("push: {status} {text}").into());
                }
            }
            Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let took = start.elapsed();
    // A quarantined fact skips every projection: a benchmark whose facts were
    // quarantined would measure that, not ingest.
    let held_back = hub.hub.quarantined(3)?;
    if !held_back.is_empty() {
        return Err(format!("facts were quarantined: {held_back:?}").into());
    }
    Ok(took)
}

/// Waits until every projection behind the cursor has folded the whole log; how long
/// that took.
pub async fn projections_caught_up(hub: &Running) -> Result<Duration, BoxError> {
    let start = Instant::now();
    loop {
        let all = hub.hub.projections()?;
        if all.iter().all(|p| p.position >= p.end) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(300) {
            return Err(format!("projections did not catch up: {all:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fails the benchmark when a check does not hold.
pub fn anyhow_check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}
