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
    /// `roster serve`: the service's own settings.
    #[serde(default)]
    pub serve: ServeConfig,
    /// Where failures, recoveries, guard-rail blocks and security events go.
    #[serde(default, rename = "notify")]
    pub notify: Vec<NotifyConfig>,
    /// Accept secrets written in the file (with a warning). Off: only
    /// `{ env = … }` and `{ file = … }` references.
    #[serde(default)]
    pub allow_plaintext_secrets: bool,
    /// How many plaintext secrets the file holds (warned about at load).
    #[serde(skip)]
    pub plaintext_secrets: usize,
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
    /// The data directory: the SQLite database (unless `url` is set), the
    /// plugin cache and uploads live in it.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// `postgres://user@host:port/database?sslmode=…`: the store lives in
    /// PostgreSQL, which several `roster serve` nodes can share. Unset: SQLite.
    #[serde(default)]
    pub url: Option<String>,
    /// The PostgreSQL password (a secret reference; never in the URL).
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// PEM CA for the PostgreSQL server's certificate (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: default_store_path(), url: None, password: None, ca_file: None }
    }
}

/// Replaces the configured store with a PostgreSQL URL (`[store] url`), as
/// container deployments and the test suite's PostgreSQL run set it.
pub const STORE_URL_ENV: &str = "ROSTER_STORE_URL";

/// Where the store lives, once `ROSTER_STORE_URL` is taken into account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres { url: String, password: Option<SecretRef>, ca_file: Option<PathBuf> },
}

fn default_store_path() -> PathBuf {
    PathBuf::from("roster-data")
}

/// `[serve]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where `/metrics` and `/healthz` listen (loopback by default).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Tenants that may run at the same time.
    #[serde(default = "default_concurrent")]
    pub max_concurrent_runs: usize,
    /// Longest wait between retries of a failing source.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// Failed API authentications per client address per minute before it gets 429.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
    /// PEM certificate chain for the API (with `tls_key`). Without them the
    /// API speaks plain HTTP, and only on a loopback address.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (keep it 0600).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// This node's name among the `roster serve` processes sharing the store
    /// (default: host name and process id). Also `--node-id`.
    #[serde(default)]
    pub node_id: Option<String>,
    /// How long a node's claim on a source or delivery target lasts without
    /// renewal: a node that dies loses its work to the others after this.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_concurrent_runs: default_concurrent(),
            retry_max_secs: default_retry_max(),
            auth_failures_per_minute: default_auth_failures(),
            tls_cert: None,
            tls_key: None,
            node_id: None,
            lease_secs: default_lease_secs(),
        }
    }
}

fn default_lease_secs() -> u64 {
    15
}

fn default_auth_failures() -> u32 {
    20
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_concurrent() -> usize {
    4
}
fn default_retry_max() -> u64 {
    300
}

/// `[[notify]]`: a channel for notifications.
///
/// Read through [`RawNotify`] rather than as an internally tagged enum: serde
/// buffers a tagged table before choosing the variant, which loses where each
/// key is, and an error in a value (a plaintext secret) must name its line.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawNotify")]
pub enum NotifyConfig {
    /// JSON POST, signed with HMAC-SHA256 of the body (`X-Roster-Signature: sha256=…`).
    Webhook { url: String, secret: SecretRef, dedup_minutes: u64 },
    /// Email over SMTP with STARTTLS (plain only to a loopback server, for tests).
    Smtp {
        server: String,
        from: String,
        to: Vec<String>,
        starttls: bool,
        ca_file: Option<PathBuf>,
        username: Option<String>,
        password: Option<SecretRef>,
        dedup_minutes: u64,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum NotifyKind {
    Webhook,
    Smtp,
}

/// Every key any `[[notify]]` kind takes, read in place (so errors keep their
/// position); [`NotifyConfig::try_from`] then checks which belong to the kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    kind: NotifyKind,
    url: Option<String>,
    secret: Option<SecretRef>,
    server: Option<String>,
    from: Option<String>,
    to: Option<Vec<String>>,
    starttls: Option<bool>,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<SecretRef>,
    #[serde(default = "default_dedup")]
    dedup_minutes: u64,
}

impl TryFrom<RawNotify> for NotifyConfig {
    type Error = String;

    fn try_from(raw: RawNotify) -> Result<Self, String> {
        fn required<T>(value: Option<T>, kind: &str, key: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("a [[notify]] of kind \"{kind}\" needs `{key}`"))
        }
        fn refuse(present: &[(&str, bool)], kind: &str) -> Result<(), String> {
            match present.iter().find(|(_, there)| *there) {
                Some((key, _)) => Err(format!("`{key}` does not apply to a [[notify]] of kind \"{kind}\"")),
                None => Ok(()),
            }
        }
        match raw.kind {
            NotifyKind::Webhook => {
                refuse(
                    &[
                        ("server", raw.server.is_some()),
                        ("from", raw.from.is_some()),
                        ("to", raw.to.is_some()),
                        ("starttls", raw.starttls.is_some()),
                        ("ca_file", raw.ca_file.is_some()),
                        ("username", raw.username.is_some()),
                        ("password", raw.password.is_some()),
                    ],
                    "webhook",
                )?;
                Ok(NotifyConfig::Webhook {
                    url: required(raw.url, "webhook", "url")?,
                    secret: required(raw.secret, "webhook", "secret")?,
                    dedup_minutes: raw.dedup_minutes,
                })
            }
            NotifyKind::Smtp => {
                refuse(&[("url", raw.url.is_some()), ("secret", raw.secret.is_some())], "smtp")?;
                Ok(NotifyConfig::Smtp {
                    server: required(raw.server, "smtp", "server")?,
                    from: required(raw.from, "smtp", "from")?,
                    to: required(raw.to, "smtp", "to")?,
                    starttls: raw.starttls.unwrap_or(true),
                    ca_file: raw.ca_file,
                    username: raw.username,
                    password: raw.password,
                    dedup_minutes: raw.dedup_minutes,
                })
            }
        }
    }
}

fn default_dedup() -> u64 {
    30
}

/// How a source syncs under `roster serve` (`sync = { mode = … }`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncModeConfig {
    pub mode: SyncMode,
    /// `schedule`: when to run (5 or 6 fields; seconds first when 6).
    #[serde(default)]
    pub cron: Option<String>,
    /// `realtime`: when to run a full reconcile that repairs anything a stream missed.
    #[serde(default)]
    pub reconcile_cron: Option<String>,
    /// `realtime` for sources without a change stream (Active Directory,
    /// Entra ID): how often to read what changed.
    #[serde(default)]
    pub poll_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Only when triggered (CLI, API).
    #[default]
    Manual,
    Schedule,
    Realtime,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Manual => "manual",
            SyncMode::Schedule => "schedule",
            SyncMode::Realtime => "realtime",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// As written; turned into [`TenantConfig::sources`] by [`Config::parse`].
    #[serde(default, rename = "source")]
    raw_sources: Vec<toml::Spanned<RawSource>>,
    #[serde(skip)]
    pub sources: Vec<SourceConfig>,
    /// Each source's `sync = { … }`, by source name.
    #[serde(skip)]
    pub source_sync: BTreeMap<String, SyncModeConfig>,
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
    #[serde(default)]
    pub conflicts: ConflictConfig,
    /// Group → role rules.
    #[serde(default)]
    pub roles: crate::roles::RolesConfig,
    /// Typed custom attributes the mapper may produce as `custom.<name>`.
    #[serde(default)]
    pub custom_attributes: crate::custom_attrs::Schema,
    /// The events outbox.
    #[serde(default)]
    pub events: EventsConfig,
    /// Endpoints the tenant's events are delivered to (`roster serve`).
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
    /// SCIM endpoints of applications Roster provisions (`roster serve`).
    #[serde(default, rename = "scim_push")]
    pub scim_push: Vec<ScimPushConfig>,
    /// Attributes never kept in clear.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// The tenant's audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[tenant.privacy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Attribute names (source or mapped, case-insensitive) whose values are
    /// replaced by a one-way digest before anything stores, logs or audits
    /// them: the store and the audit can tell that one changed, never what it is.
    #[serde(default = "default_sensitive_attributes")]
    pub sensitive_attributes: Vec<String>,
    /// Keep every attribute the source returned for each synced object (for
    /// `roster explain` and audits of what the directory said), sensitive
    /// ones digested. Off by default: only mapped attributes are stored, and
    /// turning it off deletes what was kept.
    #[serde(default)]
    pub keep_raw_attributes: bool,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self { sensitive_attributes: default_sensitive_attributes(), keep_raw_attributes: false }
    }
}

