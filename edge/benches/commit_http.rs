//! End-to-end HTTP benchmarks of the edge, each with its baselines measured in the
//! same run (these machines drift ~20% between runs; compare ratios, not absolutes).
//!
//! `cargo bench -p patron-edge --bench commit_http` runs `commit`: 64 keep-alive
//! connections POST `checkout/commit` (2–3 line baskets, 20,000 members) to a real
//! `patron-edge` for a fixed time, then the same load against
//!   (a) a bare axum endpoint doing one durable SQLite insert per request, and
//!   (b) the same endpoint with group commit (the edge's writer) — the one-row ceiling,
//!   plus (b) on a database encrypted at rest (SQLCipher, as the edge's is: the ratio
//!   of the two is the cost of the encryption) and a no-op axum endpoint as the HTTP
//!   ceiling. All durable baselines use WAL with `synchronous=FULL` in a directory on
//!   the same disk as the edge's.
//!
//! `cargo bench -p patron-edge --bench commit_http -- lookup` seeds 1,000,000 members,
//! gives the first 10,000 of them 200 facts each over two years
//! (`BENCH_HISTORY_MEMBERS`, `BENCH_HISTORY_FACTS`), and measures `GET
//! /v1/members?phone=` latency over all members and over those with history, against a
//! point SELECT by primary key on the same database file and the no-op HTTP endpoint.
//!
//! `cargo bench -p patron-edge --bench commit_http -- history` gives members a history
//! first: 2,000 members with 10 facts (sales over HTTP), 40 with 2,000
//! (`BENCH_LONG_FACTS`) and one with 10,000 (`BENCH_DEEP_FACTS`), those spread over the
//! last `BENCH_SPREAD_DAYS` (default 730) days as a loyal member's would be: sales
//! earning lots that expire a year later, a redemption in ten, written into the stopped
//! edge's database and their ledger snapshots derived by `patron-edge rebuild-ledgers`
//! (timed). Then `checkout/commit` for the short and the long histories alternate over
//! two rounds (same run, same drift), and a lookup by phone of the 10,000-fact member
//! runs against a lookup of a 10-fact member. `BENCH_SPREAD_DAYS=0` writes the long
//! histories over HTTP instead (all on one day).
//!
//! The edge runs fresh with no rule set, with `BENCH_RULES` (default 10) active
//! rules, and with its database not encrypted at rest (`storage.encrypt_at_rest =
//! false`: the cost of the encryption, edge against edge), alternating over
//! `BENCH_ROUNDS` rounds (default 4) whose order reverses every round, so the cost of
//! promotions and of encryption is measured against the same run and the same drift.
//!
//! Knobs: `BENCH_SECS` (default 10), `BENCH_CONNS` (default 64), `BENCH_MEMBERS`,
//! `BENCH_RULES`, `BENCH_ROUNDS`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post as route_post;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use patron_edge::store::{self, Writer};
use patron_protocol::pos::CommitRequest;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    // A child process serving one baseline.
    if let Ok(mode) = std::env::var("PATRON_BENCH_SERVE") {
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve_baseline(&mode));
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.iter().any(|a| a == "lookup") {
        rt.block_on(lookup_bench())
    } else if args.iter().any(|a| a == "history") {
        rt.block_on(history_bench())
    } else if args.iter().any(|a| a == "coupons") {
        rt.block_on(coupon_bench())
    } else {
        rt.block_on(commit_bench())
    }
}

// ---------- baselines ----------

