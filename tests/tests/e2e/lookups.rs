//! Issue 17, part 5, against the real binary: a POS lane's lookup is masked, the phone
//! travels in a POST body, the old GET says it is deprecated, lookups by phone are
//! limited per lane, and every lookup is in `patron-edge audit lookups` — without the
//! phone or the name.

use anyhow::{Context, Result};
use patron_tests::TestEdge;
use serde_json::{Value, json};

const PHONE: &str = "13800000191";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_sees_a_masked_member_within_its_budget_and_every_lookup_is_audited() -> Result<()> {
    let edge = TestEdge::spawn_with("[privacy]\nphone_lookups_per_lane_per_minute = 3\n").await?;
    let r = edge
        .post(
            "/v1/members",
            &json!({"phone": PHONE, "name": "李小龙", "birthday": "1988-02-03",
                    "consents": {"terms": true}}),
            None,
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["member_id"]
        .as_str()
        .context("member_id")?
        .to_string();
    let token = edge.add_lane("lane-1", "pos")?;
    let lane = edge.as_token(&token);

    // 1: the POST lookup, masked for a lane.
    let r = lane
        .post(
            "/v1/members/lookup",
            &json!({"phone": PHONE, "purpose": "sale"}),
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["member_id"], id.as_str());
    assert_eq!(r.json["name"], "李**");
    assert_eq!(r.json["birthday"], Value::Null);
    // Asking for more does not make a lane see more.
    let r = lane
        .post(
            "/v1/members/lookup",
            &json!({"member_id": id, "purpose": "service"}),
            None,
        )
        .await?;
    assert_eq!((r.status, &r.json["name"]), (200, &json!("李**")));
    // The administrator at the desk sees the profile.
    let r = edge
        .post(
            "/v1/members/lookup",
            &json!({"member_id": id, "purpose": "service"}),
            None,
        )
        .await?;
    assert_eq!(r.json["birthday"], "1988-02-03", "{}", r.json);

    for bad in [
        json!({"phone": PHONE, "member_id": id}),
        json!({}),
        json!({"phone": PHONE, "purpose": "curiosity"}),
        json!({"phone": PHONE, "why": "sale"}),
    ] {
        let r = lane.post("/v1/members/lookup", &bad, None).await?;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{bad}: {}",
            r.json
        );
    }

    // 2: the GET by phone still answers, masked, and says what replaces it.
    let r = edge
        .http
        .get(edge.url(&format!("/v1/members?phone={PHONE}")))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let successor = r
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(r.headers().contains_key("deprecation"));
    assert!(successor.contains("/v1/members/lookup"), "{successor}");
    let body: Value = r.json().await?;
    assert_eq!(body["name"], "李**");

    // 3: the third lookup by phone (a phone that is nobody's) is the lane's last this
    // minute.
    let r = lane
        .post("/v1/members/lookup", &json!({"phone": "13800000192"}), None)
        .await?;
    assert_eq!((r.status, r.code()), (404, "member_not_found"));
    let r = edge
        .http
        .post(edge.url("/v1/members/lookup"))
        .bearer_auth(&token)
        .json(&json!({"phone": "13800000192"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("Retry-After")?;
    assert!((1..=20).contains(&retry), "{retry}");
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another lane is not held back by this one.
    assert_eq!(edge.by_phone(PHONE).await?.0, id);

    // 4: the audit, readable beside the running edge, holds every read of a member
    // (the registration's answer too), newest first.
    let audit = edge.run(&["audit", "lookups"])?;
    let rows: Vec<Vec<&str>> = audit
        .lines()
        .map(|l| l.split('\t').skip(1).collect())
        .collect();
    let want: Vec<Vec<&str>> = vec![
        vec!["test-admin", &id, "phone", "sale", "full"],
        vec!["lane-1", "-", "phone", "sale", "masked"],
        vec!["lane-1", &id, "phone", "sale", "masked"],
        vec!["test-admin", &id, "id", "service", "full"],
        vec!["lane-1", &id, "id", "service", "masked"],
        vec!["lane-1", &id, "phone", "sale", "masked"],
        vec!["test-admin", &id, "register", "sale", "full"],
    ];
    assert_eq!(rows, want, "{audit}");
    let one = edge.run(&["audit", "lookups", "--member", &id, "--limit", "2"])?;
    assert_eq!(one.lines().count(), 2, "{one}");

    // 5: a lane changing a tag is answered as a lookup for a sale, and it is recorded.
    let r = edge
        .http
        .patch(edge.url(&format!("/v1/members/{id}")))
        .bearer_auth(&token)
        .json(&json!({"tags_add": ["tea"]}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await?;
    assert_eq!(
        (&body["name"], &body["birthday"]),
        (&json!("李**"), &Value::Null)
    );
    let newest = edge.run(&["audit", "lookups", "--limit", "1"])?;
    assert!(
        newest.contains("\tlane-1\t") && newest.contains("\tupdate\tsale\tmasked"),
        "{newest}"
    );
    Ok(())
}
