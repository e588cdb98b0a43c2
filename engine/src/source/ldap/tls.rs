//! TLS client configuration for LDAP sources: rustls with the ring provider only.
//!
//! Verification is on unless the admin turns it off explicitly. Roots come from
//! `ca_file` (all certificates in the PEM file) or else from the system store.
//! The client config is always built with `builder_with_provider`, so nothing
//! depends on a process-wide default provider (and aws-lc-rs never sneaks in).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where the trusted roots come from; used to word verification errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    CaFile(PathBuf),
    System,
    /// `tls_insecure_skip_verify = true`.
    Insecure,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read ca_file '{path}': {message}")]
    CaFileRead { path: String, message: String },
    #[error("ca_file '{path}' holds no PEM certificates (expected -----BEGIN CERTIFICATE----- blocks)")]
    CaFileEmpty { path: String },
    #[error("ca_file '{path}': certificate {index} is not usable as a trust anchor: {message}")]
    CaFileBadCert { path: String, index: usize, message: String },
    #[error(
        "no usable system CA certificates were found ({message}); set ca_file to the CA that signs the server's certificate"
    )]
    NoSystemRoots { message: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate the server last presented, as "subject …, issuer …",
/// so a verification failure can say which certificate was refused.
#[derive(Debug, Clone, Default)]
pub struct CertSeen(Arc<std::sync::Mutex<Option<String>>>);

impl CertSeen {
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    fn record(&self, der: &[u8]) {
        let text = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => format!("subject '{}', issuer '{}'", cert.subject(), cert.issuer()),
            Err(_) => "a certificate that could not be parsed".to_string(),
        };
        if let Ok(mut g) = self.0.lock() {
            *g = Some(text);
        }
    }
}

/// Builds the rustls client configuration for a source.
pub fn client_config(
    ca_file: Option<&Path>,
    insecure: bool,
) -> Result<(Arc<ClientConfig>, TrustRoots, CertSeen), TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let seen = CertSeen::default();
    if insecure {
        let verifier = AcceptAnyCertificate { algorithms: provider.signature_verification_algorithms };
        let config = builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth();
        return Ok((Arc::new(config), TrustRoots::Insecure, seen));
    }
    let (roots, trust) = match ca_file {
        Some(path) => (roots_from_pem(path)?, TrustRoots::CaFile(path.to_path_buf())),
        None => (system_roots()?, TrustRoots::System),
    };
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let verifier = Recording { inner, seen: seen.clone() };
    let config = builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth();
    Ok((Arc::new(config), trust, seen))
}

/// webpki verification, unchanged, that also notes which certificate it saw.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: CertSeen,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.seen.record(end_entity.as_ref());
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Every certificate in a PEM file, as trust anchors.
fn roots_from_pem(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| TlsSetupError::CaFileRead { path: shown.clone(), message: e.to_string() })?;
    let mut store = RootCertStore::empty();
    let mut reader = bytes.as_slice();
    for (i, cert) in rustls_pemfile::certs(&mut reader).enumerate() {
        let cert = cert.map_err(|e| TlsSetupError::CaFileRead { path: shown.clone(), message: e.to_string() })?;
        store.add(cert).map_err(|e| TlsSetupError::CaFileBadCert {
            path: shown.clone(),
            index: i + 1,
            message: e.to_string(),
        })?;
    }
    if store.is_empty() {
        return Err(TlsSetupError::CaFileEmpty { path: shown });
    }
    Ok(store)
}

fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    // Some system bundles carry a few certificates webpki cannot parse; skip those
    // rather than refusing every server.
    let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let message = if loaded.errors.is_empty() {
            "the system store is empty".to_string()
        } else {
            loaded.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
        };
        return Err(TlsSetupError::NoSystemRoots { message });
    }
    for e in &loaded.errors {
        tracing::debug!(error = %e, "some system CA certificates could not be loaded");
    }
    Ok(store)
}

/// Accepts any server certificate, for `tls_insecure_skip_verify = true`. The
/// handshake signatures are still checked, so the server must at least hold the
/// key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An admin-actionable sentence for a rustls error met while connecting.
pub fn describe_tls_error(e: &rustls::Error, trust: &TrustRoots, host: &str) -> String {
    let roots = match trust {
        TrustRoots::CaFile(p) => format!("a CA in ca_file '{}'", p.display()),
        TrustRoots::System => "a CA in the system trust store (set ca_file to the CA that signs it)".to_string(),
        TrustRoots::Insecure => "any trusted CA".to_string(),
    };
    match e {
        rustls::Error::InvalidCertificate(ce) => {
            let what = match ce {
                CertificateError::UnknownIssuer => format!("the server's certificate is not signed by {roots}"),
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate is not valid for '{host}' (the host in url must be one of the certificate's subject alternative names)"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet (check the clocks)".to_string()
                }
                CertificateError::Revoked => "the server's certificate is revoked".to_string(),
                CertificateError::BadSignature => "the server's certificate has a bad signature".to_string(),
                CertificateError::BadEncoding => "the server's certificate is malformed".to_string(),
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                    "the server's certificate is not meant for TLS servers (extendedKeyUsage)".to_string()
                }
                _ => "the server's certificate was refused".to_string(),
            };
            format!("{what} ({e})")
        }
        rustls::Error::AlertReceived(alert) => format!("the server ended the TLS handshake with alert {alert:?}"),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "the server did not answer with TLS ({e}); ldaps:// needs the LDAPS port (636), a plain port needs ldap:// with starttls = true"
        ),
        _ => format!("TLS handshake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing), false).expect_err("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = client_config(Some(&empty), false).expect_err("empty");
        assert!(matches!(err, TlsSetupError::CaFileEmpty { .. }), "{err}");
    }

    #[test]
    fn insecure_config_builds_without_roots() {
        let (_, trust, _) = client_config(None, true).expect("builds");
        assert_eq!(trust, TrustRoots::Insecure);
    }

    #[test]
    fn unknown_issuer_names_the_ca_file() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let msg = describe_tls_error(&e, &TrustRoots::CaFile("/etc/roster/ca.pem".into()), "ldap.example.com");
        assert!(msg.contains("not signed by a CA in ca_file '/etc/roster/ca.pem'"), "{msg}");
    }
}
