//! Configuration: the admin's TOML, parsed strictly.
//!
//! Every key name here is part of the contract documented in `docs/configuration.md`.
//! Unknown keys, wrong types and missing required keys are errors that name the
//! file, line and column. Secrets are references (`{ env = … }`, `{ file = … }`);
//! they are resolved only when a source is opened.

pub mod secret;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use secret::{Secret, SecretError, SecretRef};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// Directory of the config file; relative paths in it are relative to this.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it came from, for messages.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory; the SQLite database lives in it.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: default_store_path() }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("roster-data")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Built-in declarative mapper: SCIM attribute = expression, for users.
    #[serde(default)]
    pub mapping: Option<BTreeMap<String, String>>,
    /// Built-in declarative mapper: SCIM attribute = expression, for groups.
    #[serde(default)]
    pub group_mapping: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Plugins a tenant brings instead of the built-ins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    pub mapper: Option<PluginRef>,
}

/// `mapper = "file.wasm"` or `[tenant.plugins.mapper] path = …` with a `config` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a plugin file path, or a table with `path` and an optional `config` table")]
pub enum PluginRef {
    Path(PathBuf),
    Table(PluginTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginTable {
    pub path: PathBuf,
    #[serde(default)]
    pub config: toml::Table,
}

impl PluginRef {
    pub fn path(&self) -> &Path {
        match self {
            PluginRef::Path(p) => p,
            PluginRef::Table(t) => &t.path,
        }
    }

    pub fn config(&self) -> toml::Table {
        match self {
            PluginRef::Path(_) => toml::Table::new(),
            PluginRef::Table(t) => t.config.clone(),
        }
    }
}

/// Delete guard-rails: a plan over either limit is not applied without `--allow-deletes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    #[serde(default = "default_max_deletes")]
    pub max_deletes: u64,
    #[serde(default = "default_max_delete_percent")]
    pub max_delete_percent: f64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self { max_deletes: default_max_deletes(), max_delete_percent: default_max_delete_percent() }
    }
}

fn default_max_deletes() -> u64 {
    500
}
fn default_max_delete_percent() -> f64 {
    20.0
}

/// Sandbox limits for the tenant's plugins. Hard limits, enforced by the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Wall-clock deadline for one plugin call (one batch), in milliseconds.
    #[serde(default = "default_call_timeout_ms")]
    pub plugin_call_timeout_ms: u64,
    /// Linear memory a plugin instance may grow to, in MiB.
    #[serde(default = "default_plugin_memory_mb")]
    pub plugin_memory_mb: u64,
    /// Entries per plugin call.
    #[serde(default = "default_batch_size")]
    pub plugin_batch_size: usize,
    /// If more than this share of entries fail to map, the run aborts before apply.
    #[serde(default = "default_max_failed_percent")]
    pub max_failed_percent: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            plugin_call_timeout_ms: default_call_timeout_ms(),
            plugin_memory_mb: default_plugin_memory_mb(),
            plugin_batch_size: default_batch_size(),
            max_failed_percent: default_max_failed_percent(),
        }
    }
}

fn default_call_timeout_ms() -> u64 {
    2_000
}
fn default_plugin_memory_mb() -> u64 {
    64
}
fn default_batch_size() -> usize {
    256
}
fn default_max_failed_percent() -> f64 {
    10.0
}

/// One source of a tenant. `kind` selects the variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    Ldif(LdifSourceConfig),
    Ldap(LdapSourceConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Ldif(c) => &c.name,
            SourceConfig::Ldap(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Ldif(_) => "ldif",
            SourceConfig::Ldap(_) => "ldap",
        }
    }

    pub fn scope(&self) -> ScopeConfig {
        match self {
            SourceConfig::Ldif(c) => ScopeConfig { ous: c.scope_ous.clone(), groups: c.scope_groups.clone() },
            SourceConfig::Ldap(c) => ScopeConfig { ous: c.scope_ous.clone(), groups: c.scope_groups.clone() },
        }
    }
}

/// Which entries of a source are in scope; empty lists mean "everything".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeConfig {
    /// DNs of OUs: only entries at or below one of them.
    pub ous: Vec<String>,
    /// DNs or names of groups: only users that are members, directly or nested.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdifSourceConfig {
    pub name: String,
    pub path: PathBuf,
    #[serde(default = "default_ldap_anchor")]
    pub anchor: String,
    #[serde(default = "default_user_classes")]
    pub user_object_classes: Vec<String>,
    #[serde(default = "default_group_classes")]
    pub group_object_classes: Vec<String>,
    #[serde(default = "default_member_attributes")]
    pub member_attributes: Vec<String>,
    #[serde(default)]
    pub scope_ous: Vec<String>,
    #[serde(default)]
    pub scope_groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSourceConfig {
    pub name: String,
    /// `ldap://host:port`, `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA(s) that sign the server's certificate; default: the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Turns certificate verification off. Logged as a warning on every run.
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub bind_password: Option<SecretRef>,
    pub user_base: String,
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    #[serde(default)]
    pub group_base: Option<String>,
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    #[serde(default = "default_ldap_anchor")]
    pub anchor: String,
    #[serde(default = "default_member_attributes")]
    pub member_attributes: Vec<String>,
    #[serde(default)]
    pub scope_ous: Vec<String>,
    #[serde(default)]
    pub scope_groups: Vec<String>,
    /// RFC 2696 page size.
    #[serde(default = "default_page_size")]
    pub page_size: i32,
    /// Connect and per-operation timeout, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_ldap_anchor() -> String {
    "entryUUID".into()
}
fn default_user_filter() -> String {
    "(objectClass=inetOrgPerson)".into()
}
fn default_group_filter() -> String {
    "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))".into()
}
fn default_user_classes() -> Vec<String> {
    vec!["inetOrgPerson".into(), "person".into(), "user".into()]
}
fn default_group_classes() -> Vec<String> {
    vec!["groupOfNames".into(), "groupOfUniqueNames".into(), "group".into()]
}
fn default_member_attributes() -> Vec<String> {
    vec!["member".into(), "uniqueMember".into()]
}
fn default_page_size() -> i32 {
    1000
}
fn default_timeout_secs() -> u64 {
    30
}

