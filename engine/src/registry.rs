//! The per-tenant plugin registry: upload, validate, version, activate.
//!
//! A plugin is accepted only if it is a component of the expected world and
//! supported WIT version, fits the size limit, initialises with the tenant's
//! configuration, and passes the test vectors it ships. Every accepted upload
//! gets the next version number; activating an older one is the rollback.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::TenantConfig;
use crate::model::Attributes;
use crate::plugin_host::{
    MapOutcome, MapperInstance, PluginBinary, PluginError, PluginHost, PluginInstance, PluginKind,
};
use crate::source::{EntryKind, SourceEntry};
use crate::store::{PluginRecord, Store, StoreError};

/// The plugin kinds a tenant can upload (see [`PluginKind`]).
pub const MAPPER: &str = "mapper";

/// Largest plugin accepted, in bytes.
pub const MAX_PLUGIN_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("plugin kind '{0}' is not supported; supported kinds: {kinds}", kinds = PluginKind::list())]
    UnknownKind(String),
    #[error(
        "a connector is a source, not a registry plugin: name its .wasm in a [[tenant.source]] with kind = \"plugin\" and plugin = \"FILE.wasm\" (see docs/connectors.md)"
    )]
    ConnectorIsASource,
    #[error("{path}: {size} bytes is over the {MAX_PLUGIN_BYTES}-byte limit for plugins")]
    TooLarge { path: String, size: usize },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("it asks for capabilities plugins are not granted: {0}")]
    Ungranted(String),
    #[error("test vectors {path}: {message}")]
    Vectors { path: String, message: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the plugin failed {failed} of {total} test vectors; it was not stored:\n{details}")]
    VectorsFailed { failed: usize, total: usize, details: String },
}

/// One test vector: an input entry and what the plugin must make of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestVector {
    #[serde(default)]
    pub name: Option<String>,
    pub entry: VectorEntry,
    pub expect: Expectation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorEntry {
    pub anchor: String,
    #[serde(default)]
    pub dn: Option<String>,
    pub kind: VectorKind,
    #[serde(default)]
    pub attributes: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorKind {
    User,
    Group,
}

/// `"x"` or `["x", "y"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Exactly one of: the mapped attributes, a skip, or an error (optionally
/// containing a text).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Expectation {
    Mapped(BTreeMap<String, OneOrMany>),
    Skip(bool),
    Error(String),
}

impl VectorEntry {
    pub fn to_source_entry(&self) -> SourceEntry {
        SourceEntry {
            anchor: self.anchor.clone(),
            dn: self.dn.clone(),
            kind: match self.kind {
                VectorKind::User => EntryKind::User,
                VectorKind::Group => EntryKind::Group,
            },
            attrs: self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_vec().into_iter().map(String::into_bytes).collect()))
                .collect(),
            members: Vec::new(),
        }
    }
}

pub fn load_vectors(path: &Path) -> Result<Vec<TestVector>, RegistryError> {
    let err = |message: String| RegistryError::Vectors { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("line {}, column {}: {e}", e.line(), e.column())))
}

/// Runs the vectors; returns one line per failure.
pub fn run_vectors(instance: &mut MapperInstance, vectors: &[TestVector]) -> Result<Vec<String>, PluginError> {
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let label = v.name.clone().unwrap_or_else(|| format!("vector {} (anchor {})", i + 1, v.entry.anchor));
        let entry = v.entry.to_source_entry();
        // map_batch guarantees one result per entry or an Err.
        let got = match instance.map_batch(&[&entry]).map(|out| out.into_iter().next()) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                failures.push(format!("  {label}: the plugin returned no result"));
                continue;
            }
            Err(PluginError::Call { failure, .. }) => {
                failures.push(format!("  {label}: the plugin {failure}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let ok = match (&v.expect, &got) {
            (Expectation::Mapped(want), MapOutcome::Mapped { attrs, .. }) => {
                let want: Attributes = want.iter().map(|(k, v)| (k.clone(), v.clone().into_vec())).collect();
                &want == attrs
            }
            (Expectation::Skip(true), MapOutcome::Skip(_)) => true,
            (Expectation::Error(text), MapOutcome::Error(msg)) => msg.contains(text.as_str()),
            _ => false,
        };
        if !ok {
            failures.push(format!("  {label}: expected {:?}, got {got:?}", v.expect));
        }
    }
    Ok(failures)
}

