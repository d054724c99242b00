//! HTTPS on the store LAN: the POS API's key and certificate.
//!
//! The edge makes its own key once (`tls/lan.key`, 0600) and never sends it anywhere.
//! Until it enrolls, it serves a certificate from a CA of its own, made at the same
//! time and whose key is thrown away at once (nothing is left to issue another with).
//! At enrollment it sends the hub a signing request for the same key and from then on
//! serves what the hub's store-LAN CA issued. Either way `tls/lan.pem` holds the
//! certificate, then its CA, and `tls/ca.pem` the CA alone: the file a POS imports,
//! or whose fingerprint (`patron-edge tls show`) it pins. Keeping the key across
//! enrollment means a POS that pins the public key keeps working.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The directory under the data directory that holds the LAN key and certificates.
pub const TLS_DIR: &str = "tls";
const CHAIN_FILE: &str = "lan.pem";
const CA_FILE: &str = "ca.pem";
/// A certificate the edge issues itself is valid this long.
const LOCAL_VALID_DAYS: i64 = 5 * 365;

/// What can go wrong with the LAN key and certificates.
#[derive(Debug, thiserror::Error)]
pub enum LanTlsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not what the edge wrote.
    #[error("{0}")]
    Malformed(String),
    /// Making a key or certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the key and certificate.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LanTlsError + '_ {
    move |source| LanTlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The edge's LAN identity: its key and the chain it serves.
pub struct LanIdentity {
    dir: PathBuf,
    key: KeyPair,
    chain: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for LanIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanIdentity")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What `patron-edge tls show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// SHA-256 of the served certificate (hex).
    pub certificate_sha256: String,
    /// SHA-256 of the certificate's public key, SubjectPublicKeyInfo DER (hex): a pin
    /// that survives re-issue.
    pub public_key_sha256: String,
    /// SHA-256 of the CA certificate (hex): what a POS trusts for every store of an
    /// enrolled chain.
    pub ca_sha256: String,
    /// The CA's common name.
    pub ca_name: String,
    /// The DNS names and addresses the certificate is for.
    pub names: Vec<String>,
    /// Validity, `YYYY-MM-DD`.
    pub not_before: String,
    /// Validity, `YYYY-MM-DD`.
    pub not_after: String,
    /// The CA file a POS imports.
    pub ca_file: PathBuf,
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The names a certificate of this edge is for: the configured `hosts`, the listen
/// address when it names one, localhost and the machine's host name.
pub fn default_names(hosts: &[String], listen: IpAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if patron_protocol::hub::valid_lan_name(h) {
            names.push(h.to_string());
        }
    }
    if !listen.is_unspecified() {
        names.push(listen.to_string());
    }
    names.extend(hosts.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), LanTlsError> {
    // Whole or not at all: a torn key or certificate would stop the edge from serving.
    // Each file its own temporary name (`lan.key.tmp`, `lan.pem.tmp`).
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

fn leaf_params(store_id: &str, names: &[String]) -> Result<CertificateParams, LanTlsError> {
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name
        .push(DnType::CommonName, format!("Patron edge {store_id}"));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A day back: a POS whose clock runs a little behind still accepts it.
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(days);
}

impl LanIdentity {
    /// The identity whose key is `key_file` (in the key directory, `crate::keys`) and
    /// whose certificates are in `data_dir`, made on first use: a key, and a
    /// certificate for `names` from a one-off local CA. An existing identity is kept as
    /// it is.
    pub fn load_or_create(
        data_dir: &Path,
        key_file: &Path,
        store_id: &str,
        names: &[String],
    ) -> Result<Self, LanTlsError> {
        let dir = data_dir.join(TLS_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let key_path = key_file.to_path_buf();
        if !key_path.exists() {
            let key = KeyPair::generate()?;
            write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path)
                .map_err(io(&key_path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(LanTlsError::Malformed(format!(
                    "{} must be mode 0600 (readable by its owner only)",
                    key_path.display()
                )));
            }
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|_| LanTlsError::Malformed(format!("{} is not a key", key_path.display())))?;
        if !dir.join(CHAIN_FILE).exists() {
            Self::issue_locally(&dir, &key, store_id, names)?;
        }
        let chain_path = dir.join(CHAIN_FILE);
        let chain = CertificateDer::pem_file_iter(&chain_path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| LanTlsError::Malformed(format!("{}: {e}", chain_path.display())))?;
        if chain.len() != 2 {
            return Err(LanTlsError::Malformed(format!(
                "{} must hold the certificate and its CA",
                chain_path.display()
            )));
        }
        let id = Self { dir, key, chain };
        if id.leaf_public_key()? != id.key.public_key_raw() {
            return Err(LanTlsError::Malformed(format!(
                "{} is not for the key in {}",
                chain_path.display(),
                key_path.display()
            )));
        }
        // `lan.pem` is the truth; `ca.pem`, the POS's copy of its CA, follows it (a crash
        // between the two writes of an install leaves the old one behind).
        let ca_pem = pem("CERTIFICATE", &id.chain[1]);
        let ca_path = id.dir.join(CA_FILE);
        if std::fs::read_to_string(&ca_path).ok().as_deref() != Some(ca_pem.as_str()) {
            write_new(&ca_path, ca_pem.as_bytes(), false)?;
        }
        Ok(id)
    }

    /// A one-off CA signs a certificate for `key`; the CA's key is dropped with it.
    fn issue_locally(
        dir: &Path,
        key: &KeyPair,
        store_id: &str,
        names: &[String],
    ) -> Result<(), LanTlsError> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("Patron edge {store_id} local CA"),
        );
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        validity(&mut ca, LOCAL_VALID_DAYS + 1);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = leaf_params(store_id, names)?;
        validity(&mut leaf, LOCAL_VALID_DAYS);
        let cert = leaf.signed_by(key, &issuer)?;
        write_new(&dir.join(CA_FILE), ca_cert.pem().as_bytes(), false)?;
        write_new(
            &dir.join(CHAIN_FILE),
            format!("{}{}", cert.pem(), ca_cert.pem()).as_bytes(),
            false,
        )
    }

    /// A signing request (PEM) for this edge's key and `names`, for the hub.
    pub fn signing_request(&self, store_id: &str, names: &[String]) -> Result<String, LanTlsError> {
        Ok(leaf_params(store_id, names)?
            .serialize_request(&self.key)?
            .pem()?)
    }

    /// Serves from now on the chain (PEM: certificate, then CA) the hub issued, after
    /// checking that it is for this edge's key and that the certificate's CA signed it.
    pub fn install_issued(&mut self, chain_pem: &str) -> Result<(), LanTlsError> {
        let bad = |m: &str| LanTlsError::Malformed(format!("the hub's LAN certificate {m}"));
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("is not PEM"))?;
        let [leaf, ca] = chain.as_slice() else {
            return Err(bad("must be the certificate and its CA"));
        };
        let candidate = Self {
            dir: self.dir.clone(),
            key: KeyPair::from_pem(&self.key.serialize_pem())?,
            chain: vec![leaf.clone().into_owned(), ca.clone().into_owned()],
        };
        if candidate.leaf_public_key()? != self.key.public_key_raw() {
            return Err(bad("is for another key"));
        }
        // The whole chain must verify the way a POS trusting the CA would check it.
        candidate.verifies_under_its_ca()?;
        write_new(
            &self.dir.join(CHAIN_FILE),
            format!("{}{}", pem("CERTIFICATE", leaf), pem("CERTIFICATE", ca)).as_bytes(),
            false,
        )?;
        write_new(
            &self.dir.join(CA_FILE),
            pem("CERTIFICATE", ca).as_bytes(),
            false,
        )?;
        *self = candidate;
        Ok(())
    }

