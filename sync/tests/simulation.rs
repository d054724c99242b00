//! Deterministic simulation of the sync code that ships: each store runs
//! [`patron_sync::sender::Sender`] (as the edge's worker does), the hub judges every
//! batch with [`patron_sync::judge`] and [`patron_sync::receiver::settle`] (as its
//! ingest does), over a network that drops, duplicates, delays (hence reorders) and
//! truncates messages and partitions stores, while stores restart, the hub is restored
//! from an older copy of its database, and stores' databases are restored from older
//! copies (a new incarnation, and a refetch of the old one's facts from the hub). Only
//! storage and the transport are modelled here.
//!
//! Named invariants, checked after healing:
//! - `hub_holds_every_fact_once`: the hub holds exactly the facts that still exist
//!   anywhere (a fact lost with a store's disk before it reached the hub is gone from
//!   the expectation, nothing else), each once, with the body it was written with.
//!   One known limit is allowed and written down in docs/sync.md: when the hub was
//!   restored from an older copy and a store's database was restored too before it
//!   pushed again, the facts of the store's retired incarnation that the hub lost are
//!   not pushed again.
//! - `a_store_holds_its_own_history`: every store holds every fact of its own
//!   incarnations that the hub holds (the refetch after a restore).
//!
//! Mutants, each caught by one of them: a hub judge that applies across a gap, a
//! sender that ignores the hub's gaps (the acknowledgement), a restored store that
//! skips the refetch.

use std::collections::{BTreeMap, BTreeSet};

use patron_protocol::Origin;
use patron_sync::sender::{Next, Outcome, Sender};
use patron_sync::session::{Batch, Fact, Judgement, MAX_BATCH, Verdict, batch};
use proptest::prelude::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

/// The hub's judge as the simulation runs it (the real one, or a mutant).
type Judge = fn(&str, u64, &Batch) -> Judgement;

fn real_judge(from: &str, high: u64, b: &Batch) -> Judgement {
    patron_sync::judge(true, "hub", from, high, b)
}

/// Mutant: applies a batch that starts after a hole.
fn judge_across_gaps(from: &str, high: u64, b: &Batch) -> Judgement {
    match real_judge(from, high, b) {
        Judgement::Gap { .. } => Judgement::Apply {
            skip: 0,
            high: b.facts.last().map_or(high, |f| f.seq),
        },
        j => j,
    }
}

/// What the mutants change.
#[derive(Clone, Copy, Default)]
struct Mutants {
    judge_across_gaps: bool,
    sender_ignores_gaps: bool,
    skip_refetch: bool,
}

/// Faults of the network while unhealed, in per mille.
#[derive(Clone, Copy)]
struct Faults {
    drop: u64,
    duplicate: u64,
    truncate: u64,
    max_delay: u64,
}

enum Msg {
    /// A store's push: its batch (if any) and the highest sequence it showed.
    Push {
        from: usize,
        b: Option<Batch>,
        sent_to: u64,
    },
    /// The hub's verdict on it, with the push's `sent_to` (the store keeps that in
    /// its request; the model carries it along).
    Ack {
        to: usize,
        verdict: Option<Verdict>,
        sent_to: u64,
        incarnation: u128,
    },
}

struct InFlight {
    at: u64,
    msg: Msg,
}

/// A store's database: its own facts per incarnation, the acknowledged position it
/// persisted, and the sender resumed from it (volatile).
#[derive(Clone)]
struct Db {
    incarnation: u128,
    own: BTreeMap<u128, Vec<Fact>>,
    acked: u64,
}

struct Store {
    node: String,
    db: Db,
    backup: Option<Db>,
    sender: Sender,
    next_incarnation: u128,
}

impl Store {
    fn origin(&self) -> Origin {
        origin(&self.node, self.db.incarnation)
    }
    fn log(&self) -> &[Fact] {
        self.db
            .own
            .get(&self.db.incarnation)
            .map_or(&[], Vec::as_slice)
    }
}

