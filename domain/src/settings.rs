//! Chain-wide points settings: how points are earned, what they are worth and when they
//! expire. HQ publishes them for the chain or a ring (an HQ document, like tier
//! thresholds), so every store of a ring shows the same numbers for the same facts; a
//! store that holds no publication uses [`PointsRules::default`] and says so.
//!
//! Every division rounds down (`docs/points.md`).

use serde::{Deserialize, Serialize};

/// How points are earned, redeemed and expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsRules {
    /// Points earned per `earn_per_fen` fen actually paid in money.
    pub earn_points: i64,
    /// The spend unit for earning, in fen (100 = ¥1).
    pub earn_per_fen: i64,
    /// A lot earned on day D expires at the end of day D plus this many months.
    pub expiry_months: u32,
    /// The member view lists lots expiring within this many days.
    pub expiring_notice_days: u32,
    /// `redeem_points` points are worth `redeem_value_fen` fen.
    pub redeem_points: i64,
    /// See `redeem_points`.
    pub redeem_value_fen: i64,
}

impl Default for PointsRules {
    /// 1 point per ¥1 paid; 100 points are worth ¥1; lots last 12 months; the member
    /// view warns 30 days ahead.
    fn default() -> Self {
        PointsRules {
            earn_points: 1,
            earn_per_fen: 100,
            expiry_months: 12,
            expiring_notice_days: 30,
            redeem_points: 100,
            redeem_value_fen: 100,
        }
    }
}

impl PointsRules {
    /// Points worth `fen` at the redeem rate, rounded down (0 for points worth nothing,
    /// and for no money).
    pub fn points_worth(&self, fen: i64) -> i64 {
        if self.redeem_value_fen <= 0 || self.redeem_points <= 0 || fen <= 0 {
            return 0;
        }
        let p =
            i128::from(fen) * i128::from(self.redeem_points) / i128::from(self.redeem_value_fen);
        i64::try_from(p).unwrap_or(i64::MAX)
    }

    /// Refuses rates that would divide by zero or go negative, and expiries out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.earn_points < 0
            || self.earn_per_fen <= 0
            || self.redeem_points <= 0
            || self.redeem_value_fen < 0
        {
            return Err(
                "points: earn_per_fen and redeem_points must be > 0, the others >= 0".into(),
            );
        }
        if self.expiry_months == 0 || self.expiry_months > 120 {
            return Err("points.expiry_months must be 1-120".into());
        }
        Ok(())
    }
}

/// Where a chain-wide setting in force at a store came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Published by HQ for the store's ring or the chain.
    Hq,
    /// The documented defaults: the store is enrolled and HQ has published none.
    Default,
    /// The store's own configuration: only a store not enrolled with a hub (it is its
    /// own chain).
    Config,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rates_and_expiries_are_refused_and_fields_are_all_required() {
        let ok = PointsRules::default();
        assert!(ok.validate().is_ok());
        for bad in [
            PointsRules {
                earn_per_fen: 0,
                ..ok
            },
            PointsRules {
                earn_points: -1,
                ..ok
            },
            PointsRules {
                redeem_points: 0,
                ..ok
            },
            PointsRules {
                expiry_months: 0,
                ..ok
            },
            PointsRules {
                expiry_months: 121,
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<PointsRules>(r#"{"earn_points":2}"#).is_err());
        let json = serde_json::to_string(&ok).unwrap_or_default();
        assert_eq!(serde_json::from_str::<PointsRules>(&json).ok(), Some(ok));
    }

    #[test]
    fn money_is_worth_points_at_the_redeem_rate_rounded_down() {
        let default = PointsRules::default();
        assert_eq!(default.points_worth(1_000), 1_000, "100 points are ¥1");
        let r = PointsRules {
            redeem_points: 3,
            redeem_value_fen: 2,
            ..default
        };
        assert_eq!(r.points_worth(5), 7, "7.5 rounds down");
        assert_eq!(r.points_worth(i64::MAX), i64::MAX, "no overflow");
        let worthless = PointsRules {
            redeem_value_fen: 0,
            ..default
        };
        assert_eq!(worthless.points_worth(1_000), 0);
        assert_eq!(default.points_worth(-5), 0);
    }
}
