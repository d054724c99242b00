//! Rights that follow the member: a star-shaped bounded counter over one member's
//! points (after Balegas et al.'s bounded counter and AntidoteDB's `counter_b`).
//!
//! The hub holds a member's rights to spend. When the member is identified at a store
//! while the hub is reachable, the hub may grant that store a **lease**: a share of what
//! the member may spend, for a while. The store spends within its lease without asking
//! anyone, offline too; the hub counts the unspent part of the lease as taken until the
//! store gives it back. A point is thus spendable in one place at a time: redemptions
//! the hub authorizes see the member's balance net of every open lease, and a store
//! never spends beyond its own.
//!
//! **Time.** The store measures its lease on its own monotonic clock from the instant
//! it *asked*; the hub measures its copy on its own clock from the instant it
//! *granted*, which is later, and adds a margin. So the store's lease always ends
//! first, whatever either wall clock says (a store clock an hour off changes nothing).
//!
//! **Returning.** The store pushes its facts (the spends under the lease among them),
//! then gives the lease back; the hub drops it. A lease the store never gives back
//! stops counting at the hub's expiry. Spends made under it that reach the hub only
//! after that (the store stayed cut off for longer than the margin) are still taken,
//! since facts are never refused, and can overdraw by at most that lease's points:
//! the bound `docs/redemption.md` gives.

use std::collections::BTreeMap;

/// How the hub grants leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// Share of what the member may spend that one lease takes, in ‰.
    pub share_permille: i64,
    /// How long the store may spend under a lease, from the instant it asked (ms).
    pub duration_ms: i64,
    /// How much longer the hub keeps counting a lease than the store may use it (ms).
    pub margin_ms: i64,
    /// Smallest lease worth granting (points).
    pub min_points: i64,
}

/// A lease as the hub records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Points the store may spend under it.
    pub points: i64,
    /// What the store's synced spends under it came to.
    pub spent: i64,
    /// The hub's instant after which it no longer counts the lease (hub clock, ms).
    pub until: i64,
    /// Given back on a recall: it counts only spends made under it that have not
    /// arrived, and nothing of it may be used any more.
    pub returned: bool,
}

impl Lease {
    /// What the lease still takes from the member's balance at `now` (hub clock).
    pub fn outstanding(&self, now: i64) -> i64 {
        if now < self.until {
            self.points.saturating_sub(self.spent).max(0)
        } else {
            0
        }
    }
}

/// One member's open leases, by store, as the hub holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Open leases by store id.
    pub leases: BTreeMap<String, Lease>,
}

/// Why the hub granted no lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoLease {
    /// The store holds an open lease on this member already.
    #[error("the store holds a lease on this member already")]
    Held,
    /// The share of what the member may spend is below the policy's minimum.
    #[error("too few points to lease")]
    TooFew,
}

impl Rights {
    /// Points taken by open leases at `now`, except `store`'s (the asking store spends
    /// under its own lease, not against it).
    pub fn reserved(&self, now: i64, except: Option<&str>) -> i64 {
        self.leases
            .iter()
            .filter(|(s, _)| Some(s.as_str()) != except)
            .map(|(_, l)| l.outstanding(now))
            .fold(0i64, i64::saturating_add)
    }

    /// Grants `store` a lease of the policy's share of `spendable` (the member's balance
    /// less the points the hub holds for authorized sales, before leases), at `now` on
    /// the hub's clock. Leases that ran out at the hub are dropped first. The store must
    /// have pushed its facts before asking: a spend is credited to the lease its store
    /// holds when the spend reaches the hub.
    pub fn grant(
        &mut self,
        store: &str,
        spendable: i64,
        policy: &LeasePolicy,
        now: i64,
    ) -> Result<Lease, NoLease> {
        self.leases.retain(|_, l| now < l.until);
        // A lease whose every point is spent and credited holds nothing any more: the
        // store may have a new one.
        if self.leases.get(store).is_some_and(|l| !l.used_up()) {
            return Err(NoLease::Held);
        }
        let free = spendable.saturating_sub(self.reserved(now, None)).max(0);
        // Rounded down: a lease never takes more than its share.
        let points = i64::try_from(
            i128::from(free) * i128::from(policy.share_permille.clamp(0, 1000)) / 1000,
        )
        .unwrap_or(0);
        if points < policy.min_points.max(1) {
            return Err(NoLease::TooFew);
        }
        let lease = Lease {
            points,
            returned: false,
            spent: 0,
            until: now
                .saturating_add(policy.duration_ms)
                .saturating_add(policy.margin_ms),
        };
        self.leases.insert(store.to_string(), lease.clone());
        Ok(lease)
    }