fn origin(node: &str, incarnation: u128) -> Origin {
    Origin {
        node: node.into(),
        incarnation: uuid::Uuid::from_u128(incarnation),
    }
}

/// The hub's storage: per origin, the facts held in order.
type Held = BTreeMap<Origin, Vec<Fact>>;

fn hub_receive(held: &mut Held, judge: Judge, from: &str, b: &Batch) -> Verdict {
    let high = held.get(&b.origin).map_or(0, |f| f.len() as u64);
    let judged =
        patron_sync::receiver::settle(judge(from, high, b), b, |repeated| {
            let log = held.get(&b.origin);
            Ok::<_, ()>(repeated.iter().any(|f| {
                log.and_then(|l| l.get(f.seq as usize - 1)).map(|h| &h.body) != Some(&f.body)
            }))
        })
        .unwrap_or(Judgement::Refuse("storage"));
    let origin = b.origin.clone();
    match judged {
        Judgement::Refuse(reason) => Verdict::Refused {
            origin,
            reason: reason.into(),
        },
        Judgement::AlreadyHeld => Verdict::AlreadyHeld { origin, high },
        Judgement::Gap { expected } => Verdict::Gap { origin, expected },
        Judgement::Apply { skip, high } => {
            let log = held.entry(origin.clone()).or_default();
            // A mutant judge may apply across a hole: the model stores what it is told.
            for f in &b.facts[skip..] {
                if f.seq as usize > log.len() {
                    log.push(f.clone());
                }
            }
            Verdict::Applied { origin, high }
        }
    }
}

