//! The `kubetrail` command line: `run`, `check`, `demo`. Configuration errors exit with
//! status 2; other failures with 1.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
