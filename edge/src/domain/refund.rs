//! Refunds: which units come back, and what money and points follow them.
//!
//! Rounding rule (written in `docs/points.md`): for a sale with subtotal S, money paid
//! T, points earned E and points redeemed R, after refunds whose gross value (Σ qty ×
//! unit price of the returned units) adds up to G, the *cumulative* figures are
//! ⌊T·G/S⌋ money back, ⌊E·G/S⌋ points reversed and ⌊R·G/S⌋ points returned. Each refund
//! gets the difference between the cumulative figures after and before it. So partial
//! refunds never add up to more than the whole, and refunding everything, in any number
//! of steps, reverses exactly T, E and R.

use patron_protocol::money::mul_div_floor;
use patron_protocol::pos::RefundLine;

use super::pricing::Line;
use patron_domain::tiers::Tier;

/// The committed figures of a sale that refunds are proportional to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sale {
    /// Σ qty × unit_price.
    pub subtotal: i64,
    /// Money paid.
    pub total: i64,
    /// Points earned.
    pub earned: i64,
    /// Points redeemed.
    pub redeemed: i64,
}

/// What one refund moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RefundFigures {
    /// Money back.
    pub amount: i64,
    /// Earned points taken back.
    pub points_reversed: i64,
    /// Redeemed points given back.
    pub points_returned: i64,
}

fn cumulative(x: i64, gross: i64, subtotal: i64) -> i64 {
    if subtotal == 0 {
        // Only free items: nothing was paid, earned or redeemed on them.
        return 0;
    }
    mul_div_floor(x, gross, subtotal).unwrap_or(0)
}

/// The figures of a refund of `gross_now` after earlier refunds of `gross_before`.
pub fn figures(sale: Sale, gross_before: i64, gross_now: i64) -> RefundFigures {
    let after = gross_before + gross_now;
    let d =
        |x: i64| cumulative(x, after, sale.subtotal) - cumulative(x, gross_before, sale.subtotal);
    RefundFigures {
        amount: d(sale.total),
        points_reversed: d(sale.earned),
        points_returned: d(sale.redeemed),
    }
}

/// Whether a refund takes back a tier-upgrade gift (points or coupon): when it takes
/// the member from the gift's tier or above (`before`) to below it (`after`, derived
/// with the refund counted), whichever sale reached the tier. A member who fell below
/// the tier by time alone (spend leaving the window) keeps the gift, and so does one
/// a refund leaves at the tier. A gift for a tier this code does not know stays.
pub fn takes_back_gift(gift_tier: Option<Tier>, before: Tier, after: Tier) -> bool {
    gift_tier.is_some_and(|t| after < t && t <= before)
}

/// Picks the units a refund returns: `per_line[i]` units of receipt line `i`.
///
/// `refunded[i]` is what earlier refunds returned of line `i`. Without `request`, every
/// unit not yet refunded comes back (catalogue lines never do). A SKU that appears on several lines is taken from
/// the first line that still has units.
pub fn allocate(
    lines: &[Line],
    refunded: &[i64],
    request: Option<&[RefundLine]>,
) -> Result<Vec<i64>, String> {
    // Catalogue lines are not refunded here (docs/catalogue.md): none of their units
    // is left to take back.
    let remaining: Vec<i64> = lines
        .iter()
        .zip(refunded)
        .map(|(l, r)| if l.catalogue { 0 } else { l.qty - r })
        .collect();
    let per_line = match request {
        None => remaining.clone(),
        Some(req) => {
            if req.is_empty() {
                return Err("lines, when given, must not be empty".into());
            }
            let mut take = vec![0i64; lines.len()];
            for (i, r) in req.iter().enumerate() {
                if !(1..=super::validate::MAX_QTY).contains(&r.qty) {
                    return Err(format!(
                        "lines[{i}].qty must be between 1 and {}",
                        super::validate::MAX_QTY
                    ));
                }
                if !lines.iter().any(|l| l.sku == r.sku) {
                    return Err(format!("lines[{i}].sku {:?} is not on this receipt", r.sku));
                }
                let mut want = r.qty;
                for (j, l) in lines.iter().enumerate() {
                    if l.sku == r.sku {
                        let n = want.min(remaining[j] - take[j]);
                        take[j] += n;
                        want -= n;
                    }
                }
                if want > 0 {
                    return Err(format!(
                        "lines[{i}]: only {} unit(s) of {:?} are left to refund",
                        r.qty - want,
                        r.sku
                    ));
                }
            }
            take
        }
    };
    if per_line.iter().all(|&n| n == 0) {
        return Err("this receipt has nothing left to refund".into());
    }
    Ok(per_line)
}

