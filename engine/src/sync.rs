//! One sync run of a tenant: the pipeline, start to end.
//!
//! ```text
//! source ─► scope (OU) ─► mapper plugin ─► custom-attributes plugin
//!        ─► resolve members ─► scope (groups) ─► role-assigner plugin
//!        ─► conflicts (resolver plugin, all sources at once)
//!        ─► diff against the store ─► plan ─► guard-rails ─► apply (one transaction)
//! ```
//!
//! Every plugin stage is a WebAssembly component of its kind; a tenant that
//! brings none runs the built-in of that kind, configured from its TOML. The
//! custom-attributes and role stages are skipped when the tenant declares
//! nothing for them; the resolver is instantiated on the first conflict.
//!
//! Deletes are planned only from a complete read; entries that fail to map are
//! quarantined and protected from deletion; if too many fail, the run aborts
//! before apply.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::config::{Config, LimitsConfig, SourceConfig, TenantConfig};
use crate::diff::{DesiredState, diff};
use crate::dn::normalize_dn;
use crate::mapping::{Mapped, MappingStage};
use crate::model::{Desired, object_id};
use crate::plan::{GuardrailBlock, Plan, PlanCounts};
use crate::plugin_host::{
    ConflictInput, DecisionOutput, MapOutcome, MappedUserInput, MapperInstance, PluginBinary, PluginError, PluginHost,
    PluginIdentity, PluginInstance, PluginKind, SandboxLimits,
};
use crate::scope::{OuScope, group_scope};
use crate::source::{
    EntryKind, MemberRef, ReadSummary, Source, SourceEntry, SourceError, SourceItem, ldap::LdapSource, ldif::LdifSource,
};
use crate::store::{MembershipEnd, QuarantineItem, RunOutcome, Settled, Store, StoreError};

/// Failures below this count never abort a run early, whatever the share:
/// the first entries are too few to judge the plugin by.
const EARLY_ABORT_MIN_FAILURES: u64 = 10;

/// A read with a stored position (cookie, delta link) is usually a small
/// incremental one, which maps only what changed and loads only the stored
/// objects around it; the memo and the whole stored state it needs are loaded
/// only once such a read turns out to be this big.
const MEMO_AFTER_ENTRIES: u64 = 10_000;

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub dry_run: bool,
    pub allow_deletes: bool,
    /// Read every source whole, even one that could read only what changed.
    pub full: bool,
    /// Read only these sources; the others keep their stored state (`None`: all).
    pub only_sources: Option<Vec<String>>,
    /// Who or what started the run: `cli`, `schedule`, …
    pub trigger: String,
    /// Object ids whose deletion an operator approved after the guard-rail
    /// blocked a run: a plan over the guard-rail goes ahead only if it deletes
    /// nothing outside this set (the approved plan, not whatever plan comes next).
    pub approved_deletes: Option<std::collections::BTreeSet<String>>,
}

impl SyncOptions {
    pub fn new(trigger: &str) -> Self {
        SyncOptions {
            dry_run: false,
            allow_deletes: false,
            full: false,
            only_sources: None,
            trigger: trigger.to_string(),
            approved_deletes: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Applied,
    NoChanges,
    DryRun,
    /// The delete guard-rail stopped the plan; nothing was applied.
    Blocked(GuardrailBlock),
    /// Too many entries failed to map; nothing was applied.
    Aborted(String),
    /// A source could not be read completely: what was read was applied, no deletes.
    Partial(Vec<String>),
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Applied => "applied",
            RunStatus::NoChanges => "no-changes",
            RunStatus::DryRun => "dry-run",
            RunStatus::Blocked(_) => "blocked",
            RunStatus::Aborted(_) => "aborted",
            RunStatus::Partial(_) => "partial",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceReport {
    pub source: String,
    pub kind: String,
    pub read: ReadSummaryView,
    pub mapped: u64,
    pub skipped: u64,
    pub quarantined: u64,
    pub out_of_scope: u64,
    /// Stored objects the run loaded to merge over and diff against: all of
    /// the source's, or for an incremental read only those around its changes.
    pub stored_loaded: u64,
    /// Entries read whose content and pipeline were unchanged since they were
    /// last mapped: their stored attributes were used, not mapped again.
    pub not_remapped: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadSummaryView {
    /// `full` or `incremental`.
    pub mode: String,
    pub users: u64,
    pub groups: u64,
    pub rejected: u64,
    /// Deleted objects an incremental read reported.
    pub deleted: u64,
    pub requests: u64,
    /// The request log: page size asked for, and ranged-attribute follow-ups.
    pub page_size: u64,
    pub range_requests: u64,
    /// Time the server made the read wait (throttling, retries).
    pub waited_ms: u64,
}

impl From<&ReadSummary> for ReadSummaryView {
    fn from(r: &ReadSummary) -> Self {
        Self {
            mode: if r.delta.is_some() { "incremental" } else { "full" }.into(),
            users: r.users,
            groups: r.groups,
            rejected: r.rejected,
            deleted: r.delta.as_ref().map(|d| d.deleted.len() as u64).unwrap_or(0),
            requests: r.requests,
            page_size: r.page_size,
            range_requests: r.range_requests,
            waited_ms: r.waited_ms,
        }
    }
}

/// Everything a run did, for the CLI and the run record.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub tenant: String,
    pub run_id: Option<i64>,
    pub status: RunStatus,
    pub plan: Plan,
    pub counts: PlanCounts,
    pub sources: Vec<SourceReport>,
    /// Every plugin that ran, by kind.
    pub plugins: Vec<(PluginKind, PluginIdentity)>,
    pub conflicts: crate::conflict::ConflictCounts,
    pub elapsed_ms: u128,
    /// Seconds spent inside each kind of plugin during the run.
    pub plugin_seconds: BTreeMap<String, f64>,
    /// Wall time of each stage of the pipeline, in milliseconds.
    pub phase_ms: BTreeMap<&'static str, u64>,
}

impl RunReport {
    /// The report as `roster sync --json` and the API return it.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "tenant": self.tenant,
            "run_id": self.run_id,
            "status": self.status.as_str(),
            "detail": match &self.status {
                RunStatus::Blocked(b) => b.to_string(),
                RunStatus::Aborted(r) => r.clone(),
                RunStatus::Partial(p) => p.join("; "),
                _ => String::new(),
            },
            "counts": self.counts,
            "sources": self.sources,
            "phase_ms": self.phase_ms,
            "conflicts": self.conflicts,
            "plugins": self.plugins.iter().map(|(k, p)| json!({"kind": k, "name": p.name, "version": p.version, "sha256": p.hash})).collect::<Vec<_>>(),
            "plan": self.plan,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("tenant '{tenant}': {source}")]
    Source { tenant: String, source: SourceError },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tenant '{tenant}': {message}")]
    Setup { tenant: String, message: String },
    #[error(
        "tenant '{}': {kind} plugin {plugin} is disabled since {since} after {failures} consecutive failed runs (last: {last_error}); fix it, then `roster plugin enable --tenant {} --kind {kind}` or activate another version",
        plugin.tenant, plugin.tenant
    )]
    PluginDisabled { kind: PluginKind, plugin: PluginIdentity, since: String, failures: u32, last_error: String },
}