/// What an accepted upload became.
#[derive(Debug, Clone)]
pub struct Added {
    pub record: PluginRecord,
    pub vectors_run: usize,
    pub activated: bool,
}

/// Validates a plugin for a tenant and stores it as the next version.
pub fn add(
    tenant: &TenantConfig,
    host: &PluginHost,
    store: &mut dyn Store,
    kind: &str,
    file: &Path,
    vectors_file: Option<&Path>,
    activate: bool,
    added_by: &str,
) -> Result<Added, RegistryError> {
    let Some(plugin_kind) = PluginKind::parse(kind) else {
        return Err(RegistryError::UnknownKind(kind.to_string()));
    };
    if plugin_kind == PluginKind::Connector {
        return Err(RegistryError::ConnectorIsASource);
    }
    let path = file.display().to_string();
    let wasm = std::fs::read(file).map_err(|e| RegistryError::Read { path: path.clone(), message: e.to_string() })?;
    if wasm.len() > MAX_PLUGIN_BYTES {
        return Err(RegistryError::TooLarge { path, size: wasm.len() });
    }
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
    let binary = PluginBinary::new(name, path, wasm);
    let loaded = host.load(&tenant.id, plugin_kind, &binary)?;
    let ungranted = host.ungranted_imports(&loaded);
    if !ungranted.is_empty() {
        return Err(RegistryError::Ungranted(ungranted.join("; ")));
    }
    let plugin_config = tenant.plugins.get(plugin_kind).map(|p| p.config()).unwrap_or_default();
    let schema = if plugin_kind == PluginKind::CustomAttributes {
        crate::custom_attrs::decls(&tenant.custom_attributes)
    } else {
        Vec::new()
    };
    // Instantiating runs `init` with the tenant's configuration: a plugin that
    // rejects it is not stored.
    let mut instance = PluginInstance::with_schema(
        host,
        loaded,
        &tenant.id,
        crate::sync::sandbox_limits(tenant),
        &plugin_config,
        &schema,
    )?;

    // A plugin may ship vectors beside it: NAME.vectors.json.
    let sidecar = file.with_extension("vectors.json");
    let vectors_path = vectors_file.map(Path::to_path_buf).or_else(|| sidecar.is_file().then_some(sidecar));
    let (total, failures) = match (&vectors_path, plugin_kind) {
        (None, _) => (0, Vec::new()),
        (Some(p), PluginKind::Mapper) => {
            let vectors = load_vectors(p)?;
            (vectors.len(), run_vectors(&mut instance, &vectors)?)
        }
        (Some(p), kind) => {
            let vectors = crate::vectors::load(p, kind)
                .map_err(|message| RegistryError::Vectors { path: p.display().to_string(), message })?;
            (vectors.len(), crate::vectors::run(&mut instance, &vectors)?)
        }
    };
    if !failures.is_empty() {
        return Err(RegistryError::VectorsFailed { failed: failures.len(), total, details: failures.join("\n") });
    }

    let identity = instance.identity().clone();
    let mut record = PluginRecord {
        tenant: tenant.id.clone(),
        kind: kind.to_string(),
        version: 0,
        sha256: binary.hash.clone(),
        name: identity.name,
        plugin_version: identity.version,
        size: binary.wasm.len() as u64,
        added_at: crate::util::now_rfc3339(),
        added_by: added_by.to_string(),
        active: false,
    };
    record.version = store.add_plugin(&record, &binary.wasm)?;
    if activate {
        store.activate_plugin(&tenant.id, kind, record.version)?;
        record.active = true;
    }
    Ok(Added { record, vectors_run: total, activated: activate })
}
