//! Looking a member up: within the lane's budget, recorded before it is answered, and
//! shown as much as the lane's role and purpose need.

use std::sync::Arc;

use patron_protocol::MemberId;
use patron_protocol::pos::{LookupPurpose, Member};

use super::{Edge, EdgeError, Lane, Reply, Role};
use crate::domain::privacy::{self, Asker, Disclosure};
use crate::store::lookups::{self, LookupRow};

/// How a member is looked up.
#[derive(Debug, Clone)]
pub enum LookupBy {
    /// By mobile number, as typed.
    Phone(String),
    /// By member id.
    Id(MemberId),
}

fn asker(role: Role) -> Asker {
    match role {
        Role::Pos => Asker::Lane,
        Role::Cashier => Asker::Cashier,
        Role::Admin => Asker::Admin,
    }
}

impl Edge {
    /// Looks a member up for `lane`. A lookup by phone spends the lane's budget (a
    /// lookup by id cannot be used to find members: ids are random). The lookup is
    /// recorded durably before the answer goes out — no record, no answer — and the
    /// answer is masked unless the lane's role needs more for `purpose`.
    pub async fn look_up(
        self: &Arc<Self>,
        lane: &Lane,
        by: LookupBy,
        purpose: LookupPurpose,
    ) -> Result<Member, EdgeError> {
        let (found, via) = match by {
            LookupBy::Phone(phone) => {
                if let Err(wait) = self.lookup_budget.take(lane.id, std::time::Instant::now()) {
                    tracing::warn!(lane = %lane.name, "phone lookups over the lane's budget");
                    return Err(EdgeError::RateLimited {
                        retry_after_secs: wait.as_secs().max(1),
                    });
                }
                (self.member_by_phone(&phone).await, "phone")
            }
            LookupBy::Id(id) => (self.member(id).await, "id"),
        };
        let member = match &found {
            Ok(m) => Some(*m.member_id.as_bytes()),
            Err(EdgeError::MemberNotFound) => None,
            // Bad input or a failure: nothing was read.
            Err(_) => return found,
        };
        let shown = privacy::disclosure(asker(lane.role), purpose);
        let (at, lane_id) = (self.core.now(), lane.id);
        let purpose_str = privacy::purpose_str(purpose);
        self.store
            .writer
            .write(move |ctx| {
                lookups::record(
                    ctx.conn,
                    at,
                    lane_id,
                    member.as_ref(),
                    via,
                    purpose_str,
                    shown.as_str(),
                )
                .map_err(EdgeError::from)
            })
            .await?;
        found.map(|m| privacy::disclose(m, shown))
    }

    /// What `lane` is shown of a member it has just written (registration, profile
    /// change): what a lookup for a sale shows, or a lane could read any member's full
    /// profile by changing a tag.
    pub fn shown_to(&self, lane: &Lane, reply: Reply) -> Reply {
        let d = privacy::disclosure(asker(lane.role), LookupPurpose::Sale);
        if d == Disclosure::Full || !(200..300).contains(&reply.status) {
            return reply;
        }
        match serde_json::from_slice::<Member>(&reply.body) {
            Ok(m) => Reply {
                body: serde_json::to_vec(&privacy::disclose(m, d)).unwrap_or_default(),
                ..reply
            },
            Err(_) => reply,
        }
    }
}

