//! Registering, finding and updating members.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use patron_domain::{Detail, Kind};
use patron_protocol::pos::{
    ExpiringPoints, Freshness, Member, PointsView, RegisterMember, UpdateMember,
};
use patron_protocol::{MemberId, Points};
use std::sync::Arc;

use patron_sync::pull::MemberFetch;
use serde_json::json;

use super::{Actor, Core, Edge, EdgeError, Idem, MemberState, Reply, Seal, invalid, opt, profiles};
use crate::domain::clock::{Millis, days};
use crate::domain::limits::DayTotals;
use crate::domain::promo::ruleset::Compiled;
use crate::domain::tiers;
use crate::domain::validate::{self, Phone};
use crate::store::facts::{self, NewFact};
use crate::store::members::{self, MemberRow};

impl Core {
    /// Decrypts a member row and combines it with its derived state, coupons and the
    /// benefits of its tier under `rules`.
    pub fn member_view(
        &self,
        conn: &rusqlite::Connection,
        rules: Option<&Compiled>,
        row: &MemberRow,
        state: &MemberState,
        now: Millis,
        freshness: Freshness,
    ) -> Result<Member, EdgeError> {
        let id = &row.member_id;
        let key = self.vault.member_key(id, &row.wrapped_key)?;
        let phone = self.vault.open_field(&key, id, "phone", &row.phone_enc)?;
        let name = row
            .name_enc
            .as_deref()
            .map(|c| self.vault.open_field(&key, id, "name", c))
            .transpose()?;
        let birthday = row
            .birthday_enc
            .as_deref()
            .map(|c| self.vault.open_field(&key, id, "birthday", c))
            .transpose()?;
        let until = now + days(self.points().expiring_notice_days);
        let expiring = state
            .points
            .expiring_by(until)
            .into_iter()
            .map(|(at, n)| ExpiringPoints {
                points: Points(n),
                expires_at: self.cal.rfc3339(at),
            })
            .collect();
        Ok(Member {
            member_id: MemberId::from_bytes(*id),
            phone_masked: validate::mask_phone(&phone),
            name,
            birthday,
            tier: tiers::view(state.qualifying_spend, &state.tiers),
            points: PointsView {
                balance: Points(state.points.balance()),
                expiring,
                pending: Points(state.points.pending()),
            },
            coupons: self.coupon_views(conn, id, now)?,
            benefits: self.benefit_views(conn, rules, id, state, now)?,
            referral_code: row.referral_code.clone(),
            tags: row.tags.clone(),
            marketing_consent: row.consent_marketing,
            created_at: self.cal.rfc3339(row.created_at),
            home_store: row.home_store.clone(),
            freshness,
        })
    }

    /// A new referral code: this store's id and six random characters, unique across
    /// the chain (`patron_domain::referral`); the store's own check keeps it unique here.
    fn new_referral_code(&self, conn: &rusqlite::Connection) -> Result<String, EdgeError> {
        for _ in 0..16 {
            let code = patron_domain::referral::new_code(&self.cfg.store_id, self.vault.random()?);
            if !members::referral_code_taken(conn, &code)? {
                return Ok(code);
            }
        }
        Err(EdgeError::Store(crate::store::StoreError::Corrupt(
            "no free referral code after 16 tries".into(),
        )))
    }
}

fn sealed(v: &Option<Vec<u8>>) -> serde_json::Value {
    v.as_ref()
        .map_or(serde_json::Value::Null, |c| json!(B64.encode(c)))
}

/// A phone held here is brought up to date from the hub at most this often.
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a fetched fact is a `member_rekeyed` one.
fn is_rekey(body: &str) -> bool {
    body.contains("member_rekeyed")
        && patron_domain::Entry::parse(body).is_ok_and(|e| e.kind() == Kind::MemberRekeyed)
}

impl Edge {
    /// How current this store's view of the other stores is, for the member card:
    /// live while the hub is reachable and its stream followed; otherwise as of the
    /// last stream answer stored.
    pub fn freshness(&self) -> Freshness {
        let Ok(s) = self.sync_status.lock() else {
            return Freshness::default();
        };
        if !s.enrolled {
            return Freshness::default();
        }
        Freshness {
            live: s.reachable && s.streaming,
            as_of: s.streamed_at.map(|t| self.core.cal.rfc3339(t)),
        }
    }