fn default_sensitive_attributes() -> Vec<String> {
    [
        "userPassword",
        "unicodePwd",
        "dBCSPwd",
        "ntPwdHistory",
        "lmPwdHistory",
        "pwdHistory",
        "supplementalCredentials",
        "password",
        "sambaNTPassword",
        "sambaLMPassword",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl PrivacyConfig {
    pub fn is_sensitive(&self, attribute: &str) -> bool {
        // `custom.x` and `name.givenName` style paths: the last segment counts too.
        let last = attribute.rsplit('.').next().unwrap_or(attribute);
        self.sensitive_attributes.iter().any(|s| s.eq_ignore_ascii_case(attribute) || s.eq_ignore_ascii_case(last))
    }

    /// The stored stand-in for a sensitive value: salted with the object and
    /// attribute so equal passwords of two users do not look alike.
    pub fn digest(object_id: &str, attribute: &str, value: &str) -> String {
        let hex = crate::util::sha256_hex(format!("{object_id}\0{attribute}\0{value}").as_bytes());
        format!("{REDACTED_PREFIX}{hex}")
    }
}

/// What a sensitive value looks like once replaced.
pub const REDACTED_PREFIX: &str = "redacted:sha256:";

/// `[tenant.audit]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Records older than this many days are pruned after each applied run;
    /// unset keeps the trail forever.
    #[serde(default)]
    pub retention_days: Option<u64>,
}

/// `[[tenant.scim_push]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimPushConfig {
    pub name: String,
    /// The application's SCIM base URL (…/scim/v2).
    pub url: String,
    /// Bearer token for the application.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

/// `[tenant.events]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Events older than this are dropped (their sequence numbers are not reused).
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { retention_days: default_retention_days() }
    }
}

fn default_retention_days() -> u64 {
    30
}

/// `[[tenant.webhook]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the endpoint in delivery state and `roster webhooks …`.
    pub name: String,
    pub url: String,
    /// Signs every delivery (`Roster-Signature: t=…,v1=HMAC-SHA256(secret, t + "." + body)`).
    pub secret: SecretRef,
    /// Event types to deliver (`user.created`, `group.*`, `*`); default all.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// How long an event is retried before it is dead-lettered.
    #[serde(default = "default_retry_hours")]
    pub max_retry_hours: u64,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}
fn default_retry_hours() -> u64 {
    72
}

impl WebhookConfig {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|p| {
            p == "*"
                || p == event_type
                || p.strip_suffix(".*").is_some_and(|prefix| event_type.split('.').next() == Some(prefix))
        })
    }
}

/// What happens when objects of a tenant claim the same unique value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictConfig {
    /// User attributes that must be unique within the tenant (`userName`, `email`, …).
    #[serde(default = "default_unique")]
    pub unique: Vec<String>,
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
    /// A mapped attribute that identifies a person across sources (`email`,
    /// `custom.employeeId`…): users of different sources with the same value
    /// are one person, merged by `precedence`.
    #[serde(default)]
    pub correlate_on: Option<String>,
    /// Source names (and `app`, for the application's own edits), first wins.
    #[serde(default)]
    pub precedence: Vec<String>,
    /// Per-attribute overrides of `precedence`.
    #[serde(default)]
    pub attribute_precedence: BTreeMap<String, Vec<String>>,
    /// An attribute changed in the application and in the directory, when
    /// its precedence does not name `app`.
    #[serde(default)]
    pub on_app_edit: OnAppEdit,
}

impl Default for ConflictConfig {
    fn default() -> Self {
        Self {
            unique: default_unique(),
            on_duplicate: OnDuplicate::default(),
            correlate_on: None,
            precedence: Vec::new(),
            attribute_precedence: BTreeMap::new(),
            on_app_edit: OnAppEdit::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnAppEdit {
    /// Held for human review; the stored user keeps its current value.
    #[default]
    Quarantine,
    /// The application's value wins.
    App,
    /// The directory's value wins; the application's edit is dropped.
    Directory,
}

impl OnAppEdit {
    pub fn as_str(self) -> &'static str {
        match self {
            OnAppEdit::Quarantine => "quarantine",
            OnAppEdit::App => "app",
            OnAppEdit::Directory => "directory",
        }
    }
}

impl OnDuplicate {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDuplicate::Quarantine => "quarantine",
            OnDuplicate::KeepOldest => "keep-oldest",
            OnDuplicate::Suffix => "suffix",
        }
    }
}

fn default_unique() -> Vec<String> {
    vec!["userName".into()]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDuplicate {
    /// Every claimant goes to quarantine for human review.
    Quarantine,
    /// The claimant stored first keeps the value; the others are quarantined.
    #[default]
    KeepOldest,
    /// The oldest keeps the value; the others get a deterministic suffix.
    Suffix,
}

/// Plugins a tenant brings instead of the built-ins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    pub mapper: Option<PluginRef>,
    pub custom_attributes: Option<PluginRef>,
    pub role_assigner: Option<PluginRef>,
    pub conflict_resolver: Option<PluginRef>,
}

