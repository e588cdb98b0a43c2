//! `kind = "ldap"`: any LDAP v3 server through ldap3.
//!
//! A read connects (`ldap://`, `ldaps://`, or `ldap://` + StartTLS), binds (simple
//! bind, or anonymously without `bind_dn`), then runs two paged subtree searches —
//! users, then groups — and hands every entry to the sink as it arrives, so memory
//! does not grow with the directory. Users come from the user search and groups
//! from the group search; the search decides the kind, not objectClass.
//!
//! `read` and `check` are synchronous: they drive ldap3 on a current-thread tokio
//! runtime owned by the source (measured: as fast as `ldapsearch`, where a
//! multi-thread runtime was ≈ 65 % slower). Call them from a plain thread (or
//! `spawn_blocking`), not from inside an async task.

pub mod client;
pub mod entry;
pub mod error;
pub mod syncrepl;
pub mod tls;

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::config::{LdapSourceConfig, Secret};
use crate::dn::Dn;
use crate::source::{EntryKind, ReadSummary, Sink, Source, SourceError, SourceItem};

use client::Endpoint;
use entry::EntryRules;
use error::ErrorContext;
use tls::TrustRoots;

/// The RFC 2696 paged results control, as listed in the root DSE.
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// RFC 4533 Sync Request control: the server runs syncprov.
const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";

/// Reads users and groups from an LDAP server.
#[derive(Debug)]
pub struct LdapSource {
    config: LdapSourceConfig,
    endpoint: Endpoint,
    /// Where the trusted roots come from; `None` on a plain connection.
    trust: Option<TrustRoots>,
    rules: EntryRules,
    /// Created on first use; dropped after a panic so the next run starts clean.
    runtime: Option<Runtime>,
    /// Where the last applied read ended (RFC 4533 cookies), if anywhere.
    resume: std::collections::BTreeMap<String, String>,
}

