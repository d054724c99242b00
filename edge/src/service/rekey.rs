//! Members registered before the store enrolled, put under the keys the hub handed it.
//!
//! Until a store enrolls it indexes phones and wraps members' data keys under keys of
//! its own that no one else holds: the hub could not match those phones with other
//! stores' registrations (so no merge), and no other store could read those members.
//! Once the store holds keys from the hub (its own, derived by the hub, or the chain's
//! at a store enrolled before keys were per store), each such member gets the phone's
//! index and a data key wrapped under those keys, in its row and in a `member_rekeyed`
//! fact that travels to the hub with the sealed phone (the hub opens it, indexes the
//! phone under the chain's key as it does a registration's, and translates the key for
//! every store that fetches the member). The member's data key itself does not change,
//! so nothing sealed under it is rewritten.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use patron_domain::Kind;
use serde_json::json;

use super::{Edge, EdgeError};
use crate::store::facts::{self, NewFact};
use crate::store::{members, meta_get, meta_set};

/// Set once every member held was looked at under the chain's keys.
const DONE_KEY: &str = "rekeyed_for_chain";

/// Members looked at per transaction.
const CHUNK: usize = 256;

impl Edge {
    /// Re-keys the members this store registered before it enrolled (see the module);
    /// returns how many. Idempotent, and a no-op once done or without chain keys.
    pub async fn rekey_for_chain(&self) -> Result<usize, EdgeError> {
        if !self.core.vault.has_chain_keys() {
            return Ok(0);
        }
        let done = self
            .store
            .readers
            .read(|c| Ok::<_, EdgeError>(meta_get(c, DONE_KEY)?.is_some()))
            .await?;
        if done {
            return Ok(0);
        }
        let (mut after, mut total) = ([0u8; 16], 0);
        loop {
            let core = self.core.clone();
            let (n, last) = self
                .store
                .writer
                .write(move |ctx| {
                    let rows = members::keys_after(ctx.conn, &after, CHUNK)?;
                    let last = rows.last().map(|(id, ..)| *id);
                    let now = core.now();
                    let mut n = 0;
                    for (id, wrapped, phone_enc) in rows {
                        let v = &core.vault;
                        // Another store's member this store cannot open stays as it is.
                        let Ok(Some(rewrapped)) = v.rewrap_for_chain(&id, &wrapped) else {
                            continue;
                        };
                        // A row this store cannot read stays as it was rather than
                        // stopping the pass for every member after it.
                        let Ok(phone) = v
                            .member_key(&id, &rewrapped)
                            .and_then(|key| v.open_field(&key, &id, "phone", &phone_enc))
                        else {
                            tracing::warn!(member = %uuid::Uuid::from_bytes(id), "a member's phone could not be read for re-keying");
                            continue;
                        };
                        let idx = v.phone_index(&phone);
                        members::set_keys(ctx.conn, &id, &idx, &rewrapped)?;
                        // The sealed phone lets the hub index it under the chain's key,
                        // which this store does not hold.
                        let body = json!({
                            "phone_idx": B64.encode(idx),
                            "wrapped_key": B64.encode(&rewrapped),
                            "phone": B64.encode(&phone_enc),
                        });
                        facts::append(
                            ctx,
                            &NewFact::new(Kind::MemberRekeyed, now, Some(id), *uuid::Uuid::now_v7().as_bytes(), body.to_string()),
                        )?;
                        n += 1;
                    }
                    if last.is_none() {
                        meta_set(ctx.conn, DONE_KEY, "1")?;
                    }
                    Ok::<_, EdgeError>((n, last))
                })
                .await?;
            total += n;
            match last {
                Some(id) => after = id,
                None => break,
            }
        }
        if total > 0 {
            tracing::info!(
                members = total,
                "members registered before enrollment re-keyed"
            );
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CHAIN_KEY_FILE, CHAIN_KEYS_LEN, save_chain_keys};

    const T0: i64 = 1_764_000_000_000;
    const PHONE: &str = "13800000055";

    async fn register(edge: &Edge, phone: &str, name: &str) -> [u8; 16] {
        let id = edge.test_member(phone, Some(name)).await;
        *uuid::Uuid::parse_str(&id)
            .unwrap_or_else(|e| panic!("{e}"))
            .as_bytes()
    }

    /// Gives the edge `Edge::for_test` opens in `dir` the chain's keys.
    fn enroll(dir: &std::path::Path, store: &str) {
        let keys = crate::keys::prepare(&dir.join("data"), &dir.join("keys"), store)
            .unwrap_or_else(|e| panic!("{e:#}"));
        save_chain_keys(&keys.join(CHAIN_KEY_FILE), &[7u8; CHAIN_KEYS_LEN])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn row(edge: &Edge, m: [u8; 16]) -> members::MemberRow {
        edge.store
            .readers
            .read(move |c| Ok::<_, EdgeError>(members::get(c, &m)?))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("member not held"))
    }

    /// A member registered before the store enrolled gets the chain's phone index and
    /// key once it enrolls, once; a member registered after needs nothing; and another
    /// store of the chain that fetches the member's facts finds them by phone and reads
    /// their profile.
    #[tokio::test]
    async fn members_registered_before_enrollment_move_under_the_chain_keys() {
        let (dir_a, dir_b) = (
            tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
            tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        );
        let (edge, _) = Edge::for_test("S001", dir_a.path(), T0);
        let before = register(&edge, PHONE, "Early").await;
        let own_idx = row(&edge, before).await.phone_idx;
        assert_eq!(
            edge.rekey_for_chain().await.ok(),
            Some(0),
            "no chain keys yet"
        );
        drop(edge);

        enroll(dir_a.path(), "S001");
        let (edge, _) = Edge::for_test("S001", dir_a.path(), T0 + 1);
        let after = register(&edge, "13800000056", "Late").await;
        assert_eq!(edge.rekey_for_chain().await.ok(), Some(1));
        assert_eq!(edge.rekey_for_chain().await.ok(), Some(0), "done once");
        let chain_idx = edge.core.vault.phone_index(PHONE);
        assert_ne!(chain_idx, own_idx);
        assert_eq!(row(&edge, before).await.phone_idx, chain_idx);
        let shown = edge
            .member_by_phone(PHONE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown.name.as_deref(), Some("Early"));
        let facts = edge.outbox(0, 100).await.unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<String> = facts
            .iter()
            .filter_map(|f| serde_json::from_str::<serde_json::Value>(&f.body).ok())
            .filter(|v| v["kind"] == "member_rekeyed")
            .map(|v| v["member"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(kinds, vec![uuid::Uuid::from_bytes(before).to_string()]);
        assert_ne!(before, after);

        // Another store of the chain, given this member's facts as the hub sends them.
        enroll(dir_b.path(), "S002");
        let (other, _) = Edge::for_test("S002", dir_b.path(), T0 + 2);
        let theirs: Vec<_> = facts
            .into_iter()
            .filter(|f| f.body.contains(&uuid::Uuid::from_bytes(before).to_string()))
            .collect();
        other
            .apply_fetched(chain_idx, theirs.clone(), Vec::new(), 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A third store gets the re-key before the registration (pages of another
        // order): the row it rebuilds takes the re-key it holds.
        let dir_c = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        enroll(dir_c.path(), "S003");
        let (third, _) = Edge::for_test("S003", dir_c.path(), T0 + 2);
        let (rekeys, rest): (Vec<_>, Vec<_>) = theirs
            .into_iter()
            .partition(|f| f.body.contains("member_rekeyed"));
        for page in [rekeys, rest] {
            third
                .apply_fetched(chain_idx, page, Vec::new(), 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for e in [&other, &third] {
            let there = e
                .member_by_phone(PHONE)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(there.name.as_deref(), Some("Early"));
            assert_eq!(
                there.member_id,
                patron_protocol::MemberId::from_bytes(before)
            );
        }
    }
}
