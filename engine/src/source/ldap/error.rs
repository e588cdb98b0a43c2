//! Turning ldap3 and rustls errors into [`SourceError`]s an admin can act on.
//! Every message names the source and the URL (through the variant) and never a secret.

use std::io;

use ldap3::{LdapError, LdapResult};

use super::tls::{TrustRoots, describe_tls_error};
use crate::source::SourceError;

/// What error messages need to know about the connection.
#[derive(Debug, Clone)]
pub struct ErrorContext {
    pub source_name: String,
    pub url: String,
    /// `host:port` part of the URL, for messages.
    pub authority: String,
    pub host: String,
    /// `None` on a plain connection.
    pub trust: Option<TrustRoots>,
    /// The certificate the server presented, for TLS error messages.
    pub cert_seen: super::tls::CertSeen,
    pub bind_dn: String,
    pub timeout_secs: u64,
}

impl ErrorContext {
    pub fn connect(&self, message: impl Into<String>) -> SourceError {
        SourceError::Connect { source_name: self.source_name.clone(), url: self.url.clone(), message: message.into() }
    }

    pub fn tls(&self, message: impl Into<String>) -> SourceError {
        SourceError::Tls { source_name: self.source_name.clone(), url: self.url.clone(), message: message.into() }
    }

    pub fn bind(&self, message: impl Into<String>) -> SourceError {
        SourceError::Bind {
            source_name: self.source_name.clone(),
            bind_dn: self.bind_dn.clone(),
            message: message.into(),
        }
    }

    pub fn search(&self, base: &str, message: impl Into<String>) -> SourceError {
        SourceError::Search { source_name: self.source_name.clone(), base: base.to_string(), message: message.into() }
    }

    pub fn other(&self, message: impl Into<String>) -> SourceError {
        SourceError::Other { source_name: self.source_name.clone(), message: message.into() }
    }

    /// An error while opening the connection (TCP, TLS, StartTLS).
    pub fn connect_failed(&self, e: LdapError) -> SourceError {
        match e {
            LdapError::Io { source } => self.io_failed(source),
            LdapError::Rustls { source } => {
                self.tls(describe_tls_error(&source, self.trust.as_ref().unwrap_or(&TrustRoots::System), &self.host))
            }
            LdapError::DNSName { .. } => self.tls(format!(
                "the host '{}' cannot be checked against a certificate (use a DNS name or an IP address)",
                self.host
            )),
            LdapError::Timeout { .. } => self.connect(format!(
                "no connection within {} s (timeout_secs); is {} reachable?",
                self.timeout_secs, self.authority
            )),
            // The StartTLS extended operation itself was refused.
            LdapError::LdapResult { result } => {
                self.tls(format!("the server refused StartTLS: {}", describe_result(&result)))
            }
            LdapError::UrlParsing { source } => self.connect(format!("the url is not valid: {source}")),
            LdapError::UnknownScheme(s) => self.connect(format!("unknown URL scheme '{s}' (use ldap:// or ldaps://)")),
            LdapError::EndOfStream | LdapError::ResultRecv { .. } => {
                self.connect("the server closed the connection during set-up")
            }
            other => self.connect(other.to_string()),
        }
    }

