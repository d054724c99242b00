//! Basket lines: validation, subtotal, and the redemption step. The pricing itself is
//! `promo::engine::price`, a pure function of (basket, the member's derived state, the
//! rules, time): quote and commit call the same function, so at the same instant they
//! agree. Without a rule set it does what this summary says:
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

use patron_protocol::pos::BasketLine;

use super::validate;
use patron_domain::settings::PointsRules;

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
    /// A points-for-goods catalogue line (`super::catalogue`), priced apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catalogue: bool,
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
                catalogue: l.catalogue,
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
pub fn redemption_step(cfg: &PointsRules) -> (i64, i64) {
    let g = gcd(cfg.redeem_points, cfg.redeem_value_fen).max(1);
    (cfg.redeem_points / g, cfg.redeem_value_fen / g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(qty: i64, unit_price: i64) -> Line {
        Line {
            sku: "A1".into(),
            category: None,
            qty,
            unit_price,
            catalogue: false,
        }
    }

    #[test]
    fn lines_are_validated() {
        let raw = |qty, unit_price| BasketLine {
            sku: "A1".into(),
            category: None,
            qty,
            unit_price,
            catalogue: false,
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
}
