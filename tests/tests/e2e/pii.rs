use patron_tests::TestEdge;
use serde_json::json;

/// Personal data is encrypted at rest: the database files, read as raw bytes, hold
/// neither the phone nor the name — not in the tables, the fact log, the stored
/// idempotent answers, nor the WAL. Transaction data too: the whole database is
/// encrypted (no SQLite header, no receipt id, no fact kind, no schema text).
#[tokio::test]
async fn the_database_files_hold_no_phone_and_no_name() -> anyhow::Result<()> {
    let mut edge = TestEdge::spawn().await?;
    let phone = "13912345678";
    let name = "欧阳娜娜";
    let body = json!({"phone": phone, "name": name, "birthday": "1992-03-04", "consents": {"terms": true}});
    let r = edge.post("/v1/members", &body, Some("reg-1")).await?;
    assert_eq!(r.status, 201);
    assert_eq!(r.json["name"], name);
    let id = r.json["member_id"].as_str().unwrap_or_default().to_string();
    edge.patch(&format!("/v1/members/{id}"), &json!({"name": "欧阳娜"}))
        .await?;
    let (st, _) = edge.sale(&id, "R-PII-778899", 12_345, 0).await?;
    assert_eq!(st, 201);

    let scan = |edge: &TestEdge| -> anyhow::Result<(bool, bool, bool, usize)> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(edge.data_dir())? {
            let path = entry?.path();
            if path.is_file() {
                bytes.extend(std::fs::read(path)?);
            }
        }
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        for plain in [
            &b"SQLite format 3"[..],
            b"R-PII-778899",
            b"member_registered",
            b"CREATE TABLE",
        ] {
            assert!(
                !has(plain),
                "{:?} in the data directory",
                String::from_utf8_lossy(plain)
            );
        }
        Ok((
            has(phone.as_bytes()),
            has(name.as_bytes()),
            has("1992-03-04".as_bytes()),
            bytes.len(),
        ))
    };
    // While running (data still in the WAL) and after a hard kill.
    let (p, n, b, size) = scan(&edge)?;
    assert!(size > 10_000, "the scan read the database files");
    assert!(
        !p && !n && !b,
        "plaintext found while running: phone={p} name={n} birthday={b}"
    );
    edge.kill();
    let (p, n, b, _) = scan(&edge)?;
    assert!(
        !p && !n && !b,
        "plaintext found after kill: phone={p} name={n} birthday={b}"
    );

    // Still readable by the edge itself after a restart, which says it encrypts.
    edge.start().await?;
    let h = edge.get("/healthz").await?;
    assert_eq!(h.json["encrypted_at_rest"], true, "{}", h.json);
    let r = edge.get(&format!("/v1/members?phone={phone}")).await?;
    assert_eq!((r.status, r.json["name"].as_str()), (200, Some("欧阳娜")));
    assert_eq!(r.json["phone_masked"], "139****5678");
    // The keys live outside the data directory (its sibling `data.keys` here).
    use std::os::unix::fs::PermissionsExt;
    assert!(!edge.data_dir().join("edge.key").exists());
    let key = std::fs::metadata(edge.key_dir().join("edge.key"))?;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(edge.key_dir())?;
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);

    // A copy of the data directory alone: no plaintext in it (above), and an edge given
    // it without the keys refuses to run instead of making new keys over old members.
    edge.kill();
    let copy = TestEdge::prepare("S001", "")?;
    for f in ["edge.sqlite", "edge.sqlite-wal"] {
        let from = edge.data_dir().join(f);
        if from.exists() {
            std::fs::copy(&from, copy.data_dir().join(f))?;
        }
    }
    let _ = std::fs::remove_file(copy.data_dir().join("edge.sqlite-shm"));
    // (Preparing the copy's lanes made it keys of its own: other keys, not none.)
    assert!(copy.key_dir().join("edge.key").exists());
    let err = copy.refused(&["serve"]).await?;
    assert!(
        err.contains("not the ones this database was written under"),
        "{err}"
    );
    // Without any key directory at all: refused too, and no keys made for it.
    std::fs::remove_dir_all(copy.key_dir())?;
    let err = copy.refused(&["serve"]).await?;
    assert!(err.contains("edge.key is missing"), "{err}");
    assert!(!copy.key_dir().join("edge.key").exists());
    Ok(())
}
