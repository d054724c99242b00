//! Welcome rewards (the rule set's `welcome`): points on registration (the guide's
//! 注册送100积分) and a registration gift on the member's first purchase of at least a
//! threshold (消费满50元送会员注册礼), each once per member across the chain: claims
//! `welcome:register` and `welcome:first_purchase` (docs/claims.md).

use patron_domain::Kind;
use patron_domain::claims::ClaimKey;
use serde_json::json;

use super::claims::{Asks, Wanted};
use super::{Core, EdgeError};
use crate::domain::clock::Millis;
use crate::domain::promo::ruleset::Compiled;
use crate::store::WriteCtx;
use crate::store::coupons::CouponRow;
use crate::store::facts;

/// The sale a registration gift may come with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sold {
    /// The sale's transaction.
    pub txn: [u8; 16],
    /// What it paid in money (fen).
    pub paid: i64,
}

/// What a welcome reward gave.
#[derive(Debug, Default)]
pub(super) struct Welcomed {
    /// Points credited.
    pub points: i64,
    /// Coupons issued.
    pub coupons: Vec<CouponRow>,
}

impl Core {
    /// In the registration's transaction: the registration points, if the rule set
    /// gives them and the member has not had them (a person registered twice, at two
    /// stores, has them once once the stores know of each other).
    pub(super) fn welcome_points(
        &self,
        ctx: &mut WriteCtx<'_>,
        rules: Option<&Compiled>,
        member: &[u8; 16],
        asks: &Asks,
        now: Millis,
    ) -> Result<i64, EdgeError> {
        let Some(w) = rules.and_then(|c| c.set.welcome.as_ref()) else {
            return Ok(0);
        };
        if w.register_points <= 0 || !self.claim_welcome(ctx, member, "register", asks, now)? {
            return Ok(0);
        }
        let f = self.points_gift(
            member,
            w.register_points,
            Kind::Event,
            json!({"type": "welcome"}),
            now,
        );
        facts::append(ctx, &f)?;
        Ok(w.register_points)
    }

    /// In a sale's transaction: the registration gift, if the sale paid at least the
    /// threshold and the member has not had the gift.
    pub(super) fn welcome_gift(
        &self,
        ctx: &mut WriteCtx<'_>,
        rules: Option<&Compiled>,
        member: &[u8; 16],
        sale: Sold,
        asks: &Asks,
        now: Millis,
    ) -> Result<Welcomed, EdgeError> {
        let Sold { txn: sale, paid } = sale;
        let mut out = Welcomed::default();
        let Some(g) = rules
            .and_then(|c| c.set.welcome.as_ref())
            .and_then(|w| w.first_purchase.as_ref())
        else {
            return Ok(out);
        };
        if paid < g.threshold || !self.claim_welcome(ctx, member, "first_purchase", asks, now)? {
            return Ok(out);
        }
        if let Some(t) = &g.coupon {
            out.coupons
                .push(self.issue_coupon(ctx, member, t, "welcome", Some(sale), now)?);
        }
        if g.points > 0 {
            let body = json!({"type": "welcome_gift", "ref": hex::encode(sale)});
            let f = self.points_gift(member, g.points, Kind::Event, body, now);
            facts::append(ctx, &f)?;
            out.points = g.points;
        }
        Ok(out)
    }

    fn claim_welcome(
        &self,
        ctx: &mut WriteCtx<'_>,
        member: &[u8; 16],
        what: &str,
        asks: &Asks,
        now: Millis,
    ) -> Result<bool, EdgeError> {
        let wanted = Wanted {
            member: *member,
            key: ClaimKey::welcome(what),
            limit: 1,
            offline: self.cfg.events.offline_claims,
        };
        Ok(asks.take(self, ctx, wanted, now)?.is_some())
    }
}
