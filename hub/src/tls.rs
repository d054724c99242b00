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
    KeyUsagePurpose, SanType,
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

/// The store-LAN CA certificate (PEM), which certifies the stores' POS APIs.
pub const LAN_CA_CERT: &str = "lan-ca.pem";
/// The store-LAN CA key (PEM, 0600).
pub const LAN_CA_KEY: &str = "lan-ca.key";
/// The domain under which every store's POS API is named.
pub const LAN_DOMAIN: &str = "edge.patron.internal";

/// The name the store-LAN CA certifies for `store_id`'s POS API:
/// `s001.edge.patron.internal` (lower case; `_`, not allowed in host names, as `-`).
pub fn lan_name(store_id: &str) -> String {
    let label: String = store_id
        .chars()
        .map(|c| match c {
            '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    format!("{label}.{LAN_DOMAIN}")
}
/// How long a store's LAN certificate is valid; a store renews it by enrolling again.
const LAN_CERT_DAYS: i64 = 5 * 365;

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

/// Generates the CA and a server certificate for `hosts` (DNS names or IP addresses):
/// the certificates into `dir`, their keys into `key_dir`. Refuses to overwrite an
/// existing CA: stores have pinned it.
pub fn init(dir: &Path, key_dir: &Path, hosts: &[String]) -> Result<String> {
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
        &key_dir.join(CA_KEY),
        issuer.key().serialize_pem().as_bytes(),
        true,
    )?;
    write_file(
        &key_dir.join(SERVER_KEY),
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

/// The rustls server configuration from the files `init` wrote (the certificate in
/// `dir`, its key in `key_dir`).
pub fn server_config(dir: &Path, key_dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(dir.join(SERVER_CERT))
        .context("reading server.pem")?
        .collect::<Result<Vec<_>, _>>()
        .context("parsing server.pem")?;
    let key =
        PrivateKeyDer::from_pem_file(key_dir.join(SERVER_KEY)).context("reading server.key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The CA that certifies the stores' POS APIs on their LANs.
///
/// It is not the sync CA, and nothing chains one to the other: stores pin the sync CA
/// for the hub, so a certificate a store obtained for its LAN — for whatever names it
/// asked — must never be one the sync CA vouches for, or a rogue store could stand in
/// for the hub towards the others.
pub struct LanCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for LanCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LanCa(<key>)")
    }
}

/// Why a signing request is refused.
#[derive(Debug, thiserror::Error)]
#[error("lan_csr: {0}")]
pub struct CsrRefused(String);

impl LanCa {
    /// The store-LAN CA (its certificate in `dir`, its key in `key_dir`), made on first
    /// use.
    pub fn load_or_create(dir: &Path, key_dir: &Path) -> Result<Self> {
        let (cert, key) = (dir.join(LAN_CA_CERT), key_dir.join(LAN_CA_KEY));
        if !cert.exists() {
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ca.distinguished_name
                .push(DnType::CommonName, "Patron store LAN CA");
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            ca.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            // A POS that trusts this CA trusts it for the stores' names only: not for
            // any other domain, and not for any address (which stores' LANs share).
            ca.name_constraints = Some(rcgen::NameConstraints {
                permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName(LAN_DOMAIN.into())],
                excluded_subtrees: vec![
                    rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::from_v4_prefix([0; 4], 0)),
                    rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::from_v6_prefix([0; 16], 0)),
                ],
            });
            ca.not_before = rcgen::date_time_ymd(2025, 1, 1);
            ca.not_after = rcgen::date_time_ymd(2050, 1, 1);
            let k = KeyPair::generate()?;
            let c = ca.self_signed(&k)?;
            let _ = std::fs::remove_file(&key);
            write_file(&key, k.serialize_pem().as_bytes(), true)?;
            // The certificate last: its presence says the pair is whole.
            let tmp = dir.join(format!("{LAN_CA_CERT}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            write_file(&tmp, c.pem().as_bytes(), false)?;
            std::fs::rename(&tmp, &cert)?;
            std::fs::File::open(key_dir)?.sync_all()?;
            std::fs::File::open(dir)?.sync_all()?;
        }
        let pem = std::fs::read_to_string(&cert)
            .with_context(|| format!("reading {}", cert.display()))?;
        let key_pem =
            std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&pem, KeyPair::from_pem(&key_pem)?)
            .context("the store-LAN CA")?;
        Ok(Self { issuer, pem })
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `store_id`'s POS API from its signing request (PEM), as the
    /// chain the store serves: the certificate, then this CA. Only the request's key is
    /// taken (its signature proves the store holds it): the hub names the certificate
    /// [`lan_name`] of the store, and sets the usage (a TLS server, never a CA) and the
    /// validity. A store cannot obtain a name of another store's, nor an address, which
    /// the stores' LANs share.
    pub fn issue(&self, store_id: &str, csr_pem: &str) -> Result<String, CsrRefused> {
        if csr_pem.len() > 16 * 1024 {
            return Err(CsrRefused("longer than 16 KiB".into()));
        }
        let req = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CsrRefused(format!("not a signed PKCS#10 request: {e}")))?;
        let name = lan_name(store_id);
        let names =
            vec![SanType::DnsName(name.clone().try_into().map_err(|_| {
                CsrRefused(format!("{name} is not a DNS name"))
            })?)];
        let mut p = CertificateParams::default();
        p.subject_alt_names = names;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, format!("Patron edge {store_id}"));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(LAN_CERT_DAYS);
        let cert = p
            .signed_by(&req.public_key, &self.issuer)
            .map_err(|e| CsrRefused(format!("could not be signed: {e}")))?;
        Ok(format!("{}{}", cert.pem(), self.pem))
    }
}