/// Runs one simulation; `Err` names the invariant that failed and how.
fn simulate(
    seed: u64,
    stores: usize,
    ticks: u64,
    faults: Faults,
    m: Mutants,
) -> Result<usize, String> {
    let mut rng = Rng(seed | 1);
    let judge: Judge = if m.judge_across_gaps {
        judge_across_gaps
    } else {
        real_judge
    };
    let mut st: Vec<Store> = (0..stores)
        .map(|i| {
            let node = format!("S{:03}", i + 1);
            let inc = (i as u128 + 1) << 32;
            Store {
                sender: Sender::new(origin(&node, inc), 0),
                node,
                db: Db {
                    incarnation: inc,
                    own: BTreeMap::new(),
                    acked: 0,
                },
                backup: None,
                next_incarnation: inc + 1,
            }
        })
        .collect();
    let mut held: Held = BTreeMap::new();
    let mut hub_backup: Held = BTreeMap::new();
    let mut net: Vec<InFlight> = Vec::new();
    let mut cut = vec![false; stores];
    let mut lost: BTreeSet<(Origin, u64)> = BTreeSet::new();
    let mut retired_unpushed: BTreeSet<(Origin, u64)> = BTreeSet::new();
    let mut created = 0usize;

    let send =
        |net: &mut Vec<InFlight>, rng: &mut Rng, now: u64, msg: Msg, f: Faults, cut: &[bool]| {
            let store = match &msg {
                Msg::Push { from, .. } => *from,
                Msg::Ack { to, .. } => *to,
            };
            if cut[store] || rng.chance(f.drop) {
                return;
            }
            let copies = if rng.chance(f.duplicate) { 2 } else { 1 };
            for _ in 0..copies {
                let msg = match &msg {
                    Msg::Push { from, b, sent_to } => {
                        let mut b = b.clone();
                        if rng.chance(f.truncate)
                            && let Some(b) = b.as_mut()
                            && b.facts.len() > 1
                        {
                            b.facts.pop(); // cut in transit: the checksum no longer matches
                        }
                        Msg::Push {
                            from: *from,
                            b,
                            sent_to: *sent_to,
                        }
                    }
                    Msg::Ack {
                        to,
                        verdict,
                        sent_to,
                        incarnation,
                    } => Msg::Ack {
                        to: *to,
                        verdict: verdict.clone(),
                        sent_to: *sent_to,
                        incarnation: *incarnation,
                    },
                };
                let at = now + 1 + rng.next() % f.max_delay.max(1);
                net.push(InFlight { at, msg });
            }
        };

    let step = |st: &mut Vec<Store>,
                held: &mut Held,
                net: &mut Vec<InFlight>,
                rng: &mut Rng,
                now: u64,
                f: Faults,
                cut: &[bool]| {
        let (due, rest): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(net).into_iter().partition(|m| m.at <= now);
        *net = rest;
        for d in due {
            match d.msg {
                Msg::Push { from, b, sent_to } => {
                    let verdict = b
                        .as_ref()
                        .map(|b| hub_receive(held, judge, &st[from].node, b));
                    let incarnation = st[from].db.incarnation;
                    send(
                        net,
                        rng,
                        now,
                        Msg::Ack {
                            to: from,
                            verdict,
                            sent_to,
                            incarnation,
                        },
                        f,
                        cut,
                    );
                }
                Msg::Ack {
                    to,
                    verdict,
                    sent_to,
                    incarnation,
                } => {
                    let s = &mut st[to];
                    if incarnation != s.db.incarnation {
                        continue; // an answer to the database before a restore
                    }
                    let mut verdicts: Vec<Verdict> = verdict.into_iter().collect();
                    if m.sender_ignores_gaps {
                        verdicts.retain(|v| !matches!(v, Verdict::Gap { .. }));
                    }
                    let last = s.log().len() as u64;
                    let outcome = s.sender.on_ack(&verdicts, sent_to, last);
                    if !matches!(outcome, Outcome::HubAhead { .. }) {
                        s.db.acked = s.sender.acked; // persisted with the change
                    }
                }
            }
        }
    };

    let push = |s: &Store, i: usize, max: usize| -> Msg {
        let log = s.log();
        let last = log.len() as u64;
        let (facts, sent_to) = match s.sender.next(last, max) {
            Next::Facts { after, max } => {
                let f: Vec<Fact> = log.iter().skip(after as usize).take(max).cloned().collect();
                let to = f.last().map_or(after, |f| f.seq);
                (f, to)
            }
            Next::Probe { seq } => (vec![log[seq as usize - 1].clone()], seq),
            Next::Nothing => (Vec::new(), 0),
        };
        Msg::Push {
            from: i,
            b: (!facts.is_empty()).then(|| batch(s.origin(), facts)),
            sent_to,
        }
    };

    for now in 0..ticks {
        for i in 0..stores {
            let s = &mut st[i];
            if rng.chance(300) {
                let o = s.origin();
                let log = s.db.own.entry(s.db.incarnation).or_default();
                let seq = log.len() as u64 + 1;
                log.push(Fact {
                    origin: o,
                    seq,
                    body: format!("{}", rng.next() % 1_000_000),
                });
                created += 1;
            }
            if rng.chance(40) {
                s.backup = Some(s.db.clone());
            }
            if rng.chance(10) {
                // Restart: the sender resumes from what was persisted.
                s.sender = Sender::new(s.origin(), s.db.acked);
            }
            // A restore the edge recognises: the copy ends before what the hub
            // acknowledged (recorded beside the database, which survives). A copy
            // newer than that is the documented limit of docs/sync.md (the store may
            // reuse numbers the hub holds: refused as a conflict, with an alert), not
            // modelled here.
            if rng.chance(4)
                && let Some(copy) = s.backup.clone()
                && (copy.own.get(&s.db.incarnation).map_or(0, Vec::len) as u64) < s.db.acked
                && copy.incarnation == s.db.incarnation
            {
                // The machine died; its database comes back from the older copy. What
                // the dead one had beyond the copy and never pushed is gone for good.
                let old = s.db.incarnation;
                let hub_has = held.get(&s.origin()).map_or(0, |f| f.len() as u64);
                let copy_has = copy.own.get(&old).map_or(0, |f| f.len() as u64);
                for f in s.log().iter().skip(hub_has.max(copy_has) as usize) {
                    lost.insert((f.origin.clone(), f.seq));
                }
                // Known limit (docs/sync.md): the copy's facts the hub does not hold —
                // possible only if the hub itself was restored from an older copy since
                // it acknowledged them — belong to an incarnation no one pushes again.
                for f in copy
                    .own
                    .get(&old)
                    .into_iter()
                    .flatten()
                    .skip(hub_has as usize)
                {
                    retired_unpushed.insert((f.origin.clone(), f.seq));
                }
                s.db = copy;
                // The restore is recognised (edge: store::incarnation): a new
                // incarnation, and the old one's facts the hub holds fetched back.
                let old_origin = origin(&s.node, old);
                s.db.incarnation = s.next_incarnation;
                s.next_incarnation += 1;
                s.db.acked = 0;
                if !m.skip_refetch
                    && let Some(theirs) = held.get(&old_origin)
                {
                    let mine = s.db.own.entry(old).or_default();
                    for f in theirs.iter().skip(mine.len()) {
                        mine.push(f.clone());
                    }
                }
                s.sender = Sender::new(s.origin(), 0);
                // The dead machine's requests died with it.
                net.retain(|m| !matches!(m.msg, Msg::Push { from, .. } | Msg::Ack { to: from, .. } if from == i));
            }
            if rng.chance(15) {
                cut[i] = !cut[i];
            }
        }
        if rng.chance(20) {
            hub_backup = held.clone();
        }
        if rng.chance(3) {
            // The hub's database comes back from an older copy. Known limit, kept out
            // of the model: facts of a retired incarnation (a store restored since)
            // that the copy lacks are not pushed again by anyone (a store pushes its
            // current incarnation only; docs/sync.md), so retired origins keep theirs.
            let current: BTreeSet<Origin> = st.iter().map(Store::origin).collect();
            let mut restored = hub_backup.clone();
            for (o, facts) in &held {
                if !current.contains(o) {
                    restored.insert(o.clone(), facts.clone());
                }
            }
            held = restored;
        }
        for (i, s) in st.iter().enumerate() {
            if rng.chance(400) {
                let max = 1 + (rng.next() % 50) as usize;
                send(&mut net, &mut rng, now, push(s, i, max), faults, &cut);
            }
        }
        step(&mut st, &mut held, &mut net, &mut rng, now, faults, &cut);
    }

    // Heal: no faults, no partitions; every store pushes until it is up to date.
    let calm = Faults {
        drop: 0,
        duplicate: 0,
        truncate: 0,
        max_delay: 1,
    };
    let cut = vec![false; stores];
    let mut now = ticks;
    for _ in 0..2_000 {
        now += 2;
        for (i, s) in st.iter().enumerate() {
            send(&mut net, &mut rng, now, push(s, i, MAX_BATCH), calm, &cut);
        }
        now += 2;
        step(&mut st, &mut held, &mut net, &mut rng, now, calm, &cut);
        let done = st.iter().all(|s| {
            let last = s.log().len() as u64;
            s.sender.acked == last && held.get(&s.origin()).map_or(0, |f| f.len() as u64) == last
        });
        if done && net.is_empty() {
            break;
        }
    }

    // hub_holds_every_fact_once
    let mut expected: BTreeMap<(Origin, u64), String> = BTreeMap::new();
    for s in &st {
        for facts in s.db.own.values() {
            for f in facts {
                expected.insert((f.origin.clone(), f.seq), f.body.clone());
            }
        }
    }
    let mut at_hub: BTreeMap<(Origin, u64), String> = BTreeMap::new();
    for facts in held.values() {
        for f in facts {
            if at_hub
                .insert((f.origin.clone(), f.seq), f.body.clone())
                .is_some()
            {
                return Err(format!(
                    "hub_holds_every_fact_once: {} {} twice",
                    f.origin, f.seq
                ));
            }
        }
    }
    // Facts of old incarnations the hub held but a store without refetch lacks are
    // the other invariant's business: compare what the stores wrote and still hold.
    for (k, body) in &expected {
        if !at_hub.contains_key(k) && retired_unpushed.contains(k) {
            continue;
        }
        if at_hub.get(k) != Some(body) {
            let s = st.iter().find(|s| s.node == k.0.node);
            return Err(format!(
                "hub_holds_every_fact_once: {} {} is {:?} at the hub, {body:?} at its store (store inc {:?}, acked {:?}, log {:?}; hub holds {:?})",
                k.0,
                k.1,
                at_hub.get(k),
                s.map(|s| s.db.incarnation),
                s.map(|s| s.sender.acked),
                s.map(|s| s.log().len()),
                held.get(&k.0).map(Vec::len)
            ));
        }
    }
    for k in at_hub.keys() {
        if !expected.contains_key(k) && !lost.contains(k) {
            // Held at the hub, known to no store and not lost: a store forgot its own.
            return Err(format!(
                "a_store_holds_its_own_history: {} {} only at the hub",
                k.0, k.1
            ));
        }
    }
    // a_store_holds_its_own_history
    for s in &st {
        for (o, facts) in &held {
            if o.node != s.node {
                continue;
            }
            let inc = o.incarnation.as_u128();
            let mine = s.db.own.get(&inc).map_or(0, Vec::len);
            if mine < facts.len() {
                return Err(format!(
                    "a_store_holds_its_own_history: {} holds {mine} of the {} facts of {o} at the hub",
                    s.node,
                    facts.len()
                ));
            }
        }
    }
    // converges: every store's sender ends with all it wrote acknowledged.
    for s in &st {
        let last = s.log().len() as u64;
        if s.sender.acked != last {
            return Err(format!(
                "converges: {} acknowledged {} of {last} after healing",
                s.node, s.sender.acked
            ));
        }
    }
    Ok(created)
}

