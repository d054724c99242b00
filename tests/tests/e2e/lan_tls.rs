//! Issue 17, part 3, against real processes: the POS API serves HTTPS by default, under
//! its own CA until the store enrolls and under the hub's store-LAN CA after; a POS
//! pins what `patron-edge tls show` prints; plain HTTP only on loopback or by saying
//! so, which `/healthz` reports.

use std::time::Duration;

use anyhow::{Context, Result};
use patron_tests::TestEdge;
use patron_tests::hub::TestHub;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of `label` in `patron-edge tls show`'s output.
fn shown(out: &str, label: &str) -> Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no `{label}` in {out}"))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// A client that trusts only the CA in `pem` and keeps the server's certificate.
fn trusting(pem: &[u8]) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(pem)?])
        .tls_info(true)
        .build()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_edge_serves_https_under_the_hub_s_lan_ca_that_a_pos_pins() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let mut edge = TestEdge::prepare_https("S001", "")?;

    // Before enrolling: a certificate from a CA of the edge's own.
    let before = edge.run(&["tls", "show"])?;
    assert!(shown(&before, "CA  ")?.contains("local CA"), "{before}");
    let key_pin = shown(&before, "public key sha256")?;

    let local_ca = std::fs::read(edge.data_dir().join("tls/ca.pem"))?;
    edge.enroll(&hub)?;
    let after = edge.run(&["tls", "show"])?;
    let lan_ca = std::fs::read(hub.data_dir().join("lan-ca.pem"))?;
    let lan_ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&lan_ca)?;
    assert_eq!(shown(&after, "CA  ")?, "Patron store LAN CA", "{after}");
    assert_eq!(shown(&after, "CA sha256")?, sha256(&lan_ca_der), "{after}");
    assert_eq!(
        shown(&after, "public key sha256")?,
        key_pin,
        "the key is kept"
    );
    assert_ne!(
        shown(&after, "certificate sha256")?,
        shown(&before, "certificate sha256")?
    );
    // The hub names the certificate itself: the store's name, and nothing it asked for.
    assert_eq!(
        shown(&after, "names")?,
        "s001.edge.patron.internal",
        "{after}"
    );

    edge.start().await?;
    assert!(edge.https, "HTTPS is the default");
    let port = edge.addr.port();
    let by_name = format!("https://s001.edge.patron.internal:{port}/healthz");
    // A POS that trusts the chain's store-LAN CA (one file for every store) and reaches
    // the edge by the store's name is served, with the certificate `tls show` printed.
    let pos = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(&lan_ca)?])
        .tls_info(true)
        .resolve("s001.edge.patron.internal", edge.addr)
        .build()?;
    let r = pos.get(&by_name).send().await?;
    let served = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(sha256)
        .context("no peer certificate")?;
    assert_eq!(served, shown(&after, "certificate sha256")?);
    let health: serde_json::Value = r.json().await?;
    assert_eq!(health["transport"], "https", "{health}");

    // Not by an address (stores' LANs share them), not under the hub's sync CA (or a
    // rogue store could pass for the hub), not under the edge's old CA.
    let by_ip = format!("https://{}/healthz", edge.addr);
    cert_refused(trusting(&lan_ca)?.get(&by_ip).send().await, "an address");
    let sync_ca = std::fs::read(hub.data_dir().join("ca.pem"))?;
    for (what, ca) in [("the sync CA", &sync_ca), ("the old local CA", &local_ca)] {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_certs_only([reqwest::Certificate::from_pem(ca)?])
            .resolve("s001.edge.patron.internal", edge.addr)
            .build()?;
        cert_refused(c.get(&by_name).send().await, what);
    }

    // Nothing is answered in plain text on the HTTPS port: the connection is closed.
    let mut tcp = tokio::net::TcpStream::connect(edge.addr).await?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the edge kept a plain-text connection open");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "a plain-text answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // The harness, too, reaches the edge by name as a POS would.
    assert_eq!(edge.get("/healthz").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_serves_on_loopback_and_on_the_lan_only_when_configured() -> Result<()> {
    // Plain HTTP on loopback (the harness's usual setting) is allowed and reported.
    let mut local = TestEdge::spawn().await?;
    assert!(!local.https);
    let h = local.get("/healthz").await?;
    assert_eq!(h.json["transport"], "http-loopback", "{:?}", h.json);
    local.stop();

    // The same configuration on a LAN address refuses to start, and says why.
    let err = local.refused(&["serve", "--listen", "0.0.0.0:0"]).await?;
    assert!(err.contains("plain_http_on_lan"), "{err}");

    // Said in as many words, it serves, and /healthz tells whoever looks.
    let mut lan = TestEdge::prepare("S001", "[tls]\nenabled = false\nplain_http_on_lan = true\n")?;
    lan.start_with(&["--listen", "0.0.0.0:0"]).await?;
    assert!(!lan.https);
    let h = lan.get("/healthz").await?;
    assert_eq!(h.json["transport"], "http-lan", "{:?}", h.json);
    Ok(())
}

/// Asserts the request failed on the server's certificate (not on a reset or a
/// timeout, which would pass for a refusal too).
#[track_caller]
fn cert_refused(r: reqwest::Result<reqwest::Response>, what: &str) {
    let e = match r {
        Ok(r) => panic!("{what}: answered {}", r.status()),
        Err(e) => e,
    };
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    // rustls: "invalid peer certificate: UnknownIssuer" (or NotValidForName).
    assert!(
        text.contains("invalid peer certificate"),
        "{what}: refused for another reason: {text}"
    );
}
