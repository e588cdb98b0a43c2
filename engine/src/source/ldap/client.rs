//! Connecting, binding and paged searching with ldap3's async API.
//!
//! Everything here runs inside the current-thread runtime the source owns.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::asn1::StructureTag;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, ResultEntry, Scope, SearchStream};
use rustls::ClientConfig;
use tokio::task::JoinHandle;

use super::error::ErrorContext;
use crate::config::Secret;
use crate::source::SourceError;

/// How to reach and authenticate to the server.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub starttls: bool,
    /// The TLS configuration; `None` for a plain `ldap://` connection.
    pub tls: Option<Arc<ClientConfig>>,
    pub insecure: bool,
    pub timeout: Duration,
    pub bind_dn: Option<String>,
    pub password: Option<Secret>,
    pub ctx: ErrorContext,
}

/// A bound connection and the task that drives it.
pub struct Session {
    pub ldap: Ldap,
    driver: JoinHandle<()>,
}

impl Session {
    /// Ends the session politely (unbind), after a complete read.
    pub async fn close(mut self) {
        if let Err(e) = self.ldap.unbind().await {
            tracing::debug!(error = %e, "unbind failed");
        }
        self.driver.abort();
    }

    /// Drops the connection at once, after a failed or stopped read: the server
    /// sees the connection close and ends the operation, and the entries still in
    /// flight are not read (ldap3 would log each as an "unmatched id").
    pub fn abort(self) {
        self.driver.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Opens a connection (TCP, then TLS or StartTLS) and binds.
pub async fn connect(ep: &Endpoint) -> Result<Session, SourceError> {
    let ctx = &ep.ctx;
    if ep.insecure {
        // Every connection, not once per process: an admin scanning logs for this
        // must find it for each run that was exposed.
        tracing::warn!(
            source = %ctx.source_name,
            url = %ep.url,
            "TLS certificate verification is OFF (tls_insecure_skip_verify = true): anyone on the network path can impersonate this directory"
        );
    }
    let mut settings = LdapConnSettings::new().set_conn_timeout(ep.timeout).set_starttls(ep.starttls);
    if let Some(config) = &ep.tls {
        settings = settings.set_config(config.clone());
    }
    let (conn, ldap) = LdapConnAsync::with_settings(settings, &ep.url).await.map_err(|e| ctx.connect_failed(e))?;
    // What `ldap3::drive!` does, but logging through tracing (drive! uses the `log` crate).
    let source_name = ctx.source_name.clone();
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(source = %source_name, error = %e, "LDAP connection ended with an error");
        }
    });
    // From here on, returning drops the session, which closes the connection.
    let mut session = Session { ldap, driver };
    let ldap = &mut session.ldap;
    tracing::debug!(source = %ctx.source_name, url = %ep.url, starttls = ep.starttls, tls = ep.tls.is_some(), "connected");

    if let Some(bind_dn) = &ep.bind_dn {
        if ep.tls.is_none() {
            tracing::warn!(
                source = %ctx.source_name,
                url = %ep.url,
                "the bind password is sent unencrypted: use ldaps:// or starttls = true"
            );
        }
        let Some(password) = &ep.password else {
            return Err(ctx.bind("bind_dn is set but no password was resolved"));
        };
        ldap.with_timeout(ep.timeout);
        let result = ldap.simple_bind(bind_dn, password.expose()).await.map_err(|e| ctx.bind_failed(e))?;
        if result.rc != 0 {
            return Err(ctx.bind_result(&result));
        }
        tracing::debug!(source = %ctx.source_name, bind_dn = %bind_dn, "bound");
    } else {
        tracing::debug!(source = %ctx.source_name, "no bind_dn: reading anonymously");
    }
    Ok(session)
}

/// What one paged search did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    pub entries: u64,
    /// Round trips: one per page (SearchResultDone).
    pub pages: u64,
    pub referrals: u64,
}

/// Counts pages: sits below `PagedResults` in the adapter chain, where each end of
/// the raw stream is one SearchResultDone, i.e. one page.
#[derive(Clone, Debug)]
struct PageCounter {
    pages: Arc<AtomicU64>,
}

#[async_trait]
impl<'a, S, A> Adapter<'a, S, A> for PageCounter
where
    S: AsRef<str> + Send + Sync + 'a,
    A: AsRef<[S]> + Send + Sync + 'a,
{
    async fn start(
        &mut self,
        stream: &mut SearchStream<'a, S, A>,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: A,
    ) -> ldap3::result::Result<()> {
        stream.start(base, scope, filter, attrs).await
    }

    async fn next(&mut self, stream: &mut SearchStream<'a, S, A>) -> ldap3::result::Result<Option<ResultEntry>> {
        let item = stream.next().await;
        if let Ok(None) = item {
            self.pages.fetch_add(1, Ordering::Relaxed);
        }
        item
    }

    async fn finish(&mut self, stream: &mut SearchStream<'a, S, A>) -> LdapResult {
        stream.finish().await
    }
}

