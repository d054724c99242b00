//! Rule sets in force, and everything a sale needs from them besides the price:
//! the pricing context (member, usage, coupons), coupon issue, tier-upgrade gifts and
//! referral rewards.

use patron_domain::Kind;
use patron_domain::claims::{ClaimKey, OfflinePolicy};
use std::sync::Arc;

use patron_protocol::pos::{CouponView, RuleSetInfo};
use patron_protocol::{Fen, TransactionId};
use serde_json::json;

use super::claims::{Asked, Asks, Wanted};
use super::{Core, Edge, EdgeError, MemberState};
use crate::domain::clock::Millis;
use crate::domain::promo::engine::{CouponIn, MemberCtx, Usage};
use crate::domain::promo::ruleset::{Compiled, CouponTemplate, RuleSet};
use crate::domain::tiers::Tier;
use crate::domain::validate;
use crate::store::coupons::{self, CouponRow};
use crate::store::facts::{self, NewFact};
use crate::store::members::{self, MemberRow};
use crate::store::{StoreError, WriteCtx, rules};
use patron_domain::ledger::Snapshot;

/// A coupon as its issuing fact records it: the body of a `coupon_issued` fact, and
/// each entry of a purchase fact's `coupons_granted` (serialized without building a
/// JSON tree: this runs on the writer thread for every granted coupon).
#[derive(serde::Serialize)]
pub(super) struct CouponIssuedBody<'a> {
    coupon_id: String,
    /// The sale that granted it (hex), if a sale did.
    #[serde(skip_serializing_if = "Option::is_none")]
    source_txn: Option<String>,
    /// Usable at once (else it waits for a claim).
    active: bool,
    code: &'a str,
    label: &'a str,
    off: i64,
    min_spend: i64,
    expires_at: Millis,
    source: &'a str,
    /// The stores it may be used at (absent: any).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stores: &'a [String],
}

impl<'a> CouponIssuedBody<'a> {
    /// The record of coupon `c`.
    pub(super) fn of(c: &'a CouponRow) -> Self {
        CouponIssuedBody {
            coupon_id: hex::encode(c.coupon_id),
            source_txn: c.source_txn.as_ref().map(hex::encode),
            active: c.active,
            code: &c.code,
            label: &c.label,
            off: c.off,
            min_spend: c.min_spend,
            expires_at: c.expires_at,
            source: &c.source,
            stores: &c.stores,
        }
    }

    /// The record of coupon `c` granted by the sale whose purchase fact lists it (the
    /// fact's own txn is the granting sale).
    pub(super) fn granted(c: &'a CouponRow) -> Self {
        CouponIssuedBody {
            source_txn: None,
            ..Self::of(c)
        }
    }
}

/// Length of a coupon code: 9 ordered characters and 5 random ones.
pub const COUPON_CODE_LEN: usize = 14;

/// The claim a coupon's use takes (single use across the chain).
pub(super) struct CouponClaim {
    /// The code presented.
    pub code: String,
    /// The coupon's member.
    pub member: [u8; 16],
    /// `coupon:<id>`.
    pub key: ClaimKey,
    /// Offline: the issuing store may take it once, others not at all.
    pub offline: OfflinePolicy,
}

/// What pricing needs to know, read in the same snapshot or transaction as the sale.
pub(super) struct PricingCtx {
    /// The member (None: walk-in).
    pub member: Option<PricedMember>,
    /// The engine's view of the member.
    pub ctx: Option<MemberCtx>,
    /// Usage of limited rules.
    pub usage: Usage,
    /// Coupons presented, validated.
    pub coupons: Vec<CouponIn>,
    /// The claims their use takes, in the same order.
    pub coupon_claims: Vec<CouponClaim>,
}

/// The member a sale is priced for.
pub(super) struct PricedMember {
    /// The profile row; read only under a rule set (audiences, referrals need it).
    pub row: Option<MemberRow>,
    /// Derived state before the sale.
    pub state: MemberState,
    /// Member id.
    pub id: [u8; 16],
}