/// Progress callbacks for a terminal progress bar.
pub trait Progress {
    fn entries(&self, _source: &str, _count: u64) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// The mapper plugin a tenant runs, with its configuration: a file named in
/// the config, else the tenant's active uploaded plugin, else the built-in
/// declarative mapper configured by `[tenant.mapping]`.
pub fn tenant_mapper(
    config: &Config,
    tenant: &TenantConfig,
    store: &mut dyn Store,
) -> Result<(PluginBinary, toml::Table), SyncError> {
    tenant_plugin(config, tenant, store, PluginKind::Mapper).map(|(b, c, _)| (b, c))
}

/// The plugin of `kind` a tenant runs and its configuration: the file named
/// in `[tenant.plugins]`, else the tenant's active uploaded plugin of that
/// kind, else the built-in configured from the tenant's TOML. The flag says
/// whether it is the built-in.
pub fn tenant_plugin(
    config: &Config,
    tenant: &TenantConfig,
    store: &mut dyn Store,
    kind: PluginKind,
) -> Result<(PluginBinary, toml::Table, bool), SyncError> {
    let configured = tenant.plugins.get(kind);
    let plugin_config = configured.map(|p| p.config()).unwrap_or_default();
    if let Some(path) = configured.and_then(|p| p.path()) {
        let path = config.resolve_path(path);
        let binary = PluginBinary::from_file(&path).map_err(|e| SyncError::Setup {
            tenant: tenant.id.clone(),
            message: format!("cannot read {kind} plugin {}: {e}", path.display()),
        })?;
        return Ok((binary, plugin_config, false));
    }
    if let Some((record, wasm)) = store.active_plugin(&tenant.id, kind.as_str())? {
        if kind == PluginKind::Mapper && tenant.mapping.is_some() {
            tracing::warn!(tenant = %tenant.id, plugin = %record.name, version = record.version, "[tenant.mapping] is ignored: the tenant's uploaded mapper plugin is active");
        }
        let origin = format!("registry version {}", record.version);
        return Ok((PluginBinary::new(record.name, origin, wasm), plugin_config, false));
    }
    let table = match kind {
        PluginKind::Mapper => {
            let mut table = toml::Table::new();
            let to_table = |m: &std::collections::BTreeMap<String, String>| {
                toml::Value::Table(m.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect())
            };
            if let Some(m) = &tenant.mapping {
                table.insert("user".into(), to_table(m));
            }
            if let Some(m) = &tenant.group_mapping {
                table.insert("group".into(), to_table(m));
            }
            table
        }
        PluginKind::CustomAttributes => crate::custom_attrs::builtin_config(&tenant.custom_attributes),
        PluginKind::RoleAssigner => tenant.roles.builtin_config(),
        PluginKind::ConflictResolver => resolver_builtin_config(&tenant.conflicts),
        PluginKind::Connector => toml::Table::new(),
    };
    let Some(binary) = PluginBinary::builtin(kind) else {
        return Err(SyncError::Setup {
            tenant: tenant.id.clone(),
            message: format!("there is no built-in {kind} plugin: a connector is named by its source's `plugin` key"),
        });
    };
    Ok((binary, table, true))
}

/// The built-in resolver's configuration: the policy part of `[tenant.conflicts]`.
fn resolver_builtin_config(c: &crate::config::ConflictConfig) -> toml::Table {
    let list = |l: &[String]| toml::Value::Array(l.iter().map(|s| toml::Value::String(s.clone())).collect());
    let mut t = toml::Table::new();
    t.insert("on_duplicate".into(), toml::Value::String(c.on_duplicate.as_str().into()));
    t.insert("on_app_edit".into(), toml::Value::String(c.on_app_edit.as_str().into()));
    t.insert("precedence".into(), list(&c.precedence));
    t.insert(
        "attribute_precedence".into(),
        toml::Value::Table(c.attribute_precedence.iter().map(|(k, v)| (k.clone(), list(v))).collect()),
    );
    t
}

/// Whether a tenant runs a stage at all: a mapper and a resolver always; the
/// custom-attributes and role stages when the tenant declares something for
/// them or brings its own plugin.
pub fn stage_active(tenant: &TenantConfig, store: &mut dyn Store, kind: PluginKind) -> Result<bool, SyncError> {
    let declared = match kind {
        PluginKind::Mapper | PluginKind::ConflictResolver => true,
        PluginKind::CustomAttributes => !tenant.custom_attributes.is_empty(),
        PluginKind::RoleAssigner => !tenant.roles.rules.is_empty(),
        PluginKind::Connector => return Ok(false),
    };
    Ok(declared || tenant.plugins.get(kind).is_some() || store.active_plugin(&tenant.id, kind.as_str())?.is_some())
}

pub fn sandbox_limits(tenant: &TenantConfig) -> SandboxLimits {
    limits_to_sandbox(&tenant.limits)
}

/// The host's limits for `[tenant.limits]` (also used by `roster plugin test`).
pub fn limits_to_sandbox(limits: &LimitsConfig) -> SandboxLimits {
    SandboxLimits {
        memory_bytes: (limits.plugin_memory_mb as usize).saturating_mul(1024 * 1024),
        call_timeout_ms: limits.plugin_call_timeout_ms,
        output_max_bytes: (limits.plugin_output_max_kb as usize).saturating_mul(1024),
        grant_clock: limits.plugin_grant_clock,
    }
}

/// Instantiates the tenant's mapper (this also validates its configuration).
pub fn instantiate_mapper(
    config: &Config,
    tenant: &TenantConfig,
    host: &PluginHost,
    store: &mut dyn Store,
) -> Result<MapperInstance, SyncError> {
    instantiate(config, tenant, host, store, PluginKind::Mapper)
}

/// Instantiates the tenant's plugin of `kind` (this also validates its configuration).
pub fn instantiate(
    config: &Config,
    tenant: &TenantConfig,
    host: &PluginHost,
    store: &mut dyn Store,
    kind: PluginKind,
) -> Result<PluginInstance, SyncError> {
    let (binary, plugin_config, _) = tenant_plugin(config, tenant, store, kind)?;
    let loaded = host.load(&tenant.id, kind, &binary)?;
    let schema = if kind == PluginKind::CustomAttributes {
        crate::custom_attrs::decls(&tenant.custom_attributes)
    } else {
        Vec::new()
    };
    Ok(PluginInstance::with_schema(host, loaded, &tenant.id, sandbox_limits(tenant), &plugin_config, &schema)?)
}

/// Opens a source: resolves its secrets and builds the reader. Connects nothing yet.
pub fn open_source(
    config: &Config,
    tenant: &TenantConfig,
    source: &SourceConfig,
    host: &PluginHost,
) -> Result<Box<dyn Source>, SyncError> {
    let wrap = |source: SourceError| SyncError::Source { tenant: tenant.id.clone(), source };
    match source {
        SourceConfig::Plugin(c) => {
            Ok(Box::new(crate::source::connector::ConnectorSource::open(config, tenant, c, host).map_err(wrap)?))
        }
        SourceConfig::Ldif(c) => Ok(Box::new(LdifSource::new(c, &config.base_dir).map_err(wrap)?)),
        SourceConfig::AzureAd(g) => {
            let setup = |message: String| SyncError::Setup { tenant: tenant.id.clone(), message };
            let credential = match (&g.client_secret, &g.certificate) {
                (Some(secret), _) => crate::source::graph::auth::Credential::Secret(
                    secret
                        .resolve(&config.base_dir)
                        .map_err(|e| setup(format!("source '{}': client_secret: {e}", g.name)))?,
                ),
                (None, Some((cert, key))) => {
                    let cert_path = config.resolve_path(cert);
                    let pem = std::fs::read(&cert_path).map_err(|e| {
                        setup(format!("source '{}': client_certificate {}: {e}", g.name, cert_path.display()))
                    })?;
                    let key = key
                        .resolve(&config.base_dir)
                        .map_err(|e| setup(format!("source '{}': client_key: {e}", g.name)))?;
                    crate::source::graph::auth::Credential::certificate(&pem, key.expose())
                        .map_err(|e| setup(format!("source '{}': {e}", g.name)))?
                }
                (None, None) => return Err(setup(format!("source '{}': no client credential", g.name))),
            };
            Ok(Box::new(crate::source::graph::GraphSource::new(g, &config.base_dir, credential).map_err(wrap)?))
        }
        SourceConfig::ActiveDirectory(ad) => {
            let c = &ad.ldap;
            let password = match &c.bind_password {
                Some(r) => Some(r.resolve(&config.base_dir).map_err(|e| SyncError::Setup {
                    tenant: tenant.id.clone(),
                    message: format!("source '{}': bind_password: {e}", c.name),
                })?),
                None => None,
            };
            Ok(Box::new(crate::source::ad::AdSource::new(ad, &config.base_dir, password).map_err(wrap)?))
        }
        SourceConfig::Ldap(c) => {
            let password = match &c.bind_password {
                Some(r) => Some(r.resolve(&config.base_dir).map_err(|e| SyncError::Setup {
                    tenant: tenant.id.clone(),
                    message: format!("source '{}': bind_password: {e}", c.name),
                })?),
                None => None,
            };
            Ok(Box::new(LdapSource::new(c, &config.base_dir, password).map_err(wrap)?))
        }
    }
}

/// What reading and mapping one source produced.
struct SourceOutcome {
    desired: DesiredState,
    quarantine: Vec<QuarantineItem>,
    report: SourceReport,
    /// Why the run must stop before apply, and the stage whose plugin caused it.
    aborted: Option<(PluginKind, String)>,
    /// The source's state for its next read, kept once this run is applied.
    state: Vec<(String, String)>,
    /// `[tenant.privacy] keep_raw_attributes`: (object id, the entry's
    /// attributes as JSON) of every entry admitted.
    raw: Vec<(String, String)>,
    /// What the store held for the source: all of it, or for an incremental
    /// read only the part around its changes (`partial_of`).
    snapshot: crate::diff::Snapshot,
    /// Which quarantined entries of the source this run settles.
    settled: Settled,
    /// Reading (with mapping and custom attributes, which run as entries
    /// stream in), loading the stored state, then resolving memberships and roles.
    read_time: Duration,
    snapshot_time: Duration,
    resolve_time: Duration,
    /// Rows for the mapping memo, written unless the run is aborted.
    memo: Option<crate::mapping::memo::MemoWrites>,
}

/// Runs one tenant's sync.
/// Where a run gets its sources: by default each is opened from its
/// configuration; `roster serve` hands over a realtime source's buffered changes.
pub trait SourceProvider {
    fn open(
        &mut self,
        config: &Config,
        tenant: &TenantConfig,
        source: &SourceConfig,
        host: &PluginHost,
    ) -> Result<Box<dyn Source>, SyncError>;
}

/// Opens every source from its configuration.
pub struct Configured;

impl SourceProvider for Configured {
    fn open(
        &mut self,
        config: &Config,
        tenant: &TenantConfig,
        source: &SourceConfig,
        host: &PluginHost,
    ) -> Result<Box<dyn Source>, SyncError> {
        open_source(config, tenant, source, host)
    }
}

pub fn sync_tenant(
    config: &Config,
    tenant: &TenantConfig,
    store: &mut dyn Store,
    host: &PluginHost,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<RunReport, SyncError> {
    sync_tenant_with(config, tenant, store, host, opts, progress, &mut Configured)
}

/// [`sync_tenant`] with the sources coming from `sources`.
pub fn sync_tenant_with(
    config: &Config,
    tenant: &TenantConfig,
    store: &mut dyn Store,
    host: &PluginHost,
    opts: &SyncOptions,
    progress: &dyn Progress,
    sources: &mut dyn SourceProvider,
) -> Result<RunReport, SyncError> {
    let started = Instant::now();
    let mut mapping =
        MappingStage::new(instantiate_mapper(config, tenant, host, store)?, tenant.limits.plugin_batch_size);
    let mut custom = if stage_active(tenant, store, PluginKind::CustomAttributes)? {
        Some(instantiate(config, tenant, host, store, PluginKind::CustomAttributes)?)
    } else {
        None
    };
    let mut roles = if stage_active(tenant, store, PluginKind::RoleAssigner)? {
        Some(instantiate(config, tenant, host, store, PluginKind::RoleAssigner)?)
    } else {
        None
    };
    // (kind, identity) of every plugin that runs, for health, the plan and the run record.
    let mut plugins: Vec<(PluginKind, PluginIdentity)> = vec![(PluginKind::Mapper, mapping.plugin().clone())];
    plugins.extend(custom.iter().map(|c| (PluginKind::CustomAttributes, c.identity().clone())));
    plugins.extend(roles.iter().map(|r| (PluginKind::RoleAssigner, r.identity().clone())));
    for (kind, plugin) in &plugins {
        let health = store.plugin_health(&tenant.id, kind.as_str(), &plugin.hash)?;
        if let Some(since) = &health.disabled_at {
            return Err(SyncError::PluginDisabled {
                kind: *kind,
                plugin: plugin.clone(),
                since: since.clone(),
                failures: health.consecutive_failures,
                last_error: health.last_error.unwrap_or_default(),
            });
        }
    }
    let run_id = if opts.dry_run { None } else { Some(store.begin_run(&tenant.id, &opts.trigger, false)?) };

    let mut phase_ms: BTreeMap<&'static str, u64> = BTreeMap::new();
    add_phase(&mut phase_ms, "setup", started.elapsed());
    let mut plan = Plan { tenant: tenant.id.clone(), sources: Vec::new() };
    let mut reports = Vec::new();
    let mut partial = Vec::new();
    let mut aborted = None;
    let mut quarantines = Vec::new();

    // What the stored state of an incremental source was computed with: a
    // different mapping makes a delta over the old results wrong, so it forces
    // a full read.
    let fingerprint = pipeline_fingerprint(tenant, &plugins);
    let memo_seed = (!tenant.limits.plugin_grant_clock)
        .then(|| crate::mapping::memo::Seed::new(&fingerprint, &tenant.privacy.sensitive_attributes, roles.is_some()));
    let narrow = narrow_runs_possible(tenant, opts);
    let mut read = Vec::new();
    for source_cfg in &tenant.sources {
        if opts.only_sources.as_ref().is_some_and(|only| !only.iter().any(|n| n == source_cfg.name())) {
            // Not read this run: as stored, so conflicts still see it and nothing of it changes.
            let snapshot_started = Instant::now();
            let snapshot = store.snapshot(&tenant.id, source_cfg.name())?;
            add_phase(&mut phase_ms, "snapshot", snapshot_started.elapsed());
            read.push((source_cfg.name(), carried_over(source_cfg, snapshot)));
            continue;
        }
        let mut resume =
            if opts.full { Default::default() } else { store.source_states(&tenant.id, source_cfg.name())? };
        if resume.get(PIPELINE_STATE_KEY) != Some(&fingerprint) {
            resume.clear();
        }
        let outcome = read_and_map(
            config,
            tenant,
            source_cfg,
            &mut mapping,
            custom.as_mut(),
            roles.as_mut(),
            &mut *store,
            narrow,
            &resume,
            memo_seed.as_ref(),
            progress,
            sources,
            host,
        );
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if let Some(id) = run_id {
                    let _ = store.finish_run(
                        id,
                        &RunOutcome { status: "failed".into(), summary: json!({ "error": e.to_string() }) },
                    );
                }
                return Err(e);
            }
        };
        add_phase(&mut phase_ms, "read", outcome.read_time);
        add_phase(&mut phase_ms, "snapshot", outcome.snapshot_time);
        add_phase(&mut phase_ms, "resolve", outcome.resolve_time);
        if let Some(err) = &outcome.report.error {
            partial.push(err.clone());
        }
        let stop = outcome.aborted.is_some();
        if stop && aborted.is_none() {
            aborted = outcome.aborted.clone();
        }
        read.push((source_cfg.name(), outcome));
        if stop {
            break;
        }
    }

