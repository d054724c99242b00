//! `patron-edge enroll --hub URL --token-file FILE`.

use std::path::Path;
use std::time::Duration;

use patron_protocol::hub::EnrollRequest;

use super::SyncError;
use super::client::{enroll as post_enroll, http_client};
use super::link::HubLink;
use super::tls;

/// Exchanges `token` (`<secret>.<CA sha-256>`) at `url` for a credential and saves the
/// link in `data_dir`. Plain `http://` hubs need `insecure_dev`.
pub async fn enroll(
    data_dir: &Path,
    store_id: &str,
    url: &str,
    token: &str,
    insecure_dev: bool,
) -> Result<HubLink, SyncError> {
    let url = url.trim_end_matches('/');
    let (secret, fp) = token
        .rsplit_once('.')
        .ok_or_else(|| SyncError::Setup("the token looks like <secret>.<fingerprint>".into()))?;
    let https = url.starts_with("https://");
    let allowed = https || (insecure_dev && url.starts_with("http://"));
    if !allowed {
        return Err(SyncError::Setup(
            "the hub URL must be https:// (plain http:// only with --insecure-dev)".into(),
        ));
    }
    let tls_cfg = if https {
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SyncError::Setup(
                "the token does not carry the hub CA fingerprint".into(),
            ));
        }
        Some(tls::pinned_by_fingerprint(fp)?)
    } else {
        None
    };
    let http = http_client(tls_cfg, Duration::from_secs(15))?;
    let resp = post_enroll(
        &http,
        url,
        &EnrollRequest {
            secret: secret.to_string(),
            store_id: store_id.to_string(),
            protocol: Some(patron_protocol::hub::PROTOCOL),
        },
    )
    .await?;
    if resp.store_id != store_id {
        return Err(SyncError::Setup(format!(
            "the hub enrolled {} but this edge is {store_id}",
            resp.store_id
        )));
    }
    if https {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(resp.ca_pem.as_bytes())
            .map_err(|e| SyncError::Setup(format!("hub CA: {e}")))?;
        if tls::fingerprint(&der) != fp.to_ascii_lowercase() {
            return Err(SyncError::Setup(
                "the CA the hub sent is not the one the token names".into(),
            ));
        }
    }
    // Before the link: an edge with a link and no chain keys would index phones apart.
    if let Some(keys) = &resp.chain_keys {
        use base64::Engine;
        let keys = base64::engine::general_purpose::STANDARD
            .decode(keys)
            .map_err(|_| SyncError::Setup("the hub's chain keys are not base64".into()))?;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| SyncError::Setup(format!("creating {}: {e}", data_dir.display())))?;
        crate::crypto::save_chain_keys(&data_dir.join(crate::crypto::CHAIN_KEY_FILE), &keys)
            .map_err(|e| SyncError::Setup(format!("chain keys: {e}")))?;
    }
    let link = HubLink {
        url: url.to_string(),
        store_id: resp.store_id,
        ring: resp.ring,
        credential: resp.credential,
        ca_pem: resp.ca_pem,
    };
    link.save(data_dir)?;
    Ok(link)
}
