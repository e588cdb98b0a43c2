//! One tenant's instance of a plugin, of any kind: its own store, memory and
//! deadline, and the typed calls of each world.

use std::sync::Arc;

use roster_wire::{Attrs, Packer};
use wasmtime::{Store, Trap};

use super::bindings::{self, wit};
use super::sandbox::{HostState, SandboxLimits, WaitPastDeadline};
use super::{
    CallFailure, KindPre, LoadedPlugin, PluginConfigError, PluginError, PluginHost, PluginIdentity, PluginKind,
    deadline_ticks,
};
use crate::model::Attributes;
use crate::source::{EntryKind, SourceEntry};

/// What the plugin made of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOutcome {
    Mapped { kind: EntryKind, attrs: Attributes },
    Skip(String),
    Error(String),
}

/// The type of a declared custom attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    String,
    Integer,
    Boolean,
    List,
    Timestamp,
}

/// A declared custom attribute, as the custom-attributes plugin is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDecl {
    pub name: String,
    pub ty: AttributeType,
    pub required: bool,
    pub multi_valued: bool,
}

/// A mapped user handed to the custom-attributes plugin.
pub struct MappedUserInput<'a> {
    pub entry: &'a SourceEntry,
    pub mapped: &'a Attributes,
}

/// A group some user of a role-assignment batch belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInput {
    pub anchor: String,
    pub dn: Option<String>,
    pub name: String,
}

/// A user and their groups: `(index into the batch's groups, depth)`.
pub struct UserGroupsInput<'a> {
    pub anchor: &'a str,
    pub attributes: &'a Attributes,
    pub groups: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleOutcome {
    Roles(Vec<String>),
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKindInput {
    DuplicateKey,
    SamePerson,
    AppEdit,
}

/// One side of a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub source: String,
    pub anchor: String,
    pub dn: Option<String>,
    pub attributes: Attributes,
    pub stored_since: Option<String>,
    pub chosen_by_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictInput {
    pub kind: ConflictKindInput,
    pub key: String,
    pub value: String,
    pub claimants: Vec<Claimant>,
}

/// A resolver's decision, as returned (the caller checks that it fits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionOutput {
    Keep(usize),
    Quarantine(String),
    Rename(Vec<String>),
    Merge { primary: usize, attributes: Attributes },
}

/// The live bindings of an instance, by world.
enum Live {
    MapperV0_1(bindings::v0_1_0::Mapper),
    Mapper(bindings::mapper::Mapper),
    CustomAttributes(bindings::custom_attributes::CustomAttributes),
    RoleAssigner(bindings::role_assigner::RoleAssigner),
    ConflictResolver(bindings::conflict_resolver::ConflictResolver),
    Connector(bindings::connector::Connector),
}

/// What a connector says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    pub name: String,
    pub version: String,
    /// `read-delta` works.
    pub delta: bool,
    /// JSON Schema of its configuration table ("" if none).
    pub config_schema: String,
}

/// An object a connector saw but could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorRejected {
    pub anchor: Option<String>,
    pub kind: Option<EntryKind>,
    pub reason: String,
}

/// One page of a connector's read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorPage {
    pub objects: Vec<SourceEntry>,
    pub rejected: Vec<ConnectorRejected>,
    pub deleted: Vec<String>,
    pub next_cursor: Option<String>,
    pub delta_token: Option<String>,
}

/// Why a connector's read failed, in its own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorReadError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("http: {0}")]
    Http(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("delta token expired: {0}")]
    TokenExpired(String),
}

/// What an instance has consumed so far, over every store it lived in (an
/// instance is rebuilt after a trap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Instructions executed (wasmtime fuel), when the host measures
    /// ([`PluginHost::measuring`]); `None` on a normal host, which does not count.
    pub fuel: Option<u64>,
    /// Largest size any one linear memory was allowed to grow to, in bytes.
    pub peak_memory_bytes: usize,
}

