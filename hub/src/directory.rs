//! The directory: members across the chain — fetched by phone for a store that does
//! not hold them (within a per-store budget), their merged profiles and their
//! activity.

use std::sync::Arc;

use patron_sync::pull::{FetchedMember, MemberFetch, MemberKeys};
use patron_web::rate::Buckets;

use crate::clock::Clock;
use crate::error::HubError;
use crate::keyring::{CHAIN, Keyring};
use crate::store::{HubStore, StoreRow};

/// Facts per page of a member fetch: most members' whole history, in one round trip.
pub const FETCH_PAGE: usize = 2_000;

/// Member fetches a store may make per minute by default. Any enrolled store can read
/// any member by phone index, so one that fetches far more than its cashiers could look
/// up (an enumeration) is held back; a busy store's lookups and background refreshes
/// stay far below it. A store may use a whole minute's budget at once.
pub const DEFAULT_FETCHES_PER_MINUTE: u32 = 600;

/// Whether `phone` is a mainland mobile number as stores normalize it (11 digits,
/// `1[3-9]…`): the form the chain's index is computed over.
fn normalized_phone(phone: &str) -> bool {
    let b = phone.as_bytes();
    b.len() == 11 && b.iter().all(u8::is_ascii_digit) && b[0] == b'1' && b[1] >= b'3'
}

/// Members across stores.
pub struct Directory {
    store: Arc<dyn HubStore>,
    now: Clock,
    /// Member fetches a store may make per minute (0: no limit).
    fetches_per_minute: u32,
    /// Each store's fetch budget, a minute's worth. In this process only (a
    /// single-process limit: docs/hub.md).
    fetch_budgets: Buckets<String>,
    /// The member keys: phones asked for are indexed under the chain's key, and the
    /// members found are keyed for the asking store.
    keyring: Option<Arc<Keyring>>,
}

impl Directory {
    /// The directory over `store`, with the default fetch budget.
    pub fn new(store: Arc<dyn HubStore>, now: Clock) -> Self {
        Self {
            store,
            now,
            fetches_per_minute: DEFAULT_FETCHES_PER_MINUTE,
            fetch_budgets: Buckets::per_minute(DEFAULT_FETCHES_PER_MINUTE),
            keyring: None,
        }
    }

    /// Indexes and translates members' keys with `ring`.
    pub fn set_keyring(&mut self, ring: Arc<Keyring>) {
        self.keyring = Some(ring);
    }

    /// Lets each store fetch `per_minute` members a minute (0: no limit).
    pub fn set_fetch_limit(&mut self, per_minute: u32) {
        self.fetches_per_minute = per_minute;
        self.fetch_budgets = Buckets::per_minute(per_minute);
    }

    fn now(&self) -> i64 {
        (self.now)()
    }

    /// Takes one fetch from `store`'s budget (a token bucket holding a minute's worth,
    /// refilled continuously); `false` if it is spent.
    fn take_fetch(&self, store: &str) -> bool {
        self.fetch_budgets
            .take(&store.to_string(), self.now())
            .is_ok()
    }

    /// Whole lookups left in `store`'s budget now (`u32::MAX` without a limit).
    pub(crate) fn fetches_left(&self, store: &str) -> u32 {
        self.fetch_budgets.left(&store.to_string(), self.now())
    }

    /// Charges `n` lookups to `store`'s budget (registrations that claimed another
    /// store's member: they give the store what a lookup would).
    pub(crate) fn charge_fetches(&self, store: &str, n: u32) {
        self.fetch_budgets.charge(&store.to_string(), n, self.now());
    }

