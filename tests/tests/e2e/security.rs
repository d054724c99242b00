//! Issue 17 against real processes: HQ cuts a stolen store off at once, a leaked
//! credential is rotated and the store comes back with its data, and the hub keeps
//! what a revoked store still pushes in quarantine instead of applying it.

use std::time::Duration;

use anyhow::{Context, Result};
use patron_tests::hub::TestHub;
use patron_tests::{TestEdge, refused};
use serde_json::Value;

use patron_tests::FAST_SYNC;

/// A sale of ¥100; the points it earned.
async fn sale(e: &TestEdge, member: &str, receipt: &str) -> Result<i64> {
    let (status, body) = e.sale(member, receipt, 10_000, 0).await?;
    anyhow::ensure!(status == 201, "commit {receipt}: {status} {body}");
    body["points_earned"].as_i64().context("points_earned")
}

fn quarantined(hub: &TestHub) -> Result<Vec<Value>> {
    let out = hub.hq(&["quarantine", "list", "--json"])?;
    Ok(serde_json::from_str(&out)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_store_comes_back_and_a_revoked_one_is_cut_off() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let mut s1 = TestEdge::prepare("S001", FAST_SYNC)?;
    s1.enroll(&hub)?;
    s1.start().await?;
    let mut s2 = TestEdge::prepare("S002", FAST_SYNC)?;
    s2.enroll(&hub)?;
    s2.start().await?;
    let m2 = s2.register("13900000171", None).await?;
    sale(&s2, &m2, "R2-1").await?;
    s2.synced().await?;

    // A leaked credential: rotated, the old one is refused at once; the store keeps
    // selling offline and, enrolled again with the new token, syncs what it wrote.
    let token = TestHub::token_in(&hub.hq(&["store", "rotate-credential", "S002"])?)?;
    sale(&s2, &m2, "R2-2").await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let h = s2.get("/healthz").await?.json["hub"].clone();
    assert!(h["pending_facts"].as_u64().unwrap_or(0) > 0, "{h}");
    refused(
        s2.enroll_with(&hub.url(""), "pe_not-the-token.00"),
        "does not carry the hub CA fingerprint",
        "a made-up token is refused",
    );
    s2.stop();
    // The token pins the hub's CA: the same secret with another fingerprint never
    // reaches the hub (the TLS handshake fails), so the token is not spent either.
    let (secret, _) = token.rsplit_once('.').context("token shape")?;
    let wrong = format!("{secret}.{}", "ab".repeat(32));
    refused(
        s2.enroll_with(&hub.url(""), &wrong),
        "the hub's CA does not match the enrollment token",
        "a hub under another CA is refused",
    );
    // Nor is the hub reached in plain text without --insecure-dev (and the token is
    // not spent: it works below).
    refused(
        s2.enroll_with(&hub.url("").replacen("https://", "http://", 1), &token),
        "the hub URL must be https://",
        "a plain http:// hub URL without --insecure-dev",
    );
    s2.enroll_with(&hub.url(""), &token)?;
    s2.start().await?;
    s2.synced().await?;
    refused(
        s2.enroll_with(&hub.url(""), &token),
        "unknown or already used token",
        "the token worked once",
    );

    // A stolen store PC: revoked, it is refused at once and cannot enroll again; what
    // it still pushes is kept in quarantine, not applied.
    let m1 = s1.register("13900000172", None).await?;
    let first = sale(&s1, &m1, "R1-1").await?;
    s1.synced().await?;
    let before = hub.hq(&["store", "list", "--json"])?;
    hub.hq(&["store", "revoke", "S001"])?;
    refused(
        hub.hq(&["store", "token", "S001"]),
        "no such store, or it was revoked",
        "no new token",
    );
    sale(&s1, &m1, "R1-2").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = quarantined(&hub)?;
        if !seen.is_empty() {
            break seen;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "nothing quarantined within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        seen.iter().all(|q| q["store_id"] == "S001"
            && q["reason"] == "pushed after the store was revoked"),
        "{seen:?}"
    );
    let stores: Vec<Value> = serde_json::from_str(&hub.hq(&["store", "list", "--json"])?)?;
    let s1_row = stores
        .iter()
        .find(|s| s["store_id"] == "S001")
        .context("S001 listed")?;
    assert!(s1_row["revoked_at"].is_i64(), "{s1_row}");
    assert!(s1_row["quarantined"].as_u64().unwrap_or(0) >= 1, "{s1_row}");
    let was: Vec<Value> = serde_json::from_str(&before)?;
    let facts_before = was
        .iter()
        .find(|s| s["store_id"] == "S001")
        .and_then(|s| s["facts"].as_u64())
        .context("S001's facts before")?;
    // The quarantined facts are held (the origin's sequence has no gap) but count for
    // no member: S001's member has the points of the first sale only.
    let facts_now = s1_row["facts"].as_u64().context("S001's facts")?;
    assert!(facts_now > facts_before, "{s1_row}");
    assert_eq!(hub.balance(&m1)?, first);
    Ok(())
}