    /// `POST /v1/members`.
    pub async fn register(
        &self,
        idem: Option<Idem>,
        actor: Actor,
        req: RegisterMember,
    ) -> Result<Reply, EdgeError> {
        let core = self.core.clone();
        let fresh = self.freshness();
        let rules = self.rules();
        let now = core.now();
        let today = core.cal.date(now);
        let phone = Phone::parse(&req.phone).map_err(invalid)?;
        if !req.consents.terms {
            return Err(EdgeError::Invalid(
                "consents.terms must be true: the member must accept the terms".into(),
            ));
        }
        let name = opt(req.name.as_deref(), validate::name)?;
        let birthday = req
            .birthday
            .as_deref()
            .map(|b| validate::birthday(b, today))
            .transpose()
            .map_err(invalid)?;
        let channel = opt(req.channel.as_deref(), validate::channel)?;
        let policy_version = opt(
            req.consents.policy_version.as_deref(),
            validate::policy_version,
        )?;
        let referrer_code = opt(req.referrer_code.as_deref(), validate::referral_code)?;

        // Registered while the hub is away: provisional until the hub has the
        // registration (it may merge the member with one another store registered).
        let provisional =
            self.hub_authority().is_some() && !self.sync_status.lock().is_ok_and(|s| s.reachable);
        // Encrypt before queueing: the writer thread only writes.
        let id = MemberId::new_v7();
        let idb = *id.as_bytes();
        let (key, wrapped_key) = core.vault.new_member_key(&idb)?;
        let v = &core.vault;
        let indexes = v.phone_indexes(phone.as_str());
        let row = MemberRow {
            member_id: idb,
            phone_idx: v.phone_index(phone.as_str()),
            wrapped_key,
            phone_enc: v.seal_field(&key, &idb, "phone", phone.as_str())?,
            name_enc: name
                .as_deref()
                .map(|n| v.seal_field(&key, &idb, "name", n))
                .transpose()?,
            birthday_enc: birthday
                .map(|b| v.seal_field(&key, &idb, "birthday", &validate::format_date(b)))
                .transpose()?,
            referral_code: String::new(),
            referrer_code,
            channel,
            consent_terms: true,
            consent_marketing: req.consents.marketing,
            policy_version,
            tags: Vec::new(),
            home_store: core.cfg.store_id.clone(),
            created_at: now,
            updated_at: now,
        };
        // The referrer's reward for a friend who just joined here, and the new member's
        // welcome points: no other store can know the member yet, so this store's own
        // count decides (the hub is not asked; a person who registered at two stores
        // is reported once the registrations merge).
        let asks = super::claims::Asks::none(super::claims::Asked::Local);
        self.store
            .writer
            .write(move |ctx| {
                core.idempotent(ctx, idem.as_ref(), now, |ctx| {
                    if let Some(existing) = members::first_by_phone(ctx.conn, &indexes)? {
                        let shown = members::alias_set(ctx.conn, &existing)?.first().copied().unwrap_or(existing);
                        return Err(EdgeError::MemberExists { member_id: MemberId::from_bytes(shown) });
                    }
                    let mut row = row;
                    row.referral_code = core.new_referral_code(ctx.conn)?;
                    members::insert(ctx.conn, &row)?;
                    let body = json!({
                        "phone_idx": B64.encode(row.phone_idx),
                        "wrapped_key": B64.encode(&row.wrapped_key),
                        "phone": B64.encode(&row.phone_enc),
                        "name": sealed(&row.name_enc),
                        "birthday": sealed(&row.birthday_enc),
                        "referral_code": row.referral_code,
                        "referrer_code": row.referrer_code,
                        "channel": row.channel,
                        "consents": {"terms": true, "marketing": row.consent_marketing, "policy_version": row.policy_version},
                        "home_store": row.home_store,
                        "hlc": core.profile_stamp(now),
                    });
                    let body = body.to_string();
                    let detail = Detail::parse(Kind::MemberRegistered, &body)
                        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
                    let seq = facts::append(
                        ctx,
                        &NewFact::new(Kind::MemberRegistered, now, Some(idb), idb, body),
                    )?;
                    let ops = profiles::fact_ops(&detail, now, &core.cfg.store_id);
                    let row = profiles::apply(ctx.conn, &idb, &ops)?.unwrap_or(row);
                    if provisional {
                        members::mark_provisional(ctx.conn, &idb, ctx.origin, seq)?;
                    }
                    let mut referred = 0;
                    if let Some(referral) = rules.as_deref().and_then(|c| c.set.referral.as_ref()) {
                        referred = core.referral_reward(ctx, &row, referral.on_register, "register", &asks, now)?;
                    }
                    let welcomed = core.welcome_points(ctx, rules.as_deref(), &idb, &asks, now)?;
                    // A lane registering made-up friends for someone's referral code is
                    // bounded like any other way of earning, and so are welcome points.
                    let earned = referred + welcomed;
                    let counted = DayTotals { registrations: 1, earned, ..DayTotals::default() };
                    core.within_limits(ctx.conn, actor, now, counted, |l, day| l.registration(day, earned))?;
                    let state = if welcomed > 0 { core.load_state(ctx.conn, &idb, now)?.1 } else { core.empty_state(now) };
                    Ok((201, core.member_view(ctx.conn, rules.as_deref(), &row, &state, now, fresh.clone())?, Seal::Member(idb)))
                })
            })
            .await
    }

