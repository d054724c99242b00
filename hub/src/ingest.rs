//! Ingest rules: what the hub accepts from a store's push and what each fact changes
//! besides the log. Every fact is parsed once, here, before the push takes the writer;
//! storage only writes what these rules produced. Pure (no storage), so the rules are
//! unit-tested without SQL.

use patron_domain::fact::Auth;
use patron_domain::{Entry, Kind};
use patron_sync::profile::{ProfileOp, ops_of, stamp_of};
use patron_sync::session::Batch;

use crate::keyring::{Generation, HeldKey, Keyring, Opened};

/// The hub's node name in sync messages.
pub const HUB_NODE: &str = "hub";

/// Profile stamps further ahead of the hub's clock than this are clamped to it: a store
/// whose clock runs fast must not win every later edit for as long as it is ahead.
pub const MAX_CLOCK_AHEAD_MS: i64 = 60_000;

/// A batch of store `store`'s push, typed: each fact parsed and checked once, with its
/// projections. `Err` says which fact refuses the batch whole, and why. `ahead` grows to
/// the furthest a profile stamp of the batch was ahead of `now` (it was clamped).
pub fn type_batch(
    store: &str,
    keys: Option<Keys<'_>>,
    b: &Batch,
    now: i64,
    ahead: &mut i64,
) -> Result<Vec<TypedFact>, String> {
    b.facts
        .iter()
        .map(|f| {
            let entry = Entry::parse(&f.body).map_err(|e| format!("fact {}: {e}", f.seq))?;
            type_fact(store, keys, entry, now, ahead).map_err(|e| format!("fact {}: {e}", f.seq))
        })
        .collect()
}

/// The hub's keys and the keys the pushing store may hold: how the hub reads the
/// phone a registration seals.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// The hub's keys.
    pub ring: &'a Keyring,
    /// The newest generation of its own keys the store may have written under
    /// (offered to it); [`crate::keyring::CHAIN`] for a store only ever handed the
    /// chain's keys.
    pub upto: Generation,
}

/// One fact of store `store`, typed, with what it changes besides the log.
pub fn type_fact(
    store: &str,
    keys: Option<Keys<'_>>,
    entry: Entry,
    now: i64,
    ahead: &mut i64,
) -> Result<TypedFact, &'static str> {
    // Only the hub merges members: a store's merge would alias anyone.
    if entry.kind() == Kind::MemberMerged {
        return Err("only the hub merges members");
    }
    let member = entry.member.map(|m| m.to_string());
    let profile = match &member {
        Some(_) => profile_ops(&entry, store, now, ahead),
        None => Vec::new(),
    };
    let (registered, key) = match (&member, entry.detail.phone_index()) {
        (Some(m), Some(idx)) => match keys.and_then(|k| open_keys(store, k, &entry)) {
            // The index the hub computes from the phone itself, whatever the fact says.
            Some(o) => (Some((m.clone(), o.chain_index)), Some(o.held)),
            // Not opened: a member registered before its store enrolled (under keys of
            // its own; re-keyed later with the phone), a re-key from before re-keys
            // carried the phone, or a forgery. A store holding keys of its own gets its
            // index kept under its name, so it matches no other store's phone whatever
            // it claims (it may have seen the chain's index of a member registered by a
            // store that holds the chain's key). From such a store, and at a hub without
            // keys (development), the index is taken as sent.
            None => {
                let idx = idx.to_base64();
                let idx = match keys {
                    Some(Keys { upto: 1.., .. }) => format!("{store}/{idx}"),
                    _ => idx,
                };
                (Some((m.clone(), idx)), None)
            }
        },
        _ => (None, None),
    };
    Ok(TypedFact {
        // A claim the hub cannot count is quarantined (`quarantine_reason`), not a
        // refusal of the whole batch: one bad fact must not stop the store's sync.
        claim: claim_row(&entry).ok().flatten(),
        due: due_row(&entry).ok().flatten(),
        code: registered_code(&entry, true),
        referred_by: registered_code(&entry, false),
        points: points_row(&entry),
        catalogue: match &entry.detail {
            // Only a sale that says it took catalogue items has its lines read.
            patron_domain::Detail::Purchase(s) if s.catalogue.is_some() => {
                patron_domain::stock::catalogue_units(entry.body())
            }
            _ => Vec::new(),
        },
        profile,
        registered,
        key,
        entry,
    })
}