impl LdapSource {
    /// Validates the configuration and prepares TLS; does not connect (`read` and
    /// `check` do). `base_dir` is the configuration file's directory (for a relative
    /// `ca_file`); `password` is the resolved `bind_password`.
    pub fn new(config: &LdapSourceConfig, base_dir: &Path, password: Option<Secret>) -> Result<Self, SourceError> {
        let name = config.name.clone();
        let other = |message: String| SourceError::Other { source_name: name.clone(), message };

        let (scheme_tls, rest) = if let Some(rest) = config.url.strip_prefix("ldaps://") {
            (true, rest)
        } else if let Some(rest) = config.url.strip_prefix("ldap://") {
            (false, rest)
        } else {
            return Err(other(format!("url '{}' must start with ldap:// or ldaps://", config.url)));
        };
        if scheme_tls && config.starttls {
            return Err(other("starttls = true needs an ldap:// url (ldaps:// is already TLS)".into()));
        }
        let authority = rest.split('/').next().unwrap_or_default().to_string();
        let host = host_of(&authority);
        if host.is_empty() {
            return Err(other(format!("url '{}' names no host", config.url)));
        }
        let uses_tls = scheme_tls || config.starttls;

        match (&config.bind_dn, &password) {
            (Some(_), None) => return Err(other("bind_dn is set but bind_password is not".into())),
            (None, Some(_)) => return Err(other("bind_password is set but bind_dn is not".into())),
            // An empty password turns a simple bind into an "unauthenticated" bind that
            // many servers accept as anonymous: the run would read less than intended
            // without any error.
            (Some(_), Some(p)) if p.expose().is_empty() => {
                return Err(other("bind_password is empty; an empty password would bind anonymously".into()));
            }
            _ => {}
        }
        if config.anchor.trim().is_empty() {
            return Err(other("anchor must name an attribute".into()));
        }
        if !(1..=10_000).contains(&config.page_size) {
            return Err(other(format!("page_size {} must be 1..=10000", config.page_size)));
        }
        if config.timeout_secs == 0 {
            return Err(other("timeout_secs must be at least 1".into()));
        }
        for (what, base) in [("user_base", Some(&config.user_base)), ("group_base", config.group_base.as_ref())] {
            if let Some(base) = base {
                Dn::parse(base).map_err(|e| other(format!("{what}: {e}")))?;
            }
        }
        for (what, filter) in [("user_filter", &config.user_filter), ("group_filter", &config.group_filter)] {
            if ldap3::parse_filter(filter).is_err() {
                return Err(other(format!("{what} '{filter}' is not a valid LDAP filter")));
            }
        }

        let ca_file = config.ca_file.as_ref().map(|p| base_dir.join(p));
        let mut seen = tls::CertSeen::default();
        let (tls, trust) = if uses_tls {
            let (cfg, trust, cert_seen) =
                tls::client_config(ca_file.as_deref(), config.tls_insecure_skip_verify).map_err(|e| {
                    SourceError::Tls { source_name: name.clone(), url: config.url.clone(), message: e.to_string() }
                })?;
            seen = cert_seen;
            (Some(cfg), Some(trust))
        } else {
            if ca_file.is_some() || config.tls_insecure_skip_verify {
                tracing::warn!(
                    source = %name,
                    url = %config.url,
                    "ca_file / tls_insecure_skip_verify are ignored: the connection is plain ldap:// without starttls"
                );
            }
            (None, None)
        };

        let ctx = ErrorContext {
            source_name: name.clone(),
            url: config.url.clone(),
            authority: authority.clone(),
            host,
            trust: trust.clone(),
            cert_seen: seen,
            bind_dn: config.bind_dn.clone().unwrap_or_else(|| "(anonymous)".into()),
            timeout_secs: config.timeout_secs,
        };
        let endpoint = Endpoint {
            url: config.url.clone(),
            starttls: config.starttls,
            tls,
            insecure: uses_tls && config.tls_insecure_skip_verify,
            timeout: Duration::from_secs(config.timeout_secs),
            bind_dn: config.bind_dn.clone(),
            password,
            ctx,
        };
        let rules = EntryRules { anchor: config.anchor.clone(), member_attributes: config.member_attributes.clone() };
        Ok(Self { config: config.clone(), endpoint, trust, rules, runtime: None, resume: Default::default() })
    }