    /// `GET /v1/members/{id}`.
    pub async fn member(&self, id: MemberId) -> Result<Member, EdgeError> {
        let core = self.core.clone();
        let fresh = self.freshness();
        let rules = self.rules();
        let view = self
            .store
            .readers
            .read(move |conn| {
                let now = core.now();
                let row = core
                    .shown_row(conn, id.as_bytes())?
                    .ok_or(EdgeError::MemberNotFound)?;
                let (_, state) = core.load_state(conn, id.as_bytes(), now)?;
                core.member_view(conn, rules.as_deref(), &row, &state, now, fresh.clone())
            })
            .await;
        if view.is_ok() {
            self.identified(*id.as_bytes());
        }
        view
    }

    /// `GET /v1/members?phone=…`. A phone this store does not hold is fetched from the
    /// hub, when it is reachable, in one round trip; a phone it holds is answered at once
    /// and brought up to date from the hub in the background (what other stores did
    /// since, or a merge), for the next lookup.
    pub async fn member_by_phone(self: &Arc<Self>, raw_phone: &str) -> Result<Member, EdgeError> {
        let phone = Phone::parse(raw_phone).map_err(invalid)?;
        let idx = self.core.vault.phone_index(phone.as_str());
        match self.member_by_phone_here(&phone).await {
            Err(EdgeError::MemberNotFound)
                if self
                    .refresh_from_hub(idx, Some(phone.as_str().to_string()))
                    .await =>
            {
                self.member_by_phone_here(&phone).await
            }
            found => {
                if found.is_ok() && self.hub_reachable() && self.due_for_refresh(idx) {
                    let edge = self.clone();
                    let phone = phone.as_str().to_string();
                    tokio::spawn(async move { edge.refresh_from_hub(idx, Some(phone)).await });
                }
                found
            }
        }
    }

    /// Whether a background refresh of this phone is due (at most one per
    /// `REFRESH_EVERY`), noting it as done now if so.
    fn due_for_refresh(&self, idx: [u8; 32]) -> bool {
        let now = std::time::Instant::now();
        let Ok(mut seen) = self.refreshed.lock() else {
            return false;
        };
        if seen.len() > 10_000 {
            seen.retain(|_, at| now.duration_since(*at) < REFRESH_EVERY);
        }
        match seen.get(&idx) {
            Some(at) if now.duration_since(*at) < REFRESH_EVERY => false,
            _ => {
                seen.insert(idx, now);
                true
            }
        }
    }