    fn verifies_under_its_ca(&self) -> Result<(), LanTlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.chain[1].clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| LanTlsError::Malformed(format!("the LAN CA: {e}")))?;
        let names = self.describe()?.names;
        let name = names
            .first()
            .ok_or_else(|| LanTlsError::Malformed("the LAN certificate names nothing".into()))?;
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|_| LanTlsError::Malformed(format!("{name} is not a server name")))?;
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &self.chain[0],
                &[],
                &server_name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map(|_| ())
            .map_err(LanTlsError::Config)
    }

    fn leaf_public_key(&self) -> Result<Vec<u8>, LanTlsError> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&self.chain[0])
            .map_err(|_| LanTlsError::Malformed("the LAN certificate is malformed".into()))?;
        Ok(cert.public_key().subject_public_key.data.to_vec())
    }

    /// The rustls configuration serving this identity.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, LanTlsError> {
        let key = PrivateKeyDer::try_from(self.key.serialize_der())
            .map_err(|e| LanTlsError::Malformed(format!("the LAN key: {e}")))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Fingerprints, names and validity, for `patron-edge tls show` and a POS to pin.
    pub fn describe(&self) -> Result<Description, LanTlsError> {
        use x509_parser::prelude::FromDer;
        let bad = || LanTlsError::Malformed("the LAN certificate is malformed".into());
        let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&self.chain[0])
            .map_err(|_| bad())?;
        let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&self.chain[1])
            .map_err(|_| bad())?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = leaf.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => names.push(
                            IpAddr::from(<[u8; 4]>::try_from(*ip).map_err(|_| bad())?).to_string(),
                        ),
                        16 => names.push(
                            IpAddr::from(<[u8; 16]>::try_from(*ip).map_err(|_| bad())?).to_string(),
                        ),
                        _ => return Err(bad()),
                    },
                    _ => {}
                }
            }
        }
        let day = |t: x509_parser::time::ASN1Time| {
            let d = t.to_datetime().date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        };
        let ca_name = ca
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string();
        Ok(Description {
            certificate_sha256: sha256_hex(&self.chain[0]),
            public_key_sha256: sha256_hex(leaf.public_key().raw),
            ca_sha256: sha256_hex(&self.chain[1]),
            ca_name,
            names,
            not_before: day(leaf.validity().not_before),
            not_after: day(leaf.validity().not_after),
            ca_file: self.dir.join(CA_FILE),
        })
    }
}

