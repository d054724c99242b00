//! Splitting an amount over weights (lines) without losing or inventing a fen.

/// Splits `amount` (≥ 0) in proportion to `weights` (≥ 0) by the largest-remainder
/// method: each share is ⌊amount × wᵢ ÷ Σw⌋, and the fen left over go one each to the
/// largest remainders (ties to the earlier index). The shares add up to exactly
/// `amount` and no share exceeds its weight when `amount ≤ Σw`. All-zero weights get
/// nothing (and `amount` must then be 0 for the sum to hold; callers cap it).
pub fn split(amount: i64, weights: &[i64]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| i128::from((*w).max(0))).sum();
    if total == 0 || amount <= 0 {
        return vec![0; weights.len()];
    }
    let amount = i128::from(amount);
    let mut shares: Vec<i64> = Vec::with_capacity(weights.len());
    let mut rems: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    let mut given: i128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let num = amount * i128::from((*w).max(0));
        let q = num / total;
        shares.push(q as i64);
        rems.push((num % total, i));
        given += q;
    }
    let mut left = amount - given;
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rems {
        if left == 0 {
            break;
        }
        if weights[i] > 0 {
            shares[i] += 1;
            left -= 1;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remainders_go_to_the_largest_fractions() {
        assert_eq!(split(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(split(10, &[0, 5, 5]), vec![0, 5, 5]);
        assert_eq!(split(0, &[3, 4]), vec![0, 0]);
        assert_eq!(split(7, &[0, 0]), vec![0, 0]);
    }

    proptest! {
        #[test]
        fn shares_add_up_and_stay_within_weights(ws in proptest::collection::vec(0i64..1_000_000, 1..30), pct in 0i64..=100) {
            let total: i64 = ws.iter().sum();
            let amount = total * pct / 100;
            let s = split(amount, &ws);
            if total > 0 {
                prop_assert_eq!(s.iter().sum::<i64>(), amount);
            }
            for (share, w) in s.iter().zip(&ws) {
                prop_assert!(*share >= 0 && share <= w);
            }
        }
    }
}
