//! The background sync loop: push this store's facts soon after each commit, retry
//! with capped exponential backoff and jitter, report to the hub on a heartbeat, and
//! raise an alert when a fact stays unacknowledged too long while the hub answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_protocol::hub::capability;
use patron_protocol::hub::{Negotiated, PROTOCOL, PushRequest, RefetchRequest, SyncReport};
use patron_sync::docs::{HqDoc, decode_state, encode_state, ring_doc};
use patron_sync::session::{Push, batch};

use super::SyncError;
use super::client::HubClient;
use super::link::HubLink;
use crate::service::Edge;

pub use crate::service::hub_port::{StatusCell, SyncStatus};

fn update(cell: &StatusCell, f: impl FnOnce(&mut SyncStatus)) {
    let mut g = cell.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut g);
}

/// Starts the worker for an enrolled edge.
pub fn spawn(edge: Arc<Edge>, link: HubLink) -> Result<tokio::task::JoinHandle<()>, SyncError> {
    let cfg = edge.core.cfg.sync.clone();
    let client = HubClient::new(&link, Duration::from_millis(cfg.timeout_ms))?;
    let timeout = Duration::from_millis(edge.core.cfg.redemption.authorize_timeout_ms.max(1));
    let fetch_timeout = Duration::from_millis(cfg.fetch_timeout_ms.max(1));
    edge.set_hub_authority(crate::service::HubAuthority {
        client: Arc::new(HubClient::new(&link, timeout)?),
        timeout,
        fetcher: Arc::new(HubClient::new(&link, fetch_timeout)?),
        fetch_timeout,
    });
    // Members of other stores who stopped coming leave this store (partial replication).
    let sweeper = edge.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        every.tick().await; // the first tick is now: wait a whole period first
        loop {
            every.tick().await;
            // Only while the hub can give a removed member back.
            if !sweeper.hub_reachable() {
                continue;
            }
            if let Err(e) = sweeper.drop_departed_members().await {
                tracing::error!(error = %e, "dropping departed members failed");
            }
        }
    });
    // The stream's polls wait up to `stream_wait_ms` at the hub: their own client.
    let stream_timeout = Duration::from_millis(
        cfg.stream_wait_ms.min(patron_sync::stream::MAX_WAIT_MS) + cfg.timeout_ms,
    );
    tokio::spawn(follow_stream(
        edge.clone(),
        HubClient::new(&link, stream_timeout)?,
    ));
    if edge.core.cfg.redemption.leases {
        crate::service::leases::spawn(edge.clone(), Arc::new(HubClient::new(&link, timeout)?));
    }
    // An enrolled store shows the chain's numbers, not its own configuration's.
    edge.core.follow_hq();
    update(&edge.sync_status, |s| s.enrolled = true);
    tracing::info!(hub = %link.url, store = %link.store_id, "sync worker started");
    let ring = link.ring.clone();
    Ok(tokio::spawn(async move { run(edge, client, ring).await }))
}

/// A delay in `[d/2, d]`: spreads retries of many stores after a hub outage.
fn jitter(d: Duration) -> Duration {
    let r: [u8; 2] = ring::rand::generate(&ring::rand::SystemRandom::new())
        .map(|r| r.expose())
        .unwrap_or([0, 0]);
    let frac = u16::from_le_bytes(r) as u64;
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + (ms / 2) * frac / u64::from(u16::MAX))
}

/// The outcome of one exchange with the hub.
enum Step {
    /// More facts wait: go again at once.
    More,
    /// Up to date (or nothing more can be done now): wait for a commit or the heartbeat.
    Idle,
    /// Failed: back off.
    Failed,
}

