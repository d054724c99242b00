//! Members' activity: what each member bought and how they used their points, folded
//! from their facts behind the ingest cursor (a projection: `projections.rs`).
//! The first of the per-member aggregates that analytics and segments read instead of
//! scanning facts (DESIGN.md, hard part 11). Pure: no storage here.

use patron_domain::{Detail, Entry};

/// The activity projection's name (`patron-hub rebuild`, `/v1/projections`).
pub const ACTIVITY: &str = "activity";

/// One member id's activity, as its facts name it (merged members have several rows;
/// [`Activity::combine`] adds them up).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Activity {
    /// Facts of the member folded in (the hub's merges not counted).
    pub facts: i64,
    /// Purchases (receipts).
    pub purchases: i64,
    /// Money paid on those purchases (fen).
    pub spend: i64,
    /// Refunds.
    pub refunds: i64,
    /// Money returned by refunds (fen).
    pub refunded: i64,
    /// The first purchase (unix ms, the writing store's clock).
    pub first_purchase_at: Option<i64>,
    /// The latest purchase.
    pub last_purchase_at: Option<i64>,
    /// Points credited (lots earned, every kind).
    pub points_earned: i64,
    /// Points spent (redemptions and points paid at checkout).
    pub points_spent: i64,
    /// Points taken back (a refund reversing an earn).
    pub points_reversed: i64,
    /// The latest fact of the member (unix ms).
    pub last_seen_at: i64,
}

impl Activity {
    /// Folds one fact of the member in. Every field is a sum, a count, a minimum or a
    /// maximum, so the result does not depend on the order facts arrive in: folding
    /// behind the cursor in batches of any size gives what a rebuild gives.
    /// The hub's merge facts are bookkeeping, not the member's doing: they count for
    /// nothing (the merged ids' rows are added up when read).
    pub fn fold(&mut self, entry: &Entry) {
        if matches!(entry.detail, Detail::MemberMerged(_)) {
            return;
        }
        self.facts += 1;
        self.last_seen_at = self.last_seen_at.max(entry.at);
        self.points_earned += entry.earn;
        self.points_spent += entry.spend;
        self.points_reversed += entry.reverse;
        match &entry.detail {
            Detail::Purchase(sale) => {
                self.purchases += 1;
                self.spend += sale.total;
                self.first_purchase_at = Some(
                    self.first_purchase_at
                        .map_or(entry.at, |first| first.min(entry.at)),
                );
                self.last_purchase_at = Some(
                    self.last_purchase_at
                        .map_or(entry.at, |last| last.max(entry.at)),
                );
            }
            Detail::Refund(refund) => {
                self.refunds += 1;
                self.refunded += refund.amount;
            }
            _ => {}
        }
    }