/// What a tier upgrade gave: coupons, and points facts with their sequences.
#[derive(Default)]
pub(super) struct UpgradeGifts {
    /// Coupons issued.
    pub coupons: Vec<CouponRow>,
    /// Points facts appended, with their sequence numbers.
    pub points: Vec<(NewFact, i64)>,
}

fn coupon_invalid(code: &str, reason: &str) -> EdgeError {
    EdgeError::CouponInvalid {
        code: code.to_string(),
        reason: reason.to_string(),
    }
}

impl Core {
    /// Reads everything pricing needs for `member` and the presented `codes`.
    ///
    /// Without a rule set only the member's facts are read (the row is needed only by
    /// audience conditions and referrals): this is the hot path of every sale.
    ///
    /// A rule's `per_member` limit counts the member's claims of the rule across the
    /// chain as far as this store knows them; with `asks` (a sale about to commit) a
    /// rule whose next claim would not be allowed (the hub refused it, or the offline
    /// policy) counts as used up, so the sale is priced without it.
    pub(super) fn pricing_ctx(
        &self,
        conn: &rusqlite::Connection,
        rules: Option<&Compiled>,
        member: Option<&[u8; 16]>,
        codes: &[String],
        asks: Option<&Asks>,
        now: Millis,
    ) -> Result<PricingCtx, EdgeError> {
        let (member, ctx) = match member {
            None => (None, None),
            Some(m) => {
                let (ledger, state) = self.load_state(conn, m, now)?;
                // The profile row is read only when a rule looks at it: a point lookup in
                // the writer that the tier-and-basket rules most sets hold do not need.
                // A member with facts exists even without a profile row (a restore may
                // fail to rebuild one, see service::sync): such a member prices with an
                // empty profile, whatever the rules.
                let row = match rules {
                    Some(c) if c.needs_profile() => self.shown_row(conn, m)?,
                    _ => None,
                };
                if row.is_none() && ledger.facts == 0 && !members::exists(conn, m)? {
                    return Err(EdgeError::MemberNotFound);
                }
                let ctx = self.member_ctx(rules, row.as_ref(), &ledger, &state, now)?;
                (Some(PricedMember { row, state, id: *m }), Some(ctx))
            }
        };
        let mut usage = Usage::default();
        for r in rules.iter().flat_map(|c| c.set.rules.iter()) {
            let l = &r.limits;
            if let (Some(n), Some(PricedMember { id, .. })) = (l.per_member, &member) {
                let key = ClaimKey::rule(&r.id);
                let offline = l.offline.unwrap_or(self.cfg.events.offline_claims);
                let used = match asks {
                    Some(a)
                        if !a.allows(
                            self,
                            conn,
                            Wanted {
                                member: *id,
                                key: key.clone(),
                                limit: n,
                                offline,
                            },
                        )? =>
                    {
                        i64::from(n)
                    }
                    _ => self.claims_used(conn, id, &key)?,
                };
                usage
                    .member_uses
                    .insert(r.id.clone(), u32::try_from(used.max(0)).unwrap_or(u32::MAX));
            }
            if l.budget_count.is_some() || l.budget_fen.is_some() {
                let (uses, amount) = rules::usage(conn, &r.id, None)?;
                usage.budget.insert(r.id.clone(), (amount, uses));
            }
        }
        let mut coupons = Vec::new();
        let mut coupon_claims = Vec::new();
        for code in codes {
            let Some(PricedMember { id, .. }) = &member else {
                return Err(coupon_invalid(code, "coupons need a member_id"));
            };
            let c = coupons::by_code(conn, code)?
                .ok_or_else(|| coupon_invalid(code, "no such coupon"))?;
            let refusal = if c.member != *id {
                Some("belongs to another member")
            } else if c.revoked {
                Some("was withdrawn")
            } else if c.used_txn.is_some() {
                Some("was already used")
            } else if !c.active {
                Some("has not been claimed yet")
            } else if now > c.expires_at {
                Some("has expired")
            } else if coupons.iter().any(|x: &CouponIn| x.id == c.coupon_id) {
                Some("was given twice")
            } else {
                None
            };
            if let Some(reason) = refusal {
                return Err(coupon_invalid(code, reason));
            }
            if !c.stores.is_empty() && !c.stores.contains(&self.cfg.store_id) {
                return Err(coupon_invalid(code, "is not valid at this store"));
            }
            // Single use across the chain: a claim of the coupon (docs/claims.md).
            // Offline, the store that issued it, or the one holding the member's
            // coupons (where they were last identified online), may take it.
            let key = ClaimKey::coupon(&hex::encode(c.coupon_id));
            let offline = if c.store.is_none() || asks.is_some_and(Asks::coupons_leased) {
                OfflinePolicy::Once
            } else {
                OfflinePolicy::Refuse
            };
            if let Some(a) = asks
                && !a.allows(
                    self,
                    conn,
                    Wanted {
                        member: c.member,
                        key: key.clone(),
                        limit: 1,
                        offline,
                    },
                )?
            {
                let reason = match (a.asked(c.member, &key), &c.store) {
                    (Asked::Offline | Asked::Unanswered, Some(_)) => {
                        "was issued at another store and can be used here only while the hub is reachable, or where the member was last identified online"
                    }
                    _ => "was already used at another store",
                };
                return Err(coupon_invalid(code, reason));
            }
            coupon_claims.push(CouponClaim {
                code: c.code.clone(),
                member: c.member,
                key,
                offline,
            });
            coupons.push(CouponIn {
                id: c.coupon_id,
                code: c.code,
                label: c.label,
                off: c.off,
                min_spend: c.min_spend,
            });
        }
        Ok(PricingCtx {
            member,
            ctx,
            usage,
            coupons,
            coupon_claims,
        })
    }

