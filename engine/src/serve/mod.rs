//! `roster serve`: Roster as a long-lived service.
//!
//! ```text
//!  scheduler ──┐ cron, polls, retries        realtime streams (RFC 4533) ──┐ bursts of changes
//!              ▼                                                          ▼
//!        one worker per tenant: coalesces triggers, runs the pipeline for the
//!        triggered sources (the others keep their stored state), records health
//!              │
//!              ├─► notifier (webhook, SMTP; de-duplicated)
//!              └─► metrics (/metrics, /healthz)
//! ```
//!
//! Each source syncs as its `sync = { mode = … }` says: `manual` (only when
//! triggered), `schedule` (a cron), `realtime` (an LDAP change stream;
//! Active Directory and Entra ID poll what changed every `poll_secs`), with an
//! optional `reconcile_cron` that reads everything and reports drift. A
//! trigger during a run is coalesced; tenants run concurrently up to
//! `[serve] max_concurrent_runs`. A failing source is retried with backoff and
//! jitter, never plans deletes from a failed read, and is reported once (and
//! its recovery). SIGTERM/SIGINT: the runs in progress finish, state is
//! persisted with them, and the process exits 0; a restart resumes from the
//! stored cookies and delta links.
//!
//! Several nodes can serve one store (PostgreSQL): each source and delivery
//! target is worked on by the node holding its lease ([`cluster`]). Triggers
//! reach every node; only the holder runs them, fenced by its lease.

pub mod cluster;
pub mod metrics;
pub mod notify;
pub mod realtime;
pub mod reload;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, SourceConfig, SyncMode, TenantConfig};
use crate::plugin_host::PluginHost;
use crate::source::{Source, SourceError};
use crate::store::{BoxStore, Store};
use crate::sync::{NoProgress, RunStatus, SourceProvider, SyncError, SyncOptions};

use cluster::{Change, Cluster};
use metrics::Metrics;
use notify::{EventKind, Notifier};
use realtime::{Batch, Buffer, BufferedSource};

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    Schedule,
    Realtime,
    Poll,
    Retry,
    Reconcile,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Schedule => "schedule",
            Reason::Realtime => "realtime",
            Reason::Poll => "poll",
            Reason::Retry => "retry",
            Reason::Reconcile => "reconcile",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Trigger {
    source: String,
    reason: Reason,
}

/// A counting semaphore: at most `max_concurrent_runs` tenants run at once.
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Permits {
    fn acquire(&self) {
        let Ok(mut free) = self.free.lock() else { return };
        while *free == 0 {
            free = match self.cv.wait(free) {
                Ok(f) => f,
                Err(_) => return,
            };
        }
        *free -= 1;
    }

    fn release(&self) {
        if let Ok(mut free) = self.free.lock() {
            *free += 1;
        }
        self.cv.notify_one();
    }
}

/// One lock per tenant: a run holds it from read to apply.
pub struct TenantLocks(HashMap<String, Mutex<()>>);

impl TenantLocks {
    pub fn new(config: &Config) -> Self {
        TenantLocks(config.tenants.iter().map(|t| (t.id.clone(), Mutex::new(()))).collect())
    }

    pub fn get(&self, tenant: &str) -> Option<&Mutex<()>> {
        self.0.get(tenant)
    }
}

/// The realtime buffers of one tenant, by source.
type Buffers = HashMap<String, Arc<Mutex<Buffer>>>;

/// Hands each buffered batch to its run, once, without copying it.
struct Provider {
    batches: HashMap<String, Batch>,
}

impl SourceProvider for Provider {
    fn open(
        &mut self,
        config: &Config,
        tenant: &TenantConfig,
        source: &SourceConfig,
        host: &crate::plugin_host::PluginHost,
    ) -> Result<Box<dyn Source>, SyncError> {
        match self.batches.remove(source.name()) {
            Some(batch) => Ok(Box::new(BufferedSource { name: source.name().to_string(), batch })),
            None => crate::sync::open_source(config, tenant, source, host),
        }
    }
}

