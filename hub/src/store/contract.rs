//! The storage contract: what every [`HubStore`] backend must do, as tests written
//! against the traits only. The SQLite backend runs it (`sqlite::tests`); the
//! PostgreSQL backend will run the same suite. Each check names the rule it guards.

use patron_protocol::Origin;
use patron_protocol::hub::SyncReport;
use patron_sync::session::{Batch, Fact, Judgement, batch};

use super::{Hold, HubStore, IncomingBatch, IngestJob, NewStore, StoreError, TypedFact};

const T0: i64 = 1_764_000_000_000;

/// Runs every check against fresh stores from `open`.
pub fn run_all<S: HubStore>(open: impl Fn() -> S) {
    stores_enroll_once_and_authenticate_by_credential(&open());
    the_log_applies_in_order_refuses_gaps_and_holds_each_fact_once(&open());
    an_authorization_holds_points_until_its_sale_arrives(&open());
    a_phone_registered_twice_is_one_member(&open());
    a_stores_stream_carries_its_members_and_stops_at_release(&open());
    documents_and_their_sync_states_round_trip(&open());
    a_projection_step_folds_what_follows_its_position_once(&open());
    an_authority_transaction_keeps_all_of_its_writes_or_none(&open());
}

fn store(s: &dyn HubStore, id: &str) {
    s.add_store(&NewStore {
        store_id: id,
        name: id,
        ring: "all",
        enroll_hash: [id.as_bytes()[id.len() - 1]; 32],
        enroll_expires_at: T0 + 60_000,
        now: T0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    s.enroll(
        &[id.as_bytes()[id.len() - 1]; 32],
        id,
        &[id.as_bytes()[id.len() - 1] ^ 0xff; 32],
        Some(crate::keyring::CHAIN),
        T0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn origin(node: &str) -> Origin {
    Origin {
        node: node.into(),
        incarnation: uuid::Uuid::from_u128(1),
    }
}

fn member(n: u8) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + u128::from(n))
}

/// A fact of `node` at `seq`: a registration under phone index `[phone; 32]` when
/// `phone` is set, else a sale earning `earn` (and spending `spend`).
fn fact(node: &str, seq: u64, m: u8, phone: Option<u8>, earn: i64, spend: i64) -> Fact {
    use base64::Engine;
    let mut e = match phone {
        Some(p) => serde_json::json!({"kind": "member_registered", "at": T0 + seq as i64,
            "member": member(m), "txn": uuid::Uuid::from_u128(u128::from(seq) << 8 | u128::from(m)),
            "body": {"phone_idx": base64::engine::general_purpose::STANDARD.encode([p; 32])}}),
        None => serde_json::json!({"kind": "purchase", "at": T0 + seq as i64, "member": member(m),
            "txn": uuid::Uuid::from_u128(u128::from(seq) << 8 | u128::from(m) | 1 << 100),
            "body": {"receipt_id": format!("R{seq}"), "subtotal": 100, "total": 100}}),
    };
    if earn > 0 {
        e["earn"] = earn.into();
        e["expires_at"] = (T0 + 1_000_000_000).into();
    }
    if spend > 0 {
        e["spend"] = spend.into();
    }
    Fact {
        origin: origin(node),
        seq,
        body: e.to_string(),
    }
}

fn push(s: &dyn HubStore, node: &str, facts: Vec<Fact>) -> Vec<super::Ingested> {
    let b: Batch = batch(origin(node), facts);
    let mut ahead = 0;
    let typed: Result<Vec<TypedFact>, String> =
        crate::ingest::type_batch(node, None, &b, T0, &mut ahead);
    s.ingest(IngestJob {
        store_id: node.into(),
        report: SyncReport {
            origin: Some(origin(node)),
            last_seq: b.facts.last().map_or(0, |f| f.seq),
            ..Default::default()
        },
        batches: vec![IncomingBatch {
            checked: patron_sync::session::check(true, "hub", node, &b),
            batch: b,
            typed,
        }],
        judge: patron_sync::session::place,
        flag_window_ms: crate::authority::FLAG_WINDOW_MS,
        limits: crate::ingest::FactLimits::default(),
        quarantine_all: None,
        claim_budget: u32::MAX,
        now: T0,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A store enrolls once with its secret; its credential finds it; nothing else does.
fn stores_enroll_once_and_authenticate_by_credential(s: &dyn HubStore) {
    store(s, "S001");
    let again = s.enroll(&[b'1'; 32], "S001", &[7; 32], None, T0);
    assert!(matches!(again, Err(StoreError::Enrollment(_))), "{again:?}");
    // Referral codes carry the store id in upper case: `s001` would share S001's codes.
    for id in ["S001", "s001"] {
        let dup = s.add_store(&NewStore {
            store_id: id,
            name: "x",
            ring: "all",
            enroll_hash: [9; 32],
            enroll_expires_at: T0 + 60_000,
            now: T0,
        });
        assert!(
            matches!(dup, Err(StoreError::StoreExists(_))),
            "{id}: {dup:?}"
        );
    }
    let found = s
        .store_by_credential(&[b'1' ^ 0xff; 32])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        found.map(|r| (r.store_id, r.member_keys)),
        Some(("S001".into(), Some(crate::keyring::CHAIN)))
    );
    assert_eq!(s.store_by_credential(&[7; 32]).ok().flatten(), None);
    // Enrolled again (a rotated credential), a store keeps the member keys it was
    // handed first: its members are wrapped under them.
    s.issue_enrollment("S001", &[8; 32], T0 + 60_000, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let row = s
        .enroll(&[8; 32], "S001", &[9; 32], Some(1), T0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row.member_keys, Some(crate::keyring::CHAIN));
    let found = s
        .store_by_credential(&[9; 32])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        found.and_then(|r| r.member_keys),
        Some(crate::keyring::CHAIN)
    );
    // Rotations offer the next generation; a store holds one only once offered; a
    // store holding the chain's keys moves to its own first generation.
    assert_eq!(s.offer_keys("S001").ok().flatten(), Some(1));
    assert_eq!(s.offer_keys("S001").ok().flatten(), Some(2));
    assert_eq!(s.offer_keys("S404").ok().flatten(), None);
    let held = |id: &str| {
        s.list_stores(T0)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .find(|r| r.store_id == id)
            .map(|r| (r.key_generation, r.key_offered))
    };
    assert_eq!(held("S001"), Some((Some(crate::keyring::CHAIN), Some(2))));
    s.note_key_generation("S001", 3)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        held("S001"),
        Some((Some(crate::keyring::CHAIN), Some(2))),
        "never offered"
    );
    s.note_key_generation("S001", 2)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held("S001"), Some((Some(2), None)));
    for older in [1, crate::keyring::CHAIN] {
        s.note_key_generation("S001", older)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(held("S001"), Some((Some(2), None)), "never back to {older}");
    }
    // A store never handed keys gets those it is enrolled with.
    s.add_store(&NewStore {
        store_id: "S002",
        name: "x",
        ring: "all",
        enroll_hash: [10; 32],
        enroll_expires_at: T0 + 60_000,
        now: T0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let row = s
        .enroll(&[10; 32], "S002", &[11; 32], Some(1), T0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row.member_keys, Some(1));
    let list = s.list_stores(T0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| s.enrolled));
    assert_eq!(s.store_counts().ok(), Some((2, 2)));
    s.add_store(&NewStore {
        store_id: "S009",
        name: "not enrolled yet",
        ring: "all",
        enroll_hash: [42; 32],
        enroll_expires_at: T0 + 60_000,
        now: T0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.store_counts().ok(),
        Some((3, 2)),
        "three stores, two enrolled"
    );
}

/// Facts apply in sequence: a batch continuing the origin applies, one resent is held
/// already (not twice), one past a gap is refused with where to resume.
fn the_log_applies_in_order_refuses_gaps_and_holds_each_fact_once(s: &dyn HubStore) {
    store(s, "S001");
    let first = vec![
        fact("S001", 1, 1, Some(1), 0, 0),
        fact("S001", 2, 1, None, 100, 0),
    ];
    let r = push(s, "S001", first.clone());
    assert!(matches!(r[0].judgement, Judgement::Apply { .. }), "{r:?}");
    assert_eq!(s.high(&origin("S001")).ok(), Some(2));
    let r = push(s, "S001", first.clone());
    assert_eq!(r[0].judgement, Judgement::AlreadyHeld);
    let r = push(s, "S001", vec![fact("S001", 4, 1, None, 5, 0)]);
    assert_eq!(r[0].judgement, Judgement::Gap { expected: 3 });
    assert_eq!(s.fact_count().ok(), Some(2));
    assert_eq!(s.read(&origin("S001"), 0, 10).ok(), Some(first));
    let movements = s
        .movements(&member(1).to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(movements.iter().map(|(m, _)| m.earn).sum::<i64>(), 100);
}

/// Two stores asking for the same points never both get them: a hold counts until its
/// sale arrives; the same sale asked again is granted again.
fn an_authorization_holds_points_until_its_sale_arrives(s: &dyn HubStore) {
    store(s, "S001");
    push(
        s,
        "S001",
        vec![
            fact("S001", 1, 1, Some(1), 0, 0),
            fact("S001", 2, 1, None, 500, 0),
        ],
    );
    let ask = |txn: u128, points: i64| {
        s.authorize(
            Hold {
                member: member(1).to_string(),
                txn: uuid::Uuid::from_u128(txn).to_string(),
                store: "S001".into(),
                points,
                unsynced: 0,
                lease_left: 0,
                now: T0 + 10,
                until: T0 + 600_000,
            },
            crate::authority::decide,
        )
        .and_then(super::PendingAnswer::wait_blocking)
        .unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(ask(1, 400).granted);
    let second = ask(2, 400);
    assert_eq!((second.granted, second.available), (false, 100));
    assert!(ask(1, 400).granted, "the same sale asked again");
}

/// The second registration of a phone is merged into the first: both ids stand for the
/// first member, and a fetch by phone returns both members' facts.
fn a_phone_registered_twice_is_one_member(s: &dyn HubStore) {
    use base64::Engine;
    store(s, "S001");
    store(s, "S002");
    push(s, "S001", vec![fact("S001", 1, 1, Some(9), 0, 0)]);
    let r = push(s, "S002", vec![fact("S002", 1, 2, Some(9), 0, 0)]);
    assert_eq!(r[0].merged.len(), 1, "{r:?}");
    assert_eq!(
        s.root_member(&member(2).to_string()).ok(),
        Some(member(1).to_string())
    );
    assert_eq!(
        s.root_member(&member(1).to_string()).ok(),
        Some(member(1).to_string())
    );
    let idx = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let (facts, _, more) = s
        .member_facts_by_phone("S003", &idx, 0, 100)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!more);
    assert_eq!(facts.len(), 3, "two registrations and the merge");
}

/// A fact of a member reaches the other stores holding them, in position order, and
/// stops reaching one that released them.
fn a_stores_stream_carries_its_members_and_stops_at_release(s: &dyn HubStore) {
    use base64::Engine;
    store(s, "S001");
    store(s, "S002");
    push(s, "S001", vec![fact("S001", 1, 1, Some(1), 0, 0)]);
    let idx = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    s.member_facts_by_phone("S002", &idx, 0, 100)
        .unwrap_or_else(|e| panic!("{e}"));
    push(
        s,
        "S001",
        vec![
            fact("S001", 2, 1, None, 10, 0),
            fact("S001", 3, 1, None, 20, 0),
        ],
    );
    let read = s.stream("S002", 0, 100).unwrap_or_else(|e| panic!("{e}"));
    let seqs: Vec<u64> = read.facts.iter().map(|(_, f)| f.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    assert!(read.facts.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(read.facts.last().map(|(p, _)| *p), Some(read.end));
    assert!(
        s.stream("S001", 0, 100)
            .map(|r| r.facts.is_empty())
            .unwrap_or(false)
    );
    s.release("S002", &[*member(1).as_bytes()], read.end)
        .unwrap_or_else(|e| panic!("{e}"));
    push(s, "S001", vec![fact("S001", 4, 1, None, 30, 0)]);
    let after = s
        .stream("S002", read.end, 100)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(after.facts.is_empty(), "released: {after:?}");
    // Unacknowledged positions older than the cutoff are forgotten, and the horizon
    // moves past them; nothing younger is.
    s.member_facts_by_phone("S002", &idx, 0, 100)
        .unwrap_or_else(|e| panic!("{e}"));
    push(s, "S001", vec![fact("S001", 5, 1, None, 40, 0)]);
    assert_eq!(
        s.expire_streams(T0).ok(),
        Some(0),
        "received at T0: not before T0"
    );
    // Never acknowledged by S002: facts 2 and 3 (before its release) and fact 5.
    assert_eq!(s.expire_streams(T0 + 1).ok(), Some(3));
    let expired = s.stream("S002", 0, 100).unwrap_or_else(|e| panic!("{e}"));
    assert!(expired.facts.is_empty());
    assert_eq!(expired.horizon, expired.end);
}

/// What is saved is what is loaded, per document and per peer.
fn documents_and_their_sync_states_round_trip(s: &dyn HubStore) {
    assert_eq!(s.load_doc("ring:all").ok(), Some(None));
    s.save_doc("ring:all", b"one", T0)
        .unwrap_or_else(|e| panic!("{e}"));
    s.save_doc("ring:all", b"two", T0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.load_doc("ring:all").ok(), Some(Some(b"two".to_vec())));
    s.save_doc_state("ring:all", "S001", b"s1")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.load_doc_state("ring:all", "S001").ok(),
        Some(Some(b"s1".to_vec()))
    );
    assert_eq!(s.load_doc_state("ring:all", "S002").ok(), Some(None));
}

/// A projection behind the cursor folds each member fact once, in steps of any size,
/// stops at the end it read, and starts over after a reset.
fn a_projection_step_folds_what_follows_its_position_once(s: &dyn HubStore) {
    store(s, "S001");
    let fold = crate::activity::fold;
    let empty = s.step_activity(10, fold).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((empty.folded, empty.position, empty.end), (0, 0, 0));
    push(
        s,
        "S001",
        vec![
            fact("S001", 1, 1, None, 5, 0),
            fact("S001", 2, 2, None, 0, 0),
        ],
    );
    let first = s.step_activity(1, fold).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first.folded, first.position < first.end), (1, true));
    let second = s.step_activity(10, fold).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((second.folded, second.position), (1, second.end));
    let again = s.step_activity(10, fold).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.folded, 0, "nothing is folded twice");
    let rows = s.all_activity().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rows.iter()
            .map(|(m, a)| (*m, a.purchases, a.points_earned))
            .collect::<Vec<_>>(),
        vec![(member(1), 1, 5), (member(2), 1, 0)]
    );
    s.reset_projection(crate::activity::ACTIVITY)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        s.all_activity()
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    let positions = s.projection_positions().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(positions[0].position, 0);
    let refolded = s.step_activity(10, fold).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refolded.folded, 2);
    assert_eq!(s.all_activity().unwrap_or_else(|e| panic!("{e}")), rows);
    assert!(matches!(
        s.reset_projection("nothing"),
        Err(StoreError::NoSuchProjection(_))
    ));
}

/// An authority transaction commits what it wrote when its work succeeds, keeps none
/// of it when the work fails, and its reads see its own writes.
fn an_authority_transaction_keeps_all_of_its_writes_or_none(s: &dyn HubStore) {
    let m = member(1).to_string();
    let lease = |points| patron_sync::rights::Lease {
        points,
        spent: 0,
        until: T0 + 1_000,
        returned: false,
    };
    let failed = s.authority_tx(&mut |tx| {
        tx.put_lease(&m, "S001", &lease(50))?;
        assert_eq!(
            tx.rights(&m)?.leases.len(),
            1,
            "the transaction reads its own write"
        );
        Err(StoreError::Batch("the rule refused".into()))
    });
    assert!(matches!(failed, Err(StoreError::Batch(_))), "{failed:?}");
    let leases = |s: &dyn HubStore| {
        let mut n = None;
        s.authority_tx(&mut |tx| {
            n = Some(tx.rights(&m)?.leases.len());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        n
    };
    assert_eq!(leases(s), Some(0), "a failed transaction keeps nothing");
    s.authority_tx(&mut |tx| {
        tx.put_lease(&m, "S001", &lease(50))?;
        tx.put_lease(&m, "S002", &lease(20))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leases(s), Some(2));
    s.authority_tx(&mut |tx| tx.drop_expired_leases(&m, T0 + 1_000))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leases(s), Some(0), "leases that ran out are dropped");
}