    fn member_ctx(
        &self,
        rules: Option<&Compiled>,
        row: Option<&MemberRow>,
        ledger: &Snapshot,
        state: &MemberState,
        now: Millis,
    ) -> Result<MemberCtx, EdgeError> {
        // The birthday is encrypted: decrypt it only if a rule looks at it.
        let birthday_month = match (rules, row) {
            (Some(c), Some(row)) if c.needs_birthday() => match &row.birthday_enc {
                Some(enc) => {
                    let id = &row.member_id;
                    let key = self.vault.member_key(id, &row.wrapped_key)?;
                    let b = self.vault.open_field(&key, id, "birthday", enc)?;
                    let month_now = u8::from(self.cal.date(now).month());
                    b.get(5..7).and_then(|m| m.parse::<u8>().ok()) == Some(month_now)
                }
                None => false,
            },
            _ => false,
        };
        Ok(MemberCtx {
            tier: state.tier(),
            tags: row.map(|r| r.tags.clone()).unwrap_or_default(),
            registered_at: row.map_or(0, |r| r.created_at),
            has_purchased: ledger.purchased,
            birthday_month,
            channel: row.and_then(|r| r.channel.clone()),
            balance: state.points.balance(),
        })
    }

    /// Issues a coupon to `member` in the open transaction and records it as a
    /// `coupon_issued` fact (coupons given by a cashier or HQ, and upgrade gifts).
    pub(super) fn issue_coupon(
        &self,
        ctx: &mut WriteCtx<'_>,
        member: &[u8; 16],
        t: &CouponTemplate,
        source: &str,
        source_txn: Option<[u8; 16]>,
        now: Millis,
    ) -> Result<CouponRow, EdgeError> {
        let row = self.new_coupon(ctx.conn, member, t, source, source_txn, now)?;
        let body = serde_json::to_string(&CouponIssuedBody::of(&row))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        facts::append(
            ctx,
            &NewFact::new(Kind::CouponIssued, now, Some(*member), row.coupon_id, body),
        )?;
        Ok(row)
    }

