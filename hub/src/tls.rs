//! The hub's certificate authority and server certificate, and its rustls config.
//!
//! `patron-hub init` makes a CA of the hub's own; stores pin that CA (they receive it
//! at enrollment, and the enrollment token carries its SHA-256 so that even the first
//! connection is verified). No public CA is trusted anywhere in sync.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// CA certificate (PEM), given to stores at enrollment.
pub const CA_CERT: &str = "ca.pem";
/// CA private key (PEM, 0600); only `init` and future re-issues need it.
pub const CA_KEY: &str = "ca.key";
/// Server certificate chain (PEM: server certificate, then the CA).
pub const SERVER_CERT: &str = "server.pem";
/// Server private key (PEM, 0600).
pub const SERVER_KEY: &str = "server.key";

/// Writes `bytes` to `path`, readable by the owner only when `secret`.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Generates the CA and a server certificate for `hosts` (DNS names or IP addresses)
/// into `dir`. Refuses to overwrite an existing CA: stores have pinned it.
pub fn init(dir: &Path, hosts: &[String]) -> Result<String> {
    if dir.join(CA_CERT).exists() {
        anyhow::bail!(
            "{} exists: this hub has a CA already, and enrolled stores pin it",
            dir.join(CA_CERT).display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Patron hub CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = rcgen::date_time_ymd(2025, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut server = CertificateParams::new(hosts.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, "Patron hub");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = rcgen::date_time_ymd(2025, 1, 1);
    server.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let server_key = KeyPair::generate()?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    write_file(
        &dir.join(CA_KEY),
        issuer.key().serialize_pem().as_bytes(),
        true,
    )?;
    write_file(
        &dir.join(SERVER_KEY),
        server_key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(
        &dir.join(SERVER_CERT),
        format!("{}{}", server_cert.pem(), ca_pem).as_bytes(),
        false,
    )?;
    write_file(&dir.join(CA_CERT), ca_pem.as_bytes(), false)?;
    Ok(fingerprint(ca_cert.der()))
}

/// SHA-256 of a certificate's DER, lower-case hex: what an enrollment token pins.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    hex::encode(d)
}

/// The CA certificate's PEM and fingerprint.
pub fn ca(dir: &Path) -> Result<(String, String)> {
    let pem = std::fs::read_to_string(dir.join(CA_CERT)).with_context(|| {
        format!(
            "reading {} (run `patron-hub init`)",
            dir.join(CA_CERT).display()
        )
    })?;
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).context("parsing the CA certificate")?;
    let fp = fingerprint(&der);
    Ok((pem, fp))
}

/// The rustls server configuration from the files `init` wrote.
pub fn server_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(dir.join(SERVER_CERT))
        .context("reading server.pem")?
        .collect::<Result<Vec<_>, _>>()
        .context("parsing server.pem")?;
    let key = PrivateKeyDer::from_pem_file(dir.join(SERVER_KEY)).context("reading server.key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_usable_config_and_refuses_to_replace_the_ca() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fp = init(dir.path(), &["localhost".into(), "127.0.0.1".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fp.len(), 64);
        assert_eq!(ca(dir.path()).unwrap_or_else(|e| panic!("{e}")).1, fp);
        server_config(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(init(dir.path(), &["localhost".into()]).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY))
                .unwrap_or_else(|e| panic!("{e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the CA key is private");
        }
    }
}
