//! Hub-authorized redemption latency (issue 5): `BENCH_CONNS` (default 64) POS lanes
//! spread over `BENCH_STORES` (default 16) stores ask a real hub, over TLS on loopback,
//! to authorize a redemption of 1 point for a random member of `BENCH_MEMBERS` (default
//! 5,000) who hold points, for `BENCH_SECS` (default 10) each, each member asked for
//! by the store that registered them. The stores push `BENCH_FACTS` (default 5,000)
//! purchases each, spread over their own members (a store may write facts only of
//! members it serves): 16 facts a member by default; 2,000 with
//! `BENCH_MEMBERS=400 BENCH_FACTS=50000` (issue 16). Each request is what an
//! edge sends before a sale that redeems: authenticate the store, derive the member's
//! balance over their facts, subtract the points held for other sales, hold the
//! points durably.
//!
//! Baselines in the same run, with the same concurrency and client:
//!   (a) `GET /healthz` on the same hub, saturating and at the offered rate: TLS + HTTP
//!       + one blocking storage read, the ceiling for any hub request;
//!   (b) a bare SQLite transaction per request (one row inserted, WAL,
//!       `synchronous=FULL`, one connection behind a mutex, on the same disk): the
//!       floor for a hub that makes each authorization durable on its own;
//!   (c) at the offered rate, the same insert through a bare group-commit thread (every
//!       request waiting shares one transaction and one sync): the disk's own tail for
//!       durable answers at that rate, which no server on this disk can beat.
//!
//! The authorization runs twice: saturating (every lane asks again as soon as it is answered) and
//! at a fixed offered rate, `BENCH_RATE` per second over all lanes (default 2,000),
//! whose latency counts from each request's scheduled instant.
//!
//! With `BENCH_ASK=claim` each request is instead a claim of a limited entitlement
//! (`POST /v1/claims`, issue 18): count the member's claims of the counter over every
//! store and hold one more, durably (limit 1,000 a member, so every claim is granted).
//!
//! `cargo bench -p patron-hub --bench authorize`
//! `BENCH_ASK=claim cargo bench -p patron-hub --bench authorize`

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BoxError, Mix, anyhow_check, bench_dir, bodies, env_u64, push_all, start_hub};
use hdrhistogram::Histogram;
use patron_protocol::hub::{AuthorizeRequest, AuthorizeResponse, ClaimRequest, ClaimResponse};

/// What a run measured.
struct Run {
    name: String,
    ok: u64,
    refused: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Run {
    fn row(&self) -> String {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.name,
            self.ok as f64 / self.secs,
            ms(0.5),
            ms(0.99),
            ms(1.0),
            self.refused
        )
    }
}

/// Runs `conns` tasks for `secs`, each calling `one(task, n)` in a loop; `Ok(true)` is a
/// success, `Ok(false)` a refusal, and an error stops the run. With `rate` (requests
/// per second over all tasks) each task sends on a fixed schedule and latency counts
/// from the scheduled instant, so a slow answer also counts against the requests it
/// delayed; without, each task sends as soon as its previous answer came (saturation).
async fn drive<F, Fut>(
    name: &str,
    conns: u64,
    secs: u64,
    rate: Option<u64>,
    one: F,
) -> Result<Run, BoxError>
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<bool, BoxError>> + Send,
{
    let one = Arc::new(one);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..conns {
        let (one, stop) = (one.clone(), stop.clone());
        set.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut refused, mut n) = (0u64, 0u64, 0u64);
            let every = rate.map(|r| Duration::from_secs_f64(conns as f64 / r.max(1) as f64));
            // Tasks start spread over one interval rather than all at once.
            let first =
                start + every.map_or(Duration::ZERO, |e| e.mul_f64(c as f64 / conns as f64));
            while !stop.load(Ordering::Relaxed) {
                let t = match every {
                    Some(e) => {
                        let due = first + e.saturating_mul(n as u32);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                if one(c, n).await? {
                    ok += 1;
                } else {
                    refused += 1;
                }
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                n += 1;
            }
            Ok::<_, BoxError>((ok, refused, hist))
        });
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        name: name.to_string(),
        ok: 0,
        refused: 0,
        secs: 0.0,
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    while let Some(r) = set.join_next().await {
        let (ok, refused, hist) = r??;
        run.ok += ok;
        run.refused += refused;
        run.hist.add(hist)?;
    }
    run.secs = start.elapsed().as_secs_f64();
    Ok(run)
}

/// Baseline (b): one durable transaction per request, serialized on one connection.
fn bare_db() -> Result<rusqlite::Connection, BoxError> {
    bare_db_named("authorize-bare")
}