    /// Inserts a new coupon row with a fresh id and code, without a fact: the caller
    /// records it (a sale lists the coupons it grants in its own purchase fact).
    pub(super) fn new_coupon(
        &self,
        conn: &rusqlite::Connection,
        member: &[u8; 16],
        t: &CouponTemplate,
        source: &str,
        source_txn: Option<[u8; 16]>,
        now: Millis,
    ) -> Result<CouponRow, EdgeError> {
        let id = *TransactionId::new_v7().as_bytes();
        let code = self.coupon_code(now)?;
        let expires_at = self.cal.end_of_day(
            self.cal
                .date(now)
                .saturating_add(time::Duration::days(i64::from(t.valid_days))),
        );
        let mut row = CouponRow {
            coupon_id: id,
            code,
            member: *member,
            label: t.label.clone(),
            off: t.off,
            min_spend: t.min_spend,
            issued_at: now,
            expires_at,
            source: source.to_string(),
            source_txn,
            active: t.auto_active,
            used_txn: None,
            revoked: false,
            store: None,
            stores: t.stores.clone(),
        };
        // A code collision needs the code clock to have gone back (a restore, a clock
        // step across restarts) and the same 5 random characters.
        let mut tries = 0;
        while !coupons::insert(conn, &row)? {
            tries += 1;
            if tries > 8 {
                return Err(EdgeError::Store(StoreError::Corrupt(
                    "no free coupon code".into(),
                )));
            }
            row.code = self.coupon_code(now)?;
        }
        Ok(row)
    }