/// A live instance: its own store, memory and deadline. After a trap the
/// instance is dead (wasmtime refuses to re-enter it), so the next call builds
/// a fresh one from the pre-instantiated component and runs `init` again.
pub struct PluginInstance {
    loaded: Arc<LoadedPlugin>,
    engine: wasmtime::Engine,
    limits: SandboxLimits,
    config: wit::Config,
    /// Declared custom attributes, for a custom-attributes plugin's `init`.
    schema: Vec<wit::AttributeDecl>,
    identity: PluginIdentity,
    live: Option<(Store<HostState>, Live)>,
    packer: Packer,
    /// Fuel each store starts with, on a measuring host.
    fuel_budget: Option<u64>,
    /// Usage of stores already dropped.
    retired: Usage,
    /// Wall time spent inside the plugin's calls (for metrics and run records).
    busy: std::time::Duration,
    /// A connector's outbound HTTP policy, handed to every store it lives in.
    egress: Option<Arc<dyn super::Egress>>,
    /// A connector's `describe`, read when it is (re)instantiated.
    connector_info: Option<ConnectorInfo>,
}

impl PluginInstance {
    /// Instantiates the plugin for a tenant and runs its `init` with the config.
    pub fn new(
        host: &PluginHost,
        loaded: Arc<LoadedPlugin>,
        tenant: &str,
        limits: SandboxLimits,
        config: &toml::Table,
    ) -> Result<Self, PluginError> {
        Self::with_schema(host, loaded, tenant, limits, config, &[])
    }

    /// [`PluginInstance::new`] for a custom-attributes plugin, which is told
    /// the tenant's declared attributes.
    pub fn with_schema(
        host: &PluginHost,
        loaded: Arc<LoadedPlugin>,
        tenant: &str,
        limits: SandboxLimits,
        config: &toml::Table,
        schema: &[AttributeDecl],
    ) -> Result<Self, PluginError> {
        Self::build(host, loaded, tenant, limits, config, schema.iter().map(decl_to_wit).collect(), None)
    }

    /// A connector instance: `config` is the source's `[tenant.source.config]`
    /// table, and every request it makes goes through `egress`.
    pub fn connector(
        host: &PluginHost,
        loaded: Arc<LoadedPlugin>,
        tenant: &str,
        limits: SandboxLimits,
        config: &toml::Table,
        egress: Arc<dyn super::Egress>,
    ) -> Result<Self, PluginError> {
        Self::build(host, loaded, tenant, limits, config, Vec::new(), Some(egress))
    }

    fn build(
        host: &PluginHost,
        loaded: Arc<LoadedPlugin>,
        tenant: &str,
        limits: SandboxLimits,
        config: &toml::Table,
        schema: Vec<wit::AttributeDecl>,
        egress: Option<Arc<dyn super::Egress>>,
    ) -> Result<Self, PluginError> {
        let identity = PluginIdentity {
            tenant: tenant.to_string(),
            name: loaded.binary.name.clone(),
            version: "unknown".into(),
            hash: loaded.binary.hash.clone(),
        };
        let mut me = Self {
            loaded,
            engine: host.engine().clone(),
            limits,
            config: super::config::to_wit(config),
            schema,
            identity,
            live: None,
            packer: Packer::with_capacity(4096),
            fuel_budget: host.fuel_budget(),
            retired: Usage { fuel: host.fuel_budget().map(|_| 0), peak_memory_bytes: 0 },
            busy: std::time::Duration::ZERO,
            egress,
            connector_info: None,
        };
        me.revive()?;
        Ok(me)
    }

    /// What the connector said about itself (`None` for other kinds).
    pub fn connector_info(&self) -> Option<&ConnectorInfo> {
        self.connector_info.as_ref()
    }

    /// HTTP requests the instance sent through the host so far (live store only).
    pub fn http_requests(&self) -> u64 {
        self.live.as_ref().map(|(s, _)| s.data().http_requests).unwrap_or(0)
    }

    pub fn identity(&self) -> &PluginIdentity {
        &self.identity
    }

    pub fn kind(&self) -> PluginKind {
        self.loaded.kind
    }

    /// The `roster:plugin` version the plugin was built against.
    pub fn wit_version(&self) -> &str {
        &self.loaded.wit_version
    }

    /// Fuel and peak memory used so far, including instances discarded after a trap.
    /// Wall time spent inside this instance's calls so far.
    pub fn busy(&self) -> std::time::Duration {
        self.busy
    }

    pub fn usage(&self) -> Usage {
        let mut usage = self.retired;
        if let Some((store, _)) = &self.live {
            add_usage(&mut usage, store, self.fuel_budget);
        }
        usage
    }

    /// Books a store's usage before it is dropped.
    fn account(&mut self, store: &Store<HostState>) {
        add_usage(&mut self.retired, store, self.fuel_budget);
    }