/// The subject alternative names of a certificate, as x509-parser prints them (tests).
#[cfg(test)]
pub(crate) fn san_names(der: &[u8]) -> Vec<String> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| {
            c.subject_alternative_name().ok().flatten().map(|s| {
                s.value
                    .general_names
                    .iter()
                    .map(|n| format!("{n}"))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_usable_config_and_refuses_to_replace_the_ca() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fp = init(
            dir.path(),
            dir.path(),
            &["localhost".into(), "127.0.0.1".into()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fp.len(), 64);
        assert_eq!(ca(dir.path()).unwrap_or_else(|e| panic!("{e}")).1, fp);
        server_config(dir.path(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(init(dir.path(), dir.path(), &["localhost".into()]).is_err());
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

    #[test]
    fn the_lan_ca_certifies_a_store_s_key_under_the_store_s_name_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        init(dir.path(), dir.path(), &["hub.example".into()]).unwrap_or_else(|e| panic!("{e}"));
        let lan = LanCa::load_or_create(dir.path(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let again = LanCa::load_or_create(dir.path(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lan.pem(), again.pem(), "made once, then kept");
        assert_eq!(lan_name("S_01"), "s-01.edge.patron.internal");

        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let csr = |names: Vec<String>, ca: bool| {
            let mut p = CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
            p.distinguished_name
                .push(DnType::CommonName, "the hub itself");
            if ca {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }
            p.serialize_request(&key)
                .and_then(|r| r.pem())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let parse = |pem: &str| -> Vec<CertificateDer<'static>> {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{e}"))
        };
        // A store asking for a CA certificate for the hub's name, an address and
        // another store's name gets a server certificate for its own name only.
        let chain = lan
            .issue(
                "S001",
                &csr(
                    vec!["hub.example".into(), "10.0.0.7".into(), lan_name("S002")],
                    true,
                ),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let certs = parse(&chain);
        assert_eq!(certs.len(), 2);
        let (_, issued) =
            x509_parser::parse_x509_certificate(&certs[0]).unwrap_or_else(|e| panic!("{e}"));
        let is_ca = issued
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        assert!(!is_ca, "never a CA");
        let cn = issued
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(cn, "Patron edge S001");
        assert_eq!(
            san_names(&certs[0]),
            [format!("DNSName({})", lan_name("S001"))]
        );

        let verify = |root_pem: &str, certs: &[CertificateDer<'static>], name: &str| {
            let mut roots = rustls::RootCertStore::empty();
            let root = CertificateDer::from_pem_slice(root_pem.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            roots.add(root).unwrap_or_else(|e| panic!("{e}"));
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
            use rustls::client::danger::ServerCertVerifier;
            v.verify_server_cert(
                &certs[0],
                &certs[1..],
                &rustls::pki_types::ServerName::try_from(name.to_string())
                    .unwrap_or_else(|e| panic!("{e}")),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .is_ok()
        };
        assert!(verify(lan.pem(), &certs, &lan_name("S001")));
        for other in ["hub.example", "10.0.0.7", &lan_name("S002")] {
            assert!(!verify(lan.pem(), &certs, other), "{other}");
        }
        let (sync_ca, _) = ca(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !verify(&sync_ca, &certs, &lan_name("S001")),
            "a store's LAN certificate is nothing to the sync CA"
        );
        // Should the hub ever sign another name (a bug, or a stolen CA key used by
        // mistake), a POS trusting the CA still refuses it: the CA is constrained.
        let mut forged =
            CertificateParams::new(vec!["bank.example".to_string(), "192.168.1.10".into()])
                .unwrap_or_else(|e| panic!("{e}"));
        forged.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let forged = forged
            .signed_by(&key, &lan.issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        let forged = [forged.der().clone(), certs[1].clone()];
        assert!(!verify(lan.pem(), &forged, "bank.example"));
        assert!(!verify(lan.pem(), &forged, "192.168.1.10"));

        assert!(
            lan.issue(
                "S001",
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            )
            .is_err()
        );
        // A request whose signature does not verify proves no key: refused, where the
        // same request intact is certified.
        let good = csr(vec!["localhost".into()], false);
        let mut der =
            rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
                .map(|d| d.as_ref().to_vec())
                .unwrap_or_else(|e| panic!("{e}"));
        let last = der.len() - 1;
        der[last] ^= 1;
        use base64::Engine;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert!(lan.issue("S001", &good).is_ok());
        let refused = lan.issue("S001", &tampered).err().map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|m| m.contains("signature")),
            "{refused:?}"
        );
    }
}
