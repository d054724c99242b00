//! Quotes and committed sales.

use patron_domain::Kind;
use patron_domain::claims::ClaimKey;
use patron_protocol::pos::{Basket, CommitRequest, CommitResponse, Discount, IssuedCoupon, Quote};
use patron_protocol::{Fen, Points, TransactionId};
use serde::Serialize;
use serde_json::value::RawValue;

use super::claims::{Asked, Asks, Claim, Wanted};
use super::promotions::{CouponIssuedBody, PricedMember, after_days};
use super::welcome::Sold;
use super::{
    Actor, Authority, Core, Edge, EdgeError, Idem, MemberState, Reply, Seal, balance, invalid,
    tier_code,
};
use crate::domain::catalogue::{self, Part};
use crate::domain::limits::DayTotals;
use crate::domain::pricing;
use crate::domain::promo::engine::{self, Applied, Input, Priced};
use crate::domain::promo::ruleset::Compiled;
use crate::domain::tiers::Tier;
use crate::domain::validate;
use crate::store::facts::{self, NewFact};
use crate::store::receipts::{self, ReceiptRow};
use crate::store::{StoreError, WriteCtx, coupons, members, rules};

impl Edge {
    /// `POST /v1/checkout/quote`: prices a basket and writes nothing.
    pub async fn quote(&self, basket: Basket) -> Result<Quote, EdgeError> {
        let lines = pricing::validate_lines(&basket.lines).map_err(invalid)?;
        let core = self.core.clone();
        let rules = self.rules();
        let (lines, part) = catalogue_part(lines, rules.as_deref(), basket.member_id.is_some())?;
        let priced = self
            .store
            .readers
            .read(move |conn| {
                let now = core.now();
                let member = basket.member_id.map(|m| *m.as_bytes());
                let p = core.pricing_ctx(
                    conn,
                    rules.as_deref(),
                    member.as_ref(),
                    &basket.coupon_codes,
                    None,
                    now,
                )?;
                let input = Input {
                    lines: &lines,
                    member: p.ctx.as_ref(),
                    redeem_points: basket.redeem_points,
                    coupons: &p.coupons,
                    rules: rules.as_deref(),
                    usage: &p.usage,
                    now,
                    store_id: &core.cfg.store_id,
                    points: &core.points(),
                    explain: true,
                };
                // What the commit would refuse, the quote refuses: the cashier learns
                // the umbrella is gone before the customer pays.
                catalogue_stock(conn, rules.as_deref(), &part)?;
                price_sale(&input, &part)
            })
            .await?;
        Ok(priced.to_quote())
    }