    /// Whether the server offers RFC 4533 content synchronization (OpenLDAP's
    /// syncprov): `None` when the root DSE lists no controls to this account.
    pub fn supports_syncrepl(&mut self) -> Result<Option<bool>, SourceError> {
        let endpoint = self.endpoint.clone();
        self.run(async move {
            let mut session = client::connect(&endpoint).await?;
            let dse = client::read_root_dse(&mut session.ldap, &endpoint).await;
            match &dse {
                Ok(_) => session.close().await,
                Err(_) => session.abort(),
            }
            let controls: Vec<String> = dse?
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("supportedControl"))
                .map(|(_, v)| v)
                .unwrap_or_default();
            Ok(if controls.is_empty() { None } else { Some(controls.iter().any(|c| c == SYNC_REQUEST_OID)) })
        })
    }

    /// Connects, binds and reads the root DSE; returns a short report for
    /// `roster source test`. Also checks that the configured bases exist.
    pub fn check(&mut self) -> Result<String, SourceError> {
        let endpoint = self.endpoint.clone();
        let user_base = self.config.user_base.clone();
        let group_base = self.config.group_base.clone();
        let transport = self.describe_transport();
        self.run(async move {
            let started = Instant::now();
            let mut session = client::connect(&endpoint).await?;
            let ldap = &mut session.ldap;
            let result = async {
                let dse = client::read_root_dse(ldap, &endpoint).await?;
                let user_base_found = client::base_exists(ldap, &endpoint, &user_base).await?;
                let group_base_found = match &group_base {
                    Some(b) => Some(client::base_exists(ldap, &endpoint, b).await?),
                    None => None,
                };
                Ok::<_, SourceError>((dse, user_base_found, group_base_found))
            }
            .await;
            match &result {
                Ok(_) => session.close().await,
                Err(_) => session.abort(),
            }
            let (dse, user_base_found, group_base_found) = result?;

            let get = |name: &str| -> Vec<String> {
                dse.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
            };
            let mut lines =
                vec![format!("connected to {} ({transport}) in {} ms", endpoint.url, started.elapsed().as_millis())];
            lines.push(match &endpoint.bind_dn {
                Some(dn) => format!("bound as '{dn}'"),
                None => "anonymous (no bind_dn)".to_string(),
            });
            let vendor = [get("vendorName"), get("vendorVersion")].concat().join(" ");
            if !vendor.is_empty() {
                lines.push(format!("server: {vendor}"));
            }
            let contexts = get("namingContexts");
            if contexts.is_empty() {
                lines.push("naming contexts: none visible to this account".into());
            } else {
                lines.push(format!("naming contexts: {}", contexts.join("; ")));
            }
            let controls = get("supportedControl");
            lines.push(if controls.iter().any(|c| c == PAGED_RESULTS_OID) {
                "paged results (RFC 2696): supported".into()
            } else if controls.is_empty() {
                "paged results (RFC 2696): unknown (the root DSE lists no controls to this account)".into()
            } else {
                "paged results (RFC 2696): NOT supported; a large directory may hit the server's size limit".into()
            });
            lines.push(if controls.iter().any(|c| c == SYNC_REQUEST_OID) {
                "content synchronization (RFC 4533, syncprov): supported; realtime mode streams changes".into()
            } else if controls.is_empty() {
                "content synchronization (RFC 4533): unknown".into()
            } else {
                "content synchronization (RFC 4533): NOT supported; realtime mode falls back to polling".into()
            });
            lines.push(format!(
                "user_base '{user_base}': {}",
                if user_base_found { "found" } else { "NOT FOUND (or not readable by this account)" }
            ));
            if let (Some(b), Some(found)) = (&group_base, group_base_found) {
                lines.push(format!(
                    "group_base '{b}': {}",
                    if found { "found" } else { "NOT FOUND (or not readable by this account)" }
                ));
            }
            Ok(lines.join("\n"))
        })
    }

    /// Where and how to connect; for the Active Directory source built on this one.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How entries become items; for the realtime stream of `roster serve`.
    pub(crate) fn rules(&self) -> &EntryRules {
        &self.rules
    }

    pub(crate) fn describe_transport(&self) -> String {
        let how = if self.endpoint.starttls {
            "StartTLS"
        } else if self.endpoint.tls.is_some() {
            "LDAPS"
        } else {
            return "plain LDAP, not encrypted".into();
        };
        match &self.trust {
            Some(TrustRoots::CaFile(p)) => format!("{how}, certificate verified against ca_file '{}'", p.display()),
            Some(TrustRoots::System) => format!("{how}, certificate verified against the system CAs"),
            Some(TrustRoots::Insecure) | None => format!("{how}, certificate NOT verified (tls_insecure_skip_verify)"),
        }
    }

    /// Runs a future to completion on the source's runtime, turning a panic in the
    /// LDAP client into an error instead of a crash.
    pub(crate) fn run<T>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let name = self.config.name.clone();
        let other = |message: String| SourceError::Other { source_name: name.clone(), message };
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(other(
                "internal error: an LDAP source was read from inside an async task; call it from a blocking thread"
                    .into(),
            ));
        }
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| other(format!("cannot start the I/O runtime: {e}")))?;
            self.runtime = Some(rt);
        }
        let Some(rt) = self.runtime.as_ref() else {
            return Err(other("internal error: no runtime".into()));
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(fut))) {
            Ok(result) => result,
            Err(panic) => {
                self.runtime = None;
                Err(other(format!(
                    "the LDAP client failed on unexpected server data ({}); the read is incomplete",
                    entry::panic_message(&panic)
                )))
            }
        }
    }
}

