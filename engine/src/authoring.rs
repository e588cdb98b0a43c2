//! `roster plugin test`: run a plugin file on sample entries exactly as the
//! engine would — same host, sandbox and limits, same batching and entry-by-entry
//! retry — and report what it made of each entry and what it cost (wall time,
//! instructions, peak linear memory). Needs no configuration file or store.
//! Every kind: a mapper maps the entries; custom-attributes and role-assigner
//! plugins get them mapped by the built-in defaults (roles with memberships
//! resolved and nesting computed); a conflict resolver decides conflicts read
//! from JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{LdifSourceConfig, LimitsConfig};
use crate::dn::normalize_dn;
use crate::mapping::{Mapped, MappingStage};
use crate::model::{Desired, object_id};
use crate::plugin_host::{
    ConflictInput, DecisionOutput, MapOutcome, MappedUserInput, MapperInstance, PluginBinary, PluginError, PluginHost,
    PluginInstance, PluginKind, SandboxLimits, Usage,
};
use crate::registry::{MAX_PLUGIN_BYTES, VectorEntry};
use crate::source::ldif::LdifSource;
use crate::source::{EntryKind, MemberRef};
use crate::source::{Source, SourceEntry, SourceItem};

/// The tenant name in messages: there is no tenant.
pub const TEST_TENANT: &str = "plugin-test";

#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    #[error("plugin kind '{0}' is not supported; supported kinds: {kinds}", kinds = crate::plugin_host::PluginKind::list())]
    UnknownKind(String),
    #[error(
        "`plugin test` runs pipeline plugins on sample entries; a connector reads a server: try it with `roster source test` and `roster sync --dry-run` (see docs/connectors.md)"
    )]
    Connector,
    #[error(
        "a custom-attributes plugin is tested against declarations: give --schema FILE (TOML, `NAME = {{ type = \"integer\", required = true }}` as in [tenant.custom_attributes])"
    )]
    SchemaMissing,
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {size} bytes is over the {MAX_PLUGIN_BYTES}-byte limit for plugins")]
    TooLarge { path: String, size: usize },
    #[error("input {path}: {message}")]
    Input { path: String, message: String },
    #[error("plugin configuration {path}: {message}")]
    PluginConfig { path: String, message: String },
    #[error("--memory-mb {0} is over the maximum of {max} MiB a plugin instance can have", max = crate::config::MAX_PLUGIN_MEMORY_MB)]
    MemoryTooLarge(u64),
    #[error("cannot start the plugin host: {0}")]
    Host(String),
    /// The plugin cannot be loaded or initialised.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// What to test and how.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub file: PathBuf,
    pub input: PathBuf,
    pub plugin_config: Option<PathBuf>,
    pub kind: String,
    /// Custom-attribute declarations (custom-attributes plugins only).
    pub schema: Option<PathBuf>,
    /// Defaults from [`LimitsConfig::default`]; these override.
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
}

/// The plugin that ran.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub origin: String,
}

/// The limits it ran under.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsInfo {
    pub call_timeout_ms: u64,
    pub memory_mb: u64,
    pub batch_size: usize,
    pub output_max_kb: u64,
}