    /// A spend under `store`'s lease reached the hub (its fact was ingested).
    pub fn spent(&mut self, store: &str, points: i64) {
        if let Some(l) = self.leases.get_mut(store) {
            l.spent = l.spent.saturating_add(points);
        }
    }

    /// `store` gave its lease back, after pushing the spends made under it.
    pub fn give_back(&mut self, store: &str) -> Option<Lease> {
        self.leases.remove(store)
    }

    /// `store` stopped spending under its lease (the hub recalled it) after spending
    /// `spent_at_store` under it: see [`Lease::given_back`].
    pub fn take_back(&mut self, store: &str, spent_at_store: i64) {
        match self.leases.get(store).map(|l| l.given_back(spent_at_store)) {
            Some(Some(kept)) => {
                self.leases.insert(store.to_string(), kept);
            }
            Some(None) => {
                self.leases.remove(store);
            }
            None => {}
        }
    }

    /// Other stores' open leases that still take points at `now` (store, points), in
    /// store order: what a refusal tells the asking store is reserved elsewhere (a
    /// lease given back, whose points are spends on their way, is not).
    pub fn reserved_by(&self, now: i64, except: &str) -> Vec<(String, i64)> {
        self.leases
            .iter()
            .filter(|(s, l)| s.as_str() != except && !l.returned)
            .map(|(s, l)| (s.clone(), l.outstanding(now)))
            .filter(|(_, p)| *p > 0)
            .collect()
    }
}

impl Lease {
    /// The lease once its store stopped spending under it, having spent
    /// `spent_at_store` under it in all (some of those spends may not have reached the
    /// hub yet): it keeps counting only what was spent and not yet credited, and is
    /// gone (`None`) once nothing is. A recall gives a lease back before the store's
    /// last facts arrive, so the hub must not free what they will take.
    pub fn given_back(&self, spent_at_store: i64) -> Option<Lease> {
        let points = self.points.min(spent_at_store.max(0));
        (points > self.spent).then(|| Lease {
            points,
            returned: true,
            ..self.clone()
        })
    }

    /// Whether the lease can no longer take anything: every point of it is spent and
    /// the spends reached the hub (a given-back lease ends so).
    pub fn used_up(&self) -> bool {
        self.spent >= self.points
    }
}

/// A lease as the store holds it: measured on the store's monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// Points granted.
    pub points: i64,
    /// Spent under it so far.
    pub spent: i64,
    /// Monotonic instant (ms) after which the store no longer spends under it: the
    /// instant it asked plus the policy's duration.
    pub ends_at: i64,
}

impl HeldLease {
    /// The lease granted for an ask sent at monotonic `asked_at`.
    pub fn new(points: i64, asked_at: i64, duration_ms: i64) -> HeldLease {
        HeldLease {
            points,
            spent: 0,
            ends_at: asked_at.saturating_add(duration_ms),
        }
    }

    /// What may still be spent at monotonic `now`.
    pub fn left(&self, now: i64) -> i64 {
        if now < self.ends_at {
            self.points.saturating_sub(self.spent).max(0)
        } else {
            0
        }
    }

