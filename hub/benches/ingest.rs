//! Hub ingest, end to end: stores push batches of 1,000 facts over TLS to a real hub
//! server (in process, on loopback), which authenticates, parses, checks checksums and
//! sequences, validates every ledger entry and commits each push durably. In the same
//! run, the baseline: a bare batched insert of the same rows into a SQLite table of the
//! same shape on the same disk (1,000 rows per transaction, time-ordered keys, WAL,
//! `synchronous=FULL`), with no HTTP, TLS or parsing.
//!
//! `cargo bench -p patron-hub --bench ingest` runs both shapes:
//!   - throughput: 8 stores, each pushing 25,000 facts (25 batches) back to back;
//!   - reconnect: 100 stores, each with 1,000 offline facts, all reconnecting at once;
//!     the time until the hub holds all 100,000.
//!
//! Knobs: `BENCH_STORES`, `BENCH_FACTS` (per store) for the throughput shape.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_hub::api::{AppState, router};
use patron_hub::service::Hub;
use patron_hub::store::HubStore;
use patron_hub::store::sqlite::SqliteStore;
use patron_hub::{serve, tls};
use patron_protocol::Origin;
use patron_protocol::hub::{LedgerEntry, PushRequest, SyncReport};
use patron_sync::session::{Fact, Push, batch};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir(name: &str) -> Result<PathBuf, BoxError> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tmp/patron-hub-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A realistic purchase fact body (what an edge sends for a two-line sale).
fn entry(store: usize, seq: u64) -> String {
    let member =
        uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + (seq % 5000) as u128);
    let txn = uuid::Uuid::now_v7();
    let e = LedgerEntry {
        kind: "purchase".into(),
        at: 1_764_000_000_000 + seq as i64,
        member: Some(member.to_string()),
        txn: txn.to_string(),
        earn: 123,
        expires_at: 1_795_000_000_000,
        available_at: 0,
        spend: 0,
        reverse: 0,
        reverse_lot: None,
        qual_spend: 12_300,
        qual_at: 1_764_000_000_000 + seq as i64,
        body: format!(
            r#"{{"receipt_id":"S{store:03}-R{seq}","lines":[{{"sku":"SKIN-001","category":"skincare","qty":1,"unit_price":9900}},{{"sku":"TEA-7","qty":1,"unit_price":2400}}],"subtotal":12300,"discounts":[],"points_value":0,"total":12300,"rules_version":null,"applied":[],"coupons_used":[]}}"#
        ),
    };
    serde_json::to_string(&e).unwrap_or_default()
}

fn origin(store: usize) -> Origin {
    Origin {
        node: format!("S{store:03}"),
        incarnation: uuid::Uuid::from_u128(store as u128 + 1),
    }
}

