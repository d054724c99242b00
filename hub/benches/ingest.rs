//! Hub ingest, end to end: stores push batches of 1,000 facts over TLS to a real hub
//! server (in process, on loopback), which authenticates, parses, checks checksums and
//! sequences, types and validates every ledger entry once, writes its projections
//! (points movements, profiles, registrations by phone, member merges), and commits
//! each push durably. The facts are a store's real mix of kinds (`common::mix()`:
//! sales, walk-in sales, refunds, redemptions, registrations, profile changes,
//! check-ins, coupons, benefit uses). In the same run, the baseline: a bare batched
//! insert of the same rows into a SQLite table of the facts table's shape on the same
//! disk (1,000 rows per transaction, time-ordered keys, WAL, `synchronous=FULL`, no
//! secondary index), with no HTTP, TLS or parsing.
//!
//! `cargo bench -p patron-hub --bench ingest` runs both shapes:
//!   - throughput: 8 stores, each pushing 25,000 facts (25 batches) back to back;
//!   - reconnect: 100 stores, each with 1,000 offline facts, all reconnecting at once;
//!     the time until the hub holds all 100,000.
//!
//! The projections behind the ingest cursor run as `serve` runs them (a thread woken by
//! pushes, sharing the writer and the CPU); the throughput shape also reports how long
//! after the last acknowledged push they had folded everything.
//!
//! Knobs: `BENCH_STORES`, `BENCH_FACTS` (per store) for the throughput shape;
//! `BENCH_MIX=purchases` pushes member purchases only (the mix of the benchmark before
//! facts were typed, for comparisons with older figures).

mod common;

use std::time::{Duration, Instant};

use common::{
    BoxError, Mix, anyhow_check, bench_dir, bodies, entry, env_u64, projections_caught_up,
    push_all, start_hub,
};
use patron_hub::store::FactLog;

/// The baseline: the same rows, batched 1,000 per transaction, into a bare table.
fn bare_insert(stores: usize, facts: u64) -> Result<Duration, BoxError> {
    let dir = bench_dir("bare")?;
    let conn = rusqlite::Connection::open(dir.join("bare.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE facts (id INTEGER PRIMARY KEY, origin INTEGER NOT NULL, seq INTEGER NOT NULL,
                             body TEXT NOT NULL, received_at INTEGER NOT NULL, kind TEXT NOT NULL,
                             member TEXT, at INTEGER NOT NULL, UNIQUE (origin, seq));",
    )?;
    // The typed columns are taken out before the clock starts: the baseline parses
    // nothing.
    let rows: Vec<(i64, i64, String, String, Option<String>, i64)> = (0..stores)
        .flat_map(|s| (1..=facts).map(move |q| (s, q)))
        .map(|(s, q)| {
            let body = entry(s, q, mix());
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            let member = v["member"].as_str().map(str::to_string);
            let at = v["at"].as_i64().unwrap_or_default();
            (s as i64 + 1, q as i64, body, kind, member, at)
        })
        .collect();
    let start = Instant::now();
    for chunk in rows.chunks(1000) {
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO facts (origin, seq, body, received_at, kind, member, at)
                 VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
            )?;
            for (o, q, b, k, m, at) in chunk {
                st.execute(rusqlite::params![o, q, b, k, m, at])?;
            }
        }
        tx.commit()?;
    }
    Ok(start.elapsed())
}

/// The mix of facts the stores push (`BENCH_MIX`).
fn mix() -> Mix {
    match std::env::var("BENCH_MIX").as_deref() {
        Ok("purchases") => Mix::Purchases {
            per_store: common::REAL_MEMBERS_PER_STORE,
        },
        _ => Mix::Real,
    }
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
            .map(|s| bodies(s, per, mix()))
            .collect::<Result<_, _>>()?;
        let wire: usize = all.iter().flatten().map(Vec::len).sum();
        let hub = start_hub("throughput", stores).await?;
        let took = push_all(&hub, all).await?;
        let behind = projections_caught_up(&hub).await?;
        anyhow_check(hub.store.fact_count()? == total, "hub holds every fact")?;
        let bare = bare_insert(stores, per)?;
        let rate = total as f64 / took.as_secs_f64();
        let base = total as f64 / bare.as_secs_f64();
        println!(
            "\n### hub ingest, {stores} stores × {per} facts ({:?} mix), batches of 1,000\n",
            mix()
        );
        println!("| run | facts | seconds | facts/s |");
        println!("|---|---:|---:|---:|");
        println!(
            "| hub: HTTPS push → judge → type → project → SQLite | {total} | {:.2} | {:.0} |",
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
        println!(
            "projections behind the cursor (members' activity, overdraws) caught up **{:.2} s** after the last push was acknowledged",
            behind.as_secs_f64()
        );

        // 100 stores reconnecting with 1,000 offline facts each.
        let n = 100;
        let all: Vec<Vec<Vec<u8>>> = (0..n)
            .map(|s| bodies(s, 1000, mix()))
            .collect::<Result<_, _>>()?;
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