/// A connection to `to` from the loopback address 127.0.0.2 (the attacker's), so that
/// its per-address cap is not the test client's (127.0.0.1).
async fn attacker_conn(to: std::net::SocketAddr) -> Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind("127.0.0.2:0".parse()?)?;
    Ok(s.connect(to).await?)
}

/// How long the edge took to answer `/healthz` (200 or an error).
async fn served_quickly(e: &TestEdge) -> Result<Duration> {
    let t = std::time::Instant::now();
    let r = e.get("/healthz").await?;
    anyhow::ensure!(r.status == 200, "healthz: {}", r.status);
    Ok(t.elapsed())
}

/// Whether the server closed `c` within `within` (a read returns end of stream or an
/// error, having sent no answer).
async fn closed_within(c: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(within, c.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// `n` connections from the attacker's address, each watched from its connect for
/// 700 ms (inside a 1 s deadline that would close it otherwise).
struct Flood(tokio::task::JoinSet<(bool, tokio::net::TcpStream)>);

impl Flood {
    async fn start(to: std::net::SocketAddr, n: usize) -> Result<Flood> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let mut c = attacker_conn(to).await?;
            set.spawn(async move {
                let closed = closed_within(&mut c, Duration::from_millis(700)).await;
                (closed, c)
            });
        }
        Ok(Flood(set))
    }

    /// How many the server closed at once, and those it held open.
    async fn outcome(mut self) -> Result<(usize, Vec<tokio::net::TcpStream>)> {
        let (mut closed_at_once, mut open) = (0, Vec::new());
        while let Some(r) = self.0.join_next().await {
            let (closed, c) = r?;
            if closed {
                closed_at_once += 1;
            } else {
                open.push(c);
            }
        }
        Ok((closed_at_once, open))
    }
}

/// Issue 17, part 6: one address on the store LAN opens connections and sends headers
/// a byte at a time (slowloris), then floods connections. The edge cuts the slow
/// connections at the header deadline, closes an address's connections beyond its cap
/// as they come, and answers the POS lanes (another address) all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_and_a_flood_leave_the_pos_lanes_served() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    const CAP: usize = 16;
    // Room for the slow connections and the lane, not for a second address's worth:
    // without the per-address cap, the flood below would take every slot.
    let config = format!(
        "[http]\nmax_connections = {}\nmax_connections_per_client = {CAP}\nheader_timeout_ms = 1000\n",
        CAP + 8
    );
    let mut edge = TestEdge::prepare("S001", &config)?;
    edge.start().await?;
    // Slowloris: CAP connections, each sending its headers a byte at a time.
    let mut slow = Vec::new();
    for _ in 0..CAP {
        let mut c = attacker_conn(edge.addr).await?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
            .await?;
        slow.push(c);
    }
    let started = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(1_500) {
        for c in &mut slow {
            let _ = c.write_all(b"a").await;
        }
        worst = worst.max(served_quickly(&edge).await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "a lane waited {worst:?}"
    );
    for (i, c) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(2)).await,
            "slow connection {i} still open past the header deadline"
        );
    }
    // A flood: connections beyond the address's cap are closed as they come, before
    // any request: all are watched at once from their connect, for 700 ms, inside
    // the 1 s header deadline that would close them otherwise.
    let flood = Flood::start(edge.addr, CAP * 8).await?;
    // The lane meanwhile: the address's CAP connections hold CAP of CAP + 8 slots.
    let lane = served_quickly(&edge).await?;
    let (closed_at_once, open) = flood.outcome().await?;
    assert_eq!(
        (closed_at_once, open.len()),
        (CAP * 7, CAP),
        "over the cap closed at once, the cap's worth held"
    );
    assert!(
        lane < Duration::from_millis(500),
        "the lane waited {lane:?}"
    );
    let flood = open;
    assert!(served_quickly(&edge).await? < Duration::from_millis(500));
    // Authentication comes before the body: a request without a token announcing a
    // 10 MB body it never sends is answered 401 at once, not read.
    drop(flood);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = attacker_conn(edge.addr).await?;
    c.write_all(
        b"POST /v1/checkout/commit HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{",
    )
    .await?;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(1), async {
        use tokio::io::AsyncReadExt;
        c.read_exact(&mut head).await
    })
    .await
    .context("no answer within 1 s")??;
    assert_eq!(&head, b"HTTP/1.1 401", "{}", String::from_utf8_lossy(&head));
    Ok(())
}

