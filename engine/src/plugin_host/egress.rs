//! The seam between a connector's `http` import and the policy that decides
//! what goes out. The plugin host only forwards: which hosts, addresses,
//! credentials, limits and retries apply is the source's business
//! (`source::connector::egress`), which knows nothing about wasmtime.

use std::time::Instant;

/// A request as the plugin asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the plugin gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request got no response, as the plugin is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpFailure {
    #[error("refused: {0}")]
    Refused(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("transport: {0}")]
    Transport(String),
}

/// Sends a connector's requests under its source's policy.
pub trait Egress: Send + Sync {
    /// Sends `request`, giving up by `deadline` (the running call's).
    fn send(&self, request: HttpRequest, deadline: Option<Instant>) -> Result<HttpResponse, HttpFailure>;
}
