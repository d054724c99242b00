use patron_tests::TestEdge;

/// Every endpoint of POS-API.md, with its method, is in the generated document.
#[tokio::test]
async fn openapi_lists_every_pos_endpoint() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let r = edge.raw("GET", "/v1/openapi.json", &[], Vec::new()).await?;
    assert_eq!(r.status, 200);
    let paths = &r.json["paths"];
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/members", "post"),
        ("/v1/members", "get"),
        ("/v1/members/lookup", "post"),
        ("/v1/members/{member_id}", "get"),
        ("/v1/checkout/quote", "post"),
        ("/v1/checkout/commit", "post"),
        ("/v1/refunds", "post"),
        ("/v1/members/{member_id}/redemptions", "post"),
        ("/v1/members/{member_id}/events", "post"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let schemas = &r.json["components"]["schemas"];
    for s in [
        "Member",
        "Basket",
        "Quote",
        "CommitRequest",
        "CommitResponse",
        "ErrorBody",
        "ErrorCode",
    ] {
        assert!(schemas[s].is_object(), "schema {s} missing");
    }
    let codes = schemas["ErrorCode"]["enum"].as_array().map(Vec::len);
    assert_eq!(
        codes,
        Some(patron_protocol::ErrorCode::ALL.len()),
        "all error codes are documented"
    );
    assert_eq!(
        paths["/v1/members"]["get"]["deprecated"], true,
        "the GET by phone is marked deprecated"
    );
    Ok(())
}
