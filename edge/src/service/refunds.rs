//! Refunds of committed sales, whole or by line.

use patron_domain::Kind;
use patron_domain::claims::ClaimKey;
use patron_protocol::pos::{RefundRequest, RefundResponse};
use patron_protocol::{Fen, Points, TransactionId};
use serde_json::json;

use patron_domain::fact::{Detail, GiftWithdrawal};
use patron_domain::tiers::Tier;

use super::{Actor, Core, Edge, EdgeError, Idem, Reply, Seal, balance, invalid};
use crate::domain::clock::Millis;
use crate::domain::limits::DayTotals;
use crate::domain::refund::{self, Sale};
use crate::domain::validate;
use crate::store::StoreError;
use crate::store::coupons;
use crate::store::facts::{self, NewFact};
use crate::store::receipts::{self, RefundRow};
use crate::store::writer::WriteCtx;

/// Tier-upgrade gifts a refund took back.
#[derive(Default)]
struct TakenBack {
    /// Gift points taken back.
    points: i64,
    /// Codes of upgrade coupons withdrawn (beyond those a whole refund withdraws anyway).
    coupons: Vec<String>,
}

impl Core {
    /// Takes back the tier-upgrade gifts of every tier this refund takes away from the
    /// member ([`refund::takes_back_gift`]), whichever sale reached it: their points as
    /// a reversal of the gift's own lot (spent gift points become a debt, as spent
    /// earned points do), and their coupons. The claims of the tiers whose gifts went
    /// are given back, so reaching the tier again gifts again. Runs after the refund
    /// fact is appended: `before` is the tier the member held without it.
    fn take_back_gifts(
        &self,
        ctx: &mut WriteCtx<'_>,
        member: &[u8; 16],
        before: Tier,
        refund_id: TransactionId,
        now: Millis,
    ) -> Result<TakenBack, EdgeError> {
        let after = self.load_state(ctx.conn, member, now)?.1.tier();
        let mut out = TakenBack::default();
        if after >= before {
            return Ok(out);
        }
        let mut tiers = Vec::new();
        let gifts = facts::gifts(ctx.conn, member)?;
        for g in gifts
            .given
            .into_iter()
            .filter(|g| !gifts.withdrawn.contains(&g.txn))
        {
            if !refund::takes_back_gift(Tier::from_code(&g.tier), before, after) {
                continue;
            }
            let body = Detail::GiftWithdrawn(GiftWithdrawal {
                gift: uuid::Uuid::from_bytes(g.txn),
                tier: g.tier.clone(),
                refund_id: refund_id.0,
            })
            .to_json()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let txn = *TransactionId::new_v7().as_bytes();
            facts::append(
                ctx,
                &NewFact {
                    reverse: g.points,
                    reverse_lot: Some(g.txn),
                    ..NewFact::new(Kind::GiftWithdrawn, now, Some(*member), txn, body)
                },
            )?;
            out.points += g.points;
            tiers.push(g.tier);
        }
        for c in coupons::upgrade_coupons(ctx.conn, member)? {
            let tier = c.source.trim_start_matches("upgrade:").to_string();
            if !refund::takes_back_gift(Tier::from_code(&tier), before, after) {
                continue;
            }
            coupons::revoke(ctx.conn, &c.code)?;
            let body = json!({"code": c.code, "refund_id": refund_id}).to_string();
            facts::append(
                ctx,
                &NewFact::new(Kind::CouponWithdrawn, now, Some(*member), c.coupon_id, body),
            )?;
            out.coupons.push(c.code);
            tiers.push(tier);
        }
        tiers.sort();
        tiers.dedup();
        for tier in tiers {
            self.release_claim(ctx, member, ClaimKey::upgrade(&tier), 1, now)?;
        }
        Ok(out)
    }
}

