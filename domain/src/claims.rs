//! Limited entitlements as chain-wide counters (DESIGN.md, hard part 8).
//!
//! A once-only reward, a daily check-in, a monthly benefit quota and a rule's
//! per-member limit are each a counter of one member: a [`ClaimKey`] (what, and the
//! period it counts in) with a limit per period. Each use is a `claim` fact
//! ([`crate::fact::ClaimRecord`]) that syncs like any other, so every replica counts the
//! same uses; a use given back (a refund took an upgrade gift back) is a `claim` fact
//! with `release`.
//!
//! Who allows a claim: the hub while a store can reach it ([`hub_allows`]: it counts
//! every store's claims it holds, the claims it authorized whose facts are on their
//! way, and the asking store's unsynced ones), the entitlement's [`OfflinePolicy`]
//! while it cannot ([`offline_allows`]). What can happen offline is bounded by
//! [`worst_case`]; the hub reports what passed a limit ([`Tally::excess`]). `docs/claims.md`
//! has the rules and the formula.

use serde::{Deserialize, Serialize};

/// The period of an entitlement that never renews.
pub const ONCE: &str = "once";

/// How a coupon's counter names it: `coupon:<id>`.
pub const COUPON_PREFIX: &str = "coupon:";

/// Longest entitlement name (a rule id is at most 64 characters, a referral names a
/// 32-character member).
pub const MAX_ENTITLEMENT: usize = 96;

/// Largest limit per period a claim may carry.
pub const MAX_LIMIT: u32 = 1_000;

/// One counter of a member: what is claimed, and the period it counts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimKey {
    /// `check_in`, `share`, `profile_completed`, `benefit:<code>`, `upgrade:<tier>`,
    /// `rule:<id>`, `referral:<event>:<friend>`, `coupon:<id>`, `welcome:<what>`.
    pub entitlement: String,
    /// [`ONCE`], a store day `YYYY-MM-DD`, or a month `YYYY-MM`.
    pub period: String,
}

impl ClaimKey {
    fn new(entitlement: String, period: &str) -> ClaimKey {
        ClaimKey {
            entitlement,
            period: period.to_string(),
        }
    }

    /// The daily check-in of store day `day`.
    pub fn check_in(day: &str) -> ClaimKey {
        ClaimKey::new("check_in".into(), day)
    }

    /// Shares rewarded on store day `day`.
    pub fn share(day: &str) -> ClaimKey {
        ClaimKey::new("share".into(), day)
    }

    /// The profile-completion reward.
    pub fn profile_completed() -> ClaimKey {
        ClaimKey::new("profile_completed".into(), ONCE)
    }

    /// Uses of tier benefit `code` in month `month` (`YYYY-MM`).
    pub fn benefit(code: &str, month: &str) -> ClaimKey {
        ClaimKey::new(format!("benefit:{code}"), month)
    }

    /// The gift for first reaching tier `tier`.
    pub fn upgrade(tier: &str) -> ClaimKey {
        ClaimKey::new(format!("upgrade:{tier}"), ONCE)
    }

    /// Sales in which promotion rule `id` applied to the member.
    pub fn rule(id: &str) -> ClaimKey {
        ClaimKey::new(format!("rule:{id}"), ONCE)
    }

    /// A welcome reward: `register` (points on registration) or `first_purchase` (the
    /// gift of the first purchase over the threshold).
    pub fn welcome(what: &str) -> ClaimKey {
        ClaimKey::new(format!("welcome:{what}"), ONCE)
    }

    /// The one use of coupon `id` (hex): single use across the chain.
    pub fn coupon(id: &str) -> ClaimKey {
        ClaimKey::new(format!("{COUPON_PREFIX}{id}"), ONCE)
    }

    /// The coupon (hex id) this counter is the use of, if it is a coupon's.
    pub fn coupon_id(&self) -> Option<&str> {
        self.entitlement.strip_prefix(COUPON_PREFIX)
    }

    /// The referrer's reward for friend `friend` (hex member id) doing `event`.
    pub fn referral(event: &str, friend: &str) -> ClaimKey {
        ClaimKey::new(format!("referral:{event}:{friend}"), ONCE)
    }

