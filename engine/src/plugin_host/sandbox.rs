//! What a plugin instance may touch: nothing but the host's `log`, a capped
//! linear memory, a wall-clock deadline per call and a cap on what one call
//! may return.
//!
//! A std `wasm32-wasip2` guest imports WASI's CLI, I/O and clock interfaces even
//! if it never uses them, so all of WASI p2 is linked — but with a context that
//! grants no preopened directories, no environment, no arguments and no sockets.
//! Clocks are not granted either unless the tenant says so: the wall clock reads
//! the UNIX epoch and the monotonic clock never advances. Randomness is
//! deterministic (a fixed byte cycle, insecure seed 0), so a plugin cannot
//! fingerprint the host or make a mapping depend on anything but its input.
//! Guest stderr goes to a capped in-memory pipe so a panic message reaches the
//! tenant's log instead of vanishing.

use std::time::Duration;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::LogLevel;
use super::bindings::connector::roster::plugin::{connector_types, http};
use super::bindings::mapper::roster::plugin::{host, types};
use super::bindings::v0_1_0::roster::plugin::host as host_v0_1_0;

/// Bytes of guest stderr kept per instance (enough for a panic message).
const STDERR_CAPACITY: usize = 16 * 1024;
/// Log messages a plugin may emit per call before the rest are dropped (and counted).
pub const LOG_LINES_PER_CALL: u32 = 100;
/// Longest log message kept; longer ones are cut.
const LOG_LINE_MAX: usize = 2_000;
/// Most bytes one `wasi:random` call may ask for; a larger request traps.
const RANDOM_BYTES_PER_CALL: u64 = 64 * 1024;

/// Limits for one instance, from the tenant's `[tenant.limits]`.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    pub memory_bytes: usize,
    pub call_timeout_ms: u64,
    /// Most bytes of attribute buffers and strings one `map` call may return.
    pub output_max_bytes: usize,
    /// Whether the plugin sees the host's real wall and monotonic clocks.
    pub grant_clock: bool,
}

/// A wall clock stopped at the UNIX epoch.
struct EpochWallClock;

impl HostWallClock for EpochWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock that never advances.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The byte cycle every instance's "random" source yields: fixed, so the same
/// input maps the same way on every host, and not all zeros, so a guest that
/// rejects zero (rejection sampling, non-zero keys) still makes progress.
fn deterministic_random() -> Deterministic {
    let mut state: u64 = 0x0123_4567_89ab_cdef;
    let bytes = (0..32)
        .flat_map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect();
    Deterministic::new(bytes)
}

/// The tenant's [`StoreLimits`], unchanged in what they allow or refuse, plus a
/// record of the largest linear memory the instance was granted. Memory grows
/// rarely (creation, then `memory.grow`), so the bookkeeping costs nothing per call.
pub struct PeakLimiter {
    inner: StoreLimits,
    peak_memory: usize,
}

impl PeakLimiter {
    fn new(inner: StoreLimits) -> Self {
        Self { inner, peak_memory: 0 }
    }

    /// Largest size, in bytes, any one linear memory of the instance was allowed to reach.
    pub fn peak_memory(&self) -> usize {
        self.peak_memory
    }
}

impl ResourceLimiter for PeakLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Per-instance host state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: PeakLimiter,
    stderr: MemoryOutputPipe,
    /// Tenant and plugin, for log lines.
    pub(crate) tenant: String,
    pub(crate) plugin: String,
    pub(crate) logs_this_call: u32,
    pub(crate) logs_dropped: u32,
    /// When the running call's deadline passes; blocking waits end by then.
    pub(crate) call_deadline: Option<std::time::Instant>,
    /// A connector's outbound HTTP policy; `None`: every request is refused.
    pub(crate) egress: Option<std::sync::Arc<dyn super::Egress>>,
    /// Requests sent through `egress` so far, for the source's read summary.
    pub(crate) http_requests: u64,
}

