//! One tenant's instance of a mapper plugin.

use std::collections::BTreeMap;
use std::sync::Arc;

use roster_wire::{Attrs, Packer};
use wasmtime::{Store, Trap};

use super::bindings::{Mapper, wit};
use super::sandbox::{HostState, SandboxLimits, WaitPastDeadline};
use super::{CallFailure, LoadedMapper, PluginConfigError, PluginError, PluginHost, PluginIdentity, deadline_ticks};
use crate::source::{EntryKind, SourceEntry};

/// What the plugin made of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOutcome {
    Mapped { kind: EntryKind, attrs: BTreeMap<String, Vec<String>> },
    Skip(String),
    Error(String),
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
pub struct MapperInstance {
    loaded: Arc<LoadedMapper>,
    engine: wasmtime::Engine,
    limits: SandboxLimits,
    config: wit::Config,
    identity: PluginIdentity,
    live: Option<(Store<HostState>, Mapper)>,
    packer: Packer,
    /// Fuel each store starts with, on a measuring host.
    fuel_budget: Option<u64>,
    /// Usage of stores already dropped.
    retired: Usage,
}

impl MapperInstance {
    /// Instantiates the plugin for a tenant and runs its `init` with the config.
    pub fn new(
        host: &PluginHost,
        loaded: Arc<LoadedMapper>,
        tenant: &str,
        limits: SandboxLimits,
        config: &toml::Table,
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
            identity,
            live: None,
            packer: Packer::with_capacity(4096),
            fuel_budget: host.fuel_budget(),
            retired: Usage { fuel: host.fuel_budget().map(|_| 0), peak_memory_bytes: 0 },
        };
        me.revive()?;
        Ok(me)
    }

    pub fn identity(&self) -> &PluginIdentity {
        &self.identity
    }

    /// Fuel and peak memory used so far, including instances discarded after a trap.
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
        let state = HostState::new(&self.identity.tenant, &self.identity.name, self.limits);
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
        let bindings = match self.loaded.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => return Err(self.failed(&e, &store)),
        };
        arm_deadline(&mut store, self.limits);
        let init = match bindings.call_init(&mut store, &self.config) {
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

    /// Maps a batch. `Err` means the whole call failed (trap, deadline, memory,
    /// malformed output); the caller decides whether to retry entries one by one.
    pub fn map_batch(&mut self, entries: &[&SourceEntry]) -> Result<Vec<MapOutcome>, PluginError> {
        if self.live.is_none() {
            self.revive()?;
        }
        let wit_entries: Vec<wit::Entry> = entries.iter().map(|e| self.to_wit(e)).collect();
        let Some((store, bindings)) = self.live.as_mut() else {
            return Err(PluginError::Call {
                plugin: self.identity.clone(),
                failure: CallFailure::Trap { message: "instance unavailable".into() },
            });
        };
        arm_deadline(store, self.limits);
        store.data_mut().logs_this_call = 0;
        let result = bindings.call_map(&mut *store, &wit_entries);
        let dropped = std::mem::take(&mut store.data_mut().logs_dropped);
        if dropped > 0 {
            tracing::warn!(tenant = %self.identity.tenant, plugin = %self.identity.name, dropped, "plugin log lines over the per-call cap were dropped");
        }
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                let failure = classify(&e, store, self.limits);
                // The instance is dead after a trap; drop it so the next call starts fresh.
                self.retire();
                return Err(PluginError::Call { plugin: self.identity.clone(), failure });
            }
        };
        if results.len() != entries.len() {
            self.retire();
            return Err(PluginError::Call {
                plugin: self.identity.clone(),
                failure: CallFailure::BadOutput {
                    message: format!("{} results for a batch of {} entries", results.len(), entries.len()),
                },
            });
        }
        let returned = output_bytes(&results);
        if returned > self.limits.output_max_bytes {
            // The instance may hold on to whatever it built; start the next call fresh.
            self.retire();
            return Err(PluginError::Call {
                plugin: self.identity.clone(),
                failure: CallFailure::BadOutput {
                    message: format!(
                        "returned {} KiB, over the limit of {} KiB",
                        returned.div_ceil(1024),
                        self.limits.output_max_bytes / 1024
                    ),
                },
            });
        }
        Ok(results.into_iter().map(from_wit).collect())
    }

    fn to_wit(&mut self, e: &SourceEntry) -> wit::Entry {
        self.packer.clear();
        for (name, values) in &e.attrs {
            self.packer.attr(name, values);
        }
        wit::Entry {
            anchor: e.anchor.clone(),
            dn: e.dn.clone(),
            kind: match e.kind {
                EntryKind::User => wit::EntryKind::User,
                EntryKind::Group => wit::EntryKind::Group,
            },
            attributes: self.packer.as_bytes().to_vec(),
        }
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

fn decode_mapped(buf: &[u8]) -> Result<BTreeMap<String, Vec<String>>, String> {
    let attrs = Attrs::parse(buf).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for a in attrs.iter() {
        let mut values = Vec::with_capacity(a.len());
        for v in a.values() {
            let s =
                std::str::from_utf8(v).map_err(|_| format!("attribute '{}' has a value that is not UTF-8", a.name))?;
            values.push(s.to_string());
        }
        if !values.is_empty() {
            out.insert(a.name.to_string(), values);
        }
    }
    Ok(out)
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
