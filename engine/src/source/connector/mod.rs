//! `kind = "plugin"`: a source whose reading is done by a vendor's connector
//! component, page by page, with every request going through the host's
//! [`egress`] policy.
//!
//! The connector runs in the plugin host's sandbox like any plugin (its own
//! store, memory cap and per-call deadline) and gets nothing but `log` and
//! `http`: no file system, no sockets, no environment, no secrets. This
//! module turns its pages into the [`SourceItem`] stream every source
//! produces, so scope, mapping, diff, guard-rails and "no deletes after a
//! partial read" apply unchanged.

pub mod egress;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::{Delta, ReadSummary, Sink, Source, SourceError, SourceItem};
use crate::config::{Config, ConnectorSourceConfig, TenantConfig};
use crate::plugin_host::{
    ConnectorPage, ConnectorReadError, PluginBinary, PluginError, PluginHost, PluginInstance, PluginKind, SandboxLimits,
};

/// Source state key: where the next incremental read starts ("" for nowhere).
pub const DELTA_TOKEN_KEY: &str = "delta_token";
/// Source state key: which connector and configuration issued the token. A
/// token from another plugin version or another remote system means nothing.
pub const TOKEN_ISSUER_KEY: &str = "delta_token_issuer";
/// A read that returns this many pages in a row without an object is stuck.
const MAX_EMPTY_PAGES: u32 = 1_000;

pub struct ConnectorSource {
    name: String,
    incremental: bool,
    instance: PluginInstance,
    egress: Arc<egress::HostEgress>,
    /// Hash of the connector's code and its configuration table.
    issuer: String,
    resume: BTreeMap<String, String>,
}

impl ConnectorSource {
    /// Loads the connector, checks it asks for nothing the host does not
    /// grant, and instantiates it with the source's configuration and egress.
    pub fn open(
        config: &Config,
        tenant: &TenantConfig,
        source: &ConnectorSourceConfig,
        host: &PluginHost,
    ) -> Result<Self, SourceError> {
        let other = |message: String| SourceError::Other { source_name: source.name.clone(), message };
        let path = config.resolve_path(&source.plugin);
        let binary = PluginBinary::from_file(&path)
            .map_err(|e| other(format!("cannot read the connector plugin {}: {e}", path.display())))?;
        let loaded = host.load(&tenant.id, PluginKind::Connector, &binary).map_err(|e| other(e.to_string()))?;
        let ungranted = host.ungranted_imports(&loaded);
        if !ungranted.is_empty() {
            return Err(other(format!(
                "connector plugin {} is refused: {}; a connector reaches the network through the host's http interface only, and never sees files or secrets",
                path.display(),
                ungranted.join("; ")
            )));
        }
        let credential = match &source.auth {
            Some(auth) => Some(egress::Credential::resolve(auth, &config.base_dir).map_err(other)?),
            None => None,
        };
        let egress = egress::HostEgress::new(&tenant.id, source, &config.base_dir, credential).map_err(other)?;
        let mut limits: SandboxLimits = crate::sync::sandbox_limits(tenant);
        limits.call_timeout_ms = source.call_timeout_secs.saturating_mul(1000).max(1);
        let issuer = crate::util::sha256_hex(format!("{}\n{}", binary.hash, source.config).as_bytes());
        let instance = PluginInstance::connector(
            host,
            loaded,
            &tenant.id,
            limits,
            &source.config,
            egress.clone() as Arc<dyn crate::plugin_host::Egress>,
        )
        .map_err(|e| other(e.to_string()))?;
        Ok(Self {
            name: source.name.clone(),
            incremental: source.incremental,
            instance,
            egress,
            issuer,
            resume: BTreeMap::new(),
        })
    }

    fn plugin_failed(&self, e: PluginError) -> SourceError {
        SourceError::Other { source_name: self.name.clone(), message: format!("connector failed: {e}") }
    }

    fn read_error(&self, e: ConnectorReadError) -> SourceError {
        let plugin = self.instance.identity();
        let message = format!("connector {plugin}: {e}");
        // The token endpoint refusing the source's credentials is an
        // authentication failure whatever the connector made of it.
        let refused_credentials = self.egress.take_auth_failure();
        match (e, refused_credentials) {
            (ConnectorReadError::Auth(_), _) => SourceError::Auth { source_name: self.name.clone(), message },
            (_, Some(why)) => {
                SourceError::Auth { source_name: self.name.clone(), message: format!("{why} ({message})") }
            }
            _ => SourceError::Other { source_name: self.name.clone(), message },
        }
    }

