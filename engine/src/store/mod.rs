//! The store: users, groups, memberships, runs, quarantine and per-source state.
//!
//! The pipeline talks to the [`Store`] trait only, so a second backend
//! (PostgreSQL) plugs in without touching it. Invariants every backend keeps:
//! - [`Store::apply`] writes a whole plan in one transaction, or nothing;
//! - an update applies only to the version it was planned against;
//! - quarantine and run records are kept even when a run is aborted.

mod common;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;

use serde::Serialize;

use crate::config::{Config, StoreLocation};

use crate::diff::Snapshot;
use crate::model::Stored;
use crate::plan::Plan;
use crate::source::EntryKind;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {path}: {message}")]
    Open { path: String, message: String },
    #[error("store: {context}: {message}")]
    Query { context: &'static str, message: String },
    #[error("store: '{label}' ({id}) changed since the plan was made (expected version {expected}); run again")]
    Conflict { id: String, label: String, expected: i64 },
    #[error("store: tenant '{tenant}' has no {kind} plugin version {version}")]
    NoSuchPlugin { tenant: String, kind: String, version: i64 },
    #[error("store: stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store: node '{node}' no longer holds the lease on {resource}; another node took it over")]
    LeaseLost { node: String, resource: String },
}

/// One entry that could not be synced, kept for an admin to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineItem {
    pub source: String,
    pub anchor: Option<String>,
    pub kind: Option<EntryKind>,
    pub dn: Option<String>,
    /// Pipeline stage: `read`, `map`, `resolve`.
    pub stage: String,
    pub reason: String,
    /// `name version (sha256:…)` when a plugin was involved.
    pub plugin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineRecord {
    #[serde(flatten)]
    pub item: QuarantineItem,
    pub first_seen: String,
    pub last_seen: String,
    pub run_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub tenant: String,
    pub trigger: String,
    pub dry_run: bool,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub summary: serde_json::Value,
}

/// What a finished run records.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// `applied`, `no-changes`, `dry-run`, `blocked`, `aborted`, `failed`, `partial`.
    pub status: String,
    pub summary: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ApplyStats {
    pub rows_written: u64,
}

/// One uploaded plugin version in a tenant's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRecord {
    pub tenant: String,
    /// Plugin kind (`mapper`, …).
    pub kind: String,
    /// Registry version: 1, 2, … per tenant and kind.
    pub version: i64,
    pub sha256: String,
    /// Name and version the plugin reports about itself.
    pub name: String,
    pub plugin_version: String,
    pub size: u64,
    pub added_at: String,
    pub added_by: String,
    pub active: bool,
}

/// How a tenant's plugin has been doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginHealth {
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Set once the plugin has failed too many runs in a row.
    pub disabled_at: Option<String>,
}

/// An attribute the application changed through Roster (`roster users edit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppEdit {
    pub object_id: String,
    pub attribute: String,
    /// The stored (directory) value the edit replaced.
    pub base: Vec<String>,
    /// The application's value.
    pub value: Vec<String>,
    pub recorded_at: String,
    pub recorded_by: String,
}

/// One event of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub object_id: String,
    pub object_kind: String,
    pub version: i64,
    pub idempotency_key: String,
    pub run_id: i64,
    pub created_at: String,
    /// The event as delivered: type, sequence, key, object, changes.
    pub payload: serde_json::Value,
}

/// What the pipeline last made of one object's source entry (see
/// `mapping::memo`): digests only, never the entry or its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoRow {
    /// Digest of the entry as read, with everything else the mapping depends on.
    pub input: MemoDigest,
    /// Digest of the attributes the mapping stages produced from it.
    pub output: MemoDigest,
}

/// The first 16 bytes of a SHA-256, stored as 32 hex digits. Held as bytes:
/// a full read holds a row per object, and as two hex strings they were
/// 112 bytes of it instead of 32.
pub type MemoDigest = [u8; 16];

impl MemoRow {
    /// From the stored text; `None` if it is not two digests (such a row is
    /// then not recalled: its entry is mapped again, and the row rewritten).
    pub fn from_hex(input: &str, output: &str) -> Option<Self> {
        let mut row = MemoRow { input: [0; 16], output: [0; 16] };
        hex::decode_to_slice(input, &mut row.input).ok()?;
        hex::decode_to_slice(output, &mut row.output).ok()?;
        Some(row)
    }