    /// Refuses names and periods no store writes: empty, too long, or characters
    /// outside `[a-z0-9_:.-]` (they are keys of the hub's tables and its report).
    pub fn validate(&self) -> Result<(), &'static str> {
        let ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_:.-".contains(&b))
        };
        if !ok(&self.entitlement, MAX_ENTITLEMENT) {
            return Err("entitlement: 1-96 characters of [a-z0-9_:.-]");
        }
        if !ok(&self.period, 10) {
            return Err("period: `once`, YYYY-MM-DD or YYYY-MM");
        }
        Ok(())
    }
}

/// What a store does with a claim while it cannot ask the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflinePolicy {
    /// Allowed once per offline period (its claims of the counter the hub has not
    /// acknowledged: none), within what the store knows of the limit. The default.
    #[default]
    Once,
    /// Allowed within what the store knows of the limit: each offline store may give
    /// the whole limit again.
    Local,
    /// Never: the entitlement waits for the hub.
    Refuse,
}

/// What a store knows of a member's counter when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Known {
    /// Net claims it holds: its own and those other stores' facts brought.
    pub used: i64,
    /// Its own offline claims the hub has not acknowledged yet.
    pub offline_unsynced: i64,
}

/// Whether a store may allow a claim without the hub.
pub fn offline_allows(policy: OfflinePolicy, limit: u32, known: Known) -> bool {
    if known.used >= i64::from(limit) {
        return false;
    }
    match policy {
        OfflinePolicy::Once => known.offline_unsynced == 0,
        OfflinePolicy::Local => true,
        OfflinePolicy::Refuse => false,
    }
}

/// What the hub counts against a limit when a store asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// Net claims of the counter in the facts it holds, over every id of the person.
    pub used: i64,
    /// Claims it authorized whose facts have not arrived (holds that have not lapsed).
    pub held: i64,
    /// The asking store's claims it has not pushed yet (never negative).
    pub unsynced: i64,
}

impl Counted {
    /// All of it.
    pub fn total(&self) -> i64 {
        self.used
            .saturating_add(self.held)
            .saturating_add(self.unsynced.max(0))
    }
}

/// Whether the hub allows one more claim under `limit`.
pub fn hub_allows(counted: Counted, limit: u32) -> bool {
    counted.total() < i64::from(limit)
}

/// A counter's claim facts as the hub holds them, judged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Net claims: each store's claims less its releases, where a release cancels only
    /// a claim of the same store made before it (another store's releases, releases
    /// before any claim, or more releases than claims change nothing).
    pub net: i64,
    /// The smallest limit any claim carried.
    pub smallest: Option<u32>,
    /// The stores whose claims still count, sorted.
    pub stores: Vec<String>,
}

impl Tally {
    /// Net claims beyond the smallest limit any claim carried: a store on an older rule
    /// set may know a lower limit, and a lower one only makes the report stricter.
    pub fn excess(&self) -> i64 {
        self.smallest
            .map_or(0, |l| (self.net - i64::from(l)).max(0))
    }
}

/// Uses of a single-use coupon (its counter `coupon:<id>`) beyond its one that the hub
/// settles as points debts (`docs/claims.md`), from each store's net uses and whether
/// that store could take the coupon at all (`entitled`: the hub granted its use, it
/// issued the coupon, or it held the member's coupons then). A store's net uses count
/// once at most: it counts its own uses, so more are not uses its policy allowed. A
/// store that could not take the coupon is reported as an over-claim, never charged
/// for: a forged use must not put a member in debt.
pub fn coupon_reuses(per_store: impl IntoIterator<Item = (bool, i64)>) -> i64 {
    let uses: i64 = per_store
        .into_iter()
        .filter(|(entitled, _)| *entitled)
        .map(|(_, net)| net.clamp(0, 1))
        .sum();
    (uses - 1).max(0)
}

/// One claim fact as judged: its store, when (the fact's time), +1 for a claim or −1
/// for a release, and the limit it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFact<S> {
    /// The store that wrote it.
    pub store: S,
    /// The fact's time (unix ms).
    pub at: i64,
    /// +1 or −1.
    pub units: i64,
    /// The limit it carried.
    pub limit: u32,
}