impl PluginsConfig {
    pub fn get(&self, kind: crate::plugin_host::PluginKind) -> Option<&PluginRef> {
        use crate::plugin_host::PluginKind;
        match kind {
            PluginKind::Mapper => self.mapper.as_ref(),
            PluginKind::CustomAttributes => self.custom_attributes.as_ref(),
            PluginKind::RoleAssigner => self.role_assigner.as_ref(),
            PluginKind::ConflictResolver => self.conflict_resolver.as_ref(),
            PluginKind::Connector => None,
        }
    }
}

/// `mapper = "file.wasm"`, or `[tenant.plugins.mapper]` with an optional `path`
/// and a `config` table. Without `path`, the tenant's active uploaded plugin
/// (`roster plugin add`) runs with that configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a plugin file path, or a table with `path` and an optional `config` table")]
pub enum PluginRef {
    Path(PathBuf),
    Table(PluginTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginTable {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub config: toml::Table,
}

impl PluginRef {
    /// The plugin file, if the config names one (else: the registry's active plugin).
    pub fn path(&self) -> Option<&Path> {
        match self {
            PluginRef::Path(p) => Some(p),
            PluginRef::Table(t) => t.path.as_deref(),
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

/// The largest `plugin_memory_mb` accepted. The plugin host reserves address
/// space for this much per live instance (pooling allocator), so it is a
/// process-wide maximum, not a default.
pub const MAX_PLUGIN_MEMORY_MB: u64 = 1024;

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
    /// Most a plugin call may return (attribute buffers and strings), in KiB.
    #[serde(default = "default_plugin_output_max_kb")]
    pub plugin_output_max_kb: u64,
    /// Give the plugin the host's real clocks; otherwise the wall clock reads the
    /// UNIX epoch and the monotonic clock stands still.
    #[serde(default)]
    pub plugin_grant_clock: bool,
    /// If more than this share of entries fail to map, the run aborts before apply.
    #[serde(default = "default_max_failed_percent")]
    pub max_failed_percent: f64,
    /// After this many consecutive aborted runs, the plugin is disabled for the
    /// tenant until `roster plugin enable` (or a new version is activated).
    #[serde(default = "default_disable_after_failed_runs")]
    pub disable_after_failed_runs: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            plugin_call_timeout_ms: default_call_timeout_ms(),
            plugin_memory_mb: default_plugin_memory_mb(),
            plugin_batch_size: default_batch_size(),
            plugin_output_max_kb: default_plugin_output_max_kb(),
            plugin_grant_clock: false,
            max_failed_percent: default_max_failed_percent(),
            disable_after_failed_runs: default_disable_after_failed_runs(),
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
fn default_plugin_output_max_kb() -> u64 {
    4096
}
fn default_disable_after_failed_runs() -> u32 {
    3
}
fn default_max_failed_percent() -> f64 {
    10.0
}

/// One source of a tenant, typed by its `kind`.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Ldif(LdifSourceConfig),
    Ldap(LdapSourceConfig),
    ActiveDirectory(AdSourceConfig),
    AzureAd(GraphSourceConfig),
    Plugin(ConnectorSourceConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SourceKind {
    Ldif,
    Ldap,
    ActiveDirectory,
    AzureAd,
    Plugin,
}

/// A source table as written: every key of every kind, so serde keeps the
/// line and column of each error (an internally tagged enum would lose them).
/// Keys that do not belong to the source's `kind` are refused afterwards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    /// Required in a `[[tenant.source]]`; implied when a kind's config is read alone.
    kind: Option<SourceKind>,
    anchor: Option<String>,
    member_attributes: Option<Vec<String>>,
    #[serde(default)]
    scope_ous: Vec<String>,
    #[serde(default)]
    scope_groups: Vec<String>,
    // ldif
    path: Option<PathBuf>,
    user_object_classes: Option<Vec<String>>,
    group_object_classes: Option<Vec<String>>,
    // ldap
    url: Option<String>,
    starttls: Option<bool>,
    ca_file: Option<PathBuf>,
    tls_insecure_skip_verify: Option<bool>,
    bind_dn: Option<String>,
    bind_password: Option<SecretRef>,
    user_base: Option<String>,
    user_filter: Option<String>,
    group_base: Option<String>,
    group_filter: Option<String>,
    page_size: Option<i32>,
    timeout_secs: Option<u64>,
    // active-directory
    include_computers: Option<bool>,
    include_system_objects: Option<bool>,
    incremental: Option<bool>,
    // azure-ad
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretRef>,
    client_certificate: Option<PathBuf>,
    client_key: Option<SecretRef>,
    authority_url: Option<String>,
    graph_url: Option<String>,
    extension_attributes: Option<Vec<String>>,
    max_retries: Option<u32>,
    user_attribute_filter: Option<BTreeMap<String, Vec<String>>>,
    // plugin (a connector component)
    plugin: Option<PathBuf>,
    config: Option<toml::Table>,
    allow_hosts: Option<Vec<String>>,
    allow_private_addresses: Option<bool>,
    allow_plain_http: Option<bool>,
    auth: Option<ConnectorAuth>,
    call_timeout_secs: Option<u64>,
    max_response_kb: Option<u64>,
    max_requests_per_second: Option<f64>,
    // every kind
    sync: Option<SyncModeConfig>,
}

impl RawSource {
    /// Keys that are set, for refusing those a kind does not take.
    fn set_keys(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut note = |set: bool, k: &'static str| {
            if set {
                v.push(k)
            }
        };
        note(self.path.is_some(), "path");
        note(self.user_object_classes.is_some(), "user_object_classes");
        note(self.group_object_classes.is_some(), "group_object_classes");
        note(self.url.is_some(), "url");
        note(self.starttls.is_some(), "starttls");
        note(self.ca_file.is_some(), "ca_file");
        note(self.tls_insecure_skip_verify.is_some(), "tls_insecure_skip_verify");
        note(self.bind_dn.is_some(), "bind_dn");
        note(self.bind_password.is_some(), "bind_password");
        note(self.user_base.is_some(), "user_base");
        note(self.user_filter.is_some(), "user_filter");
        note(self.group_base.is_some(), "group_base");
        note(self.group_filter.is_some(), "group_filter");
        note(self.page_size.is_some(), "page_size");
        note(self.timeout_secs.is_some(), "timeout_secs");
        note(self.include_computers.is_some(), "include_computers");
        note(self.include_system_objects.is_some(), "include_system_objects");
        note(self.incremental.is_some(), "incremental");
        note(self.tenant_id.is_some(), "tenant_id");
        note(self.client_id.is_some(), "client_id");
        note(self.client_secret.is_some(), "client_secret");
        note(self.client_certificate.is_some(), "client_certificate");
        note(self.client_key.is_some(), "client_key");
        note(self.authority_url.is_some(), "authority_url");
        note(self.graph_url.is_some(), "graph_url");
        note(self.extension_attributes.is_some(), "extension_attributes");
        note(self.user_attribute_filter.is_some(), "user_attribute_filter");
        note(self.max_retries.is_some(), "max_retries");
        note(self.anchor.is_some(), "anchor");
        note(self.member_attributes.is_some(), "member_attributes");
        note(self.plugin.is_some(), "plugin");
        note(self.config.is_some(), "config");
        note(self.allow_hosts.is_some(), "allow_hosts");
        note(self.allow_private_addresses.is_some(), "allow_private_addresses");
        note(self.allow_plain_http.is_some(), "allow_plain_http");
        note(self.auth.is_some(), "auth");
        note(self.call_timeout_secs.is_some(), "call_timeout_secs");
        note(self.max_response_kb.is_some(), "max_response_kb");
        note(self.max_requests_per_second.is_some(), "max_requests_per_second");
        v
    }

    fn into_config(self) -> Result<SourceConfig, (Option<&'static str>, String)> {
        const LDIF_KEYS: &[&str] = &["path", "user_object_classes", "group_object_classes"];
        const LDAP_KEYS: &[&str] = &[
            "url",
            "starttls",
            "ca_file",
            "tls_insecure_skip_verify",
            "bind_dn",
            "bind_password",
            "user_base",
            "user_filter",
            "group_base",
            "group_filter",
            "page_size",
            "timeout_secs",
        ];
        const AD_KEYS: &[&str] = &[
            "url",
            "starttls",
            "ca_file",
            "tls_insecure_skip_verify",
            "bind_dn",
            "bind_password",
            "user_base",
            "user_filter",
            "group_base",
            "group_filter",
            "page_size",
            "timeout_secs",
            "include_computers",
            "include_system_objects",
            "incremental",
        ];
        const GRAPH_KEYS: &[&str] = &[
            "tenant_id",
            "client_id",
            "client_secret",
            "client_certificate",
            "client_key",
            "authority_url",
            "graph_url",
            "ca_file",
            "anchor",
            "extension_attributes",
            "user_attribute_filter",
            "incremental",
            "max_retries",
            "timeout_secs",
        ];
        const PLUGIN_KEYS: &[&str] = &[
            "plugin",
            "config",
            "allow_hosts",
            "allow_private_addresses",
            "allow_plain_http",
            "auth",
            "ca_file",
            "timeout_secs",
            "call_timeout_secs",
            "max_response_kb",
            "max_requests_per_second",
            "max_retries",
            "incremental",
        ];
        let Some(kind) = self.kind else {
            return Err((
                None,
                "missing key 'kind' (\"ldif\", \"ldap\", \"active-directory\", \"azure-ad\" or \"plugin\")".into(),
            ));
        };
        let with_common = |keys: &[&'static str]| -> Vec<&'static str> {
            let mut v = keys.to_vec();
            if !matches!(kind, SourceKind::AzureAd | SourceKind::Plugin) {
                v.extend(["anchor", "member_attributes"]);
            }
            v
        };
        let (kind_name, allowed) = match kind {
            SourceKind::Ldif => ("ldif", with_common(LDIF_KEYS)),
            SourceKind::Ldap => ("ldap", with_common(LDAP_KEYS)),
            SourceKind::ActiveDirectory => ("active-directory", with_common(AD_KEYS)),
            SourceKind::AzureAd => ("azure-ad", GRAPH_KEYS.to_vec()),
            SourceKind::Plugin => ("plugin", PLUGIN_KEYS.to_vec()),
        };
        if let Some(k) = self.set_keys().into_iter().find(|k| !allowed.contains(k)) {
            return Err((Some(k), format!("key '{k}' does not apply to kind = \"{kind_name}\"")));
        }
        let missing = |k: &'static str| (None, format!("missing key '{k}' (required for kind = \"{kind_name}\")"));
        if kind == SourceKind::AzureAd {
            if !self.scope_ous.is_empty() {
                return Err((
                    Some("scope_ous"),
                    "Entra ID has no OUs: scope an azure-ad source by scope_groups".into(),
                ));
            }
            let anchor = self.anchor.unwrap_or_else(|| "id".into());
            if anchor != "id" && anchor != "onPremisesImmutableId" {
                return Err((
                    Some("anchor"),
                    format!("kind = \"azure-ad\" anchors on `id` (default) or `onPremisesImmutableId`, not '{anchor}'"),
                ));
            }
            let certificate = match (self.client_secret.is_some(), &self.client_certificate, &self.client_key) {
                (true, None, None) => None,
                (false, Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (false, None, None) => {
                    return Err((
                        None,
                        "kind = \"azure-ad\" needs `client_secret`, or `client_certificate` with `client_key`".into(),
                    ));
                }
                _ => {
                    return Err((
                        None,
                        "give either `client_secret`, or both `client_certificate` and `client_key`, not a mix".into(),
                    ));
                }
            };
            return Ok(SourceConfig::AzureAd(GraphSourceConfig {
                name: self.name,
                tenant_id: self.tenant_id.ok_or_else(|| missing("tenant_id"))?,
                client_id: self.client_id.ok_or_else(|| missing("client_id"))?,
                client_secret: self.client_secret,
                certificate,
                authority_url: self
                    .authority_url
                    .unwrap_or_else(|| "https://login.microsoftonline.com".into())
                    .trim_end_matches('/')
                    .to_string(),
                graph_url: self
                    .graph_url
                    .unwrap_or_else(|| "https://graph.microsoft.com".into())
                    .trim_end_matches('/')
                    .to_string(),
                ca_file: self.ca_file,
                anchor,
                extension_attributes: self.extension_attributes.unwrap_or_default(),
                user_attribute_filter: self.user_attribute_filter.unwrap_or_default(),
                scope_groups: self.scope_groups,
                incremental: self.incremental.unwrap_or(true),
                max_retries: self.max_retries.unwrap_or(6),
                timeout_secs: self.timeout_secs.unwrap_or_else(default_timeout_secs),
            }));
        }
        if kind == SourceKind::Plugin {
            let allow_hosts = self.allow_hosts.unwrap_or_default();
            for h in &allow_hosts {
                crate::config::HostPattern::parse(h)
                    .map_err(|why| (Some("allow_hosts"), format!("allow_hosts '{h}': {why}")))?;
            }
            if self.call_timeout_secs == Some(0) {
                return Err((Some("call_timeout_secs"), "must be at least 1".into()));
            }
            if self.max_response_kb == Some(0) {
                return Err((Some("max_response_kb"), "must be at least 1".into()));
            }
            let max_requests_per_second = self.max_requests_per_second.unwrap_or(10.0);
            if !(max_requests_per_second > 0.0 && max_requests_per_second.is_finite()) {
                return Err((Some("max_requests_per_second"), "must be a positive number".into()));
            }
            return Ok(SourceConfig::Plugin(ConnectorSourceConfig {
                name: self.name,
                plugin: self.plugin.ok_or_else(|| missing("plugin"))?,
                config: self.config.unwrap_or_default(),
                allow_hosts,
                allow_private_addresses: self.allow_private_addresses.unwrap_or(false),
                allow_plain_http: self.allow_plain_http.unwrap_or(false),
                ca_file: self.ca_file,
                auth: self.auth,
                timeout_secs: self.timeout_secs.unwrap_or_else(default_timeout_secs),
                call_timeout_secs: self.call_timeout_secs.unwrap_or(60),
                max_response_kb: self.max_response_kb.unwrap_or(16 * 1024),
                max_requests_per_second,
                max_retries: self.max_retries.unwrap_or(3),
                incremental: self.incremental.unwrap_or(true),
                scope_ous: self.scope_ous,
                scope_groups: self.scope_groups,
            }));
        }
        if kind == SourceKind::ActiveDirectory {
            if let Some(a) = self.anchor.as_deref().filter(|a| !a.eq_ignore_ascii_case("objectGUID")) {
                return Err((
                    Some("anchor"),
                    format!("kind = \"active-directory\" anchors on objectGUID; anchor = \"{a}\" is not supported"),
                ));
            }
            let page_size = self.page_size.unwrap_or(AD_MAX_PAGE_SIZE);
            if !(1..=AD_MAX_PAGE_SIZE).contains(&page_size) {
                return Err((
                    Some("page_size"),
                    format!(
                        "page_size {page_size}: Active Directory returns at most {AD_MAX_PAGE_SIZE} entries per page (MaxPageSize)"
                    ),
                ));
            }
            return Ok(SourceConfig::ActiveDirectory(AdSourceConfig {
                ldap: LdapSourceConfig {
                    name: self.name,
                    url: self.url.ok_or_else(|| missing("url"))?,
                    starttls: self.starttls.unwrap_or(false),
                    ca_file: self.ca_file,
                    tls_insecure_skip_verify: self.tls_insecure_skip_verify.unwrap_or(false),
                    bind_dn: self.bind_dn,
                    bind_password: self.bind_password,
                    user_base: self.user_base.ok_or_else(|| missing("user_base"))?,
                    user_filter: self.user_filter.unwrap_or_else(|| AD_USER_FILTER.into()),
                    group_base: self.group_base,
                    group_filter: self.group_filter.unwrap_or_else(|| AD_GROUP_FILTER.into()),
                    anchor: "objectGUID".into(),
                    member_attributes: vec!["member".into()],
                    scope_ous: self.scope_ous,
                    scope_groups: self.scope_groups,
                    page_size,
                    timeout_secs: self.timeout_secs.unwrap_or_else(default_timeout_secs),
                },
                include_computers: self.include_computers.unwrap_or(false),
                include_system_objects: self.include_system_objects.unwrap_or(false),
                incremental: self.incremental.unwrap_or(true),
            }));
        }
        let anchor = self.anchor.unwrap_or_else(default_ldap_anchor);
        let member_attributes = self.member_attributes.unwrap_or_else(default_member_attributes);
        Ok(match kind {
            SourceKind::Ldif => SourceConfig::Ldif(LdifSourceConfig {
                name: self.name,
                path: self.path.ok_or_else(|| missing("path"))?,
                anchor,
                user_object_classes: self.user_object_classes.unwrap_or_else(default_user_classes),
                group_object_classes: self.group_object_classes.unwrap_or_else(default_group_classes),
                member_attributes,
                scope_ous: self.scope_ous,
                scope_groups: self.scope_groups,
            }),
            SourceKind::Ldap => SourceConfig::Ldap(LdapSourceConfig {
                name: self.name,
                url: self.url.ok_or_else(|| missing("url"))?,
                starttls: self.starttls.unwrap_or(false),
                ca_file: self.ca_file,
                tls_insecure_skip_verify: self.tls_insecure_skip_verify.unwrap_or(false),
                bind_dn: self.bind_dn,
                bind_password: self.bind_password,
                user_base: self.user_base.ok_or_else(|| missing("user_base"))?,
                user_filter: self.user_filter.unwrap_or_else(default_user_filter),
                group_base: self.group_base,
                group_filter: self.group_filter.unwrap_or_else(default_group_filter),
                anchor,
                member_attributes,
                scope_ous: self.scope_ous,
                scope_groups: self.scope_groups,
                page_size: self.page_size.unwrap_or_else(default_page_size),
                timeout_secs: self.timeout_secs.unwrap_or_else(default_timeout_secs),
            }),
            SourceKind::ActiveDirectory | SourceKind::AzureAd | SourceKind::Plugin => {
                return Err((None, format!("internal error: kind = \"{kind_name}\" reached the LDAP branch")));
            }
        })
    }
}

/// `kind = "azure-ad"`: Microsoft Entra ID through Microsoft Graph.
#[derive(Debug, Clone)]
pub struct GraphSourceConfig {
    pub name: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Option<SecretRef>,
    /// `client_certificate` (PEM file) and `client_key` (its private key, a file reference).
    pub certificate: Option<(PathBuf, SecretRef)>,
    /// The identity platform, without trailing slash (national clouds differ).
    pub authority_url: String,
    /// Microsoft Graph, without trailing slash.
    pub graph_url: String,
    pub ca_file: Option<PathBuf>,
    /// `id` or `onPremisesImmutableId`.
    pub anchor: String,
    /// Directory extension attributes to read (`extension_{appId}_{name}`).
    pub extension_attributes: Vec<String>,
    /// Only users whose attribute has one of the listed values (case-insensitive),
    /// for every attribute listed: `{ userType = ["Member"], department = ["Sales", "R&D"] }`.
    pub user_attribute_filter: BTreeMap<String, Vec<String>>,
    pub scope_groups: Vec<String>,
    pub incremental: bool,
    /// Retries of a throttled (429) or unavailable (503/504) request.
    pub max_retries: u32,
    pub timeout_secs: u64,
}

/// `kind = "plugin"`: a vendor's connector component, reading through the
/// host's HTTP under this source's policy.
#[derive(Debug, Clone)]
pub struct ConnectorSourceConfig {
    pub name: String,
    /// The connector's `.wasm` (relative to the configuration file).
    pub plugin: PathBuf,
    /// `[tenant.source.config]`: handed to the connector's `init`.
    pub config: toml::Table,
    /// `host` or `host:port` (`*.example.com` for subdomains) the connector
    /// may call; the OAuth `token_url` must be allowed too.
    pub allow_hosts: Vec<String>,
    /// Let names resolve to loopback, private, link-local or other
    /// non-public addresses (an on-premises system); off by default.
    pub allow_private_addresses: bool,
    /// Accept `http://` URLs; off by default (credentials would travel in clear).
    pub allow_plain_http: bool,
    pub ca_file: Option<PathBuf>,
    /// Credentials the host adds to every request; the connector never sees them.
    pub auth: Option<ConnectorAuth>,
    /// One HTTP request, connect to last byte.
    pub timeout_secs: u64,
    /// One connector call (a page), its requests included.
    pub call_timeout_secs: u64,
    pub max_response_kb: u64,
    pub max_requests_per_second: f64,
    /// Retries of a failed, throttled (429) or unavailable (502/503/504) GET.
    pub max_retries: u32,
    /// Read only what changed when the connector supports it.
    pub incremental: bool,
    pub scope_ous: Vec<String>,
    pub scope_groups: Vec<String>,
}

/// How the host authenticates a connector's requests
/// (`auth = { type = "bearer", token = { env = "…" } }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConnectorAuth {
    /// `Authorization: Bearer <token>`.
    Bearer { token: SecretRef },
    /// `Authorization: Basic …`.
    Basic { username: String, password: SecretRef },
    /// OAuth 2.0 client credentials (RFC 6749 §4.4): the host fetches and
    /// renews the access token from `token_url` and sends it as a bearer token.
    OauthClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        #[serde(default)]
        scope: Option<String>,
    },
}

/// An `allow_hosts` entry: an exact host or `*.` and a domain, and an
/// optional port (without one, any port of that host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: String,
    pub wildcard: bool,
    pub port: Option<u16>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.contains("://") || text.contains('/') {
            return Err("give a host or host:port, not a URL".into());
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or("unclosed '[' in an IPv6 address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?),
                None if after.is_empty() => None,
                None => return Err(format!("unexpected '{after}' after the address")),
            };
            (h.to_string(), port)
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => {
                    (h.to_string(), Some(p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?))
                }
                _ => (text.to_string(), None),
            }
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_ascii_lowercase(), true),
            None => (host.to_ascii_lowercase(), false),
        };
        if host.is_empty() || host.contains('*') {
            return Err("a host name, an IP address, or *.domain".into());
        }
        Ok(Self { host, wildcard, port })
    }