    // Conflicts are decided over all sources at once, then each source is diffed.
    let conflicts_started = Instant::now();
    let decisions: HashMap<(String, String), String> =
        store.conflict_decisions(&tenant.id)?.into_iter().map(|(k, v, w)| ((k, v), w)).collect();
    let app_edits = store.app_edits(&tenant.id)?;
    let mut resolver: Option<PluginInstance> = None;
    let mut resolver_failure: Option<String> = None;
    let resolver_label = {
        let (binary, _, builtin) = tenant_plugin(config, tenant, store, PluginKind::ConflictResolver)?;
        if builtin { format!("built-in {}", binary.name) } else { format!("{} ({})", binary.name, binary.origin) }
    };
    let conflict_outcome = {
        let mut states: Vec<crate::conflict::SourceState<'_>> = read
            .iter_mut()
            .map(|(name, outcome)| crate::conflict::SourceState {
                source: name,
                desired: &mut outcome.desired,
                snapshot: &outcome.snapshot,
                quarantine: &mut outcome.quarantine,
            })
            .collect();
        let store_ref: &mut dyn Store = &mut *store;
        let mut decide = |conflicts: &[ConflictInput]| -> Result<Vec<DecisionOutput>, String> {
            if resolver.is_none() {
                match instantiate(config, tenant, host, store_ref, PluginKind::ConflictResolver) {
                    Ok(r) => resolver = Some(r),
                    Err(e) => {
                        resolver_failure = Some(e.to_string());
                        return Err(e.to_string());
                    }
                }
            }
            let Some(r) = resolver.as_mut() else { return Err("conflict resolver unavailable".into()) };
            r.resolve(conflicts).map_err(|e| {
                resolver_failure = Some(e.to_string());
                e.to_string()
            })
        };
        crate::conflict::resolve(&tenant.conflicts, &decisions, &app_edits, &resolver_label, &mut decide, &mut states)
    };
    let conflicts = conflict_outcome.counts;
    add_phase(&mut phase_ms, "conflicts", conflicts_started.elapsed());
    let diff_started = Instant::now();
    if let Some(r) = &resolver {
        plugins.push((PluginKind::ConflictResolver, r.identity().clone()));
    }
    let mut plugin_seconds: BTreeMap<String, f64> = BTreeMap::new();
    plugin_seconds.insert(PluginKind::Mapper.as_str().into(), mapping.busy().as_secs_f64());
    for (kind, instance) in [
        (PluginKind::CustomAttributes, custom.as_ref()),
        (PluginKind::RoleAssigner, roles.as_ref()),
        (PluginKind::ConflictResolver, resolver.as_ref()),
    ] {
        if let Some(i) = instance {
            plugin_seconds.insert(kind.as_str().into(), i.busy().as_secs_f64());
        }
    }
    let mut raws = Vec::new();
    let mut memos = Vec::new();
    let mut garbage = Vec::with_capacity(read.len());
    let mut objects_held = 0;
    for (name, mut outcome) in read {
        objects_held += outcome.desired.objects.len() + outcome.snapshot.objects.len();
        // Counted first: the diff moves what changes into the plan.
        if outcome.snapshot.partial_of.is_none() {
            outcome.report.mapped = outcome.desired.objects.len() as u64;
        }
        plan.sources.push(diff(name, &outcome.snapshot, &mut outcome.desired));
        outcome.report.quarantined = outcome.quarantine.len() as u64;
        let settled = if outcome.desired.read_complete { outcome.settled } else { Settled::Nothing };
        quarantines.push((name.to_string(), outcome.desired.read_complete, settled, outcome.quarantine, outcome.state));
        raws.push((name, std::mem::take(&mut outcome.raw)));
        if let Some(writes) = outcome.memo.take() {
            memos.push((name, writes));
        }
        reports.push(outcome.report);
        garbage.push((outcome.desired, outcome.snapshot));
    }
    // Freed here, before the apply. Freed on another thread, the memory
    // came back to this one only well into the apply, so the directory's
    // desired state and the apply's buffers were held together: the full
    // sync's peak. With attributes packed, freeing it takes milliseconds.
    let freeing = Instant::now();
    drop(garbage);
    crate::util::release_free_memory(objects_held);
    tracing::debug!(tenant = %tenant.id, ms = freeing.elapsed().as_millis() as u64, "desired state freed");

    add_phase(&mut phase_ms, "diff", diff_started.elapsed());
    let counts = plan.counts();
    let abort_kind: Option<PluginKind> = aborted.as_ref().map(|(k, _)| *k);
    let status = if let Some((_, reason)) = aborted {
        RunStatus::Aborted(reason)
    } else if opts.dry_run {
        RunStatus::DryRun
    } else if let Some(block) = plan.guardrail(&tenant.safety).filter(|_| {
        !opts.allow_deletes
            && !opts.approved_deletes.as_ref().is_some_and(|ok| plan.delete_ids().iter().all(|id| ok.contains(*id)))
    }) {
        RunStatus::Blocked(block)
    } else {
        if !counts.is_empty() {
            if let Some(id) = run_id {
                let apply_started = Instant::now();
                store.apply(&plan, id)?;
                add_phase(&mut phase_ms, "apply", apply_started.elapsed());
                let cutoff =
                    time::OffsetDateTime::now_utc() - time::Duration::days(tenant.events.retention_days as i64);
                if let Ok(cutoff) = cutoff.format(&time::format_description::well_known::Rfc3339) {
                    store.prune_events(&tenant.id, &cutoff)?;
                }
                if let Some(days) = tenant.audit.retention_days {
                    let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(days as i64);
                    if let Ok(cutoff) = cutoff.format(&time::format_description::well_known::Rfc3339) {
                        store.audit_prune(&tenant.id, &cutoff)?;
                    }
                }
            }
        }
        if !partial.is_empty() {
            RunStatus::Partial(partial.clone())
        } else if counts.is_empty() {
            RunStatus::NoChanges
        } else {
            RunStatus::Applied
        }
    };

    let record_started = Instant::now();
    if let Some(id) = run_id {
        // The run's changes are applied by now: if recording the run fails,
        // the run still ends (as failed), rather than staying `applying`.
        let recorded = (|| -> Result<(), SyncError> {
            let applied = matches!(status, RunStatus::Applied | RunStatus::NoChanges);
            // A plugin that keeps aborting runs is switched off for this tenant.
            let plugin_error = match &status {
                RunStatus::Aborted(reason) => Some(reason.as_str()),
                _ => None,
            };
            if applied || plugin_error.is_some() {
                for (kind, p) in &plugins {
                    // An abort counts against the stage that caused it; the others
                    // neither failed nor succeeded. A failing resolver holds
                    // conflicts for review and counts against the resolver only.
                    let error = match kind {
                        PluginKind::ConflictResolver if applied => resolver_failure.as_deref(),
                        k if Some(*k) == abort_kind => plugin_error,
                        _ if abort_kind.is_some() => continue,
                        _ => None,
                    };
                    let h = store.record_plugin_run(
                        &tenant.id,
                        kind.as_str(),
                        &p.hash,
                        error,
                        tenant.limits.disable_after_failed_runs,
                    )?;
                    if error.is_some() && h.disabled_at.is_some() {
                        tracing::error!(tenant = %tenant.id, %kind, plugin = %p, failures = h.consecutive_failures, "plugin disabled for this tenant after consecutive failed runs");
                    }
                }
            }
            if applied {
                if tenant.privacy.keep_raw_attributes {
                    for (source, rows) in &raws {
                        store.put_raw_attributes(&tenant.id, source, rows)?;
                    }
                } else {
                    store.clear_raw_attributes(&tenant.id)?;
                }
            }
            // A cache of what mapping made of each entry: true whatever became of
            // the plan, unless a plugin broke the run.
            if abort_kind.is_none() {
                for (source, writes) in &memos {
                    store.put_map_memo(&tenant.id, source, &writes.rows, &writes.removed)?;
                }
            }
            if applied && !conflict_outcome.edit_actions.is_empty() {
                store.settle_app_edits(&tenant.id, &conflict_outcome.edit_actions)?;
            }
            for (source, complete, settled, items, state) in &quarantines {
                store.record_quarantine(&tenant.id, source, id, items, settled)?;
                // Per-source state: when the store last matched a complete read of
                // it, and where an incremental source continues from.
                if applied && *complete {
                    store.set_source_state(&tenant.id, source, "last_complete_sync", &crate::util::now_rfc3339())?;
                    store.set_source_state(&tenant.id, source, "last_complete_run", &id.to_string())?;
                    for (k, v) in state {
                        store.set_source_state(&tenant.id, source, k, v)?;
                    }
                    if !state.is_empty() {
                        store.set_source_state(&tenant.id, source, PIPELINE_STATE_KEY, &fingerprint)?;
                    }
                }
            }
            let summary = json!({
                "counts": counts,
                "sources": reports,
                "plugins": plugins.iter().map(|(k, p)| json!({"kind": k, "name": p.name, "version": p.version, "sha256": p.hash})).collect::<Vec<_>>(),
                "allow_deletes": opts.allow_deletes,
                "plugin_seconds": plugin_seconds,
                "phase_ms": phase_ms,
                // Where each source's read ended (cookie, USN, delta link): the
                // audit's run record ties the run's changes to it.
                "positions": quarantines
                    .iter()
                    .filter(|(_, complete, _, _, state)| *complete && !state.is_empty())
                    .map(|(source, _, _, _, state)| {
                        let position: serde_json::Map<String, serde_json::Value> =
                            state.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                        (source.clone(), serde_json::Value::Object(position))
                    })
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
                "conflicts": conflicts,
                "approved_deletes": opts.approved_deletes.as_ref().map(|a| a.len()),
                // What an operator approves: exactly these deletions.
                "blocked_deletes": matches!(status, RunStatus::Blocked(_)).then(|| plan.delete_ids()),
                "detail": match &status {
                    RunStatus::Blocked(b) => b.to_string(),
                    RunStatus::Aborted(r) => r.clone(),
                    RunStatus::Partial(p) => p.join("; "),
                    _ => String::new(),
                },
            });
            store.finish_run(id, &RunOutcome { status: status.as_str().into(), summary })?;
            Ok(())
        })();
        if let Err(e) = recorded {
            let summary = json!({ "error": format!("recording the run failed: {e}"), "counts": counts });
            if let Err(also) = store.finish_run(id, &RunOutcome { status: "failed".into(), summary }) {
                tracing::error!(tenant = %tenant.id, run_id = id, error = %also, "cannot mark the run failed");
            }
            return Err(e);
        }
    }
    add_phase(&mut phase_ms, "record", record_started.elapsed());
    tracing::debug!(tenant = %tenant.id, phases = ?phase_ms, "run phases (ms)");