    fn io_failed(&self, e: io::Error) -> SourceError {
        // tokio-rustls reports handshake failures as I/O errors wrapping the rustls error.
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            let mut message = describe_tls_error(tls, self.trust.as_ref().unwrap_or(&TrustRoots::System), &self.host);
            if let (rustls::Error::InvalidCertificate(_), Some(cert)) = (tls, self.cert_seen.get()) {
                message.push_str(&format!("; the server presented {cert}"));
            }
            return self.tls(message);
        }
        let message = match e.kind() {
            io::ErrorKind::ConnectionRefused => {
                format!(
                    "connection refused: nothing is listening on {} (is the server running, is the port right?)",
                    self.authority
                )
            }
            io::ErrorKind::TimedOut => format!("connecting to {} timed out", self.authority),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe
                if self.trust.is_some() =>
            {
                return self.tls(format!(
                    "the connection was closed during the TLS handshake ({e}); is this a TLS port? ldaps:// needs the LDAPS port (636), a plain port needs ldap:// with starttls = true"
                ));
            }
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
                format!("the server closed the connection ({e})")
            }
            _ => {
                let text = e.to_string();
                // getaddrinfo failures come as uncategorised errors; recognise them by their text.
                if text.contains("lookup") || text.contains("resolve") || text.contains("Name or service not known") {
                    format!("cannot resolve the host name '{}' ({text})", self.host)
                } else {
                    text
                }
            }
        };
        self.connect(message)
    }

    /// An error from the bind operation itself (not its result code).
    pub fn bind_failed(&self, e: LdapError) -> SourceError {
        match e {
            LdapError::Timeout { .. } => {
                self.bind(format!("the server did not answer the bind within {} s (timeout_secs)", self.timeout_secs))
            }
            LdapError::LdapResult { result } => self.bind_result(&result),
            e => self.bind(format!("the connection failed during the bind: {}", describe_ldap_error(&e))),
        }
    }

    /// A bind that completed with a non-success result code.
    pub fn bind_result(&self, result: &LdapResult) -> SourceError {
        let message = match result.rc {
            49 => {
                // AD puts the reason in the text ("…, data 52e, v1db1"): say it in words.
                let mut m = match ad_data_code(&result.text) {
                    Some((code, meaning)) => format!("{meaning} (Active Directory data code {code})"),
                    None => "invalid credentials: the bind DN or password is wrong".to_string(),
                };
                if !result.text.is_empty() {
                    m.push_str(&format!(" (server says: {})", result.text.trim()));
                }
                m
            }
            8 | 13 => format!(
                "{}; the server wants an encrypted connection: use ldaps:// or starttls = true",
                describe_result(result)
            ),
            _ => describe_result(result),
        };
        self.bind(message)
    }

    /// An error while searching (`start`/`next` of the stream).
    pub fn search_failed(&self, base: &str, e: LdapError) -> SourceError {
        match e {
            LdapError::Timeout { .. } => self.search(
                base,
                format!("the server sent nothing for {} s (timeout_secs); the read is incomplete", self.timeout_secs),
            ),
            LdapError::FilterParsing => self.search(base, "the filter is not a valid LDAP filter"),
            LdapError::LdapResult { result } => self.search(base, describe_result(&result)),
            e => self.search(base, format!("the connection failed during the search: {}", describe_ldap_error(&e))),
        }
    }

    /// A search that ended with a non-success result code.
    pub fn search_result(&self, base: &str, result: &LdapResult, entries: u64) -> SourceError {
        let hint = match result.rc {
            4 => format!(
                " after {entries} entries: the server's size limit for the bind account is too small (slapd: olcLimits size=unlimited for it; AD: MaxPageSize/paging); a partial read is not used"
            ),
            3 => {
                " (the server's time limit for the bind account stopped the search; the read is incomplete)".to_string()
            }
            32 => {
                " (the base DN does not exist, or the bind account may not see it; check the base in the configuration)"
                    .to_string()
            }
            50 => " (the bind account may not read this base)".to_string(),
            10 => " (the base is held by another server; point url at the server that holds it)".to_string(),
            12 => " (the server does not support a control the search needs, such as paged results)".to_string(),
            _ => String::new(),
        };
        self.search(base, format!("{}{hint}", describe_result(result)))
    }
}

/// `rc 49 (invalidCredentials): text`.
pub fn describe_result(result: &LdapResult) -> String {
    let mut s = format!("result code {} ({})", result.rc, rc_name(result.rc));
    let text = result.text.trim();
    if !text.is_empty() {
        s.push_str(": ");
        s.push_str(text);
    }
    if !result.matched.is_empty() {
        s.push_str(&format!(" [matched DN '{}']", result.matched));
    }
    s
}

