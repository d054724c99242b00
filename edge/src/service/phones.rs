//! A member's phone number change at the front desk (docs/member-service.md): the old
//! number typed in full proves the request is the member's; the new number must be no
//! member's here or at the hub, which is asked first (refused offline: only the hub
//! knows every store's members). The change is a `phone_changed` fact: the member moves
//! to the new number's index here and at the hub, which retires the old number so its
//! next owner registers as a new member.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use patron_domain::Kind;
use patron_protocol::MemberId;
use patron_protocol::service::{ChangePhone, PhoneChanged};
use serde_json::json;

use super::members::Fetched;
use super::{Actor, Edge, EdgeError, Idem, Reply, Seal, invalid};
use crate::domain::validate::{self, Phone};
use crate::store::facts::{self, NewFact};
use crate::store::members;

impl Edge {
    /// `POST /v1/members/{id}/phone`.
    pub async fn change_phone(
        &self,
        idem: Idem,
        actor: Actor,
        member: MemberId,
        req: ChangePhone,
    ) -> Result<Reply, EdgeError> {
        // A manager's act: the old number is half shown on the member card, so a lane
        // that could try numbers would need only the four hidden digits.
        if actor.role != super::Role::Admin {
            return Err(EdgeError::Forbidden(
                "only a store manager changes a member's phone number".into(),
            ));
        }
        let old = Phone::parse(&req.old_phone).map_err(|e| invalid(format!("old_phone: {e}")))?;
        let new = Phone::parse(&req.new_phone).map_err(|e| invalid(format!("new_phone: {e}")))?;
        if old.as_str() == new.as_str() {
            return Err(invalid("new_phone is the member's number already".into()));
        }
        let core = self.core.clone();
        let idb = *member.as_bytes();
        if !core.is_replay(&idem) {
            // The old number first: a wrong one asks the hub nothing.
            let (c, o) = (core.clone(), old.as_str().to_string());
            self.store
                .readers
                .read(move |conn| c.check_old_phone(conn, &idb, &o))
                .await?;
            // The new number at the hub: a member of another store under it is fetched
            // here, and found below.
            if self.hub_authority().is_some() {
                let idx = core.vault.phone_index(new.as_str());
                if self
                    .fetch_from_hub(idx, Some(new.as_str().to_string()))
                    .await
                    == Fetched::Failed
                {
                    return Err(EdgeError::HubUnreachable(
                        "a phone number change needs the hub, which cannot be asked now: try again later".into(),
                    ));
                }
            }
        }
        let written = self
            .store
            .writer
            .write(move |ctx| {
                let now = core.now();
                core.idempotent(ctx, Some(&idem), now, |ctx| {
                    let row = core.check_old_phone(ctx.conn, &idb, old.as_str())?;
                    let v = &core.vault;
                    if let Some(other) =
                        members::first_by_phone(ctx.conn, &v.phone_indexes(new.as_str()))?
                    {
                        return Err(EdgeError::MemberExists {
                            member_id: MemberId::from_bytes(other),
                        });
                    }
                    let key = v.member_key(&row.member_id, &row.wrapped_key)?;
                    let idx = v.phone_index(new.as_str());
                    let sealed = v.seal_field(&key, &row.member_id, "phone", new.as_str())?;
                    let body = json!({
                        "phone_idx": B64.encode(idx),
                        "wrapped_key": B64.encode(&row.wrapped_key),
                        "phone": B64.encode(&sealed),
                    });
                    let txn = *uuid::Uuid::now_v7().as_bytes();
                    facts::append(
                        ctx,
                        &NewFact::new(
                            Kind::PhoneChanged,
                            now,
                            Some(row.member_id),
                            txn,
                            body.to_string(),
                        ),
                    )?;
                    members::set_phone(ctx.conn, &row.member_id, &idx, &sealed)?;
                    tracing::info!(actor = actor.lane, "a member's phone number changed");
                    Ok((
                        200,
                        PhoneChanged {
                            member_id: MemberId::from_bytes(row.member_id),
                            phone_masked: validate::mask_phone(new.as_str()),
                        },
                        Seal::Store,
                    ))
                })
            })
            .await;
        self.note_refusal(actor, written).await
    }
}

impl super::Core {
    /// The member's row when `old` is the phone number they are held under here (the
    /// person the member's row shows, merges included).
    fn check_old_phone(
        &self,
        conn: &rusqlite::Connection,
        member: &[u8; 16],
        old: &str,
    ) -> Result<members::MemberRow, EdgeError> {
        let row = self
            .shown_row(conn, member)?
            .ok_or(EdgeError::MemberNotFound)?;
        let key = self.vault.member_key(&row.member_id, &row.wrapped_key)?;
        let held = zeroize::Zeroizing::new(self.vault.open_field(
            &key,
            &row.member_id,
            "phone",
            &row.phone_enc,
        )?);
        if held.as_str() != old {
            return Err(EdgeError::Forbidden(
                "old_phone is not the member's phone number".into(),
            ));
        }
        Ok(row)
    }
}
