//! Tiers from qualifying spend in a rolling window — never from the points balance.
//!
//! Qualifying spend is the money actually paid (after discounts and points), less
//! refunds; a refund counts at the time of the sale it reverses, so it leaves the
//! window together with that sale. A purchase that crosses a threshold upgrades the
//! member in the same commit.

use serde::{Deserialize, Serialize};

/// Tier thresholds: qualifying spend in fen over a rolling window. HQ publishes them
/// for the chain (or a ring); a store without them uses [`TierRules::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRules {
    /// The rolling window, in calendar months (1–120).
    pub window_months: u32,
    /// Silver threshold.
    pub silver: i64,
    /// Gold threshold.
    pub gold: i64,
    /// Diamond threshold.
    pub diamond: i64,
}

impl Default for TierRules {
    /// 12 months; ¥1,000 silver, ¥3,000 gold, ¥5,000 diamond.
    fn default() -> Self {
        TierRules {
            window_months: 12,
            silver: 100_000,
            gold: 300_000,
            diamond: 500_000,
        }
    }
}

impl TierRules {
    /// Refuses thresholds out of order or a window out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(0 < self.silver && self.silver <= self.gold && self.gold <= self.diamond) {
            return Err("tiers: need 0 < silver <= gold <= diamond".into());
        }
        if self.window_months == 0 || self.window_months > 120 {
            return Err("tiers: window_months must be 1-120".into());
        }
        Ok(())
    }
}

/// The four tiers, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// No threshold.
    Normal,
    /// `tiers.silver`.
    Silver,
    /// `tiers.gold`.
    Gold,
    /// `tiers.diamond`.
    Diamond,
}

impl Tier {
    /// Wire code.
    pub fn code(self) -> &'static str {
        match self {
            Tier::Normal => "normal",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
            Tier::Diamond => "diamond",
        }
    }

    /// The tier of a wire code, if it is one.
    pub fn from_code(code: &str) -> Option<Tier> {
        [Tier::Normal, Tier::Silver, Tier::Gold, Tier::Diamond]
            .into_iter()
            .find(|t| t.code() == code)
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Normal => "Normal",
            Tier::Silver => "Silver",
            Tier::Gold => "Gold",
            Tier::Diamond => "Diamond",
        }
    }

    /// The qualifying spend that reaches this tier.
    pub fn threshold(self, cfg: &TierRules) -> i64 {
        match self {
            Tier::Normal => 0,
            Tier::Silver => cfg.silver,
            Tier::Gold => cfg.gold,
            Tier::Diamond => cfg.diamond,
        }
    }

    /// The tier above, if any.
    pub fn next(self) -> Option<Tier> {
        match self {
            Tier::Normal => Some(Tier::Silver),
            Tier::Silver => Some(Tier::Gold),
            Tier::Gold => Some(Tier::Diamond),
            Tier::Diamond => None,
        }
    }

    /// The tier a qualifying spend reaches (thresholds are inclusive).
    pub fn for_spend(spend: i64, cfg: &TierRules) -> Tier {
        [Tier::Diamond, Tier::Gold, Tier::Silver]
            .into_iter()
            .find(|t| spend >= t.threshold(cfg))
            .unwrap_or(Tier::Normal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_inclusive() {
        let cfg = TierRules::default();
        assert_eq!(Tier::for_spend(99_999, &cfg), Tier::Normal);
        assert_eq!(Tier::for_spend(100_000, &cfg), Tier::Silver);
        assert_eq!(Tier::for_spend(300_000, &cfg), Tier::Gold);
        assert_eq!(Tier::for_spend(5_000_000, &cfg), Tier::Diamond);
        assert_eq!(Tier::for_spend(-500, &cfg), Tier::Normal, "net refunds");
        assert_eq!(Tier::Gold.next(), Some(Tier::Diamond));
        assert_eq!(Tier::Diamond.next(), None);
    }

    #[test]
    fn out_of_order_thresholds_and_windows_are_refused() {
        let ok = TierRules::default();
        assert!(ok.validate().is_ok());
        for bad in [
            TierRules { silver: 0, ..ok },
            TierRules { gold: 50_000, ..ok },
            TierRules {
                diamond: 200_000,
                ..ok
            },
            TierRules {
                window_months: 0,
                ..ok
            },
            TierRules {
                window_months: 121,
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<TierRules>(r#"{"window_months":12,"silver":1}"#).is_err());
    }
}
