//! Pricing a basket. A pure function of (basket, the member's derived state, the rules,
//! time): quote and commit call the same function, so at the same instant they agree.
//!
//! Order of evaluation (promotions slot in before redemption in the promotions issue):
//! 1. subtotal = Σ qty × unit_price (checked; an overflow is an input error);
//! 2. points redemption: `redeem_points` must be a whole number of redemption steps
//!    (with the default 100 points = ¥1, any whole number of points: 1 point = 1 fen),
//!    so a redemption's value is exact and never rounded;
//! 3. total = subtotal − points value, never negative: asking to redeem more than the
//!    amount due is refused with the largest amount allowed;
//! 4. points to earn = ⌊total × earn_points ÷ earn_per_fen⌋: only money earns points,
//!    never the part paid with points; fractions are dropped.

use patron_protocol::money::mul_div_floor;
use patron_protocol::pos::{BasketLine, Discount};
use patron_protocol::{Fen, Points};

use super::validate;
use crate::config::PointsConfig;

/// A validated basket line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Line {
    /// Stock-keeping unit.
    pub sku: String,
    /// Category, if the POS sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Quantity (1..=MAX_QTY).
    pub qty: i64,
    /// Unit price in fen (0..=MAX_UNIT_PRICE).
    pub unit_price: i64,
}

/// Why a basket cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A malformed basket.
    #[error("{0}")]
    Invalid(String),
    /// More points than the member has.
    #[error("the member has {available} points; {requested} were asked for")]
    InsufficientPoints {
        /// Available balance.
        available: i64,
        /// Points asked for.
        requested: i64,
    },
    /// The points asked for are worth more than the amount due.
    #[error(
        "redeem_points is worth more than the amount due; at most {max_points} points may be redeemed"
    )]
    RedeemExceedsDue {
        /// The most points this basket can take.
        max_points: i64,
    },
}

/// A priced basket.
#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    /// Σ qty × unit_price.
    pub subtotal: i64,
    /// Applied discounts, in order.
    pub discounts: Vec<Discount>,
    /// Points used to pay.
    pub points_redeemed: i64,
    /// Their value in fen.
    pub points_value: i64,
    /// Money to pay.
    pub total: i64,
    /// Points this sale earns.
    pub points_to_earn: i64,
    /// Human-readable trace of the rules applied.
    pub explain: Vec<String>,
}

