//! Anomalies at the counter that no single limit catches: a lane earning far above its
//! usual day, and a lane looking members up without selling to them. Pure: the scan in
//! `service::anomalies` feeds these the lane's figures and records what they find.

use serde::{Deserialize, Serialize};

/// When to raise an anomaly (configuration `[alerts]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertRules {
    /// A lane's points earned today above this many times its usual day is an anomaly.
    pub earn_factor: i64,
    /// ... but never below this many points (a quiet lane's busy day is not one).
    pub earn_floor: i64,
    /// The usual day is the median of the lane's days among the last this many...
    pub history_days: i64,
    /// ... of which at least this many must have had activity; a lane with less history
    /// has no usual day yet (the per-lane limits still hold it).
    pub min_history_days: i64,
    /// Lookups of members in a day from which a lane that sells to few of them is an
    /// anomaly ...
    pub lookups_floor: i64,
    /// ... when its lookups exceed this many per member sale.
    pub lookups_per_sale: i64,
    /// How often the edge looks (seconds).
    pub scan_secs: u64,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            earn_factor: 5,
            earn_floor: 5_000,
            history_days: 28,
            min_history_days: 7,
            lookups_floor: 50,
            lookups_per_sale: 3,
            scan_secs: 60,
        }
    }
}

impl AlertRules {
    /// Every figure must be at least 1 (`min_history_days` at most `history_days`).
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            self.earn_factor,
            self.earn_floor,
            self.history_days,
            self.min_history_days,
            self.lookups_floor,
            self.lookups_per_sale,
        ];
        if all.iter().any(|v| *v < 1) || self.scan_secs < 1 {
            return Err("alerts: every figure must be at least 1".into());
        }
        if self.min_history_days > self.history_days {
            return Err("alerts: min_history_days must not exceed history_days".into());
        }
        Ok(())
    }
}

/// What is unusual about a lane's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// Points earned far above the lane's usual day.
    EarnRate {
        /// Earned today.
        today: i64,
        /// The lane's usual day (median).
        usual: i64,
    },
    /// Many lookups, few member sales.
    LookupsWithoutSales {
        /// Lookups today.
        lookups: i64,
        /// Member sales today.
        sales: i64,
    },
}

impl Anomaly {
    /// Its name in alerts (`earn_rate`, `lookups_without_sales`).
    pub fn code(&self) -> &'static str {
        match self {
            Anomaly::EarnRate { .. } => "earn_rate",
            Anomaly::LookupsWithoutSales { .. } => "lookups_without_sales",
        }
    }

    /// (the figure today, what it was compared with).
    pub fn figures(&self) -> (i64, i64) {
        match *self {
            Anomaly::EarnRate { today, usual } => (today, usual),
            Anomaly::LookupsWithoutSales { lookups, sales } => (lookups, sales),
        }
    }
}

/// The median of `days` (the lower middle of an even count); 0 for none.
fn median(days: &[i64]) -> i64 {
    let mut v = days.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n => v[(n - 1) / 2],
    }
}

impl AlertRules {
    /// Whether `today`'s points earned are far above the lane's usual day, given the
    /// points earned on each earlier day of the window the lane was active.
    ///
    /// The usual day is the median, not the mean: one earlier spree (or one quiet
    /// week) does not move it, so a lane cannot raise its own bar with a single big day.
    pub fn earn_rate(&self, today: i64, history: &[i64]) -> Option<Anomaly> {
        if (history.len() as i64) < self.min_history_days || today < self.earn_floor {
            return None;
        }
        let usual = median(history);
        (today > usual.saturating_mul(self.earn_factor))
            .then_some(Anomaly::EarnRate { today, usual })
    }

    /// Whether the lane looked members up far more often than it sold to members today.
    pub fn lookups(&self, lookups: i64, sales: i64) -> Option<Anomaly> {
        (lookups >= self.lookups_floor && lookups > sales.saturating_mul(self.lookups_per_sale))
            .then_some(Anomaly::LookupsWithoutSales { lookups, sales })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_far_above_its_usual_day_is_an_anomaly_and_one_big_day_does_not_move_the_bar() {
        let r = AlertRules::default();
        let week = [1_000, 1_200, 900, 1_100, 1_000, 800, 1_300];
        assert_eq!(
            r.earn_rate(5_000, &week),
            None,
            "5,000 is not above 5 × the median 1,000"
        );
        assert_eq!(
            r.earn_rate(5_001, &week),
            Some(Anomaly::EarnRate {
                today: 5_001,
                usual: 1_000
            })
        );
        // One earlier spree leaves the median where it was.
        let spree = [1_000, 1_000, 1_000, 90_000, 1_000, 1_000, 1_000];
        assert!(r.earn_rate(6_000, &spree).is_some());
        assert_eq!(
            r.earn_rate(6_000, &[1_000; 6]),
            None,
            "six days: no usual day yet"
        );
        assert_eq!(r.earn_rate(4_999, &[0; 7]), None, "below the floor");
        assert!(
            r.earn_rate(5_000, &[0; 7]).is_some(),
            "at the floor, over nothing"
        );
    }

    #[test]
    fn many_lookups_and_few_sales_is_an_anomaly() {
        let r = AlertRules::default();
        assert_eq!(r.lookups(49, 0), None, "below the floor");
        assert_eq!(
            r.lookups(50, 16),
            Some(Anomaly::LookupsWithoutSales {
                lookups: 50,
                sales: 16
            })
        );
        assert_eq!(r.lookups(51, 17), None, "three lookups a sale is usual");
        assert_eq!(r.lookups(1_000, 400), None);
    }

    #[test]
    fn figures_below_one_are_refused() {
        assert!(AlertRules::default().validate().is_ok());
        let bad = AlertRules {
            earn_factor: 0,
            ..AlertRules::default()
        };
        assert!(bad.validate().is_err());
        let bad = AlertRules {
            min_history_days: 29,
            ..AlertRules::default()
        };
        assert!(bad.validate().is_err());
    }
}
