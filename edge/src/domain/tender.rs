//! How a sale was paid: the POS's tender lines checked against the sale's total, and
//! the one-word summary reports and ERP read (`paid_by`). Pure.

use patron_protocol::pos::TenderLine;

/// Why tender lines do not fit a sale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenderError {
    /// A line of nothing or less.
    #[error("tender: every amount must be > 0")]
    NotPositive,
    /// The lines do not add up to what the sale costs.
    #[error("tender adds up to {paid} fen, the sale's total is {total} fen")]
    Mismatch {
        /// What the lines add up to.
        paid: i64,
        /// The sale's total after discounts and points.
        total: i64,
    },
}

/// Checks the lines against the total the sale was priced at: none (not said), or
/// positive amounts that add up to it exactly.
pub fn check(lines: &[TenderLine], total: i64) -> Result<(), TenderError> {
    if lines.is_empty() {
        return Ok(());
    }
    if lines.iter().any(|l| l.amount <= 0) {
        return Err(TenderError::NotPositive);
    }
    let paid = lines
        .iter()
        .try_fold(0i64, |sum, l| sum.checked_add(l.amount))
        .unwrap_or(i64::MAX);
    if paid != total {
        return Err(TenderError::Mismatch { paid, total });
    }
    Ok(())
}

/// The sale's payment in one word: the one way it was paid (a money method, `points`
/// or `coupon`), `mixed` for more than one, `None` when money was due and the POS did
/// not say how it was paid (or nothing was paid at all). `total` is the money due.
pub fn paid_by(
    lines: &[TenderLine],
    total: i64,
    points_value: i64,
    coupon_off: i64,
) -> Option<String> {
    if lines.is_empty() && total > 0 {
        return None;
    }
    let mut ways: Vec<&str> = lines.iter().map(|l| l.method.as_str()).collect();
    ways.sort_unstable();
    ways.dedup();
    if points_value > 0 {
        ways.push("points");
    }
    if coupon_off > 0 {
        ways.push("coupon");
    }
    match ways.as_slice() {
        [] => None,
        [one] => Some((*one).to_string()),
        _ => Some("mixed".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use patron_protocol::pos::TenderMethod::{Alipay, Cash, WechatPay};

    use super::*;

    fn line(method: patron_protocol::pos::TenderMethod, amount: i64) -> TenderLine {
        TenderLine { method, amount }
    }

    #[test]
    fn lines_must_be_positive_and_add_up_to_the_total() {
        assert_eq!(check(&[], 5_000), Ok(()));
        assert_eq!(
            check(&[line(Cash, 2_000), line(Alipay, 3_000)], 5_000),
            Ok(())
        );
        assert_eq!(
            check(&[line(Cash, 2_000), line(Alipay, 2_999)], 5_000),
            Err(TenderError::Mismatch {
                paid: 4_999,
                total: 5_000
            })
        );
        assert_eq!(check(&[line(Cash, 0)], 0), Err(TenderError::NotPositive));
        assert_eq!(
            check(&[line(Cash, -5), line(Cash, 5)], 0),
            Err(TenderError::NotPositive)
        );
        assert!(matches!(
            check(&[line(Cash, i64::MAX), line(Cash, i64::MAX)], 1),
            Err(TenderError::Mismatch { .. })
        ));
    }

    #[test]
    fn one_way_is_named_and_several_are_mixed() {
        assert_eq!(
            paid_by(&[line(WechatPay, 100)], 100, 0, 0).as_deref(),
            Some("wechat_pay")
        );
        assert_eq!(
            paid_by(&[line(Cash, 100), line(Cash, 50)], 150, 0, 0).as_deref(),
            Some("cash"),
            "two cash lines are cash"
        );
        assert_eq!(
            paid_by(&[line(Cash, 100), line(Alipay, 50)], 150, 0, 0).as_deref(),
            Some("mixed")
        );
        assert_eq!(
            paid_by(&[line(Cash, 100)], 100, 300, 0).as_deref(),
            Some("mixed"),
            "cash and points"
        );
        assert_eq!(
            paid_by(&[], 0, 300, 0).as_deref(),
            Some("points"),
            "all in points"
        );
        assert_eq!(
            paid_by(&[], 0, 0, 500).as_deref(),
            Some("coupon"),
            "all by coupon"
        );
        assert_eq!(paid_by(&[], 0, 300, 500).as_deref(), Some("mixed"));
        assert_eq!(
            paid_by(&[], 100, 300, 0),
            None,
            "money due and not said how"
        );
        assert_eq!(paid_by(&[], 0, 0, 0), None, "nothing paid");
    }
}