const FAULTY: Faults = Faults {
    drop: 250,
    duplicate: 150,
    truncate: 100,
    max_delay: 12,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_shipped_sync_code_converges_under_faults(seed in any::<u64>(), stores in 2usize..5) {
        let created = simulate(seed, stores, 400, FAULTY, Mutants::default());
        prop_assert!(created.is_ok(), "{:?}", created);
        prop_assert!(created.unwrap_or(0) > 50, "the run created too few facts to mean anything");
    }
}

/// Each mutant is caught within 40 faulty runs, by the invariant it breaks.
#[test]
fn every_mutant_is_caught_by_its_invariant() {
    let cases = [
        (
            Mutants {
                judge_across_gaps: true,
                ..Mutants::default()
            },
            "hub_holds_every_fact_once",
        ),
        (
            Mutants {
                sender_ignores_gaps: true,
                ..Mutants::default()
            },
            "hub_holds_every_fact_once",
        ),
        (
            Mutants {
                skip_refetch: true,
                ..Mutants::default()
            },
            "a_store_holds_its_own_history",
        ),
    ];
    for (mutant, invariant) in cases {
        let caught = (0..40u64)
            .filter_map(|s| simulate(s * 7919 + 1, 3, 400, FAULTY, mutant).err())
            .find(|e| e.starts_with(invariant));
        assert!(
            caught.is_some(),
            "a mutant breaking {invariant} passed 40 faulty runs"
        );
    }
}

/// With a perfect network and no restores of the hub the same code converges too.
#[test]
fn a_calm_network_converges() {
    let calm = Faults {
        drop: 0,
        duplicate: 0,
        truncate: 0,
        max_delay: 1,
    };
    let r = simulate(42, 3, 200, calm, Mutants::default());
    assert!(r.is_ok(), "{r:?}");
}