    /// Drops the live instance (dead after a trap, or not to be trusted); the next call revives it.
    fn retire(&mut self) {
        if let Some((store, _)) = self.live.take() {
            self.account(&store);
        }
    }

    fn revive(&mut self) -> Result<(), PluginError> {
        let mut state = HostState::new(&self.identity.tenant, &self.identity.name, self.limits);
        state.egress = self.egress.clone();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        if let Some(budget) = self.fuel_budget {
            store.set_fuel(budget).map_err(|e| PluginError::Call {
                plugin: self.identity.clone(),
                failure: CallFailure::Trap { message: format!("cannot set the fuel budget: {e}") },
            })?;
        }
        arm_deadline(&mut store, self.limits);
        store.epoch_deadline_trap();
        let instantiated = match &self.loaded.pre {
            KindPre::MapperV0_1(pre) => pre.instantiate(&mut store).map(Live::MapperV0_1),
            KindPre::Mapper(pre) => pre.instantiate(&mut store).map(Live::Mapper),
            KindPre::CustomAttributes(pre) => pre.instantiate(&mut store).map(Live::CustomAttributes),
            KindPre::RoleAssigner(pre) => pre.instantiate(&mut store).map(Live::RoleAssigner),
            KindPre::ConflictResolver(pre) => pre.instantiate(&mut store).map(Live::ConflictResolver),
            KindPre::Connector(pre) => pre.instantiate(&mut store).map(Live::Connector),
        };
        let bindings = match instantiated {
            Ok(b) => b,
            Err(e) => return Err(self.failed(&e, &store)),
        };
        arm_deadline(&mut store, self.limits);
        let init = match &bindings {
            Live::MapperV0_1(b) => b.call_init(&mut store, &self.config),
            Live::Mapper(b) => b.call_init(&mut store, &self.config),
            Live::CustomAttributes(b) => b.call_init(&mut store, &self.config, &self.schema),
            Live::RoleAssigner(b) => b.call_init(&mut store, &self.config),
            Live::ConflictResolver(b) => b.call_init(&mut store, &self.config),
            Live::Connector(b) => match b.call_describe(&mut store) {
                Ok(info) => {
                    let plugin_info = wit::PluginInfo { name: info.name.clone(), version: info.version.clone() };
                    self.connector_info = Some(ConnectorInfo {
                        name: info.name,
                        version: info.version,
                        delta: info.capabilities.delta,
                        config_schema: info.config_schema,
                    });
                    arm_deadline(&mut store, self.limits);
                    b.call_init(&mut store, &self.config).map(|r| r.map(|()| plugin_info))
                }
                Err(e) => Err(e),
            },
        };
        let init = match init {
            Ok(init) => init,
            Err(e) => return Err(self.failed(&e, &store)),
        };
        match init {
            Ok(info) => {
                self.identity.name = info.name;
                self.identity.version = info.version;
            }
            Err(errors) => {
                self.account(&store);
                return Err(PluginError::Config {
                    plugin: self.identity.clone(),
                    errors: errors
                        .into_iter()
                        .map(|e| PluginConfigError { key: e.key, position: e.position, message: e.message })
                        .collect(),
                });
            }
        }
        self.live = Some((store, bindings));
        Ok(())
    }

    /// The error for a failed instantiate or `init`, after booking the dying store's usage.
    fn failed(&mut self, e: &wasmtime::Error, store: &Store<HostState>) -> PluginError {
        let failure = classify(e, store, self.limits);
        self.account(store);
        PluginError::Call { plugin: self.identity.clone(), failure }
    }

    /// Runs one call against the live instance (reviving it first if a trap
    /// killed it), under the call deadline and log cap. `f` answers `None`
    /// when the instance is not of the kind the call needs.
    fn call<R>(
        &mut self,
        wanted: PluginKind,
        f: impl FnOnce(&Live, &mut Store<HostState>) -> Option<wasmtime::Result<R>>,
    ) -> Result<R, PluginError> {
        if self.live.is_none() {
            self.revive()?;
        }
        let Some((store, bindings)) = self.live.as_mut() else {
            return Err(self.bad_output("instance unavailable".into()));
        };
        arm_deadline(store, self.limits);
        store.data_mut().logs_this_call = 0;
        let started = std::time::Instant::now();
        let result = f(bindings, store);
        self.busy += started.elapsed();
        let dropped = std::mem::take(&mut store.data_mut().logs_dropped);
        if dropped > 0 {
            tracing::warn!(tenant = %self.identity.tenant, plugin = %self.identity.name, dropped, "plugin log lines over the per-call cap were dropped");
        }
        match result {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => {
                let failure = classify(&e, store, self.limits);
                // The instance is dead after a trap; drop it so the next call starts fresh.
                self.retire();
                Err(PluginError::Call { plugin: self.identity.clone(), failure })
            }
            None => Err(self.bad_output(format!("it is a {} plugin, not a {wanted} plugin", self.loaded.kind))),
        }
    }