    Ok(RunReport {
        tenant: tenant.id.clone(),
        run_id,
        status,
        counts,
        plan,
        sources: reports,
        plugins,
        conflicts,
        elapsed_ms: started.elapsed().as_millis(),
        plugin_seconds,
        phase_ms,
    })
}

fn add_phase(phases: &mut BTreeMap<&'static str, u64>, phase: &'static str, took: Duration) {
    *phases.entry(phase).or_default() += took.as_millis() as u64;
}

pub const PIPELINE_STATE_KEY: &str = "pipeline";

/// The fingerprint a run of this tenant would store with incremental state
/// now (for `roster serve`, deciding whether stored cookies still apply).
pub fn current_fingerprint(
    config: &Config,
    tenant: &TenantConfig,
    host: &PluginHost,
    store: &mut dyn Store,
) -> Result<String, SyncError> {
    let mut plugins = vec![(PluginKind::Mapper, instantiate_mapper(config, tenant, host, store)?.identity().clone())];
    if stage_active(tenant, store, PluginKind::CustomAttributes)? {
        plugins.push((
            PluginKind::CustomAttributes,
            instantiate(config, tenant, host, store, PluginKind::CustomAttributes)?.identity().clone(),
        ));
    }
    Ok(pipeline_fingerprint(tenant, &plugins))
}

/// A source this run does not read, as its stored state.
fn carried_over(source_cfg: &SourceConfig, snapshot: crate::diff::Snapshot) -> SourceOutcome {
    let objects: HashMap<String, Desired> = snapshot
        .objects
        .iter()
        .map(|(id, o)| {
            (
                id.clone(),
                Desired {
                    id: id.clone(),
                    kind: o.kind,
                    source: o.source.clone(),
                    anchor: o.anchor.clone(),
                    dn: o.dn.clone(),
                    attrs: o.attrs.clone(),
                },
            )
        })
        .collect();
    SourceOutcome {
        desired: DesiredState {
            objects,
            memberships: snapshot.memberships.clone(),
            protected: HashSet::new(),
            protected_dns: HashSet::new(),
            // Nothing was read, so nothing may be deleted on its account.
            read_complete: false,
        },
        quarantine: Vec::new(),
        report: SourceReport {
            source: source_cfg.name().to_string(),
            kind: source_cfg.kind().into(),
            read: ReadSummaryView { mode: "not-read".into(), ..Default::default() },
            ..Default::default()
        },
        aborted: None,
        state: Vec::new(),
        raw: Vec::new(),
        snapshot,
        settled: Settled::Nothing,
        read_time: Duration::ZERO,
        snapshot_time: Duration::ZERO,
        resolve_time: Duration::ZERO,
        memo: None,
    }
}

/// What decides the stored results of a source besides the directory's
/// content: the mapper and custom-attribute plugins and their configuration,
/// and every source's definition (bases, filters, anchor, scope…).
fn pipeline_fingerprint(tenant: &TenantConfig, plugins: &[(PluginKind, PluginIdentity)]) -> String {
    let mut text = String::new();
    for (k, p) in plugins.iter().filter(|(k, _)| matches!(k, PluginKind::Mapper | PluginKind::CustomAttributes)) {
        text.push_str(&format!("{k}:{}\n", p.hash));
    }
    text.push_str(&format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        tenant.mapping,
        tenant.group_mapping,
        tenant
            .custom_attributes
            .iter()
            .map(|(k, v)| (k, v.ty, v.required, v.multi_valued, &v.from))
            .collect::<Vec<_>>(),
        tenant.plugins.mapper.as_ref().map(|p| p.config()),
        tenant.plugins.custom_attributes.as_ref().map(|p| p.config()),
        // The whole source definition: a cookie or delta token is only good
        // for the searches (bases, filters, anchor) that issued it.
        tenant.sources.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>(),
    ));
    crate::util::sha256_hex(text.as_bytes())
}

/// Whether an incremental read of this tenant may work on the neighbourhood
/// of its changes instead of the whole stored state. Not when anything in the
/// run looks across the whole tenant: several sources (conflicts between
/// them), group scoping (reachability from the scope groups), correlation, or
/// a unique key other than `userName` (the one the store can look up).
fn narrow_runs_possible(tenant: &TenantConfig, opts: &SyncOptions) -> bool {
    tenant.sources.len() == 1
        && opts
            .only_sources
            .as_ref()
            .is_none_or(|only| tenant.sources.iter().all(|s| only.iter().any(|n| n == s.name())))
        && tenant.sources.iter().all(|s| s.scope().groups.is_empty())
        && tenant.conflicts.correlate_on.is_none()
        && tenant.conflicts.unique.iter().all(|k| k == "userName")
}

/// What an incremental read saw, from which its neighbourhood is found.
struct Seeds<'a> {
    /// Anchor → id of every entry read.
    read: &'a HashMap<String, String>,
    desired: &'a HashMap<String, Desired>,
    members: &'a HashMap<String, Vec<MemberRef>>,
    out_of_scope: &'a HashSet<String>,
    protected: &'a HashSet<String>,
    delta: &'a crate::source::Delta,
}

/// The stored state an incremental run works on, and what lets it leave the
/// unchanged members of a changed group unloaded.
#[derive(Default)]
struct Neighborhood {
    snapshot: crate::diff::Snapshot,
    /// Member references of read groups (raw DN, or anchor) that name a
    /// stored object the read did not touch: → its id.
    resolved_dns: HashMap<String, String>,
    resolved_anchors: HashMap<String, String>,
    /// Those objects, where not loaded: they exist, unchanged, outside the snapshot.
    unloaded: HashSet<String>,
}

impl Neighborhood {
    fn whole(snapshot: crate::diff::Snapshot) -> Self {
        Neighborhood { snapshot, ..Default::default() }
    }
}