    /// Whether a member fetch from the hub is under way.
    pub(crate) fn fetching(&self) -> bool {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Whether the hub can be asked now: enrolled, holding the chain keys, and the last
    /// call to the hub answered.
    pub(crate) fn hub_reachable(&self) -> bool {
        self.hub_authority().is_some()
            && self.core.vault.has_chain_keys()
            && self.sync_status.lock().is_ok_and(|s| s.reachable)
    }

    /// Fetches from the hub what it holds for the member(s) registered under the phone
    /// whose index here is `idx` (the phone itself, if the caller has it: else it is
    /// read from the member held under `idx`) since this store last asked, and keeps
    /// it here. `true` if anything new arrived. `false` (a lookup answers not found)
    /// when the store is not enrolled, holds no keys from the hub, the hub is
    /// unreachable or slow, or has nothing new.
    pub async fn refresh_from_hub(&self, idx: [u8; 32], phone: Option<String>) -> bool {
        self.fetch_from_hub(idx, phone).await == Fetched::News
    }

    /// The phone of the member held under index `idx`, read from its sealed copy.
    async fn phone_held_under(&self, idx: [u8; 32]) -> Option<String> {
        let core = self.core.clone();
        self.store
            .readers
            .read(move |c| {
                let Some(id) = members::first_by_phone(c, &[idx])? else {
                    return Ok::<_, EdgeError>(None);
                };
                let Some(row) = members::get(c, &id)? else {
                    return Ok(None);
                };
                let key = core.vault.member_key(&id, &row.wrapped_key)?;
                Ok(Some(core.vault.open_field(
                    &key,
                    &id,
                    "phone",
                    &row.phone_enc,
                )?))
            })
            .await
            .ok()
            .flatten()
    }

    /// [`Edge::refresh_from_hub`], saying whether the hub answered.
    pub(crate) async fn fetch_from_hub(&self, idx: [u8; 32], phone: Option<String>) -> Fetched {
        /// Counts the fetch as under way until it is stored (or failed).
        struct UnderWay<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for UnderWay<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let Some(hub) = self.hub_authority().filter(|_| self.hub_reachable()) else {
            return Fetched::Failed;
        };
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _under_way = UnderWay(&self.fetches);
        let since = self
            .store
            .readers
            .read(move |c| Ok::<_, EdgeError>(members::fetched_upto(c, &idx)?))
            .await
            .unwrap_or(0);
        let phone_idx = B64.encode(idx);
        // The hub indexes the phone itself under the chain's key (this store's index
        // means nothing to it). A phone no member here is held under cannot be asked
        // for without the caller's.
        let phone = match phone {
            Some(p) => Some(p),
            None => self.phone_held_under(idx).await,
        };
        let phone = zeroize::Zeroizing::new(phone);
        let fetch = |from: u64| {
            let (hub, phone_idx, phone) = (&hub, &phone_idx, &phone);
            async move {
                let (mut facts, mut keys, mut after) = (Vec::new(), Vec::new(), from);
                loop {
                    let page = hub
                        .fetcher
                        .fetch_member(&MemberFetch {
                            phone_idx: phone_idx.clone(),
                            phone: (**phone).clone(),
                            after,
                        })
                        .await?;
                    facts.extend(page.facts);
                    keys.extend(page.keys);
                    let more = page.more && page.upto > after;
                    after = page.upto;
                    if !more {
                        return Ok::<_, super::hub_port::HubCallError>((facts, keys, after));
                    }
                }
            }
        };
        let pages = async {
            let got = fetch(since).await?;
            // A member re-keyed under this phone (registered before its store enrolled)
            // joins it with facts older than `since`: the phone is fetched whole.
            if since > 0 && got.0.iter().any(|f| is_rekey(&f.body)) {
                return fetch(0).await;
            }
            Ok(got)
        };
        let (facts, keys, upto) = match tokio::time::timeout(hub.fetch_timeout, pages).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "member fetch from the hub failed");
                // A hub that answered is reachable, whatever it said (a refusal, the
                // store's fetch budget spent): only a missing answer means offline.
                if matches!(e, super::hub_port::HubCallError::Unreachable(_)) {
                    self.hub_failed();
                }
                return Fetched::Failed;
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = hub.fetch_timeout.as_millis() as u64,
                    "member fetch from the hub timed out"
                );
                self.hub_failed();
                return Fetched::Failed;
            }
        };
        if facts.is_empty() && since == 0 {
            return Fetched::Nothing; // no one has this phone
        }
        // Stored even with nothing new: the fetch time keeps the member in this store's
        // set (`drop_departed_members`).
        let n = facts.len();
        match self.apply_fetched(idx, facts, keys, upto).await {
            Ok(true) => {
                tracing::info!(facts = n, "member facts fetched from the hub");
                Fetched::News
            }
            Ok(false) => Fetched::Nothing,
            Err(e) => {
                tracing::error!(error = %e, "member facts fetched from the hub could not be stored");
                Fetched::Failed
            }
        }
    }

    /// After the hub merged `loser` (held here) into another member: fetches what the
    /// hub holds under the loser's phone (the survivor, the merge).
    pub async fn fetch_survivor_of(&self, loser: &str) {
        let Ok(id) = uuid::Uuid::parse_str(loser) else {
            return;
        };
        let row = self
            .store
            .readers
            .read(move |c| Ok::<_, EdgeError>(members::get(c, id.as_bytes())?))
            .await;
        if let Ok(Some(row)) = row
            && !self.refresh_from_hub(row.phone_idx, None).await
        {
            tracing::warn!("a merged member's survivor could not be fetched yet");
        }
    }

    /// After the stream brought the merge of `loser` into `survivor`, one of whom is
    /// held here: fetches the phone they share, so this store holds both histories
    /// (the other member's facts from before the merge are not in this store's
    /// stream). `false` if that could not be done now: the caller asks again later.
    pub async fn fetch_merged(&self, loser: uuid::Uuid, survivor: uuid::Uuid) -> bool {
        let row = self
            .store
            .readers
            .read(move |c| {
                Ok::<_, EdgeError>(match members::get(c, loser.as_bytes())? {
                    Some(r) => Some(r),
                    None => members::get(c, survivor.as_bytes())?,
                })
            })
            .await;
        match row {
            // Fetched, or nothing new since this store's last fetch of the phone.
            // A refusal (the fetch budget) or no answer is asked again.
            Ok(Some(row)) => self.fetch_from_hub(row.phone_idx, None).await != Fetched::Failed,
            // Neither is held any more: nothing to fetch.
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Runs a pending refetch of every held phone (after the stream could not
    /// continue from this store's position) to its end: one phone at a time, well
    /// inside the store's fetch budget; a phone that fails is asked again with backoff
    /// (never skipped); progress is recorded after each phone, so a restart resumes
    /// where it stopped. One run at a time.
    pub async fn refetch_phones(&self) {
        const PACE: std::time::Duration = std::time::Duration::from_millis(150);
        const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
        // A phone that keeps failing is left to its next lookup (its fetch position
        // was reset, so that lookup fetches it whole) rather than block the others.
        const TRIES: u32 = 10;
        let Some(running) = super::Running::start(&self.refetching) else {
            return;
        };
        let (mut phones, mut wait, mut tries) = (0usize, PACE, 0u32);
        loop {
            let next = match self.next_refetch_phone().await {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "stream: reading the pending refetch failed");
                    break;
                }
            };
            if self.fetch_from_hub(next, None).await == Fetched::Failed {
                tries += 1;
                if tries < TRIES {
                    wait = (wait * 2).min(MAX_WAIT);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                tracing::warn!(
                    tries,
                    "stream: a phone could not be fetched again; left to its next lookup"
                );
            }
            tries = 0;
            if let Err(e) = self.refetched_phone(next).await {
                tracing::error!(error = %e, "stream: recording the refetch failed");
                break;
            }
            phones += 1;
            wait = PACE;
            tokio::time::sleep(PACE).await;
        }
        drop(running);
        if phones > 0 {
            tracing::info!(phones, "stream: held members fetched again");
        }
    }

    /// Partial replication: a member registered at another store leaves this store's
    /// set once `sync.keep_members_days` pass with no sale here and no fetch, unless the
    /// store holds a lease on them (or they are part of a merge). Their profile row, the
    /// facts fetched for them and the fetch position go; this store's own facts of
    /// theirs stay (they are its ledger). A later lookup fetches them whole again.
    /// Returns how many left.
    pub async fn drop_departed_members(&self) -> Result<usize, EdgeError> {
        let core = self.core.clone();
        let now = core.now();
        let cutoff = now - i64::from(core.cfg.sync.keep_members_days) * 86_400_000;
        let own_node = self.store.origin.node.clone();
        let leased: std::collections::HashSet<[u8; 16]> =
            self.leases.members().into_iter().collect();
        let (gone, facts) = self
            .store
            .writer
            .write(move |ctx| {
                let own = format!("{own_node}/");
                let (mut gone, mut facts) = (0, 0);
                for row in members::fetched_before(ctx.conn, &core.cfg.store_id, cutoff)? {
                    if leased.contains(&row.member_id) {
                        continue;
                    }
                    let served = facts::for_member(ctx.conn, &row.member_id)
                        .map_err(crate::store::StoreError::from)?
                        .iter()
                        .any(|f| f.at >= cutoff && f.origin.starts_with(&own));
                    if !served {
                        facts += members::remove_fetched(ctx.conn, &row, &own_node)?;
                        gone += 1;
                    }
                }
                Ok::<_, EdgeError>((gone, facts))
            })
            .await?;
        if gone > 0 {
            tracing::info!(
                members = gone,
                facts,
                "members of other stores left this store"
            );
        }
        Ok(gone)
    }

    /// The member this store holds under `phone`.
    async fn member_by_phone_here(&self, phone: &Phone) -> Result<Member, EdgeError> {
        let indexes = self.core.vault.phone_indexes(phone.as_str());
        let core = self.core.clone();
        let fresh = self.freshness();
        let rules = self.rules();
        let (id, view) = self
            .store
            .readers
            .read(move |conn| {
                let now = core.now();
                let id =
                    members::first_by_phone(conn, &indexes)?.ok_or(EdgeError::MemberNotFound)?;
                let row = core
                    .shown_row(conn, &id)?
                    .ok_or(EdgeError::MemberNotFound)?;
                let (_, state) = core.load_state(conn, &id, now)?;
                Ok::<_, EdgeError>((
                    row.member_id,
                    core.member_view(conn, rules.as_deref(), &row, &state, now, fresh.clone())?,
                ))
            })
            .await?;
        self.identified(id);
        Ok(view)
    }

    /// `PATCH /v1/members/{id}`: profile fields and preference tags.
    pub async fn update_member(
        &self,
        idem: Option<Idem>,
        id: MemberId,
        req: UpdateMember,
    ) -> Result<Reply, EdgeError> {
        let core = self.core.clone();
        let fresh = self.freshness();
        let rules = self.rules();
        let now = core.now();
        let today = core.cal.date(now);
        let name = opt(req.name.as_deref(), validate::name)?;
        let birthday = req
            .birthday
            .as_deref()
            .map(|b| validate::birthday(b, today))
            .transpose()
            .map_err(invalid)?;
        let add = req
            .tags_add
            .iter()
            .map(|t| validate::tag(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let remove = req
            .tags_remove
            .iter()
            .map(|t| validate::tag(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        if name.is_none()
            && birthday.is_none()
            && req.marketing.is_none()
            && add.is_empty()
            && remove.is_empty()
        {
            return Err(EdgeError::Invalid(
                "nothing to change: give name, birthday, marketing, tags_add or tags_remove".into(),
            ));
        }
        let marketing = req.marketing;
        self.store
            .writer
            .write(move |ctx| {
                core.idempotent(ctx, idem.as_ref(), now, |ctx| {
                    let idb = *id.as_bytes();
                    let row = members::get(ctx.conn, &idb)?.ok_or(EdgeError::MemberNotFound)?;
                    let key = core.vault.member_key(&idb, &row.wrapped_key)?;
                    let mut changed = serde_json::Map::new();
                    if let Some(n) = &name {
                        let c = core.vault.seal_field(&key, &idb, "name", n)?;
                        changed.insert("name".into(), json!(B64.encode(c)));
                    }
                    if let Some(b) = birthday {
                        let c = core.vault.seal_field(
                            &key,
                            &idb,
                            "birthday",
                            &validate::format_date(b),
                        )?;
                        changed.insert("birthday".into(), json!(B64.encode(c)));
                    }
                    if let Some(m) = marketing {
                        changed.insert("marketing".into(), json!(m));
                    }
                    if !add.is_empty() || !remove.is_empty() {
                        changed.insert("tags_add".into(), json!(add));
                        changed.insert("tags_remove".into(), json!(remove));
                    }
                    changed.insert(
                        "hlc".into(),
                        json!(profiles::local_stamp(&core, ctx.conn, &idb, now)?),
                    );
                    let body = serde_json::Value::Object(changed).to_string();
                    // The change goes through the same CRDT as every store's changes do.
                    let detail = Detail::parse(Kind::MemberUpdated, &body)
                        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
                    let ops = profiles::fact_ops(&detail, now, &core.cfg.store_id);
                    let row =
                        profiles::apply(ctx.conn, &idb, &ops)?.ok_or(EdgeError::MemberNotFound)?;
                    if row.tags.len() > validate::MAX_TAGS {
                        return Err(EdgeError::Invalid(format!(
                            "a member holds at most {} tags",
                            validate::MAX_TAGS
                        )));
                    }
                    let txn = *patron_protocol::TransactionId::new_v7().as_bytes();
                    facts::append(
                        ctx,
                        &NewFact::new(Kind::MemberUpdated, now, Some(idb), txn, body),
                    )?;
                    let (_, state) = core.load_state(ctx.conn, &idb, now)?;
                    let row = core.shown_row(ctx.conn, &idb)?.unwrap_or(row);
                    Ok((
                        200,
                        core.member_view(
                            ctx.conn,
                            rules.as_deref(),
                            &row,
                            &state,
                            now,
                            fresh.clone(),
                        )?,
                        Seal::Member(idb),
                    ))
                })
            })
            .await
    }
}

/// What a fetch from the hub came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// New facts were stored.
    News,
    /// The hub answered with nothing new.
    Nothing,
    /// No usable answer (unreachable, slow, refused, or not stored).
    Failed,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use patron_protocol::Origin;
    use patron_sync::session::Fact;

    use super::*;

    const T0: i64 = 1_764_000_000_000;
    const DAY: i64 = 86_400_000;

    /// Another store's facts about member `m` as the hub would send them.
    fn fetched(m: [u8; 16], idx: [u8; 32], first_seq: u64) -> Vec<Fact> {
        let entry = |kind: &str, earn: i64, body: serde_json::Value| {
            let mut e = json!({"kind": kind, "at": T0, "member": uuid::Uuid::from_bytes(m),
                               "txn": uuid::Uuid::now_v7(), "body": body});
            if earn > 0 {
                e["earn"] = json!(earn);
                e["expires_at"] = json!(T0 + 400 * DAY);
            }
            e
        };
        let reg = json!({"phone_idx": B64.encode(idx), "wrapped_key": "", "phone": "",
                         "referral_code": format!("R{}", first_seq), "home_store": "S001"});
        [
            entry("member_registered", 0, reg),
            entry(
                "purchase",
                500,
                json!({"receipt_id": "R", "subtotal": 100, "total": 100}),
            ),
        ]
        .into_iter()
        .zip(first_seq..)
        .map(|(e, seq)| Fact {
            origin: Origin {
                node: "S001".into(),
                incarnation: uuid::Uuid::from_u128(9),
            },
            seq,
            body: e.to_string(),
        })
        .collect()
    }

    /// Tier spend counts whole local days: a sale at 23:59 on 2025-12-07 (+08:00)
    /// still counts at 00:01 on 2026-12-06 and at 23:59 on 2026-12-07's eve, and stops
    /// counting at 00:00 on 2026-12-07, whatever the hour of the sale.
    #[tokio::test]
    async fn tier_spend_counts_by_whole_local_days() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // 2025-12-07 23:59:00 +08:00.
        let sale_at = 1_765_123_140_000;
        let (edge, clock) = Edge::for_test("S001", dir.path(), sale_at);
        let id = edge.test_member("13800000088", None).await;
        let sale = json!({"member_id": id, "receipt_id": "R-day",
                          "lines": [{"sku": "A", "qty": 1, "unit_price": 12_300}]});
        let idem = Idem {
            lane: 1,
            key: "k-day".into(),
            request_hash: [0; 32],
        };
        edge.commit(
            idem,
            crate::service::Actor::manager(),
            serde_json::from_value(sale).unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let member_id: MemberId = id.parse().unwrap_or_else(|e| panic!("{e:?}"));
        let spend_at = |t: i64| {
            clock.store(t, Ordering::SeqCst);
            let edge = edge.clone();
            async move {
                let m = edge
                    .member(member_id)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                m.tier.qualifying_spend.0
            }
        };
        // 2026-12-06 00:01 +08:00, and 2026-12-06 23:59:59.999.
        assert_eq!(spend_at(1_796_486_460_000).await, 12_300);
        assert_eq!(spend_at(1_796_572_799_999).await, 12_300);
        // 2026-12-07 00:00 +08:00: the sale's day is twelve months back.
        assert_eq!(spend_at(1_796_572_800_000).await, 0);
    }

    /// A member of another store leaves after the keep window with no sale and no
    /// fetch here; one fetched again, or served here, within the window stays, and so
    /// does every member registered here.
    #[tokio::test]
    async fn members_of_other_stores_leave_after_the_keep_window() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, clock) = Edge::for_test("S002", dir.path(), T0);
        let (gone, again, served) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        for (i, m) in [gone, again, served].into_iter().enumerate() {
            let idx = [m[0]; 32];
            edge.apply_fetched(
                idx,
                fetched(m, idx, 1 + 2 * i as u64),
                Vec::new(),
                10 + i as u64,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let here_id = edge.test_member("13800000077", None).await;
        // Day 50: `again` is fetched again, `served` buys here.
        clock.store(T0 + 50 * DAY, Ordering::SeqCst);
        edge.apply_fetched([2; 32], Vec::new(), Vec::new(), 30)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let idem = Idem {
            lane: 1,
            key: "k-served".into(),
            request_hash: [0; 32],
        };
        let sale = json!({"member_id": uuid::Uuid::from_bytes(served).to_string(),
                          "receipt_id": "R-served", "lines": [{"sku": "A", "qty": 1, "unit_price": 1000}]});
        edge.commit(
            idem,
            crate::service::Actor::manager(),
            serde_json::from_value(sale).unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        // Day 89: nobody leaves yet. Day 91: only `gone` does, with its fetched facts.
        clock.store(T0 + 89 * DAY, Ordering::SeqCst);
        assert_eq!(edge.drop_departed_members().await.ok(), Some(0));
        clock.store(T0 + 91 * DAY, Ordering::SeqCst);
        assert_eq!(edge.drop_departed_members().await.ok(), Some(1));
        let state = |m: [u8; 16]| {
            let edge = edge.clone();
            async move {
                edge.store
                    .readers
                    .read(move |c| {
                        let row = members::get(c, &m)?.is_some();
                        let facts = facts::for_member(c, &m)
                            .map_err(crate::store::StoreError::from)?
                            .len();
                        let upto = members::fetched_upto(c, &[m[0]; 32])?;
                        Ok::<_, EdgeError>((row, facts, upto))
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert_eq!(state(gone).await, (false, 0, 0));
        assert_eq!(state(again).await, (true, 1, 30));
        assert!(state(served).await.0);
        let here_uuid = uuid::Uuid::parse_str(&here_id).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            state(*here_uuid.as_bytes()).await.0,
            "registered here: stays"
        );
    }

    /// A stream page: facts of a member held here are stored and count in their
    /// balance; a member not held is not stored and comes back for release; the cursor
    /// moves with the page; a page again changes nothing; a must-refetch forgets the
    /// fetch positions and hands back every held phone.
    #[tokio::test]
    async fn a_stream_page_keeps_held_members_and_releases_the_rest() {
        use patron_sync::stream::Streamed;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, _clock) = Edge::for_test("S002", dir.path(), T0);
        let (held, stranger) = ([1u8; 16], [2u8; 16]);
        edge.apply_fetched(
            [1; 32],
            fetched(held, [1; 32], 1)[..1].to_vec(),
            Vec::new(),
            5,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let page = |facts: Vec<Fact>, first_pos: u64| -> Vec<Streamed> {
            facts
                .into_iter()
                .zip(first_pos..)
                .map(|(fact, pos)| Streamed { pos, fact })
                .collect()
        };
        // The held member's purchase (seq 2) and a stranger's registration and purchase.
        let mut facts = fetched(held, [1; 32], 1)[1..].to_vec();
        facts.extend(fetched(stranger, [2; 32], 3));
        // While a member fetch is under way (it may be the stranger's), the page is held
        // back whole: nothing stored, nothing released, the cursor stays.
        edge.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let back = edge
            .apply_streamed(page(facts.clone(), 6), Vec::new(), 20, 77)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(back.held_back);
        assert_eq!((back.stored, back.release.len()), (0, 0));
        assert_eq!(
            edge.stream_cursor().await.map(|c| (c.after, c.mark)).ok(),
            Some((0, 0))
        );
        edge.fetches
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let done = edge
            .apply_streamed(page(facts.clone(), 6), Vec::new(), 20, 77)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done.stored, 1);
        assert_eq!(done.release, vec![uuid::Uuid::from_bytes(stranger)]);
        assert_eq!(
            edge.stream_cursor().await.map(|c| (c.after, c.mark)).ok(),
            Some((20, 77))
        );
        let earned = |m: [u8; 16]| {
            let edge = edge.clone();
            async move {
                edge.store
                    .readers
                    .read(move |c| {
                        Ok::<_, EdgeError>(
                            facts::for_member(c, &m)
                                .map_err(crate::store::StoreError::from)?
                                .iter()
                                .map(|f| f.earn)
                                .sum::<i64>(),
                        )
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert_eq!(earned(held).await, 500, "the streamed purchase counts");
        let stranger_here = edge
            .store
            .readers
            .read(move |c| {
                Ok::<_, EdgeError>((
                    members::get(c, &stranger)?.is_some(),
                    facts::for_member(c, &stranger)
                        .map_err(crate::store::StoreError::from)?
                        .len(),
                ))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stranger_here, (false, 0), "nothing of a member not held");
        // The same page again (a lost answer polled again) stores nothing twice.
        let again = edge
            .apply_streamed(page(facts, 6), Vec::new(), 20, 77)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.stored, 0);
        assert_eq!(earned(held).await, 500);
        // Must refetch: positions forgotten, cursor moved, a refetch of every held
        // phone recorded as due, phone by phone, until done.
        assert_eq!(edge.next_refetch_phone().await.ok(), Some(None), "none due");
        edge.restart_stream(99, 5)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        edge.apply_fetched(
            [3; 32],
            fetched([3; 16], [3; 32], 20)[..1].to_vec(),
            Vec::new(),
            1,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(edge.next_refetch_phone().await.ok(), Some(Some([1u8; 32])));
        // Not recorded as done: asked again (a failed fetch is never skipped).
        assert_eq!(edge.next_refetch_phone().await.ok(), Some(Some([1u8; 32])));
        edge.refetched_phone([1; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(edge.next_refetch_phone().await.ok(), Some(Some([3u8; 32])));
        edge.refetched_phone([3; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(edge.next_refetch_phone().await.ok(), Some(None), "complete");
        assert_eq!(edge.next_refetch_phone().await.ok(), Some(None));
        assert_eq!(
            edge.stream_cursor().await.map(|c| (c.after, c.mark)).ok(),
            Some((99, 5))
        );
        let upto = edge
            .store
            .readers
            .read(|c| Ok::<_, EdgeError>(members::fetched_upto(c, &[1; 32])?))
            .await
            .ok();
        assert_eq!(upto, Some(0));
    }
}