/// The member's key and phone index from a registration or re-key the hub can open.
fn open_keys(store: &str, keys: Keys<'_>, entry: &Entry) -> Option<Opened> {
    use base64::Engine;
    let (wrapped, phone) = match &entry.detail {
        patron_domain::Detail::MemberRegistered(r) => {
            (&r.wrapped_key.as_ref()?.0, r.phone.as_ref()?)
        }
        patron_domain::Detail::MemberRekeyed(r) | patron_domain::Detail::PhoneChanged(r) => {
            (&r.wrapped_key.0, r.phone.as_ref()?)
        }
        _ => return None,
    };
    let phone = base64::engine::general_purpose::STANDARD
        .decode(phone)
        .ok()?;
    keys.ring
        .open(store, keys.upto, entry.member?, wrapped, &phone)
}

/// The profile changes a fact carries, stamped by its store's hybrid logical clock
/// under the authenticated store's name (whatever the fact says); a stamp too far ahead
/// of the hub's clock is clamped, and the skew noted in `ahead`.
fn profile_ops(entry: &Entry, store: &str, now: i64, ahead: &mut i64) -> Vec<ProfileOp> {
    if !matches!(entry.kind(), Kind::MemberRegistered | Kind::MemberUpdated) {
        return Vec::new();
    }
    let mut stamp = stamp_of(&entry.detail, entry.at, store);
    let limit = (now + MAX_CLOCK_AHEAD_MS).max(0) as u64;
    if stamp.wall > limit {
        *ahead = (*ahead).max(stamp.wall as i64 - now);
        // Clamped stamps keep their order among themselves: the milliseconds beyond the
        // bound go into the counter (two edits from a fast clock: the later still wins).
        stamp.counter = u32::try_from(stamp.wall - limit).unwrap_or(u32::MAX);
        stamp.wall = limit;
    }
    ops_of(&entry.detail, &stamp)
}

/// What the authority needs of an entry that moves a member's points, if it does.
pub fn points_row(e: &Entry) -> Option<PointsRow> {
    let member = e.member?;
    if !e.moves_points() {
        return None;
    }
    let auth = e.detail.auth();
    Some(PointsRow {
        member: member.to_string(),
        at: e.at,
        txn: e.txn.to_string(),
        spend: e.spend,
        offline: auth == Some(Auth::Offline),
        lease: auth == Some(Auth::Lease),
    })
}

/// A pushed fact, typed once, with what it changes besides the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedFact {
    /// The entry.
    pub entry: patron_domain::Entry,
    /// Changes to the fact's member's profile.
    pub profile: Vec<ProfileOp>,
    /// A points movement of a member.
    pub points: Option<PointsRow>,
    /// A registration or re-key: (member, the phone's chain-wide blind index, base64).
    pub registered: Option<(String, String)>,
    /// The member's data key, when the hub could open the registration or re-key.
    pub key: Option<HeldKey>,
    /// A claim of a limited entitlement, counted chain-wide.
    pub claim: Option<ClaimRow>,
    /// A registration's own referral code, which the hub resolves chain-wide.
    pub code: Option<String>,
    /// The code a registration names as its referrer's: the only code a due of this
    /// member may be settled under.
    pub referred_by: Option<String>,
    /// A referral the store could not credit, for the hub to settle.
    pub due: Option<DueRow>,
    /// Catalogue units per SKU a sale gave (chain-wide stock; `patron_domain::stock`).
    pub catalogue: Vec<(String, i64)>,
}

/// Longest a due's points may stay valid: ten years (chain settings allow at most
/// 120 months of expiry).
const MAX_DUE_VALIDITY_MS: i64 = 3_660 * 86_400_000;

/// What the hub settles of a `referral_due` fact (`patron_domain::referral`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRow {
    /// The friend (the fact's member).
    pub friend: uuid::Uuid,
    /// The referrer's code, normalized.
    pub code: String,
    /// What the friend did: `register` or `first_purchase`.
    pub event: &'static str,
    /// The points for the referrer.
    pub points: i64,
    /// When they expire.
    pub expires_at: i64,
}