/// The part of the stored state an incremental read's results depend on:
/// - the objects it read, saw leave the scope, failed, or was told are
///   deleted or deactivated;
/// - every membership with one of those objects at either end, and the
///   object at the other end — except the members a read group still names
///   unchanged, which are matched by their stored DN key or anchor and left
///   unloaded (a group of 100,000 that gains one member loads one);
/// - the members that joined or left a read group;
/// - with roles: the members at any depth of groups whose own view changed
///   (deleted, renamed, attributes, or themselves joining or leaving a
///   group), and every group of everything in view at any depth, with those
///   memberships: a user's roles come from all of its groups;
/// - the stored users whose `userName` a read user now claims.
///
/// Merged and diffed, it plans exactly what the whole state would: objects
/// outside it are neither read nor reachable from what changed. Returns
/// `None` (use the whole state) when a read user's `userName` is claimed by
/// another user (a duplicate is decided over the whole tenant), and when the
/// neighbourhood would hold more than a quarter of the stored objects (a
/// renamed group of most of the directory, with roles): one scan of
/// everything is then cheaper than looking that much up by key.
fn neighborhood(
    store: &mut dyn Store,
    tenant: &str,
    source: &str,
    seeds: &Seeds<'_>,
    with_roles: bool,
    unique_user_name: bool,
) -> Result<Option<Neighborhood>, StoreError> {
    type Objects = HashMap<String, crate::model::Stored>;
    let total = store.object_count(tenant, source)?;
    let limit = (total / 4).max(2_000) as usize;
    let mut objects: Objects = HashMap::new();
    let mut memberships = crate::diff::Memberships::default();
    let add = |objects: &mut Objects, found: Vec<crate::model::Stored>| {
        for o in found {
            objects.entry(o.id.clone()).or_insert(o);
        }
    };
    let is_group = |id: &String, objects: &Objects| {
        objects.get(id).map(|o| o.kind == EntryKind::Group).unwrap_or(false)
            || seeds.desired.get(id).is_some_and(|o| o.kind == EntryKind::Group)
    };

    let touched: HashSet<String> =
        seeds.read.values().chain(seeds.out_of_scope).chain(seeds.protected).cloned().collect();
    if touched.len() > limit {
        return Ok(None);
    }
    let touched_ids: Vec<String> = touched.iter().cloned().collect();
    add(&mut objects, store.objects_by_ids(tenant, source, &touched_ids)?);
    let d = seeds.delta;
    let by_anchor: HashSet<String> = d
        .deleted
        .iter()
        .chain(&d.deactivated)
        .chain(d.removed_members.iter().flat_map(|(g, m)| [g, m]))
        .filter(|a| !seeds.read.contains_key(*a))
        .cloned()
        .collect();
    let gone = store.objects_by_anchors(tenant, source, &by_anchor.into_iter().collect::<Vec<_>>())?;
    let mut touched = touched;
    touched.extend(gone.iter().filter(|o| d.deleted.contains(&o.anchor)).map(|o| o.id.clone()));
    add(&mut objects, gone);

    // A read group's stored members, matched against what it names now.
    let read_groups: Vec<String> = seeds
        .desired
        .values()
        .filter(|o| o.kind == EntryKind::Group && objects.contains_key(&o.id))
        .map(|o| o.id.clone())
        .collect();
    // Keyed by the stored DN as spelled (a group's member values usually are
    // spelled so: no parsing); by normalised DN and by anchor only if needed.
    let keyed = store.member_keys(tenant, source, &read_groups)?;
    type KeyMap<'k> = HashMap<&'k str, HashMap<&'k str, &'k str>>;
    let index = |key: fn(&crate::store::MemberKey) -> Option<&str>| -> KeyMap<'_> {
        let mut map: KeyMap<'_> = HashMap::new();
        for k in &keyed {
            if let Some(v) = key(k) {
                map.entry(k.group_id.as_str()).or_default().insert(v, k.member_id.as_str());
            }
        }
        map
    };
    memberships.extend(keyed.iter().map(|k| (k.group_id.clone(), k.member_id.clone())));
    let by_dn = index(|k| k.dn.as_deref());
    let (mut by_dn_key, mut by_anchor): (Option<KeyMap<'_>>, Option<KeyMap<'_>>) = (None, None);
    let mut hood = Neighborhood::default();
    let mut matched: HashSet<(&str, &str)> = HashSet::new();
    let (mut new_dn_keys, mut new_anchors) = (HashSet::new(), HashSet::new());
    for (g, refs) in seeds.members {
        for r in refs {
            let (key, stored): (String, Option<&str>) = match r {
                MemberRef::Dn(dn) => match by_dn.get(g.as_str()).and_then(|s| s.get(dn.as_str())) {
                    Some(id) => (String::new(), Some(*id)),
                    None => {
                        let key = normalize_dn(dn);
                        let map = by_dn_key.get_or_insert_with(|| index(|k| k.dn_key.as_deref()));
                        let id = map.get(g.as_str()).and_then(|s| s.get(key.as_str())).copied();
                        (key, id)
                    }
                },
                MemberRef::Anchor(a) if seeds.read.contains_key(a) => continue,
                MemberRef::Anchor(a) => {
                    let map = by_anchor.get_or_insert_with(|| index(|k| Some(k.anchor.as_str())));
                    (a.clone(), map.get(g.as_str()).and_then(|s| s.get(a.as_str())).copied())
                }
            };
            match stored {
                Some(id) if !touched.contains(id) => {
                    matched.insert((g.as_str(), id));
                    match r {
                        MemberRef::Dn(dn) => hood.resolved_dns.insert(dn.clone(), id.to_string()),
                        MemberRef::Anchor(a) => hood.resolved_anchors.insert(a.clone(), id.to_string()),
                    };
                }
                // Touched members are loaded already and resolve from there.
                Some(_) => {}
                None => {
                    match r {
                        MemberRef::Dn(_) => new_dn_keys.insert(key),
                        MemberRef::Anchor(_) => new_anchors.insert(key),
                    };
                }
            }
        }
    }
    // Joiners: named now, not stored as members.
    let mut joiners = store.objects_by_dn_keys(tenant, source, &new_dn_keys.into_iter().collect::<Vec<_>>())?;
    joiners.extend(store.objects_by_anchors(tenant, source, &new_anchors.into_iter().collect::<Vec<_>>())?);
    if objects.len() + joiners.len() > limit {
        return Ok(None);
    }
    let mut changed_view: HashSet<String> =
        joiners.iter().filter(|o| o.kind == EntryKind::Group).map(|o| o.id.clone()).collect();
    add(&mut objects, joiners);
    // Leavers, and members of Graph-style partial groups: stored members
    // no reference matched. Left unloaded: members still named.
    let partial: HashSet<&str> = d.partial_groups.iter().map(String::as_str).collect();
    let mut leavers = HashSet::new();
    for k in &keyed {
        let (g, m) = (&k.group_id, &k.member_id);
        let still_named = matched.contains(&(g.as_str(), m.as_str()))
            || (objects.get(g).is_some_and(|o| partial.contains(o.anchor.as_str()))
                && !touched.contains(m)
                && !objects.contains_key(m));
        if still_named {
            hood.unloaded.insert(m.clone());
        } else if !objects.contains_key(m) {
            leavers.insert(m.clone());
        } else if is_group(m, &objects) {
            changed_view.insert(m.clone());
        }
    }
    drop((matched, by_dn, by_dn_key, by_anchor));
    if objects.len() + leavers.len() > limit {
        return Ok(None);
    }
    let leavers = store.objects_by_ids(tenant, source, &leavers.into_iter().collect::<Vec<_>>())?;
    // A group that joined or left another changes its members' view.
    changed_view.extend(leavers.iter().filter(|o| o.kind == EntryKind::Group).map(|o| o.id.clone()));
    add(&mut objects, leavers);

    // Memberships of the changed objects: as members, and (the read groups'
    // are above) as groups.
    let touched: Vec<String> = touched.into_iter().collect();
    let read_set: HashSet<&String> = read_groups.iter().collect();
    let other_groups: Vec<String> = touched.iter().filter(|id| !read_set.contains(id)).cloned().collect();
    memberships.extend(store.memberships_touching(tenant, source, &other_groups, MembershipEnd::Group)?);
    memberships.extend(store.memberships_touching(tenant, source, &touched, MembershipEnd::Member)?);

    if with_roles {
        // Down: members at any depth of the groups whose view changed.
        changed_view.extend(
            touched
                .iter()
                .filter(|id| is_group(id, &objects))
                .filter(|id| match (objects.get(*id), seeds.desired.get(*id)) {
                    (Some(have), Some(want)) => have.dn != want.dn || have.attrs != want.attrs,
                    _ => true,
                })
                .cloned(),
        );
        let mut seen: HashSet<String> = HashSet::new();
        let mut frontier: Vec<String> = changed_view.into_iter().collect();
        while !frontier.is_empty() {
            seen.extend(frontier.iter().cloned());
            let edges = store.memberships_touching(tenant, source, &frontier, MembershipEnd::Group)?;
            let new = distinct(edges.iter().map(|(_, m)| m).filter(|m| !objects.contains_key(*m)));
            if objects.len() + new.len() > limit {
                return Ok(None);
            }
            add(&mut objects, store.objects_by_ids(tenant, source, &new)?);
            frontier = distinct(edges.iter().map(|(_, m)| m).filter(|m| !seen.contains(*m) && is_group(m, &objects)));
            memberships.extend(edges);
        }
        // Up: every group of everything in view, at any depth. Groups too: a
        // user joining a group gets the group's ancestors, which no stored
        // membership of the user leads to.
        let mut seen: HashSet<String> = HashSet::new();
        let mut frontier = distinct(objects.keys().chain(seeds.desired.keys()));
        while !frontier.is_empty() {
            if seen.len() > limit {
                return Ok(None);
            }
            seen.extend(frontier.iter().cloned());
            let edges = store.memberships_touching(tenant, source, &frontier, MembershipEnd::Member)?;
            frontier = distinct(edges.iter().map(|(g, _)| g).filter(|g| !seen.contains(*g)));
            memberships.extend(edges);
        }
    }

    // Both ends of every membership in view, but the unchanged members.
    hood.unloaded.retain(|id| !objects.contains_key(id));
    let missing = distinct(
        memberships
            .iter()
            .flat_map(|(g, m)| [g, m])
            .filter(|id| !objects.contains_key(*id) && !hood.unloaded.contains(*id)),
    );
    if objects.len() + missing.len() > limit {
        return Ok(None);
    }
    add(&mut objects, store.objects_by_ids(tenant, source, &missing)?);
    hood.unloaded.retain(|id| !objects.contains_key(id));

    if unique_user_name {
        let mut claimed: HashMap<String, &str> = HashMap::new();
        for u in seeds.desired.values().filter(|o| o.kind == EntryKind::User) {
            if let Some(name) = u.attrs.first("userName") {
                if claimed.insert(name.to_lowercase(), &u.id).is_some() {
                    return Ok(None);
                }
            }
        }
        let keys: Vec<String> = claimed.keys().cloned().collect();
        for holder in store.users_by_user_name_keys(tenant, source, &keys)? {
            let key = holder.attrs.first("userName").map(|n| n.to_lowercase());
            if key.as_deref().and_then(|k| claimed.get(k)).is_some_and(|id| *id != holder.id) {
                return Ok(None);
            }
        }
    }

    hood.snapshot = crate::diff::Snapshot { objects, memberships, partial_of: Some(total) };
    Ok(Some(hood))
}

/// Each id once, for a batched lookup.
fn distinct<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    ids.collect::<HashSet<_>>().into_iter().cloned().collect()
}