    /// A contract violation: the instance is dropped (it may hold on to whatever it built).
    fn bad_output(&mut self, message: String) -> PluginError {
        self.retire();
        PluginError::Call { plugin: self.identity.clone(), failure: CallFailure::BadOutput { message } }
    }

    /// Checks a call's result count and size before anything is decoded.
    fn check_output(&mut self, got: usize, want: usize, what: &str, bytes: usize) -> Result<(), PluginError> {
        if got != want {
            return Err(self.bad_output(format!("{got} results for a batch of {want} {what}")));
        }
        if bytes > self.limits.output_max_bytes {
            return Err(self.bad_output(format!(
                "returned {} KiB, over the limit of {} KiB",
                bytes.div_ceil(1024),
                self.limits.output_max_bytes / 1024
            )));
        }
        Ok(())
    }

    /// One page of a full read (`cursor` `None` first).
    pub fn read_page(
        &mut self,
        cursor: Option<&str>,
    ) -> Result<Result<ConnectorPage, ConnectorReadError>, PluginError> {
        let result = self.call(PluginKind::Connector, |live, store| match live {
            Live::Connector(b) => Some(b.call_read(store, cursor)),
            _ => None,
        })?;
        self.connector_page(result)
    }

    /// One page of an incremental read from `token`.
    pub fn read_delta_page(
        &mut self,
        token: &str,
        cursor: Option<&str>,
    ) -> Result<Result<ConnectorPage, ConnectorReadError>, PluginError> {
        let result = self.call(PluginKind::Connector, |live, store| match live {
            Live::Connector(b) => Some(b.call_read_delta(store, token, cursor)),
            _ => None,
        })?;
        self.connector_page(result)
    }

    /// The connector's own check, for `roster source test`.
    pub fn check_connector(&mut self) -> Result<Result<String, ConnectorReadError>, PluginError> {
        let result = self.call(PluginKind::Connector, |live, store| match live {
            Live::Connector(b) => Some(b.call_check(store)),
            _ => None,
        })?;
        Ok(result.map_err(read_error_from_wit))
    }

    /// A page as the host's types, after the same output cap as every call.
    fn connector_page(
        &mut self,
        result: Result<
            bindings::connector::roster::plugin::connector_types::Page,
            bindings::connector::roster::plugin::connector_types::ReadError,
        >,
    ) -> Result<Result<ConnectorPage, ConnectorReadError>, PluginError> {
        let page = match result {
            Ok(p) => p,
            Err(e) => return Ok(Err(read_error_from_wit(e))),
        };
        let bytes = page
            .objects
            .iter()
            .map(|o| o.anchor.len() + o.attributes.len() + o.members.iter().map(String::len).sum::<usize>())
            .chain(page.rejected.iter().map(|r| r.reason.len()))
            .chain(page.deleted.iter().map(String::len))
            .fold(0, usize::saturating_add);
        self.check_output(0, 0, "objects", bytes)?;
        let mut objects = Vec::with_capacity(page.objects.len());
        let mut rejected: Vec<ConnectorRejected> = page
            .rejected
            .into_iter()
            .map(|r| ConnectorRejected { anchor: r.anchor, kind: r.kind.map(kind_from_wit), reason: r.reason })
            .collect();
        for o in page.objects {
            let kind = kind_from_wit(o.kind);
            if o.anchor.is_empty() {
                rejected.push(ConnectorRejected {
                    anchor: None,
                    kind: Some(kind),
                    reason: "the connector returned an object without an anchor".into(),
                });
                continue;
            }
            match decode_raw(&o.attributes) {
                Ok(attrs) => objects.push(SourceEntry {
                    anchor: o.anchor,
                    dn: o.dn,
                    kind,
                    attrs,
                    members: o.members.into_iter().map(crate::source::MemberRef::Anchor).collect(),
                }),
                Err(why) => rejected.push(ConnectorRejected {
                    anchor: Some(o.anchor),
                    kind: Some(kind),
                    reason: format!("the connector returned malformed attributes: {why}"),
                }),
            }
        }
        Ok(Ok(ConnectorPage {
            objects,
            rejected,
            deleted: page.deleted,
            next_cursor: page.next_cursor,
            delta_token: page.delta_token,
        }))
    }

