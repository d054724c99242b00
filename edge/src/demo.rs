//! Demo data: a few members with history, and a lane token, so that the README's
//! curl examples work against a fresh edge.

use patron_protocol::MemberId;
use patron_protocol::pos::{Basket, BasketLine, CommitRequest, Consents, RegisterMember};

use crate::service::{Edge, EdgeError, Idem};

/// The guide's examples, loaded by the demo (the same file the tests use as fixture).
pub const RULES: &str = include_str!("../rules/examples.json");

/// The demo members: phone, name, birthday.
pub const MEMBERS: &[(&str, &str, &str)] = &[
    ("13800138000", "张三", "1990-05-01"),
    ("13900139000", "李四", "1985-11-20"),
    ("13700137000", "王五", "1995-02-14"),
];

/// Registers the demo members that are missing and gives the first one a purchase
/// history. Returns the members' ids in [`MEMBERS`] order.
pub async fn seed(edge: &Edge, lane: i64) -> anyhow::Result<Vec<MemberId>> {
    let mut ids = Vec::new();
    for (i, (phone, name, birthday)) in MEMBERS.iter().enumerate() {
        let req = RegisterMember {
            phone: (*phone).into(),
            name: Some((*name).into()),
            birthday: Some((*birthday).into()),
            channel: Some(format!("store:{}:demo", edge.core.cfg.store_id)),
            referrer_code: None,
            consents: Consents {
                terms: true,
                marketing: i == 0,
                policy_version: Some("2026-01".into()),
            },
        };
        let manager = crate::service::Actor {
            lane,
            role: crate::service::Role::Admin,
        };
        let id = match edge.register(None, manager, req).await {
            Ok(reply) => {
                serde_json::from_slice::<patron_protocol::pos::Member>(&reply.body)?.member_id
            }
            Err(EdgeError::MemberExists { member_id }) => member_id,
            Err(e) => return Err(e.into()),
        };
        ids.push(id);
    }
    if let Some(first) = ids.first() {
        // Fixed receipt and key: re-seeding replays instead of buying twice.
        let req = CommitRequest {
            receipt_id: "DEMO-SEED-0001".into(),
            // The total comes from the rules in force: the demo does not say how it
            // was paid.
            tender: Vec::new(),
            basket: Basket {
                member_id: Some(*first),
                lines: vec![
                    BasketLine {
                        sku: "SKIN-001".into(),
                        category: Some("skincare".into()),
                        qty: 2,
                        unit_price: 29_900,
                        catalogue: false,
                    },
                    BasketLine {
                        sku: "BAG-010".into(),
                        category: Some("bags".into()),
                        qty: 1,
                        unit_price: 59_900,
                        catalogue: false,
                    },
                ],
                coupon_codes: Vec::new(),
                redeem_points: 0,
            },
        };
        let body = serde_json::to_vec(&req)?;
        let hash = edge.core.vault.request_hash("demo-seed", &body);
        match edge
            .commit(
                Idem {
                    lane,
                    key: "demo-seed-0001".into(),
                    request_hash: hash,
                },
                crate::service::Actor {
                    lane,
                    role: crate::service::Role::Admin,
                },
                req,
            )
            .await
        {
            Ok(_) | Err(EdgeError::ReceiptExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ids)
}