/// Reads one source, maps every in-scope entry, resolves memberships. An
/// incremental read is merged over the stored state (`snapshot`): what it
/// did not read stays as stored, what it reports deleted goes.
#[allow(clippy::too_many_arguments)]
fn read_and_map(
    config: &Config,
    tenant: &TenantConfig,
    source_cfg: &SourceConfig,
    mapping: &mut MappingStage,
    custom: Option<&mut PluginInstance>,
    roles: Option<&mut PluginInstance>,
    store: &mut dyn Store,
    narrow: bool,
    resume: &std::collections::BTreeMap<String, String>,
    memo_seed: Option<&crate::mapping::memo::Seed>,
    progress: &dyn Progress,
    sources: &mut dyn SourceProvider,
    host: &PluginHost,
) -> Result<SourceOutcome, SyncError> {
    let source_name = source_cfg.name().to_string();
    let scope = source_cfg.scope();
    let ou_scope = OuScope::new(&scope).map_err(|message| SyncError::Setup { tenant: tenant.id.clone(), message })?;
    let mut source = sources.open(config, tenant, source_cfg, host)?;
    source.resume(resume);
    let plugin_label = mapping.plugin().to_string();

    let mut acc = Accumulator {
        tenant: &tenant.id,
        custom_attributes: &tenant.custom_attributes,
        privacy: &tenant.privacy,
        custom,
        source: &source_name,
        plugin_label,
        max_failed_percent: tenant.limits.max_failed_percent,
        desired: HashMap::new(),
        members: HashMap::new(),
        dn_index: crate::dn::DnIndex::default(),
        out_of_scope_ids: HashSet::new(),
        anchor_index: HashMap::new(),
        protected: HashSet::new(),
        protected_dns: HashSet::new(),
        quarantine: Vec::new(),
        report: SourceReport { source: source_name.clone(), kind: source_cfg.kind().into(), ..Default::default() },
        raw: tenant.privacy.keep_raw_attributes.then(Vec::new),
        seen: 0,
        failed: 0,
        failed_custom: 0,
        aborted: None,
        // Until it is loaded, the memo records what mapping makes of each
        // entry, so that entries changed by incremental runs are not mapped
        // again by the next whole read either.
        memo: memo_seed.map(|seed| crate::mapping::memo::Memo::recording(seed.clone())),
    };
    let mut memo_error: Option<crate::store::StoreError> = None;
    let load_memo = |store: &mut dyn Store,
                     memo: &mut crate::mapping::memo::Memo|
     -> Result<(), crate::store::StoreError> {
        let started = Instant::now();
        let snapshot = store.snapshot(&tenant.id, &source_name)?;
        let rows = store.map_memo(&tenant.id, &source_name)?;
        tracing::debug!(tenant = %tenant.id, source = %source_name, rows = rows.len(), ms = started.elapsed().as_millis() as u64, "mapping memo loaded");
        memo.load(rows, snapshot);
        Ok(())
    };
    let mut memo_load_time = Duration::ZERO;
    let mut lazy_memo_load_time = Duration::ZERO;
    // Without a stored position the read is of the whole source: load the
    // memo now, so not even the first entries are mapped again needlessly.
    if let Some(memo) = acc.memo.as_mut().filter(|_| resume.is_empty()) {
        let started = Instant::now();
        load_memo(&mut *store, memo)?;
        memo_load_time += started.elapsed();
    }

    let mut plugin_fatal: Option<PluginError> = None;
    let read_started = Instant::now();
    let read_result = {
        let mut sink = |item: SourceItem| -> Result<(), String> {
            match item {
                SourceItem::Rejected { dn, anchor, kind, reason } => {
                    acc.reject(dn, anchor, kind, "read", reason, None);
                }
                SourceItem::Entry(entry) => {
                    if !ou_scope.contains(entry.dn.as_deref()) {
                        acc.report.out_of_scope += 1;
                        // An incremental read: the entry moved out of scope, so its stored version goes.
                        acc.out_of_scope_ids.insert(object_id(acc.tenant, acc.source, entry.kind, &entry.anchor));
                        return Ok(());
                    }
                    acc.seen += 1;
                    if acc.seen % 1000 == 0 {
                        progress.entries(acc.source, acc.seen);
                    }
                    let big = acc.seen >= MEMO_AFTER_ENTRIES;
                    if let Some(memo) = acc.memo.as_mut().filter(|m| big && !m.is_loaded()) {
                        let started = Instant::now();
                        match load_memo(&mut *store, memo) {
                            Ok(()) => {}
                            Err(e) => {
                                let msg = e.to_string();
                                memo_error = Some(e);
                                return Err(msg);
                            }
                        }
                        lazy_memo_load_time = started.elapsed();
                    }
                    if let Some(memo) = acc.memo.as_mut().filter(|m| m.is_loaded()) {
                        let id = object_id(acc.tenant, acc.source, entry.kind, &entry.anchor);
                        if let Some(attrs) = memo.recall(&id, &entry) {
                            acc.take_unchanged(id, entry, attrs);
                            return Ok(());
                        }
                    }
                    match mapping.push(entry) {
                        Ok(done) => acc.take(done),
                        Err(e) => {
                            let msg = e.to_string();
                            plugin_fatal = Some(e);
                            return Err(msg);
                        }
                    }
                }
            }
            if let Some(reason) = acc.should_abort(false) {
                acc.aborted = Some(reason.clone());
                return Err(reason);
            }
            Ok(())
        };
        source.read(&mut sink)
    };
    // A memo loaded during the read is stored state, not reading.
    let read_time = read_started.elapsed().saturating_sub(lazy_memo_load_time);
    memo_load_time += lazy_memo_load_time;
    if let Some(e) = plugin_fatal {
        return Err(SyncError::Plugin(e));
    }
    if let Some(e) = memo_error {
        return Err(e.into());
    }
    if acc.aborted.is_some() {
        mapping.discard();
    } else {
        match mapping.flush() {
            Ok(done) => acc.take(done),
            Err(e) => return Err(SyncError::Plugin(e)),
        }
    }
    progress.entries(acc.source, acc.seen);

    let (delta, source_state) = match &read_result {
        Ok(summary) => (summary.delta.clone(), summary.state.clone()),
        Err(_) => (None, Vec::new()),
    };
    let read_complete = match &read_result {
        Ok(summary) => {
            acc.report.read = summary.into();
            acc.aborted.is_none()
        }
        Err(SourceError::Stopped { .. }) => false,
        Err(e) => {
            tracing::error!(tenant = %tenant.id, source = %source_name, error = %e, "source read failed; no deletes will be planned");
            acc.report.error = Some(e.to_string());
            false
        }
    };
    if acc.aborted.is_none() {
        if let Some(reason) = acc.should_abort(true) {
            acc.aborted = Some(reason);
        }
    }
    // A read that failed before producing anything is an error, not a partial success.
    if let Err(e) = read_result {
        if acc.seen == 0 && acc.aborted.is_none() && !matches!(e, SourceError::Stopped { .. }) {
            return Err(SyncError::Source { tenant: tenant.id.clone(), source: e });
        }
    }

    // The stored state to merge over and diff against. An incremental read
    // needs only the part of it around what changed (see `neighborhood`).
    let snapshot_started = Instant::now();
    let memo = acc.memo.take();
    acc.report.not_remapped = memo.as_ref().map_or(0, |m| m.hits);
    let (memo_snapshot, memo_writes) = match memo {
        Some(memo) => {
            // After a complete read of the whole source, rows of what it no longer has go.
            let whole = delta.is_none() && read_complete && memo.is_loaded();
            let seen: Option<HashSet<&str>> = whole.then(|| acc.anchor_index.values().map(String::as_str).collect());
            let (snapshot, writes) = memo.finish(seen.as_ref());
            (snapshot, Some(writes))
        }
        None => (None, None),
    };
    let narrow_delta =
        delta.as_ref().filter(|d| narrow && read_complete && d.present.is_empty() && memo_snapshot.is_none());
    let snapshot = match narrow_delta {
        Some(d) => {
            let seeds = Seeds {
                read: &acc.anchor_index,
                desired: &acc.desired,
                members: &acc.members,
                out_of_scope: &acc.out_of_scope_ids,
                protected: &acc.protected,
                delta: d,
            };
            let unique_user_name = tenant.conflicts.unique.iter().any(|k| k == "userName");
            neighborhood(store, &tenant.id, &source_name, &seeds, roles.is_some(), unique_user_name)?
        }
        None => None,
    };
    let Neighborhood { snapshot, resolved_dns, resolved_anchors, unloaded } = match snapshot {
        Some(hood) => hood,
        None => match memo_snapshot {
            Some(whole) => Neighborhood::whole(whole),
            None => Neighborhood::whole(store.snapshot(&tenant.id, &source_name)?),
        },
    };
    let snapshot_time = snapshot_started.elapsed() + memo_load_time;
    let settled = match (&delta, read_complete) {
        (_, false) => Settled::Nothing,
        (None, true) => Settled::All,
        // An incremental read looked again at what it read and what went.
        (Some(d), true) => Settled::Anchors(
            acc.anchor_index
                .keys()
                .chain(&d.deleted)
                .chain(acc.quarantine.iter().filter_map(|q| q.anchor.as_ref()))
                .cloned()
                .collect::<HashSet<String>>()
                .into_iter()
                .collect(),
        ),
    };
    let read_mapped = acc.desired.len() as u64;

    let resolve_started = Instant::now();
    let Accumulator {
        mut desired,
        members,
        mut dn_index,
        mut anchor_index,
        out_of_scope_ids,
        mut protected,
        protected_dns,
        mut quarantine,
        mut report,
        aborted,
        failed,
        failed_custom,
        raw,
        ..
    } = acc;
    let mut aborted: Option<(PluginKind, String)> = aborted.map(|reason| {
        let kind = if failed_custom * 2 > failed { PluginKind::CustomAttributes } else { PluginKind::Mapper };
        (kind, reason)
    });

    let mut memberships = crate::diff::Memberships::default();
    if let Some(delta) = &delta {
        // Everything the read saw (mapped or not) is current; the rest is as stored.
        let read_ids: HashSet<String> = anchor_index.values().cloned().collect();
        let deleted: HashSet<&str> = delta.deleted.iter().map(String::as_str).collect();
        let deactivated: HashSet<&str> = delta.deactivated.iter().map(String::as_str).collect();
        let partial: HashSet<&str> = delta.partial_groups.iter().map(String::as_str).collect();
        let removed: HashSet<(&str, &str)> =
            delta.removed_members.iter().map(|(g, m)| (g.as_str(), m.as_str())).collect();
        let present: HashMap<EntryKind, &HashSet<String>> = delta.present.iter().map(|(k, p)| (*k, p)).collect();
        for (id, stored) in &snapshot.objects {
            if read_ids.contains(id)
                || deleted.contains(stored.anchor.as_str())
                || present.get(&stored.kind).is_some_and(|p| !p.contains(&stored.anchor))
                || out_of_scope_ids.contains(id)
                || protected.contains(id)
            {
                continue;
            }
            if let Some(dn) = &stored.dn {
                dn_index.insert_if_absent(dn, id);
            }
            anchor_index.entry(stored.anchor.clone()).or_insert_with(|| id.clone());
            let mut attrs = stored.attrs.clone();
            if deactivated.contains(stored.anchor.as_str()) && stored.kind == EntryKind::User {
                attrs.insert("active".into(), vec!["false".into()]);
            }
            desired.insert(
                id.clone(),
                Desired {
                    id: id.clone(),
                    kind: stored.kind,
                    source: stored.source.clone(),
                    anchor: stored.anchor.clone(),
                    dn: stored.dn.clone(),
                    attrs,
                },
            );
        }
        // Memberships of groups the read did not see stay as stored; so do
        // those of groups read with member additions only, less the removals.
        let anchor_of = |id: &str| snapshot.objects.get(id).map(|o| o.anchor.as_str()).unwrap_or("");
        for (g, m) in &snapshot.memberships {
            let kept = !read_ids.contains(g)
                || (partial.contains(anchor_of(g)) && !removed.contains(&(anchor_of(g), anchor_of(m))));
            if kept && desired.contains_key(g) && (desired.contains_key(m) || unloaded.contains(m)) {
                memberships.insert((g.clone(), m.clone()));
            }
        }
        tracing::info!(tenant = %tenant.id, source = %source_name, since = %delta.since, changed = read_ids.len(), deleted = delta.deleted.len(), "incremental read merged over the stored state");
    }

    // Resolve member references to ids; nested groups are plain group→group edges.
    // Consumed as resolved: a big directory's references are held only
    // until their memberships are. Sized once: growing the set would hold
    // its old and new tables at once, at the run's peak.
    memberships.reserve(members.values().map(Vec::len).sum());
    for (group_id, refs) in members {
        for r in &refs {
            // Unchanged members a narrow run left unloaded first: their
            // references are the bulk of a big group's.
            let target = match r {
                MemberRef::Dn(dn) => resolved_dns.get(dn).or_else(|| dn_index.get(dn)).cloned(),
                MemberRef::Anchor(a) => resolved_anchors.get(a).or_else(|| anchor_index.get(a)).cloned(),
            };
            match target {
                Some(member_id) if desired.contains_key(&member_id) || unloaded.contains(&member_id) => {
                    memberships.insert((group_id.clone(), member_id));
                }
                Some(_) => {} // member quarantined or skipped: its stored memberships are protected or go with it
                None => {
                    tracing::debug!(tenant = %tenant.id, source = %source_name, group = %group_id, member = ?r, "member not found in the source's scope")
                }
            }
        }
    }

    if !scope.groups.is_empty() {
        let mut edges: HashMap<String, Vec<String>> = HashMap::new();
        for (g, m) in &memberships {
            edges.entry(g.clone()).or_default().push(m.clone());
        }
        let roots: Vec<String> = scope
            .groups
            .iter()
            .filter_map(|g| {
                let by_dn = dn_index.get(g).cloned();
                let by_name = || {
                    desired
                        .values()
                        .find(|d| {
                            d.kind == EntryKind::Group
                                && (d.anchor == *g
                                    || d.attrs.first("displayName").is_some_and(|n| n.eq_ignore_ascii_case(g)))
                        })
                        .map(|d| d.id.clone())
                };
                let found = by_dn.or_else(by_name);
                if found.is_none() {
                    tracing::warn!(tenant = %tenant.id, source = %source_name, group = %g, "scope group not found in the source");
                }
                found
            })
            .collect();
        if roots.is_empty() && read_complete {
            // An empty scope would delete everything; that is never what a typo means.
            return Err(SyncError::Setup {
                tenant: tenant.id.clone(),
                message: format!(
                    "source '{source_name}': none of the scope_groups {:?} was found; refusing to treat the whole source as out of scope",
                    scope.groups
                ),
            });
        }
        let keep = group_scope(&roots, &edges);
        let before = desired.len();
        desired.retain(|id, _| keep.contains(id));
        report.out_of_scope += (before - desired.len()) as u64;
        memberships.retain(|(g, m)| desired.contains_key(g) && desired.contains_key(m));
    }

    // The indexes of the read served member resolution and scope; role
    // assignment, the peak of a full sync's memory, does without them.
    drop((dn_index, anchor_index, out_of_scope_ids, resolved_dns, resolved_anchors, unloaded));
    crate::util::release_free_memory(desired.len());

    if let Some(roles) = roles {
        let label = roles.identity().to_string();
        let failed = crate::roles::assign(roles, tenant.limits.plugin_batch_size, &mut desired, &memberships)?;
        for (id, why) in &failed {
            let Some(d) = desired.remove(id) else { continue };
            memberships.retain(|(g, m)| g != id && m != id);
            protected.insert(id.clone());
            tracing::warn!(tenant = %tenant.id, source = %source_name, anchor = %d.anchor, reason = %why, "entry quarantined");
            quarantine.push(QuarantineItem {
                source: source_name.clone(),
                anchor: Some(d.anchor.clone()),
                kind: Some(d.kind),
                dn: d.dn.clone(),
                stage: "roles".into(),
                reason: format!("tenant '{}': {why} (entry {})", tenant.id, d.anchor),
                plugin: Some(label.clone()),
            });
        }
        let seen = report.read.users.max(1);
        let percent = failed.len() as f64 * 100.0 / seen as f64;
        if aborted.is_none()
            && failed.len() as u64 >= EARLY_ABORT_MIN_FAILURES.min(seen)
            && percent > tenant.limits.max_failed_percent
        {
            aborted = Some((
                PluginKind::RoleAssigner,
                format!(
                    "{} of {seen} users ({percent:.1}%) of source '{source_name}' failed role assignment, over limits.max_failed_percent = {}; the run was aborted before apply. See `roster quarantine list --tenant {}`",
                    failed.len(),
                    tenant.limits.max_failed_percent,
                    tenant.id
                ),
            ));
        }
    }

    // Two entries claiming the same anchor is a source bug; keep the first, quarantine the rest (recorded in `take`).
    quarantine.sort_by(|a, b| (&a.dn, &a.anchor).cmp(&(&b.dn, &b.anchor)));
    // A narrow run's desired state is the neighbourhood; what it mapped is what it read.
    report.mapped = if snapshot.partial_of.is_some() { read_mapped } else { desired.len() as u64 };
    report.stored_loaded = snapshot.objects.len() as u64;
    report.quarantined = quarantine.len() as u64;
    Ok(SourceOutcome {
        desired: DesiredState {
            objects: desired,
            memberships,
            protected,
            protected_dns,
            read_complete: read_complete && aborted.is_none(),
        },
        quarantine,
        report,
        aborted,
        state: source_state,
        raw: raw.unwrap_or_default(),
        snapshot,
        settled,
        read_time,
        snapshot_time,
        resolve_time: resolve_started.elapsed(),
        memo: memo_writes,
    })
}

