//! Coupons issued by cashiers or HQ, claiming, and tier benefits with quotas.

use patron_domain::Kind;
use patron_domain::claims::{ClaimKey, OfflinePolicy};
use patron_protocol::pos::{BenefitUse, BenefitView, CouponView, IssueCoupon};
use patron_protocol::{MemberId, TransactionId};
use serde_json::json;

use super::claims::{Asked, Claim};
use super::{
    Actor, Core, Edge, EdgeError, Idem, MemberState, Reply, Seal, invalid, require_member,
};
use crate::domain::clock::Millis;
use crate::domain::limits::DayTotals;
use crate::domain::promo::ruleset::{Compiled, CouponTemplate};
use crate::store::coupons;
use crate::store::facts::{self, NewFact};

impl Core {
    /// The member's usable coupons (active or claimable, unused, unexpired, not withdrawn).
    pub(super) fn coupon_views(
        &self,
        conn: &rusqlite::Connection,
        member: &[u8; 16],
        now: Millis,
    ) -> Result<Vec<CouponView>, EdgeError> {
        Ok(coupons::for_member(conn, member)?
            .iter()
            .filter(|c| c.used_txn.is_none() && !c.revoked && now <= c.expires_at)
            .map(|c| self.coupon_view(c))
            .collect())
    }

    /// The benefits of the member's tier, with what is left of monthly quotas.
    pub(super) fn benefit_views(
        &self,
        conn: &rusqlite::Connection,
        rules: Option<&Compiled>,
        member: &[u8; 16],
        state: &MemberState,
        now: Millis,
    ) -> Result<Vec<BenefitView>, EdgeError> {
        let Some(perks) = rules.and_then(|c| c.perks(state.tier().code())) else {
            return Ok(Vec::new());
        };
        let month = self.month(now);
        perks
            .benefits
            .iter()
            .map(|b| {
                let remaining = match b.quota_per_month {
                    None => None,
                    Some(q) => Some(
                        i64::from(q)
                            - self.claims_used(
                                conn,
                                member,
                                &ClaimKey::benefit(&b.code, &month),
                            )?,
                    ),
                };
                Ok(BenefitView {
                    code: b.code.clone(),
                    label: b.label.clone(),
                    remaining_this_month: remaining.map(|r| r.max(0)),
                })
            })
            .collect()
    }

    fn month(&self, now: Millis) -> String {
        let d = self.cal.date(now);
        format!("{:04}-{:02}", d.year(), u8::from(d.month()))
    }
}

impl Edge {
    /// `POST /v1/members/{id}/coupons`: a coupon given by a cashier or HQ.
    pub async fn give_coupon(
        &self,
        idem: Option<Idem>,
        actor: Actor,
        member: MemberId,
        req: IssueCoupon,
    ) -> Result<Reply, EdgeError> {
        let t = CouponTemplate {
            label: req.label,
            off: req.off,
            min_spend: req.min_spend,
            valid_days: req.valid_days,
            auto_active: req.auto_active,
            stores: req.stores,
        };
        if !patron_domain::rules::stores_scope_valid(&t.stores) {
            return Err(invalid(patron_domain::rules::STORES_SCOPE.into()));
        }
        if t.label.trim().is_empty()
            || t.label.chars().count() > 64
            || !(1..=100_000_000).contains(&t.off)
            || t.min_spend < 0
            || !(1..=3660).contains(&t.valid_days)
        {
            return Err(invalid("a coupon needs a 1-64 character label, 0 < off ≤ 100000000 fen, min_spend ≥ 0 and 1-3660 valid_days".into()));
        }
        let core = self.core.clone();
        let now = core.now();
        let written = self
            .store
            .writer
            .write(move |ctx| {
                core.idempotent(ctx, idem.as_ref(), now, |ctx| {
                    let m = *member.as_bytes();
                    require_member(ctx.conn, &m)?;
                    let one = DayTotals {
                        coupons: 1,
                        ..DayTotals::default()
                    };
                    core.within_limits(ctx.conn, actor, now, one, |l, day| {
                        l.coupon(day, t.off, i64::from(t.valid_days))
                    })?;
                    let c = core.issue_coupon(ctx, &m, &t, "manual", None, now)?;
                    Ok((201, core.coupon_view(&c), Seal::Store))
                })
            })
            .await;
        self.note_refusal(actor, written).await
    }

