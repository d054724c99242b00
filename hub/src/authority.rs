//! The redemption authority's rules, pure: the hub sees every store's redemptions in
//! order, so a redemption it authorizes never overdraws. Spends it did not authorize
//! (offline, under the stores' floor limits) can; those overdraws are recorded as
//! debts, which the derivation makes later earnings repay first, and members who
//! redeemed offline at two stores within an hour are flagged. Storage runs these in the
//! transactions that decide (the store module) and the overdraw judgement behind the
//! ingest cursor (`projections`); the redemption module serves them.

use patron_domain::points::{Movement, derive_traced};
use patron_protocol::hub::{AuthorizeResponse, Overdraw};
use patron_sync::rights::LeasePolicy;

/// How long points stay held for an authorized sale whose fact has not arrived. The
/// store pushes a sale within ~20 ms while the hub is reachable; a hold that lapses
/// (the sale was abandoned, or the store lost the hub right after) frees the points,
/// and a spend arriving after that can overdraw (recorded as a debt).
pub const HOLD_MS: i64 = 10 * 60 * 1000;

/// The projection behind the ingest cursor that judges spends for overdraws.
pub const OVERDRAWS: &str = "overdraws";

/// Offline redemptions of one member at two stores this close together flag the member.
pub const FLAG_WINDOW_MS: i64 = 60 * 60 * 1000;

/// The spends of `member` (the survivor of any merge) that overdrew, judged over the
/// member's movements from every store in canonical order, so a spend is judged the
/// same wherever and whenever it arrived. Each is keyed by its fact: recorded twice, it
/// is one overdraw. The overdraws projection runs this behind the ingest cursor.
pub fn overdraws(member: &str, movements: Vec<(Movement, bool)>, now: i64) -> Vec<OverdrawRow> {
    let (mut movements, offline): (Vec<_>, Vec<_>) = movements.into_iter().unzip();
    let offline: std::collections::HashSet<[u8; 16]> = movements
        .iter()
        .zip(offline)
        .filter(|(_, o)| *o)
        .map(|(mv, _)| mv.txn)
        .collect();
    let mut rows = Vec::new();
    derive_traced(&mut movements, now, |mv, points| {
        rows.push(OverdrawRow {
            origin: mv.origin.to_string(),
            seq: mv.seq,
            overdraw: Overdraw {
                member: member.to_string(),
                store: mv
                    .origin
                    .split_once('/')
                    .map_or(mv.origin.to_string(), |(n, _)| n.to_string()),
                at: mv.at,
                points,
                offline: offline.contains(&mv.txn),
            },
        });
    });
    rows
}

/// How the hub leases members' points to stores unless told otherwise
/// (`patron-hub serve --lease-share-permille --lease-minutes`): half of what is free,
/// for four hours at the store (the hub counts ten minutes longer), at least 100 points.
pub const LEASE_POLICY: LeasePolicy = LeasePolicy {
    share_permille: 500,
    duration_ms: 4 * 3_600_000,
    margin_ms: 10 * 60_000,
    min_points: 100,
};

/// Points a store's claim of unsynced earns may add to a member's balance when it asks
/// to redeem, by default: a store pushes within a second while online, so a real claim
/// is one or two sales; a larger one is not taken on trust.
pub const MAX_UNSYNCED_POINTS: i64 = 5_000;

/// What a member may spend at `now`: the balance over every store's facts, derived
/// from all of them (the reference the ledger snapshots are tested against).
#[cfg(test)]
pub(crate) fn spendable(movements: &mut [Movement], now: i64) -> i64 {
    derive_traced(movements, now, |_, _| {}).balance()
}

/// Grants when the member's balance over every store's facts, plus what the asking
/// store has not synced, less the points held for other sales and by leases, plus what
/// the store may use of its own lease, covers the points. Free points go first; the
/// rest comes out of the store's lease.
///
/// `balance` is the member's balance at `hold.now` over every store's facts
/// ([`spendable`] over the movements, or the same from the member's ledger snapshot).
pub(crate) fn decide(balance: i64, held: i64, lease_usable: i64, hold: &Hold) -> AuthorizeResponse {
    let free = balance.saturating_add(hold.unsynced).saturating_sub(held);
    let available = free.saturating_add(lease_usable);
    let granted = hold.points <= available;
    AuthorizeResponse {
        granted,
        available,
        lease_used: if granted {
            hold.points
                .saturating_sub(free.max(0))
                .clamp(0, lease_usable)
        } else {
            0
        },
        reserved: Vec::new(),
    }
}

/// Points a store asks the hub to hold for a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The member (UUID) as asked: the store resolves it to the member it was merged
    /// into, in the transaction that decides.
    pub member: String,
    /// The sale (UUID).
    pub txn: String,
    /// The store asking.
    pub store: String,
    /// Points.
    pub points: i64,
    /// What the asking store's unsynced facts add to the member's balance.
    pub unsynced: i64,
    /// What the asking store set aside of its lease for this ask.
    pub lease_left: i64,
    /// Now (unix ms): holds that expired by then no longer count.
    pub now: i64,
    /// When this hold lapses if its fact has not arrived.
    pub until: i64,
}

/// A claim a store asks the hub to count (`POST /v1/claims`), checked and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHold {
    /// The member (UUID) as asked; storage resolves the survivor of any merge in the
    /// transaction that decides.
    pub member: String,
    /// The claim (UUID): the transaction of the `claim` fact that settles the hold.
    pub claim: String,
    /// What is claimed, and the period.
    pub key: patron_domain::claims::ClaimKey,
    /// The store asking.
    pub store: String,
    /// The limit the store knows.
    pub limit: u32,
    /// The store's claims of the counter the hub has not acknowledged.
    pub unsynced: i64,
    /// Now (unix ms): holds that lapsed by then no longer count.
    pub now: i64,
    /// When this hold lapses if its fact has not arrived.
    pub until: i64,
}

