//! The `roster` command line.

// mimalloc instead of glibc malloc: a sync allocates and frees millions of
// small strings and maps, and glibc's slow paths (consolidation, unlinking)
// were a fifth of a large sync's time. Set in the binary only: the library
// leaves the allocator to whoever embeds it. Built with `no_thp`: mimalloc
// otherwise asks for transparent huge pages on its arenas, and each touched
// 2 MiB page then counts whole towards the resident set (≈ 100 MB more peak
// RSS from the first allocations on, for no measurable speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    roster::util::set_release_free_memory(release_free_memory);
    roster::cli::main()
}

/// mimalloc keeps freed pages mapped for reuse by the same size classes. A
/// full sync frees its desired state (half its peak) right before the
/// apply, whose allocations are of other sizes: without this the freed pages
/// stayed resident through the start of the apply, and were the peak.
fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers; it only walks and purges
    // mimalloc's own free pages, and may be called from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
