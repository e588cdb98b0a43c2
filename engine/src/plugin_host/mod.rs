//! The plugin host: the only part of Roster that knows wasmtime.
//!
//! One process-wide [`PluginHost`] owns the wasmtime `Engine`, the `Linker`, the
//! compiled-component cache and the epoch ticker that enforces call deadlines.
//! Each tenant's plugin runs in its own `Store` ([`PluginInstance`]), with its own
//! memory cap, so one tenant's plugin can neither see nor starve another's.
//! Every error carries the tenant, the plugin's name, version and content hash.

mod bindings;
mod cache;
pub mod config;
mod egress;
mod instance;
mod kind;
mod sandbox;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use egress::{Egress, HttpFailure, HttpRequest, HttpResponse};
pub use instance::{
    AttributeDecl, AttributeType, Claimant, ConflictInput, ConflictKindInput, ConnectorInfo, ConnectorPage,
    ConnectorReadError, ConnectorRejected, DecisionOutput, GroupInput, MapOutcome, MappedUserInput, PluginInstance,
    RoleOutcome, Usage, UserGroupsInput,
};
pub use kind::PluginKind;
pub use sandbox::SandboxLimits;
pub use validate::LATEST_WIT_VERSION;

/// The instance type every caller of a mapper used before there were other kinds.
pub type MapperInstance = PluginInstance;
use cache::ComponentCache;
use sandbox::{DeadlineClocks, HostState};

/// Fuel a store starts with on a measuring host: far more than any call can
/// burn before its deadline, so the count is never what stops a plugin.
const MEASURE_FUEL_BUDGET: u64 = u64::MAX / 4;

/// Plugin instances one process can hold at once (every tenant's mapper, plus
/// the instances being rebuilt after a trap). The pooling allocator reserves
/// address space for this many up front; instantiating one more fails cleanly.
pub const MAX_LIVE_INSTANCES: u32 = 1000;
/// Per component: at most this many core instances, linear memories and tables
/// (the same caps `StoreLimits` applies per tenant, see `sandbox::HostState`).
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 16;

/// How often the epoch advances; call deadlines are rounded up to this.
const EPOCH_TICK: Duration = Duration::from_millis(5);

static BUILTIN_MAPPER: &[u8] = include_bytes!(env!("ROSTER_BUILTIN_DECLARATIVE_MAPPER"));

/// A plugin's bytes and where they came from.
#[derive(Clone)]
pub struct PluginBinary {
    /// Name used in messages until the plugin reports its own (`init`).
    pub name: String,
    /// Where it came from: `built-in` or a file path.
    pub origin: String,
    pub wasm: Arc<[u8]>,
    /// SHA-256 of `wasm`, hex.
    pub hash: String,
}

impl PluginBinary {
    pub fn new(name: impl Into<String>, origin: impl Into<String>, wasm: impl Into<Arc<[u8]>>) -> Self {
        let wasm = wasm.into();
        let hash = crate::util::sha256_hex(&wasm);
        Self { name: name.into(), origin: origin.into(), wasm, hash }
    }

    /// The built-in declarative mapper, compiled into this binary.
    pub fn builtin_declarative_mapper() -> Self {
        Self::new("declarative-mapper", "built-in", BUILTIN_MAPPER)
    }

    /// The built-in plugin of a pipeline stage, compiled into this binary from
    /// `plugins/`. Connectors have none (`None`).
    pub fn builtin(kind: PluginKind) -> Option<Self> {
        static CUSTOM_ATTRIBUTES: &[u8] = include_bytes!(env!("ROSTER_BUILTIN_DECLARATIVE_ATTRIBUTES"));
        static ROLE_ASSIGNER: &[u8] = include_bytes!(env!("ROSTER_BUILTIN_RULE_ROLES"));
        static CONFLICT_RESOLVER: &[u8] = include_bytes!(env!("ROSTER_BUILTIN_POLICY_RESOLVER"));
        let (name, wasm) = match kind {
            PluginKind::Mapper => ("declarative-mapper", BUILTIN_MAPPER),
            PluginKind::CustomAttributes => ("declarative-attributes", CUSTOM_ATTRIBUTES),
            PluginKind::RoleAssigner => ("rule-roles", ROLE_ASSIGNER),
            PluginKind::ConflictResolver => ("policy-resolver", CONFLICT_RESOLVER),
            PluginKind::Connector => return None,
        };
        Some(Self::new(name, "built-in", wasm))
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, std::io::Error> {
        let wasm = std::fs::read(path)?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
        Ok(Self::new(name, path.display().to_string(), wasm))
    }
}

/// Which plugin, for every message about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub hash: String,
}

impl fmt::Display for PluginIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' {} (sha256:{})", self.name, self.version, short_hash(&self.hash))
    }
}

