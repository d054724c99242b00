//! The hub: its components wired together (enrollment, the directory, HQ documents,
//! redemption in `redemption.rs`) and the sync server itself — judging what stores
//! push (with the sync core's one `judge`), the stores' streams and refetches, and
//! the projections behind the ingest cursor.

use std::collections::HashMap;
use std::sync::Arc;

use patron_protocol::hub::{PushAnswer, PushRequest, RefetchRequest};
use patron_sync::session::{Batch, Judgement, Push, PushAck, Verdict, batch};
use patron_sync::stream::{StreamAnswer, StreamRequest, Streamed};

use crate::clock::Clock;
use crate::directory::Directory;
use crate::documents::HqDocuments;
use crate::enrollment::Enrollment;
pub use crate::error::HubError;
use crate::ingest::HUB_NODE;

/// Why a revoked store's pushed facts are quarantined.
const REVOKED: &str = "pushed after the store was revoked";
use crate::store::{HubStore, IncomingBatch, IngestJob, StoreRow};

/// The hub.
pub struct Hub {
    /// Stores joining and proving who they are.
    pub enrollment: Enrollment,
    /// Members across the chain: fetches, profiles, activity.
    pub directory: Directory,
    /// HQ's rule sets and settings, and the stores' sync of them.
    pub documents: HqDocuments,
    store: Arc<dyn HubStore>,
    /// How members' points are leased to stores.
    lease_policy: patron_sync::rights::LeasePolicy,
    /// What one fact of a store may carry.
    fact_limits: crate::ingest::FactLimits,
    /// What a store's claim of unsynced earns may add to a redemption it asks for.
    pub(crate) max_unsynced: i64,
    now: Clock,
    /// Per store, moves on when a push gave its stream facts: that store's waiting
    /// polls look again, no other's. In this process only (a single-process limit:
    /// docs/hub.md).
    streamed: std::sync::Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
    /// Set once the server is shutting down: waiting stream polls answer at once.
    closing: std::sync::atomic::AtomicBool,
    /// Wakes the projections behind the cursor when a push applied facts.
    projected: crate::projections::Waker,
    /// Stores online, and leases asked back from them.
    pub(crate) recalls: crate::recall::Recalls,
    /// The member keys, if the hub holds them (not in development without `init`).
    keyring: Option<Arc<crate::keyring::Keyring>>,
}

impl Hub {
    /// The hub's clock (unix ms).
    pub(crate) fn now(&self) -> i64 {
        (self.now)()
    }