/// Judges a counter's claim facts. Order-independent: each store's facts are taken in
/// time order (claims before releases at the same instant).
pub fn tally<S: AsRef<str>>(facts: impl IntoIterator<Item = ClaimFact<S>>) -> Tally {
    let mut per_store: std::collections::BTreeMap<String, Vec<(i64, i64)>> = Default::default();
    let mut smallest: Option<u32> = None;
    for f in facts {
        per_store
            .entry(f.store.as_ref().to_string())
            .or_default()
            .push((f.at, f.units));
        smallest = Some(smallest.map_or(f.limit, |s| s.min(f.limit)));
    }
    let mut out = Tally {
        smallest,
        ..Tally::default()
    };
    for (store, mut facts) in per_store {
        facts.sort_by_key(|(at, units)| (*at, -*units));
        let held = facts.iter().fold(0i64, |held, (_, units)| {
            if *units > 0 {
                held.saturating_add(*units)
            } else {
                held.saturating_add(*units).max(0)
            }
        });
        if held > 0 {
            out.net = out.net.saturating_add(held);
            out.stores.push(store);
        }
    }
    out
}

/// The most claims a counter with `limit` can reach chain-wide: the hub allows `limit`,
/// and each of `offline_stores` stores that could not reach it may add, unknown to the
/// others, what its policy allows — under [`OfflinePolicy::Once`] one per offline
/// period, `offline_periods` of them at most in the counter's period, and never more
/// than `limit` (a store counts its own claims). `docs/claims.md` writes it out.
pub fn worst_case(
    policy: OfflinePolicy,
    limit: u32,
    offline_stores: u32,
    offline_periods: u32,
) -> u64 {
    let per_store = match policy {
        OfflinePolicy::Refuse => 0,
        OfflinePolicy::Once => offline_periods.min(limit),
        OfflinePolicy::Local => limit,
    };
    u64::from(limit) + u64::from(offline_stores) * u64::from(per_store)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_name_their_entitlement_and_period_and_refuse_what_no_store_writes() {
        assert_eq!(ClaimKey::check_in("2026-12-07").entitlement, "check_in");
        assert_eq!(
            ClaimKey::benefit("dry_cleaning", "2026-12").period,
            "2026-12"
        );
        assert_eq!(ClaimKey::upgrade("gold").period, ONCE);
        let friend = "0190a0000000700080000000000000ff";
        assert!(ClaimKey::referral("register", friend).validate().is_ok());
        assert!(ClaimKey::rule("first10").validate().is_ok());
        for bad in [
            ClaimKey::new(String::new(), ONCE),
            ClaimKey::new("Check In".into(), ONCE),
            ClaimKey::new("x".repeat(97), ONCE),
            ClaimKey::new("check_in".into(), "2026-12-07T00"),
            ClaimKey::new("check_in".into(), ""),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_coupon_is_charged_once_per_store_that_could_take_it_past_the_first() {
        assert_eq!(coupon_reuses([(true, 1), (true, 1)]), 1);
        assert_eq!(coupon_reuses([(true, 1), (true, 1), (true, 1)]), 2);
        // A use given back (a refund's release) is no use.
        assert_eq!(coupon_reuses([(true, 1), (true, 0)]), 0);
        // One store's many uses are one: it counts its own.
        assert_eq!(coupon_reuses([(true, 3), (true, 1)]), 1);
        // A store that could not take the coupon charges nobody, however many it claims.
        assert_eq!(coupon_reuses([(true, 1), (false, 5)]), 0);
        assert_eq!(coupon_reuses([(false, 1), (false, 1)]), 0);
        assert_eq!(coupon_reuses([]), 0);
    }

    #[test]
    fn offline_policies_allow_within_what_the_store_knows() {
        let k = |used, offline_unsynced| Known {
            used,
            offline_unsynced,
        };
        assert!(offline_allows(OfflinePolicy::Once, 1, k(0, 0)));
        assert!(
            !offline_allows(OfflinePolicy::Once, 1, k(1, 0)),
            "known used"
        );
        assert!(
            !offline_allows(OfflinePolicy::Once, 3, k(1, 1)),
            "one per offline period"
        );
        assert!(offline_allows(OfflinePolicy::Local, 3, k(2, 2)));
        assert!(!offline_allows(OfflinePolicy::Local, 3, k(3, 0)));
        assert!(!offline_allows(OfflinePolicy::Refuse, 3, k(0, 0)));
    }

    #[test]
    fn the_hub_counts_held_and_unsynced_claims_but_no_negative_claim() {
        let c = |used, held, unsynced| Counted {
            used,
            held,
            unsynced,
        };
        assert!(hub_allows(c(0, 0, 0), 1));
        assert!(!hub_allows(c(0, 1, 0), 1), "a hold counts");
        assert!(
            !hub_allows(c(0, 0, 1), 1),
            "the store's unsynced claim counts"
        );
        assert!(hub_allows(c(2, 0, -5), 3), "a negative claim adds nothing");
        assert!(!hub_allows(c(3, 0, -5), 3));
    }

    fn f(store: &str, at: i64, units: i64, limit: u32) -> ClaimFact<String> {
        ClaimFact {
            store: store.to_string(),
            at,
            units,
            limit,
        }
    }

    #[test]
    fn excess_is_what_the_net_claims_pass_the_smallest_limit_by() {
        let t = |v: Vec<ClaimFact<String>>| tally(v).excess();
        assert_eq!(t(vec![]), 0);
        assert_eq!(t(vec![f("S1", 1, 1, 1)]), 0);
        assert_eq!(t(vec![f("S1", 1, 1, 1), f("S2", 1, 1, 1)]), 1);
        assert_eq!(
            t(vec![f("S1", 1, 1, 1), f("S2", 1, 1, 1), f("S2", 2, -1, 1)]),
            0,
            "a release heals it"
        );
        assert_eq!(
            t(vec![f("S1", 1, 1, 3), f("S2", 1, 1, 2), f("S3", 1, 1, 3)]),
            1,
            "the smallest limit"
        );
    }

    #[test]
    fn a_store_releases_only_claims_it_made_before() {
        let t = tally(vec![f("S1", 1, 1, 3), f("S2", 1, 1, 3), f("S2", 2, -1, 3)]);
        assert_eq!((t.net, t.excess()), (1, 0));
        assert_eq!(t.stores, vec!["S1".to_string()], "S2 gave its claim back");
        // Releases of another store's claims, or beyond a store's own, count nothing.
        let t = tally(vec![
            f("S1", 1, 1, 1),
            f("S1", 2, 1, 1),
            f("S2", 3, -1, 1),
            f("S2", 4, -1, 1),
        ]);
        assert_eq!(t.net, 2);
        // Releases written before any claim are not banked against later claims.
        let t = tally(vec![f("S2", 1, -1, 1), f("S2", 2, -1, 1), f("S2", 3, 1, 1)]);
        assert_eq!(t.net, 1);
        // The order the facts arrive in does not matter; a claim and its release at the
        // same instant cancel.
        let a = tally(vec![f("S1", 5, -1, 2), f("S1", 5, 1, 2), f("S1", 6, 1, 2)]);
        let b = tally(vec![f("S1", 6, 1, 2), f("S1", 5, 1, 2), f("S1", 5, -1, 2)]);
        assert_eq!((a.net, a.clone()), (1, b));
        assert_eq!(tally(Vec::<ClaimFact<String>>::new()), Tally::default());
    }

    #[test]
    fn the_worst_case_follows_the_policy() {
        assert_eq!(worst_case(OfflinePolicy::Refuse, 1, 5, 9), 1);
        assert_eq!(worst_case(OfflinePolicy::Once, 1, 5, 9), 6);
        assert_eq!(worst_case(OfflinePolicy::Once, 3, 2, 2), 7);
        assert_eq!(worst_case(OfflinePolicy::Local, 3, 2, 1), 9);
    }

    /// A chain of stores sharing one counter, as the edge and the hub keep it: the hub's
    /// facts and holds, each store's own claims and what it learned, its offline claims
    /// not yet acknowledged.
    #[derive(Debug, Clone)]
    enum Op {
        Claim(usize),
        Sync(usize),
        Partition(usize),
        Heal(usize),
    }

    fn op(stores: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..stores).prop_map(Op::Claim),
            2 => (0..stores).prop_map(Op::Sync),
            1 => (0..stores).prop_map(Op::Partition),
            1 => (0..stores).prop_map(Op::Heal),
        ]
    }

    #[derive(Default, Clone)]
    struct Store {
        online: bool,
        /// Claims it wrote, with whether each is pushed.
        own: Vec<bool>,
        /// Its offline claims not yet acknowledged (what it tells the hub it holds).
        offline_unsynced: i64,
        /// Other stores' claims it learned at its last sync.
        learned: i64,
        /// Offline periods in which it claimed.
        periods_claimed: u32,
        claimed_this_period: bool,
    }

    proptest! {
        /// Whatever the partitions: while no claim was given offline the counter never
        /// passes the limit (online claims are held at the hub until their facts
        /// arrive, and the store's pushes may repeat); with offline claims it stays
        /// inside [`worst_case`]; once everyone has pushed (twice) every claim is
        /// counted once, no hold is left, and the excess reported is what passed.
        #[test]
        fn the_counter_never_passes_its_bound_and_counts_every_claim_once(
            limit in 1u32..4,
            policy in prop_oneof![Just(OfflinePolicy::Once), Just(OfflinePolicy::Local), Just(OfflinePolicy::Refuse)],
            ops in proptest::collection::vec(op(3), 1..80),
        ) {
            use std::collections::BTreeSet;
            let mut stores = vec![Store { online: true, ..Store::default() }; 3];
            // The hub: claim facts by (store, claim), and holds of claims it granted.
            let (mut facts, mut holds) = (BTreeSet::new(), BTreeSet::new());
            let mut ever_offline = BTreeSet::new();
            let (mut given, mut given_offline) = (0i64, 0i64);
            let push = |i: usize, s: &mut Store, facts: &mut BTreeSet<(usize, usize)>, holds: &mut BTreeSet<(usize, usize)>| {
                // Every claim the store holds, pushed ones again (a retried push).
                for n in 0..s.own.len() {
                    facts.insert((i, n));
                    holds.remove(&(i, n));
                }
                s.own.iter_mut().for_each(|p| *p = true);
                s.offline_unsynced = 0;
            };
            for op in ops {
                match op {
                    Op::Claim(i) => {
                        let s = &mut stores[i];
                        let known = Known { used: s.own.len() as i64 + s.learned, offline_unsynced: s.offline_unsynced };
                        let allowed = if s.online {
                            // What the store knows first, then the hub: its facts, its
                            // holds, and the store's offline claims it has not seen.
                            let counted = Counted {
                                used: facts.len() as i64,
                                held: holds.len() as i64,
                                unsynced: s.offline_unsynced,
                            };
                            known.used < i64::from(limit) && hub_allows(counted, limit)
                        } else {
                            offline_allows(policy, limit, known)
                        };
                        if allowed {
                            given += 1;
                            if s.online {
                                holds.insert((i, s.own.len()));
                            } else {
                                given_offline += 1;
                                s.offline_unsynced += 1;
                                ever_offline.insert(i);
                                if !s.claimed_this_period {
                                    s.claimed_this_period = true;
                                    s.periods_claimed += 1;
                                }
                            }
                            s.own.push(false);
                        }
                        if given_offline == 0 {
                            prop_assert!(given <= i64::from(limit), "online, {given} claims passed {limit}");
                        }
                    }
                    Op::Sync(i) if stores[i].online => {
                        let s = &mut stores[i];
                        push(i, s, &mut facts, &mut holds);
                        s.learned = facts.iter().filter(|(from, _)| *from != i).count() as i64;
                    }
                    Op::Sync(_) => {}
                    Op::Partition(i) => {
                        stores[i].online = false;
                        stores[i].claimed_this_period = false;
                    }
                    Op::Heal(i) => stores[i].online = true,
                }
            }
            let periods = stores.iter().map(|s| s.periods_claimed).max().unwrap_or(0);
            let bound = worst_case(policy, limit, ever_offline.len() as u32, periods);
            prop_assert!(given as u64 <= bound, "{given} claims, bound {bound}");
            for _ in 0..2 {
                for (i, s) in stores.iter_mut().enumerate() {
                    push(i, s, &mut facts, &mut holds);
                }
            }
            prop_assert_eq!(facts.len() as i64, given, "each claim counted once");
            prop_assert!(holds.is_empty(), "every hold settled by its fact");
            let t = tally(facts.iter().map(|(store, n)| ClaimFact {
                store: format!("S{store}"),
                at: *n as i64,
                units: 1,
                limit,
            }));
            prop_assert_eq!(t.excess(), (given - i64::from(limit)).max(0));
        }
    }
}