async fn run(edge: Arc<Edge>, client: HubClient, ring: String) {
    let cfg = edge.core.cfg.sync.clone();
    let committed = edge.store.writer.facts_committed();
    let mut acked = match edge.hub_acked().await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "sync: reading the acknowledged position failed");
            0
        }
    };
    update(&edge.sync_status, |s| s.acked = acked);
    // What HQ published and this store already holds applies from the start, hub or not.
    if let Err(e) = edge.adopt_hq_docs(&ring).await {
        tracing::error!(error = %e, "sync: stored HQ documents cannot be used");
    }
    let min = Duration::from_millis(cfg.retry_min_ms);
    let max = Duration::from_millis(cfg.retry_max_ms);
    let mut backoff = min;
    // A database restored from an older copy takes back from the hub what its old
    // incarnation had beyond this copy's end, a batch per round, beside pushing.
    let mut refetching = true;
    let mut docs_synced: Option<Instant> = None;
    let heartbeat = Duration::from_millis(cfg.heartbeat_ms);
    loop {
        if refetching {
            match refetch_step(&edge, &client).await {
                Ok(more) => {
                    refetching = more;
                    update(&edge.sync_status, |s| {
                        if s.alert.as_deref().is_some_and(|a| a.starts_with("refetch")) {
                            s.alert = None;
                        }
                    });
                }
                Err(e) => {
                    let msg = format!("refetch of the previous incarnation failing: {e}");
                    tracing::warn!(%msg);
                    update(&edge.sync_status, |s| s.alert = Some(msg));
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        let step = exchange(&edge, &client, &mut acked).await;
        watchdog(&edge, acked).await;
        if matches!(step, Step::Idle) && docs_synced.is_none_or(|t| t.elapsed() >= heartbeat) {
            sync_docs(&edge, &client, &ring).await;
            docs_synced = Some(Instant::now());
        }
        match step {
            Step::More => {
                backoff = min;
                continue;
            }
            Step::Idle if refetching => {
                backoff = min;
            }
            Step::Idle => {
                backoff = min;
                tokio::select! {
                    () = committed.notified() => {
                        tokio::time::sleep(Duration::from_millis(cfg.push_delay_ms)).await;
                    }
                    () = tokio::time::sleep(Duration::from_millis(cfg.heartbeat_ms)) => {}
                }
            }
            Step::Failed => {
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(max);
            }
        }
    }
}

/// Syncs the HQ documents of this store's ring (and of every store), then puts in
/// force what HQ published for it. Sync states are persisted with the document after
/// each session.
async fn sync_docs(edge: &Edge, client: &HubClient, ring: &str) {
    let mut docs = Vec::with_capacity(2);
    for id in [ring_doc(ring), ring_doc("all")] {
        match sync_doc(edge, client, &id).await {
            Ok(doc) => docs.push(doc),
            Err(e) => {
                tracing::warn!(doc = %id, error = %e, "sync: HQ document sync failed");
                return;
            }
        }
    }
    // The documents just synced are in hand: no second read from the database.
    match edge.adopt(&docs).await {
        Ok(Some(v)) => tracing::info!(version = %v, "sync: HQ rule set in force"),
        Ok(None) => {}
        Err(e) => {
            let msg = format!("what HQ published cannot be used: {e}");
            tracing::error!(%msg);
            update(&edge.sync_status, |s| s.alert = Some(msg));
        }
    }
}

async fn sync_doc(edge: &Edge, client: &HubClient, id: &str) -> Result<HqDoc, SyncError> {
    let local = |e: crate::service::EdgeError| SyncError::Setup(e.to_string());
    let (mut doc, persisted) = edge.hq_doc(id).await.map_err(local)?;
    // Each session starts from the persisted state on both sides (`fresh`): a session
    // broken off mid-way (a lost answer) would otherwise leave both believing the
    // missing change in flight, and the store would never receive it.
    let mut st = decode_state(persisted.as_deref()).unwrap_or_default();
    let state = &mut st;
    let mut received = false;
    for step in 0..16 {
        let mine = doc.generate(state);
        let theirs = client.doc_sync(id, mine.as_deref(), step == 0).await?;
        if let Some(m) = &theirs {
            doc.receive(state, m)
                .map_err(|e| SyncError::Unreachable(format!("HQ document {id}: {e}")))?;
            received = true;
        }
        if mine.is_none() && theirs.is_none() {
            break;
        }
    }
    // An idle heartbeat changes neither: skip the durable write (an fsync every 10 s).
    let state_bytes = encode_state(state);
    if received || persisted.as_deref() != Some(state_bytes.as_slice()) {
        edge.save_hq_doc(id, doc.save(), state_bytes)
            .await
            .map_err(local)?;
    }
    Ok(doc)
}

/// Fetches and applies one batch of a pending refetch; `Ok(true)` while more may come.
async fn refetch_step(edge: &Edge, client: &HubClient) -> Result<bool, SyncError> {
    let local = |e: crate::service::EdgeError| SyncError::Setup(e.to_string());
    let Some(r) = edge.pending_refetch().await.map_err(local)? else {
        return Ok(false);
    };
    let origin = patron_protocol::Origin {
        node: edge.store.origin.node.clone(),
        incarnation: r.incarnation,
    };
    let answer = client
        .refetch(&RefetchRequest {
            origin,
            after: r.after.max(0) as u64,
            max: edge.core.cfg.sync.batch,
        })
        .await?;
    let n = answer.batch.facts.len();
    if answer.batch.checksum != patron_sync::session::checksum(&answer.batch.facts) {
        return Err(SyncError::Unreachable(
            "refetch answer damaged in transit".into(),
        ));
    }
    edge.apply_refetched(r, answer.batch.facts)
        .await
        .map_err(local)?;
    tracing::info!(
        facts = n,
        hub_high = answer.high,
        "sync: refetched facts of the previous incarnation"
    );
    Ok(n > 0)
}

/// One push (or heartbeat) and what its answer teaches
/// ([`patron_sync::sender::Sender`] decides both).
async fn exchange(edge: &Arc<Edge>, client: &HubClient, acked: &mut i64) -> Step {
    use patron_sync::sender::{Next, Outcome, Sender};
    let cfg = &edge.core.cfg.sync;
    let origin = edge.sync_origin();
    let mut sender = Sender::new(origin.clone(), (*acked).max(0) as u64);
    let stream = if follows_stream(edge) {
        match edge.stream_cursor().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "sync: reading the stream position failed");
                None
            }
        }
    } else {
        None
    };
    let read = async {
        let last = edge.last_own_seq().await?.max(0) as u64;
        let facts = match sender.next(last, cfg.batch) {
            Next::Facts { after, max } => edge.outbox(after as i64, max).await?,
            Next::Probe { seq } => edge.outbox(seq as i64 - 1, 1).await?,
            Next::Nothing => Vec::new(),
        };
        Ok::<_, crate::service::EdgeError>((last, facts))
    };
    let (last, facts) = match read.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "sync: reading facts failed");
            return Step::Failed;
        }
    };
    let sent_to = facts.last().map_or(sender.acked, |f| f.seq);
    let req = PushRequest {
        report: SyncReport {
            origin: Some(origin.clone()),
            last_seq: last,
            protocol: Some(PROTOCOL),
            stream_after: stream.as_ref().map(|c| c.after),
            stream_mark: stream.as_ref().map(|c| c.mark),
            key_generation: edge.core.vault.key_generation(),
            has_member_code_key: edge.core.member_codes.held(),
        },
        push: Push {
            from: origin.node.clone(),
            batches: if facts.is_empty() {
                Vec::new()
            } else {
                vec![batch(origin.clone(), facts)]
            },
        },
    };
    let ack = match client.push(&req).await {
        Ok(a) => {
            // A hub up- or downgraded since the last push is followed from this answer.
            let negotiated = a.negotiated.unwrap_or(Negotiated {
                protocol: 1,
                capabilities: Vec::new(),
            });
            update(&edge.sync_status, |s| s.negotiated = Some(negotiated));
            if let Some(k) = &a.member_code_key
                && let Err(e) = edge.core.member_codes.take(k)
            {
                tracing::error!(error = %e, "keeping the hub's member-code key");
            }
            match (a.keys, req.report.key_generation) {
                // HQ rotated this store's keys: taken at once, re-wrapped in the background.
                (Some(offer), _) => edge.take_rotated_keys(offer).await,
                // The hub translates under the keys this store holds: older ones it
                // still keeps may go once a pass finds no row under them.
                (None, Some(held)) => {
                    edge.hub_holds(held);
                    if edge.core.vault.rotating() {
                        let edge = edge.clone();
                        tokio::spawn(async move {
                            if let Err(e) = edge.rekey_for_chain().await {
                                tracing::error!(error = %e, "re-wrapping members under rotated keys");
                            }
                        });
                    }
                }
                (None, None) => {}
            }
            a.ack
        }
        Err(e) => {
            let unreachable = matches!(e, SyncError::Unreachable(_));
            tracing::warn!(error = %e, "sync: push failed");
            update(&edge.sync_status, |s| {
                s.reachable = !unreachable;
                s.last_error = Some(e.to_string());
                if !unreachable {
                    s.alert = Some(format!("the hub refuses this store: {e}"));
                }
            });
            return Step::Failed;
        }
    };
    let outcome = sender.on_ack(&ack.verdicts, sent_to, last);
    if let Outcome::HubAhead { hub_high } = outcome {
        // Pushing on would hand out sequence numbers the hub already has.
        let msg = format!(
            "the hub holds facts up to {hub_high} of this incarnation but this database ends at {last}: it was restored from an older copy"
        );
        tracing::error!(%msg, "sync stopped");
        update(&edge.sync_status, |s| s.alert = Some(msg));
        return Step::Failed;
    }
    let new_acked = sender.acked as i64;
    if new_acked != *acked {
        if let Err(e) = edge.set_hub_acked(new_acked).await {
            tracing::error!(error = %e, "sync: recording the acknowledged position failed");
        }
        // Also beside the database: a copy of the database restored later is then
        // recognised as older than what the hub holds (store::incarnation).
        let state = crate::store::incarnation::SyncState {
            incarnation: origin.incarnation,
            acked: new_acked,
        };
        if let Err(e) = crate::store::incarnation::record(&edge.core.cfg.data_dir, &state) {
            tracing::error!(error = %e, "sync: recording the sync state failed");
        }
        *acked = new_acked;
    }
    let refused = match &outcome {
        Outcome::Refused(r) => Some(r.clone()),
        _ => None,
    };
    let now = edge.core.now();
    update(&edge.sync_status, |s| {
        s.reachable = true;
        s.last_sync_at = Some(now);
        s.last_error = None;
        s.acked = *acked;
        if let Some(r) = &refused {
            s.alert = Some(format!("the hub refused a batch: {r}"));
        } else if s
            .alert
            .as_deref()
            .is_some_and(|a| a.starts_with("the hub refus"))
        {
            s.alert = None;
        }
    });
    // A member this store registered was merged into the one registered first under the
    // same phone elsewhere: fetch the survivor, so lookups here show one member.
    for m in &ack.merged {
        edge.fetch_survivor_of(&m.loser).await;
    }
    match outcome {
        Outcome::Refused(r) => {
            tracing::error!(reason = %r, "sync: the hub refused a batch");
            Step::Failed
        }
        Outcome::UpToDate => Step::Idle,
        Outcome::More => Step::More,
        Outcome::NoProgress | Outcome::HubAhead { .. } => {
            tracing::warn!(
                acked = *acked,
                last,
                "sync: the hub's answer made no progress"
            );
            Step::Failed
        }
    }
}

