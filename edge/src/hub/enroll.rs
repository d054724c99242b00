//! `patron-edge enroll --hub URL --token-file FILE`.

use std::path::Path;
use std::time::Duration;

use patron_protocol::hub::EnrollRequest;

use super::SyncError;
use super::client::{enroll as post_enroll, http_client};
use super::link::HubLink;
use super::tls;
use crate::lan_tls::LanIdentity;

/// What enrollment did.
#[derive(Debug)]
pub struct Enrolled {
    /// The saved link to the hub.
    pub link: HubLink,
    /// The fingerprint of the CA that now signs the POS API's certificate, when the hub
    /// issued one; why not otherwise (the edge keeps serving its own).
    pub lan_ca: Result<String, String>,
}

/// Whether `url` names this machine: `--insecure-dev` may only talk plain HTTP there.
fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Exchanges `token` (`<secret>.<CA sha-256>`) at `url` for a credential and saves the
/// link in `data_dir` and the chain's keys in `key_dir`; asks the hub to certify the POS
/// API's key for `lan_names`.
/// Plain `http://` hubs need `insecure_dev`, and only on this machine.
pub async fn enroll(
    data_dir: &Path,
    key_dir: &Path,
    store_id: &str,
    url: &str,
    token: &str,
    insecure_dev: bool,
    lan_names: &[String],
) -> Result<Enrolled, SyncError> {
    let url = url.trim_end_matches('/');
    let (secret, fp) = token
        .rsplit_once('.')
        .ok_or_else(|| SyncError::Setup("the token looks like <secret>.<fingerprint>".into()))?;
    let https = url.starts_with("https://");
    let allowed = https || (insecure_dev && url.starts_with("http://") && is_loopback_url(url));
    if !allowed {
        return Err(SyncError::Setup(
            "the hub URL must be https:// (plain http:// only with --insecure-dev, and only to a hub on this machine)".into(),
        ));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| SyncError::Setup(format!("creating {}: {e}", data_dir.display())))?;
    let mut lan = LanIdentity::load_or_create(
        data_dir,
        &key_dir.join(crate::keys::LAN_KEY_FILE),
        store_id,
        lan_names,
    )
    .map_err(|e| SyncError::Setup(format!("the LAN key: {e}")))?;
    let lan_csr = lan
        .signing_request(store_id, lan_names)
        .map_err(|e| SyncError::Setup(format!("the LAN certificate request: {e}")))?;
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
            lan_csr: Some(lan_csr),
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
    // Before the link: an edge with a link and no keys from the hub would index phones
    // where the hub cannot find them. A hub that derives keys per store hands this
    // store its own; an older one, the chain's.
    let handed = match (&resp.store_keys, &resp.chain_keys) {
        (Some(k), _) => Some((k, crate::crypto::STORE_KEY_FILE)),
        (None, Some(k)) => Some((k, crate::crypto::CHAIN_KEY_FILE)),
        (None, None) => None,
    };
    if let Some((keys, file)) = handed {
        use base64::Engine;
        let keys = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(keys)
                .map_err(|_| SyncError::Setup("the hub's member keys are not base64".into()))?,
        );
        let other = match file {
            crate::crypto::STORE_KEY_FILE => crate::crypto::CHAIN_KEY_FILE,
            _ => crate::crypto::STORE_KEY_FILE,
        };
        if key_dir.join(other).exists() {
            return Err(SyncError::Setup(format!(
                "this store holds {other} from an earlier enrollment and the hub now hands out {file}: its members are wrapped under the keys it holds (docs/keys.md)"
            )));
        }
        let save = match file {
            crate::crypto::STORE_KEY_FILE => crate::crypto::save_store_keys,
            _ => crate::crypto::save_chain_keys,
        };
        save(&key_dir.join(file), &keys)
            .map_err(|e| SyncError::Setup(format!("member keys: {e}")))?;
    }
    if let Some(k) = &resp.member_code_key {
        let file = key_dir.join(crate::member_codes::MEMBER_CODE_KEY_FILE);
        crate::member_codes::save(&file, k)
            .map_err(|e| SyncError::Setup(format!("member-code key: {e}")))?;
    }
    let link = HubLink {
        url: url.to_string(),
        store_id: resp.store_id,
        ring: resp.ring,
        credential: resp.credential,
        ca_pem: resp.ca_pem,
    };
    link.save(data_dir)?;
    // After the link: the token is spent, so a certificate the edge cannot use costs
    // the store nothing but HTTPS under its own CA until it enrolls again.
    let lan_ca = match &resp.lan_certificate {
        Some(chain) => lan
            .install_issued(chain)
            .and_then(|()| lan.describe())
            .map(|d| d.ca_sha256)
            .map_err(|e| e.to_string()),
        None => Err("the hub issued no LAN certificate".into()),
    };
    Ok(Enrolled { link, lan_ca })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_enrollment_is_refused_beyond_this_machine() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token = format!("pe_secret.{}", "a".repeat(64));
        for url in [
            "http://10.0.0.1:7443",
            "http://hub.example.com:7443",
            "http://127.0.0.1.example.com",
        ] {
            let r = enroll(dir.path(), dir.path(), "S001", url, &token, true, &[]).await;
            assert!(
                matches!(&r, Err(SyncError::Setup(m)) if m.contains("only to a hub on this machine")),
                "{url}: {r:?}"
            );
        }
        assert!(is_loopback_url("http://127.0.0.1:7443"));
        assert!(is_loopback_url("http://[::1]:7443"));
        assert!(is_loopback_url("http://localhost:7443"));
        // Without --insecure-dev even loopback needs https.
        let r = enroll(
            dir.path(),
            dir.path(),
            "S001",
            "http://127.0.0.1:1",
            &token,
            false,
            &[],
        )
        .await;
        assert!(matches!(&r, Err(SyncError::Setup(_))), "{r:?}");
        assert!(!dir.path().join("hub.json").exists() && !dir.path().join("tls").exists());
    }
}