impl HostState {
    pub fn new(tenant: &str, plugin: &str, limits: SandboxLimits) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut builder = WasiCtxBuilder::new();
        // Deny-by-default is wasmtime-wasi's behaviour; these make it explicit so
        // a future default change cannot silently grant access.
        builder.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).stderr(stderr.clone());
        builder.secure_random(deterministic_random()).insecure_random(deterministic_random()).insecure_random_seed(0);
        // The host allocates what `get-random-bytes` asks for before the guest's
        // memory cap applies; wasmtime-wasi's default allows 64 MiB per call.
        builder.max_random_size(RANDOM_BYTES_PER_CALL);
        if !limits.grant_clock {
            builder.wall_clock(EpochWallClock).monotonic_clock(FrozenMonotonicClock);
        }
        Self {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limits: PeakLimiter::new(
                StoreLimitsBuilder::new()
                    .memory_size(limits.memory_bytes)
                    .instances(8)
                    .tables(16)
                    .memories(4)
                    // A failed memory.grow traps instead of returning -1, so a memory
                    // bomb is reported as exactly that rather than as a confusing abort.
                    .trap_on_grow_failure(true)
                    .build(),
            ),
            stderr,
            tenant: tenant.to_string(),
            plugin: plugin.to_string(),
            logs_this_call: 0,
            logs_dropped: 0,
            call_deadline: None,
            egress: None,
            http_requests: 0,
        }
    }

    /// What the guest wrote to stderr (a Rust panic message, typically).
    pub fn stderr_text(&self) -> String {
        let bytes = self.stderr.contents();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// `wasi:clocks/monotonic-clock` where a wait cannot outlive the call.
///
/// The epoch deadline only interrupts WebAssembly code: a guest blocked in a
/// host call (`std::thread::sleep` is `subscribe-duration` + `block`) would
/// otherwise hold the call, and the run, for as long as it asked. Clock
/// pollables are the only thing a guest can block on here (no sockets, no
/// files, stdin is closed), so refusing to subscribe to a wait that ends past
/// the call's deadline makes the deadline hard: such a call fails at once, as
/// a timeout, instead of sleeping first.
pub(crate) struct DeadlineClocks;

impl HasData for DeadlineClocks {
    type Data<'a> = DeadlineClockView<'a>;
}

pub(crate) struct DeadlineClockView<'a> {
    inner: WasiClocksCtxView<'a>,
    deadline: Option<std::time::Instant>,
}

/// The error a call fails with when the guest asks to wait past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the plugin asked to wait {wait_ms} ms, past its call deadline")]
pub(crate) struct WaitPastDeadline {
    pub wait_ms: u64,
}

impl HostState {
    pub(crate) fn deadline_clocks(&mut self) -> DeadlineClockView<'_> {
        let deadline = self.call_deadline;
        DeadlineClockView { inner: self.clocks(), deadline }
    }
}

impl DeadlineClockView<'_> {
    fn subscribe(&mut self, nanos: u64) -> wasmtime::Result<Resource<DynPollable>> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if u128::from(nanos) > left.as_nanos() {
                return Err(wasmtime::Error::new(WaitPastDeadline { wait_ms: nanos / 1_000_000 }));
            }
        }
        monotonic_clock::Host::subscribe_duration(&mut self.inner, nanos)
    }
}

impl monotonic_clock::Host for DeadlineClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        monotonic_clock::Host::now(&mut self.inner)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        monotonic_clock::Host::resolution(&mut self.inner)
    }

    fn subscribe_instant(&mut self, when: monotonic_clock::Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let now = monotonic_clock::Host::now(&mut self.inner)?;
        self.subscribe(when.saturating_sub(now))
    }

    fn subscribe_duration(&mut self, nanos: monotonic_clock::Duration) -> wasmtime::Result<Resource<DynPollable>> {
        self.subscribe(nanos)
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.logs_this_call += 1;
        if self.logs_this_call > LOG_LINES_PER_CALL {
            self.logs_dropped += 1;
            return;
        }
        let message = truncate(&message, LOG_LINE_MAX);
        let (tenant, plugin) = (self.tenant.as_str(), self.plugin.as_str());
        match level {
            LogLevel::Trace => tracing::trace!(tenant, plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(tenant, plugin, "{message}"),
            LogLevel::Info => tracing::info!(tenant, plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(tenant, plugin, "{message}"),
            LogLevel::Error => tracing::error!(tenant, plugin, "{message}"),
        }
    }
}

impl http::Host for HostState {
    fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let Some(egress) = self.egress.clone() else {
            return Err(http::HttpError::Refused("this plugin has no network access".into()));
        };
        self.http_requests += 1;
        let request = super::HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        match egress.send(request, self.call_deadline) {
            Ok(r) => Ok(http::Response { status: r.status, headers: r.headers, body: r.body }),
            Err(super::HttpFailure::Refused(m)) => Err(http::HttpError::Refused(m)),
            Err(super::HttpFailure::Timeout(m)) => Err(http::HttpError::Timeout(m)),
            Err(super::HttpFailure::TooLarge(m)) => Err(http::HttpError::TooLarge(m)),
            Err(super::HttpFailure::Transport(m)) => Err(http::HttpError::Transport(m)),
        }
    }
}

impl connector_types::Host for HostState {}

/// `roster:plugin/host@0.1.0`: the same service for plugins built against 0.1.0.
impl host_v0_1_0::Host for HostState {
    fn log(&mut self, level: host_v0_1_0::LogLevel, message: String) {
        let level = match level {
            host_v0_1_0::LogLevel::Trace => LogLevel::Trace,
            host_v0_1_0::LogLevel::Debug => LogLevel::Debug,
            host_v0_1_0::LogLevel::Info => LogLevel::Info,
            host_v0_1_0::LogLevel::Warn => LogLevel::Warn,
            host_v0_1_0::LogLevel::Error => LogLevel::Error,
        };
        host::Host::log(self, level, message);
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