/// An empty push (a heartbeat) of `store`.
fn heartbeat(store: &str) -> Vec<u8> {
    serde_json::json!({"report": {"origin": null, "last_seq": 0},
                       "push": {"from": store, "batches": []}})
    .to_string()
    .into_bytes()
}

/// How long the hub took to answer `store`'s heartbeat (which must succeed).
async fn hub_served_quickly(hub: &TestHub, credential: &str, store: &str) -> Result<Duration> {
    let t = std::time::Instant::now();
    let r = hub
        .post_raw("/v1/sync/push", Some(credential), heartbeat(store))
        .await?;
    anyhow::ensure!(
        r.status == 200,
        "{store}'s heartbeat: {} {}",
        r.status,
        r.json
    );
    Ok(t.elapsed())
}

/// Issue 17, part 6, at the hub's TLS listener: one address holds TLS handshakes open a
/// byte at a time, then floods connections; a stolen store credential sends requests as
/// fast as it can. The hub cuts the handshakes at their deadline, closes the address's
/// connections beyond its cap as they come, holds the credential to its store's request
/// budget (429 with `Retry-After`), and serves the other store all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_serves_stores_through_a_tls_slowloris_a_flood_and_a_request_storm() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    const CAP: usize = 16;
    let mut hub = TestHub::spawn().await?;
    let config = hub.data_dir().with_file_name("hub-dos.toml");
    std::fs::write(
        &config,
        format!(
            "store_requests_per_second = 4\n[http]\nmax_connections = {}\n\
             max_connections_per_client = {CAP}\nheader_timeout_ms = 1000\nhandshake_timeout_ms = 1000\n",
            CAP + 8
        ),
    )?;
    hub.set_serve_args(&["--config", config.to_str().context("config path")?]);
    hub.kill();
    hub.start().await?;
    let s1 = hub.enroll_raw("S001").await?;
    let s2 = hub.enroll_raw("S002").await?;

    // TLS slowloris: CAP connections that start a ClientHello and never finish it.
    let mut slow = Vec::new();
    for _ in 0..CAP {
        let mut c = attacker_conn(hub.addr).await?;
        c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await?;
        slow.push(c);
    }
    let started = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(1_500) {
        for c in &mut slow {
            let _ = c.write_all(&[0x01]).await;
        }
        worst = worst.max(hub_served_quickly(&hub, &s2, "S002").await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(worst < Duration::from_millis(500), "S002 waited {worst:?}");
    for (i, c) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(2)).await,
            "handshake {i} still open past its deadline"
        );
    }

    // A flood: beyond the address's cap, connections are closed as they come.
    let flood = Flood::start(hub.addr, CAP * 8).await?;
    let store = hub_served_quickly(&hub, &s2, "S002").await?;
    let (closed_at_once, open) = flood.outcome().await?;
    assert_eq!(
        (closed_at_once, open.len()),
        (CAP * 7, CAP),
        "over the cap closed at once, the cap's worth held"
    );
    assert!(store < Duration::from_millis(500), "S002 waited {store:?}");
    drop(open);

    // A request storm on S001's credential: 4 a second, bursts of 20, then 429.
    let (mut ok, mut limited) = (0, Vec::new());
    let storm = std::time::Instant::now();
    for _ in 0..30 {
        let r = hub
            .post_raw("/v1/sync/push", Some(&s1), heartbeat("S001"))
            .await?;
        match (r.status, r.code()) {
            (200, _) => ok += 1,
            (429, "rate_limited") => limited.push(r.retry_after),
            other => anyhow::bail!("unexpected {other:?}: {}", r.json),
        }
    }
    // The burst, and what refilled while the storm lasted (on a slow machine, more).
    let refilled = (storm.elapsed().as_secs_f64() * 4.0).ceil() as usize;
    assert!(
        (20..=20 + refilled).contains(&ok) && !limited.is_empty(),
        "{ok} of 30 served in {:?}",
        storm.elapsed()
    );
    assert!(
        limited.iter().all(|w| *w == Some(1)),
        "Retry-After: {limited:?}"
    );
    // S002 is served meanwhile, and S001 again once it waits.
    assert!(hub_served_quickly(&hub, &s2, "S002").await? < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_secs(1)).await;
    hub_served_quickly(&hub, &s1, "S001").await?;
    Ok(())
}