impl Source for LdapSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn check(&mut self) -> Result<String, SourceError> {
        // The inherent check: connect, bind, root DSE, bases; no full read.
        LdapSource::check(self)
    }

    fn resume(&mut self, state: &std::collections::BTreeMap<String, String>) {
        self.resume = state.clone();
    }

    fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        let endpoint = self.endpoint.clone();
        let rules = self.rules.clone();
        let config = self.config.clone();
        let cookie = |key: &str| {
            use base64::Engine as _;
            self.resume.get(key).and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        };
        let cookies = (cookie(syncrepl::USERS_COOKIE), cookie(syncrepl::GROUPS_COOKIE));
        let name = self.config.name.clone();
        tracing::info!(source = %name, url = %endpoint.url, transport = %self.describe_transport(), "reading LDAP directory");
        let started = Instant::now();
        // A panic in the sink is the caller's bug, not bad server data: it is caught
        // here only to get out of the runtime, then resumed unchanged.
        let mut sink_panic = None;
        let result = self.run(async {
            let mut session = client::connect(&endpoint).await?;
            let result =
                read_resumable(&mut session.ldap, &endpoint, &config, &rules, cookies, sink, &mut sink_panic).await;
            match &result {
                Ok(_) => session.close().await,
                Err(_) => session.abort(),
            }
            result
        });
        if let Some(panic) = sink_panic {
            std::panic::resume_unwind(panic);
        }
        let summary = result?;
        tracing::info!(
            source = %name,
            users = summary.users,
            groups = summary.groups,
            rejected = summary.rejected,
            pages = summary.requests,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "LDAP read complete"
        );
        Ok(summary)
    }
}

/// With base scope, the base entry alone: a content synchronization search
/// that returns little more than the server's current cookie.
const BASE_ENTRY: &str = "(objectClass=*)";