    /// `POST /v1/checkout/commit`: prices the basket again and records the sale, with
    /// its coupons, rule usage, grants, upgrade gifts and referral reward, in one
    /// transaction.
    pub async fn commit(
        &self,
        idem: Idem,
        actor: Actor,
        req: CommitRequest,
    ) -> Result<Reply, EdgeError> {
        let receipt_id = validate::receipt_id(&req.receipt_id).map_err(invalid)?;
        let all_lines = pricing::validate_lines(&req.basket.lines).map_err(invalid)?;
        let member = req.basket.member_id.map(|m| *m.as_bytes());
        let redeem = req.basket.redeem_points;
        let codes = req.basket.coupon_codes;
        let tender = req.tender;
        let core = self.core.clone();
        let rules = self.rules();
        // Serialized before queueing: the writer thread is the bottleneck. The fact keeps
        // every line, the catalogue's marked; the engine prices the goods.
        let lines_json = serde_json::to_string(&all_lines)
            .and_then(RawValue::from_string)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (lines, part) = catalogue_part(all_lines, rules.as_deref(), member.is_some())?;
        let txn = TransactionId::new_v7();
        let txb = *txn.as_bytes();
        // Stock is checked before the hub holds the points (a hold for a sale refused
        // here keeps them from the member until it lapses); the transaction counts it.
        // Not for a presumed replay: the sale it repeats may have taken the last unit,
        // and its stored answer is what the POS must get.
        if !part.units.is_empty() && !self.core.is_replay(&idem) {
            let (r, p) = (rules.clone(), part.clone());
            self.store
                .readers
                .read(move |conn| catalogue_stock(conn, r.as_deref(), &p))
                .await?;
        }
        // Then the chain's stock, at the hub. What it reserved goes back if the sale is
        // not recorded after all (a refusal below, or the transaction's).
        let reserved = !part.units.is_empty()
            && !self.core.is_replay(&idem)
            && self
                .reserve_chain_stock(rules.as_deref(), &part, txb)
                .await?;
        let unreserve = |e: EdgeError| {
            if reserved {
                self.release_chain_stock(txb);
            }
            e
        };
        // A redemption is authorized (by the hub, or the offline limits) before the sale
        // queues; the points the engine finally redeems never exceed those asked. The
        // catalogue's points are spent with them, under the same authorization.
        // A presumed replay is not authorized again; should it not be one after all
        // (its first attempt rolled back), the offline limits bound it.
        let spend = redeem.saturating_add(part.points);
        let auth = match member {
            Some(_) if spend > 0 && self.core.is_replay(&idem) => self.unasked_authority(),
            Some(m) if spend > 0 => self
                .authorize_redemption(m, txb, spend)
                .await
                .map_err(unreserve)?,
            _ => Authority::Local,
        };
        // Likewise the limited entitlements the sale will claim (a per-member offer, an
        // upgrade gift, the referrer's first-purchase reward), as a quote prices it.
        let asks = match member {
            Some(m) if !self.core.is_replay(&idem) => self
                .sale_asks(m, &lines, &codes, redeem)
                .await
                .map_err(unreserve)?,
            _ => Asks::none(self.unasked_claim()),
        };
        let leased = member.is_some_and(|m| self.leases.holds_coupons(&m));
        let asks = std::sync::Arc::new(asks.with_coupon_lease(leased));
        let in_tx = asks.clone();
        let written = self
            .store
            .writer
            .write(move |ctx| {
                // The time is read here, in commit order: one member's concurrent
                // writes then reach their ledger snapshot in time order and fold in
                // constant time (read before queueing, they could arrive out of order
                // and each send the member to a derivation from the facts).
                let now = core.now();
                let expires_at = core.lot_expiry(now);
                core.idempotent(ctx, Some(&idem), now, |ctx| {
                    let rules = rules.as_deref();
                    let p = core.pricing_ctx(
                        ctx.conn,
                        rules,
                        member.as_ref(),
                        &codes,
                        Some(&in_tx),
                        now,
                    )?;
                    let input = Input {
                        lines: &lines,
                        member: p.ctx.as_ref(),
                        redeem_points: redeem,
                        coupons: &p.coupons,
                        rules,
                        usage: &p.usage,
                        now,
                        store_id: &core.cfg.store_id,
                        points: &core.points(),
                        explain: false,
                    };
                    let priced = price_sale(&input, &part)?;
                    give_catalogue(ctx, rules, &part)?;
                    crate::domain::tender::check(&tender, priced.total)
                        .map_err(|e| invalid(e.to_string()))?;
                    let coupon_off: i64 = priced
                        .discounts
                        .iter()
                        .filter(|d| d.source == "coupon")
                        .map(|d| d.amount.0)
                        .sum();
                    let paid_by = crate::domain::tender::paid_by(
                        &tender,
                        priced.total,
                        priced.points_value,
                        coupon_off,
                    );
                    let (earned, redeemed) = (priced.points_to_earn, priced.points_spent());
                    let counted = DayTotals {
                        earned,
                        redeemed,
                        sales: i64::from(member.is_some()),
                        ..DayTotals::default()
                    };
                    core.within_limits(ctx.conn, actor, now, counted, |l, day| {
                        l.sale(day, earned, redeemed)
                    })?;
                    // Coupons the sale grants are listed in its purchase fact (no fact of
                    // their own: one fewer row and member-index entry per coupon).
                    let granted = match (&member, &p.member) {
                        (Some(m), Some(_)) => priced
                            .grants
                            .iter()
                            .map(|g| {
                                core.new_coupon(
                                    ctx.conn,
                                    m,
                                    &g.template,
                                    &g.rule_id,
                                    Some(txb),
                                    now,
                                )
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                        _ => Vec::new(),
                    };
                    let pending_days = rules.map_or(0, |c| c.set.pending_points_days);
                    let used_codes: Vec<&str> = p.coupons.iter().map(|c| c.code.as_str()).collect();
                    let body = PurchaseBody {
                        receipt_id: &receipt_id,
                        lines: &lines_json,
                        subtotal: priced.subtotal,
                        discounts: &priced.discounts,
                        points_value: priced.points_value,
                        total: priced.total,
                        rules_version: priced.rules_version.as_deref(),
                        applied: priced
                            .applied
                            .iter()
                            .map(|a| AppliedBody {
                                rule: &a.rule_id,
                                amount: a.amount,
                            })
                            .collect(),
                        coupons_used: used_codes,
                        coupons_granted: granted.iter().map(CouponIssuedBody::granted).collect(),
                        auth: (priced.points_spent() > 0).then(|| auth.label()),
                        tender: tender
                            .iter()
                            .map(|t| TenderBody {
                                method: t.method.as_str(),
                                amount: t.amount,
                            })
                            .collect(),
                        paid_by: paid_by.as_deref(),
                        catalogue: (part.points > 0).then_some(
                            patron_domain::fact::CatalogueSpend {
                                cash: part.cash,
                                points: part.points,
                            },
                        ),
                    }
                    .to_json()?;
                    let fact = NewFact {
                        earn: priced.points_to_earn,
                        expires_at,
                        available_at: after_days(&core, now, pending_days),
                        spend: priced.points_spent(),
                        qual_spend: if member.is_some() { priced.total } else { 0 },
                        // Spend counts for tiers by the day (docs/points.md).
                        qual_at: core.cal.start_of_day(now),
                        ..NewFact::new(Kind::Purchase, now, member, txb, body)
                    };
                    let seq = facts::append(ctx, &fact)?;
                    if let Some(m) = &member {
                        core.record_redemption(ctx, m, seq, priced.points_spent(), auth, now)?;
                    }
                    let receipt = ReceiptRow {
                        receipt_id: receipt_id.clone(),
                        txn: txb,
                        member,
                        at: now,
                        origin: ctx.origin,
                        seq,
                        // Refunds leave the catalogue part out.
                        subtotal: priced.subtotal - part.cash,
                        total: priced.total - part.cash,
                        earned: priced.points_to_earn,
                        redeemed: priced.points_redeemed,
                        rules_version: priced.rules_version.clone(),
                    };
                    // The primary key decides: one seek instead of a lookup and an insert.
                    if !receipts::insert(ctx.conn, &receipt)? {
                        return Err(EdgeError::ReceiptExists(receipt_id.clone()));
                    }
                    for (c, code) in p.coupons.iter().zip(codes.iter()) {
                        // Checked and used in this transaction: two sales can never both use it.
                        if !coupons::mark_used(ctx.conn, &c.code, &txb)? {
                            return Err(EdgeError::CouponInvalid {
                                code: code.clone(),
                                reason: "was already used".into(),
                            });
                        }
                    }
                    // And across the chain: the claim the hub granted (or the offline
                    // policy allows; pricing checked it in this transaction).
                    for c in &p.coupon_claims {
                        if in_tx
                            .take(
                                &core,
                                ctx,
                                Wanted {
                                    member: c.member,
                                    key: c.key.clone(),
                                    limit: 1,
                                    offline: c.offline,
                                },
                                now,
                            )?
                            .is_none()
                        {
                            return Err(EdgeError::CouponInvalid {
                                code: c.code.clone(),
                                reason: "was already used at another store".into(),
                            });
                        }
                    }
                    record_usage(
                        &core,
                        ctx,
                        rules,
                        &priced.applied,
                        member.as_ref(),
                        &in_tx,
                        now,
                    )?;

                    let mut issued = granted;
                    let mut after = None;
                    // Points the sale gives beyond its own (tier-upgrade gifts, the
                    // referrer's first-purchase reward) count against the lane's day too.
                    let mut gift_points = 0;
                    if let (
                        Some(m),
                        Some(PricedMember {
                            row, state: before, ..
                        }),
                    ) = (member, p.member)
                    {
                        // The sale is in the member's ledger snapshot: read it back.
                        let (_, mut state) = core.load_state(ctx.conn, &m, now)?;
                        let (tier_before, tier_after) = (before.tier(), state.tier());
                        if tier_after > tier_before {
                            let gifts = core.upgrade_gifts(
                                ctx,
                                rules,
                                &m,
                                tier_before,
                                tier_after,
                                txb,
                                &in_tx,
                                now,
                            )?;
                            issued.extend(gifts.coupons);
                            let gifts = gifts.points;
                            if !gifts.is_empty() {
                                state = core.load_state(ctx.conn, &m, now)?.1;
                            }
                            gift_points += gifts.iter().map(|(f, _)| f.earn).sum::<i64>();
                        }
                        if let Some(referral) = rules.and_then(|c| c.set.referral.as_ref())
                            && !p.ctx.as_ref().is_some_and(|c| c.has_purchased)
                            && let Some(row) = match row {
                                Some(r) => Some(r),
                                None => members::get(ctx.conn, &m)?,
                            }
                        {
                            gift_points += core.referral_reward(
                                ctx,
                                &row,
                                referral.on_first_purchase,
                                "first_purchase",
                                &in_tx,
                                now,
                            )?;
                        }
                        let welcomed = core.welcome_gift(
                            ctx,
                            rules,
                            &m,
                            Sold {
                                txn: txb,
                                paid: priced.total,
                            },
                            &in_tx,
                            now,
                        )?;
                        issued.extend(welcomed.coupons);
                        if welcomed.points > 0 {
                            gift_points += welcomed.points;
                            state = core.load_state(ctx.conn, &m, now)?.1;
                        }
                        after = Some(state);
                    }
                    if gift_points > 0 {
                        let counted = DayTotals {
                            earned: gift_points,
                            ..DayTotals::default()
                        };
                        core.within_limits(ctx.conn, actor, now, counted, |l, day| {
                            l.event(day, gift_points)
                        })?;
                    }
                    let coupons_issued = issued
                        .iter()
                        .map(|c| IssuedCoupon {
                            coupon_id: uuid::Uuid::from_bytes(c.coupon_id).to_string(),
                            label: c.label.clone(),
                            amount: Fen(c.off),
                        })
                        .collect();
                    Ok((
                        201,
                        commit_response(txn, receipt_id, &priced, after.as_ref(), coupons_issued),
                        Seal::Store,
                    ))
                })
            })
            .await;
        self.settle_asks(&asks, written.is_ok());
        if let Some(m) = member {
            self.settle_lease(&m, auth, redeem, &written);
        }
        if reserved && !written.as_ref().is_ok_and(|r| !r.replayed) {
            self.release_chain_stock(txb);
        }
        self.note_refusal(actor, written).await
    }
}

/// Counts applications of limited rules: store-wide budgets here, and each per-member
/// limit as a claim of the member's (counted across the chain).
fn record_usage(
    core: &Core,
    ctx: &mut WriteCtx<'_>,
    rules: Option<&Compiled>,
    applied: &[Applied],
    member: Option<&[u8; 16]>,
    asks: &Asks,
    now: crate::domain::clock::Millis,
) -> Result<(), EdgeError> {
    let Some(c) = rules else { return Ok(()) };
    for a in applied {
        let Some(r) = c.set.rules.iter().find(|r| r.id == a.rule_id) else {
            continue;
        };
        if r.limits.budget_count.is_some() || r.limits.budget_fen.is_some() {
            rules::record_use(ctx.conn, &a.rule_id, None, a.amount)?;
        }
        if let (Some(n), Some(m)) = (r.limits.per_member, member) {
            let offline = r.limits.offline.unwrap_or(core.cfg.events.offline_claims);
            // Priced with the claims this transaction allows: an applied rule's passes.
            if asks
                .take(
                    core,
                    ctx,
                    Wanted {
                        member: *m,
                        key: ClaimKey::rule(&r.id),
                        limit: n,
                        offline,
                    },
                    now,
                )?
                .is_none()
            {
                return Err(EdgeError::Invalid(format!(
                    "{}: the member's limit was reached meanwhile",
                    r.id
                )));
            }
        }
    }
    Ok(())
}

/// Whether a rule set gives anything a sale claims besides the coupons presented: a
/// per-member offer, an upgrade gift, a first-purchase referral reward.
fn claims_in_rules(c: &Compiled) -> bool {
    c.set.rules.iter().any(|r| r.limits.per_member.is_some())
        || c.set
            .tiers
            .values()
            .any(|p| p.upgrade_points > 0 || p.upgrade_coupon.is_some())
        || c.set
            .referral
            .as_ref()
            .is_some_and(|r| r.on_first_purchase > 0)
        || c.set
            .welcome
            .as_ref()
            .is_some_and(|w| w.first_purchase.is_some())
}

impl Edge {
    /// The claims a sale of `member` will take, priced as a quote prices it, asked of
    /// the hub before the sale queues. Nothing is asked without a hub, or when the rule
    /// set gives nothing a sale claims (every sale of most chains).
    async fn sale_asks(
        &self,
        member: [u8; 16],
        lines: &[pricing::Line],
        codes: &[String],
        redeem: i64,
    ) -> Result<Asks, EdgeError> {
        let unasked = self.unasked_claim();
        if unasked != Asked::Offline {
            return Ok(Asks::none(unasked));
        }
        // Coupons are claimed under any rule set, or none.
        let rules = self.rules();
        if codes.is_empty() && !rules.as_deref().is_some_and(claims_in_rules) {
            return Ok(Asks::none(unasked));
        }
        let core = self.core.clone();
        let (lines, codes) = (lines.to_vec(), codes.to_vec());
        let wanted = self
            .store
            .readers
            .read(move |conn| {
                core.predict_claims(conn, rules.as_deref(), member, &lines, &codes, redeem)
            })
            .await?;
        self.ask_claims(wanted).await
    }
}

impl Core {
    /// The claims a sale would take now: the per-member offers it gets, the gifts of
    /// the tiers it reaches, the referrer's reward for a first purchase. A basket the
    /// sale itself will refuse claims nothing (its error comes from the sale).
    fn predict_claims(
        &self,
        conn: &rusqlite::Connection,
        rules: Option<&Compiled>,
        member: [u8; 16],
        lines: &[pricing::Line],
        codes: &[String],
        redeem: i64,
    ) -> Result<Vec<Claim>, EdgeError> {
        let now = self.now();
        let Ok(p) = self.pricing_ctx(conn, rules, Some(&member), codes, None, now) else {
            return Ok(Vec::new());
        };
        let input = Input {
            lines,
            member: p.ctx.as_ref(),
            redeem_points: redeem,
            coupons: &p.coupons,
            rules,
            usage: &p.usage,
            now,
            store_id: &self.cfg.store_id,
            points: &self.points(),
            explain: false,
        };
        let Ok(priced) = engine::price(&input) else {
            return Ok(Vec::new());
        };
        let offline = self.cfg.events.offline_claims;
        let mut out: Vec<Claim> = p
            .coupon_claims
            .iter()
            .map(|c| Claim::new(c.member, c.key.clone(), 1, c.offline))
            .collect();
        let Some(rules) = rules else {
            return Ok(out);
        };
        for a in &priced.applied {
            if let Some(r) = rules.set.rules.iter().find(|r| r.id == a.rule_id)
                && let Some(n) = r.limits.per_member
            {
                let o = r.limits.offline.unwrap_or(offline);
                out.push(Claim::new(member, ClaimKey::rule(&r.id), n, o));
            }
        }
        let Some(PricedMember { state, row, .. }) = &p.member else {
            return Ok(out);
        };
        let before = state.tier();
        let after = crate::domain::tiers::Tier::for_spend(
            state.qualifying_spend.saturating_add(priced.total),
            &state.tiers,
        );
        for tier in [Tier::Silver, Tier::Gold, Tier::Diamond]
            .into_iter()
            .filter(|t| *t > before && *t <= after)
        {
            if rules
                .perks(tier.code())
                .is_some_and(|k| k.upgrade_points > 0 || k.upgrade_coupon.is_some())
            {
                out.push(Claim::new(
                    member,
                    ClaimKey::upgrade(tier.code()),
                    1,
                    offline,
                ));
            }
        }
        if let Some(g) = rules
            .set
            .welcome
            .as_ref()
            .and_then(|w| w.first_purchase.as_ref())
            && priced.total >= g.threshold
        {
            out.push(Claim::new(
                member,
                ClaimKey::welcome("first_purchase"),
                1,
                offline,
            ));
        }
        if rules
            .set
            .referral
            .as_ref()
            .is_some_and(|r| r.on_first_purchase > 0)
            && !p.ctx.as_ref().is_some_and(|c| c.has_purchased)
        {
            let row = match row {
                Some(r) => Some(r.clone()),
                None => members::get(conn, &member)?,
            };
            if let Some(code) = row.as_ref().and_then(|r| r.referrer_code.as_deref())
                && let Some(referrer) = members::by_referral_code(conn, code)?
            {
                // Keyed as the sale's transaction keys it: by the friend's row.
                let friend = row.as_ref().map_or(member, |r| r.member_id);
                let key = ClaimKey::referral("first_purchase", &hex::encode(friend));
                out.push(Claim::new(referrer.member_id, key, 1, offline));
            }
        }
        Ok(out)
    }
}

/// Splits the catalogue lines off a basket: the goods for the engine, and what the
/// catalogue lines cost (`crate::domain::catalogue`).
fn catalogue_part(
    lines: Vec<crate::domain::pricing::Line>,
    rules: Option<&Compiled>,
    member: bool,
) -> Result<(Vec<crate::domain::pricing::Line>, Part), EdgeError> {
    let (goods, listed) = catalogue::split(lines);
    let part = catalogue::price(&listed, rules.map(|c| &c.set), member).map_err(invalid)?;
    Ok((goods, part))
}

/// Prices the goods and adds the catalogue part; the member must hold every point the
/// sale takes (the engine checks those that pay).
fn price_sale(input: &Input<'_>, part: &Part) -> Result<Priced, EdgeError> {
    let priced = engine::price(input)?.with_catalogue(part);
    // One sale is one fact: the points it takes stay within the hub's limit for one
    // fact, or the hub would quarantine the sale and never count the spend.
    if priced.points_spent() > catalogue::MAX_SALE_POINTS {
        return Err(invalid(format!(
            "one sale takes at most {} points; this one takes {}",
            catalogue::MAX_SALE_POINTS,
            priced.points_spent()
        )));
    }
    if let Some(m) = input.member
        && priced.points_spent() > m.balance
    {
        return Err(EdgeError::InsufficientPoints {
            available: m.balance,
            requested: priced.points_spent(),
        });
    }
    Ok(priced)
}

/// Whether this store still has the catalogue units a sale takes (each item's
/// `stock_per_store` less what it gave).
fn catalogue_stock(
    conn: &rusqlite::Connection,
    rules: Option<&Compiled>,
    part: &Part,
) -> Result<(), EdgeError> {
    for (sku, units) in &part.units {
        // A chain-wide stock bounds this store too (and is all a store without a hub
        // can count of it).
        let stock = rules.and_then(|c| c.set.catalogue_item(sku)).and_then(|i| {
            match (i.stock_per_store, i.stock_chain) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        if let Some(stock) = stock {
            let left = i64::from(stock) - receipts::catalogue_given(conn, sku)?;
            if *units > left {
                return Err(EdgeError::OutOfStock {
                    sku: sku.clone(),
                    left: left.max(0),
                    asked: *units,
                });
            }
        }
    }
    Ok(())
}

/// In the sale's transaction: checks the stock again and counts the units given.
fn give_catalogue(
    ctx: &mut WriteCtx<'_>,
    rules: Option<&Compiled>,
    part: &Part,
) -> Result<(), EdgeError> {
    catalogue_stock(ctx.conn, rules, part)?;
    for (sku, units) in &part.units {
        receipts::give_catalogue(ctx.conn, sku, *units)?;
    }
    Ok(())
}

fn commit_response(
    txn: TransactionId,
    receipt_id: String,
    p: &Priced,
    after: Option<&MemberState>,
    coupons_issued: Vec<IssuedCoupon>,
) -> CommitResponse {
    CommitResponse {
        transaction_id: txn,
        receipt_id,
        total: Fen(p.total),
        discounts: p.discounts.clone(),
        points_earned: Points(p.points_to_earn),
        points_redeemed: Points(p.points_redeemed),
        catalogue_points: Points(p.catalogue_points),
        balance_after: after.map(balance),
        tier_after: after.map(tier_code),
        coupons_issued,
        rules_version: p.rules_version.clone(),
        flags: p.flags.clone(),
    }
}

#[derive(Serialize)]
struct AppliedBody<'a> {
    rule: &'a str,
    amount: i64,
}

/// The body of a purchase fact: what re-pricing, refunds and audits need later.
#[derive(Serialize)]
struct PurchaseBody<'a> {
    receipt_id: &'a str,
    lines: &'a RawValue,
    subtotal: i64,
    discounts: &'a [Discount],
    points_value: i64,
    total: i64,
    rules_version: Option<&'a str>,
    applied: Vec<AppliedBody<'a>>,
    coupons_used: Vec<&'a str>,
    /// Coupons the sale's rules granted (absent when none were).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    coupons_granted: Vec<CouponIssuedBody<'a>>,
    /// Who allowed the points redeemed (absent when none were).
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'static str>,
    /// The catalogue lines' money and points (absent when there were none).
    #[serde(skip_serializing_if = "Option::is_none")]
    catalogue: Option<patron_domain::fact::CatalogueSpend>,
    /// How the money part was paid (absent when the POS did not say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tender: Vec<TenderBody>,
    /// The payment in one word (`patron_domain::fact::Sale::paid_by`).
    #[serde(skip_serializing_if = "Option::is_none")]
    paid_by: Option<&'a str>,
}

/// A tender line as the purchase fact records it.
#[derive(Serialize)]
struct TenderBody {
    method: &'static str,
    amount: i64,
}

impl PurchaseBody<'_> {
    fn to_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}
