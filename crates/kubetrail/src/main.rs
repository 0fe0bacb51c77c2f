//! The `kubetrail` command line: `run`, `check`, `demo`. Configuration errors exit with
//! status 2; other failures with 1.

mod cli;

use std::process::ExitCode;

/// jemalloc, with one arena, thread caches and dirty pages returned after a second
/// (`JEMALLOC_SYS_WITH_MALLOC_CONF` in .cargo/config.toml; `_RJEM_MALLOC_CONF` overrides it at
/// run time). Records are made on one thread and freed on another (parsers, the journal, the
/// outputs), the pattern glibc's arenas handle worst. Measured against glibc (tuned as below),
/// runs interleaved on this project's 2-core benchmark machine: bench/audit-webhook.sh 145-159k
/// -> 167-169k events/s with peak RSS 52-55 -> 43 MiB; bench/audit-file.sh 252-262 -> 285-298
/// MB/s at the same peak RSS (52-58 MiB); bench/events-e2e.sh unchanged within noise
/// (RSS 28 -> 26 MiB). More arenas only added RSS. Thread caches first made it slower; once a
/// submission's entries were freed by the thread that made them (not the journal), they
/// paid: without them every malloc and free took the arena's lock (5 % of the CPU under
/// webhook load). Webhook, 4 interleaved pairs: 207-217k -> 224-247k events/s, kubetrail CPU
/// per 1M events 6.97-7.47 -> 6.13-6.84 s, peak RSS 42-43 -> 47-49 MiB; audit-file RSS
/// 54.4-56.1 -> 57.1-59.4 MiB (of 64), throughput within noise.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    limit_malloc_arenas();
    cli::main()
}

/// What still uses glibc's malloc (SQLite, and the C parts of dependencies) is tuned too.
///
/// glibc gives every thread that allocates its own arena (up to 8 per core); with tokio's
/// worker and blocking threads that fragments the heap and inflates the resident size far
/// beyond what is in use. Two arenas keep the memory bound honest at no measurable cost.
///
/// Batches move through buffers of a few MiB (lines read, encoded records, queue reads).
/// glibc serves such blocks with mmap until one is freed, then raises its mmap threshold to
/// that size and serves the next ones from the heap, where they fragment it; a fixed 1 MiB
/// threshold keeps them mmapped (returned to the system when freed) and the heap trimmed
/// above 4 MiB of free space. Measured with bench/audit-file.sh 1024: peak RSS 88 -> 70 MiB
/// at the same throughput.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator tunable; it is called before any other thread
    // exists, and a refused value (return 0) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