/// Gross value of the units in `per_line`.
pub fn gross(lines: &[Line], per_line: &[i64]) -> i64 {
    lines
        .iter()
        .zip(per_line)
        .map(|(l, n)| l.unit_price.saturating_mul(*n))
        .fold(0i64, i64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn l(sku: &str, qty: i64, unit_price: i64) -> Line {
        Line {
            sku: sku.into(),
            category: None,
            qty,
            unit_price,
            catalogue: false,
        }
    }

    #[test]
    fn partial_refunds_add_up_to_exactly_the_whole() {
        let sale = Sale {
            subtotal: 30_000,
            total: 29_001,
            earned: 290,
            redeemed: 999,
        };
        let a = figures(sale, 0, 10_000);
        let b = figures(sale, 10_000, 10_000);
        let c = figures(sale, 20_000, 10_000);
        assert_eq!(
            a,
            RefundFigures {
                amount: 9_667,
                points_reversed: 96,
                points_returned: 333
            }
        );
        assert_eq!(a.amount + b.amount + c.amount, 29_001);
        assert_eq!(
            a.points_reversed + b.points_reversed + c.points_reversed,
            290
        );
        assert_eq!(
            a.points_returned + b.points_returned + c.points_returned,
            999
        );
    }

    #[test]
    fn a_gift_goes_back_when_the_refund_takes_its_tier_away() {
        use Tier::*;
        assert!(takes_back_gift(Some(Gold), Gold, Silver), "fell below gold");
        assert!(
            takes_back_gift(Some(Silver), Diamond, Normal),
            "fell through silver"
        );
        assert!(
            !takes_back_gift(Some(Diamond), Gold, Silver),
            "left diamond before the refund"
        );
        assert!(!takes_back_gift(Some(Gold), Gold, Gold), "still gold");
        assert!(
            !takes_back_gift(Some(Silver), Diamond, Gold),
            "still above silver"
        );
        assert!(
            !takes_back_gift(None, Diamond, Normal),
            "an unknown tier stays"
        );
    }

    #[test]
    fn allocation_checks_skus_and_quantities() {
        let lines = vec![l("A1", 2, 9_900), l("B2", 1, 5_000), l("A1", 1, 8_000)];
        let none = [0, 0, 0];
        assert_eq!(allocate(&lines, &none, None), Ok(vec![2, 1, 1]));
        let req = [RefundLine {
            sku: "A1".into(),
            qty: 3,
        }];
        assert_eq!(allocate(&lines, &none, Some(&req)), Ok(vec![2, 0, 1]));
        assert!(
            allocate(&lines, &[2, 0, 1], Some(&req)).is_err(),
            "already refunded"
        );
        assert!(
            allocate(
                &lines,
                &none,
                Some(&[RefundLine {
                    sku: "Z9".into(),
                    qty: 1
                }])
            )
            .is_err()
        );
        assert!(
            allocate(
                &lines,
                &none,
                Some(&[RefundLine {
                    sku: "A1".into(),
                    qty: 0
                }])
            )
            .is_err()
        );
        assert!(allocate(&lines, &[2, 1, 1], None).is_err(), "nothing left");
        assert_eq!(gross(&lines, &[2, 0, 1]), 27_800);
    }

    proptest! {
        #[test]
        fn any_split_of_a_full_refund_is_exact(
            subtotal in 1i64..10_000_000, paid_pct in 0i64..=100, earned in 0i64..100_000,
            redeemed in 0i64..100_000, cuts in proptest::collection::vec(1i64..1_000, 1..8)
        ) {
            let sale = Sale { subtotal, total: subtotal * paid_pct / 100, earned, redeemed };
            let sum: i64 = cuts.iter().sum();
            let mut parts: Vec<i64> = cuts.iter().map(|c| subtotal * c / sum).collect();
            let used: i64 = parts.iter().sum();
            if let Some(last) = parts.last_mut() { *last += subtotal - used; }
            let mut before = 0;
            let mut total = RefundFigures::default();
            for g in parts {
                let f = figures(sale, before, g);
                prop_assert!(f.amount >= 0 && f.points_reversed >= 0 && f.points_returned >= 0);
                total.amount += f.amount;
                total.points_reversed += f.points_reversed;
                total.points_returned += f.points_returned;
                before += g;
            }
            prop_assert_eq!(total, RefundFigures { amount: sale.total, points_reversed: earned, points_returned: redeemed });
        }
    }
}
