//! Client TLS that trusts the hub's own CA and nothing else.
//!
//! Before enrollment the edge has only the token, which ends in the SHA-256 of the hub
//! CA: [`pinned_by_fingerprint`] accepts a server whose presented chain contains a
//! certificate with that fingerprint and whose certificate verifies against it. After
//! enrollment, [`pinned_ca`] trusts exactly the CA saved in `hub.json`.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::SyncError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    hex::encode(d)
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, SyncError>
{
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::Setup(format!("TLS: {e}")))
}

fn verifier(ca: CertificateDer<'static>) -> Result<Arc<WebPkiServerVerifier>, SyncError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| SyncError::Setup(format!("hub CA: {e}")))?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| SyncError::Setup(format!("hub CA: {e}")))
}

/// Trusts only `ca_pem`.
pub fn pinned_ca(ca_pem: &str) -> Result<rustls::ClientConfig, SyncError> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| SyncError::Setup(format!("hub CA: {e}")))?;
    let mut roots = RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| SyncError::Setup(format!("hub CA: {e}")))?;
    Ok(builder()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Trusts a server whose chain carries a CA with this SHA-256 and verifies under it.
pub fn pinned_by_fingerprint(fp: &str) -> Result<rustls::ClientConfig, SyncError> {
    let v = FingerprintVerifier {
        fingerprint: fp.to_ascii_lowercase(),
        provider: provider(),
    };
    Ok(builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(v))
        .with_no_client_auth())
}

#[derive(Debug)]
struct FingerprintVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General("the hub's CA does not match the enrollment token".into())
            })?;
        // Full verification (signature, validity, name) under the pinned CA alone.
        let inner =
            verifier(ca.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