    /// Maps a batch. `Err` means the whole call failed (trap, deadline, memory,
    /// malformed output); the caller decides whether to retry entries one by one.
    pub fn map_batch(&mut self, entries: &[&SourceEntry]) -> Result<Vec<MapOutcome>, PluginError> {
        let wit_entries: Vec<wit::Entry> = entries.iter().map(|e| self.to_wit(e)).collect();
        let results = self.call(PluginKind::Mapper, |live, store| match live {
            Live::Mapper(b) => Some(b.call_map(store, &wit_entries)),
            Live::MapperV0_1(b) => Some(b.call_map(store, &wit_entries)),
            _ => None,
        })?;
        self.check_output(results.len(), entries.len(), "entries", output_bytes(&results))?;
        Ok(results.into_iter().map(from_wit).collect())
    }

    /// Custom attributes for a batch of mapped users: declared name → values,
    /// or the plugin's error, per user.
    pub fn compute(&mut self, users: &[MappedUserInput<'_>]) -> Result<Vec<Result<Attributes, String>>, PluginError> {
        let wit_users: Vec<wit::MappedUser> = users
            .iter()
            .map(|u| {
                let entry = self.to_wit(u.entry);
                wit::MappedUser { entry, mapped: pack(u.mapped) }
            })
            .collect();
        let results = self.call(PluginKind::CustomAttributes, |live, store| match live {
            Live::CustomAttributes(b) => Some(b.call_compute(store, &wit_users)),
            _ => None,
        })?;
        let bytes = results
            .iter()
            .map(|r| match r {
                wit::CustomResult::Attributes(a) => a.len(),
                wit::CustomResult::Error(e) => e.len(),
            })
            .fold(0, usize::saturating_add);
        self.check_output(results.len(), users.len(), "users", bytes)?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                wit::CustomResult::Attributes(buf) => {
                    decode_mapped(&buf).map_err(|m| format!("plugin returned invalid attributes: {m}"))
                }
                wit::CustomResult::Error(message) => Err(message),
            })
            .collect())
    }

    /// Roles for a batch of users; `groups` is every group the batch refers to.
    pub fn assign(
        &mut self,
        groups: &[GroupInput],
        users: &[UserGroupsInput<'_>],
    ) -> Result<Vec<RoleOutcome>, PluginError> {
        let wit_groups: Vec<wit::GroupRef> = groups
            .iter()
            .map(|g| wit::GroupRef { anchor: g.anchor.clone(), dn: g.dn.clone(), name: g.name.clone() })
            .collect();
        let wit_users: Vec<wit::UserGroups> = users
            .iter()
            .map(|u| wit::UserGroups {
                anchor: u.anchor.to_string(),
                attributes: pack(u.attributes),
                groups: u.groups.iter().map(|&(group, depth)| wit::Membership { group, depth }).collect(),
            })
            .collect();
        let results = self.call(PluginKind::RoleAssigner, |live, store| match live {
            Live::RoleAssigner(b) => Some(b.call_assign(store, &wit_groups, &wit_users)),
            _ => None,
        })?;
        let bytes = results
            .iter()
            .map(|r| match r {
                wit::RoleResult::Roles(roles) => roles.iter().map(String::len).sum(),
                wit::RoleResult::Error(e) => e.len(),
            })
            .fold(0, usize::saturating_add);
        self.check_output(results.len(), users.len(), "users", bytes)?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                wit::RoleResult::Roles(roles) => RoleOutcome::Roles(roles),
                wit::RoleResult::Error(e) => RoleOutcome::Error(e),
            })
            .collect())
    }

    /// A decision per conflict, as the plugin returned it.
    pub fn resolve(&mut self, conflicts: &[ConflictInput]) -> Result<Vec<DecisionOutput>, PluginError> {
        let wit_conflicts: Vec<wit::Conflict> = conflicts
            .iter()
            .map(|c| wit::Conflict {
                kind: match c.kind {
                    ConflictKindInput::DuplicateKey => wit::ConflictKind::DuplicateKey,
                    ConflictKindInput::SamePerson => wit::ConflictKind::SamePerson,
                    ConflictKindInput::AppEdit => wit::ConflictKind::AppEdit,
                },
                key: c.key.clone(),
                value: c.value.clone(),
                claimants: c
                    .claimants
                    .iter()
                    .map(|k| wit::Claimant {
                        source: k.source.clone(),
                        anchor: k.anchor.clone(),
                        dn: k.dn.clone(),
                        attributes: pack(&k.attributes),
                        stored_since: k.stored_since.clone(),
                        chosen_by_admin: k.chosen_by_admin,
                    })
                    .collect(),
            })
            .collect();
        let results = self.call(PluginKind::ConflictResolver, |live, store| match live {
            Live::ConflictResolver(b) => Some(b.call_resolve(store, &wit_conflicts)),
            _ => None,
        })?;
        let bytes = results
            .iter()
            .map(|d| match d {
                wit::Decision::Keep(_) => 4,
                wit::Decision::Quarantine(r) => r.len(),
                wit::Decision::Rename(v) => v.iter().map(String::len).sum(),
                wit::Decision::Merge(m) => m.attributes.len(),
            })
            .fold(0, usize::saturating_add);
        self.check_output(results.len(), conflicts.len(), "conflicts", bytes)?;
        results
            .into_iter()
            .map(|d| {
                Ok(match d {
                    wit::Decision::Keep(i) => DecisionOutput::Keep(i as usize),
                    wit::Decision::Quarantine(r) => DecisionOutput::Quarantine(r),
                    wit::Decision::Rename(v) => DecisionOutput::Rename(v),
                    wit::Decision::Merge(m) => DecisionOutput::Merge {
                        primary: m.primary as usize,
                        attributes: decode_mapped(&m.attributes)
                            .map_err(|e| self.bad_output(format!("merge attributes: {e}")))?,
                    },
                })
            })
            .collect()
    }

    fn to_wit(&mut self, e: &SourceEntry) -> wit::Entry {
        self.packer.clear();
        for (name, values) in &e.attrs {
            self.packer.attr(name, values);
        }
        let attributes = self.packer.as_bytes().to_vec();
        // A group of 100,000 members grows the scratch buffer to megabytes;
        // it need not stay that big for the rest of the run.
        if attributes.len() > 1 << 20 {
            self.packer = Packer::with_capacity(4096);
        }
        wit::Entry {
            anchor: e.anchor.clone(),
            dn: e.dn.clone(),
            kind: match e.kind {
                EntryKind::User => wit::EntryKind::User,
                EntryKind::Group => wit::EntryKind::Group,
            },
            attributes,
        }
    }
}