/// What changed since the cookies when there are cookies and the server can
/// say (RFC 4533 refreshOnly), else everything ([`read_all`]) — with the
/// server's cookies taken first, so a change made during the read is in the
/// next one. Only for entryUUID anchors: content synchronization names
/// entries by entryUUID.
async fn read_resumable(
    ldap: &mut ldap3::Ldap,
    endpoint: &Endpoint,
    config: &LdapSourceConfig,
    rules: &EntryRules,
    cookies: (Option<Vec<u8>>, Option<Vec<u8>>),
    sink: &mut dyn Sink,
    sink_panic: &mut Option<Box<dyn std::any::Any + Send>>,
) -> Result<ReadSummary, SourceError> {
    use base64::Engine as _;
    let encode = |c: &[u8]| base64::engine::general_purpose::STANDARD.encode(c);
    if !config.anchor.eq_ignore_ascii_case("entryUUID") {
        return read_all(ldap, endpoint, config, rules, sink, sink_panic).await;
    }
    let group_base = config.group_base.as_deref().unwrap_or(&config.user_base);
    let searches = [
        (EntryKind::User, config.user_base.as_str(), &config.user_filter, syncrepl::USERS_COOKIE, cookies.0),
        (EntryKind::Group, group_base, &config.group_filter, syncrepl::GROUPS_COOKIE, cookies.1),
    ];
    // Anchors an abandoned incremental read already handed on: a full read
    // that follows does not send them twice.
    let mut sent: std::collections::HashSet<String> = std::collections::HashSet::new();
    if searches.iter().all(|s| s.4.is_some()) {
        let mut summary = ReadSummary::default();
        let mut delta =
            crate::source::Delta { since: "the last applied read (RFC 4533 cookie)".into(), ..Default::default() };
        let mut read_everything = None;
        for (kind, base, filter, key, cookie) in &searches {
            let attrs = vec!["*".to_string(), config.anchor.clone()];
            let mut on_item = |item: SourceItem| {
                match &item {
                    SourceItem::Entry(e) => {
                        sent.insert(e.anchor.clone());
                        if *kind == EntryKind::User { summary.users += 1 } else { summary.groups += 1 }
                    }
                    SourceItem::Rejected { .. } => summary.rejected += 1,
                }
                forward(sink, item, &config.name, sink_panic)
            };
            let refreshed = syncrepl::refresh_only(
                ldap,
                endpoint,
                base,
                ldap3::Scope::Subtree,
                filter,
                *kind,
                rules,
                cookie.clone(),
                attrs,
                &mut on_item,
            )
            .await?;
            let cookie_sent = cookie;
            summary.requests += 1;
            match refreshed {
                syncrepl::Refreshed::Done { cookie, deleted, present } => {
                    delta.deleted.extend(deleted);
                    if let Some(present) = present {
                        delta.present.push((*kind, present));
                    }
                    // No new cookie: nothing moved on; the old one still holds.
                    let next = cookie.as_deref().or(cookie_sent.as_deref()).unwrap_or_default();
                    summary.state.push((key.to_string(), encode(next)));
                }
                syncrepl::Refreshed::ReadEverything(why) => {
                    read_everything = Some(why);
                    break;
                }
            }
        }
        match read_everything {
            None => {
                summary.delta = Some(delta);
                return Ok(summary);
            }
            Some(why) => {
                tracing::info!(source = %config.name, reason = %why, "reading everything instead of what changed")
            }
        }
    }
    // The cookies before the read. A server without content synchronization
    // refuses the (critical) control: then every read is a full one.
    let mut state = Vec::new();
    for (kind, base, _, key, _) in &searches {
        let taken = syncrepl::refresh_only(
            ldap,
            endpoint,
            base,
            ldap3::Scope::Base,
            BASE_ENTRY,
            *kind,
            rules,
            None,
            vec!["1.1".into()],
            &mut |_| Ok(()),
        )
        .await;
        match taken {
            Ok(syncrepl::Refreshed::Done { cookie: Some(c), .. }) => state.push((key.to_string(), encode(&c))),
            Ok(_) | Err(_) => {
                tracing::debug!(source = %config.name, "no content synchronization cookie: the next read is a full one too");
                state.clear();
                break;
            }
        }
    }
    let mut skip_sent = |item: SourceItem| -> Result<(), String> {
        match &item {
            SourceItem::Entry(e) if sent.contains(&e.anchor) => Ok(()),
            _ => sink.item(item),
        }
    };
    let mut summary = read_all(ldap, endpoint, config, rules, &mut skip_sent, sink_panic).await?;
    summary.state = state;
    Ok(summary)
}

/// Hands an item to the sink; a panicking sink is the caller's bug, kept to be resumed.
fn forward(
    sink: &mut dyn Sink,
    item: SourceItem,
    source: &str,
    sink_panic: &mut Option<Box<dyn std::any::Any + Send>>,
) -> Result<(), SourceError> {
    let stopped = |message: String| SourceError::Stopped { source_name: source.to_string(), message };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.item(item))) {
        Ok(result) => result.map_err(stopped),
        Err(panic) => {
            *sink_panic = Some(panic);
            Err(stopped("the consumer panicked".into()))
        }
    }
}