    /// Whether a request to `host:port` fits this entry.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host[..host.len() - self.host.len()].ends_with('.')
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// Active Directory's MaxPageSize default; real AD caps every page at it.
pub const AD_MAX_PAGE_SIZE: i32 = 1000;
/// People, not computers (computers are `objectClass=user` too, but `objectCategory=computer`).
pub const AD_USER_FILTER: &str = "(&(objectCategory=person)(objectClass=user))";
pub const AD_GROUP_FILTER: &str = "(objectClass=group)";

/// `kind = "active-directory"`: the LDAP keys with AD defaults, plus AD's own.
#[derive(Debug, Clone)]
pub struct AdSourceConfig {
    /// url, TLS, bind, bases, filters, scope, page size (≤ 1000), anchor objectGUID.
    pub ldap: LdapSourceConfig,
    /// Read computer accounts too (they are `objectClass=user`).
    pub include_computers: bool,
    /// Read `isCriticalSystemObject` objects too (Administrator, krbtgt, built-in groups).
    pub include_system_objects: bool,
    /// Read only what changed since the last applied run (uSNChanged with the
    /// DC's invocationId), with tombstones for deletes; `false`: always read all.
    pub incremental: bool,
}

/// A kind's configuration read on its own (tests, tools): `kind` may be left out.
macro_rules! deserialize_kind {
    ($ty:ty, $kind:expr, $variant:path) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                let mut raw = RawSource::deserialize(d)?;
                raw.kind.get_or_insert($kind);
                match raw.into_config() {
                    Ok($variant(c)) => Ok(c),
                    Ok(other) => Err(D::Error::custom(format!("expected kind = \"{}\"", other.kind()))),
                    Err((_, message)) => Err(D::Error::custom(message)),
                }
            }
        }
    };
}
deserialize_kind!(LdifSourceConfig, SourceKind::Ldif, SourceConfig::Ldif);
deserialize_kind!(LdapSourceConfig, SourceKind::Ldap, SourceConfig::Ldap);
deserialize_kind!(AdSourceConfig, SourceKind::ActiveDirectory, SourceConfig::ActiveDirectory);
deserialize_kind!(GraphSourceConfig, SourceKind::AzureAd, SourceConfig::AzureAd);
deserialize_kind!(ConnectorSourceConfig, SourceKind::Plugin, SourceConfig::Plugin);

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Ldif(c) => &c.name,
            SourceConfig::Ldap(c) => &c.name,
            SourceConfig::ActiveDirectory(c) => &c.ldap.name,
            SourceConfig::AzureAd(c) => &c.name,
            SourceConfig::Plugin(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Ldif(_) => "ldif",
            SourceConfig::Ldap(_) => "ldap",
            SourceConfig::ActiveDirectory(_) => "active-directory",
            SourceConfig::AzureAd(_) => "azure-ad",
            SourceConfig::Plugin(_) => "plugin",
        }
    }

    pub fn scope(&self) -> ScopeConfig {
        match self {
            SourceConfig::Ldif(c) => ScopeConfig { ous: c.scope_ous.clone(), groups: c.scope_groups.clone() },
            SourceConfig::Ldap(c) => ScopeConfig { ous: c.scope_ous.clone(), groups: c.scope_groups.clone() },
            SourceConfig::ActiveDirectory(c) => {
                ScopeConfig { ous: c.ldap.scope_ous.clone(), groups: c.ldap.scope_groups.clone() }
            }
            SourceConfig::AzureAd(c) => ScopeConfig { ous: Vec::new(), groups: c.scope_groups.clone() },
            SourceConfig::Plugin(c) => ScopeConfig { ous: c.scope_ous.clone(), groups: c.scope_groups.clone() },
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

#[derive(Debug, Clone)]
pub struct LdifSourceConfig {
    pub name: String,
    pub path: PathBuf,
    pub anchor: String,
    pub user_object_classes: Vec<String>,
    pub group_object_classes: Vec<String>,
    pub member_attributes: Vec<String>,
    pub scope_ous: Vec<String>,
    pub scope_groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LdapSourceConfig {
    pub name: String,
    /// `ldap://host:port`, `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// PEM file of the CA(s) that sign the server's certificate; default: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Turns certificate verification off. Logged as a warning on every run.
    pub tls_insecure_skip_verify: bool,
    pub bind_dn: Option<String>,
    pub bind_password: Option<SecretRef>,
    pub user_base: String,
    pub user_filter: String,
    pub group_base: Option<String>,
    pub group_filter: String,
    pub anchor: String,
    pub member_attributes: Vec<String>,
    pub scope_ous: Vec<String>,
    pub scope_groups: Vec<String>,
    /// RFC 2696 page size.
    pub page_size: i32,
    /// Connect and per-operation timeout, in seconds.
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
        // The switch is read first: it decides how secrets deserialize.
        let allow = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("allow_plaintext_secrets").and_then(toml::Value::as_bool))
            .unwrap_or(false);
        let (parsed, plaintext) = secret::parsing_with(allow, || toml::from_str::<Config>(text));
        let mut config: Config =
            parsed.map_err(|e| ConfigError::Syntax { path: shown.clone(), message: describe_toml_error(text, &e) })?;
        config.plaintext_secrets = plaintext;
        if plaintext > 0 {
            tracing::warn!(
                path = %shown,
                count = plaintext,
                "the configuration holds plaintext secrets (allow_plaintext_secrets = true): move them to {{ env = … }} or {{ file = … }}"
            );
        }
        config.path = path.to_path_buf();
        config.base_dir = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        for t in &mut config.tenants {
            for raw in std::mem::take(&mut t.raw_sources) {
                let span = raw.span();
                let mut raw = raw.into_inner();
                let sync = raw.sync.take().unwrap_or_default();
                match raw.into_config() {
                    Ok(s) => {
                        t.source_sync.insert(s.name().to_string(), sync);
                        t.sources.push(s);
                    }
                    Err((key, message)) => {
                        let offset = key.and_then(|k| find_key(text, span.clone(), k)).unwrap_or(span.start);
                        let (line, col) = line_col(text, offset);
                        return Err(ConfigError::Syntax {
                            path: shown,
                            message: format!("line {line}, column {col}: {message}"),
                        });
                    }
                }
            }
        }
        // Settings checked here rather than in `validate`, which has no text
        // to find their line in.
        let at = |table: &str, key: &str| -> String {
            text.find(&format!("[{table}]"))
                .and_then(|start| find_key(text, start..text.len(), key))
                .map(|offset| {
                    let (line, col) = line_col(text, offset);
                    format!("line {line}, column {col}: ")
                })
                .unwrap_or_default()
        };
        if let Some(url) = &config.store.url {
            if let Err(message) = check_store_url(url) {
                let place = at("store", "url");
                return Err(ConfigError::Syntax { path: shown, message: format!("{place}[store] url: {message}") });
            }
        }
        if config.serve.lease_secs == 0 {
            let place = at("serve", "lease_secs");
            return Err(ConfigError::Syntax {
                path: shown,
                message: format!(
                    "{place}[serve] lease_secs must be at least 1 (seconds a lease lasts without renewal)"
                ),
            });
        }
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
                let ldap = match s {
                    SourceConfig::Ldap(l) => Some(l),
                    SourceConfig::ActiveDirectory(a) => Some(&a.ldap),
                    SourceConfig::Ldif(_) | SourceConfig::AzureAd(_) | SourceConfig::Plugin(_) => None,
                };
                if let SourceConfig::AzureAd(g) = s {
                    for (key, url) in [("authority_url", &g.authority_url), ("graph_url", &g.graph_url)] {
                        crate::source::graph::check_url(url)
                            .map_err(|why| invalid(format!("source '{}': {key} '{url}': {why}", g.name)))?;
                    }
                }
                if let Some(l) = ldap {
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
            for (name, sync) in &t.source_sync {
                let check = |key: &str, cron: &Option<String>| -> Result<(), ConfigError> {
                    if let Some(c) = cron {
                        crate::serve::schedule::parse(c)
                            .map_err(|e| invalid(format!("source '{name}': sync.{key} '{c}': {e}")))?;
                    }
                    Ok(())
                };
                check("cron", &sync.cron)?;
                check("reconcile_cron", &sync.reconcile_cron)?;
                if sync.mode == SyncMode::Schedule && sync.cron.is_none() {
                    return Err(invalid(format!("source '{name}': sync.mode = \"schedule\" needs sync.cron")));
                }
                if sync.poll_secs == Some(0) {
                    return Err(invalid(format!("source '{name}': sync.poll_secs must be at least 1")));
                }
            }
            t.roles.validate().map_err(&invalid)?;
            let mut hooks = HashSet::new();
            for w in &t.webhooks {
                if !hooks.insert(w.name.as_str()) {
                    return Err(invalid(format!("webhook name '{}' is used twice", w.name)));
                }
                crate::source::graph::check_url(&w.url)
                    .map_err(|e| invalid(format!("webhook '{}': url '{}': {e}", w.name, w.url)))?;
            }
            for p in &t.scim_push {
                crate::source::graph::check_url(&p.url)
                    .map_err(|e| invalid(format!("scim_push '{}': url '{}': {e}", p.name, p.url)))?;
            }
            let c = &t.conflicts;
            let names: Vec<&str> = t.sources.iter().map(|s| s.name()).collect();
            for (key, list) in std::iter::once(("precedence".to_string(), &c.precedence))
                .chain(c.attribute_precedence.iter().map(|(a, l)| (format!("attribute_precedence.{a}"), l)))
            {
                for name in list {
                    if name != "app" && !names.contains(&name.as_str()) {
                        return Err(invalid(format!(
                            "conflicts.{key}: '{name}' is not a source of this tenant (sources: {}; `app` stands for the application's edits)",
                            names.join(", ")
                        )));
                    }
                }
            }
            if c.correlate_on.as_deref().is_some_and(|k| k.trim().is_empty()) {
                return Err(invalid("conflicts.correlate_on is empty".into()));
            }
            if t.mapping.is_some() && t.plugins.mapper.as_ref().is_some_and(|m| m.path().is_some()) {
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
            if l.plugin_batch_size == 0
                || l.plugin_call_timeout_ms == 0
                || l.plugin_memory_mb == 0
                || l.plugin_output_max_kb == 0
            {
                return Err(invalid("limits.plugin_* values must be greater than 0".into()));
            }
            if l.plugin_memory_mb > MAX_PLUGIN_MEMORY_MB {
                return Err(invalid(format!(
                    "limits.plugin_memory_mb = {} is over the maximum of {MAX_PLUGIN_MEMORY_MB} MiB a plugin instance can have",
                    l.plugin_memory_mb
                )));
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

    pub fn store_location(&self) -> StoreLocation {
        let from_env = std::env::var(STORE_URL_ENV).ok().filter(|u| !u.trim().is_empty());
        match from_env.or_else(|| self.store.url.clone()) {
            Some(url) => StoreLocation::Postgres {
                url,
                password: self.store.password.clone(),
                ca_file: self.store.ca_file.as_ref().map(|p| self.resolve_path(p)),
            },
            None => StoreLocation::Sqlite(self.store_dir()),
        }
    }
}

/// A PostgreSQL URL, without a password in it (that is `[store] password`).
pub fn check_store_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "'{}' is not a PostgreSQL URL: write postgres://user@host:port/database (leave `url` out for SQLite)",
            parsed.scheme()
        ));
    }
    if parsed.password().is_some() || parsed.query_pairs().any(|(k, _)| k == "password") {
        return Err("the URL holds a password: give it as `password = { env = \"…\" }` or `{ file = \"…\" }`".into());
    }
    Ok(())
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

/// Where `key = …` starts in the table that begins at `span` (toml's span of an
/// array-of-tables entry may cover only its header), for messages about it.
fn find_key(text: &str, span: std::ops::Range<usize>, key: &str) -> Option<usize> {
    let region = text.get(span.start..)?;
    let mut offset = span.start;
    for (i, line) in region.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') {
            break;
        }
        if trimmed.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
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
    fn a_postgres_store_url_never_holds_a_password() {
        let with = |url: &str| parse(&format!("[store]\nurl = \"{url}\"\npassword = {{ env = \"DBPW\" }}\n"));
        let c = with("postgres://roster@db.internal:5432/roster").expect("a URL without a password");
        match c.store_location() {
            // The test environment may point the store elsewhere (ROSTER_STORE_URL).
            StoreLocation::Postgres { password, .. } => {
                assert_eq!(password, Some(SecretRef::Env { env: "DBPW".into() }))
            }
            StoreLocation::Sqlite(_) => panic!("url selects PostgreSQL"),
        }
        let e = with("postgres://roster:hunter2@db/roster").expect_err("a password").to_string();
        assert!(e.contains("line 2, column 1"), "the error names the line: {e}");
        let e = parse("[serve]\nlease_secs = 0\n").expect_err("no lease").to_string();
        assert!(e.contains("line 2, column 1") && e.contains("lease_secs"), "{e}");
        for (url, says) in [
            ("postgres://roster:hunter2@db/roster", "holds a password"),
            ("postgres://db/roster?password=hunter2", "holds a password"),
            ("mysql://db/roster", "not a PostgreSQL URL"),
        ] {
            let e = with(url).expect_err(url).to_string();
            assert!(e.contains("[store] url") && e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "the password is not repeated: {e}");
        }
    }

    #[test]
    fn notify_channels_take_only_their_own_keys() {
        let base = "[store]\npath = \"d\"\n[[tenant]]\nid = \"t\"\n";
        let ok = parse(&format!(
            "[[notify]]\nkind = \"smtp\"\nserver = \"127.0.0.1:25\"\nfrom = \"r@example.com\"\nto = [\"o@example.com\"]\n{base}"
        ))
        .expect("smtp");
        assert!(matches!(&ok.notify[0], NotifyConfig::Smtp { starttls: true, dedup_minutes: 30, .. }));
        let mixed = parse(&format!(
            "[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/n\"\nsecret = {{ env = \"X\" }}\nto = [\"x\"]\n{base}"
        ));
        let err = mixed.expect_err("to is an smtp key").to_string();
        assert!(err.contains("`to` does not apply") && err.contains("line 1,"), "{err}");
        let missing = parse(&format!("[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/n\"\n{base}"));
        assert!(missing.expect_err("secret").to_string().contains("needs `secret`"));
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
    fn plaintext_secrets_only_when_the_file_allows_them() {
        let body = "[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"l\"\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1\"\nuser_base = \"dc=x\"\nbind_dn = \"cn=x\"\nbind_password = \"hunter2\"\n";
        let c = parse(&format!("allow_plaintext_secrets = true\n{body}")).expect("allowed");
        assert_eq!(c.plaintext_secrets, 1);
        let Some(SourceConfig::Ldap(l)) = c.tenants[0].sources.first() else { panic!("an ldap source") };
        let secret = l.bind_password.as_ref().expect("password");
        assert!(!format!("{secret:?} {c:?}").contains("hunter2"), "Debug redacts it");
        assert_eq!(secret.resolve(Path::new(".")).expect("resolves").expose(), "hunter2");
        let err = parse(&format!("allow_plaintext_secrets = false\n{body}")).expect_err("refused");
        assert!(err.to_string().contains("allow_plaintext_secrets") && !err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn wrong_type_and_missing_key_are_located() {
        let err = parse("[[tenant]]\nid = 5\n").expect_err("wrong type");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse("[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"l\"\nkind = \"ldif\"\n")
            .expect_err("missing path");
        assert!(err.to_string().contains("path"), "{err}");
        let err = parse("[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"l\"\nkind = \"ldif\"\npath = \"x\"\nurl = \"ldap://x\"\n")
            .expect_err("url on ldif");
        assert!(err.to_string().contains("line 7, column 1") && err.to_string().contains("'url'"), "{err}");
    }

    #[test]
    fn sandbox_limits_default_to_granting_nothing_and_are_checked() {
        let base = "[[tenant]]\nid = \"a\"\n[[tenant.source]]\nname = \"l\"\nkind = \"ldif\"\npath = \"x\"\n";
        let c = parse(base).expect("parses");
        assert!(!c.tenants[0].limits.plugin_grant_clock, "clocks are not granted by default");
        assert_eq!(c.tenants[0].limits.plugin_output_max_kb, 4096);

        let c = parse(&format!("{base}[tenant.limits]\nplugin_grant_clock = true\nplugin_output_max_kb = 64\n"))
            .expect("parses");
        assert!(c.tenants[0].limits.plugin_grant_clock);
        assert_eq!(c.tenants[0].limits.plugin_output_max_kb, 64);

        let err = parse(&format!("{base}[tenant.limits]\nplugin_output_max_kb = 0\n")).expect_err("zero");
        assert!(err.to_string().contains("greater than 0"), "{err}");
        let c =
            parse(&format!("{base}[tenant.limits]\nplugin_memory_mb = {MAX_PLUGIN_MEMORY_MB}\n")).expect("at the max");
        assert_eq!(c.tenants[0].limits.plugin_memory_mb, MAX_PLUGIN_MEMORY_MB);
        let err = parse(&format!("{base}[tenant.limits]\nplugin_memory_mb = 1025\n")).expect_err("over the max");
        assert!(err.to_string().contains("plugin_memory_mb = 1025 is over the maximum of 1024 MiB"), "{err}");
        let err = parse(&format!("{base}[tenant.limits]\nplugin_grant_clock = \"yes\"\n")).expect_err("not a bool");
        assert!(err.to_string().contains("line 8") && err.to_string().contains("boolean"), "{err}");
    }
}