impl Edge {
    /// `POST /v1/refunds`: reverses the refunded part's points, exactly once.
    pub async fn refund(
        &self,
        idem: Idem,
        actor: Actor,
        req: RefundRequest,
    ) -> Result<Reply, EdgeError> {
        let receipt_id = validate::receipt_id(&req.receipt_id).map_err(invalid)?;
        let core = self.core.clone();
        let now = core.now();
        let expires_at = core.lot_expiry(now);
        let written = self
            .store
            .writer
            .write(move |ctx| {
                core.idempotent(ctx, Some(&idem), now, |ctx| {
                    let receipt = receipts::get(ctx.conn, &receipt_id)?
                        .ok_or_else(|| EdgeError::NotFound(format!("no receipt {receipt_id} was committed at this store")))?;
                    let sale_record = receipts::record(ctx.conn, &receipt)?;
                    let lines = &sale_record.lines;
                    let (done, gross_before) = receipts::refunded_so_far(ctx.conn, &receipt_id, lines.len())?;
                    let per_line = refund::allocate(lines, &done, req.lines.as_deref()).map_err(invalid)?;
                    let gross_now = refund::gross(lines, &per_line);
                    let all_back = lines.iter().zip(done.iter().zip(&per_line)).all(|(l, (d, n))| l.catalogue || d + n == l.qty);
                    let sale = Sale { subtotal: receipt.subtotal, total: receipt.total, earned: receipt.earned, redeemed: receipt.redeemed };
                    let f = refund::figures(sale, gross_before, gross_now);
                    let back = DayTotals { refund_fen: f.amount, ..DayTotals::default() };
                    core.within_limits(ctx.conn, actor, now, back, |l, day| l.refund(day, f.amount))?;
                    let refund_id = TransactionId::new_v7();
                    let body = json!({"receipt_id": receipt_id, "per_line": per_line, "gross": gross_now, "amount": f.amount}).to_string();
                    let fact = NewFact {
                        earn: f.points_returned,
                        expires_at,
                        reverse: f.points_reversed,
                        reverse_lot: Some(receipt.txn),
                        qual_spend: if receipt.member.is_some() { -f.amount } else { 0 },
                        // Counted on the sale's day: a refund leaves the tier window
                        // together with the sale it reverses.
                        qual_at: core.cal.start_of_day(receipt.at),
                        ..NewFact::new(Kind::Refund, now, receipt.member, *refund_id.as_bytes(), body)
                    };
                    // The member's tier without this refund: the gifts of the tiers it
                    // takes away go back with it.
                    let tier_before = match receipt.member {
                        Some(m) => Some(core.load_state(ctx.conn, &m, now)?.1.tier()),
                        None => None,
                    };
                    facts::append(ctx, &fact)?;
                    receipts::insert_refund(
                        ctx.conn,
                        &RefundRow {
                            refund_id: *refund_id.as_bytes(),
                            receipt_id: receipt_id.clone(),
                            at: now,
                            per_line,
                            gross: gross_now,
                            amount: f.amount,
                            points_reversed: f.points_reversed,
                            points_returned: f.points_returned,
                        },
                    )?;
                    // A full refund gives back the coupons the sale used and withdraws
                    // the ones it granted — used ones too, so that refunding the sale
                    // that used a granted coupon cannot bring it back. A partial refund
                    // keeps both.
                    let (mut restored, mut withdrawn) = (Vec::new(), Vec::new());
                    // Coupons need a member: a walk-in sale used or granted none.
                    if all_back && let Some(m) = receipt.member {
                        let used = coupons::by_codes(ctx.conn, &m, &sale_record.coupons_used)?;
                        for c in used.into_iter().filter(|c| !c.revoked && c.used_txn == Some(receipt.txn)) {
                            coupons::restore(ctx.conn, &c.code)?;
                            // Usable again anywhere: its use is given back to the chain.
                            let key = ClaimKey::coupon(&hex::encode(c.coupon_id));
                            core.release_claim(ctx, &c.member, key, 1, now)?;
                            let body = json!({"code": c.code, "refund_id": refund_id}).to_string();
                            facts::append(ctx, &NewFact::new(Kind::CouponRestored, now, Some(c.member), c.coupon_id, body))?;
                            restored.push(c.code);
                        }
                        let mut granted = coupons::by_codes(ctx.conn, &m, &sale_record.coupons_granted)?;
                        granted.extend(coupons::issued_for(ctx.conn, &m, &receipt.txn)?);
                        // Upgrade coupons follow their tier (take_back_gifts), not the sale.
                        let granted = granted.into_iter().filter(|c| !c.source.starts_with("upgrade:"));
                        for c in granted.filter(|c| !c.revoked && c.source_txn == Some(receipt.txn)) {
                            coupons::revoke(ctx.conn, &c.code)?;
                            let body = json!({"code": c.code, "refund_id": refund_id}).to_string();
                            facts::append(ctx, &NewFact::new(Kind::CouponWithdrawn, now, Some(c.member), c.coupon_id, body))?;
                            withdrawn.push(c.code);
                        }
                    }
                    let gifts = match (receipt.member, tier_before) {
                        (Some(m), Some(before)) => core.take_back_gifts(ctx, &m, before, refund_id, now)?,
                        _ => TakenBack::default(),
                    };
                    withdrawn.extend(gifts.coupons);
                    let balance_after = match receipt.member {
                        // Read back after the insert: this transaction sees its own row.
                        Some(m) => Some(balance(&core.load_state(ctx.conn, &m, now)?.1)),
                        None => None,
                    };
                    Ok((
                        201,
                        RefundResponse {
                            refund_id,
                            amount_refunded: Fen(f.amount),
                            points_reversed: Points(f.points_reversed),
                            points_returned: Points(f.points_returned),
                            balance_after,
                            coupons_restored: restored,
                            coupons_withdrawn: withdrawn,
                            gift_points_withdrawn: Points(gifts.points),
                        },
                        Seal::Store,
                    ))
                })
            })
            .await;
        self.note_refusal(actor, written).await
    }
}
