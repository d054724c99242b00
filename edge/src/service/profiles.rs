//! Member profiles as per-field CRDTs (DESIGN.md §4): each member row keeps the
//! `patron_sync` profile its facts build (a last-writer-wins register per field under
//! hybrid-logical-clock stamps, tags as an add-wins set), and its personal columns are
//! derived from it. Every replica applies the same facts the same way, in any order, so
//! stores and the hub show the same fields; a member the hub merged shows, field by
//! field, the latest write over every id merged into it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use patron_sync::Stamp;
use patron_sync::profile::{Profile, ProfileOp};

use crate::domain::profile::{self, ciphertext, value};

use super::{Core, EdgeError};
use crate::store::StoreError;
use crate::store::members::{self, MemberRow};

fn corrupt(e: serde_json::Error) -> EdgeError {
    EdgeError::Store(StoreError::Corrupt(format!("members.profile: {e}")))
}

pub(crate) use crate::domain::profile::fact_ops;

/// A row's profile CRDT: as stored, or for a row from before it was kept (or one just
/// inserted), its columns stamped at its last change under no node, so any stamped
/// write since wins.
fn state_of(row: &MemberRow, held: Option<&str>) -> Result<Profile, EdgeError> {
    if let Some(json) = held {
        return serde_json::from_str(json).map_err(corrupt);
    }
    let stamp = Stamp {
        wall: row.updated_at.max(0) as u64,
        counter: 0,
        node: String::new(),
    };
    let mut p = Profile::default();
    // A field the row lacks is not written: an empty field must not win over a value
    // another id of the same member holds.
    for (field, sealed) in [("name", &row.name_enc), ("birthday", &row.birthday_enc)] {
        if let Some(c) = sealed {
            p.set(field, Some(B64.encode(c).into_bytes()), stamp.clone());
        }
    }
    let marketing = row.consent_marketing.to_string().into_bytes();
    p.set("marketing", Some(marketing), stamp.clone());
    for t in &row.tags {
        p.tags.add(t, stamp.clone());
    }
    Ok(p)
}

/// Applies profile changes to member `member`'s row, if this store holds it: the CRDT
/// takes them, the personal columns are derived again. Returns the row as it is now.
pub(crate) fn apply(
    conn: &rusqlite::Connection,
    member: &[u8; 16],
    ops: &[ProfileOp],
) -> Result<Option<MemberRow>, EdgeError> {
    let Some(mut row) = members::get(conn, member)? else {
        return Ok(None);
    };
    if ops.is_empty() {
        return Ok(Some(row));
    }
    let mut p = state_of(&row, members::profile(conn, member)?.as_deref())?;
    for op in ops {
        p.apply(op);
    }
    let json = serde_json::to_string(&p).map_err(corrupt)?;
    members::update_profile(conn, &mut row, &profile::derive(&p), &json)?;
    Ok(Some(row))
}

/// The rows this store holds of `ids`, each with its profile CRDT.
fn held_profiles(
    conn: &rusqlite::Connection,
    ids: &[[u8; 16]],
) -> Result<Vec<(MemberRow, Profile)>, EdgeError> {
    let mut held = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = members::get(conn, id)? {
            let p = state_of(&row, members::profile(conn, id)?.as_deref())?;
            held.push((row, p));
        }
    }
    Ok(held)
}

/// The stamp for a profile change written here now: the store's clock, unless some id
/// of the member holds a later write (another store's clock runs ahead), in which case
/// just after it: an edit the cashier makes must win over everything the store showed.
pub(crate) fn local_stamp(
    core: &Core,
    conn: &rusqlite::Connection,
    member: &[u8; 16],
    now: i64,
) -> Result<Stamp, EdgeError> {
    let mut stamp = core.profile_stamp(now);
    for (_, p) in held_profiles(conn, &members::alias_set(conn, member)?)? {
        if let Some(seen) = p.latest().filter(|s| **s >= stamp) {
            stamp = Stamp {
                wall: seen.wall,
                counter: seen.counter.saturating_add(1),
                node: stamp.node,
            };
        }
    }
    Ok(stamp)
}

