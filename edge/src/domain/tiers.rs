//! Tiers from qualifying spend in a rolling window — never from the points balance.
//!
//! Qualifying spend is the money actually paid (after discounts and points), less
//! refunds; a refund counts at the time of the sale it reverses, so it leaves the
//! window together with that sale. A purchase that crosses a threshold upgrades the
//! member in the same commit.

use patron_protocol::Fen;
use patron_protocol::pos::{NextTier, TierView};

use crate::config::TiersConfig;

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

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Normal => "Normal",
            Tier::Silver => "Silver",
            Tier::Gold => "Gold",
            Tier::Diamond => "Diamond",
        }
    }

    fn threshold(self, cfg: &TiersConfig) -> i64 {
        match self {
            Tier::Normal => 0,
            Tier::Silver => cfg.silver,
            Tier::Gold => cfg.gold,
            Tier::Diamond => cfg.diamond,
        }
    }

    fn next(self) -> Option<Tier> {
        match self {
            Tier::Normal => Some(Tier::Silver),
            Tier::Silver => Some(Tier::Gold),
            Tier::Gold => Some(Tier::Diamond),
            Tier::Diamond => None,
        }
    }

    /// The tier a qualifying spend reaches (thresholds are inclusive).
    pub fn for_spend(spend: i64, cfg: &TiersConfig) -> Tier {
        [Tier::Diamond, Tier::Gold, Tier::Silver]
            .into_iter()
            .find(|t| spend >= t.threshold(cfg))
            .unwrap_or(Tier::Normal)
    }
}

/// The member-facing view of a qualifying spend.
pub fn view(spend: i64, cfg: &TiersConfig) -> TierView {
    let tier = Tier::for_spend(spend, cfg);
    TierView {
        code: tier.code().into(),
        name: tier.name().into(),
        qualifying_spend: Fen(spend),
        next: tier.next().map(|n| NextTier {
            code: n.code().into(),
            remaining_spend: Fen(n.threshold(cfg) - spend.max(0)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_inclusive_and_next_shows_the_gap() {
        let cfg = TiersConfig::default();
        assert_eq!(Tier::for_spend(99_999, &cfg), Tier::Normal);
        assert_eq!(Tier::for_spend(100_000, &cfg), Tier::Silver);
        assert_eq!(Tier::for_spend(300_000, &cfg), Tier::Gold);
        assert_eq!(Tier::for_spend(5_000_000, &cfg), Tier::Diamond);
        let v = view(120_000, &cfg);
        assert_eq!(v.code, "silver");
        assert_eq!(
            v.next.map(|n| (n.code, n.remaining_spend)),
            Some(("gold".into(), Fen(180_000)))
        );
        assert_eq!(view(600_000, &cfg).next, None);
        assert_eq!(
            view(-500, &cfg).code,
            "normal",
            "net refunds never go below normal"
        );
    }
}