    /// Adds another id's activity of the same person (a member merged into this one).
    pub fn combine(&mut self, other: &Activity) {
        self.facts += other.facts;
        self.purchases += other.purchases;
        self.spend += other.spend;
        self.refunds += other.refunds;
        self.refunded += other.refunded;
        self.first_purchase_at = min_some(self.first_purchase_at, other.first_purchase_at);
        self.last_purchase_at = match (self.last_purchase_at, other.last_purchase_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.points_earned += other.points_earned;
        self.points_spent += other.points_spent;
        self.points_reversed += other.points_reversed;
        self.last_seen_at = self.last_seen_at.max(other.last_seen_at);
    }

    /// Money kept: paid less refunded (fen).
    pub fn net_spend(&self) -> i64 {
        self.spend - self.refunded
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The fold a projection step applies: one fact of a member into that member's row.
pub type Fold = fn(&mut Activity, &Entry);

/// [`Activity::fold`], as the projection runs it.
pub fn fold(a: &mut Activity, entry: &Entry) {
    a.fold(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture of every kind of fact the edge writes (`domain/fixtures`).
    fn fixture() -> Vec<Entry> {
        include_str!("../../domain/fixtures/facts-v1.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Entry::parse(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Each member's activity folded over `facts` in that order.
    fn by_member(facts: &[Entry]) -> std::collections::BTreeMap<uuid::Uuid, Activity> {
        let mut out = std::collections::BTreeMap::<uuid::Uuid, Activity>::new();
        for e in facts {
            if let Some(m) = e.member {
                out.entry(m).or_default().fold(e);
            }
        }
        out
    }

    #[test]
    fn purchases_refunds_and_points_are_counted_from_the_facts() {
        let facts = fixture();
        let all = by_member(&facts);
        // Independently of the fold: sums straight from the facts.
        let sales: Vec<&Entry> = facts
            .iter()
            .filter(|e| matches!(e.detail, Detail::Purchase(_)) && e.member.is_some())
            .collect();
        let paid: i64 = sales
            .iter()
            .map(|e| match &e.detail {
                Detail::Purchase(s) => s.total,
                _ => 0,
            })
            .sum();
        assert!(sales.len() >= 2, "the fixture holds member purchases");
        let total = all.values().fold(Activity::default(), |mut a, b| {
            a.combine(b);
            a
        });
        assert_eq!(total.purchases, sales.len() as i64);
        assert_eq!(total.spend, paid);
        assert_eq!(
            total.points_earned,
            facts
                .iter()
                .filter(|e| e.member.is_some())
                .map(|e| e.earn)
                .sum::<i64>()
        );
        let merges = facts
            .iter()
            .filter(|e| matches!(e.detail, Detail::MemberMerged(_)))
            .count();
        assert!(merges > 0, "the fixture holds a merge");
        assert_eq!(
            total.facts,
            (facts.iter().filter(|e| e.member.is_some()).count() - merges) as i64
        );
        let refunds = facts
            .iter()
            .filter(|e| matches!(e.detail, Detail::Refund(_)) && e.member.is_some())
            .count() as i64;
        assert_eq!(total.refunds, refunds);
        let first = sales.iter().map(|e| e.at).min();
        assert_eq!(total.first_purchase_at, first);
        assert_eq!(total.last_purchase_at, sales.iter().map(|e| e.at).max());
    }

    #[test]
    fn the_order_facts_arrive_in_does_not_matter() {
        let mut facts = fixture();
        let forward = by_member(&facts);
        facts.reverse();
        assert_eq!(by_member(&facts), forward);
        // Interleaved: even positions, then odd ones.
        let (even, odd): (Vec<_>, Vec<_>) =
            facts.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let shuffled: Vec<Entry> = even.into_iter().chain(odd).map(|(_, e)| e).collect();
        assert_eq!(by_member(&shuffled), forward);
    }

    #[test]
    fn combining_two_ids_of_one_person_adds_counts_and_keeps_the_extremes() {
        let a = Activity {
            facts: 2,
            purchases: 1,
            spend: 500,
            first_purchase_at: Some(20),
            last_purchase_at: Some(20),
            last_seen_at: 25,
            ..Activity::default()
        };
        let b = Activity {
            facts: 3,
            purchases: 2,
            spend: 700,
            refunds: 1,
            refunded: 100,
            first_purchase_at: Some(10),
            last_purchase_at: Some(30),
            last_seen_at: 30,
            ..Activity::default()
        };
        let mut sum = a.clone();
        sum.combine(&b);
        assert_eq!(
            (sum.facts, sum.purchases, sum.spend, sum.net_spend()),
            (5, 3, 1200, 1100)
        );
        assert_eq!(
            (
                sum.first_purchase_at,
                sum.last_purchase_at,
                sum.last_seen_at
            ),
            (Some(10), Some(30), 30)
        );
        // A person with no purchases under one id keeps the other's dates.
        let mut only = Activity::default();
        only.combine(&a);
        assert_eq!(only.first_purchase_at, Some(20));
    }
}