    pub fn input_hex(&self) -> String {
        hex::encode(self.input)
    }

    pub fn output_hex(&self) -> String {
        hex::encode(self.output)
    }
}

/// Where a webhook endpoint's delivery stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookState {
    pub delivered_seq: i64,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub tenants: Vec<String>,
    pub role: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// One record of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub tenant: String,
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// A stored membership with its member's lookup keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey {
    pub group_id: String,
    pub member_id: String,
    /// The member's DN as stored, and normalised (`dn::normalize_dn`).
    pub dn: Option<String>,
    pub dn_key: Option<String>,
    pub anchor: String,
}

/// Which end of a membership a lookup matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipEnd {
    Group,
    Member,
}

/// Which of a source's quarantined entries a run settles: those it does not
/// list again leave quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// A complete full read: every earlier entry of the source.
    All,
    /// An incremental read: the entries with these anchors, the only ones it
    /// read (or saw deleted). The others' problems were not looked at again.
    Anchors(Vec<String>),
    /// An incomplete read settles nothing.
    Nothing,
}

/// Who works on a resource (`source:<tenant>/<source>`, `webhook:…`), until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    pub resource: String,
    pub owner: String,
    /// Milliseconds since the epoch, by the store's clock.
    pub acquired_at: i64,
    pub renewed_at: i64,
    pub expires_at: i64,
    /// Whether it had run out when it was read.
    pub expired: bool,
}

/// A `roster serve` process sharing the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    pub node: String,
    /// What the node says about itself (host, pid, API address).
    pub info: String,
    pub started_at: i64,
    pub seen_at: i64,
    /// Seen within the liveness window asked for.
    pub alive: bool,
}

/// The leases a write must still hold: a node that lost a lease (it stalled
/// past the expiry and another node took over) must not apply a plan or move a
/// cookie on. Set with [`Store::set_fence`]; checked inside the write's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub node: String,
    pub resources: Vec<String>,
}

pub trait Store {
    /// Creates the tenant row if it does not exist.
    fn ensure_tenant(&mut self, tenant: &str) -> Result<(), StoreError>;

    /// Everything stored for one source of a tenant.
    fn snapshot(&mut self, tenant: &str, source: &str) -> Result<Snapshot, StoreError>;

    /// The anchors of a source's stored objects, by kind: what a realtime
    /// refresh compares its present list with, without loading the objects.
    fn source_anchors(
        &mut self,
        tenant: &str,
        source: &str,
    ) -> Result<std::collections::BTreeMap<EntryKind, std::collections::BTreeSet<String>>, StoreError>;

    // What an incremental run loads instead of the whole snapshot: the stored
    // objects and memberships around the changed ones (see `sync::neighborhood`).
    // Ids, anchors and keys are looked up in batches; unknown ones are simply absent.