    /// Every page of one read, streamed into `sink`.
    /// `skip`: anchors already handed on by an abandoned delta read, which a
    /// full read that follows does not send twice; `emitted` collects them.
    fn read_pages(
        &mut self,
        token: Option<&str>,
        sink: &mut dyn Sink,
        skip: &HashSet<(super::EntryKind, String)>,
        emitted: &mut HashSet<(super::EntryKind, String)>,
    ) -> Result<ReadSummary, ReadFailure> {
        let mut summary = ReadSummary::default();
        let mut deleted = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen_cursors: HashSet<String> = HashSet::new();
        let mut empty_pages = 0u32;
        let requests_before = self.instance.http_requests();
        loop {
            let page = match token {
                Some(t) => self.instance.read_delta_page(t, cursor.as_deref()),
                None => self.instance.read_page(cursor.as_deref()),
            };
            let page: ConnectorPage = match page {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return Err(ReadFailure::Connector(e)),
                Err(e) => return Err(ReadFailure::Source(self.plugin_failed(e))),
            };
            if page.objects.is_empty() && page.deleted.is_empty() {
                empty_pages += 1;
            } else {
                empty_pages = 0;
            }
            for o in page.objects {
                match o.kind {
                    super::EntryKind::User => summary.users += 1,
                    super::EntryKind::Group => summary.groups += 1,
                }
                let key = (o.kind, o.anchor.clone());
                if skip.contains(&key) {
                    continue;
                }
                emitted.insert(key);
                sink.item(SourceItem::Entry(o)).map_err(|message| {
                    ReadFailure::Source(SourceError::Stopped { source_name: self.name.clone(), message })
                })?;
            }
            for r in page.rejected {
                summary.rejected += 1;
                let reason = format!("connector {}: {}", self.instance.identity(), r.reason);
                sink.item(SourceItem::Rejected { dn: None, anchor: r.anchor, kind: r.kind, reason }).map_err(
                    |message| ReadFailure::Source(SourceError::Stopped { source_name: self.name.clone(), message }),
                )?;
            }
            deleted.extend(page.deleted);
            match page.next_cursor {
                Some(next) => {
                    if !seen_cursors.insert(next.clone()) || empty_pages >= MAX_EMPTY_PAGES {
                        return Err(ReadFailure::Source(SourceError::Other {
                            source_name: self.name.clone(),
                            message: format!(
                                "connector {} is not making progress (cursor '{next}' again, or {empty_pages} empty pages in a row); the read is incomplete",
                                self.instance.identity()
                            ),
                        }));
                    }
                    cursor = Some(next);
                }
                None => {
                    // Always written, so a read that ends without a token
                    // replaces the previous one instead of leaving it behind.
                    summary.state.push((DELTA_TOKEN_KEY.into(), page.delta_token.unwrap_or_default()));
                    summary.state.push((TOKEN_ISSUER_KEY.into(), self.issuer.clone()));
                    break;
                }
            }
        }
        summary.requests = self.instance.http_requests().saturating_sub(requests_before);
        if let Some(since) = token {
            summary.delta = Some(Delta { deleted, since: since.to_string(), ..Default::default() });
        } else if !deleted.is_empty() {
            tracing::warn!(source = %self.name, count = deleted.len(), "a full read reported deletions; they are ignored (a full read deletes what it does not return)");
        }
        Ok(summary)
    }
}

enum ReadFailure {
    Connector(ConnectorReadError),
    Source(SourceError),
}

impl Source for ConnectorSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume(&mut self, state: &BTreeMap<String, String>) {
        self.resume = state.clone();
    }

    fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
        let supports_delta = self.instance.connector_info().is_some_and(|i| i.delta);
        let same_issuer = self.resume.get(TOKEN_ISSUER_KEY) == Some(&self.issuer);
        let token = self
            .resume
            .get(DELTA_TOKEN_KEY)
            .filter(|t| !t.is_empty() && self.incremental && supports_delta && same_issuer)
            .cloned();
        if !same_issuer && self.resume.get(DELTA_TOKEN_KEY).is_some_and(|t| !t.is_empty()) {
            tracing::info!(source = %self.name, "the connector or its configuration changed since the last read; reading everything");
        }
        let mut emitted = HashSet::new();
        if let Some(token) = token {
            match self.read_pages(Some(&token), sink, &HashSet::new(), &mut emitted) {
                Ok(s) => return Ok(s),
                Err(ReadFailure::Connector(ConnectorReadError::TokenExpired(why))) => {
                    tracing::info!(source = %self.name, reason = %why, "the connector's delta token expired; reading everything");
                }
                Err(ReadFailure::Connector(e)) => return Err(self.read_error(e)),
                Err(ReadFailure::Source(e)) => return Err(e),
            }
        }
        let skip = emitted;
        match self.read_pages(None, sink, &skip, &mut HashSet::new()) {
            Ok(s) => Ok(s),
            Err(ReadFailure::Connector(e)) => Err(self.read_error(e)),
            Err(ReadFailure::Source(e)) => Err(e),
        }
    }

    fn check(&mut self) -> Result<String, SourceError> {
        let info = self.instance.connector_info().cloned();
        match self.instance.check_connector() {
            Ok(Ok(line)) => Ok(match info {
                Some(i) => {
                    let delta = if i.delta { "yes" } else { "no" };
                    let mut text = format!("connector '{}' {} (delta: {delta}): {line}", i.name, i.version);
                    if !i.config_schema.is_empty() {
                        text.push_str(&format!("\nconfiguration schema: {}", i.config_schema));
                    }
                    text
                }
                None => line,
            }),
            Ok(Err(e)) => Err(self.read_error(e)),
            Err(e) => Err(self.plugin_failed(e)),
        }
    }
}