/// Validates raw lines from the POS.
pub fn validate_lines(raw: &[BasketLine]) -> Result<Vec<Line>, String> {
    if raw.is_empty() || raw.len() > validate::MAX_LINES {
        return Err(format!(
            "lines must hold 1 to {} lines",
            validate::MAX_LINES
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, l)| {
            let sku = validate::sku(&l.sku, &format!("lines[{i}].sku"))?;
            let category = l
                .category
                .as_deref()
                .map(|c| validate::sku(c, &format!("lines[{i}].category")))
                .transpose()?;
            if !(1..=validate::MAX_QTY).contains(&l.qty) {
                return Err(format!(
                    "lines[{i}].qty must be between 1 and {}",
                    validate::MAX_QTY
                ));
            }
            if !(0..=validate::MAX_UNIT_PRICE).contains(&l.unit_price) {
                return Err(format!(
                    "lines[{i}].unit_price must be between 0 and {} fen",
                    validate::MAX_UNIT_PRICE
                ));
            }
            Ok(Line {
                sku,
                category,
                qty: l.qty,
                unit_price: l.unit_price,
            })
        })
        .collect()
}

/// Σ qty × unit_price, or an input error beyond [`validate::MAX_SUBTOTAL`].
pub fn subtotal(lines: &[Line]) -> Result<i64, String> {
    lines
        .iter()
        .try_fold(0i64, |acc, l| {
            l.qty
                .checked_mul(l.unit_price)
                .and_then(|v| acc.checked_add(v))
        })
        .filter(|s| *s <= validate::MAX_SUBTOTAL)
        .ok_or_else(|| format!("basket subtotal exceeds {} fen", validate::MAX_SUBTOTAL))
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The smallest redeemable number of points and what it is worth in fen.
pub fn redemption_step(cfg: &PointsConfig) -> (i64, i64) {
    let g = gcd(cfg.redeem_points, cfg.redeem_value_fen).max(1);
    (cfg.redeem_points / g, cfg.redeem_value_fen / g)
}

/// Prices `lines` for a member with `balance` points (None for a walk-in).
pub fn price(
    lines: &[Line],
    balance: Option<i64>,
    redeem_points: i64,
    cfg: &PointsConfig,
) -> Result<Priced, PricingError> {
    let subtotal = subtotal(lines).map_err(PricingError::Invalid)?;
    let mut explain = vec![format!(
        "subtotal {} over {} line(s)",
        Fen(subtotal).display_yuan(),
        lines.len()
    )];
    let discounts: Vec<Discount> = Vec::new();
    let due = subtotal;

    let (step_points, step_value) = redemption_step(cfg);
    let mut points_value = 0;
    if redeem_points != 0 {
        let Some(available) = balance else {
            return Err(PricingError::Invalid(
                "redeem_points needs a member_id".into(),
            ));
        };
        if !(1..=validate::MAX_POINTS).contains(&redeem_points) {
            return Err(PricingError::Invalid(format!(
                "redeem_points must be between 0 and {}",
                validate::MAX_POINTS
            )));
        }
        if redeem_points % step_points != 0 {
            return Err(PricingError::Invalid(format!(
                "redeem_points must be a multiple of {step_points}"
            )));
        }
        points_value = redeem_points / step_points * step_value;
        if points_value > due {
            let max_points = if step_value == 0 {
                0
            } else {
                due / step_value * step_points
            };
            return Err(PricingError::RedeemExceedsDue { max_points });
        }
        if redeem_points > available {
            return Err(PricingError::InsufficientPoints {
                available,
                requested: redeem_points,
            });
        }
        explain.push(format!(
            "redeemed {redeem_points} points = {}",
            Fen(points_value).display_yuan()
        ));
    }

    let total = due - points_value;
    let points_to_earn = match balance {
        Some(_) => mul_div_floor(total, cfg.earn_points, cfg.earn_per_fen).unwrap_or(0),
        None => 0,
    };
    if balance.is_some() {
        explain.push(format!(
            "earn {} point(s) per {} paid: {} paid earns {points_to_earn}",
            cfg.earn_points,
            Fen(cfg.earn_per_fen).display_yuan(),
            Fen(total).display_yuan()
        ));
    }
    Ok(Priced {
        subtotal,
        discounts,
        points_redeemed: redeem_points,
        points_value,
        total,
        points_to_earn,
        explain,
    })
}

impl Priced {
    /// The quote as the POS sees it.
    pub fn to_quote(&self) -> patron_protocol::pos::Quote {
        patron_protocol::pos::Quote {
            subtotal: Fen(self.subtotal),
            discounts: self.discounts.clone(),
            points_redeemed: Points(self.points_redeemed),
            points_value: Fen(self.points_value),
            total: Fen(self.total),
            points_to_earn: Points(self.points_to_earn),
            coupons_to_issue: Vec::new(),
            explain: self.explain.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(qty: i64, unit_price: i64) -> Line {
        Line {
            sku: "A1".into(),
            category: None,
            qty,
            unit_price,
        }
    }

    #[test]
    fn earning_rounds_down_and_ignores_the_part_paid_with_points() {
        let cfg = PointsConfig::default();
        let p = price(&[line(1, 19_999)], Some(0), 0, &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.total, p.points_to_earn), (19_999, 199));
        let p = price(&[line(2, 9_900)], Some(1_000), 500, &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.subtotal, p.points_value, p.total, p.points_to_earn),
            (19_800, 500, 19_300, 193)
        );
    }

    #[test]
    fn walk_ins_earn_nothing_and_cannot_redeem() {
        let cfg = PointsConfig::default();
        let p = price(&[line(1, 500)], None, 0, &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.points_to_earn, 0);
        assert!(matches!(
            price(&[line(1, 500)], None, 10, &cfg),
            Err(PricingError::Invalid(_))
        ));
    }

    #[test]
    fn redemption_is_bounded_by_balance_and_amount_due() {
        let cfg = PointsConfig::default();
        assert_eq!(
            price(&[line(1, 500)], Some(100), 200, &cfg),
            Err(PricingError::InsufficientPoints {
                available: 100,
                requested: 200
            })
        );
        assert_eq!(
            price(&[line(1, 500)], Some(10_000), 600, &cfg),
            Err(PricingError::RedeemExceedsDue { max_points: 500 })
        );
        let p = price(&[line(1, 500)], Some(10_000), 500, &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.total, p.points_to_earn), (0, 0));
    }

    #[test]
    fn redemption_steps_keep_values_exact() {
        let cfg = PointsConfig {
            redeem_points: 100,
            redeem_value_fen: 50,
            ..PointsConfig::default()
        };
        assert_eq!(redemption_step(&cfg), (2, 1));
        assert!(matches!(
            price(&[line(1, 500)], Some(1_000), 3, &cfg),
            Err(PricingError::Invalid(_))
        ));
        let p = price(&[line(1, 500)], Some(1_000), 4, &cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.points_value, 2);
    }

    #[test]
    fn lines_are_validated() {
        let raw = |qty, unit_price| BasketLine {
            sku: "A1".into(),
            category: None,
            qty,
            unit_price,
        };
        assert!(validate_lines(&[]).is_err());
        assert!(validate_lines(&[raw(0, 100)]).is_err());
        assert!(validate_lines(&[raw(-1, 100)]).is_err());
        assert!(validate_lines(&[raw(1, -100)]).is_err());
        assert!(validate_lines(&[raw(1, i64::MAX)]).is_err());
        assert!(
            validate_lines(&[raw(1, 0)]).is_ok(),
            "free items are allowed"
        );
        let huge = vec![line(100_000, 1_000_000_000); 200];
        assert!(
            subtotal(&huge).is_err(),
            "a ¥200-trillion basket is refused"
        );
        assert_eq!(
            subtotal(&[line(10, validate::MAX_SUBTOTAL / 10)]),
            Ok(validate::MAX_SUBTOTAL)
        );
    }

    fn lines() -> impl Strategy<Value = Vec<Line>> {
        proptest::collection::vec(
            (1i64..50, 0i64..100_000).prop_map(|(q, p)| line(q, p)),
            1..20,
        )
    }

    proptest! {
        #[test]
        fn totals_are_never_negative_and_never_exceed_the_subtotal(ls in lines(), bal in 0i64..1_000_000, redeem in 0i64..1_000_000) {
            let cfg = PointsConfig::default();
            if let Ok(p) = price(&ls, Some(bal), redeem, &cfg) {
                prop_assert!(p.total >= 0);
                prop_assert!(p.total <= p.subtotal);
                prop_assert_eq!(p.subtotal - p.points_value, p.total);
                prop_assert!(p.points_redeemed <= bal);
                prop_assert!(p.points_to_earn >= 0 && p.points_to_earn * cfg.earn_per_fen <= p.total * cfg.earn_points);
            }
        }

        #[test]
        fn line_order_does_not_change_the_price(ls in lines(), bal in 0i64..100_000, redeem in 0i64..10_000) {
            let cfg = PointsConfig::default();
            let mut rev = ls.clone();
            rev.reverse();
            prop_assert_eq!(price(&ls, Some(bal), redeem, &cfg).map(|p| (p.total, p.points_to_earn)),
                            price(&rev, Some(bal), redeem, &cfg).map(|p| (p.total, p.points_to_earn)));
        }
    }
}
