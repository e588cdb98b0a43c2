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

/// Objects a run must have held for its freeing to be worth handing back:
/// the hook walks the allocator's pages, and a realtime run of one change
/// (most runs of `roster serve`) frees next to nothing.
const RELEASE_FROM_OBJECTS: usize = 10_000;

/// Called where a run has just freed what it held for `objects` objects,
/// before it allocates as much again for something else; does nothing for
/// a small run.
pub fn release_free_memory(objects: usize) {
    if objects < RELEASE_FROM_OBJECTS {
        return;
    }
    if let Some(hook) = RELEASE_FREE_MEMORY.get() {
        hook();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    thread_local! {
        // Per thread: other tests' runs, on their own threads, may call the
        // hook this test sets for the whole process.
        static RELEASES: Cell<usize> = const { Cell::new(0) };
    }

    fn count_release() {
        RELEASES.with(|r| r.set(r.get() + 1));
    }

    /// The only test that sets the process-wide hook.
    #[test]
    fn only_a_large_run_hands_freed_memory_back() {
        super::set_release_free_memory(count_release);
        super::release_free_memory(1);
        super::release_free_memory(super::RELEASE_FROM_OBJECTS - 1);
        assert_eq!(RELEASES.with(Cell::get), 0, "a small run skips the allocator walk");
        super::release_free_memory(super::RELEASE_FROM_OBJECTS);
        super::release_free_memory(110_000);
        assert_eq!(RELEASES.with(Cell::get), 2);
    }
}