    /// A new coupon code: 9 characters of a clock that counts milliseconds and never
    /// repeats or goes back (so codes append to the code index: codes by the second
    /// with a random tail landed on ~20 random pages per group commit under load), then
    /// 5 random characters. Coupons are bound to their member, so a guessable prefix
    /// grants nothing; the UNIQUE index is the last guard.
    fn coupon_code(&self, now: Millis) -> Result<String, EdgeError> {
        use std::sync::atomic::Ordering;
        let a = validate::REFERRAL_ALPHABET;
        let base = a.len() as u64;
        let now = now.max(0) as u64;
        let next = |last: u64| now.max(last.saturating_add(1));
        let (Ok(prev) | Err(prev)) =
            self.code_clock
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                    Some(next(last))
                });
        let mut tick = next(prev);
        let mut code = [0u8; COUPON_CODE_LEN];
        // 31^9 ms is ~840 years: the prefix stays ordered for as long as this runs.
        for c in code[..9].iter_mut().rev() {
            *c = a[(tick % base) as usize];
            tick /= base;
        }
        // The tail only has to be unguessable, not key material: a v4 UUID's bits come
        // from a thread-local CSPRNG (uuid's `fast-rng`), where the vault's generator made
        // a getrandom syscall per coupon (1.8% of the writer under the 10-rule benchmark).
        let rnd = uuid::Uuid::new_v4();
        for (c, r) in code[9..].iter_mut().zip(rnd.as_bytes()) {
            *c = a[*r as usize % a.len()];
        }
        Ok(code.iter().map(|c| *c as char).collect())
    }

    /// A coupon as the member sees it.
    pub(super) fn coupon_view(&self, c: &CouponRow) -> CouponView {
        CouponView {
            coupon_id: uuid::Uuid::from_bytes(c.coupon_id).to_string(),
            code: c.code.clone(),
            label: c.label.clone(),
            expires_at: self.cal.rfc3339(c.expires_at),
            amount: Fen(c.off),
            min_spend: Fen(c.min_spend),
            active: c.active,
        }
    }

    /// Gifts for every tier newly reached (`before` < tier ≤ `after`) by the sale
    /// `sale`, once per tier. Returns the coupons issued and the points given. The
    /// coupons name the sale, so refunding it whole withdraws them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upgrade_gifts(
        &self,
        ctx: &mut WriteCtx<'_>,
        rules: Option<&Compiled>,
        member: &[u8; 16],
        before: Tier,
        after: Tier,
        sale: [u8; 16],
        asks: &Asks,
        now: Millis,
    ) -> Result<UpgradeGifts, EdgeError> {
        let mut out = UpgradeGifts::default();
        let Some(c) = rules else {
            return Ok(out);
        };
        for tier in [Tier::Silver, Tier::Gold, Tier::Diamond]
            .into_iter()
            .filter(|t| *t > before && *t <= after)
        {
            let Some(perks) = c.perks(tier.code()) else {
                continue;
            };
            if perks.upgrade_coupon.is_none() && perks.upgrade_points == 0 {
                continue;
            }
            let offline = self.cfg.events.offline_claims;
            let key = ClaimKey::upgrade(tier.code());
            if asks
                .take(
                    self,
                    ctx,
                    Wanted {
                        member: *member,
                        key,
                        limit: 1,
                        offline,
                    },
                    now,
                )?
                .is_none()
            {
                continue;
            }
            if let Some(t) = &perks.upgrade_coupon {
                out.coupons.push(self.issue_coupon(
                    ctx,
                    member,
                    t,
                    &format!("upgrade:{}", tier.code()),
                    Some(sale),
                    now,
                )?);
            }
            if perks.upgrade_points > 0 {
                let f = self.points_gift(
                    member,
                    perks.upgrade_points,
                    Kind::UpgradeGift,
                    json!({"tier": tier.code(), "sale": uuid::Uuid::from_bytes(sale)}),
                    now,
                );
                let seq = facts::append(ctx, &f)?;
                out.points.push((f, seq));
            }
        }
        Ok(out)
    }

    /// A fact crediting `points` to `member` as a lot that expires like any earn.
    pub(super) fn points_gift(
        &self,
        member: &[u8; 16],
        points: i64,
        kind: Kind,
        body: serde_json::Value,
        now: Millis,
    ) -> NewFact {
        let txn = *TransactionId::new_v7().as_bytes();
        NewFact {
            earn: points,
            expires_at: self.lot_expiry(now),
            ..NewFact::new(kind, now, Some(*member), txn, body.to_string())
        }
    }

    /// Rewards the referrer of `friend` once for `event` (`register` or `first_purchase`);
    /// the points given, here or through the hub (0 if none), which count against the
    /// lane's earning limits. A referrer this store does not hold (they joined at
    /// another store, or their registration has not reached it) is the hub's to credit:
    /// the friend gets a `referral_due` fact, which the hub settles on sync
    /// (`patron_domain::referral`). Nothing for a self-referral (same phone).
    pub(super) fn referral_reward(
        &self,
        ctx: &mut WriteCtx<'_>,
        friend: &MemberRow,
        points: i64,
        event: &str,
        asks: &Asks,
        now: Millis,
    ) -> Result<i64, EdgeError> {
        let Some(code) = &friend.referrer_code else {
            return Ok(0);
        };
        if points <= 0 {
            return Ok(0);
        }
        let Some(referrer) = members::by_referral_code(ctx.conn, code)? else {
            let due = patron_domain::fact::ReferralDue {
                code: code.clone(),
                event: event.to_string(),
                points,
                expires_at: self.lot_expiry(now),
            };
            let body =
                serde_json::to_string(&due).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let txn = *TransactionId::new_v7().as_bytes();
            facts::append(
                ctx,
                &NewFact::new(Kind::ReferralDue, now, Some(friend.member_id), txn, body),
            )?;
            return Ok(points);
        };
        if referrer.phone_idx == friend.phone_idx || referrer.member_id == friend.member_id {
            return Ok(0);
        }
        let key = ClaimKey::referral(event, &hex::encode(friend.member_id));
        let offline = self.cfg.events.offline_claims;
        if asks
            .take(
                self,
                ctx,
                Wanted {
                    member: referrer.member_id,
                    key,
                    limit: 1,
                    offline,
                },
                now,
            )?
            .is_none()
        {
            return Ok(0);
        }
        let f = self.points_gift(
            &referrer.member_id,
            points,
            Kind::ReferralReward,
            json!({"friend": hex::encode(friend.member_id), "event": event}),
            now,
        );
        facts::append(ctx, &f)?;
        Ok(points)
    }
}

impl Edge {
    /// The rule set in force, if any.
    pub fn rules(&self) -> Option<Arc<Compiled>> {
        self.rules.read().ok().and_then(|r| r.clone())
    }

