//! Nothing acknowledged is lost: concurrent commits against the real binary, SIGKILLed
//! at random moments, restarted, and audited.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use patron_tests::TestEdge;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const MEMBERS: usize = 24;
const WORKERS: usize = 16;
const KILLS: usize = 12;

/// A commit the POS sent, and what became of it.
#[derive(Clone)]
struct Sent {
    key: String,
    body: Value,
    member: usize,
}

#[derive(Default)]
struct Ledger {
    /// receipt → (the request, points earned, points redeemed, transaction id)
    acked: HashMap<String, (Sent, i64, i64, String)>,
    /// Requests whose answer never arrived (the edge died): the POS retries these.
    unknown: Vec<Sent>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn record(ledger: &mut Ledger, sent: &Sent, status: u16, json: &Value) {
    match status {
        201 => {
            let receipt = sent.body["receipt_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let entry = (
                sent.clone(),
                json["points_earned"].as_i64().unwrap_or(-1),
                json["points_redeemed"].as_i64().unwrap_or(-1),
                json["transaction_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let txn = entry.3.clone();
            if let Some(prev) = ledger.acked.insert(receipt.clone(), entry) {
                assert_eq!(
                    prev.3, txn,
                    "receipt {receipt} acknowledged twice as different transactions"
                );
            }
        }
        // Refused: nothing was written, and the POS would not retry.
        422 => {}
        other => panic!("unexpected status {other}: {json}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_commits_survive_sigkill_at_random_moments() -> anyhow::Result<()> {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1;
    eprintln!("durability seed {seed}");
    let mut rng = Rng(seed);
    let mut edge = TestEdge::spawn().await?;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        members.push(edge.register(&format!("1370000{i:04}"), None).await?);
    }
    let members = Arc::new(members);
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (members, ledger, stop) = (members.clone(), ledger.clone(), stop.clone());
            let url = edge.url("/v1/checkout/commit");
            let token = edge.token.clone();
            let http = edge.http.clone();
            let mut rng =
                Rng(seed ^ ((round * WORKERS + w) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            workers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let member = rng.below(MEMBERS as u64) as usize;
                    let receipt = format!("R-{round}-{w}-{n}");
                    let redeem = if rng.below(4) == 0 { 1 + rng.below(30) as i64 } else { 0 };
                    let body = json!({
                        "member_id": members[member], "receipt_id": receipt, "redeem_points": redeem,
                        "lines": [{"sku": "A1", "qty": 1 + rng.below(3), "unit_price": 100 + rng.below(20_000)},
                                  {"sku": "B2", "qty": 1, "unit_price": 500 + rng.below(5_000)}]
                    });
                    let sent = Sent { key: format!("k-{receipt}"), body, member };
                    let res = http.post(&url).bearer_auth(&token).header("Idempotency-Key", &sent.key).json(&sent.body).send().await;
                    let answered = match res {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            match r.json::<Value>().await {
                                Ok(json) => Some((status, json)),
                                Err(_) => None,
                            }
                        }
                        Err(_) => None,
                    };
                    let mut l = ledger.lock().await;
                    match answered {
                        Some((status, json)) => record(&mut l, &sent, status, &json),
                        None => {
                            l.unknown.push(sent);
                            break;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(150 + rng.below(500))).await;
        edge.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await?;
        }
        edge.start().await?;
        // The POS retries every request whose answer it never got, with the same key.
        let unknown = std::mem::take(&mut ledger.lock().await.unknown);
        for sent in unknown {
            let r = edge
                .post("/v1/checkout/commit", &sent.body, Some(&sent.key))
                .await?;
            record(&mut *ledger.lock().await, &sent, r.status, &r.json);
        }
    }

    let ledger = ledger.lock().await;
    assert!(
        ledger.acked.len() > 200,
        "the test drove too few commits: {}",
        ledger.acked.len()
    );
    eprintln!(
        "acknowledged {} commits across {KILLS} kills",
        ledger.acked.len()
    );

    // Every acknowledged receipt is there exactly once: a retry replays the same answer.
    let mut expected = [0i64; MEMBERS];
    for (receipt, (sent, earned, redeemed, txn)) in &ledger.acked {
        expected[sent.member] += earned - redeemed;
        let again = edge
            .post("/v1/checkout/commit", &sent.body, Some(&sent.key))
            .await?;
        assert_eq!(
            (again.status, again.replayed),
            (201, true),
            "{receipt}: {}",
            again.json
        );
        assert_eq!(
            again.json["transaction_id"].as_str(),
            Some(txn.as_str()),
            "{receipt} replays its own answer"
        );
    }
    for (i, id) in members.iter().enumerate() {
        let m = edge.get(&format!("/v1/members/{id}")).await?;
        assert_eq!(
            m.json["points"]["balance"].as_i64(),
            Some(expected[i]),
            "member {i}: balance = sum of acknowledged facts"
        );
    }

    edge.stop();
    let db = edge.db()?;
    let receipts: i64 = db.query_row("SELECT count(*) FROM receipts", [], |r| r.get(0))?;
    assert_eq!(
        receipts as usize,
        ledger.acked.len(),
        "no receipt beyond the acknowledged ones, none missing"
    );
    let mut stmt = db.prepare("SELECT receipt_id, lower(hex(txn)) FROM receipts")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (receipt, txn_hex) = row?;
        let acked = ledger.acked.get(&receipt).map(|a| a.3.replace('-', ""));
        assert_eq!(
            acked.as_deref(),
            Some(txn_hex.as_str()),
            "receipt {receipt} is the acknowledged transaction"
        );
    }
    let purchases: i64 = db.query_row(
        "SELECT count(*) FROM facts WHERE kind = 'purchase'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(
        purchases as usize,
        ledger.acked.len(),
        "one purchase fact per acknowledged receipt"
    );
    let (count, max): (i64, i64) =
        db.query_row("SELECT count(*), max(seq) FROM facts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    assert_eq!(
        count, max,
        "the origin's sequence is gap-free across every crash"
    );
    Ok(())
}
