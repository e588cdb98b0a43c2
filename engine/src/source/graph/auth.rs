//! OAuth 2.0 client credentials against the Microsoft identity platform:
//! a client secret, or a client assertion (an RS256 JWT signed with the app
//! certificate's key). Tokens are cached and refreshed before they expire.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::config::Secret;

/// Refresh this long before the token's stated expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

pub enum Credential {
    Secret(Secret),
    Certificate { key: RsaKeyPair, x5t: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Credential::Secret(***)"),
            Credential::Certificate { x5t, .. } => write!(f, "Credential::Certificate(x5t {x5t})"),
        }
    }
}

impl Credential {
    /// The certificate (PEM) and its private key (PEM, PKCS#8 or PKCS#1 RSA).
    pub fn certificate(cert_pem: &[u8], key_pem: &str) -> Result<Self, String> {
        let cert = rustls_pemfile::certs(&mut &cert_pem[..])
            .next()
            .ok_or("client_certificate holds no PEM certificate")?
            .map_err(|e| format!("client_certificate: {e}"))?;
        let thumbprint = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| format!("client_key: {e}"))?
            .ok_or("client_key holds no PEM private key")?;
        let key = match &key {
            rustls::pki_types::PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            rustls::pki_types::PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err("client_key must be an RSA key (PKCS#8 or PKCS#1)".into()),
        }
        .map_err(|e| format!("client_key is not a usable RSA key: {e}"))?;
        Ok(Credential::Certificate { key, x5t: URL_SAFE_NO_PAD.encode(thumbprint.as_ref()) })
    }

    /// The form fields that prove who we are, for `endpoint`.
    pub fn form(&self, client_id: &str, endpoint: &str) -> Result<Vec<(&'static str, String)>, String> {
        match self {
            Credential::Secret(s) => Ok(vec![("client_secret", s.expose().to_string())]),
            Credential::Certificate { key, x5t } => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": x5t });
                let claims = serde_json::json!({
                    "aud": endpoint,
                    "iss": client_id,
                    "sub": client_id,
                    "jti": uuid::Uuid::new_v4().to_string(),
                    "nbf": now,
                    "iat": now,
                    "exp": now + 600,
                });
                let signing_input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                );
                let mut signature = vec![0u8; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
                    .map_err(|_| "signing the client assertion failed".to_string())?;
                Ok(vec![
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
                    ("client_assertion", format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))),
                ])
            }
        }
    }
}

/// A cached access token.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub refresh_at: Instant,
}

impl Token {
    pub fn new(value: String, expires_in: u64) -> Self {
        let life = Duration::from_secs(expires_in);
        let refresh_at = Instant::now() + life.saturating_sub(REFRESH_MARGIN.min(life / 2));
        Self { value, refresh_at }
    }

    pub fn fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }

    /// The application permissions (`roles`) an app-only token carries.
    pub fn roles(&self) -> Vec<String> {
        let payload = self.value.split('.').nth(1).and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok());
        let claims: Option<serde_json::Value> = payload.and_then(|p| serde_json::from_slice(&p).ok());
        claims
            .and_then(|c| c.get("roles").and_then(|r| r.as_array()).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}