    /// Every fact of the members registered under a phone, for a store that does not
    /// hold them (the cashier looked the phone up there), a page at a time.
    pub fn fetch_member(
        &self,
        store: &StoreRow,
        req: &MemberFetch,
    ) -> Result<FetchedMember, HubError> {
        use base64::Engine;
        if store.revoked {
            return Err(HubError::Revoked(store.store_id.clone()));
        }
        // The chain-wide index: the hub's own of the phone, if it holds the keys and
        // was given the phone; else the index the store sent, which only a store holding
        // the chain's key can have computed (stores enrolled before keys were per store).
        let phone_idx = match (&self.keyring, &req.phone) {
            (Some(ring), Some(phone)) => {
                if !normalized_phone(phone) {
                    return Err(HubError::Invalid(
                        "phone: 11 digits of a mainland mobile number, normalized".into(),
                    ));
                }
                ring.chain_index(phone)
            }
            (Some(_), None) if store.member_keys != Some(CHAIN) => {
                return Err(HubError::Invalid(
                    "a store holding keys of its own fetches a member by phone".into(),
                ));
            }
            _ => req.phone_idx.clone(),
        };
        let valid = base64::engine::general_purpose::STANDARD
            .decode(&phone_idx)
            .is_ok_and(|b| b.len() == 32);
        if !valid {
            return Err(HubError::Invalid(
                "phone_idx must be a 32-byte blind index in base64".into(),
            ));
        }
        if !self.take_fetch(&store.store_id) {
            tracing::warn!(store = %store.store_id, "member fetch refused: over the store's budget");
            return Err(HubError::FetchLimit {
                per_minute: self.fetches_per_minute,
            });
        }
        let (facts, upto, more) =
            self.store
                .member_facts_by_phone(&store.store_id, &phone_idx, req.after, FETCH_PAGE)?;
        let keys = self.keys_for(store, facts.iter())?;
        // An audit trail of which store read which member's facts (the index is a keyed
        // hash, not the phone).
        tracing::info!(store = %store.store_id, facts = facts.len(), keys = keys.len(), "member fetched");
        Ok(FetchedMember {
            facts,
            upto,
            more,
            keys,
        })
    }

    /// The keys, under `store`'s own, of the members whose registration or re-key is
    /// among `facts`: what lets the store read a member another store registered. None
    /// for a hub without keys, or members whose keys the hub never learnt (registered
    /// before their store enrolled and not re-keyed yet).
    pub(crate) fn keys_for<'a>(
        &self,
        store: &StoreRow,
        facts: impl Iterator<Item = &'a patron_sync::session::Fact>,
    ) -> Result<Vec<MemberKeys>, HubError> {
        let Some(ring) = self.keyring.as_ref().filter(|_| !store.revoked) else {
            return Ok(Vec::new());
        };
        let Some(generation) = store.member_keys else {
            return Ok(Vec::new());
        };
        let mut members: Vec<uuid::Uuid> = facts
            .filter_map(|f| patron_domain::Entry::parse(&f.body).ok())
            .filter(|e| {
                matches!(
                    e.kind(),
                    patron_domain::Kind::MemberRegistered
                        | patron_domain::Kind::MemberRekeyed
                        | patron_domain::Kind::PhoneChanged
                )
            })
            .filter_map(|e| e.member)
            .collect();
        members.sort_unstable();
        members.dedup();
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let held = self.store.held_keys(&members)?;
        Ok(held
            .iter()
            .filter_map(|k| {
                let got = ring.deliver(&store.store_id, generation, k);
                if got.is_none() {
                    tracing::error!(member = %k.member, "a held member key does not open");
                }
                got
            })
            .collect())
    }

    /// A member's profile as merged from every store's facts.
    pub fn profile(&self, member: &str) -> Result<Option<patron_sync::Profile>, HubError> {
        Ok(self.store.profile(member)?)
    }

    /// A member's activity over every id merged into them, as far as the activity
    /// projection has folded (`None`: no fact of theirs folded yet).
    pub fn activity(&self, member: &str) -> Result<Option<crate::activity::Activity>, HubError> {
        if uuid::Uuid::parse_str(member).is_err() {
            return Err(HubError::Invalid(format!("{member:?} is not a member id")));
        }
        let rows = self.store.activity_rows(member)?;
        Ok((!rows.is_empty()).then(|| {
            rows.iter()
                .fold(crate::activity::Activity::default(), |mut a, r| {
                    a.combine(r);
                    a
                })
        }))
    }
}