fn pem(tag: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    fn data(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("data")
    }

    /// The LAN key in a key directory beside the data directory.
    fn key(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap_or_else(|e| panic!("{e}"));
        keys.join("lan.key")
    }

    #[test]
    fn the_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = LanIdentity::load_or_create(&data(&dir), &key(&dir), "S001", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        let b = LanIdentity::load_or_create(&data(&dir), &key(&dir), "S001", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        let (da, db) = (
            a.describe().unwrap_or_else(|e| panic!("{e}")),
            b.describe().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(da, db, "a restart serves the same certificate");
        assert_eq!(da.names, names());
        assert!(da.ca_name.contains("local CA"), "{}", da.ca_name);
        assert_ne!(da.certificate_sha256, da.ca_sha256);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key(&dir))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600, "the key is its owner's only");
        a.server_config().unwrap_or_else(|e| panic!("{e}"));
        // The local CA's key is not kept anywhere, and the LAN key is not in the data
        // directory: only certificates are.
        let files: Vec<String> = std::fs::read_dir(data(&dir).join(TLS_DIR))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut files = files;
        files.sort();
        assert_eq!(files, ["ca.pem", "lan.pem"]);
    }

    #[test]
    fn an_issued_chain_is_installed_only_for_this_key_and_from_a_ca_that_signed_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut id = LanIdentity::load_or_create(&data(&dir), &key(&dir), "S001", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        let public_key = id.describe().map(|d| d.public_key_sha256).ok();
        // A CA standing in for the hub's store-LAN CA signs the edge's request.
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, "hub LAN CA");
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| panic!("{e}"));
        let issuer = Issuer::new(ca, ca_key);
        let csr = id
            .signing_request("S001", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        let req = rcgen::CertificateSigningRequestParams::from_pem(&csr)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut params = req.params.clone();
        validity(&mut params, 30);
        let cert = params
            .signed_by(&req.public_key, &issuer)
            .unwrap_or_else(|e| panic!("{e}"));

        // Another key's certificate from the same CA is refused.
        let other = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut p = leaf_params("S001", &names()).unwrap_or_else(|e| panic!("{e}"));
        validity(&mut p, 30);
        let stranger = p
            .signed_by(&other, &issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = id.install_issued(&format!("{}{}", stranger.pem(), ca_cert.pem()));
        assert!(matches!(err, Err(LanTlsError::Malformed(ref m)) if m.contains("another key")));
        // The right certificate under a CA that did not sign it is refused.
        let mut wrong =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        wrong.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let wrong_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let wrong_ca = wrong
            .self_signed(&wrong_key)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            id.install_issued(&format!("{}{}", cert.pem(), wrong_ca.pem()))
                .is_err()
        );
        assert!(id.install_issued(&cert.pem()).is_err(), "the CA is needed");
        assert!(
            id.describe()
                .map(|d| d.ca_name.contains("local CA"))
                .unwrap_or(false),
            "nothing refused was installed"
        );

        id.install_issued(&format!("{}{}", cert.pem(), ca_cert.pem()))
            .unwrap_or_else(|e| panic!("{e}"));
        let d = id.describe().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.ca_name, "hub LAN CA");
        assert_eq!(d.ca_sha256, sha256_hex(ca_cert.der()));
        assert_eq!(
            Some(d.public_key_sha256.clone()),
            public_key,
            "the key is kept"
        );
        // And it is what a restart serves.
        let again = LanIdentity::load_or_create(&data(&dir), &key(&dir), "S001", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.describe().ok(), Some(d));
    }

    #[test]
    fn names_are_checked_and_the_defaults_name_this_machine() {
        use patron_protocol::hub::valid_lan_name;
        assert!(valid_lan_name("edge-s001.local"));
        assert!(valid_lan_name("192.168.1.10"));
        assert!(valid_lan_name("fe80::1"));
        assert!(!valid_lan_name("*.example.com"));
        assert!(!valid_lan_name("a..b"));
        assert!(!valid_lan_name(""));
        let lan: IpAddr = "0.0.0.0".parse().unwrap_or_else(|e| panic!("{e}"));
        let n = default_names(&["10.0.0.7".into()], lan);
        assert!(n.contains(&"10.0.0.7".to_string()) && n.contains(&"localhost".to_string()));
        assert!(!n.contains(&"0.0.0.0".to_string()), "not a name to certify");
        let one: IpAddr = "192.168.1.10".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(default_names(&[], one).contains(&"192.168.1.10".to_string()));
    }

    #[test]
    fn a_world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        LanIdentity::load_or_create(&data(&dir), &key(&dir), "S001", &names())
            .unwrap_or_else(|e| panic!("{e}"));
        let file = key(&dir);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let r = LanIdentity::load_or_create(&data(&dir), &file, "S001", &names());
        assert!(
            matches!(r, Err(LanTlsError::Malformed(ref m)) if m.contains("0600")),
            "{r:?}"
        );
    }
}