/// Mapped attributes are held in the wire's encoding already.
fn pack(attrs: &Attributes) -> Vec<u8> {
    attrs.packed().to_vec()
}

fn decl_to_wit(d: &AttributeDecl) -> wit::AttributeDecl {
    wit::AttributeDecl {
        name: d.name.clone(),
        type_: match d.ty {
            AttributeType::String => wit::AttributeType::String,
            AttributeType::Integer => wit::AttributeType::Integer,
            AttributeType::Boolean => wit::AttributeType::Boolean,
            AttributeType::List => wit::AttributeType::List,
            AttributeType::Timestamp => wit::AttributeType::Timestamp,
        },
        required: d.required,
        multi_valued: d.multi_valued,
    }
}

fn add_usage(usage: &mut Usage, store: &Store<HostState>, fuel_budget: Option<u64>) {
    if let (Some(total), Some(budget)) = (usage.fuel.as_mut(), fuel_budget) {
        let left = store.get_fuel().unwrap_or(budget);
        *total = total.saturating_add(budget.saturating_sub(left));
    }
    usage.peak_memory_bytes = usage.peak_memory_bytes.max(store.data().limits.peak_memory());
}

/// Starts a call's deadline: the epoch deadline that interrupts WebAssembly,
/// and the same instant for host-side waits (see `sandbox::DeadlineClocks`).
/// Ticks run late under load, never early, so the epoch deadline falls at or
/// after this instant.
fn arm_deadline(store: &mut Store<HostState>, limits: SandboxLimits) {
    let ticks = deadline_ticks(limits.call_timeout_ms);
    store.set_epoch_deadline(ticks);
    let budget = super::EPOCH_TICK.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX));
    store.data_mut().call_deadline = std::time::Instant::now().checked_add(budget);
}