fn poll_interval(source: &SourceConfig, mode: &crate::config::SyncModeConfig, no_stream: bool) -> Option<Duration> {
    if mode.mode != SyncMode::Realtime {
        return None;
    }
    let default = match source {
        // A server without syncprov cannot stream: poll it instead.
        SourceConfig::Ldap(_) if no_stream => 10,
        SourceConfig::Ldap(_) => return None, // a change stream, not polling
        SourceConfig::ActiveDirectory(_) => 5,
        SourceConfig::AzureAd(_) => 30,
        SourceConfig::Ldif(_) => 2,
        // A connector: what changed when it reads deltas, else everything.
        SourceConfig::Plugin(_) => 60,
    };
    Some(Duration::from_secs(mode.poll_secs.unwrap_or(default)))
}

/// Runs the service until `stop` is set. Returns once every run in progress
/// has finished, with the address the API was bound to (a reload binds the
/// same one again).
pub fn run(config: Config, listen: Option<String>, stop: Arc<AtomicBool>) -> Result<std::net::SocketAddr, String> {
    let config = Arc::new(config);
    let host = Arc::new(PluginHost::new(Some(config.store_dir().join("plugin-cache")))?);
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::new(&config)?;
    let permits = Arc::new(Permits { free: Mutex::new(config.serve.max_concurrent_runs.max(1)), cv: Condvar::new() });
    let listen = listen.unwrap_or_else(|| config.serve.listen.clone());
    let locks = Arc::new(TenantLocks::new(&config));
    let api = crate::api::Services {
        config: config.clone(),
        metrics: metrics.clone(),
        notifier: notifier.clone(),
        host: host.clone(),
        locks: locks.clone(),
    };
    let (addr, http) = crate::api::serve(&listen, api, stop.clone())?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    let scheme = if config.serve.tls_cert.is_some() { "https" } else { "http" };
    println!("roster serve: {} tenant(s); metrics on {scheme}://{addr}/metrics", config.tenants.len());

    let node = config.serve.node_id.clone().unwrap_or_else(cluster::default_node_id);
    let cluster = Cluster::new(node.clone(), Duration::from_secs(config.serve.lease_secs));
    tracing::info!(node = %node, lease_secs = config.serve.lease_secs, "serving as node");

    // What each tenant's worker gets, and every resource a node can hold.
    let mut channels: Vec<(Sender<Trigger>, Receiver<Trigger>)> = Vec::new();
    let mut tenant_buffers: Vec<Buffers> = Vec::new();
    let mut resources: Vec<String> = Vec::new();
    // Realtime LDAP sources whose server cannot stream.
    let mut no_stream: HashSet<(String, String)> = HashSet::new();
    let mut work = Work {
        config: config.clone(),
        host: host.clone(),
        streams: HashMap::new(),
        polls: HashMap::new(),
        shutdown: stop.clone(),
    };
    let mut store = crate::store::open(&config).map_err(|e| e.to_string())?;
    for (t_index, tenant) in config.tenants.iter().enumerate() {
        let (tx, rx) = channel::<Trigger>();
        let mut buffers: Buffers = HashMap::new();
        for source in &tenant.sources {
            let resource = cluster::source_resource(&tenant.id, source.name());
            resources.push(resource.clone());
            let mode = tenant.source_sync.get(source.name()).cloned().unwrap_or_default();
            for (k, v) in [("serve.mode", mode.mode.as_str())] {
                let _ = store.set_source_state(&tenant.id, source.name(), k, v);
            }
            if let (SyncMode::Realtime, SourceConfig::Ldap(ldap)) = (mode.mode, source) {
                if offers_syncrepl(&config, ldap) {
                    // Checked now, so a stream that cannot start is refused at
                    // start-up rather than when this node first holds the source.
                    stream_settings_ok(&config, ldap).map_err(|e| format!("tenant '{}': {e}", tenant.id))?;
                    let buffer = Arc::new(Mutex::new(Buffer::default()));
                    let slot = StreamSlot {
                        tenant_index: t_index,
                        source: ldap.clone(),
                        buffer: buffer.clone(),
                        trigger: tx.clone(),
                        running: None,
                    };
                    work.streams.insert(resource, slot);
                    buffers.insert(source.name().to_string(), buffer);
                    continue;
                }
                let every = poll_interval(source, &mode, true).unwrap_or(Duration::from_secs(10));
                tracing::warn!(tenant = %tenant.id, source = %source.name(), every_secs = every.as_secs(),
                    "the server does not offer RFC 4533 content synchronization (no syncprov): polling instead of streaming");
                let _ =
                    store.set_source_state(&tenant.id, source.name(), "serve.mode", "realtime (polling: no syncprov)");
                no_stream.insert((tenant.id.clone(), source.name().to_string()));
            }
            let streamless = no_stream.contains(&(tenant.id.clone(), source.name().to_string()));
            if poll_interval(source, &mode, streamless).is_some() {
                work.polls.insert(resource, (tx.clone(), source.name().to_string()));
            }
        }
        channels.push((tx, rx));
        tenant_buffers.push(buffers);
    }
    for tenant in &config.tenants {
        resources.extend(tenant.scim_push.iter().map(|t| cluster::scim_push_resource(&tenant.id, &t.name)));
        resources.extend(tenant.webhooks.iter().map(|h| cluster::webhook_resource(&tenant.id, &h.name)));
    }

    // Leases first: a single node holds everything before its first trigger.
    let info = format!("pid {} api {addr}", std::process::id());
    let lease_store = crate::store::open(&config).map_err(|e| e.to_string())?;
    let mut threads = vec![http];
    threads.push(
        cluster::run(cluster.clone(), lease_store, resources, info, stop.clone(), move |change| work.change(change))
            .map_err(|e| e.to_string())?,
    );

    let mut senders: Vec<Sender<Trigger>> = Vec::new();
    for (t_index, ((tx, rx), buffers)) in channels.into_iter().zip(tenant_buffers).enumerate() {
        senders.push(tx);
        let worker = Worker {
            config: config.clone(),
            tenant_index: t_index,
            host: host.clone(),
            metrics: metrics.clone(),
            notifier: notifier.clone(),
            permits: permits.clone(),
            buffers,
            stop: stop.clone(),
            locks: locks.clone(),
            cluster: cluster.clone(),
        };
        let store = crate::store::open(&config).map_err(|e| e.to_string())?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("roster-{}", config.tenants[t_index].id))
                .spawn(move || worker.run(rx, store))
                .map_err(|e| e.to_string())?,
        );
    }
    threads.push(scheduler(config.clone(), senders, no_stream, stop.clone())?);
    for tenant in &config.tenants {
        for target in &tenant.scim_push {
            let resource = cluster::scim_push_resource(&tenant.id, &target.name);
            let (config, tenant, target, stop) = (config.clone(), tenant.id.clone(), target.clone(), stop.clone());
            let cluster = cluster.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("roster-scim-{}", target.name))
                    .spawn(move || {
                        crate::delivery::scim_push::push(config, tenant, target, || cluster.holds(&resource), stop)
                    })
                    .map_err(|e| e.to_string())?,
            );
        }
        for hook in &tenant.webhooks {
            let resource = cluster::webhook_resource(&tenant.id, &hook.name);
            let (config, tenant, hook, stop) = (config.clone(), tenant.id.clone(), hook.clone(), stop.clone());
            let cluster = cluster.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("roster-hook-{}", hook.name))
                    .spawn(move || {
                        crate::delivery::webhooks::deliver(config, tenant, hook, || cluster.holds(&resource), stop)
                    })
                    .map_err(|e| e.to_string())?,
            );
        }
    }

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("shutting down: finishing the runs in progress");
    for t in threads {
        let _ = t.join();
    }
    notifier.close();
    Ok(addr)
}