/// What became of one input entry.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum EntryResult {
    /// `output_kind`: what the plugin made of it (it may differ from the input's `kind`).
    Mapped {
        output_kind: String,
        attributes: crate::model::Attributes,
    },
    Skip {
        reason: String,
    },
    /// The plugin returned an error for the entry (it would be quarantined).
    Error {
        message: String,
    },
    /// The call failed on this entry: trap, deadline, memory, bad output (quarantined).
    Failed {
        message: String,
    },
    /// The input reader refused the entry (no anchor, …); the plugin never saw it.
    Rejected {
        reason: String,
    },
    /// A conflict resolver's decision, as the host would apply it.
    Decided {
        decision: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryReport {
    pub anchor: Option<String>,
    pub dn: Option<String>,
    pub kind: Option<String>,
    #[serde(flatten)]
    pub result: EntryResult,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub entries: usize,
    pub mapped: usize,
    pub skipped: usize,
    pub errors: usize,
    pub failed: usize,
    pub rejected: usize,
}

/// Cost of the run. Fuel counts WebAssembly instructions (roughly one unit per
/// instruction), deterministic for the same plugin and input.
#[derive(Debug, Clone, Serialize)]
pub struct RunCost {
    /// Loading (compile) and instantiating with `init`.
    pub setup_ms: f64,
    /// Mapping every entry, batches and retries included.
    pub map_ms: f64,
    /// `map_ms` per entry the plugin saw.
    pub per_entry_us: f64,
    /// Calls into `map` (batches, plus one per entry of a failed batch).
    pub calls: u64,
    pub fuel_init: u64,
    pub fuel_map: u64,
    pub fuel_per_entry: u64,
    /// Largest linear memory the plugin was granted, in bytes.
    pub peak_memory_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    pub plugin: PluginInfo,
    pub limits: LimitsInfo,
    pub entries: Vec<EntryReport>,
    pub counts: Counts,
    pub cost: RunCost,
}

/// The sandbox limits for a test run: the defaults every tenant gets, with overrides.
pub fn limits(opts: &TestOptions) -> LimitsConfig {
    let mut l = LimitsConfig::default();
    if let Some(t) = opts.timeout_ms {
        l.plugin_call_timeout_ms = t;
    }
    if let Some(m) = opts.memory_mb {
        l.plugin_memory_mb = m;
    }
    l
}

/// Reads the input entries: JSON (`.json`, an array of test-vector entries) or LDIF.
pub fn read_input(path: &Path) -> Result<Vec<SourceItem>, AuthoringError> {
    let err = |message: String| AuthoringError::Input { path: path.display().to_string(), message };
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let entries: Vec<VectorEntry> = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "line {}, column {}: {e} (expected an array of {{anchor, dn, kind, attributes}})",
                e.line(),
                e.column()
            ))
        })?;
        return Ok(entries.iter().map(|e| SourceItem::Entry(e.to_source_entry())).collect());
    }
    // An LDIF source with every default (object classes, anchor, member attributes).
    let mut table = toml::Table::new();
    table.insert("name".into(), "input".into());
    table.insert("path".into(), path.display().to_string().into());
    let config: LdifSourceConfig = table.try_into().map_err(|e: toml::de::Error| err(e.to_string()))?;
    let mut source = LdifSource::new(&config, Path::new("")).map_err(|e| err(e.to_string()))?;
    let mut items = Vec::new();
    source
        .read(&mut |item| {
            items.push(item);
            Ok(())
        })
        .map_err(|e| err(e.to_string()))?;
    Ok(items)
}

