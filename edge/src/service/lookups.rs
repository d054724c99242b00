//! Looking a member up: within the lane's budget, recorded before it is answered, and
//! shown as much as the lane's role and purpose need. Registration and profile changes
//! answer with a member too, so they go through the same budget, record and masking:
//! otherwise a lane could find members by registering their phones (the answer names
//! the existing member) or read a profile by changing a tag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use patron_protocol::MemberId;
use patron_protocol::pos::{LookupPurpose, Member, RegisterMember, UpdateMember};
use patron_web::rate::Buckets;

use super::{Edge, EdgeError, Idem, Lane, Reply, Role};
use crate::domain::privacy::{self, Asker, Disclosure};
use crate::store::StoreError;
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

/// Lookups by phone each lane may make: a bucket of `per_minute` that refills
/// continuously. In memory: a restart refills every bucket, which gives a lane no more
/// than one extra minute's worth.
#[derive(Debug)]
pub struct LookupBudget {
    buckets: Buckets<i64>,
    /// The instant bucket times count from.
    epoch: Instant,
}

impl LookupBudget {
    /// `per_minute` lookups a lane (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            buckets: Buckets::per_minute(per_minute),
            epoch: Instant::now(),
        }
    }

    /// Takes one lookup from `lane`'s bucket at `now`; when it is empty, how long until
    /// it holds one again.
    pub fn take(&self, lane: i64, now: Instant) -> Result<(), Duration> {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        self.buckets
            .take(&lane, i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

impl Edge {
    /// Spends one of `lane`'s lookups by phone (a registration is one too: its answer
    /// says whether the phone is a member's).
    fn spend_phone_lookup(&self, lane: &Lane) -> Result<(), EdgeError> {
        self.lookup_budget
            .take(lane.id, Instant::now())
            .map_err(|wait| {
                tracing::warn!(lane = %lane.name, "phone lookups over the lane's budget");
                EdgeError::RateLimited {
                    // Rounded up: a client that waits this long finds a lookup ready.
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            })
    }

    /// Records durably that `lane` read `member` (None: found nobody).
    async fn record_lookup(
        &self,
        lane: &Lane,
        member: Option<[u8; 16]>,
        via: &'static str,
        purpose: LookupPurpose,
        shown: Disclosure,
    ) -> Result<(), EdgeError> {
        let (at, lane_id) = (self.core.now(), lane.id);
        let purpose = privacy::purpose_str(purpose);
        self.store
            .writer
            .write(move |ctx| {
                lookups::record(
                    ctx.conn,
                    at,
                    lane_id,
                    member.as_ref(),
                    via,
                    purpose,
                    shown.as_str(),
                )
                .map_err(EdgeError::from)
            })
            .await
    }

    /// Looks a member up for `lane`. A lookup by phone spends the lane's budget (a
    /// lookup by id cannot be used to find members: ids are random, and no answer
    /// hands them out without spending the budget). The lookup is recorded durably
    /// before the answer goes out — no record, no answer — and the answer is masked
    /// unless the lane's role needs more for `purpose`.
    pub async fn look_up(
        self: &Arc<Self>,
        lane: &Lane,
        by: LookupBy,
        purpose: LookupPurpose,
    ) -> Result<Member, EdgeError> {
        let (found, via) = match by {
            LookupBy::Phone(phone) => {
                self.spend_phone_lookup(lane)?;
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
        self.record_lookup(lane, member, via, purpose, shown)
            .await?;
        found.map(|m| privacy::disclose(m, shown))
    }

    /// Registers a member for `lane`: a lookup by phone as far as the budget and the
    /// record go, answered as a sale's lookup is.
    pub async fn register_for(
        &self,
        lane: &Lane,
        idem: Option<Idem>,
        req: RegisterMember,
    ) -> Result<Reply, EdgeError> {
        self.spend_phone_lookup(lane)?;
        let shown = privacy::disclosure(asker(lane.role), LookupPurpose::Sale);
        let registered = self.register(idem, lane.actor(), req).await;
        match self.note_refusal(lane.actor(), registered).await {
            Err(EdgeError::MemberExists { member_id }) => {
                let found = Some(*member_id.as_bytes());
                self.record_lookup(lane, found, "register", LookupPurpose::Sale, shown)
                    .await?;
                Err(EdgeError::MemberExists { member_id })
            }
            Ok(reply) => self.answer_written(lane, "register", shown, reply).await,
            Err(e) => Err(e),
        }
    }

    /// Changes a member's profile for `lane`, answered as a sale's lookup is.
    pub async fn update_for(
        &self,
        lane: &Lane,
        idem: Option<Idem>,
        id: MemberId,
        req: UpdateMember,
    ) -> Result<Reply, EdgeError> {
        let reply = self.update_member(idem, id, req).await?;
        let shown = privacy::disclosure(asker(lane.role), LookupPurpose::Sale);
        self.answer_written(lane, "update", shown, reply).await
    }

    /// Records and masks a written member's answer. A body that is not a member is
    /// refused, not passed on: masking fails closed.
    async fn answer_written(
        &self,
        lane: &Lane,
        via: &'static str,
        shown: Disclosure,
        reply: Reply,
    ) -> Result<Reply, EdgeError> {
        if !(200..300).contains(&reply.status) {
            return Ok(reply);
        }
        let m: Member = serde_json::from_slice(&reply.body)
            .map_err(|e| StoreError::Corrupt(format!("a member answer: {e}")))?;
        self.record_lookup(
            lane,
            Some(*m.member_id.as_bytes()),
            via,
            LookupPurpose::Sale,
            shown,
        )
        .await?;
        let body = serde_json::to_vec(&privacy::disclose(m, shown))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Reply { body, ..reply })
    }
}

/// The newest `limit` lookups recorded in the configured data directory, of `member`
/// only when given (`patron-edge audit lookups`): read-only, beside a running edge.
pub fn recent_lookups(
    cfg: &crate::Config,
    member: Option<MemberId>,
    limit: u32,
) -> anyhow::Result<Vec<LookupRow>> {
    let key_dir = crate::keys::prepare(&cfg.data_dir, &cfg.key_dir(), &cfg.store_id)?;
    let (_, conn) = crate::store::connect_at(&cfg.data_dir, &key_dir, true)?;
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

    #[test]
    fn a_lane_s_budget_empties_refills_and_is_its_own() {
        let b = LookupBudget::new(60);
        let t0 = Instant::now();
        for i in 0..60 {
            assert!(b.take(1, t0).is_ok(), "lookup {i} of the first minute");
        }
        let wait = b.take(1, t0).err();
        assert!(
            matches!(wait, Some(w) if w > Duration::from_millis(900) && w <= Duration::from_secs(1)),
            "{wait:?}"
        );
        assert!(b.take(2, t0).is_ok(), "another lane has its own budget");
        // One a second comes back, and no more than the bucket holds.
        assert!(b.take(1, t0 + Duration::from_millis(1_100)).is_ok());
        assert!(b.take(1, t0 + Duration::from_millis(1_100)).is_err());
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..60 {
            assert!(b.take(1, later).is_ok());
        }
        assert!(
            b.take(1, later).is_err(),
            "an hour's rest fills one minute's bucket"
        );
        assert!(LookupBudget::new(0).take(1, t0).is_ok(), "0: unlimited");
    }

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
                crate::service::Actor::manager(),
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

        // Changing a tag does not give a lane the profile a lookup would not, and is
        // recorded as a read.
        let tag = |t: &str| -> UpdateMember {
            serde_json::from_value(serde_json::json!({"tags_add": [t]}))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let as_lane: Member = edge
            .update_for(&pos, None, id, tag("tea"))
            .await
            .ok()
            .and_then(|r| serde_json::from_slice(&r.body).ok())
            .unwrap_or_else(|| panic!("update as a lane"));
        assert_eq!(shown(&as_lane), masked);
        assert_eq!(as_lane.tags, ["tea"]);
        let as_admin: Member = edge
            .update_for(&admin, None, id, tag("rice"))
            .await
            .ok()
            .and_then(|r| serde_json::from_slice(&r.body).ok())
            .unwrap_or_else(|| panic!("update as the manager"));
        assert_eq!(shown(&as_admin), full);
        let last = recent_lookups(&edge.core.cfg, Some(id), 2).unwrap_or_else(|e| panic!("{e:#}"));
        let last: Vec<(&str, &str, &str)> = last
            .iter()
            .map(|r| (r.lane.as_str(), r.via.as_str(), r.shown.as_str()))
            .collect();
        assert_eq!(
            last,
            [
                ("manager", "update", "full"),
                ("lane-1", "update", "masked")
            ]
        );

        // Registering a phone that is a member's names the member: it spends the budget
        // and is recorded like a lookup.
        let again: RegisterMember = serde_json::from_value(
            serde_json::json!({"phone": PHONE, "consents": {"terms": true}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            edge.register_for(&pos, None, again.clone()).await,
            Err(EdgeError::MemberExists { .. })
        ));
        let newest = recent_lookups(&edge.core.cfg, None, 1).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            newest.first().map(|r| (r.lane.as_str(), r.via.as_str())),
            Some(("lane-1", "register"))
        );
        assert!(
            matches!(
                edge.register_for(&harvester, None, again).await,
                Err(EdgeError::RateLimited { .. })
            ),
            "a harvesting lane cannot register its way past its budget"
        );
    }
}