/// An entry's attributes as JSON (name → values): text as is, other bytes as
/// `base64:…`, sensitive values digested like mapped ones.
fn raw_json(privacy: &crate::config::PrivacyConfig, id: &str, entry: &SourceEntry) -> String {
    use base64::Engine as _;
    let attrs: serde_json::Map<String, serde_json::Value> = entry
        .attrs
        .iter()
        .map(|(name, values)| {
            let sensitive = privacy.is_sensitive(name);
            let values: Vec<serde_json::Value> = values
                .iter()
                .map(|v| {
                    let text = match std::str::from_utf8(v) {
                        Ok(t) => t.to_string(),
                        Err(_) => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(v)),
                    };
                    let text = if sensitive { crate::config::PrivacyConfig::digest(id, name, &text) } else { text };
                    serde_json::Value::String(text)
                })
                .collect();
            (name.clone(), serde_json::Value::Array(values))
        })
        .collect();
    serde_json::Value::Object(attrs).to_string()
}

struct Accumulator<'a> {
    tenant: &'a str,
    custom_attributes: &'a crate::custom_attrs::Schema,
    privacy: &'a crate::config::PrivacyConfig,
    /// The custom-attributes plugin, when the tenant runs that stage.
    custom: Option<&'a mut PluginInstance>,
    source: &'a str,
    plugin_label: String,
    max_failed_percent: f64,
    desired: HashMap<String, Desired>,
    /// Group id → its member references, resolved after the read.
    members: HashMap<String, Vec<MemberRef>>,
    /// Normalized DN → id of every entry seen (mapped or not).
    dn_index: crate::dn::DnIndex,
    /// Entries the read saw outside the OU scope.
    out_of_scope_ids: HashSet<String>,
    anchor_index: HashMap<String, String>,
    protected: HashSet<String>,
    protected_dns: HashSet<String>,
    quarantine: Vec<QuarantineItem>,
    report: SourceReport,
    /// Raw attributes of admitted entries, when the tenant keeps them.
    raw: Option<Vec<(String, String)>>,
    seen: u64,
    failed: u64,
    /// Of `failed`, those the custom-attributes stage rejected.
    failed_custom: u64,
    aborted: Option<String>,
    /// Loaded for a big read: entries it recalls are not mapped again.
    memo: Option<crate::mapping::memo::Memo>,
}

