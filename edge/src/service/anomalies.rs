//! The anomaly scan: every `[alerts] scan_secs`, each lane's day so far is judged
//! against its own usual day and its member sales ([`crate::domain::anomaly`]). What it
//! finds is raised once per lane, store day and kind: a `lane_alert` fact (so HQ hears
//! of it through sync, `patron-hub alerts`), a warning in the log, and
//! `/healthz` `anomalies_today`. Off the sale path: a sale pays nothing for it, and an
//! anomaly is known within one scan.

use patron_domain::Kind;
use patron_domain::fact::{Detail, LaneAlertRecord};
use patron_protocol::TransactionId;

use super::{Edge, EdgeError};
use crate::domain::anomaly::Anomaly;
use crate::store::StoreError;
use crate::store::facts::{self, NewFact};
use crate::store::{lane_days, lookups};

/// One anomaly raised by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    /// The lane's name.
    pub lane: String,
    /// What was unusual.
    pub anomaly: Anomaly,
}

impl Edge {
    /// Judges every lane's day so far and raises each anomaly not raised before today;
    /// returns those it raised now.
    pub async fn scan_anomalies(&self) -> Result<Vec<Raised>, EdgeError> {
        let core = self.core.clone();
        let raised = self
            .store
            .writer
            .write(move |ctx| {
                let now = core.now();
                let day = core.store_day(now);
                let date = core.cal.date(now).to_string();
                let since = core.cal.start_of_day(now);
                let rules = &core.cfg.alerts;
                let mut raised = Vec::new();
                for l in lane_days::lanes_on(ctx.conn, day)? {
                    let history =
                        lane_days::earned_between(ctx.conn, l.lane, day - rules.history_days, day)?;
                    let looked = lookups::count_since(ctx.conn, l.lane, since)?;
                    let found = [
                        rules.earn_rate(l.totals.earned, &history),
                        rules.lookups(looked, l.totals.sales),
                    ];
                    for anomaly in found.into_iter().flatten() {
                        if !lane_days::raise(ctx.conn, l.lane, day, anomaly.code())? {
                            continue;
                        }
                        let (figure, against) = anomaly.figures();
                        let body = Detail::LaneAlert(LaneAlertRecord {
                            lane: l.name.clone(),
                            day: date.clone(),
                            anomaly: anomaly.code().into(),
                            figure,
                            against,
                        })
                        .to_json()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        let txn = *TransactionId::new_v7().as_bytes();
                        facts::append(ctx, &NewFact::new(Kind::LaneAlert, now, None, txn, body))?;
                        raised.push(Raised {
                            lane: l.name.clone(),
                            anomaly,
                        });
                    }
                }
                Ok::<_, EdgeError>(raised)
            })
            .await?;
        for r in &raised {
            let (figure, against) = r.anomaly.figures();
            tracing::warn!(
                lane = %r.lane,
                anomaly = r.anomaly.code(),
                figure,
                against,
                "alert: a lane's day is unusual"
            );
        }
        Ok(raised)
    }

    /// Scans every `[alerts] scan_secs` for as long as the edge runs.
    pub fn spawn_anomaly_scan(self: &std::sync::Arc<Self>) {
        let edge = std::sync::Arc::downgrade(self);
        let every = std::time::Duration::from_secs(self.core.cfg.alerts.scan_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(edge) = edge.upgrade() else { return };
                if let Err(e) = edge.scan_anomalies().await {
                    tracing::warn!(error = %e, "scanning lanes for anomalies");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::service::lanes::add_lane;
    use crate::service::{Idem, Role};
    use crate::store::StoreError;
    use patron_protocol::MemberId;

    /// 2026-12-01 12:00 +08:00.
    const T0: i64 = 1_796_097_600_000;
    const DAY: i64 = 86_400_000;

    #[tokio::test]
    async fn a_lane_far_above_its_usual_day_and_a_lane_that_only_looks_are_raised_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, clock) = Edge::for_test("S001", dir.path(), T0);
        let mut lanes = Vec::new();
        for (name, role) in [("lane-1", Role::Pos), ("lane-2", Role::Pos)] {
            let token = add_lane(&edge.core.cfg, name, role).unwrap_or_else(|e| panic!("{e:#}"));
            let lane = edge
                .authenticate(&token)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("{name}"));
            lanes.push(lane);
        }
        let member = edge.test_member("13800000091", None).await;
        let member_id: MemberId = member.parse().unwrap_or_else(|e| panic!("{e:?}"));
        let mut n = 0;
        let mut sell = |price: i64| {
            n += 1;
            let (edge, lane) = (edge.clone(), lanes[0].clone());
            let req = json!({"member_id": member, "receipt_id": format!("R-{n}"),
                             "lines": [{"sku": "A", "qty": 1, "unit_price": price}]});
            async move {
                let idem = Idem {
                    lane: lane.id,
                    key: format!("k-{n}"),
                    request_hash: [0; 32],
                };
                let req = serde_json::from_value(req).unwrap_or_else(|e| panic!("{e}"));
                edge.commit(idem, lane.actor(), req)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        };
        // Seven ordinary days: ¥100 of sales (100 points) a day.
        for d in 0..7 {
            clock.store(T0 + d * DAY, Ordering::SeqCst);
            sell(10_000).await;
            let raised = edge
                .scan_anomalies()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(raised, vec![], "day {d}: nothing unusual");
        }
        // Day 8: 6,000 points, above 5 × 100 and the 5,000 floor.
        clock.store(T0 + 7 * DAY, Ordering::SeqCst);
        sell(600_000).await;
        // lane-2 looks the member up 50 times and sells nothing.
        for _ in 0..50 {
            edge.look_up(
                &lanes[1],
                crate::service::LookupBy::Id(member_id),
                patron_protocol::pos::LookupPurpose::Service,
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let raised = edge
            .scan_anomalies()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let want = vec![
            Raised {
                lane: "lane-1".into(),
                anomaly: Anomaly::EarnRate {
                    today: 6_000,
                    usual: 100,
                },
            },
            Raised {
                lane: "lane-2".into(),
                anomaly: Anomaly::LookupsWithoutSales {
                    lookups: 50,
                    sales: 0,
                },
            },
        ];
        assert_eq!(raised, want);
        assert_eq!(edge.alerts_today().await.2, 2);
        // Found again later the same day: raised nothing more.
        sell(600_000).await;
        let again = edge
            .scan_anomalies()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, vec![]);
        // Each went out once as a fact for HQ, with its figures.
        let bodies: Vec<String> = edge
            .store
            .readers
            .read(|conn| {
                let mut stmt =
                    conn.prepare("SELECT body FROM facts WHERE kind = 'lane_alert' ORDER BY seq")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok::<_, EdgeError>(
                    rows.collect::<rusqlite::Result<Vec<String>>>()
                        .map_err(StoreError::from)?,
                )
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let bodies: Vec<serde_json::Value> = bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(
            bodies,
            vec![
                json!({"lane": "lane-1", "day": "2026-12-08", "anomaly": "earn_rate", "figure": 6_000, "against": 100}),
                json!({"lane": "lane-2", "day": "2026-12-08", "anomaly": "lookups_without_sales", "figure": 50, "against": 0}),
            ]
        );
    }
}
