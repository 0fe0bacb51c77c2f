//! The `kubetrail` command line: `run`, `check`, `demo`. Configuration errors exit with
//! status 2; other failures with 1.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    cli::main()
}

/// glibc gives every thread that allocates its own arena (up to 8 per core); with tokio's
/// worker and blocking threads that fragments the heap and inflates the resident size far
/// beyond what is in use. Two arenas keep the memory bound honest at no measurable cost.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator tunable; it is called before any other thread
    // exists, and a refused value (return 0) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
