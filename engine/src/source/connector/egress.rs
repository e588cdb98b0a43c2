//! What a connector's HTTP requests may do, enforced by the host.
//!
//! The policy is the source's (`[[tenant.source]]` with `kind = "plugin"`):
//! an allowlist of hosts and ports; `https` only unless plain HTTP is
//! allowed; names resolved here and refused when any address is loopback,
//! private, link-local or otherwise not public (unless the source allows
//! private addresses) — and the connection goes to exactly the addresses
//! checked, so a name cannot change its answer in between (DNS rebinding); no
//! redirects and no proxy; a request rate; a response size cap; retries of
//! throttled or failed reads inside the call's deadline; and the source's
//! credentials added here, so the connector never holds a secret.
//!
//! Nothing here knows wasmtime: the plugin host calls [`HostEgress`] through
//! its [`Egress`] seam.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderName, HeaderValue};

use crate::config::secret::Secret;
use crate::config::{ConnectorAuth, ConnectorSourceConfig, HostPattern};
use crate::plugin_host::{Egress, HttpFailure, HttpRequest, HttpResponse};

/// Headers the host owns: credentials, routing and framing.
const HOST_OWNED_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "cookie", "host", "content-length", "transfer-encoding", "connection"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/// Longest wait between retries when the server names none.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The credential as resolved from the tenant's secret references.
pub enum Credential {
    Bearer(Secret),
    Basic { username: String, password: Secret },
    OAuth { token_url: String, client_id: String, client_secret: Secret, scope: Option<String> },
}

impl Credential {
    pub fn resolve(auth: &ConnectorAuth, base_dir: &std::path::Path) -> Result<Self, String> {
        Ok(match auth {
            ConnectorAuth::Bearer { token } => {
                Credential::Bearer(token.resolve(base_dir).map_err(|e| format!("auth.token: {e}"))?)
            }
            ConnectorAuth::Basic { username, password } => Credential::Basic {
                username: username.clone(),
                password: password.resolve(base_dir).map_err(|e| format!("auth.password: {e}"))?,
            },
            ConnectorAuth::OauthClientCredentials { token_url, client_id, client_secret, scope } => Credential::OAuth {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.resolve(base_dir).map_err(|e| format!("auth.client_secret: {e}"))?,
                scope: scope.clone(),
            },
        })
    }
}

/// A resolved address the policy refuses; found again in reqwest's error
/// chain to tell the connector why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AddressRefused(String);

/// Why an address is not one a connector may reach without
/// `allow_private_addresses`; `None` for a public address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("a link-local address (cloud metadata services live here)")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || a == 0 || a >= 240 {
                Some("not a unicast public address")
            } else if v4.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0) {
                Some("a reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast public address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private (unique local) address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("a reserved address")
            } else if let Some(v4) = embedded_v4(&v6) {
                // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4
                // address inside them: judge that one.
                non_public(IpAddr::V4(v4))
            } else {
                None
            }
        }
    }
}