    /// `POST /v1/members/{id}/coupons/{code}/claim`: activates a claim-first coupon.
    pub async fn claim_coupon(
        &self,
        member: MemberId,
        code: String,
    ) -> Result<CouponView, EdgeError> {
        let core = self.core.clone();
        let now = core.now();
        self.store
            .writer
            .write(move |ctx| {
                let c = coupons::by_code(ctx.conn, &code)?
                    .filter(|c| c.member == *member.as_bytes())
                    .ok_or_else(|| EdgeError::CouponInvalid {
                        code: code.clone(),
                        reason: "no such coupon for this member".into(),
                    })?;
                if c.revoked || c.used_txn.is_some() || now > c.expires_at {
                    return Err(EdgeError::CouponInvalid {
                        code,
                        reason: "is used, withdrawn or expired".into(),
                    });
                }
                if coupons::activate(ctx.conn, &c.code)? {
                    let body = json!({"code": c.code}).to_string();
                    facts::append(
                        ctx,
                        &NewFact::new(Kind::CouponClaimed, now, Some(c.member), c.coupon_id, body),
                    )?;
                }
                let c = coupons::by_code(ctx.conn, &code)?.ok_or(EdgeError::MemberNotFound)?;
                Ok(core.coupon_view(&c))
            })
            .await
    }

    /// `POST /v1/members/{id}/benefits/{code}/use`: uses one of a tier benefit's monthly
    /// quota, counted for the member across the chain (a claim).
    pub async fn use_benefit(
        &self,
        idem: Option<Idem>,
        member: MemberId,
        code: String,
    ) -> Result<Reply, EdgeError> {
        let core = self.core.clone();
        let rules = self.rules();
        let now = core.now();
        let m = *member.as_bytes();
        // Checked before the hub is asked (a claim the hub holds for a request that
        // then fails counts until it is given back).
        let (c, r, code2) = (core.clone(), rules.clone(), code.clone());
        let (quota, offline) = self
            .store
            .readers
            .read(move |conn| c.benefit_quota(conn, r.as_deref(), &m, &code2, now))
            .await?;
        let claim = Claim::new(
            m,
            ClaimKey::benefit(&code, &core.month(now)),
            quota,
            offline.unwrap_or(core.cfg.events.offline_claims),
        );
        let asked = match idem.as_ref() {
            Some(i) if core.is_replay(i) => Asked::Offline,
            _ => self.ask_claim(&claim).await?,
        };
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (took, to_take) = (taken.clone(), claim.clone());
        let written = self
            .store
            .writer
            .write(move |ctx| {
                core.idempotent(ctx, idem.as_ref(), now, |ctx| {
                    let (quota, _) =
                        core.benefit_quota(ctx.conn, rules.as_deref(), &m, &code, now)?;
                    let Some((_, used)) = core.take_claim(ctx, &to_take, asked, now)? else {
                        return Err(EdgeError::ClaimLimit(format!(
                            "{code}: this month's quota of {quota} is used up"
                        )));
                    };
                    took.store(true, std::sync::atomic::Ordering::Relaxed);
                    let txn = *TransactionId::new_v7().as_bytes();
                    let body = json!({"code": code, "month": to_take.key.period}).to_string();
                    facts::append(
                        ctx,
                        &NewFact::new(Kind::BenefitUsed, now, Some(m), txn, body),
                    )?;
                    Ok((
                        201,
                        BenefitUse {
                            code: code.clone(),
                            remaining_this_month: (i64::from(quota) - used).max(0),
                        },
                        Seal::Store,
                    ))
                })
            })
            .await;
        let taken = written.is_ok() && taken.load(std::sync::atomic::Ordering::Relaxed);
        self.settle_claim(&claim, asked, taken);
        written
    }
}

impl Core {
    /// The monthly quota of benefit `code` of the member's tier, and its offline
    /// policy; an error if the tier has no such benefit or it has no quota.
    fn benefit_quota(
        &self,
        conn: &rusqlite::Connection,
        rules: Option<&Compiled>,
        m: &[u8; 16],
        code: &str,
        now: Millis,
    ) -> Result<(u32, Option<OfflinePolicy>), EdgeError> {
        require_member(conn, m)?;
        let (_, state) = self.load_state(conn, m, now)?;
        let tier = state.tier();
        let def = rules
            .and_then(|c| c.perks(tier.code()))
            .and_then(|p| p.benefits.iter().find(|b| b.code == code))
            .ok_or_else(|| {
                invalid(format!(
                    "{code} is not a benefit of the {} tier",
                    tier.code()
                ))
            })?;
        let quota = def
            .quota_per_month
            .filter(|q| *q > 0)
            .ok_or_else(|| invalid(format!("{code} has no quota to use")))?;
        Ok((quota, def.offline))
    }
}