/// The due a `referral_due` fact carries, or why the hub cannot settle it (a code no
/// store writes, an unknown event, points outside 0–[`patron_domain::referral::MAX_POINTS`]).
pub fn due_row(e: &Entry) -> Result<Option<DueRow>, &'static str> {
    let (patron_domain::Detail::ReferralDue(d), Some(friend)) = (&e.detail, e.member) else {
        return Ok(None);
    };
    let code = patron_domain::referral::parse_code(&d.code)?;
    let event = match d.event.as_str() {
        "register" => "register",
        "first_purchase" => "first_purchase",
        _ => return Err("a referral due names an unknown event"),
    };
    if !(0..=patron_domain::referral::MAX_POINTS).contains(&d.points) {
        return Err("a referral due's points are out of range");
    }
    // Points that never expire, or are dead on arrival, are no store's expiry rule.
    if d.expires_at <= e.at || d.expires_at > e.at.saturating_add(MAX_DUE_VALIDITY_MS) {
        return Err("a referral due's expiry is out of range");
    }
    Ok(Some(DueRow {
        friend,
        code,
        event,
        points: d.points,
        expires_at: d.expires_at,
    }))
}

/// A registration's own referral code (`own`) or its referrer's, if it is one the hub
/// resolves.
fn registered_code(e: &Entry, own: bool) -> Option<String> {
    match &e.detail {
        patron_domain::Detail::MemberRegistered(r) => {
            let code = if own {
                &r.referral_code
            } else {
                &r.referrer_code
            };
            code.as_deref()
                .and_then(|c| patron_domain::referral::parse_code(c).ok())
        }
        _ => None,
    }
}

/// What the hub counts of a `claim` fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    /// The member (16 bytes, as the fact names them).
    pub member: [u8; 16],
    /// The claim's transaction (UUID): settles the hold of the ask that allowed it.
    pub claim: String,
    /// What, and the period.
    pub key: patron_domain::claims::ClaimKey,
    /// +1 (a claim) or −1 (a release).
    pub units: i64,
    /// The fact's time: a release cancels only its store's claims made before it.
    pub at: i64,
    /// The limit the store knew.
    pub limit: u32,
}

/// The claim a fact records, if it is a `claim`: its entitlement and period must be
/// ones stores write, and its limit within [`patron_domain::claims::MAX_LIMIT`].
pub fn claim_row(e: &Entry) -> Result<Option<ClaimRow>, &'static str> {
    let (patron_domain::Detail::Claim(c), Some(member)) = (&e.detail, e.member) else {
        return Ok(None);
    };
    let key = patron_domain::claims::ClaimKey {
        entitlement: c.entitlement.clone(),
        period: c.period.clone(),
    };
    key.validate()?;
    if c.limit == 0 || c.limit > patron_domain::claims::MAX_LIMIT {
        return Err("a claim's limit must be 1-1000");
    }
    Ok(Some(ClaimRow {
        member: *member.as_bytes(),
        claim: e.txn.to_string(),
        key,
        units: if c.release { -1 } else { 1 },
        at: e.at,
        limit: c.limit,
    }))
}

/// What the hub's authority needs of a fact that moves a member's points (the amounts
/// themselves are columns of the fact).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointsRow {
    /// The member (UUID).
    pub member: String,
    /// When.
    pub at: i64,
    /// The transaction (UUID); settles a hold for it.
    pub txn: String,
    /// Points consumed FIFO.
    pub spend: i64,
    /// The spend was authorized offline (floor limit).
    pub offline: bool,
    /// The spend was made under the store's lease.
    pub lease: bool,
}

/// The merge policy (DESIGN.md §4): a member registered under a phone index that
/// already names another member is merged into the first one registered there (in
/// ingest order); the survivor, or `None` if `registered` is that first one.
pub fn survivor<'a>(registered: &str, first_under_phone: Option<&'a str>) -> Option<&'a str> {
    first_under_phone.filter(|first| *first != registered)
}