/// Bytes a `map` call returned: attribute buffers, skip reasons and error messages.
fn output_bytes(results: &[wit::MapResult]) -> usize {
    results
        .iter()
        .map(|r| match r {
            wit::MapResult::Skip(s) | wit::MapResult::Error(s) => s.len(),
            wit::MapResult::Mapped(m) => m.attributes.len(),
        })
        .fold(0, usize::saturating_add)
}

fn from_wit(r: wit::MapResult) -> MapOutcome {
    match r {
        wit::MapResult::Skip(reason) => MapOutcome::Skip(reason),
        wit::MapResult::Error(message) => MapOutcome::Error(message),
        wit::MapResult::Mapped(m) => {
            let kind = match m.kind {
                wit::EntryKind::User => EntryKind::User,
                wit::EntryKind::Group => EntryKind::Group,
            };
            match decode_mapped(&m.attributes) {
                Ok(attrs) => MapOutcome::Mapped { kind, attrs },
                Err(message) => MapOutcome::Error(format!("plugin returned invalid attributes: {message}")),
            }
        }
    }
}

/// Packed attributes as the source's raw form: names with binary values.
fn decode_raw(buf: &[u8]) -> Result<Vec<(String, Vec<Vec<u8>>)>, String> {
    let attrs = Attrs::parse(buf).map_err(|e| e.to_string())?;
    Ok(attrs.iter().map(|a| (a.name.to_string(), a.values().map(<[u8]>::to_vec).collect())).collect())
}

fn kind_from_wit(kind: wit::EntryKind) -> EntryKind {
    match kind {
        wit::EntryKind::User => EntryKind::User,
        wit::EntryKind::Group => EntryKind::Group,
    }
}

fn read_error_from_wit(e: bindings::connector::roster::plugin::connector_types::ReadError) -> ConnectorReadError {
    use bindings::connector::roster::plugin::connector_types::ReadError as W;
    match e {
        W::Config(m) => ConnectorReadError::Config(m),
        W::Auth(m) => ConnectorReadError::Auth(m),
        W::Http(m) => ConnectorReadError::Http(m),
        W::Protocol(m) => ConnectorReadError::Protocol(m),
        W::TokenExpired(m) => ConnectorReadError::TokenExpired(m),
    }
}

/// A plugin's packed output as mapped attributes: values must be UTF-8, an
/// attribute without values is left out, and a name given twice keeps its last
/// values.
fn decode_mapped(buf: &[u8]) -> Result<Attributes, String> {
    let attrs = Attrs::parse(buf).map_err(|e| e.to_string())?;
    let mut out = Attributes::builder();
    for a in attrs.iter() {
        if a.is_empty() {
            continue;
        }
        if a.values().any(|v| std::str::from_utf8(v).is_err()) {
            return Err(format!("attribute '{}' has a value that is not UTF-8", a.name));
        }
        out.push(a.name, a.values().map(|v| std::str::from_utf8(v).unwrap_or_default()));
    }
    Ok(out.finish())
}

/// Turns a wasmtime error into words an admin can act on. `Display` of a call
/// error says only "error while executing at wasm backtrace"; the trap is in the
/// cause chain.
fn classify(e: &wasmtime::Error, store: &Store<HostState>, limits: SandboxLimits) -> CallFailure {
    let chain = format!("{e:?}");
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return CallFailure::Timeout { limit_ms: limits.call_timeout_ms },
        Some(Trap::OutOfFuel) => return CallFailure::Trap { message: "ran out of fuel".into() },
        _ => {}
    }
    if e.downcast_ref::<WaitPastDeadline>().is_some() {
        return CallFailure::Timeout { limit_ms: limits.call_timeout_ms };
    }
    if chain.contains("forcing trap when growing memory") {
        return CallFailure::MemoryExhausted { limit_mb: (limits.memory_bytes / (1024 * 1024)) as u64 };
    }
    let stderr = store.data().stderr_text();
    let trap =
        e.downcast_ref::<Trap>().map(|t| t.to_string()).unwrap_or_else(|| first_line(&e.root_cause().to_string()));
    let message = if stderr.is_empty() { trap } else { format!("{trap}; plugin stderr: {stderr}") };
    CallFailure::Trap { message }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