    /// The storage backend.
    pub(crate) fn store(&self) -> &dyn HubStore {
        self.store.as_ref()
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub over `store`, handing out `ca_pem` (with its fingerprint) at enrollment.
    pub fn new(store: Arc<dyn HubStore>, ca_pem: String, ca_fingerprint: String) -> Self {
        Self::with_clock(
            store,
            ca_pem,
            ca_fingerprint,
            Box::new(crate::clock::now_millis),
        )
    }

    /// Like [`Hub::new`] with a given clock (tests).
    pub fn with_clock(
        store: Arc<dyn HubStore>,
        ca_pem: String,
        ca_fingerprint: String,
        now: Box<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        let now: Clock = Arc::from(now);
        Self {
            enrollment: Enrollment::new(store.clone(), ca_pem, ca_fingerprint, now.clone()),
            directory: Directory::new(store.clone(), now.clone()),
            documents: HqDocuments::new(store.clone(), now.clone()),
            store,
            lease_policy: crate::authority::LEASE_POLICY,
            fact_limits: crate::ingest::FactLimits::default(),
            max_unsynced: crate::authority::MAX_UNSYNCED_POINTS,
            now,
            streamed: Default::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            projected: Default::default(),
            recalls: Default::default(),
            keyring: None,
        }
    }

    /// Lets each store fetch `per_minute` members a minute (0: no limit) instead of
    /// [`crate::directory::DEFAULT_FETCHES_PER_MINUTE`].
    pub fn with_fetch_limit(mut self, per_minute: u32) -> Self {
        self.directory.set_fetch_limit(per_minute);
        self
    }

    /// Holds the chain's and the stores' member keys (see [`crate::keyring`]): hands
    /// each enrolling store keys of its own, indexes registrations by the phone they
    /// seal, and translates members' keys for the stores that receive them.
    pub fn with_keyring(mut self, ring: Arc<crate::keyring::Keyring>) -> Self {
        self.enrollment.set_keyring(ring.clone());
        self.directory.set_keyring(ring.clone());
        self.keyring = Some(ring);
        self
    }

    /// Certifies enrolling stores' POS API keys with `ca`.
    pub fn with_lan_ca(mut self, ca: Arc<crate::tls::LanCa>) -> Self {
        self.enrollment.set_lan_ca(ca);
        self
    }

    /// Bounds each store fact by `limits` instead of [`crate::ingest::FactLimits::default`].
    pub fn with_fact_limits(mut self, limits: crate::ingest::FactLimits) -> Self {
        self.fact_limits = limits;
        self
    }

    /// Takes a store's claim of unsynced earns up to `points` only.
    pub fn with_max_unsynced(mut self, points: i64) -> Self {
        self.max_unsynced = points.max(0);
        self
    }

    /// Leases members' points under `policy` instead of [`crate::authority::LEASE_POLICY`].
    pub fn with_lease_policy(mut self, policy: patron_sync::rights::LeasePolicy) -> Self {
        self.lease_policy = policy;
        self
    }

    /// How members' points are leased to stores.
    pub(crate) fn lease_policy(&self) -> &patron_sync::rights::LeasePolicy {
        &self.lease_policy
    }

    /// A push as the API serves it: the protocol the store's report names is agreed
    /// first (a store too old is refused before anything is applied), and the answer
    /// carries it, so each heartbeat renews it.
    pub fn push_negotiated(
        &self,
        store: &StoreRow,
        req: PushRequest<Push>,
    ) -> Result<PushAnswer<PushAck>, HubError> {
        let negotiated = crate::enrollment::negotiate(req.report.protocol)?;
        let reported = req.report.key_generation;
        let member_code_key = match req.report.has_member_code_key {
            true => None,
            false => self.keyring.as_ref().map(|k| k.member_code_key()),
        };
        let ack = self.push(store, req)?;
        if let Some(g) = reported.filter(|g| Some(*g) != store.member_keys) {
            self.store.note_key_generation(&store.store_id, g)?;
            tracing::info!(store = %store.store_id, generation = g, "store holds new member keys");
        }
        Ok(PushAnswer {
            ack,
            negotiated: Some(negotiated),
            keys: self.enrollment.keys_to_offer(store, reported),
            member_code_key,
        })
    }

    /// A stream poll (patron_sync::stream): drops the members the store released,
    /// then answers from what the stream holds for it. Never waits; see
    /// [`Hub::stream_changed`].
    pub fn stream(&self, store: &StoreRow, req: &StreamRequest) -> Result<StreamAnswer, HubError> {
        const MAX_RELEASE: usize = 1_000;
        if req.release.len() > MAX_RELEASE {
            return Err(HubError::Invalid(format!(
                "at most {MAX_RELEASE} members are released at once"
            )));
        }
        let release = req
            .release
            .iter()
            .map(|m| {
                uuid::Uuid::parse_str(m)
                    .map(|u| *u.as_bytes())
                    .map_err(|_| HubError::Invalid(format!("release: {m:?} is not a member id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !release.is_empty() {
            let n = self.store.release(&store.store_id, &release, req.after)?;
            tracing::info!(store = %store.store_id, members = n, "members released from a store's stream");
        }
        let max = req.max.clamp(1, patron_sync::stream::MAX_PAGE);
        let read = self.store.stream(&store.store_id, req.after, max)?;
        let facts = read
            .facts
            .into_iter()
            .map(|(pos, fact)| Streamed { pos, fact })
            .collect();
        let hub = patron_sync::stream::HubSide {
            horizon: read.horizon,
            end: read.end,
            end_mark: read.end_mark,
            mark_at_cursor: read.mark_at_cursor,
        };
        let mut answer = patron_sync::stream::serve(req.after, req.mark, &hub, facts, read.more);
        if let patron_sync::stream::StreamAnswer::Page { facts, keys, .. } = &mut answer {
            *keys = self
                .directory
                .keys_for(store, facts.iter().map(|s| &s.fact))?;
        }
        Ok(answer)
    }

    /// The server is shutting down: stream polls waiting for news answer now (with
    /// what they have), so the requests in flight finish and the process can stop.
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(all) = self.streamed.lock() {
            for tx in all.values() {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Forgets what stores have not acknowledged of their streams for longer than
    /// `retention_ms` (a store offline that long, or one that does not follow the
    /// stream): its stream stays bounded, and such a store refetches when it polls
    /// again. Returns how many positions were forgotten.
    pub fn expire_streams(&self, retention_ms: i64) -> Result<u64, HubError> {
        let n = self
            .store
            .expire_streams(self.now().saturating_sub(retention_ms))?;
        if n > 0 {
            tracing::info!(positions = n, "unacknowledged stream positions expired");
        }
        Ok(n)
    }

    /// Wakes the polls of `store` waiting for news.
    pub(crate) fn wake_stream(&self, store: &str) {
        if let Ok(all) = self.streamed.lock()
            && let Some(tx) = all.get(store)
        {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves when a push gives `store`'s stream facts after this call, or the hub
    /// closes (a stream poll with nothing new waits on it, up to its `wait_ms`).
    pub fn stream_changed(
        &self,
        store: &str,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = self.streamed.lock().ok().map(|mut all| {
            all.entry(store.to_string())
                .or_insert_with(|| tokio::sync::watch::Sender::new(0))
                .subscribe()
        });
        async move {
            match rx {
                Some(mut rx) => {
                    let _ = rx.changed().await;
                }
                // A poisoned map: answer at the poll's deadline, as without news.
                None => std::future::pending().await,
            }
        }
    }

    /// A member code proving `member` present, valid for `valid_secs` (at most
    /// [`patron_domain::member_code::MAX_VALID_SECS`]), for the member's root (the
    /// survivor of a merge). The member's page will show these; HQ prints one with
    /// `patron-hub member-code`.
    pub fn member_code(&self, member: &str, valid_secs: u64) -> Result<String, HubError> {
        use patron_domain::member_code::MAX_VALID_SECS;
        let ring = self
            .keyring
            .as_ref()
            .ok_or_else(|| HubError::Invalid("this hub holds no member keys (run init)".into()))?;
        if !(1..=MAX_VALID_SECS).contains(&valid_secs) {
            return Err(HubError::Invalid(format!(
                "a member code is valid for 1 to {MAX_VALID_SECS} seconds"
            )));
        }
        let id = uuid::Uuid::parse_str(member)
            .map_err(|_| HubError::Invalid("member: not a member id".into()))?;
        let root = self.store.root_member(&id.to_string())?;
        if self.store.movements(&root)?.is_empty() && self.store.profile(&root)?.is_none() {
            return Err(HubError::Invalid(format!("no member {id} at the hub")));
        }
        let root = uuid::Uuid::parse_str(&root).unwrap_or(id);
        let now = u64::try_from(self.now().max(0)).unwrap_or(0);
        Ok(ring.member_code(&root, now + valid_secs * 1000))
    }

    /// Up to `max` anomalies stores raised about their lanes, newest first. A fact that
    /// does not read as one is logged and left out (the log keeps it).
    pub fn lane_alerts(
        &self,
        max: usize,
    ) -> Result<Vec<patron_protocol::hub::LaneAlert>, HubError> {
        let mut out = Vec::new();
        for f in self.store.lane_alerts(max)? {
            let entry = patron_domain::Entry::parse(&f.body).ok();
            let Some((at, patron_domain::Detail::LaneAlert(a))) =
                entry.map(|e| (e.head.at, e.detail))
            else {
                tracing::warn!(
                    position = f.position,
                    "a lane alert that does not read as one"
                );
                continue;
            };
            out.push(patron_protocol::hub::LaneAlert {
                position: f.position,
                store_id: f.store_id,
                lane: a.lane,
                day: a.day,
                anomaly: a.anomaly,
                figure: a.figure,
                against: a.against,
                at,
                received_at: f.received_at,
            });
        }
        Ok(out)
    }

    /// Up to `max` facts kept in quarantine for review, oldest first.
    pub fn quarantined(
        &self,
        max: usize,
    ) -> Result<Vec<patron_protocol::hub::QuarantinedFact>, HubError> {
        Ok(self.store.quarantined(max)?)
    }

    /// Applies a store's push. A batch of any origin but the store's own refuses the
    /// whole push (nothing applied) and is logged; otherwise every batch is judged on
    /// its own and the valid ones are applied in one transaction.
    pub fn push(&self, store: &StoreRow, req: PushRequest<Push>) -> Result<PushAck, HubError> {
        let sid = &store.store_id;
        if let Some(b) = req.push.batches.iter().find(|b| b.origin.node != *sid) {
            tracing::warn!(store = %sid, claimed = %b.origin, "forged origin refused");
            return Err(HubError::Forged {
                store: sid.clone(),
                claimed: b.origin.to_string(),
            });
        }
        if let Some(o) = &req.report.origin
            && o.node != *sid
        {
            return Err(HubError::Forged {
                store: sid.clone(),
                claimed: o.to_string(),
            });
        }
        let now = (self.now)();
        let mut ahead = 0i64;
        let keys = self.keyring.as_deref().map(|ring| crate::ingest::Keys {
            ring,
            upto: store
                .keys_offered
                .or(store.member_keys)
                .unwrap_or(crate::keyring::CHAIN),
        });
        let origins: Vec<patron_protocol::Origin> =
            req.push.batches.iter().map(|b| b.origin.clone()).collect();
        // Every fact is parsed once, and every batch's checksum and shape checked, here,
        // before the push reaches the writer.
        let batches: Vec<IncomingBatch> = req
            .push
            .batches
            .into_iter()
            .map(|batch| {
                let checked = patron_sync::session::check(true, HUB_NODE, sid, &batch);
                let typed = crate::ingest::type_batch(sid, keys, &batch, now, &mut ahead);
                IncomingBatch {
                    batch,
                    checked,
                    typed,
                }
            })
            .collect();
        let done = self.store.ingest(IngestJob {
            store_id: sid.clone(),
            report: req.report,
            batches,
            judge: patron_sync::session::place,
            flag_window_ms: crate::authority::FLAG_WINDOW_MS,
            limits: self.fact_limits,
            quarantine_all: store.revoked.then_some(REVOKED),
            claim_budget: self.directory.fetches_left(sid),
            now,
        })?;
        let claims: u32 = done.iter().map(|i| i.claims).sum();
        if claims > 0 {
            tracing::warn!(store = %sid, claims, "registrations merged into other stores' members");
            self.directory.charge_fetches(sid, claims);
        }
        for (origin, i) in origins.iter().zip(&done) {
            for (seq, why) in &i.quarantined {
                tracing::warn!(store = %sid, %origin, seq, why, "fact quarantined for review");
            }
        }
        if store.revoked {
            // Kept for review, never applied: the store is told it is cut off.
            return Err(HubError::Revoked(sid.clone()));
        }
        if ahead > 0 {
            tracing::warn!(store = %sid, ahead_ms = ahead, "store clock ahead of the hub: profile stamps clamped");
            self.store.note_clock_ahead(sid, ahead)?;
        }
        let merged = done.iter().flat_map(|i| i.merged.iter().cloned()).collect();
        let streamed_to: std::collections::BTreeSet<String> = done
            .iter()
            .flat_map(|i| i.streamed_to.iter().cloned())
            .collect();
        let verdicts: Vec<Verdict> = origins
            .into_iter()
            .zip(done)
            .map(|(origin, i)| match i.judgement {
                Judgement::Refuse(reason) => {
                    let reason = i.reason.unwrap_or_else(|| reason.to_string());
                    tracing::warn!(store = %sid, origin = %origin, reason, "batch refused");
                    Verdict::Refused { origin, reason }
                }
                Judgement::AlreadyHeld => Verdict::AlreadyHeld {
                    origin,
                    high: i.high,
                },
                Judgement::Gap { expected } => Verdict::Gap { origin, expected },
                Judgement::Apply { .. } => Verdict::Applied {
                    origin,
                    high: i.high,
                },
            })
            .collect();
        for store in streamed_to {
            self.wake_stream(&store);
        }
        if verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Applied { .. }))
        {
            self.projected.wake();
        }
        Ok(PushAck {
            from: HUB_NODE.into(),
            verdicts,
            merged,
        })
    }

    /// Facts of one of `store`'s own origins after `after`, with the hub's high for it.
    pub fn refetch(
        &self,
        store: &StoreRow,
        req: &RefetchRequest,
    ) -> Result<(Batch, u64), HubError> {
        if req.origin.node != store.store_id {
            tracing::warn!(store = %store.store_id, claimed = %req.origin, "refetch of a foreign origin refused");
            return Err(HubError::Forged {
                store: store.store_id.clone(),
                claimed: req.origin.to_string(),
            });
        }
        let max = req.max.clamp(1, patron_sync::session::MAX_BATCH);
        let facts = self.store.read(&req.origin, req.after, max)?;
        let high = self.store.high(&req.origin)?;
        Ok((batch(req.origin.clone(), facts), high))
    }

    /// Rebuilds the per-fact projections (registrations by phone, merged profiles,
    /// member aliases) from the facts with the ingest's own rules, as ingest applied
    /// them; members' ledger snapshots are dropped, each derived again from the facts
    /// at its member's next authorization or lease.
    pub fn rebuild_projections(&self) -> Result<crate::store::Rebuilt, HubError> {
        let ring = self.keyring.clone();
        // Which keys each store holds decides how an index the hub cannot check is kept
        // (crate::ingest::type_fact), as at ingest.
        let generations: HashMap<String, crate::keyring::Generation> = self
            .enrollment
            .stores()?
            .into_iter()
            .filter_map(|s| Some((s.store_id, s.key_offered.or(s.key_generation)?)))
            .collect();
        let project = move |node: &str, body: &str, received_at: i64| {
            let entry = patron_domain::Entry::parse(body).map_err(|e| e.to_string())?;
            if node == HUB_NODE {
                // The hub's own facts: a merge is an alias; a referral it settled is
                // counted as a claim (its points are the fact's columns).
                let own = matches!(
                    entry.kind(),
                    patron_domain::Kind::MemberMerged | patron_domain::Kind::Claim
                );
                return Ok(own.then(|| crate::ingest::TypedFact {
                    claim: crate::ingest::claim_row(&entry).ok().flatten(),
                    entry,
                    profile: Vec::new(),
                    points: None,
                    registered: None,
                    key: None,
                    code: None,
                    referred_by: None,
                    due: None,
                    catalogue: Vec::new(),
                }));
            }
            let keys = ring.as_deref().map(|ring| crate::ingest::Keys {
                ring,
                upto: generations
                    .get(node)
                    .copied()
                    .unwrap_or(crate::keyring::CHAIN),
            });
            crate::ingest::type_fact(node, keys, entry, received_at, &mut 0)
                .map(Some)
                .map_err(str::to_string)
        };
        Ok(self.store.rebuild_projections(&project)?)
    }

    /// The projections behind the ingest cursor, over this hub's storage.
    pub fn behind(&self) -> Vec<Arc<dyn crate::projections::Behind>> {
        crate::projections::all(self.store.clone(), self.now.clone())
    }

    /// The overdraws projection, which the report catches up before it answers.
    pub(crate) fn overdraws_projection(&self) -> crate::projections::OverdrawsProjection {
        crate::projections::OverdrawsProjection {
            store: self.store.clone(),
            now: self.now.clone(),
        }
    }

    /// What wakes the projections' runner (see [`crate::projections::Runner`]).
    pub fn projection_waker(&self) -> crate::projections::Waker {
        self.projected.clone()
    }

    /// Catches every projection behind the cursor up now (the runner does this in
    /// the background; commands and tests call it to read a settled state).
    pub fn catch_up_projections(&self) -> Result<u64, HubError> {
        let mut folded = 0;
        for p in self.behind() {
            folded += crate::projections::catch_up(p.as_ref(), crate::projections::STEP)?.folded;
        }
        Ok(folded)
    }

    /// Empties every projection behind the cursor and folds the whole log again.
    pub fn rebuild_behind(&self) -> Result<Vec<(&'static str, crate::store::Step)>, HubError> {
        self.behind()
            .iter()
            .map(|p| {
                Ok((
                    p.name(),
                    crate::projections::rebuild(self.store(), p.as_ref())?,
                ))
            })
            .collect()
    }

    /// Where each projection behind the cursor stands.
    pub fn projections(&self) -> Result<Vec<crate::store::ProjectionPosition>, HubError> {
        Ok(self.store.projection_positions()?)
    }
}

#[cfg(test)]
mod tests {

    use patron_protocol::Origin;
    use patron_protocol::hub::{EnrollResponse, PROTOCOL, SyncReport};
    use patron_sync::pull::MemberFetch;
    use patron_sync::session::{Fact, batch};

    use super::*;
    use crate::enrollment::negotiate;
    use crate::testing::TestHub;

    const T0: i64 = 1_764_000_000_000;

    fn update(store: &str, seq: u64, name: &str, wall: i64) -> Fact {
        let body = serde_json::json!({"name": name, "tags_add": ["vip"], "hlc": {"wall": wall, "counter": 0, "node": store}});
        member_fact(
            store,
            seq,
            wall,
            "member_updated",
            "m-1",
            0,
            &body.to_string(),
        )
    }

    /// A store's request for its LAN certificate is checked before its token is spent:
    /// a refused one leaves the token to use, and the certificate names the store.
    #[test]
    fn a_refused_certificate_request_leaves_the_token_to_use() {
        let mut t = TestHub::new(T0, &["S001"]);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lan = crate::tls::LanCa::load_or_create(dir.path(), dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        t.hub = t.hub.with_lan_ca(Arc::new(lan));
        let e = &t.hub.enrollment;
        let token = e
            .add_store("S002", "Two", "all", crate::enrollment::TOKEN_VALID_MS)
            .unwrap_or_else(|e| panic!("{e}"));
        let secret = token.rsplit_once('.').map(|x| x.0).unwrap_or_default();
        let bad = e.enroll(secret, "S002", None, Some("not a request"));
        assert!(
            matches!(&bad, Err(HubError::Invalid(m)) if m.contains("lan_csr")),
            "{bad:?}"
        );
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let csr = rcgen::CertificateParams::new(vec!["anything.example".to_string()])
            .and_then(|p| p.serialize_request(&key))
            .and_then(|r| r.pem())
            .unwrap_or_else(|e| panic!("{e}"));
        let ok = e
            .enroll(secret, "S002", None, Some(&csr))
            .unwrap_or_else(|e| panic!("the token was spent by the refused request: {e}"));
        let chain = ok.lan_certificate.unwrap_or_default();
        use rustls::pki_types::pem::PemObject;
        let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("no certificate in {chain}"));
        let names = crate::tls::san_names(&leaf);
        assert_eq!(names, ["DNSName(s002.edge.patron.internal)"]);
    }

    /// Issue 17: an enrollment token works once, until it expires or is cancelled or
    /// replaced; a rotation stops the old credential at once and the store enrolls
    /// again with the new token; a revoked store is refused everything, cannot enroll
    /// again, and what it still pushes is kept in quarantine, not applied.
    #[test]
    fn tokens_expire_credentials_rotate_and_a_revoked_store_is_cut_off() {
        use crate::enrollment::TOKEN_VALID_MS;
        let t = TestHub::new(T0, &["S001"]);
        let e = &t.hub.enrollment;
        let secret = |token: &str| {
            token
                .rsplit_once('.')
                .map(|x| x.0.to_string())
                .unwrap_or_default()
        };
        let refused = |r: Result<EnrollResponse, HubError>| match r {
            Err(HubError::Enrollment(m)) => m,
            other => panic!("{other:?}"),
        };
        // Expired: a minute's token a minute and a millisecond later.
        let token = e
            .add_store("S002", "Two", "all", 60_000)
            .unwrap_or_else(|e| panic!("{e}"));
        t.set_time(T0 + 60_001);
        assert_eq!(
            refused(e.enroll(&secret(&token), "S002", None, None)),
            "the token expired: ask HQ for a new one"
        );
        // A new token replaces it; cancelled, it no longer works either.
        let old = e
            .issue_token("S002", TOKEN_VALID_MS, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let new = e
            .issue_token("S002", TOKEN_VALID_MS, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            refused(e.enroll(&secret(&old), "S002", None, None)),
            "unknown or already used token"
        );
        assert!(e.cancel_token("S002").unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            refused(e.enroll(&secret(&new), "S002", None, None)),
            "unknown or already used token"
        );
        assert!(matches!(
            e.issue_token("S002", 1_000, false),
            Err(HubError::Invalid(_))
        ));
        // Used once; not twice.
        let token = e
            .issue_token("S002", TOKEN_VALID_MS, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let first = e
            .enroll(&secret(&token), "S002", None, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            refused(e.enroll(&secret(&token), "S002", None, None)),
            "unknown or already used token"
        );
        assert_eq!(
            e.authenticate(&first.credential)
                .unwrap_or_else(|e| panic!("{e}"))
                .store_id,
            "S002"
        );
        // Rotation: the old credential stops at once; the new token brings a new one.
        let token = e
            .issue_token("S002", TOKEN_VALID_MS, true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            e.authenticate(&first.credential),
            Err(HubError::Unauthorized)
        ));
        let second = e
            .enroll(&secret(&token), "S002", None, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let row = e
            .authenticate(&second.credential)
            .unwrap_or_else(|e| panic!("{e}"));
        // Revoked: refused, cannot come back, its push is kept but not applied.
        assert!(e.revoke("S002").unwrap_or_else(|e| panic!("{e}")));
        assert!(!e.revoke("S002").unwrap_or_else(|e| panic!("{e}")));
        assert!(matches!(
            e.authenticate(&second.credential),
            Err(HubError::Revoked(s)) if s == "S002"
        ));
        assert!(matches!(
            e.issue_token("S002", TOKEN_VALID_MS, true),
            Err(HubError::Enrollment(_))
        ));
        let revoked = e
            .authenticate_revoked_too(&second.credential)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(revoked.revoked && !row.revoked);
        let origin = Origin {
            node: "S002".into(),
            incarnation: uuid::Uuid::from_u128(7),
        };
        let req = PushRequest {
            report: SyncReport::default(),
            push: Push {
                from: "S002".into(),
                batches: vec![batch(
                    origin,
                    vec![member_fact("S002", 1, T0, "purchase", "m-5", 50, "{}")],
                )],
            },
        };
        assert!(matches!(
            t.hub.push(&revoked, req),
            Err(HubError::Revoked(_))
        ));
        let q = t.hub.quarantined(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].reason, REVOKED);
        let list = e.stores().unwrap_or_else(|e| panic!("{e}"));
        let s2 = list.iter().find(|s| s.store_id == "S002");
        assert!(s2.is_some_and(|s| s.revoked_at.is_some() && s.quarantined == 1));
    }

    /// Issue 17: a store cannot release or take over another store's hold by naming
    /// its transaction, and its claim of unsynced earns counts only up to the bound.
    #[test]
    fn holds_are_the_asking_store_s_own_and_unsynced_claims_are_bounded() {
        use patron_protocol::hub::AuthorizeRequest;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let m = mid("m-1");
        t.share_member(&m);
        push_facts(
            &t.hub,
            &t.rows[0],
            vec![member_fact("S001", 1, T0, "purchase", &m, 1_000, "{}")],
        );
        let ask = |i: usize, txn: &str, points: i64, unsynced: i64| {
            let req = AuthorizeRequest {
                member: m.clone(),
                txn: txn.into(),
                points,
                unsynced,
                lease_left: 0,
                budget_ms: 0,
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}"))
                .block_on(t.hub.authorize_async(&t.rows[i], &req))
        };
        let txn = uuid::Uuid::now_v7().to_string();
        let held = ask(0, &txn, 800, 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(held.granted);
        // S002 names S001's transaction: refused, and S001's hold stays.
        assert!(matches!(ask(1, &txn, 100, 0), Err(HubError::Invalid(_))));
        // S002 pushes a spend under S001's txn id: it settles nothing of S001's hold.
        let spend = redemption("S002", 1, T0 + 1, &m, 10, Some(&txn));
        push_facts(&t.hub, &t.rows[1], vec![spend]);
        let other = uuid::Uuid::now_v7().to_string();
        let left = ask(0, &other, 1_000_000, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(left.available, 1_000 - 10 - 800, "S001's 800 still held");
        // A claim of a billion unsynced points counts as the bound, no more.
        let claim = ask(0, &other, 1_000_000, 1_000_000_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claim.available, 190 + crate::authority::MAX_UNSYNCED_POINTS);
    }

    /// Issue 17: a store may not hold, lease or probe the points of a member it
    /// neither registered nor served; once it has served them it may; revoked, its
    /// lease stops reserving the member's points at once.
    #[test]
    fn asks_about_members_a_store_never_served_are_refused_and_revocation_frees_leases() {
        use patron_protocol::hub::{AuthorizeRequest, LeaseRequest};
        let t = TestHub::new(T0, &["S001", "S002"]);
        let m = mid("m-3");
        push_facts(
            &t.hub,
            &t.rows[0],
            vec![member_fact("S001", 1, T0, "purchase", &m, 1_000, "{}")],
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let ask = |i: usize, points: i64| {
            let req = AuthorizeRequest {
                member: m.clone(),
                txn: uuid::Uuid::now_v7().to_string(),
                points,
                unsynced: 0,
                lease_left: 0,
                budget_ms: 0,
            };
            rt.block_on(t.hub.authorize_async(&t.rows[i], &req))
        };
        let lease = |i: usize| {
            t.hub.grant_lease(
                &t.rows[i],
                &LeaseRequest {
                    member: m.clone(),
                    coupons_only: false,
                },
            )
        };
        assert!(matches!(ask(1, 100), Err(HubError::NotServed)));
        assert!(matches!(lease(1), Err(HubError::NotServed)));
        // S002 looks the member up (a fetch): now it may.
        t.share_member(&m);
        let granted = lease(1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(granted.points, 500);
        let probe = |i: usize| ask(i, 1_000_000).map(|a| a.available);
        assert_eq!(probe(0).unwrap_or_else(|e| panic!("{e}")), 500);
        // Revoked, S002's lease reserves nothing: S001 sees the whole balance again.
        assert!(
            t.hub
                .enrollment
                .revoke("S002")
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(probe(0).unwrap_or_else(|e| panic!("{e}")), 1_000);
    }

    /// Issue 17 (review): registering a new member under the phone of another store's
    /// member makes the hub merge them and let the registering store serve the
    /// member, as a lookup would; such registrations count against the store's lookup
    /// budget, and beyond it they are quarantined and merge nothing.
    #[test]
    fn registrations_that_claim_other_stores_members_spend_the_lookup_budget() {
        use base64::Engine;
        let mut t = TestHub::new(T0, &["S001", "S002"]);
        t.hub = t.hub.with_fetch_limit(2);
        let idx = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let reg = |b: u8| serde_json::json!({ "phone_idx": idx(b) }).to_string();
        push_facts(
            &t.hub,
            &t.rows[0],
            (1..=3)
                .map(|i| {
                    member_fact(
                        "S001",
                        i,
                        T0,
                        "member_registered",
                        &format!("m-{i}"),
                        0,
                        &reg(i as u8),
                    )
                })
                .collect(),
        );
        // S002 registers new ids under those three phones (and one of its own).
        let ack = push_facts(
            &t.hub,
            &t.rows[1],
            vec![
                member_fact("S002", 1, T0, "member_registered", "m-11", 0, &reg(1)),
                member_fact("S002", 2, T0, "member_registered", "m-12", 0, &reg(2)),
                member_fact("S002", 3, T0, "member_registered", "m-13", 0, &reg(3)),
                member_fact("S002", 4, T0, "member_registered", "m-14", 0, &reg(9)),
            ],
        );
        assert_eq!(ack.merged.len(), 2, "{:?}", ack.merged);
        let q = t.hub.quarantined(10).unwrap_or_else(|e| panic!("{e}"));
        let seen: Vec<(&str, u64, &str)> = q
            .iter()
            .map(|f| (f.store_id.as_str(), f.seq, f.reason.as_str()))
            .collect();
        assert_eq!(seen, vec![("S002", 3, crate::ingest::CLAIM_BEYOND_BUDGET)]);
        // The budget is spent for lookups too.
        let fetch = t.hub.directory.fetch_member(
            &t.rows[1],
            &MemberFetch {
                phone_idx: idx(3),
                phone: None,
                after: 0,
            },
        );
        assert!(
            matches!(fetch, Err(HubError::FetchLimit { .. })),
            "{fetch:?}"
        );
    }

    /// Issue 17: a store is trusted with its own members and those it served. Facts
    /// about another store's member it never fetched, a registration under another
    /// store's member id, and facts beyond the per-fact limits are kept in quarantine
    /// (listed for review, counted per store) and change nothing: not the member's
    /// balance, not what a fetch returns; the store's sync goes on past them.
    /// A store whose edge no longer applies the lanes' limits (a rogue or stolen store
    /// PC) mints within the per-fact limit, fact after fact: the hub credits a store's
    /// facts up to its budget and quarantines the earning facts beyond it, for review;
    /// facts that credit nothing, other stores, and the store once its budget refills
    /// go on.
    #[test]
    fn a_store_s_earning_facts_beyond_its_budget_are_quarantined() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let limits = crate::ingest::FactLimits {
            max_points_per_store_day: 250_000,
            store_budget_days: 1,
            ..Default::default()
        };
        let (clock, rows) = (&t.clock, &t.rows);
        let hub = t.hub.with_fact_limits(limits);
        let fact = |store: &str, seq: u64, kind: &str, m: &str, earn: i64| {
            let at = clock.load(std::sync::atomic::Ordering::SeqCst);
            member_fact(store, seq, at, kind, m, earn, "{}")
        };
        let ack = push_facts(
            &hub,
            &rows[0],
            vec![
                fact("S001", 1, "purchase", "m-1", 100_000),
                fact("S001", 2, "purchase", "m-1", 100_000),
                fact("S001", 3, "purchase", "m-1", 100_000),
                fact("S001", 4, "purchase", "m-1", 50_000),
                fact("S001", 5, "purchase", "m-1", 0),
            ],
        );
        assert!(
            matches!(ack.verdicts[..], [Verdict::Applied { high: 5, .. }]),
            "sync goes on: {:?}",
            ack.verdicts
        );
        let q = hub.quarantined(10).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<_> = q
            .iter()
            .map(|f| (f.store_id.as_str(), f.seq, f.reason.as_str()))
            .collect();
        assert_eq!(got, vec![("S001", 3, crate::ingest::BEYOND_STORE_BUDGET)]);
        let balance = |m: &str, at: i64| {
            let mut b = 0;
            hub.store()
                .authority_tx(&mut |tx| {
                    b = tx.balance(&mid(m), at)?;
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
            b
        };
        assert_eq!(balance("m-1", T0 + 10), 250_000, "the budget, to the point");
        // Another store has its own budget; a day later S001's has refilled.
        push_facts(
            &hub,
            &rows[1],
            vec![fact("S002", 1, "purchase", "m-2", 100_000)],
        );
        assert_eq!(hub.quarantined(10).map(|q| q.len()).ok(), Some(1));
        clock.store(T0 + 86_400_000, std::sync::atomic::Ordering::SeqCst);
        push_facts(
            &hub,
            &rows[0],
            vec![fact("S001", 6, "purchase", "m-1", 100_000)],
        );
        assert_eq!(hub.quarantined(10).map(|q| q.len()).ok(), Some(1));
        assert_eq!(balance("m-1", T0 + 86_400_010), 350_000);
    }

    #[test]
    fn facts_a_store_may_not_write_are_quarantined_and_change_nothing() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let push = |row: &StoreRow, facts: Vec<Fact>| push_facts(hub, row, facts);
        let idx = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        let reg = serde_json::json!({ "phone_idx": idx }).to_string();
        push(
            &rows[0],
            vec![
                member_fact("S001", 1, T0, "member_registered", "m-1", 0, &reg),
                member_fact("S001", 2, T0, "purchase", "m-1", 500, "{}"),
            ],
        );
        let balance = |m: &str| {
            let mut b = 0;
            hub.store()
                .authority_tx(&mut |tx| {
                    b = tx.balance(&mid(m), T0 + 10)?;
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
            b
        };
        assert_eq!(balance("m-1"), 500);
        // S002 never looked m-1 up: it spends their points, registers a member under
        // their id, and mints 10^8 points for a member of its own.
        let spend = redemption("S002", 1, T0 + 1, "m-1", 400, None);
        let ack = push(
            &rows[1],
            vec![
                spend,
                member_fact("S002", 2, T0 + 1, "member_registered", "m-1", 0, &reg),
                member_fact("S002", 3, T0 + 1, "purchase", "m-9", 100_000_000, "{}"),
                member_fact("S002", 4, T0 + 1, "purchase", "m-9", 10, "{}"),
            ],
        );
        assert!(
            matches!(ack.verdicts[..], [Verdict::Applied { high: 4, .. }]),
            "the store's sync goes on: {:?}",
            ack.verdicts
        );
        assert_eq!(balance("m-1"), 500, "the foreign redemption took nothing");
        assert_eq!(balance("m-9"), 10, "the minted points count nowhere");
        let q = hub.quarantined(10).unwrap_or_else(|e| panic!("{e}"));
        let seen: Vec<(&str, u64, &str)> = q
            .iter()
            .map(|f| (f.store_id.as_str(), f.seq, f.reason.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    "S002",
                    1,
                    "a member this store neither registered nor served"
                ),
                ("S002", 2, "registers a member of another store"),
                ("S002", 3, "points beyond the per-fact limit"),
            ]
        );
        let list = hub.enrollment.stores().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((list[0].quarantined, list[1].quarantined), (0, 3));
        // A fetch of the phone shows S001's facts only.
        let fetch = |row: &StoreRow| {
            hub.directory
                .fetch_member(
                    row,
                    &MemberFetch {
                        phone_idx: idx.clone(),
                        phone: None,
                        after: 0,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let got = fetch(&rows[1]);
        let seen: Vec<(String, u64)> = got
            .facts
            .iter()
            .map(|f| (f.origin.node.clone(), f.seq))
            .collect();
        assert_eq!(seen, vec![("S001".into(), 1), ("S001".into(), 2)]);
        // Having served m-1 (that fetch), S002 may spend their points.
        push(
            &rows[1],
            vec![redemption("S002", 5, T0 + 2, "m-1", 400, None)],
        );
        assert_eq!(balance("m-1"), 100);
        assert_eq!(
            hub.quarantined(10).unwrap_or_else(|e| panic!("{e}")).len(),
            3
        );
    }

    /// A store whose clock runs an hour fast edits a name; two minutes later another
    /// store edits it again. Unclamped, the fast store's stamp would win for an hour.
    #[test]
    fn a_store_clock_running_ahead_is_clamped_and_noted() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(&mid("m-1"));
        let (hub, rows) = (&t.hub, &t.rows);
        let push = |row: &StoreRow, fact: Fact| push_facts(hub, row, vec![fact]);
        push(&rows[0], update("S001", 1, "fast", T0 + 3_600_000));
        push(&rows[0], update("S001", 2, "faster", T0 + 3_601_000));
        let p = hub
            .directory
            .profile(&mid("m-1"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(
            p.fields["name"].value.as_deref(),
            Some(&b"faster"[..]),
            "clamped stamps keep their order"
        );
        t.set_time(T0 + 120_000);
        push(&rows[1], update("S002", 1, "later", T0 + 120_000));
        let p = hub
            .directory
            .profile(&mid("m-1"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(p.fields["name"].value.as_deref(), Some(&b"later"[..]));
        assert_eq!(p.tags.tags(), vec!["vip".to_string()]);
        let list = hub.enrollment.stores().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list[0].clock_ahead_ms, Some(3_601_000));
        assert_eq!(list[1].clock_ahead_ms, None);
    }

    #[test]
    fn lane_alerts_from_stores_are_listed_newest_first_with_their_store() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let alert = |store: &str, seq: u64, lane: &str, figure: i64| {
            Fact {
            origin: Origin {
                node: store.into(),
                incarnation: uuid::Uuid::from_u128(7),
            },
            seq,
            body: serde_json::json!({
                "kind": "lane_alert", "at": T0 + seq as i64, "txn": uuid::Uuid::now_v7().to_string(),
                "body": {"lane": lane, "day": "2026-12-07", "anomaly": "earn_rate",
                         "figure": figure, "against": 100}
            })
            .to_string(),
        }
        };
        push_facts(&t.hub, &t.rows[0], vec![alert("S001", 1, "lane-1", 6_000)]);
        push_facts(&t.hub, &t.rows[1], vec![alert("S002", 1, "lane-9", 9_000)]);
        let list = t.hub.lane_alerts(10).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<_> = list
            .iter()
            .map(|a| {
                (
                    a.store_id.as_str(),
                    a.lane.as_str(),
                    a.figure,
                    a.against,
                    a.at,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("S002", "lane-9", 9_000, 100, T0 + 1),
                ("S001", "lane-1", 6_000, 100, T0 + 1)
            ]
        );
        assert_eq!(t.hub.lane_alerts(1).map(|l| l.len()).ok(), Some(1));
    }

    /// `row` pushes `facts` (one origin, consecutive) to the hub; returns its answer.
    fn push_facts(hub: &Hub, row: &StoreRow, facts: Vec<Fact>) -> PushAck {
        let origin = facts[0].origin.clone();
        let req = PushRequest {
            report: SyncReport {
                origin: Some(origin.clone()),
                last_seq: facts.last().map_or(0, |f| f.seq),
                ..Default::default()
            },
            push: Push {
                from: row.store_id.clone(),
                batches: vec![batch(origin, facts)],
            },
        };
        hub.push(row, req).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A store's fact about member `m` as it syncs (kind, points earned, inner body).
    /// A member id for a test name: a UUID as it is, `m-<n>` as a fixed v7-shaped one.
    fn mid(name: &str) -> String {
        if uuid::Uuid::parse_str(name).is_ok() {
            return name.to_string();
        }
        let n: u128 = name.trim_start_matches("m-").parse().unwrap_or(0);
        uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + 0x1000 + n).to_string()
    }

    /// A fact of `store` about member `m` (see [`mid`]); a purchase with details `{}`
    /// gets a minimal sale's.
    fn member_fact(
        store: &str,
        seq: u64,
        at: i64,
        kind: &str,
        m: &str,
        earn: i64,
        body: &str,
    ) -> Fact {
        let kind = patron_domain::Kind::parse(kind).unwrap_or_else(|| panic!("kind {kind}"));
        let body = match (kind, body) {
            (patron_domain::Kind::Purchase, "{}") => {
                r#"{"receipt_id":"R","subtotal":100,"total":100}"#.to_string()
            }
            _ => body.to_string(),
        };
        // Built as JSON, not through `Entry`: tests also send what the hub must refuse.
        let mut entry = serde_json::json!({
            "kind": kind.as_str(), "at": at, "member": mid(m),
            "txn": uuid::Uuid::now_v7().to_string(),
            "body": serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("{e}")),
        });
        if earn > 0 {
            entry["earn"] = earn.into();
            entry["expires_at"] = (T0 + 1_000_000_000).into();
        }
        let entry = entry.to_string();
        Fact {
            origin: Origin {
                node: store.into(),
                incarnation: uuid::Uuid::from_u128(7),
            },
            seq,
            body: entry,
        }
    }

    /// An offline redemption of `points` by `store` of member `m` (see [`mid`]), under
    /// transaction `txn` if given.
    fn redemption(store: &str, seq: u64, at: i64, m: &str, points: i64, txn: Option<&str>) -> Fact {
        let body = r#"{"reason":"gift","auth":"offline"}"#;
        let mut f = member_fact(store, seq, at, "redemption", m, 0, body);
        let mut e: serde_json::Value =
            serde_json::from_str(&f.body).unwrap_or_else(|e| panic!("{e}"));
        e["spend"] = points.into();
        if let Some(txn) = txn {
            e["txn"] = txn.into();
        }
        f.body = e.to_string();
        f
    }

    /// The phone's index finds the member registered under it and every fact of theirs
    /// from every store, in pages, through the indexes rather than a scan; another
    /// member's facts never come along.
    #[test]
    fn a_member_is_fetched_by_phone_with_their_facts_from_every_store() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let push = |row: &StoreRow, facts: Vec<Fact>| push_facts(hub, row, facts);
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let reg = |idx: &str| serde_json::json!({ "phone_idx": idx }).to_string();
        push(
            &rows[0],
            vec![
                member_fact("S001", 1, T0, "member_registered", "m-1", 0, &reg(&b64(1))),
                member_fact("S001", 2, T0, "member_registered", "m-2", 0, &reg(&b64(2))),
                member_fact("S001", 3, T0, "purchase", "m-1", 120, "{}"),
                member_fact("S001", 4, T0, "purchase", "m-2", 999, "{}"),
            ],
        );
        // S002 looked the member up (a fetch), served them, and pushes the sale.
        hub.directory
            .fetch_member(
                &rows[1],
                &MemberFetch {
                    phone_idx: b64(1),
                    phone: None,
                    after: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        push(
            &rows[1],
            vec![member_fact("S002", 1, T0, "purchase", "m-1", 30, "{}")],
        );
        let fetch = |idx: String, after| {
            hub.directory
                .fetch_member(
                    &rows[1],
                    &MemberFetch {
                        phone_idx: idx,
                        phone: None,
                        after,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let got = fetch(b64(1), 0);
        let seen: Vec<(String, u64)> = got
            .facts
            .iter()
            .map(|f| (f.origin.node.clone(), f.seq))
            .collect();
        assert_eq!(
            seen,
            vec![("S001".into(), 1), ("S001".into(), 3), ("S002".into(), 1)]
        );
        assert!(!got.more);
        assert!(fetch(b64(9), 0).facts.is_empty());
        // Pages: a page of one, then the rest after where it ended; nothing after the end.
        let (first, after, more) = t
            .hub
            .store()
            .member_facts_by_phone("S002", &b64(1), 0, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((first.len(), more), (1, true));
        assert_eq!(fetch(b64(1), after).facts.len(), 2);
        let end = fetch(b64(1), got.upto);
        assert_eq!((end.facts.len(), end.upto, end.more), (0, got.upto, false));
        assert!(matches!(
            hub.directory.fetch_member(
                &rows[1],
                &MemberFetch {
                    phone_idx: "not-an-index".into(),
                    phone: None,
                    after: 0
                }
            ),
            Err(HubError::Invalid(_))
        ));
        let conn = rusqlite::Connection::open(t.db_path()).unwrap_or_else(|e| panic!("{e}"));
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                crate::store::sqlite::MEMBER_FACTS_BY_PHONE
            ))
            .and_then(|mut s| {
                s.query_map(rusqlite::params![b64(1), 0, 10], |r| r.get::<_, String>(3))?
                    .collect()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let plan = plan.join(" / ");
        assert!(plan.contains("SEARCH registrations"), "{plan}");
        assert!(plan.contains("facts_by_member"), "{plan}");
        assert!(!plan.contains("SCAN f"), "{plan}");
    }

    /// A registration as a store holding `keys` (a handout) writes it, for `phone`.
    fn keyed_registration(keys: &str, m: &str, phone: &str) -> (String, Vec<u8>, Vec<u8>) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let m = uuid::Uuid::parse_str(&mid(m)).unwrap_or_else(|e| panic!("{e}"));
        let (idx, wrapped, sealed) = crate::keyring::store_side::register(keys, m, phone);
        let body = serde_json::json!({
            "phone_idx": b64.encode(idx), "wrapped_key": b64.encode(&wrapped),
            "phone": b64.encode(&sealed),
        })
        .to_string();
        (body, wrapped, sealed)
    }

    fn fetch_by_phone(
        hub: &Hub,
        row: &StoreRow,
        phone: &str,
    ) -> Result<patron_sync::pull::FetchedMember, HubError> {
        hub.directory.fetch_member(
            row,
            &MemberFetch {
                phone_idx: String::new(),
                phone: Some(phone.into()),
                after: 0,
            },
        )
    }

    /// Each store holds keys of its own: a member registered at S001 reaches S002
    /// with keys the hub translated for S002, and S003, which never served them, holds
    /// nothing that opens them. A store holding keys of its own asks by phone.
    #[test]
    fn a_member_reaches_another_store_under_that_store_s_keys_only() {
        use crate::keyring::store_side::{index, read_phone};
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let t = TestHub::with_keys(T0, &["S001", "S002", "S003"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let keys: Vec<String> = t
            .keys
            .iter()
            .map(|k| {
                k.clone()
                    .unwrap_or_else(|| panic!("every store is handed keys"))
            })
            .collect();
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
        let m = uuid::Uuid::parse_str(&mid("m-1")).unwrap_or_else(|e| panic!("{e}"));
        let (reg, wrapped, sealed) = keyed_registration(&keys[0], "m-1", "13800000001");
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                1,
                T0,
                "member_registered",
                "m-1",
                0,
                &reg,
            )],
        );
        let by_index = hub.directory.fetch_member(
            &rows[1],
            &MemberFetch {
                phone_idx: index(&keys[1], "13800000001"),
                phone: None,
                after: 0,
            },
        );
        assert!(
            matches!(by_index, Err(HubError::Invalid(_))),
            "{by_index:?}"
        );
        let bad = fetch_by_phone(hub, &rows[1], "138000000");
        assert!(matches!(bad, Err(HubError::Invalid(_))), "{bad:?}");
        let got = fetch_by_phone(hub, &rows[1], "13800000001").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.facts.len(), 1);
        assert_eq!(got.keys.len(), 1, "{:?}", got.keys);
        let k = &got.keys[0];
        assert_eq!(k.member, m.to_string());
        assert_eq!(k.phone_idx, index(&keys[1], "13800000001"));
        let for_s2 = b64.decode(&k.wrapped_key).unwrap_or_default();
        assert_eq!(
            read_phone(&keys[1], m, &for_s2, &sealed).as_deref(),
            Some("13800000001")
        );
        // What S003 could take from its own PC opens neither copy of the key.
        assert_eq!(read_phone(&keys[2], m, &wrapped, &sealed), None);
        assert_eq!(read_phone(&keys[2], m, &for_s2, &sealed), None);
        // S002 follows the member by its stream: its later registration-bearing pages
        // carry keys under S002's keys too.
        let none = fetch_by_phone(hub, &rows[1], "13900000009").unwrap_or_else(|e| panic!("{e}"));
        assert!(none.facts.is_empty() && none.keys.is_empty());
        // Revoked, S002 is translated nothing more (the API refuses its credential
        // before this; the directory refuses too).
        let revoked = StoreRow {
            revoked: true,
            ..rows[1].clone()
        };
        let after = fetch_by_phone(hub, &revoked, "13800000001");
        assert!(matches!(after, Err(HubError::Revoked(_))), "{after:?}");
    }

    /// The hub signs member codes that a store checks with the key the push answer
    /// hands it, for members it knows only, valid no longer than codes may be.
    #[test]
    fn member_codes_are_signed_for_known_members_and_checked_with_the_key_stores_get() {
        let t = TestHub::with_keys(T0, &["S001"]);
        let (hub, row) = (&t.hub, &t.rows[0]);
        let heartbeat = |has_member_code_key: bool| {
            hub.push_negotiated(
                row,
                PushRequest {
                    report: SyncReport {
                        key_generation: Some(1),
                        has_member_code_key,
                        ..Default::default()
                    },
                    push: Push {
                        from: row.store_id.clone(),
                        batches: Vec::new(),
                    },
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .member_code_key
        };
        let key = heartbeat(false).unwrap_or_else(|| panic!("a store without the key gets it"));
        assert_eq!(heartbeat(true), None, "a store holding it gets nothing");
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap_or_default();
        let unknown = hub.member_code(&mid("m-1"), 120);
        assert!(unknown.is_err(), "no member m-1 at the hub yet");
        push_facts(
            hub,
            row,
            vec![member_fact("S001", 1, T0, "purchase", "m-1", 100, "{}")],
        );
        let code = hub
            .member_code(&mid("m-1"), 120)
            .unwrap_or_else(|e| panic!("{e}"));
        let checked =
            patron_domain::member_code::verify(&key, &code, T0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checked.member.to_string(), mid("m-1"));
        assert_eq!(checked.expires_ms, T0 as u64 + 120_000);
        for secs in [0, 601] {
            assert!(hub.member_code(&mid("m-1"), secs).is_err(), "{secs} s");
        }
    }

    /// HQ rotates S001's keys: the next push answer offers generation 2 (until S001
    /// reports holding it), members S001 writes under either generation are opened,
    /// and once it holds generation 2 the hub translates for it under that one only.
    #[test]
    fn a_rotation_offers_the_next_generation_until_the_store_holds_it() {
        use crate::keyring::store_side::{index, read_phone};
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let t = TestHub::with_keys(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let g1 = t.keys[0].clone().unwrap_or_default();
        let heartbeat = |row: &StoreRow, held: u32| {
            hub.push_negotiated(
                row,
                PushRequest {
                    report: SyncReport {
                        key_generation: Some(held),
                        ..Default::default()
                    },
                    push: Push {
                        from: row.store_id.clone(),
                        batches: Vec::new(),
                    },
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .keys
        };
        assert_eq!(
            heartbeat(&rows[0], 1),
            None,
            "nothing to offer before a rotation"
        );
        let (reg, ..) = keyed_registration(&g1, "m-1", "13800000001");
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                1,
                T0,
                "member_registered",
                "m-1",
                0,
                &reg,
            )],
        );

        assert_eq!(hub.enrollment.rotate_keys("S001").ok(), Some(2));
        assert!(hub.enrollment.rotate_keys("S404").is_err());
        let row = |id: &str| {
            hub.enrollment
                .stores()
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .find(|s| s.store_id == id)
                .map(|s| (s.key_generation, s.key_offered))
        };
        assert_eq!(row("S001"), Some((Some(1), Some(2))));
        let s1 = StoreRow {
            keys_offered: Some(2),
            ..rows[0].clone()
        };
        let offer = heartbeat(&s1, 1).unwrap_or_else(|| panic!("generation 2 is offered"));
        assert_eq!(offer.generation, 2);
        assert_ne!(offer.keys, g1);
        assert_eq!(
            heartbeat(&s1, 1).map(|o| o.keys),
            Some(offer.keys.clone()),
            "offered until held"
        );
        // Written under generation 2 before the store reports holding it: opened too.
        let (reg2, ..) = keyed_registration(&offer.keys, "m-2", "13800000002");
        push_facts(
            hub,
            &s1,
            vec![member_fact(
                "S001",
                2,
                T0,
                "member_registered",
                "m-2",
                0,
                &reg2,
            )],
        );
        let got = fetch_by_phone(hub, &rows[1], "13800000002").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.keys.len(),
            1,
            "the hub opened the generation-2 registration"
        );

        assert_eq!(heartbeat(&s1, 2), None, "held now: nothing more to offer");
        assert_eq!(row("S001"), Some((Some(2), None)));
        // Translated for S001 under generation 2 only, as the hub recorded it; a report
        // of an older generation (or of the chain's keys: a store restored with an old
        // key directory) does not take it back: generation 2 is offered again.
        assert_eq!(heartbeat(&s1, 0).map(|o| o.generation), Some(2));
        assert_eq!(
            row("S001"),
            Some((Some(2), None)),
            "never back to older keys"
        );
        let (held, offered) = row("S001").unwrap_or_default();
        let s1 = StoreRow {
            member_keys: held,
            keys_offered: offered.or(held),
            ..s1
        };
        let m = uuid::Uuid::parse_str(&mid("m-1")).unwrap_or_else(|e| panic!("{e}"));
        // The phone as the registration sealed it, under the member's own key.
        let sealed = {
            let v: serde_json::Value = serde_json::from_str(&reg).unwrap_or_default();
            b64.decode(v["phone"].as_str().unwrap_or_default())
                .unwrap_or_default()
        };
        assert_eq!(read_phone(&g1, m, &b64.decode(
            serde_json::from_str::<serde_json::Value>(&reg).unwrap_or_default()["wrapped_key"]
                .as_str().unwrap_or_default()).unwrap_or_default(), &sealed).as_deref(),
            Some("13800000001"), "the registration opens under generation 1");
        let got = fetch_by_phone(hub, &s1, "13800000001").unwrap_or_else(|e| panic!("{e}"));
        let k = &got.keys[0];
        assert_eq!(k.phone_idx, index(&offer.keys, "13800000001"));
        let wrapped = b64.decode(&k.wrapped_key).unwrap_or_default();
        assert_eq!(
            read_phone(&offer.keys, m, &wrapped, &sealed).as_deref(),
            Some("13800000001"),
            "translated under generation 2"
        );
        assert!(
            read_phone(&g1, m, &wrapped, &sealed).is_none(),
            "not under generation 1"
        );
    }

    /// The hub indexes a registration by the phone it seals, not by the index the store
    /// wrote: a store cannot attach its member to another's phone by claiming its index,
    /// and one phone registered at two stores is one member whatever each indexed.
    #[test]
    fn the_hub_matches_phones_by_the_sealed_phone_not_the_claimed_index() {
        use base64::Engine;
        let t = TestHub::with_keys(T0, &["S001", "S002", "S003"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let key = |i: usize| t.keys[i].clone().unwrap_or_default();
        let (reg, ..) = keyed_registration(&key(0), "m-1", "13800000001");
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                1,
                T0,
                "member_registered",
                "m-1",
                0,
                &reg,
            )],
        );
        // S003 claims the victim's chain index for another phone, then for a key it
        // cannot have wrapped: neither is matched to the victim.
        let chain = t.chain_index("13800000001");
        let (other, ..) = keyed_registration(&key(2), "m-3", "13900000003");
        let mut forged: serde_json::Value = serde_json::from_str(&other).unwrap_or_default();
        forged["phone_idx"] = chain.clone().into();
        let ack = push_facts(hub, &rows[2], vec![
            member_fact("S003", 1, T0, "member_registered", "m-3", 0, &forged.to_string()),
            member_fact("S003", 2, T0, "member_registered", "m-4", 0,
                &serde_json::json!({"phone_idx": chain, "wrapped_key": "a2V5", "phone": "a2V5"}).to_string()),
        ]);
        assert!(ack.merged.is_empty(), "{:?}", ack.merged);
        let victim = fetch_by_phone(hub, &rows[1], "13800000001").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(victim.facts.len(), 1, "only the victim's own registration");
        let theirs = fetch_by_phone(hub, &rows[1], "13900000003").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            theirs.facts.len(),
            1,
            "S003's member is under the phone it sealed"
        );
        // S002 registers the victim's phone under its own index: one member.
        let (reg2, ..) = keyed_registration(&key(1), "m-2", "13800000001");
        let mut reg2: serde_json::Value = serde_json::from_str(&reg2).unwrap_or_default();
        reg2["phone_idx"] = base64::engine::general_purpose::STANDARD
            .encode([9u8; 32])
            .into();
        let ack = push_facts(
            hub,
            &rows[1],
            vec![member_fact(
                "S002",
                1,
                T0,
                "member_registered",
                "m-2",
                0,
                &reg2.to_string(),
            )],
        );
        assert_eq!(ack.merged.len(), 1, "{:?}", ack.merged);
        assert_eq!(ack.merged[0].survivor, mid("m-1"));
    }

    /// Two stores register one phone while apart: the registration the hub receives
    /// second is merged into the first, once; the pusher is told; balances, holds and
    /// fetches cover both ids.
    #[test]
    fn a_phone_registered_at_two_stores_becomes_one_member() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let push = |row: &StoreRow, facts: Vec<Fact>| push_facts(hub, row, facts);
        let idx = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let reg = serde_json::json!({ "phone_idx": idx }).to_string();
        let (m1, m2) = (
            "0190a000-0000-7000-8000-000000000001",
            "0190a000-0000-7000-8000-000000000002",
        );
        let ack = push(
            &rows[0],
            vec![
                member_fact("S001", 1, T0, "member_registered", m1, 0, &reg),
                member_fact("S001", 2, T0, "purchase", m1, 300, "{}"),
            ],
        );
        assert!(ack.merged.is_empty());
        // Before its registration reaches the hub, S002 is granted 100 of its member's
        // unsynced points: a hold under the id about to be merged away.
        let pre = hub
            .authorize(
                &rows[1],
                &patron_protocol::hub::AuthorizeRequest {
                    member: m2.into(),
                    txn: uuid::Uuid::from_u128(99).to_string(),
                    points: 100,
                    unsynced: 200,
                    lease_left: 0,
                    budget_ms: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(pre.granted);
        // S002 registered later, with a name and a birthday S001 did not take.
        let reg2 = serde_json::json!({ "phone_idx": idx, "name": "B", "birthday": "b",
                                       "hlc": {"wall": T0 + 1, "counter": 0, "node": "S002"} })
        .to_string();
        let s2 = vec![
            member_fact("S002", 1, T0, "member_registered", m2, 0, &reg2),
            member_fact("S002", 2, T0, "purchase", m2, 200, "{}"),
        ];
        let ack = push(&rows[1], s2.clone());
        assert_eq!(
            ack.merged,
            vec![patron_sync::session::Merged {
                loser: m2.into(),
                survivor: m1.into()
            }]
        );
        // Either id's profile is the two registrations merged field by field.
        for id in [m1, m2] {
            let p = hub
                .directory
                .profile(id)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_default();
            let field = |f: &str| p.fields.get(f).and_then(|w| w.value.clone());
            assert_eq!(field("name"), Some(b"B".to_vec()), "{id}");
            assert_eq!(field("birthday"), Some(b"b".to_vec()), "{id}");
        }
        // A resend merges nothing again.
        assert!(push(&rows[1], s2).merged.is_empty());
        // Only the hub merges: a store's merge fact refuses its batch.
        let forged = serde_json::json!({ "survivor": m2 }).to_string();
        let ack = push(
            &rows[0],
            vec![member_fact("S001", 3, T0, "member_merged", m1, 0, &forged)],
        );
        assert!(
            matches!(&ack.verdicts[..], [patron_sync::Verdict::Refused { .. }]),
            "{ack:?}"
        );
        let ask = |row: &StoreRow, member: &str, txn: u128, points: i64| {
            hub.authorize(
                row,
                &patron_protocol::hub::AuthorizeRequest {
                    member: member.into(),
                    txn: uuid::Uuid::from_u128(txn).to_string(),
                    points,
                    unsynced: 0,
                    lease_left: 0,
                    budget_ms: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        // Asked by either id, the hub counts both ids' points, and every hold: the
        // pre-merge one moved to the survivor.
        assert_eq!(ask(&rows[1], m2, 1, 10_000).available, 400);
        assert!(ask(&rows[1], m2, 2, 300).granted);
        assert_eq!(ask(&rows[0], m1, 3, 10_000).available, 100);
        // The merge travels as a fact of the hub with the member's facts.
        let fetched = hub
            .directory
            .fetch_member(
                &rows[0],
                &MemberFetch {
                    phone_idx: idx,
                    phone: None,
                    after: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<(String, String)> = fetched
            .facts
            .iter()
            .filter_map(|f| patron_domain::Entry::parse(&f.body).ok())
            .map(|e| {
                (
                    e.kind().to_string(),
                    e.member.map(|m| m.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        let merge = fetched
            .facts
            .iter()
            .find(|f| f.origin.node == "hub")
            .unwrap_or_else(|| panic!("no merge fact in {kinds:?}"));
        assert_eq!(merge.seq, 1);
        let e = patron_domain::Entry::parse(&merge.body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.kind(), e.member.map(|m| m.to_string())),
            (patron_domain::Kind::MemberMerged, Some(m2.to_string()))
        );
        assert!(e.body().contains(m1), "{}", e.body());
    }

    /// A member a store registered before it enrolled (under its own phone index) is
    /// found by the chain's index once the store's `member_rekeyed` fact arrives, and
    /// merged with a member another store registered under that phone first.
    #[test]
    fn a_member_rekeyed_after_enrollment_is_found_by_phone_and_merged() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let (own, chain) = (b64(1), b64(9));
        let (early, later) = (
            "0190a000-0000-7000-8000-00000000000a",
            "0190a000-0000-7000-8000-00000000000b",
        );
        let body = |idx: &str| serde_json::json!({ "phone_idx": idx }).to_string();
        let ack = push_facts(
            hub,
            &rows[0],
            vec![
                member_fact("S001", 1, T0, "member_registered", early, 0, &body(&own)),
                member_fact("S001", 2, T0, "purchase", early, 300, "{}"),
            ],
        );
        assert!(ack.merged.is_empty());
        let fetch = |idx: &str| {
            hub.directory
                .fetch_member(
                    &rows[1],
                    &MemberFetch {
                        phone_idx: idx.to_string(),
                        phone: None,
                        after: 0,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
                .facts
                .len()
        };
        assert_eq!(fetch(&chain), 0, "not under the chain's index yet");
        push_facts(
            hub,
            &rows[1],
            vec![
                member_fact("S002", 1, T0, "member_registered", later, 0, &body(&chain)),
                member_fact("S002", 2, T0, "purchase", later, 50, "{}"),
            ],
        );
        let rekey = serde_json::json!({ "phone_idx": chain, "wrapped_key": "a2V5" }).to_string();
        let rekey_by = |row: usize, seq: u64, body: &str| {
            let store = ["S001", "S002"][row];
            push_facts(
                hub,
                &rows[row],
                vec![member_fact(
                    store,
                    seq,
                    T0,
                    "member_rekeyed",
                    early,
                    0,
                    body,
                )],
            )
        };
        let available = |member: &str, txn: u128| {
            hub.authorize(
                &rows[1],
                &patron_protocol::hub::AuthorizeRequest {
                    member: member.into(),
                    txn: uuid::Uuid::from_u128(txn).to_string(),
                    points: 10_000,
                    unsynced: 0,
                    lease_left: 0,
                    budget_ms: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .available
        };
        // Asked before the merge: S002's member has their 50 (and the hub keeps their
        // ledger snapshot, past the position of S001's member's purchase).
        assert_eq!(available(later, 1), 50);
        // S001 holds a lease on its member: half of 300.
        let leased = hub
            .grant_lease(
                &rows[0],
                &patron_protocol::hub::LeaseRequest {
                    member: early.into(),
                    coupons_only: false,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(leased.points, 150);
        let refused =
            |ack: PushAck| matches!(&ack.verdicts[..], [patron_sync::Verdict::Refused { .. }]);
        // Only the store that registered a member re-keys it, and a re-key carries the
        // new phone index and key.
        assert!(refused(rekey_by(1, 3, &rekey)));
        assert!(refused(rekey_by(0, 3, &body(&chain))));
        assert_eq!(fetch(&chain), 2, "refused re-keys are not held");
        // S001 enrolls and re-keys its member: the chain's index now finds both, and
        // the member S002 registered under it first survives.
        let ack = rekey_by(0, 3, &rekey);
        assert_eq!(
            ack.merged,
            vec![patron_sync::session::Merged {
                loser: early.into(),
                survivor: later.into()
            }]
        );
        // Both members' facts and the merge: registration, purchase, re-key, S002's
        // registration and purchase, the hub's merge.
        assert_eq!(fetch(&chain), 6);
        // The survivor's points now include the purchase made under the other id,
        // although it was ingested before the survivor's snapshot was kept; and S001's
        // lease on the merged-away id still holds its 150 for S001.
        assert_eq!(available(later, 2), 200);
    }

    /// A hub restored from an older copy of its database must not write merges under
    /// (origin, sequence) pairs stores already hold for merges made after the copy:
    /// every start is a new incarnation of the hub's own origin.
    #[test]
    fn a_restored_hub_writes_merges_under_a_new_incarnation() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002", "S003"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let idx = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let reg = |phone: &str| serde_json::json!({ "phone_idx": phone }).to_string();
        let id = |n: u128| {
            uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + n).to_string()
        };
        let register = |hub: &Hub, row: &StoreRow, seq: u64, m: &str, phone: &str| {
            push_facts(
                hub,
                row,
                vec![member_fact(
                    &row.store_id,
                    seq,
                    T0,
                    "member_registered",
                    m,
                    0,
                    &reg(phone),
                )],
            )
        };
        // The hub's merge fact for `phone`, fetched as a store would.
        let merge_of = |hub: &Hub, phone: &str| -> Fact {
            let got = hub
                .directory
                .fetch_member(
                    &rows[0],
                    &MemberFetch {
                        phone_idx: phone.into(),
                        phone: None,
                        after: 0,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"));
            got.facts
                .into_iter()
                .find(|f| f.origin.node == "hub")
                .unwrap_or_else(|| panic!("no merge for {phone}"))
        };
        register(hub, &rows[0], 1, &id(1), &idx(1));
        register(hub, &rows[1], 1, &id(2), &idx(1));
        let first = merge_of(hub, &idx(1));
        let backup = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let copy = backup.path().join(crate::store::sqlite::DB_FILE);
        rusqlite::Connection::open(t.db_path())
            .and_then(|c| c.execute("VACUUM INTO ?1", [copy.to_string_lossy()]))
            .unwrap_or_else(|e| panic!("{e}"));
        // After the copy: a second merge, seq 2 of that incarnation.
        register(hub, &rows[0], 2, &id(3), &idx(2));
        register(hub, &rows[1], 2, &id(4), &idx(2));
        let second = merge_of(hub, &idx(2));
        assert_eq!(
            (second.origin.clone(), second.seq),
            (first.origin.clone(), 2)
        );

        // The copy is restored and serves again; the next merge it writes is new to
        // every store, whatever they hold of the lost one.
        let store = Arc::new(
            crate::store::sqlite::SqliteStore::open(backup.path())
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let restored = Hub::with_clock(store, String::new(), "x".into(), Box::new(|| T0));
        register(&restored, &rows[0], 2, &id(5), &idx(3));
        register(&restored, &rows[2], 1, &id(6), &idx(3));
        let third = merge_of(&restored, &idx(3));
        assert_ne!(third.origin, first.origin, "a new incarnation");
        assert_eq!(third.origin.node, "hub");
        assert_eq!(third.seq, 1);
    }

    /// Each store has its own fetch budget, a minute's worth that refills continuously;
    /// over it, fetches are refused (HTTP 429) until it refills.
    #[test]
    fn member_fetches_are_limited_per_store() {
        use axum::response::IntoResponse;
        let mut t = TestHub::new(T0, &["S001", "S002"]);
        t.hub = t.hub.with_fetch_limit(3);
        let fetch = |row: &StoreRow| {
            t.hub.directory.fetch_member(
                row,
                &MemberFetch {
                    phone_idx: base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        [7u8; 32],
                    ),
                    phone: None,
                    after: 0,
                },
            )
        };
        for _ in 0..3 {
            assert!(fetch(&t.rows[0]).is_ok());
        }
        let refused = fetch(&t.rows[0]);
        assert!(
            matches!(refused, Err(HubError::FetchLimit { per_minute: 3 })),
            "{refused:?}"
        );
        if let Err(e) = refused {
            assert_eq!(
                e.into_response().status(),
                axum::http::StatusCode::TOO_MANY_REQUESTS
            );
        }
        assert!(
            fetch(&t.rows[1]).is_ok(),
            "another store's budget is its own"
        );
        // 20 s later one fetch has come back (3 a minute), not two.
        t.set_time(T0 + 20_000);
        assert!(fetch(&t.rows[0]).is_ok());
        assert!(fetch(&t.rows[0]).is_err());
    }

    /// HQ cannot publish a rule set or tier thresholds the edges would refuse: the hub
    /// validates with the same schema, and nothing reaches the ring's document.
    #[test]
    fn rule_sets_and_tiers_the_edges_would_refuse_are_not_published() {
        let t = TestHub::new(T0, &["S001"]);
        let refused = |r: Result<String, HubError>| match r {
            Err(HubError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = refused(t.hub.documents.publish_rule_set(
            "pilot",
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"teleport"}]}"#,
        ));
        assert!(m.contains("teleport"), "{m}");
        let m = refused(t.hub.documents.publish_rule_set(
            "pilot",
            r#"{"version":"v1","rules":[{"id":"a","label":"x","type":"order_reduction","threshold":0,"off":10,"repeat":true}]}"#,
        ));
        assert!(m.contains("rule \"a\""), "names the rule: {m}");
        let tiers = t.hub.documents.publish_tier_rules(
            "pilot",
            r#"{"window_months":12,"silver":5,"gold":1,"diamond":9}"#,
        );
        assert!(matches!(tiers, Err(HubError::Invalid(_))), "{tiers:?}");
        let doc = patron_sync::docs::ring_doc("pilot");
        assert!(
            t.hub
                .store()
                .load_doc(&doc)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        // A valid set is published under its version.
        let v = t
            .hub
            .documents
            .publish_rule_set("pilot", r#"{"version":"v2","rules":[]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, "v2");
        assert!(
            t.hub
                .store()
                .load_doc(&doc)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_some()
        );
    }

    /// The projections kept per fact, rebuilt from the facts, equal what ingest built
    /// one push at a time: registrations (a phone registered at two stores, a re-key)
    /// and merged profiles (a store whose clock ran an hour fast, clamped at ingest by
    /// the hub's clock then, which the rebuild reads back from `received_at`).
    #[test]
    fn rebuilt_projections_equal_the_incremental_ones() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let idx = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let reg = |i: &str, name: &str| {
            serde_json::json!({ "phone_idx": i, "name": name,
                                "consents": {"marketing": true} })
            .to_string()
        };
        push_facts(
            hub,
            &rows[0],
            vec![
                member_fact(
                    "S001",
                    1,
                    T0,
                    "member_registered",
                    "m-1",
                    0,
                    &reg(&idx(1), "YQ=="),
                ),
                member_fact(
                    "S001",
                    2,
                    T0,
                    "member_registered",
                    "m-2",
                    0,
                    &reg(&idx(2), "Yg=="),
                ),
                update("S001", 3, "fast", T0 + 3_600_000),
            ],
        );
        t.set_time(T0 + 60_000);
        push_facts(
            hub,
            &rows[1],
            vec![
                member_fact(
                    "S002",
                    1,
                    T0,
                    "member_registered",
                    "m-3",
                    0,
                    &reg(&idx(1), "Yw=="),
                ),
                update("S002", 2, "later", T0 + 60_000),
            ],
        );
        let rekey = serde_json::json!({ "phone_idx": idx(9), "wrapped_key": "a2V5" }).to_string();
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                4,
                T0,
                "member_rekeyed",
                "m-2",
                0,
                &rekey,
            )],
        );
        let snapshot = || -> Vec<String> {
            let conn = rusqlite::Connection::open(t.db_path()).unwrap_or_else(|e| panic!("{e}"));
            let mut out = Vec::new();
            for sql in [
                "SELECT phone_idx || ' ' || fact || ' ' || member FROM registrations ORDER BY 1",
                "SELECT member || ' ' || updated_at || ' ' || profile FROM profiles ORDER BY 1",
                "SELECT loser || ' ' || survivor FROM member_aliases ORDER BY 1",
            ] {
                let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{e}"));
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                    .unwrap_or_else(|e| panic!("{e}"));
                out.extend(rows);
            }
            out
        };
        let before = snapshot();
        assert_eq!(
            before.len(),
            4 + 3 + 1,
            "4 registrations (3 + a re-key), 3 profiles, 1 alias: {before:#?}"
        );
        t.set_time(T0 + 999_999_999);
        let r = hub.rebuild_projections().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                r.facts,
                r.registrations,
                r.profiles,
                r.aliases,
                r.unreadable
            ),
            (7, 4, 3, 1, 0),
            "6 store facts and the hub's merge"
        );
        assert_eq!(snapshot(), before);
    }

    /// Members' activity is folded behind the ingest cursor in steps of any size, and
    /// a rebuild from the log gives the same rows; a merged person's activity adds up
    /// every id's. The fixture of every kind of fact the edge writes goes through it.
    #[test]
    fn activity_behind_the_cursor_equals_a_rebuild_and_adds_up_merged_ids() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        // Every kind a store writes, but merges (the hub's own) and the re-key (of a
        // member registered before the store enrolled, which has no registration here).
        let fixture: Vec<&str> = include_str!("../../domain/fixtures/facts-v1.jsonl")
            .lines()
            .filter(|l| {
                !l.trim().is_empty()
                    && !l.contains(r#""kind":"member_merged""#)
                    && !l.contains(r#""kind":"member_rekeyed""#)
            })
            .collect();
        let origin = |node: &str| Origin {
            node: node.into(),
            incarnation: uuid::Uuid::from_u128(7),
        };
        // The fixture as S001's first facts, pushed in three parts, with steps of 1,
        // 2 and 3 facts between the pushes (rows read back and added to).
        let facts: Vec<Fact> = fixture
            .iter()
            .enumerate()
            .map(|(i, body)| Fact {
                origin: origin("S001"),
                seq: i as u64 + 1,
                body: (*body).to_string(),
            })
            .collect();
        let n = facts.len() as u64;
        let step = |max: usize| {
            crate::projections::ActivityProjection(t.hub.store.clone()).step_at_most(max)
        };
        let applied = |ack: PushAck| {
            assert!(
                ack.verdicts
                    .iter()
                    .all(|v| matches!(v, Verdict::Applied { .. })),
                "{ack:?}"
            );
        };
        for (part, max) in facts.chunks(facts.len() / 3 + 1).zip([1usize, 2, 3]) {
            applied(push_facts(hub, &rows[0], part.to_vec()));
            for _ in 0..4 {
                step(max);
            }
        }
        // One phone registered at both stores: S002's m-3 is merged into S001's m-1.
        let idx = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let reg = serde_json::json!({ "phone_idx": idx }).to_string();
        let sale = |store: &str, seq, at, m: &str, total: i64| {
            let body = format!(r#"{{"receipt_id":"R{seq}","subtotal":{total},"total":{total}}}"#);
            member_fact(store, seq, at, "purchase", m, 1, &body)
        };
        let refund = r#"{"receipt_id":"R1","per_line":[1],"gross":300,"amount":300}"#;
        let mut s1: Vec<Fact> = vec![
            member_fact("S001", 1, T0, "member_registered", "m-1", 0, &reg),
            sale("S001", 2, T0 + 10, "m-1", 1_000),
            sale("S001", 3, T0 + 20, "m-1", 500),
        ];
        for f in &mut s1 {
            f.origin = origin("S001");
            f.seq += n;
        }
        applied(push_facts(hub, &rows[0], s1));
        step(2);
        let s2 = vec![
            member_fact("S002", 1, T0 + 5, "member_registered", "m-3", 0, &reg),
            sale("S002", 2, T0 + 30, "m-3", 2_000),
            member_fact("S002", 3, T0 + 40, "refund", "m-3", 0, refund),
        ];
        applied(push_facts(hub, &rows[1], s2));
        let caught = hub.catch_up_projections().unwrap_or_else(|e| panic!("{e}"));
        assert!(caught > 0, "the last facts were folded by the catch-up");
        let positions = hub.projections().unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = positions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["activity", "overdraws"]);
        assert!(
            positions.iter().all(|p| p.position == p.end),
            "{positions:?}"
        );
        let incremental = hub.store().all_activity().unwrap_or_else(|e| panic!("{e}"));
        // Every member fact of the fixture and of the two stores is counted once.
        let member_facts = fixture
            .iter()
            .filter(|l| {
                patron_domain::Entry::parse(l)
                    .ok()
                    .and_then(|e| e.member)
                    .is_some()
            })
            .count() as i64
            + 6;
        assert_eq!(
            incremental.iter().map(|(_, a)| a.facts).sum::<i64>(),
            member_facts
        );
        let rebuilt = hub.rebuild_behind().unwrap_or_else(|e| panic!("{e}"));
        // The step hands the hub's merge to the fold too, which passes over it.
        assert_eq!(rebuilt[0].1.folded as i64, member_facts + 1);
        assert_eq!(
            hub.store().all_activity().unwrap_or_else(|e| panic!("{e}")),
            incremental,
            "a rebuild gives what the steps gave"
        );
        // The person behind m-1 and m-3: three purchases, one refund, the extremes of
        // both ids.
        let person = hub
            .directory
            .activity(&mid("m-1"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(
            (
                person.purchases,
                person.spend,
                person.refunds,
                person.refunded
            ),
            (3, 3_500, 1, 300)
        );
        assert_eq!(
            (
                person.first_purchase_at,
                person.last_purchase_at,
                person.last_seen_at
            ),
            (Some(T0 + 10), Some(T0 + 30), T0 + 40)
        );
        assert_eq!(
            hub.directory
                .activity(&mid("m-3"))
                .unwrap_or_else(|e| panic!("{e}")),
            Some(person),
            "the merged id reads the same person"
        );
        assert!(matches!(
            hub.directory.activity("not-a-member"),
            Err(HubError::Invalid(_))
        ));
        assert_eq!(
            hub.directory
                .activity(&mid("m-99"))
                .unwrap_or_else(|e| panic!("{e}")),
            None
        );
    }

    /// S001 registers member m-1 under phone index `[1; 32]` and S002 fetches them (so
    /// S002 holds them); the phone index (base64).
    fn registered_at_s001_fetched_by_s002(hub: &Hub, rows: &[StoreRow]) -> String {
        use base64::Engine;
        let idx = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let reg = serde_json::json!({ "phone_idx": idx }).to_string();
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                1,
                T0,
                "member_registered",
                "m-1",
                0,
                &reg,
            )],
        );
        fetch_all(hub, &rows[1], &idx);
        idx
    }

    /// `row` fetches the members under phone index `idx` from the start (it holds them
    /// from now on).
    fn fetch_all(hub: &Hub, row: &StoreRow, idx: &str) -> patron_sync::pull::FetchedMember {
        hub.directory
            .fetch_member(
                row,
                &MemberFetch {
                    phone_idx: idx.to_string(),
                    phone: None,
                    after: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A stream cursor: (position, mark of the fact there).
    type Cur = (u64, u64);

    /// The start of a stream.
    const START: Cur = (0, 0);

    /// Facts of a store's stream poll: (origin node, seq) in order, and the cursor.
    fn poll(hub: &Hub, row: &StoreRow, (after, mark): Cur) -> (Vec<(String, u64)>, Cur) {
        match hub
            .stream(
                row,
                &StreamRequest {
                    after,
                    mark,
                    max: 100,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
        {
            StreamAnswer::Page {
                facts, upto, mark, ..
            } => (
                facts
                    .iter()
                    .map(|s| (s.fact.origin.node.clone(), s.fact.seq))
                    .collect(),
                (upto, mark),
            ),
            StreamAnswer::MustRefetch { resume, .. } => panic!("must refetch (resume {resume})"),
        }
    }

    /// A member's facts reach every store that holds them — the store that registered
    /// them, one that served them, one that fetched them — and no other; a store never
    /// receives its own facts or another member's.
    #[test]
    fn the_stream_carries_a_members_facts_to_the_stores_that_hold_them() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002", "S003"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let reg = |idx: &str| serde_json::json!({ "phone_idx": idx }).to_string();
        push_facts(
            hub,
            &rows[0],
            vec![
                member_fact("S001", 1, T0, "member_registered", "m-1", 0, &reg(&b64(1))),
                member_fact("S001", 2, T0, "member_registered", "m-2", 0, &reg(&b64(2))),
            ],
        );
        let fetched = hub
            .directory
            .fetch_member(
                &rows[1],
                &MemberFetch {
                    phone_idx: b64(1),
                    phone: None,
                    after: 0,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fetched.facts.len(), 1);
        let (_, s2) = poll(hub, &rows[1], START);
        push_facts(
            hub,
            &rows[0],
            vec![
                member_fact("S001", 3, T0, "purchase", "m-1", 120, "{}"),
                member_fact("S001", 4, T0, "purchase", "m-2", 999, "{}"),
            ],
        );
        let (got, s2) = poll(hub, &rows[1], s2);
        assert_eq!(
            got,
            vec![("S001".to_string(), 3)],
            "m-1 only, fetched by S002"
        );
        assert_eq!(poll(hub, &rows[0], START).0, vec![], "nothing of its own");
        // S002 serves m-1: the store that registered them hears of it.
        push_facts(
            hub,
            &rows[1],
            vec![member_fact("S002", 1, T0, "purchase", "m-1", 30, "{}")],
        );
        assert_eq!(poll(hub, &rows[0], START).0, vec![("S002".to_string(), 1)]);
        assert_eq!(poll(hub, &rows[1], s2).0, vec![]);
        assert_eq!(poll(hub, &rows[2], START).0, vec![], "S003 holds no one");
        // A cursor past everything gets nothing again, and stays where the hub ends.
        let (_, end) = poll(hub, &rows[0], START);
        assert_eq!(poll(hub, &rows[0], end), (vec![], end));
    }

    /// What a store acknowledged (its report's `stream_after`) is forgotten; a cursor
    /// below that (a store database restored from an older copy) or beyond the hub's
    /// end (a hub restored) must refetch, and resumes at the hub's end.
    #[test]
    fn a_cursor_the_hub_cannot_serve_must_refetch() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let idx = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let reg = serde_json::json!({ "phone_idx": idx }).to_string();
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                1,
                T0,
                "member_registered",
                "m-1",
                0,
                &reg,
            )],
        );
        // S002 serves the member it fetched.
        fetch_all(hub, &rows[1], &idx);
        push_facts(
            hub,
            &rows[1],
            vec![
                member_fact("S002", 1, T0, "purchase", "m-1", 10, "{}"),
                member_fact("S002", 2, T0, "purchase", "m-1", 20, "{}"),
            ],
        );
        let (got, end) = poll(hub, &rows[0], START);
        assert_eq!(got.len(), 2);
        let first: Cur = match hub.stream(
            &rows[0],
            &StreamRequest {
                after: 0,
                max: 1,
                ..Default::default()
            },
        ) {
            Ok(StreamAnswer::Page {
                upto,
                mark,
                more: true,
                ..
            }) => (upto, mark),
            other => panic!("{other:?}"),
        };
        // S001 reports it applied everything: the hub forgets it.
        let ack = |(after, mark): Cur| {
            let origin = Origin {
                node: "S001".into(),
                incarnation: uuid::Uuid::from_u128(7),
            };
            hub.push(
                &rows[0],
                PushRequest {
                    report: SyncReport {
                        origin: Some(origin.clone()),
                        last_seq: 1,
                        stream_after: Some(after),
                        stream_mark: Some(mark),
                        ..Default::default()
                    },
                    push: Push {
                        from: "S001".into(),
                        batches: Vec::new(),
                    },
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        ack(end);
        let refetch = |(after, mark): Cur| {
            hub.stream(
                &rows[0],
                &StreamRequest {
                    after,
                    mark,
                    ..Default::default()
                },
            )
        };
        let resumes_at_end = |r: Result<StreamAnswer, HubError>| matches!(r, Ok(StreamAnswer::MustRefetch { resume, mark }) if (resume, mark) == end);
        assert!(resumes_at_end(refetch(first)), "below the horizon");
        assert!(
            resumes_at_end(refetch(START)),
            "from the start, below the horizon"
        );
        assert!(resumes_at_end(refetch((end.0 + 10, 1))), "beyond the end");
        assert_eq!(poll(hub, &rows[0], end), (vec![], end));
        // The right position with another fact's mark: the hub's database is not the
        // one the cursor was read from (restored from an older copy).
        assert!(
            resumes_at_end(refetch((end.0, end.1 ^ 1))),
            "another fact there"
        );
        // A report whose mark is not the fact at its position forgets nothing.
        ack((end.0 + 1_000, end.1));
        assert_eq!(poll(hub, &rows[0], end), (vec![], end));
    }

    /// A store releases a member it no longer holds: their facts stop coming — unless
    /// it fetched them again after the position it released them at.
    #[test]
    fn a_released_member_stops_coming_unless_fetched_again() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let idx = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let reg = serde_json::json!({ "phone_idx": idx }).to_string();
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                1,
                T0,
                "member_registered",
                "m-1",
                0,
                &reg,
            )],
        );
        let fetch = || fetch_all(hub, &rows[1], &idx);
        fetch();
        let (_, cursor) = poll(hub, &rows[1], START);
        let release = |(after, mark): Cur| {
            hub.stream(
                &rows[1],
                &StreamRequest {
                    after,
                    mark,
                    release: vec![mid("m-1")],
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        // Released at a position before the fetch: ignored, the fetch came later.
        release(START);
        push_facts(
            hub,
            &rows[0],
            vec![member_fact("S001", 2, T0, "purchase", "m-1", 5, "{}")],
        );
        let (got, cursor) = poll(hub, &rows[1], cursor);
        assert_eq!(got, vec![("S001".to_string(), 2)]);
        // Released after: nothing more.
        release(cursor);
        push_facts(
            hub,
            &rows[0],
            vec![member_fact("S001", 3, T0, "purchase", "m-1", 5, "{}")],
        );
        assert_eq!(poll(hub, &rows[1], cursor).0, vec![]);
        // Fetched again: they come again.
        fetch();
        push_facts(
            hub,
            &rows[0],
            vec![member_fact("S001", 4, T0, "purchase", "m-1", 5, "{}")],
        );
        assert_eq!(poll(hub, &rows[1], cursor).0, vec![("S001".to_string(), 4)]);
        let bad = hub.stream(
            &rows[1],
            &StreamRequest {
                release: vec!["not-a-member".into()],
                ..Default::default()
            },
        );
        assert!(matches!(bad, Err(HubError::Invalid(_))), "{bad:?}");
    }

    /// What a store leaves unacknowledged past the retention is forgotten, and that
    /// store must refetch; a store whose stream held nothing that old keeps its place.
    #[test]
    fn unacknowledged_stream_positions_expire_and_their_store_refetches() {
        let t = TestHub::new(T0, &["S001", "S002", "S003"]);
        let (hub, rows) = (&t.hub, &t.rows);
        registered_at_s001_fetched_by_s002(hub, rows);
        let (_, s3) = poll(hub, &rows[2], START);
        push_facts(
            hub,
            &rows[0],
            vec![member_fact("S001", 2, T0, "purchase", "m-1", 5, "{}")],
        );
        const DAY: i64 = 86_400_000;
        t.set_time(T0 + 29 * DAY);
        assert_eq!(hub.expire_streams(30 * DAY).ok(), Some(0), "not old enough");
        let (got, _) = poll(hub, &rows[1], START);
        assert_eq!(got.len(), 1);
        t.set_time(T0 + 31 * DAY);
        assert_eq!(hub.expire_streams(30 * DAY).ok(), Some(1));
        let after_expiry = hub.stream(
            &rows[1],
            &StreamRequest {
                ..Default::default()
            },
        );
        assert!(
            matches!(after_expiry, Ok(StreamAnswer::MustRefetch { .. })),
            "{after_expiry:?}"
        );
        assert_eq!(poll(hub, &rows[2], s3).0, vec![], "S003 keeps its place");
    }

    /// A push wakes the waiting polls of the stores its facts were streamed to, and no
    /// other's; closing the hub wakes them all.
    #[test]
    fn a_push_wakes_only_the_polls_it_gave_news() {
        let t = TestHub::new(T0, &["S001", "S002", "S003"]);
        let (hub, rows) = (&t.hub, &t.rows);
        registered_at_s001_fetched_by_s002(hub, rows);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let woke = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_millis(50), f)
                    .await
                    .is_ok()
            })
        };
        let (s2, s3) = (
            Box::pin(hub.stream_changed("S002")),
            Box::pin(hub.stream_changed("S003")),
        );
        push_facts(
            hub,
            &rows[0],
            vec![member_fact("S001", 2, T0, "purchase", "m-1", 5, "{}")],
        );
        assert!(woke(s2), "S002 holds the member: woken");
        assert!(!woke(s3), "S003 holds no one: left waiting");
        let s3 = Box::pin(hub.stream_changed("S003"));
        hub.close();
        assert!(woke(s3), "closing wakes every poll");
    }

    /// One phone registered at two stores: the hub's merge reaches both, and each
    /// holds both members from then on (a later fact of either reaches the other).
    #[test]
    fn a_merge_reaches_every_store_holding_either_member() {
        use base64::Engine;
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (hub, rows) = (&t.hub, &t.rows);
        let idx = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let reg = serde_json::json!({ "phone_idx": idx }).to_string();
        push_facts(
            hub,
            &rows[0],
            vec![member_fact(
                "S001",
                1,
                T0,
                "member_registered",
                "m-1",
                0,
                &reg,
            )],
        );
        let ack = push_facts(
            hub,
            &rows[1],
            vec![member_fact(
                "S002",
                1,
                T0,
                "member_registered",
                "m-2",
                0,
                &reg,
            )],
        );
        assert_eq!(ack.merged.len(), 1);
        let kinds = |row: &StoreRow| -> Vec<String> {
            let StreamAnswer::Page { facts, .. } = hub
                .stream(
                    row,
                    &StreamRequest {
                        max: 100,
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
            else {
                panic!("must refetch")
            };
            facts
                .iter()
                .map(|s| {
                    patron_domain::Entry::parse(&s.fact.body)
                        .map(|e| e.kind().as_str().to_string())
                        .unwrap_or_default()
                })
                .collect()
        };
        assert_eq!(kinds(&rows[0]), vec!["member_merged"]);
        assert_eq!(kinds(&rows[1]), vec!["member_merged"]);
        push_facts(
            hub,
            &rows[1],
            vec![member_fact("S002", 2, T0, "purchase", "m-2", 5, "{}")],
        );
        assert_eq!(kinds(&rows[0]), vec!["member_merged", "purchase"]);
    }

    /// The protocol is the lower of the two sides'; a store older than the hub serves
    /// is refused, before enrollment spends its token.
    #[test]
    fn protocols_are_negotiated_and_too_old_a_store_is_refused() {
        let t = TestHub::new(T0, &[]);
        let hub = &t.hub;
        let v1 = negotiate(None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v1.protocol, 1);
        assert!(!v1.offers(patron_protocol::hub::capability::STREAM));
        let now = negotiate(Some(PROTOCOL)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(now.protocol, PROTOCOL);
        assert!(now.offers(patron_protocol::hub::capability::STREAM));
        let newer = negotiate(Some(PROTOCOL + 5)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(newer.protocol, PROTOCOL);
        assert!(matches!(
            negotiate(Some(0)),
            Err(HubError::Protocol { asked: 0, .. })
        ));
        let token = hub
            .enrollment
            .add_store("S009", "S009", "all", crate::enrollment::TOKEN_VALID_MS)
            .unwrap_or_else(|e| panic!("{e}"));
        let secret = token.rsplit_once('.').map(|x| x.0).unwrap_or_default();
        assert!(matches!(
            hub.enrollment.enroll(secret, "S009", Some(0), None),
            Err(HubError::Protocol { .. })
        ));
        let ok = hub
            .enrollment
            .enroll(secret, "S009", Some(PROTOCOL), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.negotiated.map(|n| n.protocol), Some(PROTOCOL));
    }
}