/// Whether a realtime LDAP source can stream (RFC 4533). When the server
/// cannot be asked now (down, or the root DSE hides its controls), assume it
/// can: the stream retries until it is reachable.
fn offers_syncrepl(config: &Config, ldap: &crate::config::LdapSourceConfig) -> bool {
    let password = match &ldap.bind_password {
        Some(r) => match r.resolve(&config.base_dir) {
            Ok(p) => Some(p),
            Err(_) => return true,
        },
        None => None,
    };
    let Ok(mut source) = crate::source::ldap::LdapSource::new(ldap, &config.base_dir, password) else { return true };
    !matches!(source.supports_syncrepl(), Ok(Some(false)))
}

/// Whether a realtime stream could start with these settings (its secret
/// resolves, its endpoint and TLS settings are valid), without connecting.
fn stream_settings_ok(config: &Config, ldap: &crate::config::LdapSourceConfig) -> Result<(), SourceError> {
    let password = match &ldap.bind_password {
        Some(r) => Some(r.resolve(&config.base_dir).map_err(|e| SourceError::Other {
            source_name: ldap.name.clone(),
            message: format!("bind_password: {e}"),
        })?),
        None => None,
    };
    crate::source::ldap::LdapSource::new(ldap, &config.base_dir, password).map(|_| ())
}