/// A subtree search, paged (RFC 2696), handing each entry to `on_entry` as it
/// arrives. If `on_entry` fails, the search is abandoned and its error returned.
/// A search that does not end in `success` is an error: a partial read must not
/// look complete.
pub async fn paged_search(
    ldap: &mut Ldap,
    ep: &Endpoint,
    base: &str,
    filter: &str,
    attrs: Vec<String>,
    page_size: i32,
    on_entry: &mut dyn FnMut(StructureTag) -> Result<(), SourceError>,
) -> Result<SearchStats, SourceError> {
    let ctx = &ep.ctx;
    let pages = Arc::new(AtomicU64::new(0));
    let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(page_size)),
        Box::new(PageCounter { pages: pages.clone() }),
    ];
    ldap.with_timeout(ep.timeout);
    let mut stream = ldap
        .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
        .await
        .map_err(|e| ctx.search_failed(base, e))?;
    let mut stats = SearchStats::default();
    loop {
        let entry = match stream.next().await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(ctx.search_failed(base, e));
            }
        };
        stats.entries += 1;
        if let Err(e) = on_entry(entry.0) {
            // Stop reading; the connection is closed right after, which ends the
            // operation on the server too.
            let _ = stream.finish().await;
            return Err(e);
        }
    }
    let result = stream.finish().await;
    stats.pages = pages.load(Ordering::Relaxed);
    stats.referrals = result.refs.len() as u64;
    if result.rc != 0 {
        return Err(ctx.search_result(base, &result, stats.entries));
    }
    if !result.refs.is_empty() {
        // Continuation references (AD returns them for other naming contexts at the
        // domain root) point at other servers; this source reads one server.
        tracing::info!(source = %ctx.source_name, base, referrals = ?result.refs, "search continuation references ignored");
    }
    Ok(stats)
}

/// The root DSE's attributes, for `check`.
pub async fn read_root_dse(ldap: &mut Ldap, ep: &Endpoint) -> Result<Vec<(String, Vec<String>)>, SourceError> {
    let ctx = &ep.ctx;
    let attrs = vec![
        "namingContexts",
        "defaultNamingContext",
        "supportedControl",
        "supportedLDAPVersion",
        "vendorName",
        "vendorVersion",
        "dnsHostName",
    ];
    ldap.with_timeout(ep.timeout);
    let mut stream = ldap
        .streaming_search_with(EntriesOnly::new(), "", Scope::Base, "(objectClass=*)", attrs)
        .await
        .map_err(|e| ctx.search_failed("", e))?;
    let mut found = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(entry)) => {
                if let Some(raw) = super::entry::decode(entry.0) {
                    found = raw
                        .attrs
                        .into_iter()
                        .map(|(n, vs)| (n, vs.into_iter().map(|v| String::from_utf8_lossy(&v).into_owned()).collect()))
                        .collect();
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(ctx.search_failed("", e));
            }
        }
    }
    let result = stream.finish().await;
    if result.rc != 0 {
        return Err(ctx.search_result("", &result, 0));
    }
    Ok(found)
}

/// Whether `base` exists and can be read: `Ok(true)`, `Ok(false)` for noSuchObject.
pub async fn base_exists(ldap: &mut Ldap, ep: &Endpoint, base: &str) -> Result<bool, SourceError> {
    ldap.with_timeout(ep.timeout);
    let mut stream = ldap
        .streaming_search_with(EntriesOnly::new(), base, Scope::Base, "(objectClass=*)", vec!["1.1"])
        .await
        .map_err(|e| ep.ctx.search_failed(base, e))?;
    let mut seen = false;
    loop {
        match stream.next().await {
            Ok(Some(_)) => seen = true,
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(ep.ctx.search_failed(base, e));
            }
        }
    }
    let result = stream.finish().await;
    match result.rc {
        0 => Ok(seen),
        32 => Ok(false),
        _ => Err(ep.ctx.search_result(base, &result, 0)),
    }
}

impl Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("tls", &self.tls.is_some())
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .field("bind_dn", &self.bind_dn)
            .field("password", &self.password)
            .finish()
    }
}

/// An unpaged search returning every entry decoded, for small reads (the root
/// DSE, one object, a ranged attribute, tombstones), with optional request
/// controls. `Ok(None)` for noSuchObject.
pub async fn search_entries(
    ldap: &mut Ldap,
    ep: &Endpoint,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: Vec<String>,
    controls: Vec<ldap3::controls::RawControl>,
) -> Result<Option<Vec<super::entry::RawEntry>>, SourceError> {
    ldap.with_timeout(ep.timeout);
    if !controls.is_empty() {
        ldap.with_controls(controls);
    }
    let mut stream = ldap
        .streaming_search_with(EntriesOnly::new(), base, scope, filter, attrs)
        .await
        .map_err(|e| ep.ctx.search_failed(base, e))?;
    let mut found = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(entry)) => {
                if let Some(raw) = super::entry::decode(entry.0) {
                    found.push(raw);
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(ep.ctx.search_failed(base, e));
            }
        }
    }
    let result = stream.finish().await;
    match result.rc {
        0 => Ok(Some(found)),
        32 => Ok(None),
        _ => Err(ep.ctx.search_result(base, &result, found.len() as u64)),
    }
}