    /// Spends `points` under the lease if they fit.
    pub fn spend(&mut self, points: i64, now: i64) -> bool {
        if points > 0 && points <= self.left(now) {
            self.spent += points;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: LeasePolicy = LeasePolicy {
        share_permille: 500,
        duration_ms: 4 * 3_600_000,
        margin_ms: 600_000,
        min_points: 10,
    };

    #[test]
    fn a_lease_takes_a_share_rounded_down_and_one_per_store() {
        let mut r = Rights::default();
        let l = r.grant("S001", 1001, &POLICY, 0);
        assert_eq!(l.map(|l| l.points), Ok(500));
        assert_eq!(r.grant("S001", 1001, &POLICY, 1), Err(NoLease::Held));
        // The second store gets half of what the first left free.
        assert_eq!(r.grant("S002", 1001, &POLICY, 2).map(|l| l.points), Ok(250));
        assert_eq!(r.reserved(3, None), 750);
        assert_eq!(r.reserved(3, Some("S001")), 250);
        assert_eq!(r.grant("S003", 30, &POLICY, 4), Err(NoLease::TooFew));
    }

    #[test]
    fn the_store_lease_ends_before_the_hub_copy() {
        let mut r = Rights::default();
        // The store asked at its monotonic 1,000; the hub granted at its own clock,
        // an hour ahead of the store's wall clock, 40 ms later.
        let asked = 1_000;
        let hub_now = 3_600_000 + 1_040;
        let lease = r
            .grant("S001", 1000, &POLICY, hub_now)
            .unwrap_or_else(|e| panic!("{e}"));
        let held = HeldLease::new(lease.points, asked, POLICY.duration_ms);
        // Elapsed time is what both measure: the store stops before the hub does.
        let store_stops_after = held.ends_at - asked;
        let hub_stops_after = lease.until - (hub_now - 40);
        assert!(store_stops_after < hub_stops_after);
        assert_eq!(held.left(held.ends_at), 0);
        assert_eq!(held.left(held.ends_at - 1), lease.points);
    }

    /// One step of the test: what happens to the member, across three stores.
    #[derive(Debug, Clone)]
    enum Op {
        /// The store identifies the member while the hub is reachable and asks for a lease.
        Grant(usize),
        /// The store redeems offline under its lease.
        SpendLease(usize, i64),
        /// A redemption the hub authorizes (some store, online).
        Authorize(i64),
        /// The member earns points at the store (the fact syncs at once).
        Earn(i64),
        /// The store pushes its facts.
        Sync(usize),
        /// The store pushes its facts and gives its lease back.
        GiveBack(usize),
        /// The member moves: `from` gives its lease back, `to` asks for one.
        Transfer(usize, usize),
        /// The hub recalls the store's lease: the store stops spending under it and
        /// gives it back at once, saying what it spent, before pushing those spends.
        Recall(usize),
        /// Time passes (both clocks run at the same rate; the store's started earlier).
        Tick(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize).prop_map(Op::Grant),
            (0..3usize, 1..400i64).prop_map(|(s, p)| Op::SpendLease(s, p)),
            (1..400i64).prop_map(Op::Authorize),
            (1..300i64).prop_map(Op::Earn),
            (0..3usize).prop_map(Op::Sync),
            (0..3usize).prop_map(Op::GiveBack),
            (0..3usize, 0..3usize).prop_map(|(a, b)| Op::Transfer(a, b)),
            (0..3usize).prop_map(Op::Recall),
            // Minutes, or hours: leases (4 h + 10 min at the hub) run out in some runs.
            prop_oneof![1..600_000i64, 1..20_000_000i64].prop_map(Op::Tick),
        ]
    }

    /// The sequential model: plain numbers, no leases objects.
    #[derive(Debug, Default)]
    struct Model {
        /// Points earned.
        earned: i64,
        /// Spends the hub knows of.
        spent_known: i64,
        /// Per store, its lease.
        lease: [Option<ModelLease>; 3],
    }

    /// A lease in the model.
    #[derive(Debug, Clone, Copy)]
    struct ModelLease {
        points: i64,
        spent: i64,
        synced: i64,
        store_end: i64,
        hub_end: i64,
    }

    impl Model {
        fn outstanding(&self, now: i64, except: Option<usize>) -> i64 {
            (0..3)
                .filter(|s| Some(*s) != except)
                .filter_map(|s| self.lease[s])
                .filter(|l| now < l.hub_end)
                .map(|l| (l.points - l.synced).max(0))
                .sum()
        }
    }

    fn sid(s: usize) -> String {
        format!("S00{}", s + 1)
    }

    /// Spends that reached the hub after it had stopped counting their lease.
    #[derive(Debug, Default)]
    struct Late {
        total: i64,
        /// Those leases' points, by (store, hub expiry).
        leases: BTreeMap<(usize, i64), i64>,
    }

    impl Late {
        fn bound(&self) -> i64 {
            self.leases.values().sum()
        }
    }

    /// Store `s` pushes its facts: the hub learns its spends.
    fn push(
        s: usize,
        rights: &mut Rights,
        m: &mut Model,
        unsynced: &mut [i64; 3],
        late: &mut Late,
        hub_now: i64,
    ) {
        rights.spent(&sid(s), unsynced[s]);
        m.spent_known += unsynced[s];
        if let Some(l) = &mut m.lease[s] {
            l.synced += unsynced[s];
            if unsynced[s] > 0 && hub_now >= l.hub_end {
                late.total += unsynced[s];
                late.leases.insert((s, l.hub_end), l.points);
            }
        }
        unsynced[s] = 0;
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The rights counter against the sequential model, step by step; and the
        /// invariants: no rights are created (what may still be spent, everywhere,
        /// plus what was spent never exceeds what was earned), none are destroyed
        /// (once every store gave back, everything not spent is spendable at the hub),
        /// and no spend overdraws.
        #[test]
        fn rights_match_the_model_and_are_conserved(ops in prop::collection::vec(op(), 1..60)) {
            let mut rights = Rights::default();
            let mut held: [Option<HeldLease>; 3] = [None, None, None];
            let mut unsynced = [0i64; 3];
            let mut m = Model { earned: 1_000, ..Model::default() };
            let mut late = Late::default();
            let (mut hub_now, mut mono) = (10_000_000i64, 5_000i64);
            let hub_balance = |m: &Model| m.earned - m.spent_known;
            // Every spend as it was made (at a store under its lease, or at the hub),
            // kept apart from what the implementation counts.
            let mut made = 0i64;
            // What the stores' leases (the implementation's `HeldLease`) say was spent
            // under them, summed as each lease leaves the store, and the hub's grants.
            let (mut under_leases, mut at_hub_spent) = (0i64, 0i64);

            // A transfer is the member moving: the first store gives back, the second asks.
            let steps = ops.into_iter().flat_map(|op| match op {
                Op::Transfer(a, b) => vec![Op::GiveBack(a), Op::Grant(b)],
                op => vec![op],
            });
            for op in steps {
                match op {
                    Op::Grant(s) => {
                        // A store pushes its facts before it asks (see `Rights::grant`).
                        push(s, &mut rights, &mut m, &mut unsynced, &mut late, hub_now);
                        // The store asks at `mono`; the hub grants 30 ms later.
                        let asked = mono;
                        mono += 30;
                        hub_now += 30;
                        let at_hub = hub_now;
                        let spendable = hub_balance(&m);
                        let got = rights.grant(&sid(s), spendable, &POLICY, at_hub);
                        // Model: one open lease per store (a lease spent out and
                        // synced is not open); half of what is free, rounded down.
                        let open = m.lease[s].is_some_and(|l| at_hub < l.hub_end && l.synced < l.points);
                        let free = (spendable - m.outstanding(at_hub, None)).max(0);
                        let want = free * 500 / 1000;
                        match got {
                            Ok(l) => {
                                prop_assert!(!open);
                                prop_assert_eq!(l.points, want);
                                under_leases += held[s].as_ref().map_or(0, |h| h.spent);
                                held[s] = Some(HeldLease::new(l.points, asked, POLICY.duration_ms));
                                m.lease[s] = Some(ModelLease {
                                    points: l.points,
                                    spent: 0,
                                    synced: 0,
                                    store_end: asked + POLICY.duration_ms,
                                    hub_end: l.until,
                                });
                            }
                            Err(NoLease::Held) => prop_assert!(open),
                            Err(NoLease::TooFew) => prop_assert!(!open && want < POLICY.min_points),
                        }
                    }
                    Op::SpendLease(s, p) => {
                        let ok = held[s].as_mut().is_some_and(|h| h.spend(p, mono));
                        let fits = m.lease[s].is_some_and(|l| mono < l.store_end && l.spent + p <= l.points);
                        prop_assert_eq!(ok, fits);
                        if ok {
                            unsynced[s] += p;
                            made += p;
                            if let Some(l) = &mut m.lease[s] { l.spent += p; }
                        }
                    }
                    Op::Authorize(p) => {
                        let available = hub_balance(&m) - rights.reserved(hub_now, None);
                        prop_assert_eq!(available, hub_balance(&m) - m.outstanding(hub_now, None));
                        if p <= available {
                            m.spent_known += p;
                            made += p;
                            at_hub_spent += p;
                        }
                    }
                    Op::Earn(p) => m.earned += p,
                    Op::Sync(s) | Op::GiveBack(s) => {
                        push(s, &mut rights, &mut m, &mut unsynced, &mut late, hub_now);
                        if !matches!(op, Op::Sync(_)) {
                            rights.give_back(&sid(s));
                            under_leases += held[s].take().map_or(0, |h| h.spent);
                            m.lease[s] = None;
                        }
                    }
                    Op::Recall(s) => {
                        if let Some(h) = held[s].take() {
                            under_leases += h.spent;
                            rights.take_back(&sid(s), h.spent);
                            // Model: the lease now takes only what was spent under it.
                            if let Some(l) = &mut m.lease[s] {
                                l.points = l.points.min(l.spent);
                            }
                        }
                    }
                    Op::Transfer(..) => unreachable!("expanded above"),
                    Op::Tick(dt) => {
                        hub_now += dt;
                        mono += dt;
                    }
                }
                // The implementation agrees with the model on what leases take.
                prop_assert_eq!(rights.reserved(hub_now, None), m.outstanding(hub_now, None));
                // Spends made under a lease the hub had stopped counting (the store was
                // cut off past the hub's margin): the only way rights are created,
                // bounded by those leases' points. Pending ones count too.
                let pending: i64 = (0..3)
                    .filter(|s| m.lease[*s].is_some_and(|l| hub_now >= l.hub_end))
                    .map(|s| unsynced[s])
                    .sum();
                let late_all = late.total + pending;
                prop_assert!(late_all <= late.bound() + (0..3)
                    .filter_map(|s| m.lease[s])
                    .filter(|l| hub_now >= l.hub_end)
                    .map(|l| l.points)
                    .sum::<i64>());
                // No rights created beyond that: spendable at the hub plus left under
                // leases at the stores plus spent never exceeds what was earned.
                let spent_all = m.spent_known + unsynced.iter().sum::<i64>();
                let left: i64 = held.iter().flatten().map(|h| h.left(mono)).sum();
                let at_hub = (hub_balance(&m) - rights.reserved(hub_now, None)).max(0);
                prop_assert!(at_hub + left + spent_all <= m.earned + late_all,
                    "hub {at_hub} + leases {left} + spent {spent_all} > earned {} + late {late_all}", m.earned);
                // No spend overdraws beyond the late spends.
                prop_assert!(spent_all <= m.earned + late_all,
                    "spent {spent_all} > earned {} + late {late_all}", m.earned);
            }
            // Everyone syncs and gives back: nothing is lost either.
            for (s, h) in held.iter_mut().enumerate() {
                push(s, &mut rights, &mut m, &mut unsynced, &mut late, hub_now);
                rights.give_back(&sid(s));
                under_leases += h.take().map_or(0, |h| h.spent);
            }
            prop_assert!(late.total <= late.bound());
            prop_assert_eq!(rights.reserved(hub_now, None), 0, "no lease left holding points");
            // The implementation's own counts of what was spent (each store's lease, and
            // the hub's grants) add up to the spends made, one by one, in the model: a
            // lease that did not count a spend, or counted one twice, fails here.
            prop_assert_eq!(under_leases + at_hub_spent, made, "spends counted once");
        }
    }
}