impl Accumulator<'_> {
    fn reject(
        &mut self,
        dn: Option<String>,
        anchor: Option<String>,
        kind: Option<EntryKind>,
        stage: &str,
        reason: String,
        plugin: Option<String>,
    ) {
        if let Some(a) = &anchor {
            // Protect both kinds when the kind is unknown: better to keep a stale
            // object than to delete a live one because its entry was unreadable.
            let kinds: &[EntryKind] = match kind {
                Some(EntryKind::User) => &[EntryKind::User],
                Some(EntryKind::Group) => &[EntryKind::Group],
                None => &[EntryKind::User, EntryKind::Group],
            };
            for k in kinds {
                self.protected.insert(object_id(self.tenant, self.source, *k, a));
            }
        } else if let Some(d) = &dn {
            // Without an anchor we cannot tell which stored object this was;
            // protect whatever is stored under this DN rather than delete it.
            self.protected_dns.insert(normalize_dn(d));
        }
        if stage != "read" {
            self.failed += 1;
        }
        if stage == "custom-attributes" {
            self.failed_custom += 1;
        }
        tracing::warn!(tenant = self.tenant, source = self.source, dn = ?dn, anchor = ?anchor, stage, %reason, "entry quarantined");
        self.quarantine.push(QuarantineItem {
            source: self.source.to_string(),
            anchor,
            kind,
            dn,
            stage: stage.into(),
            reason,
            plugin,
        });
    }

    fn entry_reason(&self, why: &str, entry: &SourceEntry) -> String {
        format!(
            "tenant '{}': {why} (entry {}{})",
            self.tenant,
            entry.anchor,
            entry.dn.as_deref().map(|d| format!(", {d}")).unwrap_or_default()
        )
    }

    /// An entry the memo recalled joins the desired state with its stored
    /// attributes, as if mapped.
    fn take_unchanged(&mut self, id: String, entry: SourceEntry, attrs: crate::model::Attributes) {
        if let Some(dn) = &entry.dn {
            self.dn_index.insert(dn, &id);
        }
        self.anchor_index.insert(entry.anchor.clone(), id.clone());
        let kind = entry.kind;
        self.admit_as(id, entry, kind, attrs, true);
    }

    /// A mapped entry joins the desired state.
    fn admit(&mut self, id: String, entry: SourceEntry, kind: EntryKind, attrs: crate::model::Attributes) {
        self.admit_as(id, entry, kind, attrs, false)
    }

    fn admit_as(
        &mut self,
        id: String,
        entry: SourceEntry,
        kind: EntryKind,
        mut attrs: crate::model::Attributes,
        recalled: bool,
    ) {
        // Before anything downstream (diff, store, events, audit) sees them.
        if attrs.keys().any(|name| self.privacy.is_sensitive(name)) {
            let mut editable = attrs.to_map();
            for (name, values) in editable.iter_mut() {
                if self.privacy.is_sensitive(name) {
                    for v in values.iter_mut() {
                        if !v.starts_with(crate::config::REDACTED_PREFIX) {
                            *v = crate::config::PrivacyConfig::digest(&id, name, v);
                        }
                    }
                }
            }
            attrs = editable.into();
        }
        if self.desired.contains_key(&id) {
            let reason = format!("another entry in this source has the same anchor '{}'", entry.anchor);
            self.reject(entry.dn, Some(entry.anchor), Some(entry.kind), "read", reason, None);
            return;
        }
        if let Some(raw) = self.raw.as_mut() {
            raw.push((id.clone(), raw_json(self.privacy, &id, &entry)));
        }
        if !recalled {
            if let Some(memo) = self.memo.as_mut() {
                memo.remember(&id, &entry, &attrs);
            }
        }
        if entry.kind == EntryKind::Group && !entry.members.is_empty() {
            self.members.insert(id.clone(), entry.members);
        }
        self.desired.insert(
            id.clone(),
            Desired { id, kind, source: self.source.to_string(), anchor: entry.anchor, dn: entry.dn, attrs },
        );
    }

    /// Runs the custom-attributes plugin over mapped users: one call for the
    /// batch, retried user by user if it fails as a whole; every value is
    /// checked against the declarations before the user is admitted.
    fn custom_attributes(&mut self, pending: Vec<(String, SourceEntry, crate::model::Attributes)>) {
        if pending.is_empty() {
            return;
        }
        let Some(plugin) = self.custom.as_deref_mut() else { return };
        let label = plugin.identity().to_string();
        let inputs: Vec<MappedUserInput<'_>> =
            pending.iter().map(|(_, entry, attrs)| MappedUserInput { entry, mapped: attrs }).collect();
        let results: Vec<Result<crate::model::Attributes, String>> = match plugin.compute(&inputs) {
            Ok(r) => r,
            Err(_) if inputs.len() > 1 => inputs
                .iter()
                .map(|one| match plugin.compute(std::slice::from_ref(one)) {
                    Ok(mut r) => r.pop().unwrap_or_else(|| Err("no result".into())),
                    Err(e) => Err(e.to_string()),
                })
                .collect(),
            Err(e) => vec![Err(e.to_string())],
        };
        drop(inputs);
        for ((id, entry, mut attrs), result) in pending.into_iter().zip(results) {
            let checked = result
                .and_then(|custom| crate::custom_attrs::validate(self.custom_attributes, &custom).map(|()| custom));
            match checked {
                Ok(custom) => {
                    attrs.retain(|k, _| !k.starts_with(crate::custom_attrs::PREFIX));
                    for (name, values) in custom {
                        if !values.is_empty() {
                            attrs.insert(&format!("{}{name}", crate::custom_attrs::PREFIX), values);
                        }
                    }
                    self.admit(id, entry, EntryKind::User, attrs);
                }
                Err(why) => {
                    let reason = self.entry_reason(&format!("plugin {label}: {why}"), &entry);
                    self.reject(
                        entry.dn,
                        Some(entry.anchor),
                        Some(entry.kind),
                        "custom-attributes",
                        reason,
                        Some(label.clone()),
                    );
                }
            }
        }
    }

    fn take(&mut self, done: Vec<(SourceEntry, Mapped)>) {
        let mut pending = Vec::new();
        for (entry, result) in done {
            let id = object_id(self.tenant, self.source, entry.kind, &entry.anchor);
            if let Some(dn) = &entry.dn {
                self.dn_index.insert(dn, &id);
            }
            self.anchor_index.insert(entry.anchor.clone(), id.clone());
            match result {
                Mapped::Ok(MapOutcome::Mapped { kind, attrs }) => {
                    if kind != entry.kind {
                        let reason =
                            format!("plugin mapped a {} entry to a {kind}; the kind cannot change", entry.kind);
                        let plugin = Some(self.plugin_label.clone());
                        self.reject(entry.dn, Some(entry.anchor), Some(entry.kind), "map", reason, plugin);
                        continue;
                    }
                    if self.desired.contains_key(&id) {
                        let reason = format!("another entry in this source has the same anchor '{}'", entry.anchor);
                        self.reject(entry.dn, Some(entry.anchor), Some(entry.kind), "read", reason, None);
                        continue;
                    }
                    if kind == EntryKind::User && self.custom.is_none() {
                        if let Some(why) = crate::custom_attrs::undeclared(self.custom_attributes, &attrs) {
                            let reason = self.entry_reason(&why, &entry);
                            let plugin = Some(self.plugin_label.clone());
                            self.reject(
                                entry.dn,
                                Some(entry.anchor),
                                Some(entry.kind),
                                "custom-attributes",
                                reason,
                                plugin,
                            );
                            continue;
                        }
                    }
                    if kind == EntryKind::User && self.custom.is_some() {
                        pending.push((id, entry, attrs));
                        continue;
                    }
                    self.admit(id, entry, kind, attrs);
                }
                Mapped::Ok(MapOutcome::Skip(reason)) => {
                    tracing::debug!(tenant = self.tenant, source = self.source, anchor = %entry.anchor, %reason, "entry skipped by the mapper");
                    self.report.skipped += 1;
                }
                Mapped::Ok(MapOutcome::Error(message)) => {
                    let reason = format!(
                        "tenant '{}': plugin {}: {message} (entry {})",
                        self.tenant, self.plugin_label, entry.anchor
                    );
                    let plugin = Some(self.plugin_label.clone());
                    self.reject(entry.dn, Some(entry.anchor), Some(entry.kind), "map", reason, plugin);
                }
                Mapped::Failed(message) => {
                    let plugin = Some(self.plugin_label.clone());
                    let reason = format!("{message} (entry {})", entry.anchor);
                    self.reject(entry.dn, Some(entry.anchor), Some(entry.kind), "map", reason, plugin);
                }
            }
        }
        self.custom_attributes(pending);
    }

    /// `Some(reason)` when the failure share says the plugin, not the data, is broken.
    fn should_abort(&self, final_check: bool) -> Option<String> {
        if self.failed == 0 || self.seen == 0 {
            return None;
        }
        if !final_check && self.failed < EARLY_ABORT_MIN_FAILURES {
            return None;
        }
        let percent = self.failed as f64 * 100.0 / self.seen as f64;
        (percent > self.max_failed_percent).then(|| {
            format!(
                "{} of {} entries ({percent:.1}%) of source '{}' failed to map, over limits.max_failed_percent = {}; the run was aborted before apply. See `roster quarantine list --tenant {}`",
                self.failed, self.seen, self.source, self.max_failed_percent, self.tenant
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Delta, ReadSummary, Sink, SourceEntry, SourceError, SourceItem};

    const USERS: usize = MEMO_AFTER_ENTRIES as usize + 500;

    /// A directory of `USERS` users, read whole the first time and as an
    /// incremental read of every entry afterwards (as after a lost session log).
    struct Directory {
        incremental: bool,
        mail_of_last: String,
    }

    impl Source for Directory {
        fn name(&self) -> &str {
            "dir"
        }
        fn read(&mut self, sink: &mut dyn Sink) -> Result<ReadSummary, SourceError> {
            for i in 0..USERS {
                let mail = if i + 1 == USERS { self.mail_of_last.clone() } else { format!("u{i}@example.com") };
                let entry = SourceEntry {
                    anchor: format!("anchor-{i}"),
                    dn: Some(format!("uid=u{i},ou=people,dc=example")),
                    kind: EntryKind::User,
                    attrs: vec![
                        ("uid".into(), vec![format!("u{i}").into_bytes()]),
                        ("mail".into(), vec![mail.into_bytes()]),
                    ],
                    members: Vec::new(),
                };
                sink.item(SourceItem::Entry(entry))
                    .map_err(|message| SourceError::Stopped { source_name: "dir".into(), message })?;
            }
            Ok(ReadSummary {
                users: USERS as u64,
                delta: self.incremental.then(|| Delta { since: "1".into(), ..Default::default() }),
                state: vec![("cookie".into(), "1".into())],
                ..Default::default()
            })
        }
    }

    struct Provider(Option<Directory>);

    impl SourceProvider for Provider {
        fn open(
            &mut self,
            _: &Config,
            _: &TenantConfig,
            _: &SourceConfig,
            _: &PluginHost,
        ) -> Result<Box<dyn Source>, SyncError> {
            Ok(Box::new(self.0.take().expect("opened once per run")))
        }
    }

    #[test]
    fn a_big_incremental_read_loads_the_memo_partway_and_maps_only_what_came_before_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config::parse(
            "[store]\npath = \"data\"\n[[tenant]]\nid = \"t\"\n[[tenant.source]]\nname = \"dir\"\nkind = \"ldif\"\npath = \"unused.ldif\"\n[tenant.mapping]\nuserName = \"lower(uid)\"\nemail = \"lower(mail)\"\n",
            &dir.path().join("roster.toml"),
        )
        .expect("config");
        let tenant = &config.tenants[0];
        let mut store = crate::store::sqlite::SqliteStore::open_in_memory().expect("store");
        let host = PluginHost::new(None).expect("plugin host");
        let run = |store: &mut crate::store::sqlite::SqliteStore, incremental: bool, mail_of_last: &str| {
            let mut provider = Provider(Some(Directory { incremental, mail_of_last: mail_of_last.into() }));
            sync_tenant_with(&config, tenant, store, &host, &SyncOptions::new("test"), &NoProgress, &mut provider)
                .expect("sync")
        };

        let first = run(&mut store, false, "last@example.com");
        assert_eq!(first.counts.creates, USERS as u64);
        assert_eq!(first.sources[0].not_remapped, 0);

        // The stored cookie makes the next read look incremental: the memo is
        // loaded only once it has seen MEMO_AFTER_ENTRIES entries, and from
        // there unchanged entries are not mapped again; the changed last one is.
        let again = run(&mut store, true, "changed@example.com");
        assert_eq!((again.counts.creates, again.counts.updates, again.counts.deletes), (0, 1, 0));
        // Mapped: the entries before the memo loaded, and the changed one.
        let mapped = (MEMO_AFTER_ENTRIES - 1) + 1;
        assert_eq!(again.sources[0].not_remapped, USERS as u64 - mapped);
        let users = store.users("t").expect("users");
        let last = users.iter().find(|u| u.anchor == format!("anchor-{}", USERS - 1)).expect("last user");
        assert_eq!(last.attrs.get("email").map(|v| v.to_vec()), Some(vec!["changed@example.com".to_string()]));
    }
}