/// Grants a claim when what the hub counts stays under the asking store's limit (the
/// rule set it runs). Not the smallest any claim carried: a rogue store could then
/// close a member's counter at every store with one claim of limit 1; a store that
/// raises its own limit gets no more than its offline claims would give it, and the
/// over-claim report judges against the smallest limit.
pub fn decide_claim(
    counted: patron_domain::claims::Counted,
    limit: u32,
) -> patron_protocol::hub::ClaimResponse {
    patron_protocol::hub::ClaimResponse {
        granted: patron_domain::claims::hub_allows(counted, limit),
        used: counted.total(),
        limit,
    }
}

/// An overdrawing redemption found after an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdrawRow {
    /// The fact: origin label (`node/incarnation`) and sequence.
    pub origin: String,
    /// Its sequence.
    pub seq: i64,
    /// What the report shows.
    pub overdraw: patron_protocol::hub::Overdraw,
}

/// An offline spend of a member seen at a store (when, the writing store's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineSpend {
    /// The store.
    pub store: String,
    /// When.
    pub at: i64,
}

/// A member flagged for offline spends at two stores within the flag window, the
/// earlier first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagRow {
    /// The earlier spend.
    pub first: OfflineSpend,
    /// The later one.
    pub second: OfflineSpend,
}

/// The flag rule: an offline spend at `spend.store` flags its member with every
/// offline spend of theirs at another store within `window_ms` of it (either side),
/// ordered earlier first. Spends at the same store never flag (the store's own floor
/// limit bounds those).
pub fn offline_flags(
    spend: &OfflineSpend,
    others: &[OfflineSpend],
    window_ms: i64,
) -> Vec<FlagRow> {
    if window_ms <= 0 {
        return Vec::new();
    }
    others
        .iter()
        .filter(|o| o.store != spend.store && o.at.abs_diff(spend.at) <= window_ms.unsigned_abs())
        .map(|o| {
            let (first, second) = if o.at <= spend.at {
                (o.clone(), spend.clone())
            } else {
                (spend.clone(), o.clone())
            };
            FlagRow { first, second }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;

    fn mv(seq: i64, earn: i64, spend: i64, txn: u8) -> Movement {
        Movement {
            origin: "S001/x".into(),
            seq,
            at: T0 + seq,
            txn: [txn; 16],
            earn,
            expires_at: T0 + 1_000_000,
            available_at: 0,
            spend,
            reverse: 0,
            reverse_lot: None,
        }
    }

    fn hold(points: i64, unsynced: i64) -> Hold {
        Hold {
            member: "m".into(),
            txn: "t".into(),
            store: "S001".into(),
            points,
            unsynced,
            lease_left: 0,
            now: T0 + 100,
            until: T0 + 100 + HOLD_MS,
        }
    }

    /// Granted exactly up to the balance, plus the store's unsynced points, less what
    /// is held for other sales; the lease pays only what free points cannot.
    #[test]
    fn an_authorization_is_granted_exactly_up_to_what_is_free() {
        let b = spendable(&mut [mv(1, 1_000, 0, 1), mv(2, 0, 300, 2)], T0 + 100);
        assert_eq!(b, 700);
        assert!(decide(b, 0, 0, &hold(700, 0)).granted);
        assert!(!decide(b, 0, 0, &hold(701, 0)).granted);
        assert!(decide(b, 0, 0, &hold(751, 51)).granted);
        let r = decide(b, 200, 0, &hold(600, 0));
        assert_eq!((r.granted, r.available), (false, 500));
        let r = decide(100, 0, 50, &hold(130, 0));
        assert_eq!((r.granted, r.lease_used), (true, 30));
        assert_eq!(
            spendable(&mut [mv(1, 100, 0, 1), mv(2, 0, 40, 2)], T0 + 10),
            60
        );
    }

    /// A spend beyond the balance is an overdraw of the difference, keyed by its fact,
    /// marked offline when it was; spends within the balance are not.
    #[test]
    fn a_spend_past_the_balance_is_an_overdraw_of_the_difference() {
        let rows = overdraws(
            "m",
            vec![
                (mv(1, 500, 0, 1), false),
                (mv(2, 0, 400, 2), false),
                (mv(3, 0, 300, 3), true),
            ],
            T0 + 10,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].seq, rows[0].overdraw.points), (3, 200));
        assert!(rows[0].overdraw.offline);
        assert_eq!(rows[0].overdraw.store, "S001");
        let none = overdraws(
            "m",
            vec![(mv(1, 500, 0, 1), false), (mv(2, 0, 500, 2), true)],
            T0,
        );
        assert!(none.is_empty());
    }
    #[test]
    fn offline_spends_at_two_stores_within_the_window_flag_earlier_first() {
        let at = |store: &str, at: i64| OfflineSpend {
            store: store.into(),
            at,
        };
        let now = at("S002", 10_000);
        let others = [
            at("S001", 9_000),  // earlier, inside
            at("S003", 10_500), // later, inside
            at("S002", 9_999),  // same store: never
            at("S004", 100),    // outside
            at("S005", 11_000), // exactly at the edge: inside
        ];
        let flags = offline_flags(&now, &others, 1_000);
        let pairs: Vec<_> = flags
            .iter()
            .map(|f| (f.first.store.as_str(), f.second.store.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![("S001", "S002"), ("S002", "S003"), ("S002", "S005")]
        );
        assert!(
            offline_flags(&now, &others, 0).is_empty(),
            "no window, no flags"
        );
    }
}
