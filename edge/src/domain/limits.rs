//! Abuse limits at the counter: what one sale, and one lane in one store day, may
//! earn, redeem, refund and give. A stolen POS token or a rogue cashier is bounded by
//! these; the store's manager (an `admin` lane) is not, and is how a larger operation
//! is approved.

use serde::{Deserialize, Serialize};

/// The limits (configuration `[limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Points one sale may earn.
    pub max_points_per_sale: i64,
    /// Points one lane's sales and events may earn in a store day.
    pub lane_daily_points_earned: i64,
    /// Points one lane may redeem in a store day (sales and redemptions outside them).
    pub lane_daily_points_redeemed: i64,
    /// Money (fen) one lane may refund in a store day.
    pub lane_daily_refund_fen: i64,
    /// Coupons one lane may give in a store day.
    pub lane_daily_coupons: i64,
    /// The most a coupon a cashier gives may take off (fen).
    pub coupon_max_off_fen: i64,
    /// The longest a coupon a cashier gives may be valid (days).
    pub coupon_max_valid_days: i64,
    /// A redemption outside a sale above this many points needs the manager.
    pub standalone_redemption_points: i64,
    /// Members one lane may register in a store day (each may carry a referral reward
    /// to the member who invited them).
    pub lane_daily_registrations: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_points_per_sale: 20_000,
            lane_daily_points_earned: 200_000,
            lane_daily_points_redeemed: 100_000,
            lane_daily_refund_fen: 5_000_000,
            lane_daily_coupons: 50,
            coupon_max_off_fen: 10_000,
            coupon_max_valid_days: 90,
            standalone_redemption_points: 5_000,
            lane_daily_registrations: 500,
        }
    }
}

impl Limits {
    /// Every limit must be at least 1.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            self.max_points_per_sale,
            self.lane_daily_points_earned,
            self.lane_daily_points_redeemed,
            self.lane_daily_refund_fen,
            self.lane_daily_coupons,
            self.coupon_max_off_fen,
            self.coupon_max_valid_days,
            self.standalone_redemption_points,
            self.lane_daily_registrations,
        ];
        if all.iter().any(|v| *v < 1) {
            return Err("limits: every limit must be at least 1".into());
        }
        Ok(())
    }
}

/// What one lane did in one store day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayTotals {
    /// Points earned by its sales and events.
    pub earned: i64,
    /// Points redeemed.
    pub redeemed: i64,
    /// Money refunded (fen).
    pub refund_fen: i64,
    /// Coupons given.
    pub coupons: i64,
    /// Members registered.
    pub registrations: i64,
    /// Sales to members (what lookups are judged against; no limit).
    pub sales: i64,
}

/// A limit an operation would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The limit's configuration name, e.g. `lane_daily_points_earned`.
    pub limit: &'static str,
    /// Its value.
    pub allowed: i64,
    /// What was used of it before this operation (0 for per-operation limits).
    pub used: i64,
    /// What this operation asked.
    pub asked: i64,
}

/// A points transfer of `asked` within the member-service limits: at most `max` a
/// transfer, and `monthly` a sender per calendar month (`used` before this one).
pub fn transfer(max: i64, monthly: i64, used: i64, asked: i64) -> Result<(), Exceeded> {
    within("transfer_max_points", max, 0, asked)?;
    within("transfer_monthly_points", monthly, used, asked)
}

fn within(limit: &'static str, allowed: i64, used: i64, asked: i64) -> Result<(), Exceeded> {
    if asked > 0 && used.saturating_add(asked) > allowed {
        Err(Exceeded {
            limit,
            allowed,
            used,
            asked,
        })
    } else {
        Ok(())
    }
}

impl Limits {
    /// A sale earning `earned` and redeeming `redeemed` after the lane's `day`.
    pub fn sale(&self, day: DayTotals, earned: i64, redeemed: i64) -> Result<(), Exceeded> {
        within("max_points_per_sale", self.max_points_per_sale, 0, earned)?;
        within(
            "lane_daily_points_earned",
            self.lane_daily_points_earned,
            day.earned,
            earned,
        )?;
        within(
            "lane_daily_points_redeemed",
            self.lane_daily_points_redeemed,
            day.redeemed,
            redeemed,
        )
    }

    /// Points for a behaviour event.
    pub fn event(&self, day: DayTotals, points: i64) -> Result<(), Exceeded> {
        within(
            "lane_daily_points_earned",
            self.lane_daily_points_earned,
            day.earned,
            points,
        )
    }

    /// A redemption outside a sale; `present`: the member proved presence (a member
    /// code), which lifts the per-redemption threshold but not the lane's day.
    pub fn redemption(&self, day: DayTotals, points: i64, present: bool) -> Result<(), Exceeded> {
        if !present {
            within(
                "standalone_redemption_points",
                self.standalone_redemption_points,
                0,
                points,
            )?;
        }
        within(
            "lane_daily_points_redeemed",
            self.lane_daily_points_redeemed,
            day.redeemed,
            points,
        )
    }