/// The newest `limit` lookups recorded in the configured data directory, of `member`
/// only when given (`patron-edge audit lookups`): read-only, beside a running edge.
pub fn recent_lookups(
    cfg: &crate::Config,
    member: Option<MemberId>,
    limit: u32,
) -> anyhow::Result<Vec<LookupRow>> {
    let path = cfg.data_dir.join(crate::store::DB_FILE);
    let conn = crate::store::connect(&path, true)?;
    Ok(lookups::recent(
        &conn,
        member.as_ref().map(|m| m.as_bytes()),
        limit,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::add_lane;

    const T0: i64 = 1_764_000_000_000;
    const PHONE: &str = "13800000077";

    async fn lane(edge: &Edge, name: &str, role: Role) -> Lane {
        let token = add_lane(&edge.core.cfg, name, role).unwrap_or_else(|e| panic!("{e:#}"));
        edge.authenticate(&token)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("lane {name}"))
    }

    fn shown(m: &Member) -> (Option<&str>, Option<&str>) {
        (m.name.as_deref(), m.birthday.as_deref())
    }

    #[tokio::test]
    async fn lookups_are_masked_by_role_and_purpose_recorded_and_limited_per_lane() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, _) = Edge::for_test("S001", dir.path(), T0);
        let (pos, cashier, admin) = (
            lane(&edge, "lane-1", Role::Pos).await,
            lane(&edge, "desk", Role::Cashier).await,
            lane(&edge, "manager", Role::Admin).await,
        );
        let reply = edge
            .register(
                None,
                serde_json::from_value(serde_json::json!({"phone": PHONE, "name": "张三丰",
                    "birthday": "1990-05-01", "consents": {"terms": true}}))
                .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let id: Member = serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{e}"));
        let id = id.member_id;
        let full = (Some("张三丰"), Some("1990-05-01"));
        let masked = (Some("张**"), None);

        use LookupPurpose::{Sale, Service};
        let phone = || LookupBy::Phone(PHONE.into());
        for (who, by, purpose, want) in [
            (&pos, phone(), Sale, masked),
            (&pos, phone(), Service, masked),
            (&pos, LookupBy::Id(id), Service, masked),
            (&cashier, phone(), Sale, masked),
            (&cashier, LookupBy::Id(id), Service, full),
            (&admin, phone(), Sale, full),
        ] {
            let m = edge
                .look_up(who, by.clone(), purpose)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(shown(&m), want, "{} {by:?} {purpose:?}", who.name);
        }
        // A lookup that finds nobody is recorded too; a malformed phone reads nothing.
        assert!(matches!(
            edge.look_up(&pos, LookupBy::Phone("13900000000".into()), Sale)
                .await,
            Err(EdgeError::MemberNotFound)
        ));
        assert!(matches!(
            edge.look_up(&pos, LookupBy::Phone("12".into()), Sale).await,
            Err(EdgeError::Invalid(_))
        ));

        let rows = recent_lookups(&edge.core.cfg, None, 100).unwrap_or_else(|e| panic!("{e:#}"));
        type Row<'a> = (&'a str, Option<[u8; 16]>, &'a str, &'a str, &'a str);
        let got: Vec<Row<'_>> = rows
            .iter()
            .map(|r| {
                (
                    r.lane.as_str(),
                    r.member.as_deref().and_then(|b| b.try_into().ok()),
                    r.via.as_str(),
                    r.purpose.as_str(),
                    r.shown.as_str(),
                )
            })
            .collect();
        let m = Some(*id.as_bytes());
        assert_eq!(
            got,
            vec![
                ("lane-1", None, "phone", "sale", "masked"),
                ("manager", m, "phone", "sale", "full"),
                ("desk", m, "id", "service", "full"),
                ("desk", m, "phone", "sale", "masked"),
                ("lane-1", m, "id", "service", "masked"),
                ("lane-1", m, "phone", "service", "masked"),
                ("lane-1", m, "phone", "sale", "masked"),
            ],
            "newest first, one row per lookup that read something"
        );
        assert_eq!(
            recent_lookups(&edge.core.cfg, Some(id), 100)
                .map(|r| r.len())
                .ok(),
            Some(6)
        );

        // A harvesting lane: its phone budget (30 a minute by default) runs out; what
        // it is refused is not a lookup; ids and other lanes are unaffected.
        let harvester = lane(&edge, "lane-2", Role::Pos).await;
        for i in 0..30 {
            let r = edge
                .look_up(
                    &harvester,
                    LookupBy::Phone(format!("139000001{i:02}")),
                    Sale,
                )
                .await;
            assert!(matches!(r, Err(EdgeError::MemberNotFound)), "{i}: {r:?}");
        }
        let r = edge.look_up(&harvester, phone(), Sale).await;
        assert!(
            matches!(r, Err(EdgeError::RateLimited { retry_after_secs }) if (1..=2).contains(&retry_after_secs)),
            "{r:?}"
        );
        assert!(
            edge.look_up(&harvester, LookupBy::Id(id), Sale)
                .await
                .is_ok()
        );
        assert!(edge.look_up(&pos, phone(), Sale).await.is_ok());
        let by_harvester = recent_lookups(&edge.core.cfg, None, 1000)
            .unwrap_or_else(|e| panic!("{e:#}"))
            .iter()
            .filter(|r| r.lane == "lane-2")
            .count();
        assert_eq!(by_harvester, 31, "30 phones and one id");

        // Changing a tag does not give a lane the profile a lookup would not.
        let reply = edge
            .update_member(
                None,
                id,
                serde_json::from_value(serde_json::json!({"tags_add": ["tea"]}))
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let as_lane: Member = serde_json::from_slice(&edge.shown_to(&pos, reply.clone()).body)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown(&as_lane), masked);
        assert_eq!(as_lane.tags, ["tea"]);
        let as_admin: Member = serde_json::from_slice(&edge.shown_to(&admin, reply).body)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown(&as_admin), full);
    }
}