/// A configuration error that names where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: tenant '{tenant}': {message}")]
    Invalid { path: String, tenant: String, message: String },
    #[error("{path}: {message}")]
    Global { path: String, message: String },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text that claims to come from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: shown.clone(), message: describe_toml_error(text, &e) })?;
        config.path = path.to_path_buf();
        config.base_dir = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let path = self.path.display().to_string();
        let mut ids = HashSet::new();
        for t in &self.tenants {
            let invalid = |message: String| ConfigError::Invalid { path: path.clone(), tenant: t.id.clone(), message };
            if t.id.is_empty() || !t.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid("tenant id must be non-empty ASCII letters, digits, '-' or '_'".into()));
            }
            if !ids.insert(t.id.as_str()) {
                return Err(invalid("tenant id is used twice".into()));
            }
            let mut names = HashSet::new();
            for s in &t.sources {
                if s.name().is_empty() {
                    return Err(invalid("a source has an empty name".into()));
                }
                if !names.insert(s.name()) {
                    return Err(invalid(format!("source name '{}' is used twice", s.name())));
                }
                if let SourceConfig::Ldap(l) = s {
                    if !(l.url.starts_with("ldap://") || l.url.starts_with("ldaps://")) {
                        return Err(invalid(format!(
                            "source '{}': url '{}' must start with ldap:// or ldaps://",
                            l.name, l.url
                        )));
                    }
                    if l.starttls && l.url.starts_with("ldaps://") {
                        return Err(invalid(format!(
                            "source '{}': starttls = true needs an ldap:// url (ldaps:// is already TLS)",
                            l.name
                        )));
                    }
                    if l.bind_dn.is_some() != l.bind_password.is_some() {
                        return Err(invalid(format!("source '{}': bind_dn and bind_password go together", l.name)));
                    }
                    if !(1..=10_000).contains(&l.page_size) {
                        return Err(invalid(format!("source '{}': page_size must be 1..=10000", l.name)));
                    }
                }
            }
            if t.mapping.is_some() && t.plugins.mapper.is_some() {
                return Err(invalid(
                    "[tenant.mapping] configures the built-in mapper; it cannot be combined with [tenant.plugins] mapper".into(),
                ));
            }
            let s = &t.safety;
            if !(0.0..=100.0).contains(&s.max_delete_percent) {
                return Err(invalid("safety.max_delete_percent must be between 0 and 100".into()));
            }
            let l = &t.limits;
            if !(0.0..=100.0).contains(&l.max_failed_percent) {
                return Err(invalid("limits.max_failed_percent must be between 0 and 100".into()));
            }
            if l.plugin_batch_size == 0 || l.plugin_call_timeout_ms == 0 || l.plugin_memory_mb == 0 {
                return Err(invalid("limits.plugin_* values must be greater than 0".into()));
            }
        }
        Ok(())
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// A path from the config, made absolute against the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.resolve_path(&self.store.path)
    }
}

/// toml's message with the line and column spelled out, even where its own
/// message (custom serde errors) carries only a byte span.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/roster/roster.toml"))
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(
            r#"
[store]
path = "roster-data"

[[tenant]]
id = "acme"

[[tenant.source]]
name = "corp"
kind = "ldap"
url = "ldaps://127.0.0.1:1636"
starttls = false
ca_file = "certs/ca.pem"
bind_dn = "cn=roster,ou=services,dc=example,dc=com"
bind_password = { env = "CORP_LDAP_PASSWORD" }
user_base = "ou=people,dc=example,dc=com"
user_filter = "(objectClass=inetOrgPerson)"
group_base = "ou=groups,dc=example,dc=com"
group_filter = "(objectClass=groupOfNames)"
anchor = "entryUUID"
scope_ous = []
scope_groups = []

[tenant.mapping]
userName = "lower(uid)"
"name.givenName" = "givenName"

[tenant.safety]
max_deletes = 500
max_delete_percent = 20
"#,
        )
        .expect("parses");
        assert_eq!(c.tenants[0].sources[0].kind(), "ldap");
        assert_eq!(c.store_dir(), PathBuf::from("/etc/roster/roster-data"));
        assert_eq!(c.tenants[0].safety.max_delete_percent, 20.0);
    }

    #[test]
    fn unknown_key_in_a_source_names_line_and_column() {
        let err = parse(
            "[[tenant]]\nid = \"acme\"\n[[tenant.source]]\nname = \"f\"\nkind = \"ldif\"\npath = \"x.ldif\"\nbogus = 1\n",
        )
        .expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("/etc/roster/roster.toml"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
        assert!(msg.contains("line "), "{msg}");
    }

    #[test]
    fn plaintext_password_is_refused() {
        let err = parse(
            "[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"l\"\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\nbind_dn = \"cn=x\"\nbind_password = \"hunter2\"\n",
        )
        .expect_err("plaintext");
        let msg = err.to_string();
        assert!(msg.contains("secret reference"), "{msg}");
        assert!(msg.contains("line 9"), "{msg}");
    }

    #[test]
    fn wrong_type_and_missing_key_are_located() {
        let err = parse("[[tenant]]\nid = 5\n").expect_err("wrong type");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse("[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"l\"\nkind = \"ldif\"\n")
            .expect_err("missing path");
        assert!(err.to_string().contains("path"), "{err}");
    }
}