    /// A registration whose referral reward gives `earned` points.
    pub fn registration(&self, day: DayTotals, earned: i64) -> Result<(), Exceeded> {
        within(
            "lane_daily_registrations",
            self.lane_daily_registrations,
            day.registrations,
            1,
        )?;
        within(
            "lane_daily_points_earned",
            self.lane_daily_points_earned,
            day.earned,
            earned,
        )
    }

    /// A refund of `amount_fen`.
    pub fn refund(&self, day: DayTotals, amount_fen: i64) -> Result<(), Exceeded> {
        within(
            "lane_daily_refund_fen",
            self.lane_daily_refund_fen,
            day.refund_fen,
            amount_fen,
        )
    }

    /// A coupon taking `off_fen` off, valid `valid_days`.
    pub fn coupon(&self, day: DayTotals, off_fen: i64, valid_days: i64) -> Result<(), Exceeded> {
        within("coupon_max_off_fen", self.coupon_max_off_fen, 0, off_fen)?;
        within(
            "coupon_max_valid_days",
            self.coupon_max_valid_days,
            0,
            valid_days,
        )?;
        within(
            "lane_daily_coupons",
            self.lane_daily_coupons,
            day.coupons,
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l() -> Limits {
        Limits {
            max_points_per_sale: 100,
            lane_daily_points_earned: 250,
            lane_daily_points_redeemed: 300,
            lane_daily_refund_fen: 1_000,
            lane_daily_coupons: 2,
            coupon_max_off_fen: 500,
            coupon_max_valid_days: 30,
            standalone_redemption_points: 200,
            lane_daily_registrations: 3,
        }
    }

    fn name(r: Result<(), Exceeded>) -> Option<&'static str> {
        r.err().map(|e| e.limit)
    }

    #[test]
    fn each_limit_holds_at_its_edge_and_not_one_past_it() {
        let day = DayTotals::default();
        assert_eq!(name(l().sale(day, 100, 0)), None);
        assert_eq!(name(l().sale(day, 101, 0)), Some("max_points_per_sale"));
        let busy = DayTotals {
            earned: 200,
            redeemed: 250,
            refund_fen: 900,
            coupons: 2,
            registrations: 3,
            sales: 0,
        };
        assert_eq!(name(l().sale(busy, 50, 0)), None);
        assert_eq!(
            name(l().sale(busy, 51, 0)),
            Some("lane_daily_points_earned")
        );
        assert_eq!(
            name(l().sale(busy, 0, 51)),
            Some("lane_daily_points_redeemed")
        );
        assert_eq!(name(l().event(busy, 51)), Some("lane_daily_points_earned"));
        assert_eq!(name(l().redemption(day, 200, false)), None);
        assert_eq!(
            name(l().redemption(day, 201, false)),
            Some("standalone_redemption_points")
        );
        // The member present lifts the threshold, not the lane's day.
        assert_eq!(name(l().redemption(day, 201, true)), None);
        assert_eq!(
            name(l().redemption(busy, 51, false)),
            Some("lane_daily_points_redeemed")
        );
        assert_eq!(
            name(l().redemption(busy, 51, true)),
            Some("lane_daily_points_redeemed")
        );
        assert_eq!(name(l().refund(busy, 100)), None);
        assert_eq!(name(l().refund(busy, 101)), Some("lane_daily_refund_fen"));
        assert_eq!(name(l().coupon(day, 500, 30)), None);
        assert_eq!(name(l().coupon(day, 501, 30)), Some("coupon_max_off_fen"));
        assert_eq!(
            name(l().coupon(day, 500, 31)),
            Some("coupon_max_valid_days")
        );
        assert_eq!(name(l().coupon(busy, 1, 1)), Some("lane_daily_coupons"));
        assert_eq!(name(l().registration(day, 250)), None);
        assert_eq!(
            name(l().registration(busy, 0)),
            Some("lane_daily_registrations")
        );
        let quiet = DayTotals {
            registrations: 2,
            ..busy
        };
        assert_eq!(
            name(l().registration(quiet, 51)),
            Some("lane_daily_points_earned")
        );
        let e = l().sale(busy, 60, 0).err();
        assert_eq!(
            e,
            Some(Exceeded {
                limit: "lane_daily_points_earned",
                allowed: 250,
                used: 200,
                asked: 60
            })
        );
        // Nothing asked passes whatever was used (a sale earning nothing).
        let full = DayTotals {
            earned: 10_000,
            ..busy
        };
        assert_eq!(name(l().sale(full, 0, 0)), None);
        assert!(Limits::default().validate().is_ok());
        assert!(
            Limits {
                lane_daily_coupons: 0,
                ..l()
            }
            .validate()
            .is_err()
        );
    }
}
