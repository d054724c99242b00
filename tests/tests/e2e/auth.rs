use patron_tests::{TestEdge, refused};
use serde_json::json;

#[tokio::test]
async fn tokens_are_required_and_stored_only_hashed() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let r = edge
        .raw("GET", "/v1/members?phone=13800138000", &[], Vec::new())
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = edge
        .raw(
            "GET",
            "/v1/members?phone=13800138000",
            &[("Authorization", "Bearer pt_wrong")],
            Vec::new(),
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = edge
        .raw(
            "GET",
            "/v1/members?phone=13800138000",
            &[("Authorization", "Basic abc")],
            Vec::new(),
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));

    // A lane created while the edge runs works at once, and its token is not in the file.
    let lane = edge.add_lane("lane-07", "pos")?;
    assert!(lane.starts_with("pt_") && lane.len() > 40);
    let auth = format!("Bearer {lane}");
    let r = edge
        .raw(
            "POST",
            "/v1/members",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            json!({"phone": "13800138001", "consents": {"terms": true}})
                .to_string()
                .into_bytes(),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    refused(
        edge.add_lane("lane-07", "pos"),
        "a lane named \"lane-07\" exists already",
        "names are unique",
    );
    refused(
        edge.add_lane("lane-08", "root"),
        "role must be pos, cashier or admin",
        "roles are checked",
    );

    let health = edge.raw("GET", "/healthz", &[], Vec::new()).await?;
    assert_eq!(
        (health.status, health.json["status"].as_str()),
        (200, Some("ok"))
    );
    assert_eq!(health.json["store_id"], "S001");

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(edge.data_dir())? {
        bytes.extend(std::fs::read(entry?.path())?);
    }
    assert!(
        !bytes.windows(lane.len()).any(|w| w == lane.as_bytes()),
        "token stored in clear"
    );
    Ok(())
}

/// A lost or stolen POS token can be revoked while the edge runs: it stops working
/// within the token cache's lifetime (10 s), and other lanes keep working.
#[tokio::test]
async fn a_revoked_lane_is_refused_while_the_edge_runs() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let lane = edge.add_lane("lane-lost", "pos")?;
    let get = |token: String| {
        let edge = &edge;
        async move {
            let auth = format!("Bearer {token}");
            edge.raw(
                "GET",
                "/v1/members?phone=13800138000",
                &[("Authorization", &auth)],
                Vec::new(),
            )
            .await
        }
    };
    // Known and cached: a lookup of an unknown phone is a 404, not a 401.
    assert_eq!(get(lane.clone()).await?.status, 404);
    edge.revoke_lane("lane-lost")?;
    let start = std::time::Instant::now();
    loop {
        let r = get(lane.clone()).await?;
        if r.status == 401 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "still accepted after 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(edge.token.clone()).await?.status,
        404,
        "other lanes keep working"
    );
    refused(
        edge.revoke_lane("lane-lost"),
        "no active lane named \"lane-lost\"",
        "revoking twice says so",
    );
    Ok(())
}