pub fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A configuration problem a plugin reported from `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfigError {
    pub key: String,
    pub position: Option<u32>,
    pub message: String,
}

impl fmt::Display for PluginConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "key '{}', position {}: {}", self.key, p, self.message),
            None => write!(f, "key '{}': {}", self.key, self.message),
        }
    }
}

/// Why one call into a plugin failed. The instance is discarded afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The call ran past its wall-clock deadline (epoch interruption).
    Timeout { limit_ms: u64 },
    /// The plugin tried to grow its memory past the cap.
    MemoryExhausted { limit_mb: u64 },
    /// Any other trap: `unreachable`, a panic (with its message), a bad cast…
    Trap { message: String },
    /// The call returned, but not what the contract says.
    BadOutput { message: String },
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Timeout { limit_ms } => write!(f, "call exceeded its {limit_ms} ms deadline and was stopped"),
            CallFailure::MemoryExhausted { limit_mb } => write!(f, "exceeded its memory limit of {limit_mb} MiB"),
            CallFailure::Trap { message } => write!(f, "trapped: {message}"),
            CallFailure::BadOutput { message } => write!(f, "returned invalid output: {message}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("tenant '{tenant}': plugin '{name}' from {origin} (sha256:{}): cannot load: {message}", short_hash(.hash))]
    Load { tenant: String, name: String, origin: String, hash: String, message: String },
    #[error("tenant '{}': plugin {plugin}: configuration rejected: {}", plugin.tenant, join_errors(.errors))]
    Config { plugin: PluginIdentity, errors: Vec<PluginConfigError> },
    #[error("tenant '{}': plugin {plugin}: {failure}", plugin.tenant)]
    Call { plugin: PluginIdentity, failure: CallFailure },
}

fn join_errors(errors: &[PluginConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The pre-instantiated component, by world (and frozen WIT version).
pub(crate) enum KindPre {
    MapperV0_1(bindings::v0_1_0::MapperPre<HostState>),
    Mapper(bindings::mapper::MapperPre<HostState>),
    CustomAttributes(bindings::custom_attributes::CustomAttributesPre<HostState>),
    RoleAssigner(bindings::role_assigner::RoleAssignerPre<HostState>),
    ConflictResolver(bindings::conflict_resolver::ConflictResolverPre<HostState>),
    Connector(bindings::connector::ConnectorPre<HostState>),
}

impl KindPre {
    fn component(&self) -> &wasmtime::component::Component {
        match self {
            KindPre::MapperV0_1(p) => p.instance_pre().component(),
            KindPre::Mapper(p) => p.instance_pre().component(),
            KindPre::CustomAttributes(p) => p.instance_pre().component(),
            KindPre::RoleAssigner(p) => p.instance_pre().component(),
            KindPre::ConflictResolver(p) => p.instance_pre().component(),
            KindPre::Connector(p) => p.instance_pre().component(),
        }
    }
}

/// A compiled, linked plugin, ready to instantiate cheaply (~10 µs) per tenant.
pub struct LoadedPlugin {
    pub(crate) pre: KindPre,
    pub kind: PluginKind,
    /// The `roster:plugin` version the plugin was built against.
    pub wit_version: String,
    pub binary: PluginBinary,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
}

/// The name callers of a mapper used before there were other kinds.
pub type LoadedMapper = LoadedPlugin;

/// The process-wide plugin host.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ComponentCache,
    loaded: Mutex<HashMap<(PluginKind, String), Arc<LoadedPlugin>>>,
    ticker: Option<EpochTicker>,
    /// `Some` on a measuring host: each store gets this much fuel.
    fuel_budget: Option<u64>,
}

impl PluginHost {
    /// `cache_dir`: where compiled components are kept between runs (none: memory only).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, String> {
        Self::build(cache_dir, false)
    }

    /// A host that also counts instructions (wasmtime fuel), for `roster plugin
    /// test`. Same linker, sandbox and limits as [`PluginHost::new`]; fuel metering
    /// makes calls ≈ 25–30 % slower, so normal runs never use it. Its compiled code
    /// differs from a normal host's, so it keeps no on-disk cache.
    pub fn measuring() -> Result<Self, String> {
        Self::build(None, true)
    }

    fn build(cache_dir: Option<PathBuf>, measure: bool) -> Result<Self, String> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(measure);
        config.wasm_component_model(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
        let engine = Engine::new(&config).map_err(|e| format!("cannot create the WebAssembly engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("cannot link WASI: {e:#}"))?;
        // Replace the monotonic clock with one whose waits end at the call's deadline.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<HostState, DeadlineClocks>(
            &mut linker,
            HostState::deadline_clocks,
        )
        .map_err(|e| format!("cannot link the deadline-bound clock: {e:#}"))?;
        linker.allow_shadowing(false);
        bindings::mapper::Mapper::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("cannot link the host interface: {e:#}"))?;
        bindings::v0_1_0::Mapper::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("cannot link the host interface of roster:plugin@0.1.0: {e:#}"))?;
        // Connectors' outbound HTTP. Linked for every instance, but only a
        // connector may import it (`validate`), and only an instance built
        // with an egress policy gets anything but a refusal.
        bindings::connector::roster::plugin::http::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("cannot link the http interface: {e:#}"))?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            cache: ComponentCache::new(cache_dir),
            loaded: Mutex::new(HashMap::new()),
            ticker: Some(ticker),
            fuel_budget: measure.then_some(MEASURE_FUEL_BUDGET),
        })
    }

    /// Compiles (or fetches from the cache) and links a mapper plugin.
    pub fn load_mapper(&self, tenant: &str, binary: &PluginBinary) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.load(tenant, PluginKind::Mapper, binary)
    }

    /// Compiles (or fetches from the cache), validates and links a plugin of `kind`.
    pub fn load(
        &self,
        tenant: &str,
        kind: PluginKind,
        binary: &PluginBinary,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let key = (kind, binary.hash.clone());
        if let Some(l) = self.loaded.lock().map_err(|_| poisoned(tenant, binary))?.get(&key) {
            return Ok(l.clone());
        }
        let load_err = |message: String| PluginError::Load {
            tenant: tenant.to_string(),
            name: binary.name.clone(),
            origin: binary.origin.clone(),
            hash: binary.hash.clone(),
            message,
        };
        let (component, from_cache) = self
            .cache
            .load(&self.engine, &binary.hash, &binary.wasm)
            .map_err(|e| load_err(format!("not a valid WebAssembly component: {e:#}")))?;
        let (problems, wit_version) = validate::problems(&self.engine, &component, kind);
        if !problems.is_empty() {
            return Err(load_err(format!("it is not a usable {kind} plugin: {}", problems.join("; "))));
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("it needs imports the host does not grant: {e:#}")))?;
        let world_err = |e: wasmtime::Error| {
            load_err(format!("it does not implement the `{kind}` world of roster:plugin@{wit_version}: {e:#}"))
        };
        let pre = match (kind, wit_version.as_str()) {
            (PluginKind::Mapper, "0.1.0") => {
                KindPre::MapperV0_1(bindings::v0_1_0::MapperPre::new(instance_pre).map_err(world_err)?)
            }
            (PluginKind::Mapper, _) => {
                KindPre::Mapper(bindings::mapper::MapperPre::new(instance_pre).map_err(world_err)?)
            }
            (PluginKind::CustomAttributes, _) => KindPre::CustomAttributes(
                bindings::custom_attributes::CustomAttributesPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::RoleAssigner, _) => {
                KindPre::RoleAssigner(bindings::role_assigner::RoleAssignerPre::new(instance_pre).map_err(world_err)?)
            }
            (PluginKind::ConflictResolver, _) => KindPre::ConflictResolver(
                bindings::conflict_resolver::ConflictResolverPre::new(instance_pre).map_err(world_err)?,
            ),
            (PluginKind::Connector, _) => {
                KindPre::Connector(bindings::connector::ConnectorPre::new(instance_pre).map_err(world_err)?)
            }
        };
        let loaded = Arc::new(LoadedPlugin { pre, kind, wit_version, binary: binary.clone(), from_cache });
        self.loaded.lock().map_err(|_| poisoned(tenant, binary))?.insert(key, loaded.clone());
        tracing::debug!(tenant, %kind, plugin = %binary.name, hash = short_hash(&binary.hash), wit = %loaded.wit_version, from_cache, "plugin loaded");
        Ok(loaded)
    }

    /// Imports the sandbox would deny at run time; uploads with any are refused.
    pub fn ungranted_imports(&self, loaded: &LoadedPlugin) -> Vec<String> {
        validate::ungranted_imports(&self.engine, loaded.pre.component())
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn fuel_budget(&self) -> Option<u64> {
        self.fuel_budget
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop();
        }
    }
}