/// Serialized push bodies for one store: its facts in batches of 1,000.
fn bodies(store: usize, facts: u64) -> Result<Vec<Vec<u8>>, BoxError> {
    let o = origin(store);
    let mut out = Vec::new();
    let mut seq = 1;
    while seq <= facts {
        let last = (seq + 999).min(facts);
        let fs: Vec<Fact> = (seq..=last)
            .map(|s| Fact {
                origin: o.clone(),
                seq: s,
                body: entry(store, s),
            })
            .collect();
        let req = PushRequest {
            report: SyncReport {
                origin: Some(o.clone()),
                last_seq: facts,
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

struct Running {
    url: String,
    http: reqwest::Client,
    creds: Vec<String>,
    store: Arc<SqliteStore>,
}

async fn start_hub(name: &str, stores: usize) -> Result<Running, BoxError> {
    let dir = bench_dir(name)?;
    tls::init(&dir, &["localhost".into(), "127.0.0.1".into()])?;
    let store = Arc::new(SqliteStore::open(&dir)?);
    let (pem, fp) = tls::ca(&dir)?;
    let hub = Arc::new(Hub::new(store.clone(), pem.clone(), fp));
    let mut creds = Vec::new();
    for s in 0..stores {
        let token = hub.add_store(&origin(s).node, "bench", "all")?;
        let secret = token.rsplit_once('.').map(|(a, _)| a).unwrap_or_default();
        creds.push(hub.enroll(secret, &origin(s).node)?.credential);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(AppState {
        hub,
        admin_hash: None,
    });
    let cfg = tls::server_config(&dir)?;
    tokio::spawn(serve::serve(
        listener,
        app,
        Some(cfg),
        std::future::pending(),
    ));
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
    Ok(Running {
        url: format!("https://{addr}/v1/sync/push"),
        http,
        creds,
        store,
    })
}

/// Every store pushes its bodies in order, all stores at once; returns the elapsed time.
async fn push_all(hub: &Running, per_store: Vec<Vec<Vec<u8>>>) -> Result<Duration, BoxError> {
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
    Ok(start.elapsed())
}

/// The baseline: the same rows, batched 1,000 per transaction, into a bare table.
fn bare_insert(stores: usize, facts: u64) -> Result<Duration, BoxError> {
    let dir = bench_dir("bare")?;
    let conn = rusqlite::Connection::open(dir.join("bare.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE facts (id INTEGER PRIMARY KEY, origin INTEGER NOT NULL, seq INTEGER NOT NULL,
                             body TEXT NOT NULL, received_at INTEGER NOT NULL, UNIQUE (origin, seq));",
    )?;
    let rows: Vec<(i64, i64, String)> = (0..stores)
        .flat_map(|s| (1..=facts).map(move |q| (s as i64 + 1, q as i64, entry(s, q))))
        .collect();
    let start = Instant::now();
    for chunk in rows.chunks(1000) {
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO facts (origin, seq, body, received_at) VALUES (?1, ?2, ?3, 0)",
            )?;
            for (o, q, b) in chunk {
                st.execute(rusqlite::params![o, q, b])?;
            }
        }
        tx.commit()?;
    }
    Ok(start.elapsed())
}

fn main() -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Throughput.
        let stores = env_u64("BENCH_STORES", 8) as usize;
        let per = env_u64("BENCH_FACTS", 25_000);
        let total = stores as u64 * per;
        let all: Vec<Vec<Vec<u8>>> = (0..stores)
            .map(|s| bodies(s, per))
            .collect::<Result<_, _>>()?;
        let wire: usize = all.iter().flatten().map(Vec::len).sum();
        let hub = start_hub("throughput", stores).await?;
        let took = push_all(&hub, all).await?;
        anyhow_check(hub.store.fact_count()? == total, "hub holds every fact")?;
        let bare = bare_insert(stores, per)?;
        let rate = total as f64 / took.as_secs_f64();
        let base = total as f64 / bare.as_secs_f64();
        println!("\n### hub ingest, {stores} stores × {per} facts, batches of 1,000\n");
        println!("| run | facts | seconds | facts/s |");
        println!("|---|---:|---:|---:|");
        println!(
            "| hub: HTTPS push → judge → validate → SQLite | {total} | {:.2} | {:.0} |",
            took.as_secs_f64(),
            rate
        );
        println!(
            "| baseline: bare batched INSERT, same disk | {total} | {:.2} | {:.0} |",
            bare.as_secs_f64(),
            base
        );
        println!(
            "\nhub / baseline: **{:.2}×**; bytes on the wire per fact (request bodies): **{:.0}**",
            rate / base,
            wire as f64 / total as f64
        );

        // 100 stores reconnecting with 1,000 offline facts each.
        let n = 100;
        let all: Vec<Vec<Vec<u8>>> = (0..n).map(|s| bodies(s, 1000)).collect::<Result<_, _>>()?;
        let hub = start_hub("reconnect", n).await?;
        let took = push_all(&hub, all).await?;
        anyhow_check(
            hub.store.fact_count()? == n as u64 * 1000,
            "hub holds every fact",
        )?;
        println!("\n### {n} stores reconnecting with 1,000 offline facts each\n");
        println!(
            "all {} facts held by the hub after **{:.2} s** ({:.0} facts/s)",
            n * 1000,
            took.as_secs_f64(),
            (n * 1000) as f64 / took.as_secs_f64()
        );
        Ok::<(), BoxError>(())
    })
}

fn anyhow_check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}