/// The hub's own fact recording that `loser` was merged into `survivor` at `now`.
pub fn merge_fact(
    loser: uuid::Uuid,
    survivor: uuid::Uuid,
    now: i64,
) -> Result<Entry, patron_domain::fact::FactError> {
    Entry::new(
        patron_domain::Header {
            at: now,
            member: Some(loser),
            txn: uuid::Uuid::now_v7(),
            ..Default::default()
        },
        patron_domain::Detail::MemberMerged(patron_domain::fact::Merge { survivor }),
    )
}

/// Whether a store's facts re-key a member the store did not register: a re-key puts a
/// member under the chain's phone index, so a store may re-key only its own
/// registrations — one in the same facts, or one it pushed before
/// (`registered_before(member)`, looked up in the log).
pub fn rekeys_a_stranger<E>(
    facts: &[TypedFact],
    mut registered_before: impl FnMut(uuid::Uuid) -> Result<bool, E>,
) -> Result<bool, E> {
    let mut registered_here = Vec::new();
    for t in facts {
        let Some(member) = t.entry.member else {
            continue;
        };
        match t.entry.kind() {
            Kind::MemberRegistered => registered_here.push(member),
            Kind::MemberRekeyed
                if !registered_here.contains(&member) && !registered_before(member)? =>
            {
                return Ok(true);
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Bounds on what one fact of a store may carry: far above any real sale (the edge's
/// own per-sale caps are lower and configurable), low enough that a store cannot mint
/// or drain a chain's worth of points in one fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactLimits {
    /// Points one fact may earn, spend or reverse.
    pub max_points: i64,
    /// Amount (fen) one fact's qualifying spend may be, either sign.
    pub max_amount_fen: i64,
    /// Points a store's facts may credit a day, on average ([`StoreBudget`]); beyond,
    /// its earning facts are quarantined for review.
    pub max_points_per_store_day: i64,
    /// How many days' worth a store's budget holds at most.
    pub store_budget_days: i64,
}

impl Default for FactLimits {
    fn default() -> Self {
        FactLimits {
            max_points: 100_000,
            max_amount_fen: 100_000_000,
            // Ten lanes at the edge's default daily limit (200,000 points each).
            max_points_per_store_day: 2_000_000,
            store_budget_days: 3,
        }
    }
}

/// Why the hub keeps a store's fact out of every member's state (quarantine), or
/// `None` to apply it. The hub trusts a store with its own members only: those it
/// registered (`home`: the store whose fact first named the member, `None` for a
/// member the hub has not seen, whom this fact makes the store's) and those it
/// legitimately served (`holds`: the hub let it fetch them, streamed them to it, or
/// merged them with one of its own; asked only when the member is not the store's).
/// A quarantined fact is kept, in order, for review: the store's sync goes on.
pub fn quarantine_reason<E>(
    store: &str,
    t: &TypedFact,
    limits: &FactLimits,
    home: Option<&str>,
    holds: impl FnOnce() -> Result<bool, E>,
) -> Result<Option<&'static str>, E> {
    let e = &t.entry;
    if e.kind() == Kind::Claim && t.claim.is_none() {
        return Ok(Some(CLAIM_NOT_COUNTABLE));
    }
    if e.kind() == Kind::ReferralDue && t.due.is_none() {
        return Ok(Some(DUE_NOT_SETTLEABLE));
    }
    // A due's points are credited as one hub fact: the per-fact limit holds for it.
    let due = t.due.as_ref().map_or(0, |d| d.points);
    let points = [e.earn, e.spend, e.reverse, due];
    if points.iter().any(|p| *p < 0 || *p > limits.max_points) {
        return Ok(Some("points beyond the per-fact limit"));
    }
    if e.qual_spend
        .checked_abs()
        .is_none_or(|a| a > limits.max_amount_fen)
    {
        return Ok(Some("amount beyond the per-fact limit"));
    }
    if e.member.is_none() {
        return Ok(None);
    }
    match home {
        None => Ok(None),
        Some(h) if h == store => Ok(None),
        // Another store's member: a registration under their id is never legitimate;
        // any other fact is, once the hub let this store hold them.
        Some(_) if e.kind() == Kind::MemberRegistered => {
            Ok(Some("registers a member of another store"))
        }
        Some(_) if holds()? => Ok(None),
        Some(_) => Ok(Some(NOT_SERVED)),
    }
}

/// Why a fact is quarantined: a claim whose entitlement, period or limit no store
/// writes (or without a member), which the hub cannot count.
pub const CLAIM_NOT_COUNTABLE: &str = "a claim the hub cannot count";

/// Why a fact is quarantined: a phone change to a number another person is registered
/// under (registered there after the store asked the hub).
pub const PHONE_TAKEN: &str = "changes a member's phone to another member's";

/// Why a fact is quarantined: a referral due the hub cannot settle (a malformed code,
/// an unknown event, points out of range).
pub const DUE_NOT_SETTLEABLE: &str = "a referral due the hub cannot settle";

/// The hub's own facts crediting the referrer `referrer` for `due`, at `now`: the
/// claim that counts the referral (the key a store crediting it would count), then
/// the points.
pub fn referral_facts(
    referrer: uuid::Uuid,
    due: &DueRow,
    points: i64,
    now: i64,
) -> Result<[Entry; 2], patron_domain::fact::FactError> {
    let friend = hex::encode(due.friend.as_bytes());
    let key = patron_domain::claims::ClaimKey::referral(due.event, &friend);
    let header = |earn: i64, expires_at: i64| patron_domain::Header {
        at: now,
        member: Some(referrer),
        txn: uuid::Uuid::now_v7(),
        earn,
        expires_at,
        ..Default::default()
    };
    Ok([
        Entry::new(
            header(0, 0),
            patron_domain::Detail::Claim(patron_domain::fact::ClaimRecord {
                entitlement: key.entitlement,
                period: key.period,
                limit: 1,
                auth: Auth::Hub,
                release: false,
            }),
        )?,
        Entry::new(
            header(points, due.expires_at),
            patron_domain::Detail::ReferralReward(patron_domain::fact::ReferralReward {
                friend,
                event: due.event.to_string(),
            }),
        )?,
    ])
}

/// The hub's own adjustment settling one reuse of coupon `coupon` (hex id) by `member`
/// at `now`: `points` taken (FIFO; what the balance cannot cover becomes a debt that
/// the member's next earnings repay).
pub fn coupon_debt_fact(
    member: uuid::Uuid,
    coupon: &str,
    points: i64,
    now: i64,
) -> Result<Entry, patron_domain::fact::FactError> {
    use patron_domain::adjustment::{COUPON_REUSED, MADE_BY_HUB};
    Entry::new(
        patron_domain::Header {
            at: now,
            member: Some(member),
            txn: uuid::Uuid::now_v7(),
            spend: points,
            ..Default::default()
        },
        patron_domain::Detail::Adjustment(patron_domain::fact::AdjustmentRecord {
            reason: COUPON_REUSED.into(),
            reference: Some(coupon.into()),
            made_by: MADE_BY_HUB.into(),
            approved_by: None,
        }),
    )
}

/// Why a fact is quarantined: it would take its store past the points it may credit.
pub const BEYOND_STORE_BUDGET: &str = "points beyond the store's budget";

/// What a store may still credit (points) as of `at` (unix ms, the hub's clock). The
/// edge's per-lane limits bound an honest store; this bounds a store whose edge no
/// longer applies them (a rogue or stolen store PC), which the per-fact limit alone
/// would let mint 100,000 points a fact. It refills at `max_points_per_store_day` a
/// day up to `store_budget_days` days' worth, so a store back from days offline pushes
/// its backlog within budget, and a store quiet on purpose saves no more than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBudget {
    /// Points it may still credit.
    pub points: i64,
    /// When that was counted.
    pub at: i64,
}

impl FactLimits {
    /// The most a store's budget holds.
    pub fn store_budget_cap(&self) -> i64 {
        self.max_points_per_store_day
            .saturating_mul(self.store_budget_days)
    }

    /// `b` refilled to `now` (a store never counted before starts full; a clock that
    /// went back refills nothing).
    pub fn refill(&self, b: Option<StoreBudget>, now: i64) -> StoreBudget {
        let cap = self.store_budget_cap();
        let Some(b) = b else {
            return StoreBudget {
                points: cap,
                at: now,
            };
        };
        const DAY: i128 = 86_400_000;
        let rate = i128::from(self.max_points_per_store_day.max(1));
        let elapsed = i128::from(now.saturating_sub(b.at).max(0));
        let added = elapsed * rate / DAY;
        let points = i128::from(b.points) + added;
        if points >= i128::from(cap) {
            return StoreBudget {
                points: cap,
                at: b.at.max(now),
            };
        }
        // The clock moves on only by the time the whole points added took: the rest
        // carries over, so frequent pushes refill as fast as rare ones.
        let used = i64::try_from(added * DAY / rate).unwrap_or(0);
        StoreBudget {
            points: i64::try_from(points).unwrap_or(cap),
            at: b.at.saturating_add(used),
        }
    }
}

/// Judges a fact against its store's budget after the other checks: a fact already
/// quarantined (`why`) or crediting nothing spends nothing; one crediting `earn`
/// spends it, or is quarantined if the budget holds less. Whether it spent.
pub fn spend_store_budget(
    budget: &mut StoreBudget,
    why: Option<&'static str>,
    earn: i64,
) -> Result<bool, &'static str> {
    if let Some(why) = why {
        return Err(why);
    }
    if earn <= 0 {
        return Ok(false);
    }
    if earn > budget.points {
        return Err(BEYOND_STORE_BUDGET);
    }
    budget.points -= earn;
    Ok(true)
}

/// Why a registration is quarantined: it would merge into another store's member the
/// store never served, and the store's lookup budget is spent.
pub const CLAIM_BEYOND_BUDGET: &str =
    "registers the phone of another store's member beyond the store's lookup budget";

/// Whether a store's registration under a phone whose first member is `first` (home
/// `first_home`, held by the store or not) claims another store's member: the hub
/// would merge it into that member and let the store serve them, as a lookup of the
/// phone would. Such registrations are counted against the store's lookup budget.
pub fn claims_another_store_s_member(
    store: &str,
    registered: &str,
    first: &str,
    first_home: Option<&str>,
    holds: bool,
) -> bool {
    registered != first && first_home.is_some_and(|h| h != store) && !holds
}

/// Why a store may not act for a member (a fact, an authorization, a lease).
pub const NOT_SERVED: &str = "a member this store neither registered nor served";

/// Whether `store` may act for a member whose home is `home` (`None`: unknown to the
/// hub, a member the store registered and has not pushed yet) and whom the hub let it
/// hold or not (`holds`): the rule facts are judged by, for the asks that need no fact.
pub fn may_serve(store: &str, home: Option<&str>, holds: bool) -> bool {
    home.is_none_or(|h| h == store) || holds
}

/// The stream's fan-out rule for a fact of a member written by store `writer`, given
/// the stores holding that member: every other holder receives it, and the writer
/// joins the holders if it was not one (it served the member). A member no one holds
/// beyond the stores writing their facts has no holders: nothing is streamed.
pub fn fan_out<'a>(writer: &str, holders: &'a [String]) -> FanOut<'a> {
    FanOut {
        writer_joins: !holders.is_empty() && !holders.iter().any(|h| h == writer),
        send_to: holders.iter().filter(|h| *h != writer).collect(),
    }
}

