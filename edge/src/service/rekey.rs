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
use patron_protocol::hub::OfferedKeys;
use serde_json::json;

use super::{Edge, EdgeError};
use crate::store::facts::{self, NewFact};
use crate::store::{members, meta_get, meta_set};

/// Set once every member held was looked at under the current keys from the hub: the
/// generation (`1`: written before rotations, whatever generation was held).
const DONE_KEY: &str = "rekeyed_for_chain";

/// Where a pass stopped: `<generation>:<member id, hex>` (it resumes after that member).
const POSITION_KEY: &str = "rekey_position";

/// Members looked at per transaction.
const CHUNK: usize = 256;

impl Edge {
    /// Puts every member this store holds under the current keys from the hub (see
    /// the module): those registered before it enrolled, and, after HQ rotated this
    /// store's keys, those under the older generation. Returns how many. Resumes where
    /// a pass stopped; once done, the older generations' key files are destroyed.
    /// Idempotent, and a no-op once done or without keys from the hub.
    pub async fn rekey_for_chain(&self) -> Result<usize, EdgeError> {
        self.rekey_chunks(usize::MAX, CHUNK).await
    }

    /// [`Edge::rekey_for_chain`] in transactions of `chunk` members, stopping after
    /// `max_chunks` of them (tests stop a pass half-way as a restart would).
    pub(crate) async fn rekey_chunks(
        &self,
        max_chunks: usize,
        chunk: usize,
    ) -> Result<usize, EdgeError> {
        let Some(generation) = self.core.vault.key_generation() else {
            return Ok(0);
        };
        // One pass at a time: two would each decide alone when the old keys may go.
        let Some(_running) = super::Running::start(&self.rekeying) else {
            return Ok(0);
        };
        let rotating = self.core.vault.rotating();
        let (done, position) = self
            .store
            .readers
            .read(|c| {
                Ok::<_, EdgeError>((meta_get(c, DONE_KEY)?.is_some(), meta_get(c, POSITION_KEY)?))
            })
            .await?;
        if done && !rotating {
            return Ok(0);
        }
        // A pass of this generation resumes after the member it recorded last.
        let mut after = position
            .as_deref()
            .and_then(|p| p.split_once(':'))
            .filter(|(g, _)| *g == generation.to_string())
            .and_then(|(_, m)| <[u8; 16]>::try_from(hex::decode(m).ok()?).ok())
            .unwrap_or([0u8; 16]);
        let mut total = 0;
        for _ in 0..max_chunks {
            let core = self.core.clone();
            let (n, last) = self
                .store
                .writer
                .write(move |ctx| {
                    let rows = members::keys_after(ctx.conn, &after, chunk)?;
                    let last = rows.last().map(|r| r.id);
                    let now = core.now();
                    let mut n = 0;
                    for r in rows {
                        let v = &core.vault;
                        // Another store's member this store cannot open stays as it is.
                        let Ok(Some(rewrapped)) = v.rewrap_for_chain(&r.id, &r.wrapped) else {
                            continue;
                        };
                        // A row this store cannot read stays as it was rather than
                        // stopping the pass for every member after it.
                        let Ok(phone) = v
                            .member_key(&r.id, &rewrapped)
                            .and_then(|key| v.open_field(&key, &r.id, "phone", &r.phone_enc))
                        else {
                            tracing::warn!(member = %uuid::Uuid::from_bytes(r.id), "a member's phone could not be read for re-keying");
                            continue;
                        };
                        let idx = v.phone_index(&phone);
                        members::set_keys(ctx.conn, &r.id, &idx, &rewrapped)?;
                        members::rename_fetch_index(ctx.conn, &r.phone_idx, &idx)?;
                        n += 1;
                        // Only the store that registered a member re-keys it at the hub
                        // (and in a restored copy of this database); another store's
                        // member is translated for this store by the hub again.
                        if r.home_store != core.cfg.store_id {
                            continue;
                        }
                        // The sealed phone lets the hub index it under the chain's key,
                        // which this store does not hold.
                        let body = json!({
                            "phone_idx": B64.encode(idx),
                            "wrapped_key": B64.encode(&rewrapped),
                            "phone": B64.encode(&r.phone_enc),
                        });
                        facts::append(
                            ctx,
                            &NewFact::new(Kind::MemberRekeyed, now, Some(r.id), *uuid::Uuid::now_v7().as_bytes(), body.to_string()),
                        )?;
                    }
                    match last {
                        Some(id) => meta_set(ctx.conn, POSITION_KEY, &format!("{generation}:{}", hex::encode(id)))?,
                        // Done: the next pass (the one after the hub confirms the
                        // keys) looks at every row again, from the start.
                        None => {
                            meta_set(ctx.conn, DONE_KEY, &generation.to_string())?;
                            meta_set(ctx.conn, POSITION_KEY, "")?;
                        }
                    }
                    Ok::<_, EdgeError>((n, last))
                })
                .await?;
            total += n;
            match last {
                Some(id) => after = id,
                None => {
                    self.destroy_old_keys();
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                members = total,
                generation,
                "members re-keyed under the keys from the hub"
            );
        }
        Ok(total)
    }

    /// The hub answered a push reporting `generation` without offering newer keys: it
    /// holds that this store holds them, and translates for it under them from now on.
    pub(crate) fn hub_holds(&self, generation: u32) {
        self.hub_holds_generation
            .store(generation, std::sync::atomic::Ordering::SeqCst);
    }

    /// Destroys the older generations of keys from the hub once no row needs them: the
    /// pass found none left, and the hub confirmed it translates under the current
    /// generation (keys it sent under an older one before that were re-wrapped as they
    /// came). Until then they stay, and the next pass after the hub's confirmation (the
    /// sync worker starts one) re-checks every row, late arrivals included.
    fn destroy_old_keys(&self) {
        let v = &self.core.vault;
        if !v.rotating() {
            return;
        }
        let Some(current) = v.key_generation() else {
            return;
        };
        if self
            .hub_holds_generation
            .load(std::sync::atomic::Ordering::SeqCst)
            != current
        {
            tracing::info!(
                generation = current,
                "older member keys kept until the hub confirms the new ones"
            );
            return;
        }
        let dir = self.core.cfg.key_dir();
        for g in crate::crypto::hub_key_generations(&dir) {
            if g == current {
                continue;
            }
            let path = dir.join(crate::crypto::store_key_file(g));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::error!(error = %e, file = %path.display(), "an older key could not be destroyed");
                return;
            }
        }
        if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
            tracing::error!(error = %e, "syncing the key directory failed");
        }
        v.drop_old();
        tracing::info!(generation = current, "older member keys destroyed");
    }

    /// Takes the keys HQ rotated this store to (they came with a push answer): saved
    /// and current at once, then every member held is re-wrapped in the background.
    pub async fn take_rotated_keys(self: &std::sync::Arc<Self>, offer: OfferedKeys) {
        if !self.take_keys_offer(&offer).await {
            return;
        }
        let edge = self.clone();
        tokio::spawn(async move {
            if let Err(e) = edge.rekey_for_chain().await {
                tracing::error!(error = %e, "re-wrapping members under rotated keys");
            }
        });
    }

    /// Saves and installs the offered keys if they are newer than those held; whether
    /// it did.
    pub(crate) async fn take_keys_offer(&self, offer: &OfferedKeys) -> bool {
        let v = &self.core.vault;
        if v.key_generation().is_some_and(|g| g >= offer.generation) {
            return false;
        }
        let Ok(keys) = B64.decode(&offer.keys).map(zeroize::Zeroizing::new) else {
            tracing::error!("rotated keys from the hub are not base64");
            return false;
        };
        if let Err(e) = v.take_generation(&self.core.cfg.key_dir(), offer.generation, &keys) {
            tracing::error!(error = %e, "rotated keys from the hub could not be kept");
            return false;
        }
        // The database goes on under the new keys (an edge restarted now starts on
        // them; see `Edge::open`).
        if let Some(check) = v.chain_key_check() {
            let done = self
                .store
                .writer
                .write(move |ctx| {
                    Ok::<_, EdgeError>(meta_set(ctx.conn, "chain_key_check", &check)?)
                })
                .await;
            if let Err(e) = done {
                tracing::error!(error = %e, "recording the rotated keys failed");
            }
        }
        tracing::warn!(
            generation = offer.generation,
            "member keys rotated by HQ: re-wrapping in the background"
        );
        true
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

    /// A rotation (HQ offered generation 2) re-wraps every member this store holds in
    /// the background, a chunk at a time, resumes after a restart where it stopped,
    /// re-keys at the hub only the members this store registered, keeps every member
    /// readable throughout, and destroys generation 1 once no row needs it.
    #[tokio::test]
    async fn a_rotation_rewraps_every_member_resumes_after_a_restart_and_destroys_the_old_keys() {
        use crate::crypto::{STORE_KEY_FILE, save_store_keys, store_key_file};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let keys = crate::keys::prepare(&dir.path().join("data"), &dir.path().join("keys"), "S001")
            .unwrap_or_else(|e| panic!("{e:#}"));
        save_store_keys(&keys.join(STORE_KEY_FILE), &[7u8; CHAIN_KEYS_LEN])
            .unwrap_or_else(|e| panic!("{e}"));
        let names = ["Ann", "Bob", "Cai", "Dan", "Eve"];
        let phone = |i: usize| format!("1380000010{i}");
        let (edge, _) = Edge::for_test("S001", dir.path(), T0);
        let mut ids = Vec::new();
        for (i, name) in names.iter().enumerate() {
            ids.push(register(&edge, &phone(i), name).await);
        }
        // The last one stands for another store's member the hub translated for us.
        let foreign = ids[4];
        edge.store
            .writer
            .write(move |ctx| {
                ctx.conn.execute(
                    "UPDATE members SET home_store = 'S002' WHERE member_id = ?1",
                    [&foreign[..]],
                )?;
                Ok::<_, EdgeError>(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            edge.rekey_for_chain().await.ok(),
            Some(0),
            "all under generation 1"
        );
        let g1_idx = row(&edge, ids[0]).await.phone_idx;
        let readable = |edge: std::sync::Arc<Edge>| async move {
            for (i, name) in names.iter().enumerate() {
                let m = edge
                    .member_by_phone(&phone(i))
                    .await
                    .unwrap_or_else(|e| panic!("member {i}: {e}"));
                assert_eq!(m.name.as_deref(), Some(*name));
            }
        };

        let offer = OfferedKeys {
            generation: 2,
            keys: B64.encode([9u8; CHAIN_KEYS_LEN]),
        };
        assert!(edge.take_keys_offer(&offer).await);
        assert!(!edge.take_keys_offer(&offer).await, "taken once");
        assert!(keys.join(store_key_file(2)).exists());
        assert!(edge.core.vault.rotating());
        readable(edge.clone()).await;
        // Two members re-wrapped, then the edge stops.
        assert_eq!(edge.rekey_chunks(1, 2).await.ok(), Some(2));
        readable(edge.clone()).await;
        drop(edge);

        let (edge, _) = Edge::for_test("S001", dir.path(), T0 + 1);
        assert!(
            edge.core.vault.rotating(),
            "generation 1 kept until the pass is done"
        );
        assert_eq!(edge.core.vault.key_generation(), Some(2));
        assert_eq!(
            edge.rekey_chunks(usize::MAX, 2).await.ok(),
            Some(3),
            "the rest, once"
        );
        // Until the hub says it translates under generation 2, generation 1 stays (keys
        // it sends meanwhile may still be under it).
        assert!(edge.core.vault.rotating());
        assert!(keys.join(STORE_KEY_FILE).exists());
        edge.hub_holds(2);
        assert_eq!(edge.rekey_for_chain().await.ok(), Some(0), "nothing left");
        assert!(!edge.core.vault.rotating());
        assert!(
            !keys.join(STORE_KEY_FILE).exists(),
            "generation 1 destroyed"
        );
        let rekeyed: Vec<String> = edge
            .outbox(0, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter_map(|f| serde_json::from_str::<serde_json::Value>(&f.body).ok())
            .filter(|v| v["kind"] == "member_rekeyed" && v["body"]["phone"].is_string())
            .map(|v| v["member"].as_str().unwrap_or_default().to_string())
            .collect();
        let mut own: Vec<String> = ids[..4]
            .iter()
            .map(|m| uuid::Uuid::from_bytes(*m).to_string())
            .collect();
        own.sort();
        let mut rekeyed = rekeyed;
        rekeyed.sort();
        assert_eq!(rekeyed, own, "this store's own members, each once");
        drop(edge);

        // Without generation 1 on disk, every member still reads, under new indexes.
        let (edge, _) = Edge::for_test("S001", dir.path(), T0 + 2);
        readable(edge.clone()).await;
        assert_ne!(row(&edge, ids[0]).await.phone_idx, g1_idx);
        assert_eq!(
            row(&edge, ids[0]).await.phone_idx,
            edge.core.vault.phone_index(&phone(0))
        );
    }

    /// A store enrolled when every store held the chain's keys is rotated to keys of
    /// its own (generation 1): its members move under them, and chain.key is
    /// destroyed once the hub holds that the store has them.
    #[tokio::test]
    async fn a_store_on_the_chain_s_keys_rotates_to_keys_of_its_own() {
        use crate::crypto::{STORE_KEY_FILE, hub_key_generations};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        enroll(dir.path(), "S001");
        let keys = dir.path().join("keys");
        let (edge, _) = Edge::for_test("S001", dir.path(), T0);
        let m = register(&edge, PHONE, "Early").await;
        assert_eq!(edge.core.vault.key_generation(), Some(0), "the chain's");
        let offer = OfferedKeys {
            generation: 1,
            keys: B64.encode([9u8; CHAIN_KEYS_LEN]),
        };
        assert!(edge.take_keys_offer(&offer).await);
        assert!(keys.join(STORE_KEY_FILE).exists());
        assert_eq!(edge.rekey_for_chain().await.ok(), Some(1));
        edge.hub_holds(1);
        assert_eq!(edge.rekey_for_chain().await.ok(), Some(0));
        assert_eq!(hub_key_generations(&keys), vec![1], "chain.key destroyed");
        drop(edge);
        let (edge, _) = Edge::for_test("S001", dir.path(), T0 + 1);
        let shown = edge
            .member_by_phone(PHONE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown.name.as_deref(), Some("Early"));
        assert_eq!(
            row(&edge, m).await.phone_idx,
            edge.core.vault.phone_index(PHONE)
        );
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