fn read_plugin_config(path: &Path) -> Result<toml::Table, AuthoringError> {
    let err = |message: String| AuthoringError::PluginConfig { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Loads the plugin on a measuring host and runs it on the input.
/// `Err(Plugin)` means the plugin could not be loaded or initialised.
pub fn test_plugin(opts: &TestOptions) -> Result<TestReport, AuthoringError> {
    let Some(kind) = PluginKind::parse(&opts.kind) else {
        return Err(AuthoringError::UnknownKind(opts.kind.clone()));
    };
    if kind == PluginKind::Connector {
        return Err(AuthoringError::Connector);
    }
    let path = opts.file.display().to_string();
    let binary = PluginBinary::from_file(&opts.file)
        .map_err(|e| AuthoringError::Read { path: path.clone(), message: e.to_string() })?;
    if binary.wasm.len() > MAX_PLUGIN_BYTES {
        return Err(AuthoringError::TooLarge { path, size: binary.wasm.len() });
    }
    let plugin_config = match &opts.plugin_config {
        Some(p) => read_plugin_config(p)?,
        None => toml::Table::new(),
    };
    let limits_config = limits(opts);
    if limits_config.plugin_memory_mb > crate::config::MAX_PLUGIN_MEMORY_MB {
        return Err(AuthoringError::MemoryTooLarge(limits_config.plugin_memory_mb));
    }
    let sandbox: SandboxLimits = crate::sync::limits_to_sandbox(&limits_config);
    if kind != PluginKind::Mapper {
        return test_other_kind(opts, kind, &binary, &plugin_config, &limits_config, sandbox);
    }
    let items = read_input(&opts.input)?;

    let setup = Instant::now();
    let host = PluginHost::measuring().map_err(AuthoringError::Host)?;
    let loaded = host.load_mapper(TEST_TENANT, &binary)?;
    let instance = MapperInstance::new(&host, loaded, TEST_TENANT, sandbox, &plugin_config)?;
    let setup_time = setup.elapsed();
    let after_init = instance.usage();
    let identity = instance.identity().clone();

    let mut stage = MappingStage::new(instance, limits_config.plugin_batch_size);
    let mut reports: Vec<Option<EntryReport>> = Vec::with_capacity(items.len());
    // Index of each entry's report slot, in input order, while it waits in a batch.
    let mut pending: Vec<usize> = Vec::new();
    let mut seen = 0usize;
    let started = Instant::now();
    for item in items {
        match item {
            SourceItem::Entry(entry) => {
                seen += 1;
                pending.push(reports.len());
                reports.push(None);
                let done = stage.push(entry)?;
                collect(&mut reports, &mut pending, done);
            }
            SourceItem::Rejected { dn, anchor, kind, reason } => reports.push(Some(EntryReport {
                anchor,
                dn,
                kind: kind.map(|k| k.to_string()),
                result: EntryResult::Rejected { reason },
            })),
        }
    }
    let done = stage.flush()?;
    collect(&mut reports, &mut pending, done);
    let map_time = started.elapsed();
    let total = stage.usage();

    let entries: Vec<EntryReport> = reports.into_iter().flatten().collect();
    let mut counts = Counts { entries: entries.len(), ..Counts::default() };
    for e in &entries {
        match e.result {
            EntryResult::Mapped { .. } => counts.mapped += 1,
            EntryResult::Skip { .. } => counts.skipped += 1,
            EntryResult::Error { .. } => counts.errors += 1,
            EntryResult::Failed { .. } => counts.failed += 1,
            EntryResult::Rejected { .. } => counts.rejected += 1,
            EntryResult::Decided { .. } => counts.mapped += 1,
        }
    }
    let fuel = |u: Usage| u.fuel.unwrap_or(0);
    let fuel_map = fuel(total).saturating_sub(fuel(after_init));
    let cost = RunCost {
        setup_ms: ms(setup_time),
        map_ms: ms(map_time),
        per_entry_us: if seen == 0 { 0.0 } else { map_time.as_secs_f64() * 1e6 / seen as f64 },
        calls: stage.calls,
        fuel_init: fuel(after_init),
        fuel_map,
        fuel_per_entry: if seen == 0 { 0 } else { fuel_map / seen as u64 },
        peak_memory_bytes: total.peak_memory_bytes,
    };
    Ok(TestReport {
        plugin: PluginInfo {
            name: identity.name,
            version: identity.version,
            sha256: identity.hash,
            origin: binary.origin.clone(),
        },
        limits: LimitsInfo {
            call_timeout_ms: limits_config.plugin_call_timeout_ms,
            memory_mb: limits_config.plugin_memory_mb,
            batch_size: limits_config.plugin_batch_size,
            output_max_kb: limits_config.plugin_output_max_kb,
        },
        entries,
        counts,
        cost,
    })
}

/// Files mapped entries into their slots; batches come back in the order they went in.
fn collect(reports: &mut [Option<EntryReport>], pending: &mut Vec<usize>, done: Vec<(SourceEntry, Mapped)>) {
    let n = done.len().min(pending.len());
    for (slot, (entry, mapped)) in pending.drain(..n).zip(done) {
        if let Some(r) = reports.get_mut(slot) {
            *r = Some(entry_report(&entry, mapped));
        }
    }
}

fn entry_report(entry: &SourceEntry, mapped: Mapped) -> EntryReport {
    let result = match mapped {
        Mapped::Ok(MapOutcome::Mapped { kind, attrs }) => {
            EntryResult::Mapped { output_kind: kind.to_string(), attributes: attrs }
        }
        Mapped::Ok(MapOutcome::Skip(reason)) => EntryResult::Skip { reason },
        Mapped::Ok(MapOutcome::Error(message)) => EntryResult::Error { message },
        Mapped::Failed(message) => EntryResult::Failed { message },
    };
    EntryReport { anchor: Some(entry.anchor.clone()), dn: entry.dn.clone(), kind: Some(entry.kind.to_string()), result }
}

fn read_conflicts(path: &Path) -> Result<Vec<ConflictInput>, AuthoringError> {
    let err = |message: String| AuthoringError::Input { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let raw: Vec<crate::vectors::ConflictJson> = serde_json::from_str(&text).map_err(|e| {
        err(format!(
            "line {}, column {}: {e} (expected an array of {{kind, key, value, claimants: [{{source, anchor, dn, attributes, stored_since, chosen_by_admin}}]}})",
            e.line(),
            e.column()
        ))
    })?;
    raw.into_iter().enumerate().map(|(i, c)| c.into_input().map_err(|e| err(format!("conflict #{i}: {e}")))).collect()
}

fn describe_decision(c: &ConflictInput, d: &DecisionOutput) -> String {
    let who = |i: usize| {
        c.claimants
            .get(i)
            .map(|k| format!("'{}' from '{}'", k.anchor, k.source))
            .unwrap_or_else(|| format!("#{i} (out of range: the host would hold the conflict for review)"))
    };
    match d {
        DecisionOutput::Keep(i) => format!("keep claimant {i}, {}", who(*i)),
        DecisionOutput::Quarantine(reason) => format!("hold for review: {reason}"),
        DecisionOutput::Rename(values) => format!("rename to {}", values.join(" | ")),
        DecisionOutput::Merge { primary, attributes } => format!(
            "merge into claimant {primary}, {}: {}",
            who(*primary),
            attributes.iter().map(|(k, v)| format!("{k}={}", v.join("|"))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `plugin test` for custom-attributes, role-assigner and conflict-resolver
/// plugins: the same host, limits and calls as a sync. The first two get the
/// input entries mapped by the built-in mapper's defaults (what a tenant
/// without `[tenant.mapping]` gets), the role assigner with memberships
/// resolved and nesting computed; a resolver reads conflicts as JSON.
fn test_other_kind(
    opts: &TestOptions,
    kind: PluginKind,
    binary: &PluginBinary,
    plugin_config: &toml::Table,
    limits_config: &LimitsConfig,
    sandbox: SandboxLimits,
) -> Result<TestReport, AuthoringError> {
    let schema: crate::custom_attrs::Schema = match (kind, &opts.schema) {
        (PluginKind::CustomAttributes, None) => return Err(AuthoringError::SchemaMissing),
        (PluginKind::CustomAttributes, Some(p)) => {
            let err = |message: String| AuthoringError::Input { path: p.display().to_string(), message };
            let text = std::fs::read_to_string(p).map_err(|e| err(e.to_string()))?;
            toml::from_str(&text).map_err(|e| err(e.to_string()))?
        }
        _ => Default::default(),
    };
    let batch = limits_config.plugin_batch_size.max(1);
    let setup = Instant::now();
    let host = PluginHost::measuring().map_err(AuthoringError::Host)?;
    let loaded = host.load(TEST_TENANT, kind, binary)?;
    let decls = crate::custom_attrs::decls(&schema);
    let mut instance = PluginInstance::with_schema(&host, loaded, TEST_TENANT, sandbox, plugin_config, &decls)?;
    let setup_time = setup.elapsed();
    let after_init = instance.usage();
    let identity = instance.identity().clone();

    let mut entries: Vec<EntryReport> = Vec::new();
    let mut calls = 0u64;
    let mut seen = 0usize;
    let started;
    if kind == PluginKind::ConflictResolver {
        let conflicts = read_conflicts(&opts.input)?;
        started = Instant::now();
        for chunk in conflicts.chunks(batch) {
            calls += 1;
            seen += chunk.len();
            let results = instance.resolve(chunk);
            for (i, c) in chunk.iter().enumerate() {
                let result = match &results {
                    Ok(d) => {
                        EntryResult::Decided { decision: d.get(i).map(|d| describe_decision(c, d)).unwrap_or_default() }
                    }
                    Err(e) => {
                        EntryResult::Failed { message: format!("{e} (the host would hold the conflict for review)") }
                    }
                };
                entries.push(EntryReport {
                    anchor: Some(format!("{:?} {} '{}'", c.kind, c.key, c.value)),
                    dn: None,
                    kind: Some("conflict".into()),
                    result,
                });
            }
        }
    } else {
        let items = read_input(&opts.input)?;
        let mapper_loaded = host.load(TEST_TENANT, PluginKind::Mapper, &PluginBinary::builtin_declarative_mapper())?;
        let mut mapper = PluginInstance::new(&host, mapper_loaded, TEST_TENANT, sandbox, &toml::Table::new())?;
        let mut source_entries = Vec::new();
        for item in items {
            match item {
                SourceItem::Entry(e) => source_entries.push(e),
                SourceItem::Rejected { dn, anchor, kind, reason } => entries.push(EntryReport {
                    anchor,
                    dn,
                    kind: kind.map(|k| k.to_string()),
                    result: EntryResult::Rejected { reason },
                }),
            }
        }
        // (entry, mapped attributes) of every entry the default mapping maps.
        let mut mapped: Vec<(SourceEntry, crate::model::Attributes)> = Vec::new();
        for chunk in source_entries.chunks(batch) {
            let refs: Vec<&SourceEntry> = chunk.iter().collect();
            let outcomes = mapper.map_batch(&refs)?;
            for (e, o) in chunk.iter().zip(outcomes) {
                match o {
                    MapOutcome::Mapped { attrs, .. } => mapped.push((e.clone(), attrs)),
                    MapOutcome::Skip(r) | MapOutcome::Error(r) => entries.push(EntryReport {
                        anchor: Some(e.anchor.clone()),
                        dn: e.dn.clone(),
                        kind: Some(e.kind.to_string()),
                        result: EntryResult::Skip { reason: format!("the default mapping did not map it: {r}") },
                    }),
                }
            }
        }
        let report = |e: &SourceEntry, result: EntryResult| EntryReport {
            anchor: Some(e.anchor.clone()),
            dn: e.dn.clone(),
            kind: Some(e.kind.to_string()),
            result,
        };
        started = Instant::now();
        if kind == PluginKind::CustomAttributes {
            let users: Vec<&(SourceEntry, crate::model::Attributes)> =
                mapped.iter().filter(|(e, _)| e.kind == EntryKind::User).collect();
            for (e, _) in mapped.iter().filter(|(e, _)| e.kind == EntryKind::Group) {
                entries.push(report(e, EntryResult::Skip { reason: "groups get no custom attributes".into() }));
            }
            for chunk in users.chunks(batch) {
                let inputs: Vec<MappedUserInput<'_>> =
                    chunk.iter().map(|(entry, mapped)| MappedUserInput { entry, mapped }).collect();
                calls += 1;
                seen += inputs.len();
                let results: Vec<Result<Result<crate::model::Attributes, String>, String>> =
                    match instance.compute(&inputs) {
                        Ok(r) => r.into_iter().map(Ok).collect(),
                        Err(_) if inputs.len() > 1 => inputs
                            .iter()
                            .map(|one| {
                                calls += 1;
                                instance
                                    .compute(std::slice::from_ref(one))
                                    .map(|mut r| r.pop().unwrap_or_else(|| Err("no result".into())))
                                    .map_err(|e| e.to_string())
                            })
                            .collect(),
                        Err(e) => vec![Err(e.to_string())],
                    };
                for ((e, _), r) in chunk.iter().zip(results) {
                    let result = match r {
                        Ok(Ok(values)) => match crate::custom_attrs::validate(&schema, &values) {
                            Ok(()) => EntryResult::Mapped { output_kind: "user".into(), attributes: values },
                            Err(why) => EntryResult::Error { message: why },
                        },
                        Ok(Err(message)) => EntryResult::Error { message },
                        Err(message) => EntryResult::Failed { message },
                    };
                    entries.push(report(e, result));
                }
            }
        } else {
            let tenant = TEST_TENANT;
            let mut desired: std::collections::HashMap<String, Desired> = std::collections::HashMap::new();
            let mut by_dn = std::collections::HashMap::new();
            let mut by_anchor = std::collections::HashMap::new();
            for (e, attrs) in &mapped {
                let id = object_id(tenant, "input", e.kind, &e.anchor);
                if let Some(dn) = &e.dn {
                    by_dn.insert(normalize_dn(dn), id.clone());
                }
                by_anchor.insert(e.anchor.clone(), id.clone());
                desired.insert(
                    id.clone(),
                    Desired {
                        id,
                        kind: e.kind,
                        source: "input".into(),
                        anchor: e.anchor.clone(),
                        dn: e.dn.clone(),
                        attrs: attrs.clone(),
                    },
                );
            }
            let mut memberships = crate::diff::Memberships::default();
            for (e, _) in mapped.iter().filter(|(e, _)| e.kind == EntryKind::Group) {
                let gid = object_id(tenant, "input", e.kind, &e.anchor);
                for m in &e.members {
                    let target = match m {
                        MemberRef::Dn(dn) => by_dn.get(&normalize_dn(dn)),
                        MemberRef::Anchor(a) => by_anchor.get(a),
                    };
                    if let Some(t) = target {
                        memberships.insert((gid.clone(), t.clone()));
                    }
                }
            }
            let users = desired.values().filter(|d| d.kind == EntryKind::User).count();
            seen = users;
            calls = users.div_ceil(batch) as u64;
            let failed = crate::roles::assign(&mut instance, batch, &mut desired, &memberships)?;
            for (e, _) in &mapped {
                let id = object_id(tenant, "input", e.kind, &e.anchor);
                let result = if e.kind == EntryKind::Group {
                    EntryResult::Skip { reason: "groups get no roles".into() }
                } else if let Some((_, why)) = failed.iter().find(|(f, _)| *f == id) {
                    EntryResult::Failed { message: why.clone() }
                } else {
                    let roles =
                        desired.get(&id).and_then(|d| d.attrs.get("roles")).map(|v| v.to_vec()).unwrap_or_default();
                    EntryResult::Mapped {
                        output_kind: "user".into(),
                        attributes: [("roles".to_string(), roles)].into_iter().collect(),
                    }
                };
                entries.push(report(e, result));
            }
        }
    }
    let run_time = started.elapsed();
    let total = instance.usage();
    let mut counts = Counts { entries: entries.len(), ..Counts::default() };
    for e in &entries {
        match e.result {
            EntryResult::Mapped { .. } | EntryResult::Decided { .. } => counts.mapped += 1,
            EntryResult::Skip { .. } => counts.skipped += 1,
            EntryResult::Error { .. } => counts.errors += 1,
            EntryResult::Failed { .. } => counts.failed += 1,
            EntryResult::Rejected { .. } => counts.rejected += 1,
        }
    }
    let fuel = |u: Usage| u.fuel.unwrap_or(0);
    let fuel_map = fuel(total).saturating_sub(fuel(after_init));
    Ok(TestReport {
        plugin: PluginInfo {
            name: identity.name,
            version: identity.version,
            sha256: identity.hash,
            origin: binary.origin.clone(),
        },
        limits: LimitsInfo {
            call_timeout_ms: limits_config.plugin_call_timeout_ms,
            memory_mb: limits_config.plugin_memory_mb,
            batch_size: limits_config.plugin_batch_size,
            output_max_kb: limits_config.plugin_output_max_kb,
        },
        entries,
        counts,
        cost: RunCost {
            setup_ms: ms(setup_time),
            map_ms: ms(run_time),
            per_entry_us: if seen == 0 { 0.0 } else { run_time.as_secs_f64() * 1e6 / seen as f64 },
            calls,
            fuel_init: fuel(after_init),
            fuel_map,
            fuel_per_entry: if seen == 0 { 0 } else { fuel_map / seen as u64 },
            peak_memory_bytes: total.peak_memory_bytes,
        },
    })
}
