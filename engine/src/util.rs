//! Small helpers shared across the engine.

use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Now as RFC 3339 UTC, for stored timestamps.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// A pseudo-random number of milliseconds below `max`, for jitter (the clock's
/// sub-second nanoseconds; good enough to spread retries, not for secrets).
pub fn jitter_ms(max: u32) -> u32 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    if max == 0 { 0 } else { nanos % max }
}

static RELEASE_FREE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Set by the binary, which knows its allocator: hands memory that is free
/// but still mapped back to the system.
pub fn set_release_free_memory(hook: fn()) {
    let _ = RELEASE_FREE_MEMORY.set(hook);
}

/// Called where a run has just freed a large part of what it held, before
/// it allocates as much again for something else.
pub fn release_free_memory() {
    if let Some(hook) = RELEASE_FREE_MEMORY.get() {
        hook();
    }
}