/// One answer of the group committer: the row was committed durably, or why not.
type Committed = tokio::sync::oneshot::Sender<Result<bool, BoxError>>;

/// A thread that commits every request waiting when it is free in one transaction (one
/// sync), as the hub's authorizer groups asks: the floor for durable answers on this
/// disk at a given rate.
fn group_committer(mut conn: rusqlite::Connection) -> std::sync::mpsc::Sender<(String, Committed)> {
    let (send, recv) = std::sync::mpsc::channel::<(String, Committed)>();
    std::thread::spawn(move || {
        while let Ok(first) = recv.recv() {
            let mut batch = vec![first];
            batch.extend(recv.try_iter());
            let done = (|| -> rusqlite::Result<()> {
                let tx = conn.transaction()?;
                for (member, _) in &batch {
                    tx.prepare_cached(
                        "INSERT INTO holds (txn, member, points) VALUES (?1, ?2, 1)",
                    )?
                    .execute(rusqlite::params![uuid::Uuid::now_v7().to_string(), member])?;
                }
                tx.commit()
            })();
            for (_, answer) in batch {
                let _ = answer.send(match &done {
                    Ok(()) => Ok(true),
                    Err(e) => Err(e.to_string().into()),
                });
            }
        }
    });
    send
}

fn bare_db_named(name: &str) -> Result<rusqlite::Connection, BoxError> {
    let dir = bench_dir(name)?;
    let conn = rusqlite::Connection::open(dir.join("bare.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE holds (txn TEXT PRIMARY KEY, member TEXT NOT NULL, points INTEGER NOT NULL) WITHOUT ROWID;",
    )?;
    Ok(conn)
}

fn main() -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stores = env_u64("BENCH_STORES", 16) as usize;
        let conns = env_u64("BENCH_CONNS", 64);
        let secs = env_u64("BENCH_SECS", 10);
        // `BENCH_MEMBERS` (default 5,000) members, each store's share of them sharing
        // its `BENCH_FACTS` (default 5,000) purchases: 16 facts a member by default;
        // 400 members and 50,000 facts give each member 2,000 facts (issue 16).
        let own = (env_u64("BENCH_MEMBERS", 5000) / stores as u64).max(1);
        let members = own * stores as u64;
        let per_store = env_u64("BENCH_FACTS", 5000).max(1);
        let hub = start_hub("authorize", stores).await?;
        // Every member earns 123 points a fact: far more than a run holds, so every
        // authorization is granted and does the full work.
        let seed: Vec<Vec<Vec<u8>>> = (0..stores)
            .map(|s| bodies(s, per_store, Mix::Purchases { per_store: own }))
            .collect::<Result<_, _>>()?;
        push_all(&hub, seed).await?;
        let history = per_store / own;

        let (http, base, creds) = (hub.http.clone(), hub.base.clone(), Arc::new(hub.creds));
        let claims = std::env::var("BENCH_ASK").is_ok_and(|v| v == "claim");
        let (path, what) = if claims {
            ("/v1/claims", "claim")
        } else {
            ("/v1/redeem/authorize", "redeem/authorize")
        };
        let url = format!("{base}{path}");
        let paced = env_u64("BENCH_RATE", 2000);
        // Member `m` of the run: store `m % stores`'s member `m / stores`, asked for by
        // that store.
        let ask_for = move |_c: u64, m: u64| {
                let (http, url, creds) = (http.clone(), url.clone(), creds.clone());
                async move {
                    let home = (m % creds.len() as u64) as usize;
                    let member = common::member(home, m / creds.len() as u64).to_string();
                    let body = if claims {
                        serde_json::to_vec(&ClaimRequest {
                            member,
                            claim: uuid::Uuid::now_v7().to_string(),
                            entitlement: "benefit:bench".into(),
                            period: "2026-12".into(),
                            limit: 1_000,
                            unsynced: 0,
                        })?
                    } else {
                        serde_json::to_vec(&AuthorizeRequest {
                            member,
                            txn: uuid::Uuid::now_v7().to_string(),
                            points: 1,
                            unsynced: 0,
                            lease_left: 0,
                            budget_ms: 0,
                        })?
                    };
                    let r = http
                        .post(&url)
                        .bearer_auth(&creds[home])
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        return Err(format!("{url}: HTTP {}", r.status()).into());
                    }
                    let granted = if claims {
                        r.json::<ClaimResponse>().await?.granted
                    } else {
                        r.json::<AuthorizeResponse>().await?.granted
                    };
                    Ok::<bool, BoxError>(granted)
                }
        };
        // Warm-up: the first ask for a member derives their ledger snapshot from every
        // fact of theirs (the hub keeps it from then on); timed apart, `conns` at once.
        let warm = Instant::now();
        let mut next = 0u64;
        while next < members {
            let mut wave = tokio::task::JoinSet::new();
            for c in 0..conns.min(members - next) {
                wave.spawn(ask_for(c, next + c));
            }
            next += conns.min(members - next);
            while let Some(r) = wave.join_next().await {
                r??;
            }
        }
        let warm = warm.elapsed();
        let ask = move |c: u64, n: u64| ask_for(c, (c * 7919 + n * 104_729) % 1_000_003 % members);
        let authorize = drive(
            &format!("hub: POST /v1/{what}, saturating"),
            conns,
            secs,
            None,
            ask.clone(),
        )
        .await?;
        let at_rate = drive(
            &format!("hub: POST /v1/{what}, {paced}/s offered"),
            conns,
            secs,
            Some(paced),
            ask,
        )
        .await?;

        let (http, url) = (hub.http.clone(), format!("{base}/healthz"));
        let healthz = move |_, _| {
            let (http, url) = (http.clone(), url.clone());
            async move { Ok(http.get(&url).send().await?.status().is_success()) }
        };
        let health = drive(
            "(a) hub: GET /healthz (TLS), saturating",
            conns,
            secs,
            None,
            healthz.clone(),
        )
        .await?;
        let health_paced = drive(
            &format!("(a) hub: GET /healthz (TLS), {paced}/s offered"),
            conns,
            secs,
            Some(paced),
            healthz,
        )
        .await?;

        let db = Arc::new(Mutex::new(bare_db()?));
        let insert = move |c: u64, n: u64| {
            let db = db.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut conn = db.lock().map_err(|_| "poisoned")?;
                    let tx = conn.transaction()?;
                    tx.prepare_cached("INSERT INTO holds (txn, member, points) VALUES (?1, ?2, 1)")?
                        .execute(rusqlite::params![
                            uuid::Uuid::now_v7().to_string(),
                            format!("m{}", (c * 7919 + n) % 5000)
                        ])?;
                    tx.commit()?;
                    Ok::<bool, BoxError>(true)
                })
                .await?
            }
        };
        let bare = drive(
            "(b) bare SQLite: 1 durable txn per request, saturating",
            conns,
            secs,
            None,
            insert.clone(),
        )
        .await?;
        drop(insert);
        // The disk's own tail at the offered rate: every answer waits for a sync, so a
        // device stall delays every request that arrives during it, however the
        // requests are grouped.
        let queue = group_committer(bare_db_named("authorize-group")?);
        let bare_paced = drive(
            &format!("(c) bare SQLite group commit, {paced}/s offered"),
            conns,
            secs,
            Some(paced),
            move |c, n| {
                let queue = queue.clone();
                async move {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    queue
                        .send((format!("m{}", (c * 7919 + n) % 5000), tx))
                        .map_err(|_| "group committer stopped")?;
                    rx.await?
                }
            },
        )
        .await?;

        anyhow_check(authorize.ok > 0, "authorizations were granted")?;
        let title = if claims { "claim" } else { "redemption" };
        println!(
            "\n### hub-authorized {title}, {conns} connections over {stores} stores, {members} members with {history} facts each, {secs}s each\n"
        );
        println!(
            "First ask of each member (derives the snapshot), {conns} at once: {members} in {:.2} s, {:.0}/s\n",
            warm.as_secs_f64(),
            members as f64 / warm.as_secs_f64()
        );
        println!("| run | ok/s | p50 ms | p99 ms | max ms | refused |");
        println!("|---|---:|---:|---:|---:|---:|");
        for r in [&authorize, &at_rate, &health, &health_paced, &bare, &bare_paced] {
            println!("{}", r.row());
        }
        let p99 = |r: &Run| r.hist.value_at_quantile(0.99) as f64 / 1000.0;
        println!(
            "\n{what} p99 at {paced}/s offered **{:.2} ms** (target ≤ 20 ms), {:.2}× (a) and {:.2}× (c) at that rate; \
             saturating: {:.2} ms, {:.2}× (a) and {:.2}× (b)",
            p99(&at_rate),
            p99(&at_rate) / p99(&health_paced),
            p99(&at_rate) / p99(&bare_paced),
            p99(&authorize),
            p99(&authorize) / p99(&health),
            p99(&authorize) / p99(&bare)
        );
        Ok::<(), BoxError>(())
    })
}