fn poisoned(tenant: &str, binary: &PluginBinary) -> PluginError {
    PluginError::Load {
        tenant: tenant.to_string(),
        name: binary.name.clone(),
        origin: binary.origin.clone(),
        hash: binary.hash.clone(),
        message: "plugin registry lock poisoned by an earlier panic".into(),
    }
}

/// Advances the engine's epoch so `set_epoch_deadline` turns into wall time.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("roster-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { stop, handle }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// The pooling allocator's process-wide maxima. The per-tenant cap stays with
/// `StoreLimits` (`plugin_memory_mb`); a memory slot is sized for the largest cap
/// configuration accepts ([`crate::config::MAX_PLUGIN_MEMORY_MB`]). Slots are
/// address space reserved once, not memory: pages are committed as a plugin
/// touches them and decommitted when its instance is dropped.
fn pooling_config() -> PoolingAllocationConfig {
    let max_memory_bytes = usize::try_from(crate::config::MAX_PLUGIN_MEMORY_MB)
        .unwrap_or(usize::MAX / (1024 * 1024))
        .saturating_mul(1024 * 1024);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_LIVE_INSTANCES)
        .total_core_instances(MAX_LIVE_INSTANCES * 2)
        .total_memories(MAX_LIVE_INSTANCES)
        .total_tables(MAX_LIVE_INSTANCES * 2)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memories_per_module(1)
        .max_tables_per_module(TABLES_PER_COMPONENT)
        .max_memory_size(max_memory_bytes);
    pool
}

/// Ticks of [`EPOCH_TICK`] for a deadline, rounded up, at least one.
fn deadline_ticks(timeout_ms: u64) -> u64 {
    let tick = EPOCH_TICK.as_millis() as u64;
    timeout_ms.div_ceil(tick).max(1)
}