fn describe_ldap_error(e: &LdapError) -> String {
    match e {
        LdapError::EndOfStream | LdapError::ResultRecv { .. } | LdapError::OpSend { .. } => {
            "the server closed the connection".to_string()
        }
        LdapError::Io { source } => format!("I/O error: {source}"),
        other => other.to_string(),
    }
}

/// RFC 4511 result code names.
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        14 => "saslBindInProgress",
        16 => "noSuchAttribute",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        81 => "serverDown",
        85 => "timeout",
        88 => "userCancelled",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            source_name: "corp".into(),
            url: "ldaps://ldap.example.com:636".into(),
            authority: "ldap.example.com:636".into(),
            host: "ldap.example.com".into(),
            trust: Some(TrustRoots::CaFile("/etc/roster/ca.pem".into())),
            cert_seen: Default::default(),
            bind_dn: "cn=svc,dc=example,dc=com".into(),
            timeout_secs: 30,
        }
    }

    #[test]
    fn ad_bind_data_codes_are_said_in_words() {
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1";
        let SourceError::Bind { message, .. } = ctx().bind_result(&result(49, text)) else { panic!("bind error") };
        assert!(message.starts_with("the account is locked out (Active Directory data code 775)"), "{message}");
        assert_eq!(ad_data_code("…, data 52e, v1db1").map(|(c, _)| c), Some("52e".to_string()));
        assert_eq!(ad_data_code("no code here"), None);
    }

    fn result(rc: u32, text: &str) -> LdapResult {
        LdapResult { rc, matched: String::new(), text: text.into(), refs: vec![], ctrls: vec![] }
    }

    #[test]
    fn bind_49_says_invalid_credentials() {
        let e = ctx().bind_result(&result(49, ""));
        let msg = e.to_string();
        assert!(matches!(e, SourceError::Bind { .. }));
        assert!(msg.contains("invalid credentials") && msg.contains("cn=svc,dc=example,dc=com"), "{msg}");
    }

    #[test]
    fn tls_errors_inside_io_errors_are_recognised() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = ctx().connect_failed(LdapError::Io { source: io::Error::new(io::ErrorKind::InvalidData, inner) });
        let msg = e.to_string();
        assert!(matches!(e, SourceError::Tls { .. }), "{e:?}");
        assert!(msg.contains("not signed by a CA in ca_file '/etc/roster/ca.pem'"), "{msg}");
    }

    #[test]
    fn refused_connection_is_a_connect_error() {
        let e = ctx().connect_failed(LdapError::Io { source: io::Error::from(io::ErrorKind::ConnectionRefused) });
        assert!(matches!(e, SourceError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("ldap.example.com:636"), "{e}");
    }

    #[test]
    fn size_limit_is_explained() {
        let e = ctx().search_result("ou=people,dc=example,dc=com", &result(4, ""), 500);
        let msg = e.to_string();
        assert!(msg.contains("sizeLimitExceeded") && msg.contains("after 500 entries"), "{msg}");
    }
}

/// The `data XXX` code AD puts in a failed bind's diagnostic text, and what it means.
pub fn ad_data_code(text: &str) -> Option<(String, &'static str)> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("data ")?;
    let code: String = lower[at + 5..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    let meaning = match code.as_str() {
        "525" => "the bind account does not exist (user not found)",
        "52e" => "invalid credentials: the password is wrong for this account",
        "530" => "the account may not sign in at this time (logon hours)",
        "531" => "the account may not sign in from this workstation",
        "532" => "the account's password has expired",
        "533" => "the account is disabled",
        "568" => "the account has too many security groups (token too large)",
        "701" => "the account has expired",
        "773" => "the account must change its password before it can bind",
        "775" => "the account is locked out",
        _ => return None,
    };
    Some((code, meaning))
}