/// The user search, then the group search, streaming into the sink.
async fn read_all(
    ldap: &mut ldap3::Ldap,
    endpoint: &Endpoint,
    config: &LdapSourceConfig,
    rules: &EntryRules,
    sink: &mut dyn Sink,
    sink_panic: &mut Option<Box<dyn std::any::Any + Send>>,
) -> Result<ReadSummary, SourceError> {
    let mut summary = ReadSummary::default();
    // entryUUID (and other anchors) are operational attributes: "*" does not return them.
    let attrs = vec!["*".to_string(), config.anchor.clone()];
    // Without group_base, groups are searched for under user_base: small directories
    // often keep both under one base.
    let group_base = config.group_base.as_deref().unwrap_or(&config.user_base);
    let searches = [
        (EntryKind::User, config.user_base.as_str(), &config.user_filter),
        (EntryKind::Group, group_base, &config.group_filter),
    ];
    for (kind, base, filter) in searches {
        let mut on_entry = |tag| {
            let item = entry::convert(tag, kind, rules);
            match &item {
                SourceItem::Entry(_) if kind == EntryKind::User => summary.users += 1,
                SourceItem::Entry(_) => summary.groups += 1,
                SourceItem::Rejected { reason, .. } => {
                    summary.rejected += 1;
                    tracing::warn!(source = %config.name, %reason, "entry rejected");
                }
            }
            forward(sink, item, &config.name, sink_panic)
        };
        let stats =
            client::paged_search(ldap, endpoint, base, filter, attrs.clone(), config.page_size, &mut on_entry).await?;
        tracing::debug!(
            source = %config.name,
            kind = %kind,
            base,
            entries = stats.entries,
            pages = stats.pages,
            "search complete"
        );
        summary.requests += stats.pages;
        summary.page_size = summary.page_size.max(config.page_size as u64);
    }
    Ok(summary)
}

/// The host part of `host:port` / `[v6]:port` / `user@host:port`.
fn host_of(authority: &str) -> String {
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    hostport.split(':').next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> LdapSourceConfig {
        let text = format!(
            "name = \"corp\"\nurl = \"ldap://127.0.0.1:1\"\nuser_base = \"ou=people,dc=example,dc=com\"\n{extra}"
        );
        toml::from_str(&text).expect("config parses")
    }

    fn secret(value: &str) -> Secret {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), value).expect("write");
        crate::config::SecretRef::File { file: "pw".into() }.resolve(dir.path()).expect("resolves")
    }

    #[test]
    fn sources_can_move_to_a_blocking_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<LdapSource>();
        assert_send::<crate::source::ldif::LdifSource>();
    }

    #[test]
    fn host_of_handles_ports_ipv6_and_userinfo() {
        assert_eq!(host_of("ldap.example.com:636"), "ldap.example.com");
        assert_eq!(host_of("[::1]:389"), "::1");
        assert_eq!(host_of("x@h"), "h");
        assert_eq!(host_of(""), "");
    }

    #[test]
    fn constructor_validates_without_connecting() {
        let dir = tempfile::tempdir().expect("tempdir");
        LdapSource::new(&config(""), dir.path(), None).expect("anonymous plain source");

        let err = LdapSource::new(&config("user_filter = \"(objectClass=person\""), dir.path(), None)
            .expect_err("bad filter");
        assert!(err.to_string().contains("user_filter"), "{err}");

        let err = LdapSource::new(&config("bind_dn = \"cn=svc\"\nbind_password = { env = \"X\" }"), dir.path(), None)
            .expect_err("no password");
        assert!(err.to_string().contains("bind_password"), "{err}");

        let err = LdapSource::new(&config("starttls = true\nca_file = \"missing.pem\""), dir.path(), None)
            .expect_err("missing CA file");
        assert!(matches!(err, SourceError::Tls { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    #[test]
    fn connection_refused_is_a_connect_error_naming_the_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Port 1 on loopback: nothing listens there.
        let mut source = LdapSource::new(&config("timeout_secs = 5"), dir.path(), None).expect("new");
        let err = source.read(&mut |_| Ok(())).expect_err("refused");
        assert!(matches!(err, SourceError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("ldap://127.0.0.1:1"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config("bind_dn = \"cn=svc\"\nbind_password = { env = \"X\" }");
        let source = LdapSource::new(&cfg, dir.path(), Some(secret("hunter2"))).expect("new");
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
