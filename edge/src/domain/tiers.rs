//! Tiers: the thresholds and the derivation live in `patron_domain::tiers`, shared with
//! the hub; here, the member-facing view the POS API shows.

use patron_protocol::Fen;
use patron_protocol::pos::{NextTier, TierView};

pub use patron_domain::tiers::{Tier, TierRules};

/// The member-facing view of a qualifying spend.
pub fn view(spend: i64, cfg: &TierRules) -> TierView {
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
    fn next_shows_the_gap() {
        let cfg = TierRules::default();
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
