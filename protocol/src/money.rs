//! Money and points. Both are integers: money in fen (1/100 yuan), points as counts.
//!
//! Arithmetic is checked: an overflow is an input error for the caller to report,
//! never a wrap-around or a panic.

use serde::{Deserialize, Serialize};

/// An amount of money in fen (minor units of CNY). `Fen(19900)` is ¥199.00.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fen(pub i64);

/// A number of loyalty points.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Points(pub i64);

impl Fen {
    /// Zero fen.
    pub const ZERO: Fen = Fen(0);

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    /// `self - other`, or `None` on overflow.
    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).map(Fen)
    }

    /// `self * n`, or `None` on overflow.
    pub fn checked_mul(self, n: i64) -> Option<Fen> {
        self.0.checked_mul(n).map(Fen)
    }

    /// Formats as `¥199.00` for labels and logs (never used for arithmetic).
    pub fn display_yuan(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}¥{}.{:02}", abs / 100, abs % 100)
    }
}

impl Points {
    /// Zero points.
    pub const ZERO: Points = Points(0);

    /// Whether this is zero points.
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Points) -> Option<Points> {
        self.0.checked_add(other.0).map(Points)
    }

    /// `self - other`, or `None` on overflow.
    pub fn checked_sub(self, other: Points) -> Option<Points> {
        self.0.checked_sub(other.0).map(Points)
    }
}

/// `floor(value * num / den)` for non-negative inputs, computed in 128 bits so the
/// intermediate product cannot overflow. Returns `None` if `den` is zero, an input is
/// negative, or the result does not fit in `i64`.
///
/// This is the one rounding primitive behind every proportional rule (earning,
/// redemption value, refunds): all of them round down.
pub fn mul_div_floor(value: i64, num: i64, den: i64) -> Option<i64> {
    if den <= 0 || value < 0 || num < 0 {
        return None;
    }
    let r = (value as i128) * (num as i128) / (den as i128);
    i64::try_from(r).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_display_pads_fen() {
        assert_eq!(Fen(19900).display_yuan(), "¥199.00");
        assert_eq!(Fen(5).display_yuan(), "¥0.05");
        assert_eq!(Fen(-3000).display_yuan(), "-¥30.00");
    }

    #[test]
    fn mul_div_floor_rounds_down_and_never_overflows() {
        assert_eq!(mul_div_floor(19999, 1, 100), Some(199));
        assert_eq!(mul_div_floor(99, 1, 100), Some(0));
        assert_eq!(mul_div_floor(i64::MAX, 2, 2), Some(i64::MAX));
        assert_eq!(mul_div_floor(i64::MAX, 3, 2), None);
        assert_eq!(mul_div_floor(5, 1, 0), None);
        assert_eq!(mul_div_floor(-5, 1, 1), None);
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(Fen(i64::MAX).checked_add(Fen(1)), None);
        assert_eq!(Fen(3).checked_mul(4), Some(Fen(12)));
        assert_eq!(Points(i64::MIN).checked_sub(Points(1)), None);
    }
}