fn embedded_v4(v6: &std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let from = |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        Some(from(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(from(s[1], s[2]))
    } else {
        None
    }
}

/// Resolves names for the connector's client and refuses non-public answers.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(Box::new(AddressRefused(format!("'{host}' resolves to no address"))) as _);
            }
            if !allow_private {
                // Any non-public answer refuses the name: a name that mixes
                // them is how a rebinding attack starts.
                if let Some((addr, why)) = addrs.iter().find_map(|a| non_public(a.ip()).map(|w| (a.ip(), w))) {
                    return Err(Box::new(AddressRefused(format!(
                        "'{host}' resolves to {addr}, {why}; the source does not allow private addresses (allow_private_addresses = true allows them)"
                    ))) as _);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

struct Pacing {
    next_slot: Instant,
    token: Option<(String, Instant)>,
    /// Why the token endpoint last refused the source's credentials.
    auth_failure: Option<String>,
}

/// The host side of one connector source's `http` import.
pub struct HostEgress {
    tenant: String,
    source: String,
    allow: Vec<HostPattern>,
    allow_private: bool,
    allow_plain_http: bool,
    timeout: Duration,
    max_response_bytes: usize,
    min_interval: Duration,
    max_retries: u32,
    credential: Option<Credential>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    pacing: Mutex<Pacing>,
}

impl HostEgress {
    pub fn new(
        tenant: &str,
        config: &ConnectorSourceConfig,
        base_dir: &std::path::Path,
        credential: Option<Credential>,
    ) -> Result<Arc<Self>, String> {
        let allow = config.allow_hosts.iter().map(|h| HostPattern::parse(h)).collect::<Result<Vec<_>, _>>()?;
        let ca_file = config.ca_file.as_ref().map(|p| base_dir.join(p));
        let (tls, _, _) =
            crate::source::ldap::tls::client_config(ca_file.as_deref(), false).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private: config.allow_private_addresses }))
            .user_agent(concat!("roster/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
        Ok(Arc::new(Self {
            tenant: tenant.to_string(),
            source: config.name.clone(),
            allow,
            allow_private: config.allow_private_addresses,
            allow_plain_http: config.allow_plain_http,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            max_response_bytes: usize::try_from(config.max_response_kb.saturating_mul(1024)).unwrap_or(usize::MAX),
            min_interval: Duration::from_secs_f64(1.0 / config.max_requests_per_second),
            max_retries: config.max_retries,
            credential,
            client,
            runtime,
            pacing: Mutex::new(Pacing { next_slot: Instant::now(), token: None, auth_failure: None }),
        }))
    }

    /// Why the token endpoint refused the credentials, if it did since the
    /// last call: the source reports that as an authentication failure.
    pub fn take_auth_failure(&self) -> Option<String> {
        self.pacing.lock().ok().and_then(|mut p| p.auth_failure.take())
    }

    fn refused(&self, why: String) -> HttpFailure {
        tracing::warn!(tenant = %self.tenant, source = %self.source, reason = %why, "connector request refused");
        // The connector's error is wrapped in the source's name already.
        HttpFailure::Refused(why)
    }

    /// The checks that need no network: scheme, method, allowlist, headers, literal addresses.
    fn admit(&self, request: &HttpRequest) -> Result<reqwest::Url, HttpFailure> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| self.refused(format!("'{}' is not an absolute URL: {e}", request.url)))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_plain_http => {}
            "http" => {
                return Err(self.refused(format!(
                    "plain http:// is not allowed ({}); use https:// (allow_plain_http = true allows it)",
                    request.url
                )));
            }
            other => return Err(self.refused(format!("scheme '{other}' is not allowed; only https:// (and http://)"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.refused("credentials in the URL are not allowed; the host adds them".into()));
        }
        if !METHODS.contains(&request.method.as_str()) {
            return Err(self.refused(format!("method '{}' is not allowed", request.method)));
        }
        let (host, port) = match (url.host(), url.port_or_known_default()) {
            (Some(h), Some(p)) => (h, p),
            _ => return Err(self.refused(format!("'{}' names no host", request.url))),
        };
        let host_text = match &host {
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(a) => a.to_string(),
            url::Host::Ipv6(a) => a.to_string(),
        };
        if !self.allow.iter().any(|p| p.matches(&host_text, port)) {
            return Err(self.refused(format!(
                "host '{host_text}:{port}' is not in allow_hosts [{}]",
                self.allow
                    .iter()
                    .map(|p| format!(
                        "{}{}{}",
                        if p.wildcard { "*." } else { "" },
                        p.host,
                        p.port.map(|p| format!(":{p}")).unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let literal = match host {
            url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
            url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
            url::Host::Domain(_) => None,
        };
        if let (Some(ip), false) = (literal, self.allow_private) {
            if let Some(why) = non_public(ip) {
                return Err(self.refused(format!(
                    "{ip} is {why}; the source does not allow private addresses (allow_private_addresses = true allows them)"
                )));
            }
        }
        for (name, _) in &request.headers {
            let lower = name.to_ascii_lowercase();
            if HOST_OWNED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                return Err(self.refused(format!(
                    "header '{name}' is set by the host; a connector may not set it (credentials come from the source's `auth`)"
                )));
            }
        }
        Ok(url)
    }

    /// Waits for the next request slot of the source's rate, unless that
    /// would pass the deadline.
    fn pace(&self, deadline: Instant) -> Result<(), HttpFailure> {
        let slot = {
            let mut p = self.pacing.lock().map_err(|_| HttpFailure::Transport("pacing lock poisoned".into()))?;
            let slot = p.next_slot.max(Instant::now());
            if slot > deadline {
                return Err(HttpFailure::Timeout(
                    "the rate limit (max_requests_per_second) leaves no slot before the call's deadline".into(),
                ));
            }
            p.next_slot = slot + self.min_interval;
            slot
        };
        let wait = slot.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        Ok(())
    }

    fn run<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        // A current-thread runtime cannot be entered from inside another
        // runtime (an API-triggered run): then drive it from a thread of its own.
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| match s.spawn(|| self.runtime.block_on(fut)).join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
        } else {
            self.runtime.block_on(fut)
        }
    }

    /// The `Authorization` value, fetching an OAuth token when needed.
    fn authorization(&self, deadline: Instant, renew: bool) -> Result<Option<String>, HttpFailure> {
        match &self.credential {
            None => Ok(None),
            Some(Credential::Bearer(token)) => Ok(Some(format!("Bearer {}", token.expose()))),
            Some(Credential::Basic { username, password }) => {
                let pair = format!("{username}:{}", password.expose());
                Ok(Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))))
            }
            Some(Credential::OAuth { token_url, client_id, client_secret, scope }) => {
                if !renew {
                    if let Ok(p) = self.pacing.lock() {
                        if let Some((t, expires)) = &p.token {
                            if *expires > Instant::now() + Duration::from_secs(30) {
                                return Ok(Some(format!("Bearer {t}")));
                            }
                        }
                    }
                }
                let mut form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.expose().to_string()),
                ];
                if let Some(s) = scope {
                    form.push(("scope", s.clone()));
                }
                // The token endpoint is held to the same policy as the connector's requests.
                let endpoint = HttpRequest {
                    method: "POST".into(),
                    url: token_url.clone(),
                    headers: Vec::new(),
                    body: Vec::new(),
                };
                self.admit(&endpoint).map_err(|e| match e {
                    HttpFailure::Refused(why) => HttpFailure::Refused(format!("auth.token_url: {why}")),
                    other => other,
                })?;
                let timeout = self.timeout.min(deadline.saturating_duration_since(Instant::now()));
                let result = self.run(async {
                    let r = self.client.post(token_url).form(&form).timeout(timeout).send().await?;
                    let status = r.status();
                    let body: serde_json::Value = r.json().await?;
                    Ok::<_, reqwest::Error>((status, body))
                });
                let (status, body) =
                    result.map_err(|e| HttpFailure::Transport(format!("token endpoint: {}", describe(&e))))?;
                let token = body.get("access_token").and_then(|v| v.as_str());
                let (true, Some(token)) = (status.is_success(), token) else {
                    // The error fields only: never echo the request.
                    let why =
                        body.get("error_description").or(body.get("error")).and_then(|v| v.as_str()).unwrap_or("");
                    let message = format!("the token endpoint refused the client credentials ({status}) {why}");
                    // The source reports this as an authentication failure,
                    // whatever the connector makes of the refusal.
                    if let Ok(mut p) = self.pacing.lock() {
                        p.auth_failure = Some(message.clone());
                    }
                    return Err(HttpFailure::Refused(message));
                };
                let lifetime = body.get("expires_in").and_then(|v| v.as_u64()).unwrap_or(3600);
                if let Ok(mut p) = self.pacing.lock() {
                    p.token = Some((token.to_string(), Instant::now() + Duration::from_secs(lifetime)));
                }
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    fn attempt(
        &self,
        request: &HttpRequest,
        url: &reqwest::Url,
        authorization: Option<&str>,
        deadline: Instant,
    ) -> Result<(HttpResponse, Option<Duration>), HttpFailure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpFailure::Timeout("no time left in the call".into()));
        }
        let timeout = self.timeout.min(left);
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| self.refused(format!("method '{}' is not allowed", request.method)))?;
        let mut builder = self.client.request(method, url.clone()).timeout(timeout);
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.refused(format!("'{name}' is not a valid header name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| self.refused(format!("header '{name}' has a value that is not valid")))?;
            builder = builder.header(name, value);
        }
        if let Some(a) = authorization {
            let mut value = HeaderValue::from_str(a)
                .map_err(|_| HttpFailure::Transport("the credential is not a valid header value".into()))?;
            value.set_sensitive(true);
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        let cap = self.max_response_bytes;
        self.run(async move {
            let mut response = builder.send().await.map_err(|e| failure(&e, timeout))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            if response.content_length().is_some_and(|n| n > cap as u64) {
                return Err(too_large(cap));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| failure(&e, timeout))? {
                if body.len() + chunk.len() > cap {
                    return Err(too_large(cap));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((HttpResponse { status, headers, body }, retry_after))
        })
    }
}

fn too_large(cap: usize) -> HttpFailure {
    HttpFailure::TooLarge(format!("the response is over max_response_kb = {}", cap / 1024))
}

/// A reqwest error in words, with the policy's refusal found in its chain.
fn failure(e: &reqwest::Error, timeout: Duration) -> HttpFailure {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(refused) = c.downcast_ref::<AddressRefused>() {
            return HttpFailure::Refused(refused.to_string());
        }
        cause = c.source();
    }
    if e.is_timeout() {
        return HttpFailure::Timeout(format!("no complete answer within {} ms", timeout.as_millis()));
    }
    HttpFailure::Transport(describe(e))
}

/// reqwest's message and its causes, without the URL's query.
fn describe(e: &reqwest::Error) -> String {
    // The message without the URL: a query string may carry anything.
    let mut text = match e.url() {
        Some(url) => e.to_string().replace(url.as_str(), url.path()),
        None => e.to_string(),
    };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

impl Egress for HostEgress {
    fn send(&self, request: HttpRequest, deadline: Option<Instant>) -> Result<HttpResponse, HttpFailure> {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.timeout);
        let url = self.admit(&request)?;
        let idempotent = matches!(request.method.as_str(), "GET" | "HEAD");
        let mut renewed = false;
        let mut attempt = 0u32;
        loop {
            self.pace(deadline)?;
            let authorization = self.authorization(deadline, false)?;
            let started = Instant::now();
            let outcome = self.attempt(&request, &url, authorization.as_deref(), deadline);
            tracing::debug!(
                tenant = %self.tenant,
                source = %self.source,
                method = %request.method,
                host = url.host_str().unwrap_or(""),
                path = url.path(),
                status = outcome.as_ref().map(|(r, _)| r.status).unwrap_or(0),
                ms = started.elapsed().as_millis() as u64,
                "connector request"
            );
            let wait = match &outcome {
                Ok((r, _))
                    if r.status == 401 && !renewed && matches!(self.credential, Some(Credential::OAuth { .. })) =>
                {
                    // The token may have been revoked early: one fresh token, then the answer stands.
                    renewed = true;
                    self.authorization(deadline, true)?;
                    continue;
                }
                Ok((r, retry_after)) if idempotent && retryable(r.status) && attempt < self.max_retries => {
                    Some(retry_after.unwrap_or_else(|| backoff(attempt)))
                }
                Err(HttpFailure::Transport(_)) if idempotent && attempt < self.max_retries => Some(backoff(attempt)),
                _ => None,
            };
            match wait {
                Some(wait) if Instant::now() + wait < deadline => {
                    tracing::info!(tenant = %self.tenant, source = %self.source, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, "connector request retried");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                _ => return outcome.map(|(r, _)| r),
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(6))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(non_public(ip.parse().unwrap()).is_some(), "{ip} should not be public");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip} is public");
        }
    }

    fn policy(toml_text: &str) -> Arc<HostEgress> {
        let config: crate::config::ConnectorSourceConfig =
            toml::from_str(&format!("name = \"vendor\"\nkind = \"plugin\"\nplugin = \"x.wasm\"\n{toml_text}"))
                .expect("config");
        HostEgress::new("t", &config, std::path::Path::new("."), None).expect("egress")
    }

    #[test]
    fn requests_are_paced_to_the_source_rate() {
        let egress = policy("max_requests_per_second = 20\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = Instant::now();
        for _ in 0..11 {
            egress.pace(deadline).expect("a slot");
        }
        // Eleven requests at 20 a second: the last one waits for its slot at 0.5 s.
        assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
        // A slot past the deadline is refused instead of waited for.
        let err = egress.pace(Instant::now()).expect_err("no slot before the deadline");
        assert!(err.to_string().contains("rate limit"), "{err}");
    }

    #[test]
    fn requests_outside_the_policy_are_refused_before_any_network() {
        let egress = policy("allow_hosts = [\"api.example.com\", \"10.0.0.5\"]\n");
        let req = |url: &str, headers: &[(&str, &str)]| HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: Vec::new(),
        };
        let refused = |r: HttpRequest| egress.admit(&r).expect_err("refused").to_string();
        assert!(refused(req("https://evil.example.net/", &[])).contains("not in allow_hosts"));
        assert!(refused(req("http://api.example.com/", &[])).contains("plain http://"));
        assert!(refused(req("https://10.0.0.5/", &[])).contains("private address"));
        assert!(refused(req("https://user:pw@api.example.com/", &[])).contains("credentials in the URL"));
        assert!(refused(req("ftp://api.example.com/", &[])).contains("scheme"));
        assert!(refused(req("https://api.example.com/", &[("Cookie", "a=b")])).contains("header 'Cookie'"));
        assert!(
            refused(req("https://api.example.com/", &[("Proxy-Authorization", "x")])).contains("is set by the host")
        );
        assert!(
            egress
                .admit(&req("https://api.example.com/scim/v2/Users?count=1", &[("Accept", "application/json")]))
                .is_ok()
        );
    }

    #[test]
    fn allowlist_entries_match_host_and_port() {
        let exact = HostPattern::parse("api.example.com:8443").unwrap();
        assert!(exact.matches("API.example.com", 8443));
        assert!(!exact.matches("api.example.com", 443));
        assert!(!exact.matches("evil-api.example.com", 8443));
        let any_port = HostPattern::parse("api.example.com").unwrap();
        assert!(any_port.matches("api.example.com", 443) && any_port.matches("api.example.com", 80));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com", 443) && wild.matches("a.b.example.com", 443));
        assert!(!wild.matches("example.com", 443) && !wild.matches("badexample.com", 443));
        let v6 = HostPattern::parse("[::1]:8080").unwrap();
        assert!(v6.matches("::1", 8080));
        assert!(HostPattern::parse("https://api.example.com").is_err());
        assert!(HostPattern::parse("api.example.com:http").is_err());
    }
}