/// The cookies a realtime source continues from, if they were made with the
/// current pipeline (otherwise the stream starts over: a full refresh).
fn stored_cookies(
    config: &Config,
    tenant: &TenantConfig,
    host: &PluginHost,
    store: &mut dyn Store,
    source: &str,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let Ok(state) = store.source_states(&tenant.id, source) else { return (None, None) };
    let current = crate::sync::current_fingerprint(config, tenant, host, store).ok();
    if current.is_none() || state.get(crate::sync::PIPELINE_STATE_KEY) != current.as_ref() {
        return (None, None);
    }
    let get = |k: &str| state.get(k).and_then(|v| realtime::decode_cookie(v));
    (get(realtime::USERS_COOKIE), get(realtime::GROUPS_COOKIE))
}

/// What starts and stops with a source's lease: its realtime stream, started
/// when the node takes the lease and stopped when it gives it up; a polled
/// source is polled at once when taken over.
struct Work {
    config: Arc<Config>,
    host: Arc<PluginHost>,
    streams: HashMap<String, StreamSlot>,
    polls: HashMap<String, (Sender<Trigger>, String)>,
    /// The service is stopping: streams are waited for as they stop.
    shutdown: Arc<AtomicBool>,
}

struct StreamSlot {
    tenant_index: usize,
    source: crate::config::LdapSourceConfig,
    buffer: Arc<Mutex<Buffer>>,
    trigger: Sender<Trigger>,
    /// The stream's stop flag and its thread, stopped or not (see [`Work::stop`]).
    running: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Work {
    fn change(&mut self, change: Change) {
        match change {
            Change::Gained(resource) => {
                if let Some((tx, source)) = self.polls.get(&resource) {
                    let _ = tx.send(Trigger { source: source.clone(), reason: Reason::Poll });
                }
                self.start(&resource)
            }
            Change::Lost(resource) => self.stop(&resource),
        }
    }

    /// Starts the source's stream on a thread of its own: reading the stored
    /// cookies (which loads the tenant's plugins for the pipeline fingerprint)
    /// and waiting for a previous stream to end take time the lease thread
    /// must not spend, or its other leases would run out meanwhile.
    fn start(&mut self, resource: &str) {
        let Some(slot) = self.streams.get_mut(resource) else { return };
        let previous = slot.running.take();
        let stop = Arc::new(AtomicBool::new(false));
        let (config, host, tenant_index) = (self.config.clone(), self.host.clone(), slot.tenant_index);
        let (source, buffer, trigger) = (slot.source.clone(), slot.buffer.clone(), slot.trigger.clone());
        let stopping = stop.clone();
        let starter = std::thread::Builder::new().name(format!("roster-rt-start-{}", source.name)).spawn(move || {
            if let Some((_, handle)) = previous {
                let _ = handle.join();
            }
            // Continue from what is stored: the previous holder's last applied
            // cookie, not whatever this node buffered when it last held the source.
            if let Ok(mut b) = buffer.lock() {
                *b = Buffer::default();
            }
            let tenant = &config.tenants[tenant_index];
            let cookies = match crate::store::open(&config) {
                Ok(mut store) => stored_cookies(&config, tenant, &host, store.as_mut(), &source.name),
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, source = %source.name, error = %e, "cannot read the stored cookies; refreshing from nothing");
                    (None, None)
                }
            };
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            let (tx, name) = (trigger.clone(), source.name.clone());
            match realtime::stream(&config, &source, cookies, buffer.clone(), stopping, move || {
                let _ = tx.send(Trigger { source: name.clone(), reason: Reason::Realtime });
            }) {
                Ok(stream) => {
                    let _ = stream.join();
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant.id, source = %source.name, error = %e, "cannot start the realtime stream");
                    if let Ok(mut b) = buffer.lock() {
                        b.stream_error = Some(e.to_string());
                    }
                    let _ = trigger.send(Trigger { source: source.name.clone(), reason: Reason::Realtime });
                }
            }
        });
        match starter {
            Ok(handle) => slot.running = Some((stop, handle)),
            Err(e) => {
                tracing::error!(source = %slot.source.name, error = %e, "cannot start a thread for the realtime stream")
            }
        }
    }

    /// Asks the stream to end. It is waited for by the next start of the same
    /// source, or here when the service stops.
    fn stop(&mut self, resource: &str) {
        let Some(slot) = self.streams.get_mut(resource) else { return };
        if let Some((stop, handle)) = slot.running.take() {
            stop.store(true, Ordering::Relaxed);
            if self.shutdown.load(Ordering::Relaxed) {
                let _ = handle.join();
            } else {
                slot.running = Some((stop, handle));
            }
        }
    }
}

