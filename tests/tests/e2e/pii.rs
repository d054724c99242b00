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

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// `text` as SQLite could store it (UTF-8, UTF-16LE, UTF-16BE) and as a JSON log would
/// escape it (`\uXXXX`).
fn encodings(text: &str) -> Vec<(&'static str, Vec<u8>)> {
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let escaped: String = text
        .encode_utf16()
        .map(|u| {
            if u < 0x80 {
                char::from(u as u8).to_string()
            } else {
                format!("\\u{u:04x}")
            }
        })
        .collect();
    vec![
        ("UTF-8", text.as_bytes().to_vec()),
        ("UTF-16LE", le),
        ("UTF-16BE", be),
        ("JSON-escaped", escaped.into_bytes()),
    ]
}

/// Issue 19, part 1: every value a member gave (the phone, the name and the name it
/// was changed to, the birthday) is searched for, in every encoding SQLite could store
/// it in, in every file the edge and the hub keep (databases, WAL, backups, TLS and key
/// directories) and in both processes' logs at debug level, while they run and after a
/// hard kill. The scan must see the files: the stores' own transaction data is there
/// under encryption, and the logs are not empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_a_member_gave_is_kept_or_logged_in_plain_text_at_the_edge_or_the_hub()
-> anyhow::Result<()> {
    use patron_tests::LOG_FILE_ENV;
    use patron_tests::hub::TestHub;
    let logs = tempfile::tempdir()?;
    let (hub_log, edge_log) = (logs.path().join("hub.log"), logs.path().join("edge.log"));
    let mut hub = TestHub::spawn().await?;
    hub.env = vec![
        (LOG_FILE_ENV.into(), hub_log.display().to_string()),
        ("RUST_LOG".into(), "debug".into()),
    ];
    hub.kill();
    hub.start().await?;
    let mut edge = TestEdge::prepare("S001", patron_tests::FAST_SYNC)?;
    edge.env = vec![
        (LOG_FILE_ENV.into(), edge_log.display().to_string()),
        ("RUST_LOG".into(), "debug".into()),
    ];
    edge.enroll(&hub)?;
    edge.start().await?;

    let (phone, first, second, birthday) = ("13987654321", "欧阳娜娜", "司马青云", "1991-07-08");
    let body = json!({"phone": phone, "name": first, "birthday": birthday,
                      "consents": {"terms": true, "marketing": true}});
    let r = edge.post("/v1/members", &body, Some("reg-pii")).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["member_id"].as_str().unwrap_or_default().to_string();
    let r = edge
        .patch(&format!("/v1/members/{id}"), &json!({"name": second}))
        .await?;
    assert_eq!(
        (r.status, r.json["name"].as_str()),
        (200, Some(second)),
        "{}",
        r.json
    );
    let (st, _) = edge.sale(&id, "R-PII-2", 8_800, 0).await?;
    assert_eq!(st, 201);
    let (found, _) = edge.by_phone(phone).await?;
    assert_eq!(found, id);
    edge.synced().await?;

    let dirs = [edge.data_dir(), edge.key_dir(), hub.data_dir()];
    let scan = |what: &str| -> anyhow::Result<()> {
        let mut files = Vec::new();
        for dir in &dirs {
            files_under(dir, &mut files)?;
        }
        files.push(edge_log.clone());
        files.push(hub_log.clone());
        let mut read = 0;
        for f in &files {
            // A journal or temporary file may go between the listing and the read.
            let bytes = match std::fs::read(f) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            read += bytes.len();
            for value in [phone, first, second, birthday] {
                for (encoding, needle) in encodings(value) {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                        "{what}: {value:?} ({encoding}) in {}",
                        f.display()
                    );
                }
            }
        }
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(
            size(&edge_log) > 1_000 && size(&hub_log) > 1_000,
            "{what}: the logs were written"
        );
        assert!(
            read > 100_000,
            "{what}: the scan read the stores' files ({read} bytes)"
        );
        Ok(())
    };
    scan("while running")?;
    edge.kill();
    hub.kill();
    scan("after a hard kill")?;
    Ok(())
}