/// Raises (or clears) the watchdog alert: the oldest unacknowledged fact is older than
/// `watchdog_secs` while the hub answers.
async fn watchdog(edge: &Edge, acked: i64) {
    let limit = edge.core.cfg.sync.watchdog_secs as i64 * 1000;
    let oldest = match edge.own_fact_at(acked + 1).await {
        Ok(o) => o,
        Err(_) => return,
    };
    let now = edge.core.now();
    let reachable = edge
        .sync_status
        .lock()
        .map(|s| s.reachable)
        .unwrap_or(false);
    match oldest {
        Some(at) if reachable && now - at > limit => {
            let msg = format!(
                "watchdog: fact {} unacknowledged for {} s while the hub is reachable",
                acked + 1,
                (now - at) / 1000
            );
            tracing::error!(%msg);
            update(&edge.sync_status, |s| s.alert = Some(msg));
        }
        _ => update(&edge.sync_status, |s| {
            if s.alert
                .as_deref()
                .is_some_and(|a| a.starts_with("watchdog"))
            {
                s.alert = None;
            }
        }),
    }
}

/// Whether the hub offered the stream at the last push.
fn follows_stream(edge: &Edge) -> bool {
    edge.sync_status.lock().is_ok_and(|s| {
        s.negotiated
            .as_ref()
            .is_some_and(|n| n.offers(capability::STREAM))
    })
}

