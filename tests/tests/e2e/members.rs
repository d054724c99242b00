use patron_tests::TestEdge;
use serde_json::json;

#[tokio::test]
async fn register_then_find_by_id_and_by_phone_in_any_format() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let body = json!({"phone": "+86 138-0013-8000", "name": "张三", "birthday": "1990-05-01",
        "channel": "store:S001:staff", "referrer_code": "AB23CD",
        "consents": {"terms": true, "marketing": true, "policy_version": "2026-01"}});
    let r = edge.post("/v1/members", &body, None).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let m = &r.json;
    assert_eq!(m["phone_masked"], "138****8000");
    assert_eq!(m["name"], "张三");
    assert_eq!(m["birthday"], "1990-05-01");
    assert_eq!(m["tier"]["code"], "normal");
    assert_eq!(m["tier"]["next"]["code"], "silver");
    assert_eq!(m["tier"]["next"]["remaining_spend"], 100_000);
    assert_eq!(m["points"]["balance"], 0);
    assert_eq!(m["home_store"], "S001");
    // Unique across the chain: the store's id, a dash, six characters.
    let code = m["referral_code"].as_str().unwrap_or_default();
    assert!(code.starts_with("S001-") && code.len() == 11, "{code}");
    let id = m["member_id"].as_str().unwrap_or_default().to_string();

    let by_id = edge.get(&format!("/v1/members/{id}")).await?;
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.json, r.json);
    for phone in ["13800138000", "%2B8613800138000", "138%200013%208000"] {
        let by_phone = edge.get(&format!("/v1/members?phone={phone}")).await?;
        assert_eq!(by_phone.status, 200, "{phone}");
        assert_eq!(by_phone.json["member_id"], id.as_str());
    }
    Ok(())
}

#[tokio::test]
async fn a_phone_registers_once() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let id = edge.register("13900139000", None).await?;
    let r = edge
        .post(
            "/v1/members",
            &json!({"phone": "139 0013 9000", "consents": {"terms": true}}),
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "member_exists"));
    assert_eq!(r.json["error"]["details"]["member_id"], id.as_str());
    Ok(())
}

#[tokio::test]
async fn unknown_members_are_member_not_found() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let r = edge
        .get("/v1/members/0190f1c2-0000-7000-8000-000000000000")
        .await?;
    assert_eq!((r.status, r.code()), (404, "member_not_found"));
    let r = edge.get("/v1/members?phone=13700000000").await?;
    assert_eq!((r.status, r.code()), (404, "member_not_found"));
    Ok(())
}

#[tokio::test]
async fn profile_and_tags_can_be_updated() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let id = edge.register("13600136000", None).await?;
    let r = edge
        .patch(
            &format!("/v1/members/{id}"),
            &json!({"name": "O'Brien", "tags_add": ["Skincare", "vip"]}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["name"], "O'Brien");
    assert_eq!(r.json["tags"], json!(["skincare", "vip"]));
    let r = edge
        .patch(
            &format!("/v1/members/{id}"),
            &json!({"tags_remove": ["vip"], "marketing": true}),
        )
        .await?;
    assert_eq!(r.json["tags"], json!(["skincare"]));
    assert_eq!(r.json["marketing_consent"], true);
    let r = edge.patch(&format!("/v1/members/{id}"), &json!({})).await?;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    Ok(())
}

#[tokio::test]
async fn behaviour_events_respect_their_limits() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let id = edge.register("13500135000", None).await?;
    let ev = |t: &str| json!({"type": t});
    let path = format!("/v1/members/{id}/events");

    let r = edge.post(&path, &ev("check_in"), None).await?;
    assert_eq!(
        (
            r.status,
            r.json["points_awarded"].as_i64(),
            r.json["balance_after"].as_i64()
        ),
        (201, Some(5), Some(5))
    );
    let r = edge.post(&path, &ev("check_in"), None).await?;
    assert_eq!(
        (r.status, r.json["points_awarded"].as_i64()),
        (200, Some(0)),
        "once per day"
    );

    for expected in [20, 20, 20, 0] {
        let r = edge.post(&path, &ev("share"), None).await?;
        assert_eq!(r.json["points_awarded"].as_i64(), Some(expected));
    }

    let r = edge.post(&path, &ev("profile_completed"), None).await?;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "no name or birthday yet"
    );
    edge.patch(
        &format!("/v1/members/{id}"),
        &json!({"name": "王五", "birthday": "1995-02-14"}),
    )
    .await?;
    let r = edge.post(&path, &ev("profile_completed"), None).await?;
    assert_eq!(r.json["points_awarded"].as_i64(), Some(50));
    let r = edge.post(&path, &ev("profile_completed"), None).await?;
    assert_eq!(
        r.json["points_awarded"].as_i64(),
        Some(0),
        "once per member"
    );

    let m = edge.get(&format!("/v1/members/{id}")).await?;
    assert_eq!(m.json["points"]["balance"], 5 + 60 + 50);
    let r = edge.post(&path, &ev("dance"), None).await?;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    Ok(())
}

/// A member's points and tier as the edge shows them.
async fn view(e: &TestEdge, m: &str) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let r = e.get(&format!("/v1/members/{m}")).await?;
    anyhow::ensure!(r.status == 200, "{}", r.json);
    Ok((r.json["points"].clone(), r.json["tier"].clone()))
}

/// `patron-edge rebuild-ledgers` derives every member's ledger snapshot from the facts:
/// with the kept rows damaged (a bad restore), balances, expiring points and tiers read
/// the same after it as before.
#[tokio::test]
async fn rebuild_ledgers_derives_the_same_members_from_the_facts() -> anyhow::Result<()> {
    let mut edge = TestEdge::spawn().await?;
    let a = edge.register("13800000101", None).await?;
    let b = edge.register("13800000102", None).await?;
    for (m, receipt, price, redeem) in [
        (&a, "R-1", 150_000, 0),
        (&b, "R-2", 20_000, 0),
        (&a, "R-3", 10_000, 700),
    ] {
        let (status, body) = edge.sale(m, receipt, price, redeem).await?;
        assert_eq!(status, 201, "{body}");
    }
    let before = (view(&edge, &a).await?, view(&edge, &b).await?);
    assert!(before.0.0["balance"].as_i64() > Some(0), "{before:?}");
    assert_eq!(before.0.1["code"], "silver", "{before:?}");
    edge.stop();
    let db = edge.db()?;
    let damaged = db.execute("UPDATE member_ledgers SET snapshot = x'02ff'", [])?;
    assert_eq!(damaged, 2, "both members had a snapshot kept");
    drop(db);
    let out = edge.run(&["rebuild-ledgers"])?;
    assert!(out.contains("2 members' ledger snapshots"), "{out}");
    let db = edge.db()?;
    let kept: i64 = db.query_row(
        "SELECT count(*) FROM member_ledgers WHERE snapshot <> x'02ff' AND length(snapshot) > 2",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(kept, 2, "both snapshots written again");
    drop(db);
    edge.start().await?;
    let after = (view(&edge, &a).await?, view(&edge, &b).await?);
    assert_eq!(after, before);
    Ok(())
}