/// Sends cron, reconcile and poll triggers.
fn scheduler(
    config: Arc<Config>,
    senders: Vec<Sender<Trigger>>,
    no_stream: HashSet<(String, String)>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    enum When {
        Cron(croner::Cron, Reason),
        Every(Duration),
    }
    let mut jobs: Vec<(usize, String, When, Instant)> = Vec::new();
    for (i, t) in config.tenants.iter().enumerate() {
        for s in &t.sources {
            let mode = t.source_sync.get(s.name()).cloned().unwrap_or_default();
            let mut add_cron = |c: &Option<String>, reason| {
                if let Some(c) = c.as_deref().and_then(|c| schedule::parse(c).ok()) {
                    jobs.push((i, s.name().to_string(), When::Cron(c, reason), Instant::now()));
                }
            };
            if mode.mode == SyncMode::Schedule {
                add_cron(&mode.cron, Reason::Schedule);
            }
            if mode.mode == SyncMode::Realtime {
                add_cron(&mode.reconcile_cron, Reason::Reconcile);
            }
            let streamless = no_stream.contains(&(t.id.clone(), s.name().to_string()));
            if let Some(every) = poll_interval(s, &mode, streamless) {
                jobs.push((i, s.name().to_string(), When::Every(every), Instant::now()));
            }
        }
    }
    let next = |when: &When, now: Instant| -> Instant {
        match when {
            When::Every(d) => now + *d,
            When::Cron(c, _) => {
                let at = schedule::next_after(c, chrono::Local::now());
                let wait = at.and_then(|a| (a - chrono::Local::now()).to_std().ok()).unwrap_or(Duration::from_secs(60));
                // A little jitter: schedules of many tenants do not all fire on the same instant.
                now + wait + Duration::from_millis(u64::from(crate::util::jitter_ms(200)))
            }
        }
    };
    for job in jobs.iter_mut() {
        job.3 = match &job.2 {
            When::Every(_) => Instant::now(),
            when => next(when, Instant::now()),
        };
    }
    std::thread::Builder::new()
        .name("roster-scheduler".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                for (tenant, source, when, due) in jobs.iter_mut() {
                    if *due <= now {
                        let reason = match when {
                            When::Cron(_, r) => *r,
                            When::Every(_) => Reason::Poll,
                        };
                        let _ = senders[*tenant].send(Trigger { source: source.clone(), reason });
                        *due = next(when, now);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .map_err(|e| e.to_string())
}

struct Worker {
    config: Arc<Config>,
    tenant_index: usize,
    host: Arc<PluginHost>,
    metrics: Arc<Metrics>,
    notifier: Arc<Notifier>,
    permits: Arc<Permits>,
    buffers: Buffers,
    stop: Arc<AtomicBool>,
    locks: Arc<TenantLocks>,
    cluster: Arc<Cluster>,
}

#[derive(Default)]
struct Health {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Worker {
    fn tenant(&self) -> &TenantConfig {
        &self.config.tenants[self.tenant_index]
    }

    fn run(self, rx: Receiver<Trigger>, mut store: BoxStore) {
        let mut health: HashMap<String, Health> = HashMap::new();
        loop {
            let wait = health
                .values()
                .filter_map(|h| h.retry_at)
                .min()
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(200))
                .min(Duration::from_millis(200));
            let mut pending: BTreeSet<Trigger> = BTreeSet::new();
            match rx.recv_timeout(wait) {
                Ok(t) => {
                    pending.insert(t);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            // Coalesce: everything that arrived meanwhile is one run.
            while let Ok(t) = rx.try_recv() {
                pending.insert(t);
            }
            let now = Instant::now();
            for (source, h) in health.iter_mut() {
                if h.retry_at.is_some_and(|at| at <= now) {
                    h.retry_at = None;
                    pending.insert(Trigger { source: source.clone(), reason: Reason::Retry });
                }
            }
            // A realtime trigger with nothing buffered (yet) is not a run.
            pending.retain(|t| {
                t.reason != Reason::Realtime
                    || self
                        .buffers
                        .get(&t.source)
                        .is_some_and(|b| b.lock().is_ok_and(|b| b.has_work() || b.stream_error.is_some()))
            });
            if pending.is_empty() {
                continue;
            }
            self.permits.acquire();
            self.run_once(&mut store, &pending, &mut health);
            self.permits.release();
        }
    }

    fn run_once(&self, store: &mut dyn Store, pending: &BTreeSet<Trigger>, health: &mut HashMap<String, Health>) {
        let tenant = self.tenant();
        let reconcile = pending.iter().any(|t| t.reason == Reason::Reconcile);
        // Another node works on the sources this one does not hold.
        let sources: BTreeSet<String> = pending
            .iter()
            .map(|t| t.source.clone())
            .filter(|s| self.cluster.holds(&cluster::source_resource(&tenant.id, s)))
            .collect();
        if sources.is_empty() {
            return;
        }
        let reason = pending.iter().map(|t| t.reason).max().unwrap_or(Reason::Schedule);
        // Realtime streams that are down: say so (once), then run what can run.
        for name in &sources {
            if let Some(err) = self.buffers.get(name).and_then(|b| b.lock().ok().and_then(|b| b.stream_error.clone())) {
                self.failed(
                    store,
                    health,
                    name,
                    &format!("realtime stream: {err}"),
                    err.contains("TLS") || err.contains("bind"),
                );
            }
        }
        let mut batches: HashMap<String, Batch> = HashMap::new();
        let mut first_event: Option<Instant> = None;
        if !reconcile {
            for name in &sources {
                let Some(buffer) = self.buffers.get(name) else { continue };
                let Ok(b) = buffer.lock() else { continue };
                if !b.ready() {
                    continue;
                }
                first_event = first_event.or(b.last_event);
                // Stored anchors matter only once a refresh has listed what
                // is present (the rest was deleted); a change batch needs none.
                let stored = if b.needs_stored_anchors() {
                    match store.source_anchors(&tenant.id, name) {
                        Ok(anchors) => anchors,
                        Err(e) => {
                            tracing::warn!(tenant = %tenant.id, source = %name, error = %e, "cannot read stored anchors; the batch waits");
                            continue;
                        }
                    }
                } else {
                    BTreeMap::new()
                };
                batches.insert(name.clone(), b.take(&stored));
            }
        }
        let runnable: Vec<String> = sources
            .iter()
            .filter(|s| reconcile || !self.buffers.contains_key(*s) || batches.contains_key(*s))
            .cloned()
            .collect();
        if runnable.is_empty() {
            return;
        }
        let opts = SyncOptions {
            dry_run: false,
            allow_deletes: false,
            full: reconcile,
            only_sources: Some(runnable.clone()),
            trigger: reason.as_str().into(),
            approved_deletes: None,
        };
        // One run per tenant at a time, whether the schedule or the API starts it.
        let lock = self.locks.get(&tenant.id);
        let _held = lock.as_ref().map(|l| l.lock());
        let started = Instant::now();
        let acks: Vec<(String, u64)> = batches.iter().map(|(name, b)| (name.clone(), b.upto)).collect();
        let mut provider = Provider { batches };
        // The run's writes count only while this node still holds its sources.
        store.set_fence(Some(self.cluster.fence(runnable.iter().map(|s| cluster::source_resource(&tenant.id, s)))));
        let result =
            crate::sync::sync_tenant_with(&self.config, tenant, store, &self.host, &opts, &NoProgress, &mut provider);
        store.set_fence(None);
        let elapsed = started.elapsed();
        match result {
            Ok(report) => {
                let applied = matches!(report.status, RunStatus::Applied | RunStatus::NoChanges);
                if applied {
                    for (name, upto) in &acks {
                        if let Some(b) = self.buffers.get(name) {
                            if let Ok(mut b) = b.lock() {
                                b.ack(*upto);
                            }
                        }
                    }
                }
                if reconcile && !report.counts.is_empty() {
                    tracing::warn!(tenant = %tenant.id, changes = ?report.counts, "reconcile found drift the stream or schedule had missed; repaired");
                }
                for s in &report.sources {
                    if s.read.mode == "not-read" {
                        continue;
                    }
                    self.metrics.update(&tenant.id, &s.source, |m| {
                        *m.runs.entry(report.status.as_str().to_string()).or_default() += 1;
                        m.objects_read += s.read.users + s.read.groups;
                        m.quarantined += s.quarantined;
                        m.last_run_seconds = elapsed.as_secs_f64();
                        if let Some(first) = first_event {
                            m.lag_seconds = first.elapsed().as_secs_f64();
                        }
                    });
                }
                let by_stage: BTreeMap<(String, String), u64> =
                    store.quarantine(&tenant.id).unwrap_or_default().into_iter().fold(BTreeMap::new(), |mut acc, q| {
                        *acc.entry((q.item.source.clone(), q.item.stage.clone())).or_default() += 1;
                        acc
                    });
                self.metrics.update_tenant(&tenant.id, |m| {
                    for (kind, secs) in &report.plugin_seconds {
                        *m.plugin_seconds.entry(kind.clone()).or_default() += secs;
                    }
                    m.quarantine_by_stage = by_stage;
                });
                let c = report.counts;
                for name in &runnable {
                    self.metrics.update(&tenant.id, name, |m| {
                        m.creates += c.creates;
                        m.updates += c.updates;
                        m.deletes += c.deletes;
                    });
                }
                match &report.status {
                    RunStatus::Applied | RunStatus::NoChanges => {
                        for name in &runnable {
                            self.succeeded(store, health, name);
                        }
                    }
                    RunStatus::Blocked(b) => {
                        self.notifier.send(EventKind::GuardrailBlocked, &tenant.id, None, b.to_string());
                        for name in &runnable {
                            self.failed(store, health, name, &format!("guard-rail: {b}"), false);
                        }
                    }
                    RunStatus::Aborted(reason) => {
                        for name in &runnable {
                            self.failed(store, health, name, reason, false);
                        }
                    }
                    RunStatus::Partial(errors) => {
                        for s in report.sources.iter().filter(|s| s.error.is_some()) {
                            let e = s.error.clone().unwrap_or_default();
                            let security =
                                e.contains("TLS") || e.contains("bind as") || e.contains("authentication failed");
                            self.failed(store, health, &s.source, &e, security);
                        }
                        let _ = errors;
                    }
                    RunStatus::DryRun => {}
                }
            }
            Err(e) => {
                let security = matches!(
                    &e,
                    SyncError::Source {
                        source: SourceError::Tls { .. } | SourceError::Bind { .. } | SourceError::Auth { .. },
                        ..
                    }
                );
                for name in &runnable {
                    self.failed(store, health, name, &e.to_string(), security);
                }
            }
        }
    }

    fn succeeded(&self, store: &mut dyn Store, health: &mut HashMap<String, Health>, source: &str) {
        let tenant = &self.tenant().id;
        let h = health.entry(source.to_string()).or_default();
        let was_failing = h.failures > 0;
        *h = Health::default();
        let _ = store.set_source_state(tenant, source, "serve.health", "ok");
        let _ = store.set_source_state(tenant, source, "serve.last_run_at", &crate::util::now_rfc3339());
        self.metrics.update(tenant, source, |m| m.healthy = true);
        if was_failing {
            self.notifier.send(EventKind::Recovery, tenant, Some(source), format!("source '{source}' syncs again"));
        }
    }

    fn failed(
        &self,
        store: &mut dyn Store,
        health: &mut HashMap<String, Health>,
        source: &str,
        error: &str,
        security: bool,
    ) {
        let tenant = &self.tenant().id;
        let h = health.entry(source.to_string()).or_default();
        h.failures += 1;
        let backoff = Duration::from_secs(2u64.saturating_pow(h.failures.min(10)))
            .min(Duration::from_secs(self.config.serve.retry_max_secs.max(1)));
        h.retry_at = Some(Instant::now() + backoff + Duration::from_millis(u64::from(crate::util::jitter_ms(500))));
        tracing::warn!(tenant = %tenant, source, failures = h.failures, retry_in_s = backoff.as_secs(), %error, "source failed; will retry");
        let _ = store.set_source_state(tenant, source, "serve.health", "failing");
        let _ = store.set_source_state(tenant, source, "serve.last_error", error);
        self.metrics.update(tenant, source, |m| {
            m.healthy = false;
            m.errors += 1;
        });
        let kind = if security { EventKind::Security } else { EventKind::Failure };
        self.notifier.send(kind, tenant, Some(source), error.to_string());
    }
}