    /// Objects of the source with these ids.
    fn objects_by_ids(&mut self, tenant: &str, source: &str, ids: &[String]) -> Result<Vec<Stored>, StoreError>;
    /// Objects of the source with these anchors (either kind).
    fn objects_by_anchors(&mut self, tenant: &str, source: &str, anchors: &[String])
    -> Result<Vec<Stored>, StoreError>;
    /// Objects of the source whose DN normalizes (`dn::normalize_dn`) to one of `keys`.
    fn objects_by_dn_keys(&mut self, tenant: &str, source: &str, keys: &[String]) -> Result<Vec<Stored>, StoreError>;
    /// Users of the source whose `userName`, lower-cased, is one of `keys`.
    fn users_by_user_name_keys(
        &mut self,
        tenant: &str,
        source: &str,
        keys: &[String],
    ) -> Result<Vec<Stored>, StoreError>;
    /// Direct memberships (group id, member id) of the source whose group
    /// (`MembershipEnd::Group`) or member is one of `ids`.
    fn memberships_touching(
        &mut self,
        tenant: &str,
        source: &str,
        ids: &[String],
        end: MembershipEnd,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// The stored members of these groups with their lookup keys: what a
    /// changed group's member list is compared with, without loading the members.
    fn member_keys(&mut self, tenant: &str, source: &str, group_ids: &[String]) -> Result<Vec<MemberKey>, StoreError>;
    /// How many objects the source has stored (what guard-rail percentages are of).
    fn object_count(&mut self, tenant: &str, source: &str) -> Result<u64, StoreError>;

    fn begin_run(&mut self, tenant: &str, trigger: &str, dry_run: bool) -> Result<i64, StoreError>;
    fn finish_run(&mut self, run_id: i64, outcome: &RunOutcome) -> Result<(), StoreError>;
    fn runs(&mut self, tenant: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    /// One run of the tenant.
    fn run(&mut self, tenant: &str, id: i64) -> Result<Option<RunRecord>, StoreError>;
    /// Marks a blocked run as approved by `run_id` (the run that applied it),
    /// so it cannot be approved twice. `false`: it was not blocked.
    fn mark_run_approved(&mut self, blocked_run: i64, by_run: i64) -> Result<bool, StoreError>;

    /// Applies a plan atomically.
    fn apply(&mut self, plan: &Plan, run_id: i64) -> Result<ApplyStats, StoreError>;

    /// Records the entries a run could not sync; `settled` says which of the
    /// source's earlier entries leave quarantine (they synced this time).
    fn record_quarantine(
        &mut self,
        tenant: &str,
        source: &str,
        run_id: i64,
        items: &[QuarantineItem],
        settled: &Settled,
    ) -> Result<(), StoreError>;
    fn quarantine(&mut self, tenant: &str) -> Result<Vec<QuarantineRecord>, StoreError>;

    fn users(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError>;
    fn groups(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError>;
    /// Direct memberships of a tenant: (group id, member id).
    fn memberships(&mut self, tenant: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Stores a plugin version; returns its registry version number.
    fn add_plugin(&mut self, record: &PluginRecord, wasm: &[u8]) -> Result<i64, StoreError>;
    fn plugins(&mut self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError>;
    /// Makes `version` the one the tenant runs (also a rollback).
    fn activate_plugin(&mut self, tenant: &str, kind: &str, version: i64) -> Result<(), StoreError>;
    /// The active plugin of a kind, with its bytes.
    fn active_plugin(&mut self, tenant: &str, kind: &str) -> Result<Option<(PluginRecord, Vec<u8>)>, StoreError>;

    fn plugin_health(&mut self, tenant: &str, kind: &str, sha256: &str) -> Result<PluginHealth, StoreError>;
    /// Records a run's outcome for a plugin: a failure counts up (and disables
    /// the plugin at `disable_after`), a success resets the count.
    fn record_plugin_run(
        &mut self,
        tenant: &str,
        kind: &str,
        sha256: &str,
        error: Option<&str>,
        disable_after: u32,
    ) -> Result<PluginHealth, StoreError>;
    /// Clears the failure count and the disabled state of every version of a kind.
    fn enable_plugin(&mut self, tenant: &str, kind: &str) -> Result<(), StoreError>;

    /// Admin decisions for conflicts: (key, lower-cased value) → winning anchor.
    fn conflict_decisions(&mut self, tenant: &str) -> Result<Vec<(String, String, String)>, StoreError>;
    fn decide_conflict(&mut self, tenant: &str, key: &str, value: &str, winner: &str) -> Result<(), StoreError>;
    /// Appends to the audit trail (`kind`: run, change, admin, security, plugin…).
    fn audit(&mut self, tenant: &str, kind: &str, actor: &str, detail: &serde_json::Value) -> Result<(), StoreError>;

    /// Keeps the raw source attributes of objects a run read (`(object id,
    /// JSON)`; unchanged rows are not rewritten), then drops the rows of
    /// objects the tenant no longer has.
    fn put_raw_attributes(&mut self, tenant: &str, source: &str, rows: &[(String, String)]) -> Result<(), StoreError>;
    /// Deletes all of a tenant's raw attributes (the option is off).
    fn clear_raw_attributes(&mut self, tenant: &str) -> Result<usize, StoreError>;
    /// The mapping memo of one source: object id → what its entry was mapped from and to.
    fn map_memo(&mut self, tenant: &str, source: &str) -> Result<HashMap<String, MemoRow>, StoreError>;
    /// Records memo rows (upserts by object id) and drops those of `removed`
    /// ids. A cache of a pure function: any state of it is consistent.
    fn put_map_memo(
        &mut self,
        tenant: &str,
        source: &str,
        rows: &[(String, MemoRow)],
        removed: &[String],
    ) -> Result<(), StoreError>;
    /// The raw source attributes kept for an object, and when they were read.
    fn raw_attributes(&mut self, tenant: &str, object_id: &str) -> Result<Option<(String, String)>, StoreError>;
    /// Audit records of a tenant (all tenants: `None`) at or after `since`, in order.
    fn audit_records(&mut self, tenant: Option<&str>, since: Option<&str>) -> Result<Vec<AuditRecord>, StoreError>;
    /// Recomputes every tenant's chain; `Err` names the first bad record.
    fn audit_verify(&mut self) -> Result<u64, String>;
    /// Drops a tenant's records older than `before` (retention), keeping the
    /// rest verifiable; returns how many went.
    fn audit_prune(&mut self, tenant: &str, before: &str) -> Result<u64, StoreError>;
    fn add_token(&mut self, token: &TokenRecord, hash: &str) -> Result<(), StoreError>;
    fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError>;
    /// The live token with this hash (not revoked; expiry is the caller's check).
    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn revoke_token(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Events after `after`, in order, at most `limit`.
    fn events(&mut self, tenant: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError>;
    /// Drops events created before `before` (RFC 3339); sequence numbers are never reused.
    fn prune_events(&mut self, tenant: &str, before: &str) -> Result<usize, StoreError>;
    fn webhook_state(&mut self, tenant: &str, endpoint: &str) -> Result<WebhookState, StoreError>;
    fn set_webhook_state(&mut self, tenant: &str, endpoint: &str, state: &WebhookState) -> Result<(), StoreError>;
    fn dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64, error: &str) -> Result<(), StoreError>;
    fn dead_letters(&mut self, tenant: &str, endpoint: &str) -> Result<Vec<(i64, String)>, StoreError>;
    fn clear_dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64) -> Result<(), StoreError>;
    /// Records (or replaces) the application's value of one attribute.
    fn record_app_edit(&mut self, tenant: &str, edit: &AppEdit) -> Result<(), StoreError>;
    fn app_edits(&mut self, tenant: &str) -> Result<Vec<AppEdit>, StoreError>;
    /// Clears or rebases app edits after a run applied (see `conflict::EditAction`).
    fn settle_app_edits(&mut self, tenant: &str, actions: &[crate::conflict::EditAction]) -> Result<(), StoreError>;
    /// Removes quarantine records of an anchor (an admin dismissed them); returns how many.
    fn dismiss_quarantine(&mut self, tenant: &str, anchor: &str) -> Result<usize, StoreError>;

    fn source_state(&mut self, tenant: &str, source: &str, key: &str) -> Result<Option<String>, StoreError>;
    /// Every state key of a source (an incremental source's high-water mark, …).
    fn source_states(
        &mut self,
        tenant: &str,
        source: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError>;
    fn set_source_state(&mut self, tenant: &str, source: &str, key: &str, value: &str) -> Result<(), StoreError>;

    // Leases (`serve::cluster`): several `roster serve` nodes on one store
    // share the work, each resource done by one node at a time.

    /// Takes `resource` for `node` for `ttl_ms`, or renews it, if it is free,
    /// run out or already the node's. Returns whether the node holds it now.
    fn claim_lease(&mut self, resource: &str, node: &str, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Gives a lease up (a clean stop, or a rebalance), if the node holds it.
    fn release_lease(&mut self, resource: &str, node: &str) -> Result<(), StoreError>;
    fn leases(&mut self) -> Result<Vec<LeaseRecord>, StoreError>;
    /// Records that `node` is alive.
    fn node_heartbeat(&mut self, node: &str, info: &str) -> Result<(), StoreError>;
    /// Every node that ever beat, `alive` when seen within `alive_ms`.
    fn nodes(&mut self, alive_ms: i64) -> Result<Vec<NodeRecord>, StoreError>;
    /// Forgets a node (it stopped cleanly).
    fn remove_node(&mut self, node: &str) -> Result<(), StoreError>;
    /// Makes `apply` and `set_source_state` fail with [`StoreError::LeaseLost`]
    /// unless these leases are still held; `None` lifts the check.
    fn set_fence(&mut self, fence: Option<Fence>);
}

/// A store of either backend, as the commands, `serve` and the API hold it.
pub type BoxStore = Box<dyn Store + Send>;

/// Opens (creating and migrating if needed) the store the configuration names:
/// PostgreSQL with `[store] url` (or `ROSTER_STORE_URL`), else SQLite in the data directory.
pub fn open(config: &Config) -> Result<BoxStore, StoreError> {
    match config.store_location() {
        StoreLocation::Sqlite(dir) => Ok(Box::new(sqlite::SqliteStore::open(&dir)?)),
        StoreLocation::Postgres { url, password, ca_file } => {
            let password = match password {
                Some(r) => Some(r.resolve(&config.base_dir).map_err(|e| StoreError::Open {
                    path: postgres::redacted(&url),
                    message: format!("[store] password: {e}"),
                })?),
                None => None,
            };
            Ok(Box::new(postgres::PgStore::open_target(postgres::PgTarget { url, password, ca_file })?))
        }
    }
}

/// Whether the configured store already exists (a check must not create one).
pub fn exists(config: &Config) -> bool {
    match config.store_location() {
        StoreLocation::Sqlite(dir) => dir.join(sqlite::DB_FILE).is_file(),
        StoreLocation::Postgres { .. } => true,
    }
}

/// A boxed store is a store: the commands, `serve` and the API hold one of
/// either backend behind [`BoxStore`].
impl<S: Store + ?Sized> Store for Box<S> {
    fn ensure_tenant(&mut self, tenant: &str) -> Result<(), StoreError> {
        (**self).ensure_tenant(tenant)
    }
    fn snapshot(&mut self, tenant: &str, source: &str) -> Result<Snapshot, StoreError> {
        (**self).snapshot(tenant, source)
    }
    fn source_anchors(
        &mut self,
        tenant: &str,
        source: &str,
    ) -> Result<std::collections::BTreeMap<EntryKind, std::collections::BTreeSet<String>>, StoreError> {
        (**self).source_anchors(tenant, source)
    }
    fn objects_by_ids(&mut self, tenant: &str, source: &str, ids: &[String]) -> Result<Vec<Stored>, StoreError> {
        (**self).objects_by_ids(tenant, source, ids)
    }
    fn objects_by_anchors(
        &mut self,
        tenant: &str,
        source: &str,
        anchors: &[String],
    ) -> Result<Vec<Stored>, StoreError> {
        (**self).objects_by_anchors(tenant, source, anchors)
    }
    fn objects_by_dn_keys(&mut self, tenant: &str, source: &str, keys: &[String]) -> Result<Vec<Stored>, StoreError> {
        (**self).objects_by_dn_keys(tenant, source, keys)
    }
    fn users_by_user_name_keys(
        &mut self,
        tenant: &str,
        source: &str,
        keys: &[String],
    ) -> Result<Vec<Stored>, StoreError> {
        (**self).users_by_user_name_keys(tenant, source, keys)
    }
    fn memberships_touching(
        &mut self,
        tenant: &str,
        source: &str,
        ids: &[String],
        end: MembershipEnd,
    ) -> Result<Vec<(String, String)>, StoreError> {
        (**self).memberships_touching(tenant, source, ids, end)
    }
    fn member_keys(&mut self, tenant: &str, source: &str, group_ids: &[String]) -> Result<Vec<MemberKey>, StoreError> {
        (**self).member_keys(tenant, source, group_ids)
    }
    fn object_count(&mut self, tenant: &str, source: &str) -> Result<u64, StoreError> {
        (**self).object_count(tenant, source)
    }
    fn begin_run(&mut self, tenant: &str, trigger: &str, dry_run: bool) -> Result<i64, StoreError> {
        (**self).begin_run(tenant, trigger, dry_run)
    }
    fn finish_run(&mut self, run_id: i64, outcome: &RunOutcome) -> Result<(), StoreError> {
        (**self).finish_run(run_id, outcome)
    }
    fn runs(&mut self, tenant: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        (**self).runs(tenant, limit)
    }
    fn run(&mut self, tenant: &str, id: i64) -> Result<Option<RunRecord>, StoreError> {
        (**self).run(tenant, id)
    }
    fn mark_run_approved(&mut self, blocked_run: i64, by_run: i64) -> Result<bool, StoreError> {
        (**self).mark_run_approved(blocked_run, by_run)
    }
    fn apply(&mut self, plan: &Plan, run_id: i64) -> Result<ApplyStats, StoreError> {
        (**self).apply(plan, run_id)
    }
    fn record_quarantine(
        &mut self,
        tenant: &str,
        source: &str,
        run_id: i64,
        items: &[QuarantineItem],
        settled: &Settled,
    ) -> Result<(), StoreError> {
        (**self).record_quarantine(tenant, source, run_id, items, settled)
    }
    fn quarantine(&mut self, tenant: &str) -> Result<Vec<QuarantineRecord>, StoreError> {
        (**self).quarantine(tenant)
    }
    fn users(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError> {
        (**self).users(tenant)
    }
    fn groups(&mut self, tenant: &str) -> Result<Vec<Stored>, StoreError> {
        (**self).groups(tenant)
    }
    fn memberships(&mut self, tenant: &str) -> Result<Vec<(String, String)>, StoreError> {
        (**self).memberships(tenant)
    }
    fn add_plugin(&mut self, record: &PluginRecord, wasm: &[u8]) -> Result<i64, StoreError> {
        (**self).add_plugin(record, wasm)
    }
    fn plugins(&mut self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        (**self).plugins(tenant)
    }
    fn activate_plugin(&mut self, tenant: &str, kind: &str, version: i64) -> Result<(), StoreError> {
        (**self).activate_plugin(tenant, kind, version)
    }
    fn active_plugin(&mut self, tenant: &str, kind: &str) -> Result<Option<(PluginRecord, Vec<u8>)>, StoreError> {
        (**self).active_plugin(tenant, kind)
    }
    fn plugin_health(&mut self, tenant: &str, kind: &str, sha256: &str) -> Result<PluginHealth, StoreError> {
        (**self).plugin_health(tenant, kind, sha256)
    }
    fn record_plugin_run(
        &mut self,
        tenant: &str,
        kind: &str,
        sha256: &str,
        error: Option<&str>,
        disable_after: u32,
    ) -> Result<PluginHealth, StoreError> {
        (**self).record_plugin_run(tenant, kind, sha256, error, disable_after)
    }
    fn enable_plugin(&mut self, tenant: &str, kind: &str) -> Result<(), StoreError> {
        (**self).enable_plugin(tenant, kind)
    }
    fn conflict_decisions(&mut self, tenant: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        (**self).conflict_decisions(tenant)
    }
    fn decide_conflict(&mut self, tenant: &str, key: &str, value: &str, winner: &str) -> Result<(), StoreError> {
        (**self).decide_conflict(tenant, key, value, winner)
    }
    fn audit(&mut self, tenant: &str, kind: &str, actor: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        (**self).audit(tenant, kind, actor, detail)
    }
    fn put_raw_attributes(&mut self, tenant: &str, source: &str, rows: &[(String, String)]) -> Result<(), StoreError> {
        (**self).put_raw_attributes(tenant, source, rows)
    }
    fn clear_raw_attributes(&mut self, tenant: &str) -> Result<usize, StoreError> {
        (**self).clear_raw_attributes(tenant)
    }
    fn map_memo(&mut self, tenant: &str, source: &str) -> Result<HashMap<String, MemoRow>, StoreError> {
        (**self).map_memo(tenant, source)
    }
    fn put_map_memo(
        &mut self,
        tenant: &str,
        source: &str,
        rows: &[(String, MemoRow)],
        removed: &[String],
    ) -> Result<(), StoreError> {
        (**self).put_map_memo(tenant, source, rows, removed)
    }
    fn raw_attributes(&mut self, tenant: &str, object_id: &str) -> Result<Option<(String, String)>, StoreError> {
        (**self).raw_attributes(tenant, object_id)
    }
    fn audit_records(&mut self, tenant: Option<&str>, since: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        (**self).audit_records(tenant, since)
    }
    fn audit_verify(&mut self) -> Result<u64, String> {
        (**self).audit_verify()
    }
    fn audit_prune(&mut self, tenant: &str, before: &str) -> Result<u64, StoreError> {
        (**self).audit_prune(tenant, before)
    }
    fn add_token(&mut self, token: &TokenRecord, hash: &str) -> Result<(), StoreError> {
        (**self).add_token(token, hash)
    }
    fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        (**self).tokens()
    }
    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        (**self).token_by_hash(hash)
    }
    fn revoke_token(&mut self, id: &str) -> Result<bool, StoreError> {
        (**self).revoke_token(id)
    }
    fn events(&mut self, tenant: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        (**self).events(tenant, after, limit)
    }
    fn prune_events(&mut self, tenant: &str, before: &str) -> Result<usize, StoreError> {
        (**self).prune_events(tenant, before)
    }
    fn webhook_state(&mut self, tenant: &str, endpoint: &str) -> Result<WebhookState, StoreError> {
        (**self).webhook_state(tenant, endpoint)
    }
    fn set_webhook_state(&mut self, tenant: &str, endpoint: &str, state: &WebhookState) -> Result<(), StoreError> {
        (**self).set_webhook_state(tenant, endpoint, state)
    }
    fn dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64, error: &str) -> Result<(), StoreError> {
        (**self).dead_letter(tenant, endpoint, seq, error)
    }
    fn dead_letters(&mut self, tenant: &str, endpoint: &str) -> Result<Vec<(i64, String)>, StoreError> {
        (**self).dead_letters(tenant, endpoint)
    }
    fn clear_dead_letter(&mut self, tenant: &str, endpoint: &str, seq: i64) -> Result<(), StoreError> {
        (**self).clear_dead_letter(tenant, endpoint, seq)
    }
    fn record_app_edit(&mut self, tenant: &str, edit: &AppEdit) -> Result<(), StoreError> {
        (**self).record_app_edit(tenant, edit)
    }
    fn app_edits(&mut self, tenant: &str) -> Result<Vec<AppEdit>, StoreError> {
        (**self).app_edits(tenant)
    }
    fn settle_app_edits(&mut self, tenant: &str, actions: &[crate::conflict::EditAction]) -> Result<(), StoreError> {
        (**self).settle_app_edits(tenant, actions)
    }
    fn dismiss_quarantine(&mut self, tenant: &str, anchor: &str) -> Result<usize, StoreError> {
        (**self).dismiss_quarantine(tenant, anchor)
    }
    fn source_state(&mut self, tenant: &str, source: &str, key: &str) -> Result<Option<String>, StoreError> {
        (**self).source_state(tenant, source, key)
    }
    fn source_states(
        &mut self,
        tenant: &str,
        source: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        (**self).source_states(tenant, source)
    }
    fn set_source_state(&mut self, tenant: &str, source: &str, key: &str, value: &str) -> Result<(), StoreError> {
        (**self).set_source_state(tenant, source, key, value)
    }
    fn claim_lease(&mut self, resource: &str, node: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        (**self).claim_lease(resource, node, ttl_ms)
    }
    fn release_lease(&mut self, resource: &str, node: &str) -> Result<(), StoreError> {
        (**self).release_lease(resource, node)
    }
    fn leases(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        (**self).leases()
    }
    fn node_heartbeat(&mut self, node: &str, info: &str) -> Result<(), StoreError> {
        (**self).node_heartbeat(node, info)
    }
    fn nodes(&mut self, alive_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
        (**self).nodes(alive_ms)
    }
    fn remove_node(&mut self, node: &str) -> Result<(), StoreError> {
        (**self).remove_node(node)
    }
    fn set_fence(&mut self, fence: Option<Fence>) {
        (**self).set_fence(fence)
    }
}