async fn serve_baseline(mode: &str) -> Result<(), BoxError> {
    let dir = PathBuf::from(std::env::var("PATRON_BENCH_DIR")?);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{mode}.sqlite"));
    let _ = std::fs::remove_file(&path);
    // `group-enc`: the same writer on a database encrypted at rest as the edge's is.
    let key = patron_sqlite::connect::DbKey::new([9; 32]);
    let conn = store::connect_keyed(&path, false, (mode == "group-enc").then_some(&key))?;
    conn.execute_batch("CREATE TABLE sales (id INTEGER PRIMARY KEY, receipt_id TEXT NOT NULL, total INTEGER NOT NULL)")?;
    let app = match mode {
        "noop" => Router::new().route("/commit", route_post(noop)),
        "naive" => Router::new()
            .route("/commit", route_post(naive))
            .with_state(Arc::new(std::sync::Mutex::new(conn))),
        "group" | "group-enc" => Router::new()
            .route("/commit", route_post(group))
            .with_state(Writer::spawn(conn, 1, 1, 512, 16384)?),
        other => return Err(format!("unknown baseline {other}").into()),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

fn parse(body: &Bytes) -> Result<(String, i64), StatusCode> {
    let req: CommitRequest = serde_json::from_slice(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let total = req.basket.lines.iter().map(|l| l.qty * l.unit_price).sum();
    Ok((req.receipt_id, total))
}

async fn noop(body: Bytes) -> Result<(StatusCode, &'static str), StatusCode> {
    parse(&body)?;
    Ok((StatusCode::CREATED, "{}"))
}

async fn naive(
    State(conn): State<Arc<std::sync::Mutex<rusqlite::Connection>>>,
    body: Bytes,
) -> Result<(StatusCode, &'static str), StatusCode> {
    let (receipt, total) = parse(&body)?;
    tokio::task::spawn_blocking(move || {
        let c = conn.lock().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        c.execute(
            "INSERT INTO sales (receipt_id, total) VALUES (?1, ?2)",
            rusqlite::params![receipt, total],
        )
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)??;
    Ok((StatusCode::CREATED, "{}"))
}

async fn group(
    State(w): State<Writer>,
    body: Bytes,
) -> Result<(StatusCode, &'static str), StatusCode> {
    let (receipt, total) = parse(&body)?;
    w.write(move |ctx| -> Result<usize, store::StoreError> {
        Ok(ctx
            .conn
            .prepare_cached("INSERT INTO sales (receipt_id, total) VALUES (?1, ?2)")?
            .execute(rusqlite::params![receipt, total])?)
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((StatusCode::CREATED, "{}"))
}

/// The stopped bench edge's database (`<dir>/data/edge.sqlite`), under its key.
fn edge_db(db: &Path, read_only: bool) -> Result<rusqlite::Connection, BoxError> {
    let data = db.parent().ok_or("the database has no directory")?;
    let keys = patron_keydir::beside(data, "patron-edge");
    Ok(store::connect_at(data, &keys, read_only)?.1)
}

// ---------- processes ----------

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_addr(child: &mut Child, prefix: &str) -> Result<SocketAddr, BoxError> {
    use std::io::BufRead;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufReader::new(out).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(a) = line.strip_prefix(prefix) {
            let addr = a.trim().parse()?;
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok(addr);
        }
    }
    Err("child exited before listening".into())
}

fn spawn_baseline(mode: &str, dir: &Path) -> Result<(Proc, SocketAddr), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("PATRON_BENCH_SERVE", mode)
        .env("PATRON_BENCH_DIR", dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let addr = read_addr(&mut child, "listening on ")?;
    Ok((Proc(child), addr))
}

struct EdgeProc {
    proc_: Proc,
    addr: SocketAddr,
    token: String,
}

fn edge_cmd(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_patron-edge"));
    c.arg("--config").arg(config).env("RUST_LOG", "warn");
    c
}

/// Writes the benchmark edge's configuration in `dir` (also over a reused database's:
/// the configuration follows the code).
fn write_config(dir: &Path) -> Result<PathBuf, BoxError> {
    write_config_with(dir, "")
}

/// [`write_config`] with `extra` TOML after it (a `[storage]` table: `extra` must not
/// repeat the tables written here).
fn write_config_with(dir: &Path, extra: &str) -> Result<PathBuf, BoxError> {
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            // Plain HTTP on loopback: the figures are the edge's own work, as before
            // the POS API served HTTPS (TLS costs the POS a handshake per connection
            // and a few microseconds a request on a kept-alive one).
            // One lane looks up members by phone as fast as it can: no lookup budget.
            "store_id = \"B001\"\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[tls]\nenabled = false\n[privacy]\nphone_lookups_per_lane_per_minute = 0\n{extra}",
            dir.join("data").display().to_string()
        ),
    )?;
    Ok(config)
}

fn prepare_edge(dir: &Path, members: u64) -> Result<PathBuf, BoxError> {
    prepare_edge_with(dir, members, "")
}

fn prepare_edge_with(dir: &Path, members: u64, extra: &str) -> Result<PathBuf, BoxError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let config = write_config_with(dir, extra)?;
    let t = Instant::now();
    let out = edge_cmd(&config)
        .args(["seed-members", "--count", &members.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(format!("seeding failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    eprintln!(
        "seeded {members} members in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(config)
}

fn start_edge(config: &Path) -> Result<EdgeProc, BoxError> {
    // A name of its own each start: the history bench starts one edge twice.
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "bench-{}-{}",
        std::process::id(),
        STARTS.fetch_add(1, Ordering::Relaxed)
    );
    let out = edge_cmd(config)
        .args(["lane", "add", &name, "--role", "admin"])
        .output()?;
    let token = String::from_utf8(out.stdout)?
        .lines()
        .nth(1)
        .ok_or("no token")?
        .trim()
        .to_string();
    let mut child = edge_cmd(config)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let addr = read_addr(&mut child, "patron-edge listening on http://")?;
    Ok(EdgeProc {
        proc_: Proc(child),
        addr,
        token,
    })
}

// ---------- load generator ----------

struct Load {
    name: String,
    ok: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Drives `conns` keep-alive HTTP/1.1 connections for `secs`, each sending the request
/// `make(n)` builds for its n-th request, and records successes and latency.
async fn drive<F>(
    name: &str,
    addr: SocketAddr,
    conns: u64,
    secs: u64,
    expect: u16,
    make: F,
) -> Result<Load, BoxError>
where
    F: Fn(u64, u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (make, ok, errors) = (make.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                let req = make(c, n);
                sender.ready().await?;
                let t = Instant::now();
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                let us = t.elapsed().as_micros() as u64;
                if status == expect {
                    ok.fetch_add(1, Ordering::Relaxed);
                    hist.record(us.max(1)).ok();
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, BoxError>(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Load {
        name: name.into(),
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs,
        hist,
    })
}

fn commit_body(receipt: &str, member: Option<&str>, n: u64) -> String {
    let lines = if n.is_multiple_of(2) {
        r#"[{"sku":"SKIN-001","category":"skincare","qty":2,"unit_price":9900},{"sku":"BAG-010","category":"bags","qty":1,"unit_price":59900}]"#
    } else {
        r#"[{"sku":"TEA-7","category":"food","qty":3,"unit_price":2500},{"sku":"CUP-2","qty":1,"unit_price":1990},{"sku":"BAG-S","qty":1,"unit_price":50}]"#
    };
    match member {
        Some(m) => format!(
            r#"{{"member_id":"{m}","receipt_id":"{receipt}","lines":{lines},"redeem_points":0}}"#
        ),
        None => format!(r#"{{"receipt_id":"{receipt}","lines":{lines}}}"#),
    }
}

fn post(
    addr: SocketAddr,
    path: &str,
    token: &str,
    key: &str,
    body: String,
) -> Request<Full<Bytes>> {
    let mut b = Request::post(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"));
    if !key.is_empty() {
        b = b.header("idempotency-key", key);
    }
    b.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

async fn fetch_member_ids(
    addr: SocketAddr,
    token: &str,
    phones: impl Iterator<Item = String>,
) -> Result<Vec<String>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut ids = Vec::new();
    for phone in phones {
        let req = Request::get(format!("http://{addr}/v1/members?phone={phone}"))
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        sender.ready().await?;
        let body = sender
            .send_request(req)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        ids.push(v["member_id"].as_str().ok_or("lookup failed")?.to_string());
    }
    Ok(ids)
}

/// `GET /v1/members?phone=` for `phone`.
fn lookup(addr: SocketAddr, token: &str, phone: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}/v1/members?phone={phone}"))
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

fn phone(i: u64) -> String {
    format!("1{:010}", 3_000_000_000 + i)
}

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("patron-bench")
}

fn report(title: &str, rows: &[&Load], baselines: &[(&str, &Load)]) {
    println!("\n### {title}\n");
    println!("| run | ok/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for l in rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            l.name,
            l.rate(),
            l.ms(0.5),
            l.ms(0.99),
            l.ms(1.0),
            l.errors
        );
    }
    if let Some(first) = rows.first() {
        for (label, b) in baselines {
            println!(
                "\n{} / {}: **{:.2}×** throughput",
                first.name,
                label,
                first.rate() / b.rate()
            );
        }
    }
}

// ---------- benches ----------

async fn put_json(
    addr: SocketAddr,
    token: &str,
    path: &str,
    body: String,
) -> Result<u16, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::put(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    Ok(resp.status().as_u16())
}

async fn drive_edge(
    label: &str,
    dir: &Path,
    members: u64,
    rules: Option<serde_json::Value>,
    extra: &str,
    conns: u64,
    secs: u64,
) -> Result<Load, BoxError> {
    let config = prepare_edge_with(dir, members, extra)?;
    let edge = start_edge(&config)?;
    if let Some(r) = rules {
        let status = put_json(edge.addr, &edge.token, "/v1/admin/rule-set", r.to_string()).await?;
        if status != 201 {
            return Err(format!("loading the rule set: HTTP {status}").into());
        }
    }
    let ids = Arc::new(fetch_member_ids(edge.addr, &edge.token, (0..members).map(phone)).await?);
    let run = std::process::id();
    let (addr, token) = (edge.addr, edge.token.clone());
    let tag = label.len();
    let load = drive(label, addr, conns, secs, 201, move |c, n| {
        let receipt = format!("R{run}-{tag}-{c}-{n}");
        let member = ids[((c * 7919 + n * 104_729) % ids.len() as u64) as usize].as_str();
        post(
            addr,
            "/v1/checkout/commit",
            &token,
            &receipt,
            commit_body(&receipt, Some(member), n),
        )
    })
    .await?;
    // The WAL must stay bounded under sustained load (the checkpointer restarts it).
    let wal = dir.join("data").join(format!("{}-wal", store::DB_FILE));
    let wal_mb = std::fs::metadata(&wal).map_or(0, |m| m.len()) / (1024 * 1024);
    println!("{label}: WAL file {wal_mb} MiB after the run");
    drop(edge.proc_);
    Ok(load)
}

/// `BENCH_CONNS` connections each give `per_conn` coupons (¥5 off) over one
/// keep-alive connection, to members spread over `ids`: connection `c`'s codes, in
/// order, with their members.
async fn give_coupons(
    addr: SocketAddr,
    token: &str,
    ids: Arc<Vec<String>>,
    conns: u64,
    per_conn: u64,
) -> Result<Vec<Vec<(String, String)>>, BoxError> {
    let mut set = tokio::task::JoinSet::new();
    for c in 0..conns {
        let (ids, token) = (ids.clone(), token.to_string());
        set.spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut out = Vec::new();
            for n in 0..per_conn {
                let member = ids[((c * 7919 + n * 104_729) % ids.len() as u64) as usize].clone();
                let body = r#"{"label":"¥5","off":500,"valid_days":30}"#.to_string();
                let path = format!("/v1/members/{member}/coupons");
                sender.ready().await?;
                let r = sender
                    .send_request(post(addr, &path, &token, "", body))
                    .await?;
                let status = r.status();
                let body = r.into_body().collect().await?.to_bytes();
                if status != StatusCode::CREATED {
                    return Err::<_, BoxError>(format!("coupon: HTTP {status}").into());
                }
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                let code = v["code"].as_str().ok_or("no code")?.to_string();
                out.push((member, code));
            }
            Ok((c, out))
        });
    }
    let mut all = vec![Vec::new(); conns as usize];
    while let Some(r) = set.join_next().await {
        let (c, out) = r??;
        all[c as usize] = out;
    }
    Ok(all)
}

/// `cargo bench -p patron-edge --bench commit_http -- coupons`: checkout/commit with a
/// coupon in every sale (each sale its own coupon, given beforehand) against the same
/// sales without, on the same edge, alternating over `BENCH_ROUNDS` (default 2)
/// rounds. A coupon's use is checked, marked used, and claimed (a `claim` fact: single
/// use across the chain, docs/claims.md) in the sale's transaction.
async fn coupon_bench() -> Result<(), BoxError> {
    let secs = env_u64("BENCH_SECS", 10);
    let conns = env_u64("BENCH_CONNS", 64);
    let members = env_u64("BENCH_MEMBERS", 20_000);
    let rounds = env_u64("BENCH_ROUNDS", 2).max(1);
    let per_conn = env_u64("BENCH_COUPONS_PER_CONN", 1_500);
    let dir = bench_dir().join("edge-coupons");
    let config = prepare_edge_with(&dir, members, "")?;
    let edge = start_edge(&config)?;
    let ids = Arc::new(fetch_member_ids(edge.addr, &edge.token, (0..members).map(phone)).await?);
    let run = std::process::id();
    let (addr, token) = (edge.addr, edge.token.clone());
    let mut rows = Vec::new();
    let (mut with, mut without) = (0.0, 0.0);
    for round in 0..rounds {
        let given = Instant::now();
        let codes = Arc::new(give_coupons(addr, &token, ids.clone(), conns, per_conn).await?);
        println!(
            "round {round}: {} coupons given in {:.1} s",
            conns * per_conn,
            given.elapsed().as_secs_f64()
        );
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for coupon in order {
            let (ids, codes, token) = (ids.clone(), codes.clone(), token.clone());
            let label = if coupon {
                "patron-edge checkout/commit, a coupon in every sale"
            } else {
                "patron-edge checkout/commit, no coupon"
            };
            let load = drive(label, addr, conns, secs, 201, move |c, n| {
                let receipt = format!("R{run}-{round}-{coupon}-{c}-{n}");
                let body = if coupon {
                    // Past the coupons given, a sale would reuse one and be refused:
                    // counted as an error, so a short supply shows.
                    let (member, code) = &codes[c as usize][(n % per_conn) as usize];
                    let b = commit_body(&receipt, Some(member), n);
                    b.replacen(
                        "\"redeem_points\":0",
                        &format!("\"redeem_points\":0,\"coupon_codes\":[\"{code}\"]"),
                        1,
                    )
                } else {
                    let member =
                        ids[((c * 7919 + n * 104_729) % ids.len() as u64) as usize].as_str();
                    commit_body(&receipt, Some(member), n)
                };
                post(addr, "/v1/checkout/commit", &token, &receipt, body)
            })
            .await?;
            if coupon {
                with += load.rate();
            } else {
                without += load.rate();
            }
            rows.push(load);
        }
    }
    drop(edge.proc_);
    let refs: Vec<&Load> = rows.iter().collect();
    report(
        &format!(
            "checkout/commit with a coupon in every sale, {conns} connections, {secs}s each, {members} members, {rounds} round(s)"
        ),
        &refs,
        &[],
    );
    println!(
        "\na coupon in every sale / none, all rounds: **{:.2}×** throughput",
        with / without
    );
    Ok(())
}

async fn commit_bench() -> Result<(), BoxError> {
    let secs = env_u64("BENCH_SECS", 10);
    let conns = env_u64("BENCH_CONNS", 64);
    let members = env_u64("BENCH_MEMBERS", 20_000);
    let n_rules = env_u64("BENCH_RULES", 10) as usize;
    let rounds = env_u64("BENCH_ROUNDS", 4).max(1);
    let dir = bench_dir();
    let run = std::process::id();
    let plain = "patron-edge checkout/commit";
    let ruled = format!("patron-edge checkout/commit, {n_rules} rules");
    let unencrypted = "patron-edge checkout/commit, database not encrypted";

    // The two edge configurations alternate, and swap places every round, so a drift of
    // the machine during the run weighs on both alike; the baselines run once, between.
    let mut edges: Vec<(Load, Load)> = Vec::new();
    let mut clear: Vec<Load> = Vec::new();
    let mut baselines = Vec::new();
    for round in 0..rounds {
        let mut pair: [Option<Load>; 3] = [None, None, None];
        let order = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for which in order {
            let (label, rules, sub, extra) = match which {
                0 => (plain.to_string(), None, "edge", ""),
                1 => (
                    ruled.clone(),
                    Some(common::rules(n_rules)),
                    "edge-rules",
                    "",
                ),
                _ => (
                    unencrypted.to_string(),
                    None,
                    "edge-clear",
                    "[storage]\nencrypt_at_rest = false\n",
                ),
            };
            let load =
                drive_edge(&label, &dir.join(sub), members, rules, extra, conns, secs).await?;
            pair[which] = Some(load);
        }
        if let [Some(a), Some(b), Some(c)] = pair {
            edges.push((a, b));
            clear.push(c);
        }
        if round == 0 {
            for (mode, label) in [
                ("naive", "(a) axum + 1 insert/txn, FULL"),
                ("group", "(b) axum + group commit, FULL"),
                ("group-enc", "(b) encrypted at rest (SQLCipher)"),
                ("noop", "axum no-op (HTTP ceiling)"),
            ] {
                let (p, addr) = spawn_baseline(mode, &dir)?;
                let l = drive(label, addr, conns, secs, 201, move |c, n| {
                    let receipt = format!("R{run}-{c}-{n}");
                    post(addr, "/commit", "", "", commit_body(&receipt, None, n))
                })
                .await?;
                drop(p);
                baselines.push(l);
            }
        }
    }
    let (Some((first_plain, _)), [naive, group, group_enc, noop]) = (edges.first(), &baselines[..])
    else {
        return Err("no runs".into());
    };
    let mut rows: Vec<&Load> = vec![first_plain, naive, group, group_enc, noop];
    rows.extend(edges.iter().map(|(_, r)| r));
    rows.extend(edges.iter().skip(1).map(|(p, _)| p));
    rows.extend(clear.iter());
    report(
        &format!(
            "checkout/commit, {conns} connections, {secs}s each, {members} members, {rounds} round(s)"
        ),
        &rows,
        &[("(a)", naive), ("(b)", group)],
    );
    let ratios: Vec<f64> = edges.iter().map(|(p, r)| r.rate() / p.rate()).collect();
    let (ok_plain, ok_ruled) = edges
        .iter()
        .fold((0.0, 0.0), |(a, b), (p, r)| (a + p.rate(), b + r.rate()));
    println!(
        "\n{n_rules} rules / no rules, per round: {}; all rounds: **{:.2}×** throughput",
        ratios
            .iter()
            .map(|r| format!("{r:.2}×"))
            .collect::<Vec<_>>()
            .join(", "),
        ok_ruled / ok_plain
    );
    let ok_clear: f64 = clear.iter().map(Load::rate).sum();
    println!(
        "encrypted / not encrypted database, per round: {}; all rounds: **{:.2}×** throughput; on the group-commit ceiling ((b) encrypted / (b)): **{:.2}×**",
        edges
            .iter()
            .zip(&clear)
            .map(|((p, _), c)| format!("{:.2}×", p.rate() / c.rate()))
            .collect::<Vec<_>>()
            .join(", "),
        ok_plain / ok_clear,
        group_enc.rate() / group.rate()
    );
    Ok(())
}

async fn lookup_bench() -> Result<(), BoxError> {
    let secs = env_u64("BENCH_SECS", 10);
    let members = env_u64("BENCH_MEMBERS", 1_000_000);
    let dir = bench_dir().join("lookup");
    let db = dir.join("data").join(store::DB_FILE);
    // Issue 16: the first `BENCH_HISTORY_MEMBERS` (default 10,000) members get
    // `BENCH_HISTORY_FACTS` (default 200) facts each, spread over two years (as the
    // history benchmark writes them), and are looked up on their own as well.
    let (with_history, history_facts) = (
        env_u64("BENCH_HISTORY_MEMBERS", 10_000).min(members),
        env_u64("BENCH_HISTORY_FACTS", 200),
    );
    let marker = dir.join(format!("history-{with_history}x{history_facts}"));
    let config = if db.exists() && marker.exists() && std::env::var_os("BENCH_RESEED").is_none() {
        eprintln!(
            "reusing {} (set BENCH_RESEED=1 to seed again)",
            db.display()
        );
        write_config(&dir)?
    } else {
        let config = prepare_edge(&dir, members)?;
        if with_history > 0 {
            let edge = start_edge(&config)?;
            let ids =
                fetch_member_ids(edge.addr, &edge.token, (0..with_history).map(phone)).await?;
            drop(edge.proc_);
            let t = Instant::now();
            write_spread_history(&db, &ids, history_facts, &[], 0, 730)?;
            rebuild_ledgers(&config)?;
            eprintln!(
                "history: {with_history} members x {history_facts} facts written and their ledgers rebuilt in {:.1}s",
                t.elapsed().as_secs_f64()
            );
        }
        std::fs::write(&marker, b"")?;
        config
    };
    let edge = start_edge(&config)?;
    let (addr, token) = (edge.addr, edge.token.clone());
    let mut loads = Vec::new();
    let mut runs = vec![(String::new(), members)];
    if with_history > 0 {
        runs.push((
            format!(", members with {history_facts} facts"),
            with_history,
        ));
    }
    for (what, pool) in runs {
        for conns in [1u64, 16] {
            let token = token.clone();
            let l = drive(
                &format!("GET /v1/members?phone= ({conns} conn){what}"),
                addr,
                conns,
                secs,
                200,
                move |c, n| lookup(addr, &token, &phone((c * 7919 + n * 104_729) % pool)),
            )
            .await?;
            loads.push(l);
        }
    }
    drop(edge.proc_);

    // Baselines on the same file: a bare primary-key SELECT, and HTTP with no work.
    let conn = edge_db(&db, true)?;
    let ids: Vec<Vec<u8>> = {
        let mut s = conn.prepare("SELECT member_id FROM members LIMIT 100000")?;
        s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut stmt =
        conn.prepare("SELECT phone_enc, wrapped_key FROM members WHERE member_id = ?1")?;
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(secs.min(5)) {
        let id = &ids[(n * 104_729 % ids.len() as u64) as usize];
        let t = Instant::now();
        let _: Vec<u8> = stmt.query_row([id], |r| r.get(0))?;
        hist.record((t.elapsed().as_nanos() as u64 / 1000).max(1))?;
        n += 1;
    }
    let bare = Load {
        name: "bare SQLite SELECT by primary key (in-process)".into(),
        ok: n,
        errors: 0,
        secs: t0.elapsed().as_secs_f64(),
        hist,
    };
    let (p, noop_addr) = spawn_baseline("noop", &bench_dir())?;
    let noop = drive(
        "axum no-op POST (1 conn)",
        noop_addr,
        1,
        secs,
        201,
        move |c, n| {
            post(
                noop_addr,
                "/commit",
                "",
                "",
                commit_body(&format!("R-{c}-{n}"), None, n),
            )
        },
    )
    .await?;
    drop(p);
    let mut rows: Vec<&Load> = loads.iter().collect();
    rows.push(&bare);
    rows.push(&noop);
    report(
        &format!("member lookup by phone, {members} members, {secs}s per run"),
        &rows,
        &[],
    );
    Ok(())
}

/// Runs `patron-edge rebuild-ledgers` on the stopped edge; what it printed.
fn rebuild_ledgers(config: &Path) -> Result<String, BoxError> {
    let out = edge_cmd(config).arg("rebuild-ledgers").output()?;
    if !out.status.success() {
        return Err(format!("rebuild-ledgers: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes `per` sales for each of `members` over `conns` connections; how long it took.
async fn write_history(
    addr: SocketAddr,
    token: &str,
    conns: u64,
    members: &[String],
    per: u64,
    tag: &str,
) -> Result<Duration, BoxError> {
    let total = members.len() as u64 * per;
    let next = Arc::new(AtomicU64::new(0));
    let members = Arc::new(members.to_vec());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns.min(total.max(1)) {
        let (next, members, token, tag) = (
            next.clone(),
            members.clone(),
            token.to_string(),
            tag.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, BoxError>(());
                }
                let member = members[(i % members.len() as u64) as usize].as_str();
                let receipt = format!("H-{tag}-{i}");
                let req = post(
                    addr,
                    "/v1/checkout/commit",
                    &token,
                    &receipt,
                    commit_body(&receipt, Some(member), i),
                );
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                if status != 201 {
                    return Err(format!("writing history: HTTP {status}").into());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

/// Members with long histories against members with short ones, in the same run.
async fn history_bench() -> Result<(), BoxError> {
    let secs = env_u64("BENCH_SECS", 10);
    let conns = env_u64("BENCH_CONNS", 64);
    let long_facts = env_u64("BENCH_LONG_FACTS", 2_000);
    let deep_facts = env_u64("BENCH_DEEP_FACTS", 10_000);
    let (short_n, long_n, short_facts) = (2_000u64, 40u64, 10u64);
    let dir = bench_dir().join("history");
    let config = prepare_edge(&dir, short_n + long_n + 1)?;
    let edge = start_edge(&config)?;
    let (addr, token) = (edge.addr, edge.token.clone());
    let ids = fetch_member_ids(addr, &token, (0..short_n + long_n + 1).map(phone)).await?;
    let (short, rest) = ids.split_at(short_n as usize);
    let (long, deep) = rest.split_at(long_n as usize);
    let spread_days = env_u64("BENCH_SPREAD_DAYS", 730);
    let mut histories = vec![(short, short_facts, "short")];
    if spread_days == 0 {
        histories.extend([(long, long_facts, "long"), (deep, deep_facts, "deep")]);
    }
    for (members, per, tag) in histories {
        let took = write_history(addr, &token, conns, members, per, tag).await?;
        eprintln!(
            "{tag}: {} members x {per} sales written in {:.1}s",
            members.len(),
            took.as_secs_f64()
        );
    }
    let edge = if spread_days == 0 {
        edge
    } else {
        drop(edge.proc_);
        let db = dir.join("data").join(store::DB_FILE);
        write_spread_history(&db, long, long_facts, deep, deep_facts, spread_days)?;
        let t = Instant::now();
        let said = rebuild_ledgers(&config)?;
        eprintln!(
            "rebuild-ledgers: {said} in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        start_edge(&config)?
    };
    let (addr, token) = (edge.addr, edge.token.clone());
    let run = std::process::id();
    let mut loads: Vec<(Load, Load)> = Vec::new();
    for round in 0..2 {
        let mut pair = Vec::new();
        for (label, members) in [
            (format!("commit, members with {short_facts}+ facts"), short),
            (format!("commit, members with {long_facts}+ facts"), long),
        ] {
            let members = Arc::new(members.to_vec());
            let token = token.clone();
            let tag = format!("{round}-{}", label.len());
            let l = drive(&label, addr, conns, secs, 201, move |c, n| {
                let receipt = format!("R{run}-{tag}-{c}-{n}");
                let m = &members[((c * 7919 + n * 104_729) % members.len() as u64) as usize];
                post(
                    addr,
                    "/v1/checkout/commit",
                    &token,
                    &receipt,
                    commit_body(&receipt, Some(m), n),
                )
            })
            .await?;
            pair.push(l);
        }
        let mut it = pair.into_iter();
        if let (Some(a), Some(b)) = (it.next(), it.next()) {
            loads.push((a, b));
        }
    }
    let mut lookups = Vec::new();
    for (label, i) in [
        (
            format!("lookup by phone, a member with {short_facts}+ facts"),
            0,
        ),
        (
            format!("lookup by phone, the member with {deep_facts}+ facts"),
            short_n + long_n,
        ),
    ] {
        let token = token.clone();
        let l = drive(&label, addr, 1, secs, 200, move |_, _| {
            lookup(addr, &token, &phone(i))
        })
        .await?;
        lookups.push(l);
    }
    drop(edge.proc_);
    let rows: Vec<&Load> = loads.iter().flat_map(|(a, b)| [a, b]).collect();
    report(
        &format!("checkout/commit by history length, {conns} connections, {secs}s each, 2 rounds"),
        &rows,
        &[],
    );
    let ratios: Vec<String> = loads
        .iter()
        .map(|(a, b)| format!("{:.2}×", b.rate() / a.rate()))
        .collect();
    let (sa, sb) = loads
        .iter()
        .fold((0.0, 0.0), |(x, y), (a, b)| (x + a.rate(), y + b.rate()));
    println!(
        "\n{long_facts}-fact members / {short_facts}-fact members, per round: {}; all rounds: **{:.2}×** throughput",
        ratios.join(", "),
        sb / sa
    );
    let rows: Vec<&Load> = lookups.iter().collect();
    report(
        "member lookup by phone, by history length, 1 connection",
        &rows,
        &[],
    );
    Ok(())
}

/// Writes `per` facts for each of `long` and `deep_per` for `deep` straight into the
/// stopped edge's database, spread evenly over the last `days` days: sales earning 10
/// points (a lot expiring at the end of its day a year later, spend counted on its
/// day), every tenth a redemption of 50. As the edge would write them under its own
/// origin, in sequence.
fn write_spread_history(
    db: &Path,
    long: &[String],
    per: u64,
    deep: &[String],
    deep_per: u64,
    days: u64,
) -> Result<(), BoxError> {
    const DAY: i64 = 86_400_000;
    const OFFSET: i64 = 8 * 3_600_000;
    let conn = edge_db(db, false)?;
    let (origin, mut seq): (i64, i64) = conn.query_row(
        "SELECT o.id, coalesce(max(f.seq), 0) FROM origins o LEFT JOIN facts f ON f.origin = o.id
          WHERE o.node = 'B001' GROUP BY o.id ORDER BY o.id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let span = days as i64 * DAY;
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO facts (origin, seq, kind, at, member, txn, earn, expires_at, spend, reverse,
                                reverse_lot, qual_spend, qual_at, body, available_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, NULL, ?10, ?11, '{}', 0)",
        )?;
        let mut txn = 0u128;
        for (members, n) in [(long, per), (deep, deep_per)] {
            for m in members {
                let member = *uuid::Uuid::parse_str(m)?.as_bytes();
                for i in 0..n as i64 {
                    let at = now - span + span * i / n as i64;
                    let day_start = (at + OFFSET).div_euclid(DAY) * DAY - OFFSET;
                    seq += 1;
                    txn += 1;
                    let redeem = i % 10 == 9;
                    insert.execute(rusqlite::params![
                        origin,
                        seq,
                        if redeem { "redemption" } else { "purchase" },
                        at,
                        &member[..],
                        &txn.to_be_bytes()[..],
                        if redeem { 0 } else { 10 },
                        if redeem {
                            0
                        } else {
                            day_start + DAY - 1 + 365 * DAY
                        },
                        if redeem { 50 } else { 0 },
                        if redeem { 0 } else { 1_000 },
                        if redeem { 0 } else { day_start },
                    ])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}