impl Core {
    /// The profile member `id` is shown with. For a member the hub merged: the
    /// survivor's row (the asked id's if this store lacks it) with every field taken
    /// from whichever id wrote it last (equal stamps: the larger id), tags merged, and
    /// personal fields sealed again under the shown row's key. Nothing of it is stored.
    pub fn shown_row(
        &self,
        conn: &rusqlite::Connection,
        id: &[u8; 16],
    ) -> Result<Option<MemberRow>, EdgeError> {
        let ids = members::alias_set(conn, id)?;
        if ids.len() <= 1 {
            return Ok(members::get(conn, id)?);
        }
        let held = held_profiles(conn, &ids)?;
        let base = held
            .iter()
            .position(|(r, _)| r.member_id == ids[0])
            .or_else(|| held.iter().position(|(r, _)| &r.member_id == id));
        let Some(base) = base.or((!held.is_empty()).then_some(0)) else {
            return Ok(None);
        };
        // The id whose write of `field` wins: the largest (stamp, id).
        let winner = |field: &str| -> Option<usize> {
            held.iter()
                .enumerate()
                .filter_map(|(i, (r, p))| p.fields.get(field).map(|w| (&w.stamp, r.member_id, i)))
                .max()
                .map(|(_, _, i)| i)
        };
        let mut tags = patron_sync::AddWinsSet::default();
        for (_, p) in &held {
            tags.merge(&p.tags);
        }
        let mut shown = held[base].0.clone();
        shown.tags = tags.tags();
        shown.updated_at = held.iter().map(|(r, _)| r.updated_at).max().unwrap_or(0);
        if let Some(w) = winner("marketing") {
            shown.consent_marketing = value(&held[w].1, "marketing") == Some(b"true".as_slice());
        }
        let key = self
            .vault
            .member_key(&shown.member_id, &shown.wrapped_key)?;
        for field in ["name", "birthday"] {
            let Some(w) = winner(field) else { continue };
            let sealed = if w == base {
                ciphertext(&held[w].1, field)
            } else {
                let (owner, p) = &held[w];
                let resealed = ciphertext(p, field)
                    .map(|c| {
                        let owner_key = self
                            .vault
                            .member_key(&owner.member_id, &owner.wrapped_key)?;
                        let plain =
                            self.vault
                                .open_field(&owner_key, &owner.member_id, field, &c)?;
                        self.vault.seal_field(&key, &shown.member_id, field, &plain)
                    })
                    .transpose();
                match resealed {
                    Ok(v) => v,
                    // One unreadable id must not take the member away: the field stays
                    // as the shown row holds it.
                    Err(e) => {
                        tracing::warn!(error = %e, field, "a merged member's field could not be opened");
                        continue;
                    }
                }
            };
            match field {
                "name" => shown.name_enc = sealed,
                _ => shown.birthday_enc = sealed,
            }
        }
        Ok(Some(shown))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use patron_protocol::{MemberId, Origin};
    use patron_sync::session::Fact;
    use serde_json::json;

    use super::*;
    use crate::service::Edge;

    const T0: i64 = 1_764_000_000_000;

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fact of `node` about `member` as the hub sends it.
    fn fact(
        node: &str,
        seq: u64,
        kind: &str,
        at: i64,
        member: [u8; 16],
        body: serde_json::Value,
    ) -> Fact {
        let e = json!({"kind": kind, "at": at, "member": uuid::Uuid::from_bytes(member),
                       "txn": uuid::Uuid::now_v7(), "body": body});
        Fact {
            origin: Origin {
                node: node.into(),
                incarnation: uuid::Uuid::from_u128(7),
            },
            seq,
            body: e.to_string(),
        }
    }

    fn stamp(wall: i64) -> serde_json::Value {
        json!({"wall": wall, "counter": 0, "node": "S001"})
    }

    /// One member registered at two stores and merged by the hub shows, field by
    /// field, the latest write over both ids, whichever id is asked for; updates that
    /// arrive out of order keep the later write of each field, not of the whole row.
    #[tokio::test]
    async fn a_merged_member_shows_the_latest_write_of_each_field() {
        let dir = ok(tempfile::tempdir());
        let (edge, clock) = Edge::for_test("S002", dir.path(), T0);
        // Registered here at T0 (name only), tagged at T0 + 1.
        let reg = ok(edge
            .register(
                None,
                crate::service::Actor::manager(),
                ok(serde_json::from_value(json!({
                    "phone": "13800000011", "name": "Li", "consents": {"terms": true}
                }))),
            )
            .await);
        let here: patron_protocol::pos::Member = ok(serde_json::from_slice(&reg.body));
        let a = *here.member_id.as_bytes();
        clock.store(T0 + 1, Ordering::SeqCst);
        let tag = ok(serde_json::from_value(json!({"tags_add": ["vip"]})));
        ok(edge.update_member(None, here.member_id, tag).await);

        // Registered at S001 at T0 + 2 with every field, the member id sealed as this
        // store's vault seals (the chain's keys, in production).
        let b = *MemberId::new_v7().as_bytes();
        let v = &edge.core.vault;
        let (key, wrapped) = ok(v.new_member_key(&b));
        let seal = |field: &str, plain: &str| B64.encode(ok(v.seal_field(&key, &b, field, plain)));
        let registered = json!({
            "phone_idx": B64.encode(v.phone_index("13800000011")), "wrapped_key": B64.encode(&wrapped),
            "phone": seal("phone", "13800000011"), "name": seal("name", "Li Lei"),
            "birthday": seal("birthday", "1990-05-01"), "referral_code": "RB",
            "consents": {"terms": true, "marketing": true}, "home_store": "S001", "hlc": stamp(T0 + 2),
        });
        let idx = v.phone_index("13800000011");
        let facts = vec![
            fact("S001", 1, "member_registered", T0 + 2, b, registered),
            // A later name change, then (delivered after it) an earlier birthday change
            // and an earlier name change: per field, the later write stays.
            fact(
                "S001",
                2,
                "member_updated",
                T0 + 5,
                b,
                json!({"tags_add": ["tea"], "hlc": stamp(T0 + 5)}),
            ),
            fact(
                "S001",
                3,
                "member_updated",
                T0 + 6,
                b,
                json!({"name": seal("name", "Li Lei 2"), "hlc": stamp(T0 + 6)}),
            ),
        ];
        ok(edge.apply_fetched(idx, facts, Vec::new(), 3).await);
        let late = vec![fact(
            "S001",
            4,
            "member_updated",
            T0 + 3,
            b,
            json!({"birthday": seal("birthday", "1991-01-01"), "name": seal("name", "stale"), "hlc": stamp(T0 + 3)}),
        )];
        ok(edge.apply_fetched(idx, late, Vec::new(), 4).await);
        let shown_b = ok(edge.member(MemberId::from_bytes(b)).await);
        assert_eq!(
            shown_b.name.as_deref(),
            Some("Li Lei 2"),
            "an earlier write arriving later loses"
        );
        assert_eq!(
            shown_b.birthday.as_deref(),
            Some("1991-01-01"),
            "a field not written since wins"
        );

        // The hub merges S001's registration into this store's (the earlier one).
        let merged = fact(
            "hub",
            1,
            "member_merged",
            T0 + 7,
            b,
            json!({"survivor": uuid::Uuid::from_bytes(a).to_string()}),
        );
        ok(edge.apply_fetched(idx, vec![merged], Vec::new(), 5).await);
        for asked in [a, b] {
            let m = ok(edge.member(MemberId::from_bytes(asked)).await);
            assert_eq!(*m.member_id.as_bytes(), a, "the survivor is shown");
            assert_eq!(m.name.as_deref(), Some("Li Lei 2"), "S001 named them last");
            assert_eq!(
                m.birthday.as_deref(),
                Some("1991-01-01"),
                "only S001 knew it"
            );
            assert!(
                m.marketing_consent,
                "S001's consent is later than the registration here"
            );
            assert_eq!(
                m.tags,
                vec!["tea".to_string(), "vip".to_string()],
                "tags of both ids"
            );
        }

        // A row from before the profile CRDT was kept reads as its columns stamped at
        // its last change: nothing below changes for it.
        ok(edge
            .store
            .writer
            .write(move |ctx| {
                ctx.conn
                    .execute(
                        "UPDATE members SET profile = NULL WHERE member_id = ?1",
                        [&a[..]],
                    )
                    .map_err(StoreError::from)
            })
            .await);
        // A rename here now wins over S001's; the birthday stays theirs.
        clock.store(T0 + 8, Ordering::SeqCst);
        let rename = ok(serde_json::from_value(
            json!({"name": "Li Wei", "tags_remove": ["tea"]}),
        ));
        let r = ok(edge.update_member(None, here.member_id, rename).await);
        let after: patron_protocol::pos::Member = ok(serde_json::from_slice(&r.body));
        assert_eq!(after.name.as_deref(), Some("Li Wei"));
        assert_eq!(after.birthday.as_deref(), Some("1991-01-01"));
        // The cashier removed a tag they saw on the merged member: it goes, although
        // the other id added it (removes span the alias set, as at the hub).
        assert_eq!(after.tags, vec!["vip".to_string()]);
        let by_phone = ok(edge.member_by_phone("13800000011").await);
        assert_eq!(by_phone.name.as_deref(), Some("Li Wei"));
        assert_eq!(by_phone.birthday.as_deref(), Some("1991-01-01"));

        // S001's clock runs a minute ahead: its rename is stamped in this store's
        // future, yet the cashier's next edit here still wins over what they saw.
        let ahead = vec![fact(
            "S001",
            5,
            "member_updated",
            T0 + 60_000,
            b,
            json!({"name": seal("name", "Fast"), "hlc": stamp(T0 + 60_000)}),
        )];
        ok(edge.apply_fetched(idx, ahead, Vec::new(), 6).await);
        let shown = ok(edge.member(MemberId::from_bytes(a)).await);
        assert_eq!(shown.name.as_deref(), Some("Fast"));
        clock.store(T0 + 9, Ordering::SeqCst);
        let again = ok(serde_json::from_value(json!({"name": "Li Wei"})));
        let r = ok(edge.update_member(None, here.member_id, again).await);
        let after: patron_protocol::pos::Member = ok(serde_json::from_slice(&r.body));
        assert_eq!(
            after.name.as_deref(),
            Some("Li Wei"),
            "the edit made here wins"
        );

        // Completing the profile is rewarded once per member, whichever id asks.
        let done = |id: [u8; 16]| {
            let edge = edge.clone();
            async move {
                let req = ok(serde_json::from_value(json!({"type": "profile_completed"})));
                let r = ok(edge
                    .event(
                        None,
                        crate::service::Actor::manager(),
                        MemberId::from_bytes(id),
                        req,
                    )
                    .await);
                let v: serde_json::Value = ok(serde_json::from_slice(&r.body));
                v["points_awarded"].as_i64().unwrap_or(-1)
            }
        };
        assert!(done(a).await > 0);
        assert_eq!(done(b).await, 0, "the other id of the same member");
    }

    /// A member row rebuilt from a registration the store already held gets the
    /// updates it already held too, not only the registration's fields.
    #[tokio::test]
    async fn a_rebuilt_row_takes_the_updates_held_for_it() {
        let dir = ok(tempfile::tempdir());
        let (edge, _clock) = Edge::for_test("S002", dir.path(), T0);
        let b = *MemberId::new_v7().as_bytes();
        let v = &edge.core.vault;
        let (key, wrapped) = ok(v.new_member_key(&b));
        let seal = |field: &str, plain: &str| B64.encode(ok(v.seal_field(&key, &b, field, plain)));
        let idx = v.phone_index("13800000012");
        let facts = vec![
            fact(
                "S001",
                1,
                "member_registered",
                T0,
                b,
                json!({
                    "phone_idx": B64.encode(idx), "wrapped_key": B64.encode(&wrapped),
                    "phone": seal("phone", "13800000012"), "name": seal("name", "Old"),
                    "referral_code": "RB", "consents": {"terms": true}, "home_store": "S001",
                    "hlc": stamp(T0),
                }),
            ),
            fact(
                "S001",
                2,
                "member_updated",
                T0 + 1,
                b,
                json!({"name": seal("name", "New"), "hlc": stamp(T0 + 1)}),
            ),
        ];
        ok(edge.apply_fetched(idx, facts.clone(), Vec::new(), 2).await);
        // The row goes (the facts stay), and the same facts come again.
        ok(edge
            .store
            .writer
            .write(move |ctx| {
                ctx.conn
                    .execute("DELETE FROM members WHERE member_id = ?1", [&b[..]])
                    .map_err(StoreError::from)
            })
            .await);
        ok(edge.apply_fetched(idx, facts, Vec::new(), 2).await);
        let m = ok(edge.member(MemberId::from_bytes(b)).await);
        assert_eq!(m.name.as_deref(), Some("New"));
    }
}