/// Follows the hub's stream while the hub offers it: long polls, each page stored with
/// the cursor in one transaction ([`patron_sync::stream::StreamCursor`] judges each
/// answer), members no longer held released on the next poll, merges followed by a
/// fetch of the phone, and a must-refetch answered by fetching every held phone again.
async fn follow_stream(edge: Arc<Edge>, client: HubClient) {
    use patron_sync::stream::{MAX_PAGE, MAX_WAIT_MS, Step, StreamRequest};
    let cfg = edge.core.cfg.sync.clone();
    let min = Duration::from_millis(cfg.retry_min_ms);
    let max = Duration::from_millis(cfg.retry_max_ms);
    let mut backoff = min;
    let mut release: Vec<String> = Vec::new();
    // Merges whose other member could not be fetched yet (the hub went away between
    // the page and the fetch): asked again after each poll until done.
    let mut merges: Vec<(uuid::Uuid, uuid::Uuid)> = Vec::new();
    // The first poll after a failure answers at once: `/healthz` shows the stream
    // followed again without waiting out a long poll.
    let mut answered = false;
    // A refetch a restart interrupted goes on.
    let resumed = edge.clone();
    tokio::spawn(async move { resumed.refetch_phones().await });
    loop {
        if !follows_stream(&edge) {
            update(&edge.sync_status, |s| s.streaming = false);
            answered = false;
            tokio::time::sleep(Duration::from_millis(cfg.retry_min_ms.max(200))).await;
            continue;
        }
        let mut cursor = match edge.stream_cursor().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "stream: reading the position failed");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        let req = StreamRequest {
            after: cursor.after,
            mark: cursor.mark,
            max: MAX_PAGE,
            wait_ms: if answered {
                cfg.stream_wait_ms.min(MAX_WAIT_MS)
            } else {
                0
            },
            release: std::mem::take(&mut release),
        };
        let answer = match client.stream(&req).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "stream: poll failed");
                update(&edge.sync_status, |s| s.streaming = false);
                answered = false;
                // Releases are retried: the next page of those members asks again anyway.
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        let step = match cursor.judge(&answer) {
            Ok(step) => step,
            Err(e) => {
                tracing::warn!(error = %e, "stream: answer refused");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        answered = true;
        // Leases the hub asks back go first: another store is waiting for them.
        if let patron_sync::stream::StreamAnswer::Page {
            recall,
            coupons_moved,
            ..
        } = &answer
        {
            if !recall.is_empty() {
                edge.recall_leases(recall);
            }
            if !coupons_moved.is_empty() {
                edge.coupons_moved(coupons_moved);
            }
        }
        // An answered poll is an answered hub, whatever the push loop last saw: what
        // depends on reaching the hub (the fetch after a merge) may go ahead.
        update(&edge.sync_status, |s| {
            s.streaming = true;
            s.reachable = true;
        });
        let more = match &step {
            Step::Apply {
                facts,
                upto,
                more,
                mark,
            } => {
                let keys = match &answer {
                    patron_sync::stream::StreamAnswer::Page { keys, .. } => keys.clone(),
                    _ => Vec::new(),
                };
                match edge
                    .apply_streamed(facts.to_vec(), keys, *upto, *mark)
                    .await
                {
                    Ok(done) if done.held_back => {
                        // A member fetch is being stored: the same page again shortly.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Ok(done) => {
                        backoff = min;
                        let now = edge.core.now();
                        update(&edge.sync_status, |s| s.streamed_at = Some(now));
                        if done.stored > 0 {
                            tracing::info!(
                                facts = done.stored,
                                "stream: facts of members held here arrived"
                            );
                        }
                        release = done.release.iter().map(ToString::to_string).collect();
                        merges.extend(done.merges);
                        *more
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "stream: storing a page failed");
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(max);
                        continue;
                    }
                }
            }
            Step::Refetch { resume, mark } => {
                tracing::warn!(
                    resume,
                    "stream: the hub cannot continue from this store's position; fetching every member again"
                );
                match edge.restart_stream(*resume, *mark).await {
                    Ok(()) => {
                        backoff = min;
                        let edge = edge.clone();
                        tokio::spawn(async move { edge.refetch_phones().await });
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "stream: restarting failed");
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(max);
                        continue;
                    }
                }
            }
        };
        cursor.advance(&step);
        let mut pending = Vec::new();
        for (loser, survivor) in std::mem::take(&mut merges) {
            if !edge.fetch_merged(loser, survivor).await {
                tracing::warn!(
                    "the other member of a merge could not be fetched yet; asking again"
                );
                pending.push((loser, survivor));
            }
        }
        merges = pending;
        if !more && matches!(answer, patron_sync::stream::StreamAnswer::Page { .. }) {
            // The hub held the poll open already; a short pause keeps a hub that
            // answers at once (an older wait policy) from being polled in a spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
