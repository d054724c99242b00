//! Quotes and committed sales.

use patron_protocol::pos::Discount;
use patron_protocol::pos::{Basket, CommitRequest, CommitResponse, Quote};
use patron_protocol::{Fen, Points, TransactionId};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Edge, EdgeError, Idem, MemberState, Reply, Seal, balance, invalid, tier_code};
use crate::domain::pricing::{self, Priced};
use crate::domain::validate;
use crate::store::StoreError;
use crate::store::facts::{self, MemberFact, NewFact};
use crate::store::members;
use crate::store::receipts::{self, ReceiptRow};

impl Edge {
    /// `POST /v1/checkout/quote`: prices a basket and writes nothing.
    pub async fn quote(&self, basket: Basket) -> Result<Quote, EdgeError> {
        let lines = pricing::validate_lines(&basket.lines).map_err(invalid)?;
        let core = self.core.clone();
        let priced = self
            .store
            .readers
            .read(move |conn| {
                let now = core.now();
                let balance = match basket.member_id {
                    Some(m) => {
                        if !members::exists(conn, m.as_bytes())? {
                            return Err(EdgeError::MemberNotFound);
                        }
                        Some(core.load_state(conn, m.as_bytes(), now)?.1.points.balance())
                    }
                    None => None,
                };
                Ok::<Priced, EdgeError>(pricing::price(
                    &lines,
                    balance,
                    basket.redeem_points,
                    &core.cfg.points,
                )?)
            })
            .await?;
        Ok(priced.to_quote())
    }

    /// `POST /v1/checkout/commit`: prices the basket again and records the sale.
    pub async fn commit(&self, idem: Idem, req: CommitRequest) -> Result<Reply, EdgeError> {
        let receipt_id = validate::receipt_id(&req.receipt_id).map_err(invalid)?;
        let lines = pricing::validate_lines(&req.basket.lines).map_err(invalid)?;
        let member = req.basket.member_id;
        let redeem = req.basket.redeem_points;
        let core = self.core.clone();
        let now = core.now();
        let expires_at = core.lot_expiry(now);
        // Serialized before queueing: the writer thread is the bottleneck.
        let lines_json = serde_json::to_string(&lines)
            .and_then(RawValue::from_string)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store
            .writer
            .write(move |ctx| {
                core.idempotent(ctx, Some(&idem), now, |ctx| {
                    let prior = match member {
                        Some(m) => {
                            let loaded = core.load_state(ctx.conn, m.as_bytes(), now)?;
                            // A member with facts exists; only a member without any needs
                            // the extra lookup.
                            if loaded.0.is_empty() && !members::exists(ctx.conn, m.as_bytes())? {
                                return Err(EdgeError::MemberNotFound);
                            }
                            Some(loaded)
                        }
                        None => None,
                    };
                    let priced = pricing::price(
                        &lines,
                        prior.as_ref().map(|(_, s)| s.points.balance()),
                        redeem,
                        &core.cfg.points,
                    )?;
                    let txn = TransactionId::new_v7();
                    let body = PurchaseBody {
                        receipt_id: &receipt_id,
                        lines: &lines_json,
                        subtotal: priced.subtotal,
                        discounts: &priced.discounts,
                        points_value: priced.points_value,
                        total: priced.total,
                    }
                    .to_json()?;
                    let fact = NewFact {
                        kind: "purchase",
                        at: now,
                        member: member.map(|m| *m.as_bytes()),
                        txn: *txn.as_bytes(),
                        earn: priced.points_to_earn,
                        expires_at,
                        spend: priced.points_redeemed,
                        qual_spend: if member.is_some() { priced.total } else { 0 },
                        qual_at: now,
                        body,
                        ..Default::default()
                    };
                    let seq = facts::append(ctx, &fact)?;
                    let receipt = ReceiptRow {
                        receipt_id: receipt_id.clone(),
                        txn: *txn.as_bytes(),
                        member: fact.member,
                        at: now,
                        origin: ctx.origin,
                        seq,
                        subtotal: priced.subtotal,
                        total: priced.total,
                        earned: priced.points_to_earn,
                        redeemed: priced.points_redeemed,
                    };
                    // The primary key decides: one seek instead of a lookup and an insert.
                    if !receipts::insert(ctx.conn, &receipt)? {
                        return Err(EdgeError::ReceiptExists(receipt_id.clone()));
                    }
                    let after = prior.map(|(mut member_facts, _)| {
                        member_facts.push(as_member_fact(&fact, &core.origin_label, seq));
                        core.member_state(&member_facts, now)
                    });
                    Ok((
                        201,
                        commit_response(txn, receipt_id, &priced, after.as_ref(), &core.cfg),
                        Seal::Store,
                    ))
                })
            })
            .await
    }
}

fn commit_response(
    txn: TransactionId,
    receipt_id: String,
    p: &Priced,
    after: Option<&MemberState>,
    cfg: &crate::config::Config,
) -> CommitResponse {
    CommitResponse {
        transaction_id: txn,
        receipt_id,
        total: Fen(p.total),
        discounts: p.discounts.clone(),
        points_earned: Points(p.points_to_earn),
        points_redeemed: Points(p.points_redeemed),
        balance_after: after.map(balance),
        tier_after: after.map(|s| tier_code(s, cfg)),
        coupons_issued: Vec::new(),
    }
}

/// The just-written fact as the derivation reads it, without a round trip to SQLite.
pub(super) fn as_member_fact(
    f: &NewFact<'_>,
    origin: &std::sync::Arc<str>,
    seq: i64,
) -> MemberFact {
    MemberFact {
        at: f.at,
        origin: origin.clone(),
        seq,
        txn: f.txn,
        earn: f.earn,
        expires_at: f.expires_at,
        spend: f.spend,
        reverse: f.reverse,
        reverse_lot: f.reverse_lot,
        qual_spend: f.qual_spend,
        qual_at: f.qual_at,
    }
}

/// The body of a purchase fact: what re-pricing and refunds need later.
#[derive(Serialize)]
struct PurchaseBody<'a> {
    receipt_id: &'a str,
    lines: &'a RawValue,
    subtotal: i64,
    discounts: &'a [Discount],
    points_value: i64,
    total: i64,
}

impl PurchaseBody<'_> {
    fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}