/// What [`fan_out`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct FanOut<'a> {
    /// The writing store becomes a holder.
    pub writer_joins: bool,
    /// The stores whose streams receive the fact.
    pub send_to: Vec<&'a String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_protocol::Origin;
    use patron_sync::session::{Fact, batch};

    const T0: i64 = 1_764_000_000_000;
    const M: &str = "0190a000-0000-7000-8000-000000000001";
    const IDX: &str = "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";

    fn fact(seq: u64, body: String) -> Fact {
        Fact {
            origin: Origin {
                node: "S001".into(),
                incarnation: uuid::Uuid::from_u128(1),
            },
            seq,
            body,
        }
    }

    fn entry(kind: &str, extra: &str, body: &str) -> String {
        format!(
            r#"{{"kind":"{kind}","at":{T0},"member":"{M}","txn":"0190a000-0000-7000-8000-0000000000{:02x}",{extra}"body":{body}}}"#,
            extra.len() % 200
        )
    }

    fn typed(bodies: Vec<String>) -> Result<Vec<TypedFact>, String> {
        let facts = bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| fact(i as u64 + 1, b))
            .collect();
        let b = batch(
            Origin {
                node: "S001".into(),
                incarnation: uuid::Uuid::from_u128(1),
            },
            facts,
        );
        type_batch("S001", None, &b, T0, &mut 0)
    }

    #[test]
    fn each_kind_projects_what_it_changes() {
        let t = typed(vec![
            entry(
                "member_registered",
                "",
                &format!(
                    r#"{{"phone_idx":"{IDX}","name":"bmFtZQ==","consents":{{"marketing":true}}}}"#
                ),
            ),
            entry(
                "purchase",
                r#""earn":120,"expires_at":99999999999999,"spend":50,"#,
                r#"{"receipt_id":"R1","subtotal":100,"total":100,"auth":"offline"}"#,
            ),
            entry(
                "redemption",
                r#""spend":30,"#,
                r#"{"reason":"gift","auth":"lease"}"#,
            ),
            entry("coupon_claimed", "", r#"{"code":"C1"}"#),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t[0].registered, Some((M.to_string(), IDX.to_string())));
        assert_eq!(
            t[0].profile.len(),
            2,
            "name and marketing: {:?}",
            t[0].profile
        );
        assert_eq!(t[0].points, None);
        let sale = t[1].points.as_ref().unwrap_or_else(|| panic!("no points"));
        assert_eq!((sale.spend, sale.offline, sale.lease), (50, true, false));
        assert_eq!(t[1].entry.earn, 120);
        let r = t[2].points.as_ref().unwrap_or_else(|| panic!("no points"));
        assert_eq!((r.spend, r.offline, r.lease), (30, false, true));
        assert!(t[3].points.is_none() && t[3].profile.is_empty() && t[3].registered.is_none());
    }

    #[test]
    fn a_store_s_budget_refills_by_the_day_up_to_its_cap_and_holds_to_the_point() {
        let l = FactLimits {
            max_points_per_store_day: 1_000,
            store_budget_days: 3,
            ..FactLimits::default()
        };
        const DAY: i64 = 86_400_000;
        let at = |points, at| StoreBudget { points, at };
        let full = l.refill(None, 0);
        assert_eq!(full, at(3_000, 0), "a new store starts full");
        let mut b = full;
        assert_eq!(spend_store_budget(&mut b, None, 3_000), Ok(true));
        assert_eq!(b.points, 0);
        assert_eq!(
            spend_store_budget(&mut b, None, 1),
            Err(BEYOND_STORE_BUDGET)
        );
        assert_eq!(
            spend_store_budget(&mut b, None, 0),
            Ok(false),
            "crediting nothing"
        );
        assert_eq!(
            spend_store_budget(&mut b, Some("x"), 0),
            Err("x"),
            "quarantined stays"
        );
        let empty = at(0, 0);
        assert_eq!(
            l.refill(Some(empty), DAY / 2).points,
            500,
            "half a day's worth"
        );
        assert_eq!(
            l.refill(Some(empty), 30 * DAY).points,
            3_000,
            "at most the cap"
        );
        assert_eq!(
            l.refill(Some(at(100, DAY)), 0),
            at(100, DAY),
            "a clock gone back"
        );
        // Refilled every 50 ms (a point takes 86.4 s) for a day, it gains what one
        // refill a day later gives.
        let mut b = empty;
        for t in (0..=DAY).step_by(50) {
            b = l.refill(Some(b), t);
        }
        assert_eq!(b.points, 1_000, "frequent refills lose nothing");
    }

    #[test]
    fn one_bad_fact_refuses_the_batch_and_names_itself() {
        let ok = entry("coupon_claimed", "", r#"{"code":"C1"}"#);
        let bad = entry("member_rekeyed", "", &format!(r#"{{"phone_idx":"{IDX}"}}"#));
        let err = typed(vec![ok.clone(), bad]).err().unwrap_or_default();
        assert!(err.starts_with("fact 2: member_rekeyed details"), "{err}");
        let merge = entry("member_merged", "", &format!(r#"{{"survivor":"{M}"}}"#));
        let err = typed(vec![ok, merge]).err().unwrap_or_default();
        assert_eq!(err, "fact 2: only the hub merges members");
    }

    #[test]
    fn a_stamp_from_a_fast_clock_is_clamped_and_its_skew_reported() {
        let far = T0 as u64 + 3_600_000;
        let body = format!(r#"{{"name":"eA==","hlc":{{"wall":{far},"counter":0,"node":"x"}}}}"#);
        let e = Entry::parse(&entry("member_updated", "", &body)).unwrap_or_else(|e| panic!("{e}"));
        let mut ahead = 0;
        let t = type_fact("S001", None, e, T0, &mut ahead).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ahead, 3_600_000);
        let ProfileOp::Set { stamp, .. } = &t.profile[0] else {
            panic!("{:?}", t.profile)
        };
        assert_eq!(stamp.wall, (T0 + MAX_CLOCK_AHEAD_MS) as u64);
        assert_eq!(
            stamp.node, "S001",
            "the authenticated store, not the fact's"
        );
        assert!(
            stamp.counter > 0,
            "later fast edits still order after earlier ones"
        );
    }
    #[test]
    fn the_first_registration_under_a_phone_survives() {
        assert_eq!(survivor("b", Some("a")), Some("a"));
        assert_eq!(survivor("a", Some("a")), None, "the first is not merged");
        assert_eq!(survivor("a", None), None);
    }

    #[test]
    fn a_merge_fact_names_the_loser_and_the_survivor() {
        let (loser, keeper) = (uuid::Uuid::from_u128(2), uuid::Uuid::from_u128(1));
        let e = merge_fact(loser, keeper, 42).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.member, e.at, e.kind()),
            (Some(loser), 42, Kind::MemberMerged)
        );
        assert!(matches!(e.detail, patron_domain::Detail::MemberMerged(m) if m.survivor == keeper));
    }

    fn one(kind: &str, member: u128) -> TypedFact {
        let m = uuid::Uuid::from_u128(member);
        let body = match kind {
            "member_registered" => {
                r#"{"phone_idx":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#
            }
            _ => {
                r#"{"phone_idx":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","wrapped_key":"a2V5"}"#
            }
        };
        let json =
            format!(r#"{{"kind":"{kind}","at":1,"member":"{m}","txn":"{m}","body":{body}}}"#);
        let entry = Entry::parse(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        type_fact("S001", None, entry, 1, &mut 0).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_store_re_keys_only_members_it_registered() {
        let never = |_| Ok::<_, ()>(false);
        let reg_then_rekey = [one("member_registered", 1), one("member_rekeyed", 1)];
        assert_eq!(rekeys_a_stranger(&reg_then_rekey, never), Ok(false));
        let stranger = [one("member_rekeyed", 2)];
        assert_eq!(rekeys_a_stranger(&stranger, never), Ok(true));
        // Registered in an earlier push: the log says so.
        let before = |m: uuid::Uuid| Ok::<_, ()>(m == uuid::Uuid::from_u128(2));
        assert_eq!(rekeys_a_stranger(&stranger, before), Ok(false));
        // Another member's registration in the same facts does not cover it.
        let other = [one("member_registered", 3), one("member_rekeyed", 2)];
        assert_eq!(rekeys_a_stranger(&other, never), Ok(true));
    }

    #[test]
    fn a_fact_streams_to_every_other_holder_and_its_writer_joins_them() {
        let holders = vec!["S001".to_string(), "S002".to_string()];
        let f = fan_out("S003", &holders);
        assert!(f.writer_joins);
        assert_eq!(f.send_to, vec!["S001", "S002"]);
        let f = fan_out("S001", &holders);
        assert!(!f.writer_joins, "a holder writing does not join again");
        assert_eq!(f.send_to, vec!["S002"], "nobody receives their own fact");
        let f = fan_out("S001", &[]);
        assert_eq!(
            (f.writer_joins, f.send_to.len()),
            (false, 0),
            "held by no one: nothing"
        );
    }
}