    /// Loads a rule set and puts it in force. The same version with the same content is
    /// a no-op (`Ok(false)`); the same version with other content is refused, because a
    /// published version never changes.
    pub async fn load_rules(&self, set: RuleSet) -> Result<(RuleSetInfo, bool), EdgeError> {
        let _one_at_a_time = self.rules_load.lock().await;
        let compiled = Arc::new(set.compile().map_err(EdgeError::Invalid)?);
        let body =
            serde_json::to_string(&compiled.set).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let version = compiled.set.version.clone();
        let now = self.core.now();
        let row = rules::RuleSetRow {
            version: version.clone(),
            body,
            loaded_at: now,
        };
        let created = self
            .store
            .writer
            .write(move |ctx| -> Result<bool, EdgeError> {
                match rules::get(ctx.conn, &row.version)? {
                    Some(existing) if existing.body == row.body => {
                        rules::reactivate(ctx.conn, &row.version)?;
                        Ok(false)
                    }
                    Some(_) => Err(EdgeError::Invalid(format!(
                        "rule set version {} was published with other content; publish a new version",
                        row.version
                    ))),
                    None => {
                        rules::insert(ctx.conn, &row)?;
                        Ok(true)
                    }
                }
            })
            .await?;
        let info = RuleSetInfo {
            version,
            rules: compiled.set.rules.len(),
            loaded_at: self.core.cal.rfc3339(now),
        };
        if let Ok(mut r) = self.rules.write() {
            *r = Some(compiled);
        }
        tracing::info!(version = %info.version, rules = info.rules, created, "rule set in force");
        Ok((info, created))
    }

    /// The rule set in force, as stored.
    pub async fn rules_info(&self) -> Result<Option<RuleSetInfo>, EdgeError> {
        let core = self.core.clone();
        let current = self
            .store
            .readers
            .read(|c| Ok::<_, EdgeError>(rules::current(c)?))
            .await?;
        Ok(current.map(|row| {
            let n = self.rules().map_or(0, |c| c.set.rules.len());
            RuleSetInfo {
                version: row.version,
                rules: n,
                loaded_at: core.cal.rfc3339(row.loaded_at),
            }
        }))
    }
}

/// Compiles the rule set in force from the database (at start).
pub(super) fn load_current(conn: &rusqlite::Connection) -> anyhow::Result<Option<Arc<Compiled>>> {
    match rules::current(conn)? {
        None => Ok(None),
        Some(row) => {
            let c = RuleSet::parse(row.body.as_bytes())
                .map_err(|e| anyhow::anyhow!("stored rule set {}: {e}", row.version))?;
            Ok(Some(Arc::new(c)))
        }
    }
}

/// End of the local day `days` after `now` (pending points become redeemable then).
pub(super) fn after_days(core: &Core, now: Millis, days: u32) -> Millis {
    if days == 0 {
        return 0;
    }
    core.cal.end_of_day(
        core.cal
            .date(now)
            .saturating_add(time::Duration::days(i64::from(days))),
    ) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Codes issued in the same millisecond still sort in issue order (they append to
    /// the code index) and keep their random tail.
    #[test]
    fn coupon_codes_increase_even_within_one_millisecond() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let edge = crate::service::Edge::open_with_clock(cfg, Box::new(|| 1_764_000_000_000))
            .unwrap_or_else(|e| panic!("{e}"));
        let codes: Vec<String> = (0..500)
            .map(|_| {
                edge.core
                    .coupon_code(1_764_000_000_000)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        for w in codes.windows(2) {
            assert!(w[0][..9] < w[1][..9], "{} !< {}", w[0], w[1]);
        }
        assert!(codes.iter().all(|c| c.len() == COUPON_CODE_LEN
            && c.bytes().all(|b| validate::REFERRAL_ALPHABET.contains(&b))));
        let tails: std::collections::HashSet<&str> = codes.iter().map(|c| &c[9..]).collect();
        assert!(tails.len() > 490, "random tails repeat: {}", tails.len());
        // A clock behind the last code (restart, NTP step) still moves forward.
        let later = edge
            .core
            .coupon_code(1_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(codes[499][..9] < later[..9]);
    }
}
