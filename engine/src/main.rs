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
    roster::cli::main()
}
